//! HubSpot contacts through the CRM v3 API, authenticated with a private app's access
//! token (`Authorization: Bearer`), following developers.hubspot.com:
//! - "CRM API | Contacts", batch upsert: `POST /crm/v3/objects/contacts/batch/upsert`
//!   with `{"inputs": [{"idProperty", "id", "properties"}]}` — at most 100 inputs,
//!   keyed by `email` or a unique custom property; `200` with `results` (each with the
//!   contact's `id`), `207` with `errors` naming the failed ids, or `400` for the batch;
//! - "CRM API | Properties": `GET /crm/v3/properties/contacts` lists the properties,
//!   `POST /crm/v3/properties/contacts` creates a missing one (done once per property);
//! - batch update by id: `POST /crm/v3/objects/contacts/batch/update` with
//!   `{"inputs": [{"id", "properties"}]}` — used when a profile's key changed (a new
//!   e-mail), so the contact stored under the old key is updated rather than left
//!   behind with a second contact beside it; `207` `errors` name the ids that failed
//!   (`OBJECT_NOT_FOUND`: deleted in HubSpot meanwhile → upserted by the new key;
//!   `CONFLICT`: another contact has the new key → a dead letter with HubSpot's text);
//! - merge: `POST /crm/v3/objects/contacts/merge` (`primaryObjectId`, `objectIdToMerge`);
//!   GDPR delete: `POST /crm/v3/objects/contacts/gdpr-delete` (`objectId`,
//!   `idProperty`); archive: `POST /crm/v3/objects/contacts/batch/archive`;
//! - "API usage guidelines and limits": 429 with `X-HubSpot-RateLimit-*` policy headers
//!   (handled by [`crate::http::Http`], which also paces to the configured rate).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::DestinationError;
use crate::connector::{Connector, Merge, Outcome, Removal};
use crate::http::{Http, SendError, failure};
use crate::mapping::Record;
use crate::model::Destination;

/// A HubSpot destination.
pub struct HubSpot {
    http: Http,
    base: String,
    token: String,
    id_property: String,
    mapping: Vec<String>,
    properties_ready: OnceCell<()>,
}

