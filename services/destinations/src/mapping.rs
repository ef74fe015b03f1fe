//! Customer 360 documents turned into the records a destination receives, and the hash
//! that says whether the remote already has a record.

use std::collections::BTreeMap;

use domain::api::{DestinationKind, ModelTask, ProfileField};
use domain::{Customer360, IdentifierKind};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::Destination;

/// One profile as a destination sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The profile.
    pub profile_id: Uuid,
    /// The value the remote keys it by (e-mail, a unique property, the profile id).
    pub key: String,
    /// Remote field → value; fields with no value are sent as null so the remote
    /// clears what it had (HubSpot: empty string).
    pub fields: Map<String, Value>,
    /// The remote's id for this profile's record, when the remote has it under another
    /// key (the key changed, e.g. a new e-mail): the connector updates that record by
    /// its id rather than leaving it behind. Not part of the hash.
    pub replaces: Option<String>,
}

impl Record {
    /// SHA-256 of the key and fields (keys sorted): equal hashes, equal records.
    pub fn hash(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.key.as_bytes());
        h.update([0]);
        // serde_json's Map is a BTreeMap here (no preserve_order), so keys are sorted.
        h.update(serde_json::to_vec(&self.fields).unwrap_or_default());
        h.finalize().to_vec()
    }
}

/// The most recently seen identifier of `kind`.
fn latest_identifier(doc: &Customer360, kind: IdentifierKind) -> Option<String> {
    doc.identifiers
        .iter()
        .filter(|i| i.kind == kind)
        .max_by_key(|i| i.last_seen_at)
        .map(|i| i.value.clone())
}

fn trait_str(doc: &Customer360, key: &str) -> Option<String> {
    doc.traits
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn prediction(doc: &Customer360, task: ModelTask) -> Option<&domain::profile::PredictionSummary> {
    doc.predictions.iter().find(|p| p.task == task)
}

fn decimal(d: rust_decimal::Decimal) -> Value {
    // Money travels as a JSON number rounded to cents.
    d.round_dp(2)
        .to_string()
        .parse::<f64>()
        .map(Value::from)
        .unwrap_or(Value::Null)
}

/// The value of one profile field in `doc` (`Null` when unknown).
pub fn field(doc: &Customer360, field: ProfileField) -> Value {
    use ProfileField as F;
    let s = |v: Option<String>| v.map(Value::String).unwrap_or(Value::Null);
    match field {
        F::ProfileId => Value::String(doc.profile_id.to_string()),
        F::Email => s(latest_identifier(doc, IdentifierKind::Email)),
        F::Phone => s(latest_identifier(doc, IdentifierKind::Phone)),
        F::Name => s(doc.display_name.clone().or_else(|| {
            let parts: Vec<String> = ["first_name", "last_name"]
                .iter()
                .filter_map(|k| trait_str(doc, k))
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        })),
        F::FirstName => s(trait_str(doc, "first_name").or_else(|| {
            doc.display_name
                .as_deref()
                .and_then(|n| n.split_whitespace().next())
                .map(str::to_owned)
        })),
        F::LastName => s(trait_str(doc, "last_name").or_else(|| {
            doc.display_name.as_deref().and_then(|n| {
                let mut words = n.split_whitespace();
                words.next();
                let rest: Vec<&str> = words.collect();
                (!rest.is_empty()).then(|| rest.join(" "))
            })
        })),
        F::OrdersCount => Value::from(doc.total_orders),
        F::TotalSpent => decimal(doc.lifetime_value),
        F::AverageOrderValue => decimal(doc.average_order_value),
        F::Currency => s(doc.currency.clone()),
        F::LastOrderAt => s(doc.last_order_at.map(|t| t.to_rfc3339())),
        F::Segment => s(prediction(doc, ModelTask::Segment).and_then(|p| p.label.clone())),
        F::ChurnScore => prediction(doc, ModelTask::Churn)
            .and_then(|p| p.score)
            .map(|v| Value::from((v * 10_000.0).round() / 10_000.0))
            .unwrap_or(Value::Null),
        F::ChurnLabel => s(prediction(doc, ModelTask::Churn).and_then(|p| p.label.clone())),
        F::PredictedLtv => prediction(doc, ModelTask::Ltv)
            .and_then(|p| p.score)
            .map(|v| Value::from((v * 100.0).round() / 100.0))
            .unwrap_or(Value::Null),
        F::Channels => {
            let names: Vec<&str> = doc.channels.iter().map(|c| c.as_str()).collect();
            s((!names.is_empty()).then(|| names.join(",")))
        }
        F::TopCategory => s(doc
            .category_affinity
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(k, _)| k.clone())),
        // The document's recommendations are read from the `recommend` prediction's
        // details by storage::customer360, the one reader of them.
        F::RecommendedProducts => {
            let names: Vec<&str> = doc
                .recommendations
                .iter()
                .take(5)
                .map(|r| r.name.as_str())
                .collect();
            s((!names.is_empty()).then(|| names.join(", ")))
        }
        F::EmailConsent => consent(doc, "email_marketing"),
        F::SmsConsent => consent(doc, "sms_marketing"),
    }
}

fn consent(doc: &Customer360, key: &str) -> Value {
    match doc.traits.get(key).and_then(Value::as_str) {
        Some(v) => Value::Bool(v == domain::audience::ConsentChannel::SUBSCRIBED),
        None => Value::Null,
    }
}

/// The remote field a destination keys records by, when it is a mapped field (HubSpot);
/// `None` when the key is the profile id (Salesforce external id, REST).
pub fn key_field(dest: &Destination) -> Option<String> {
    match dest.kind {
        DestinationKind::Hubspot => Some(
            dest.config
                .id_property
                .clone()
                .unwrap_or_else(|| "email".into()),
        ),
        DestinationKind::Salesforce | DestinationKind::Rest => None,
    }
}

/// `doc` as `dest`'s record; `None` when the profile has no value for the key (a
/// HubSpot destination keyed by e-mail skips profiles without one).
pub fn record(dest: &Destination, doc: &Customer360) -> Option<Record> {
    let mut fields: Map<String, Value> = dest
        .mapping
        .iter()
        .map(|(remote, f)| (remote.clone(), field(doc, *f)))
        .collect();
    if dest.kind == DestinationKind::Hubspot {
        // HubSpot stores property values as strings and clears one given "".
        for v in fields.values_mut() {
            *v = match v.take() {
                Value::Null => Value::String(String::new()),
                Value::String(s) => Value::String(s),
                other => Value::String(other.to_string()),
            };
        }
    }
    let key = match key_field(dest) {
        Some(k) => match fields.get(&k) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return None,
        },
        None => doc.profile_id.to_string(),
    };
    Some(Record {
        profile_id: doc.profile_id,
        key,
        fields,
        replaces: None,
    })
}

/// The fields of `mapping` whose remote names are not among `existing` (what a HubSpot
/// destination creates through the properties API).
pub fn missing_fields<'a>(
    mapping: &'a BTreeMap<String, ProfileField>,
    existing: &std::collections::BTreeSet<String>,
) -> Vec<(&'a String, ProfileField)> {
    mapping
        .iter()
        .filter(|(k, _)| !existing.contains(*k))
        .map(|(k, v)| (k, *v))
        .collect()
}
