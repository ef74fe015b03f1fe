//! A destination's settings, credentials and field mapping, with each kind's defaults
//! and limits, validated before anything is stored.

use std::collections::BTreeMap;

use domain::api::{DestinationKind, DestinationMode, ProfileField};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DestinationError;

/// HubSpot's batch endpoints take at most 100 inputs per request.
pub const HUBSPOT_MAX_BATCH: usize = 100;
/// sObject Collections take at most 200 records per request.
pub const SALESFORCE_MAX_BATCH: usize = 200;
/// Largest batch a REST destination may be configured with.
pub const REST_MAX_BATCH: usize = 1_000;

/// HubSpot's default limit for private apps (Free and Starter): 100 requests every
/// 10 seconds (developers.hubspot.com, "API usage guidelines and limits").
pub const HUBSPOT_DEFAULT_RPS: f64 = 10.0;
/// Salesforce has no per-second limit, only a daily allocation (Enterprise: 100,000
/// requests per 24 h plus per licence) and 25 concurrent long requests; ten requests a
/// second keeps a backfill far inside both.
pub const SALESFORCE_DEFAULT_RPS: f64 = 10.0;

/// Non-secret settings of a destination (`config` in the API), by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// HubSpot API base (default `https://api.hubapi.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Salesforce login URL the token is asked from (default
    /// `https://login.salesforce.com`; a My Domain URL for client credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
    /// REST endpoint batches are POSTed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Records per request (capped by the kind's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Seconds a request may take (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Most requests per second ever made (default by kind; REST: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// HubSpot: the unique property contacts are keyed by (default `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_property: Option<String>,
    /// Salesforce: the object (default `Contact`; `Lead` works the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Salesforce: the external-id field holding the profile id (default
    /// `ConstIntel_Id__c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_field: Option<String>,
    /// Salesforce: the connected app's consumer key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Salesforce REST API version (default `v61.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// REST: `bearer` (default; credential `token`) or `hmac` (credential `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<String>,
}

impl DestinationConfig {
    /// Parses the API's `config` object; unknown keys are refused by name.
    pub fn parse(
        value: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, DestinationError> {
        serde_json::from_value(serde_json::Value::Object(value.clone()))
            .map_err(|e| DestinationError::Invalid(format!("config: {e}")))
    }

    /// As the API's `config` object.
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// Everything a worker needs about one destination (credentials opened).
#[derive(Clone)]
pub struct Destination {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: DestinationKind,
    /// Its settings.
    pub config: DestinationConfig,
    /// Its credentials, opened (never logged: `Debug` leaves them out).
    pub credentials: BTreeMap<String, String>,
    /// Remote field ← profile field.
    pub mapping: BTreeMap<String, ProfileField>,
    /// Upsert or mirror.
    pub mode: DestinationMode,
    /// The audience it is limited to.
    pub audience_id: Option<Uuid>,
    /// Bumped on every change.
    pub version: i64,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// Records per request: the configured size within the kind's limit.
    pub fn batch_size(&self) -> usize {
        let max = match self.kind {
            DestinationKind::Hubspot => HUBSPOT_MAX_BATCH,
            DestinationKind::Salesforce => SALESFORCE_MAX_BATCH,
            DestinationKind::Rest => REST_MAX_BATCH,
        };
        self.config.batch_size.unwrap_or(max.min(100)).clamp(1, max)
    }

    /// Most requests per second (`None`: no limit).
    pub fn requests_per_second(&self) -> Option<f64> {
        self.config.requests_per_second.or(match self.kind {
            DestinationKind::Hubspot => Some(HUBSPOT_DEFAULT_RPS),
            DestinationKind::Salesforce => Some(SALESFORCE_DEFAULT_RPS),
            DestinationKind::Rest => None,
        })
    }

    /// The window the remote counts its rate limit over: HubSpot's ten-second rolling
    /// window; one second for the others.
    pub fn rate_window(&self) -> std::time::Duration {
        match self.kind {
            DestinationKind::Hubspot => std::time::Duration::from_secs(10),
            DestinationKind::Salesforce | DestinationKind::Rest => {
                std::time::Duration::from_secs(1)
            }
        }
    }

    /// How long one request may take.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.config.timeout_secs.unwrap_or(30).clamp(1, 300))
    }

    /// How long a worker holds the profiles it is sending: a worker that died
    /// mid-request lets them go after this.
    pub fn lease(&self) -> std::time::Duration {
        self.timeout() * 3 + std::time::Duration::from_secs(5)
    }

    /// A credential by name.
    pub fn credential(&self, name: &str) -> Result<&str, DestinationError> {
        self.credentials
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| DestinationError::Invalid(format!("credential `{name}` is missing")))
    }
}