impl HubSpot {
    /// The connector of `dest` (API base: its `base_url`, else `default_base`).
    pub fn new(
        dest: &Destination,
        http: Http,
        default_base: &str,
    ) -> Result<Self, DestinationError> {
        Ok(Self {
            http,
            base: dest
                .config
                .base_url
                .clone()
                .unwrap_or_else(|| default_base.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            token: dest.credential("token")?.to_owned(),
            id_property: dest
                .config
                .id_property
                .clone()
                .unwrap_or_else(|| "email".into()),
            mapping: dest.mapping.keys().cloned().collect(),
            properties_ready: OnceCell::new(),
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .client()
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Creates the mapped properties HubSpot does not have yet (once per process; the
    /// listing makes it once overall).
    async fn ensure_properties(&self) -> Result<(), SendError> {
        self.properties_ready
            .get_or_try_init(|| async {
                let path = "/crm/v3/properties/contacts";
                let reply = self
                    .http
                    .send(
                        "properties",
                        0,
                        format!("GET {path}"),
                        self.http
                            .client()
                            .get(format!("{}{path}", self.base))
                            .bearer_auth(&self.token),
                    )
                    .await?;
                if !reply.status.is_success() {
                    return Err(failure(&reply));
                }
                let existing: BTreeSet<String> = reply.json()["results"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                for name in self.mapping.iter().filter(|n| !existing.contains(*n)) {
                    let body = json!({
                        "name": name,
                        "label": label(name),
                        "type": "string",
                        "fieldType": "text",
                        "groupName": "contactinformation",
                        "hasUniqueValue": *name == self.id_property && name != "email",
                    });
                    let reply = self
                        .http
                        .send(
                            "properties",
                            0,
                            format!("POST {path} ({name})"),
                            self.post(path).json(&body),
                        )
                        .await?;
                    // 409: created meanwhile (another worker); fine.
                    if !reply.status.is_success() && reply.status.as_u16() != 409 {
                        return Err(failure(&reply));
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

impl HubSpot {
    /// Batch upsert of `records[which]` by the id property; one outcome each.
    async fn upsert_by_key(
        &self,
        records: &[Record],
        which: &[usize],
    ) -> Result<Vec<Outcome>, SendError> {
        let inputs: Vec<Value> = which
            .iter()
            .map(|i| &records[*i])
            .map(|r| json!({"idProperty": self.id_property, "id": r.key, "properties": r.fields}))
            .collect();
        let path = "/crm/v3/objects/contacts/batch/upsert";
        let reply = self
            .http
            .send(
                "upsert",
                which.len(),
                format!("POST {path} ({} contacts)", which.len()),
                self.post(path).json(&json!({ "inputs": inputs })),
            )
            .await?;
        if !reply.status.is_success() {
            return Err(failure(&reply));
        }
        let body = reply.json();
        // The id of each contact by its key (HubSpot lower-cases e-mails).
        let mut ids: HashMap<String, String> = HashMap::new();
        for r in body["results"].as_array().into_iter().flatten() {
            if let (Some(id), Some(k)) = (
                r["id"].as_str(),
                r["properties"][&self.id_property].as_str(),
            ) {
                ids.insert(k.to_lowercase(), id.to_owned());
            }
        }
        let rejected = errors_by_id(&body);
        Ok(which
            .iter()
            .map(|i| {
                let k = records[*i].key.to_lowercase();
                match rejected.get(&k) {
                    Some((_, m)) => Outcome::Rejected(m.clone()),
                    None => Outcome::Accepted(ids.get(&k).cloned()),
                }
            })
            .collect())
    }

    /// Batch update of `records[which]` by the id of the contact HubSpot has under
    /// their old key; `None` for a record whose contact no longer exists (to be
    /// upserted by its key instead).
    async fn update_by_id(
        &self,
        records: &[Record],
        which: &[usize],
    ) -> Result<Vec<Option<Outcome>>, SendError> {
        let inputs: Vec<Value> = which
            .iter()
            .map(|i| &records[*i])
            .map(|r| json!({"id": r.replaces, "properties": r.fields}))
            .collect();
        let path = "/crm/v3/objects/contacts/batch/update";
        let reply = self
            .http
            .send(
                "upsert",
                which.len(),
                format!("POST {path} ({} contacts, key changed)", which.len()),
                self.post(path).json(&json!({ "inputs": inputs })),
            )
            .await?;
        if !reply.status.is_success() {
            return Err(failure(&reply));
        }
        let errors = errors_by_id(&reply.json());
        Ok(which
            .iter()
            .map(|i| {
                let id = records[*i].replaces.clone().unwrap_or_default();
                match errors.get(&id.to_lowercase()) {
                    Some((category, _)) if category == "OBJECT_NOT_FOUND" => None,
                    Some((_, message)) => Some(Outcome::Rejected(message.clone())),
                    None => Some(Outcome::Accepted(Some(id))),
                }
            })
            .collect())
    }
}

/// The `errors` of a batch answer by the (lower-cased) ids they name: category and
/// message.
fn errors_by_id(body: &Value) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    for e in body["errors"].as_array().into_iter().flatten() {
        let category = e["category"].as_str().unwrap_or("").to_owned();
        let message = e["message"].as_str().unwrap_or("rejected").to_owned();
        for k in e["context"]["ids"].as_array().into_iter().flatten() {
            if let Some(k) = k.as_str() {
                out.insert(k.to_lowercase(), (category.clone(), message.clone()));
            }
        }
    }
    out
}

/// `constintel_churn_risk` → `Constintel churn risk`.
fn label(name: &str) -> String {
    let spaced = name.replace('_', " ");
    let mut c = spaced.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[async_trait]
impl Connector for HubSpot {
    async fn upsert(&self, records: &[Record]) -> Result<Vec<Outcome>, SendError> {
        self.ensure_properties().await?;
        let mut out: Vec<Option<Outcome>> = vec![None; records.len()];
        // Records whose key changed: updated by the id of the contact HubSpot has.
        let rekeyed: Vec<usize> = (0..records.len())
            .filter(|i| records[*i].replaces.is_some())
            .collect();
        if !rekeyed.is_empty() {
            let updated = self.update_by_id(records, &rekeyed).await?;
            for (i, o) in rekeyed.into_iter().zip(updated) {
                out[i] = o;
            }
        }
        // The others (and those whose old contact is gone): upserted by key.
        let by_key: Vec<usize> = (0..records.len()).filter(|i| out[*i].is_none()).collect();
        if !by_key.is_empty() {
            let upserted = self.upsert_by_key(records, &by_key).await?;
            for (i, o) in by_key.into_iter().zip(upserted) {
                out[i] = Some(o);
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Accepted(None)))
            .collect())
    }

    async fn remove(&self, records: &[Removal]) -> Result<Vec<Outcome>, SendError> {
        let mut out = vec![Outcome::Accepted(None); records.len()];
        // Erasures: GDPR delete, one contact per request, by key.
        for (i, r) in records.iter().enumerate().filter(|(_, r)| r.erase) {
            let path = "/crm/v3/objects/contacts/gdpr-delete";
            let body = json!({"objectId": r.key, "idProperty": self.id_property});
            let reply = self
                .http
                .send(
                    "delete",
                    1,
                    format!("POST {path} (erasure)"),
                    self.post(path).json(&body),
                )
                .await?;
            out[i] = match reply.status.as_u16() {
                200..=299 | 404 => Outcome::Accepted(None),
                _ => match failure(&reply) {
                    e @ SendError::Transient { .. } => return Err(e),
                    SendError::Permanent { message } => Outcome::Rejected(message),
                },
            };
        }
        // Audience exits: archived by id.
        let archive: Vec<(usize, &str)> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.erase)
            .filter_map(|(i, r)| r.remote_id.as_deref().map(|id| (i, id)))
            .collect();
        for (i, r) in records.iter().enumerate() {
            if !r.erase && r.remote_id.is_none() {
                out[i] = Outcome::Rejected("no HubSpot contact id was recorded for it".into());
            }
        }
        if !archive.is_empty() {
            let path = "/crm/v3/objects/contacts/batch/archive";
            let inputs: Vec<Value> = archive.iter().map(|(_, id)| json!({"id": id})).collect();
            let reply = self
                .http
                .send(
                    "delete",
                    archive.len(),
                    format!("POST {path} ({} contacts)", archive.len()),
                    self.post(path).json(&json!({ "inputs": inputs })),
                )
                .await?;
            if !reply.status.is_success() {
                return Err(failure(&reply));
            }
        }
        Ok(out)
    }

    async fn merge(&self, merge: &Merge) -> Result<Outcome, SendError> {
        let merged_id = merge.merged.remote_id.clone();
        match (&merge.survivor, merged_id) {
            (Some((_, Some(primary))), Some(merged)) if *primary != merged => {
                let path = "/crm/v3/objects/contacts/merge";
                let body = json!({"primaryObjectId": primary, "objectIdToMerge": merged});
                let reply = self
                    .http
                    .send(
                        "merge",
                        2,
                        format!("POST {path}"),
                        self.post(path).json(&body),
                    )
                    .await?;
                if reply.status.is_success() {
                    Ok(Outcome::Accepted(None))
                } else {
                    match failure(&reply) {
                        e @ SendError::Transient { .. } => Err(e),
                        SendError::Permanent { message } => Ok(Outcome::Rejected(message)),
                    }
                }
            }
            // Same contact (same key), or nothing recorded for the merged-away one.
            (Some(_), _) | (None, None) => Ok(Outcome::Accepted(None)),
            // The survivor is not in HubSpot (no key): the merged-away contact goes.
            (None, Some(_)) => Ok(self
                .remove(std::slice::from_ref(&merge.merged))
                .await?
                .pop()
                .unwrap_or(Outcome::Accepted(None))),
        }
    }

    async fn test(&self) -> Result<String, SendError> {
        let path = "/crm/v3/objects/contacts";
        let reply = self
            .http
            .send(
                "test",
                0,
                format!("GET {path}?limit=1"),
                self.http
                    .client()
                    .get(format!("{}{path}?limit=1", self.base))
                    .bearer_auth(&self.token),
            )
            .await?;
        if reply.status.is_success() {
            Ok(format!("HubSpot answered {} with the token", reply.status))
        } else {
            Err(failure(&reply))
        }
    }
}