/// The field mapping a kind starts with when none is given.
pub fn default_mapping(kind: DestinationKind) -> BTreeMap<String, ProfileField> {
    use ProfileField as F;
    let pairs: &[(&str, F)] = match kind {
        DestinationKind::Hubspot => &[
            ("email", F::Email),
            ("firstname", F::FirstName),
            ("lastname", F::LastName),
            ("phone", F::Phone),
            ("constintel_orders_count", F::OrdersCount),
            ("constintel_total_spent", F::TotalSpent),
            ("constintel_last_order_at", F::LastOrderAt),
            ("constintel_segment", F::Segment),
            ("constintel_churn_risk", F::ChurnLabel),
            ("constintel_predicted_ltv", F::PredictedLtv),
            ("constintel_top_category", F::TopCategory),
            ("constintel_recommended_products", F::RecommendedProducts),
        ],
        DestinationKind::Salesforce => &[
            ("Email", F::Email),
            ("FirstName", F::FirstName),
            ("LastName", F::LastName),
            ("Phone", F::Phone),
            ("ConstIntel_Orders_Count__c", F::OrdersCount),
            ("ConstIntel_Total_Spent__c", F::TotalSpent),
            ("ConstIntel_Segment__c", F::Segment),
            ("ConstIntel_Churn_Risk__c", F::ChurnLabel),
            ("ConstIntel_Predicted_LTV__c", F::PredictedLtv),
        ],
        DestinationKind::Rest => &[
            ("email", F::Email),
            ("phone", F::Phone),
            ("name", F::Name),
            ("orders_count", F::OrdersCount),
            ("total_spent", F::TotalSpent),
            ("currency", F::Currency),
            ("last_order_at", F::LastOrderAt),
            ("segment", F::Segment),
            ("churn_score", F::ChurnScore),
            ("churn_label", F::ChurnLabel),
            ("predicted_ltv", F::PredictedLtv),
            ("channels", F::Channels),
            ("top_category", F::TopCategory),
            ("recommended_products", F::RecommendedProducts),
            ("email_consent", F::EmailConsent),
            ("sms_consent", F::SmsConsent),
        ],
    };
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn is_http_url(value: &str) -> bool {
    value.starts_with("https://") || value.starts_with("http://")
}

/// Checks that a destination can work before it is stored: its kind's required
/// settings and credentials, URLs, limits, and a mapping that carries the key.
pub fn validate(
    kind: DestinationKind,
    config: &DestinationConfig,
    credentials: &BTreeMap<String, String>,
    mapping: &BTreeMap<String, ProfileField>,
) -> Result<(), DestinationError> {
    let invalid = |m: String| Err(DestinationError::Invalid(m));
    let need = |name: &str| -> Result<(), DestinationError> {
        match credentials.get(name) {
            Some(v) if !v.trim().is_empty() => Ok(()),
            _ => Err(DestinationError::Invalid(format!(
                "a {kind} destination needs the credential `{name}`"
            ))),
        }
    };
    for (name, url) in [
        ("base_url", &config.base_url),
        ("login_url", &config.login_url),
        ("url", &config.url),
    ] {
        if let Some(u) = url
            && !is_http_url(u)
        {
            return invalid(format!("config.{name} must be an http(s) URL"));
        }
    }
    if let Some(rps) = config.requests_per_second
        && !(rps.is_finite() && (0.01..=10_000.0).contains(&rps))
    {
        return invalid("config.requests_per_second must be between 0.01 and 10000".into());
    }
    if let Some(t) = config.timeout_secs
        && !(1..=300).contains(&t)
    {
        return invalid("config.timeout_secs must be between 1 and 300".into());
    }
    if config.batch_size == Some(0) {
        return invalid("config.batch_size must be at least 1".into());
    }
    if mapping.is_empty() {
        return invalid("the mapping is empty".into());
    }
    if let Some(empty) = mapping.keys().find(|k| k.trim().is_empty()) {
        return invalid(format!("mapping has an empty remote field name `{empty}`"));
    }
    match kind {
        DestinationKind::Hubspot => {
            need("token")?;
            let key = config.id_property.as_deref().unwrap_or("email");
            if !mapping.contains_key(key) {
                return invalid(format!(
                    "HubSpot contacts are keyed by `{key}`: the mapping must fill it"
                ));
            }
            if config.batch_size.is_some_and(|b| b > HUBSPOT_MAX_BATCH) {
                return invalid(format!(
                    "HubSpot takes at most {HUBSPOT_MAX_BATCH} records per request"
                ));
            }
        }
        DestinationKind::Salesforce => {
            need("client_secret")?;
            if config
                .client_id
                .as_deref()
                .is_none_or(|c| c.trim().is_empty())
            {
                return invalid("a salesforce destination needs config.client_id".into());
            }
            if config.batch_size.is_some_and(|b| b > SALESFORCE_MAX_BATCH) {
                return invalid(format!(
                    "sObject Collections take at most {SALESFORCE_MAX_BATCH} records per request"
                ));
            }
        }
        DestinationKind::Rest => {
            if config.url.is_none() {
                return invalid("a rest destination needs config.url".into());
            }
            match config.signing.as_deref().unwrap_or("bearer") {
                "bearer" => need("token")?,
                "hmac" => need("secret")?,
                other => {
                    return invalid(format!(
                        "config.signing is `bearer` or `hmac`, not `{other}`"
                    ));
                }
            }
            if config.batch_size.is_some_and(|b| b > REST_MAX_BATCH) {
                return invalid(format!("config.batch_size is at most {REST_MAX_BATCH}"));
            }
        }
    }
    Ok(())
}
