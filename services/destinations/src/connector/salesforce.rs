//! Salesforce contacts (or leads) through the REST API, following
//! developer.salesforce.com:
//! - "OAuth 2.0 Client Credentials Flow for Server-to-Server Integration": `POST
//!   {login_url}/services/oauth2/token` with `grant_type=client_credentials`,
//!   `client_id`, `client_secret` → `access_token` and `instance_url`;
//! - "sObject Collections", upsert by external id: `PATCH
//!   /services/data/vXX.X/composite/sobjects/{object}/{externalIdField}` with
//!   `{"allOrNone": false, "records": [...]}` (at most 200) → one `{id, success,
//!   errors, created}` per record, in order, so a bad record fails alone;
//!   delete: `DELETE /services/data/vXX.X/composite/sobjects?ids=…&allOrNone=false`,
//!   or one record by external id: `DELETE /sobjects/{object}/{field}/{value}`;
//! - "Status Codes and Error Responses": `401` with `INVALID_SESSION_ID` when the token
//!   expired → a new token is fetched and the request repeated once.
//!
//! Contacts cannot be merged through the REST API (merge is SOAP only): a merged-away
//! profile's record is deleted and the survivor's updated.

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::DestinationError;
use crate::connector::{Connector, Merge, Outcome, Removal};
use crate::http::{Http, Reply, SendError, failure};
use crate::mapping::Record;
use crate::model::Destination;

#[derive(Clone)]
struct Token {
    access: String,
    instance: String,
}

/// A Salesforce destination.
pub struct Salesforce {
    http: Http,
    login_url: String,
    client_id: String,
    client_secret: String,
    object: String,
    external_id: String,
    version: String,
    token: Mutex<Option<Token>>,
}

impl Salesforce {
    /// The connector of `dest`.
    pub fn new(dest: &Destination, http: Http) -> Result<Self, DestinationError> {
        Ok(Self {
            http,
            login_url: dest
                .config
                .login_url
                .clone()
                .unwrap_or_else(|| "https://login.salesforce.com".into())
                .trim_end_matches('/')
                .to_owned(),
            client_id: dest
                .config
                .client_id
                .clone()
                .ok_or_else(|| DestinationError::Invalid("config.client_id is missing".into()))?,
            client_secret: dest.credential("client_secret")?.to_owned(),
            object: dest
                .config
                .object
                .clone()
                .unwrap_or_else(|| "Contact".into()),
            external_id: dest
                .config
                .external_id_field
                .clone()
                .unwrap_or_else(|| "ConstIntel_Id__c".into()),
            version: dest
                .config
                .api_version
                .clone()
                .unwrap_or_else(|| "v61.0".into()),
            token: Mutex::new(None),
        })
    }

    /// The token to use: the one held, unless it is `expired` (then a new one; a
    /// request that failed alongside gets the one another already renewed).
    async fn token(&self, expired: Option<&str>) -> Result<Token, SendError> {
        let mut held = self.token.lock().await;
        if let Some(t) = held.as_ref()
            && expired != Some(t.access.as_str())
        {
            return Ok(t.clone());
        }
        let path = "/services/oauth2/token";
        let reply = self
            .http
            .send(
                "token",
                0,
                format!("POST {path} (client_credentials)"),
                self.http
                    .client()
                    .post(format!("{}{path}", self.login_url))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", self.client_id.as_str()),
                        ("client_secret", self.client_secret.as_str()),
                    ]),
            )
            .await?;
        if !reply.status.is_success() {
            return Err(failure(&reply));
        }
        let body = reply.json();
        let (Some(access), Some(instance)) =
            (body["access_token"].as_str(), body["instance_url"].as_str())
        else {
            return Err(SendError::permanent(
                "the token endpoint answered without access_token and instance_url",
            ));
        };
        let t = Token {
            access: access.to_owned(),
            instance: instance.trim_end_matches('/').to_owned(),
        };
        *held = Some(t.clone());
        Ok(t)
    }

    /// Sends the request `build` makes with a token; an `INVALID_SESSION_ID` answer gets
    /// a new token and one more try.
    async fn call(
        &self,
        operation: &'static str,
        records: usize,
        summary: &str,
        build: impl Fn(&Token) -> reqwest::RequestBuilder,
    ) -> Result<Reply, SendError> {
        let mut token = self.token(None).await?;
        for attempt in 0..2 {
            let req = build(&token).bearer_auth(&token.access);
            let reply = self
                .http
                .send(operation, records, summary.to_owned(), req)
                .await?;
            if reply.status.as_u16() == 401
                && reply.body.contains("INVALID_SESSION_ID")
                && attempt == 0
            {
                token = self.token(Some(&token.access)).await?;
                continue;
            }
            return Ok(reply);
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn data(&self, t: &Token, path: &str) -> String {
        format!("{}/services/data/{}{path}", t.instance, self.version)
    }
}

/// One outcome per element of a collections answer.
fn collection_outcomes(body: &Value, n: usize) -> Result<Vec<Outcome>, SendError> {
    let Some(items) = body.as_array().filter(|a| a.len() == n) else {
        return Err(SendError::permanent(format!(
            "sObject Collections answered {} results for {n} records",
            body.as_array().map_or(0, Vec::len)
        )));
    };
    Ok(items
        .iter()
        .map(|r| {
            if r["success"].as_bool() == Some(true) {
                Outcome::Accepted(r["id"].as_str().map(str::to_owned))
            } else {
                let text: Vec<String> = r["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e["statusCode"].as_str().unwrap_or("ERROR"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                Outcome::Rejected(if text.is_empty() {
                    "rejected".into()
                } else {
                    text.join("; ")
                })
            }
        })
        .collect())
}

#[async_trait]
impl Connector for Salesforce {
    async fn upsert(&self, records: &[Record]) -> Result<Vec<Outcome>, SendError> {
        let body = json!({
            "allOrNone": false,
            "records": records.iter().map(|r| {
                let mut fields = r.fields.clone();
                fields.insert("attributes".into(), json!({"type": self.object}));
                fields.insert(self.external_id.clone(), Value::String(r.key.clone()));
                Value::Object(fields)
            }).collect::<Vec<_>>(),
        });
        let path = format!("/composite/sobjects/{}/{}", self.object, self.external_id);
        let reply = self
            .call(
                "upsert",
                records.len(),
                &format!("PATCH {path} ({} records)", records.len()),
                |t| self.http.client().patch(self.data(t, &path)).json(&body),
            )
            .await?;
        if !reply.status.is_success() {
            return Err(failure(&reply));
        }
        collection_outcomes(&reply.json(), records.len())
    }

    async fn remove(&self, records: &[Removal]) -> Result<Vec<Outcome>, SendError> {
        let mut out = Vec::with_capacity(records.len());
        let ids: Vec<&str> = records
            .iter()
            .filter_map(|r| r.remote_id.as_deref())
            .collect();
        let mut by_id = Vec::new();
        if !ids.is_empty() {
            let query = format!("?ids={}&allOrNone=false", ids.join(","));
            let reply = self
                .call(
                    "delete",
                    ids.len(),
                    &format!("DELETE /composite/sobjects ({} records)", ids.len()),
                    |t| {
                        self.http
                            .client()
                            .delete(self.data(t, &format!("/composite/sobjects{query}")))
                    },
                )
                .await?;
            if !reply.status.is_success() {
                return Err(failure(&reply));
            }
            by_id = collection_outcomes(&reply.json(), ids.len())?;
        }
        let mut by_id = by_id.into_iter();
        for r in records {
            if r.remote_id.is_some() {
                let o = by_id.next().unwrap_or(Outcome::Accepted(None));
                // Already gone counts as removed.
                out.push(match o {
                    Outcome::Rejected(e)
                        if e.contains("ENTITY_IS_DELETED") || e.contains("NOT_FOUND") =>
                    {
                        Outcome::Accepted(None)
                    }
                    o => o,
                });
                continue;
            }
            let path = format!("/sobjects/{}/{}/{}", self.object, self.external_id, r.key);
            let reply = self
                .call(
                    "delete",
                    1,
                    &format!(
                        "DELETE /sobjects/{}/{} (1 record)",
                        self.object, self.external_id
                    ),
                    |t| self.http.client().delete(self.data(t, &path)),
                )
                .await?;
            out.push(match reply.status.as_u16() {
                200..=299 | 404 => Outcome::Accepted(None),
                _ => match failure(&reply) {
                    e @ SendError::Transient { .. } => return Err(e),
                    SendError::Permanent { message } => Outcome::Rejected(message),
                },
            });
        }
        Ok(out)
    }

    async fn merge(&self, merge: &Merge) -> Result<Outcome, SendError> {
        // Same record (same id): nothing to remove.
        if let (Some((_, Some(s))), Some(m)) = (&merge.survivor, &merge.merged.remote_id)
            && s == m
        {
            return Ok(Outcome::Accepted(None));
        }
        Ok(self
            .remove(std::slice::from_ref(&merge.merged))
            .await?
            .pop()
            .unwrap_or(Outcome::Accepted(None)))
    }

    async fn test(&self) -> Result<String, SendError> {
        let path = format!("/sobjects/{}", self.object);
        let reply = self
            .call("test", 0, &format!("GET {path}"), |t| {
                self.http.client().get(self.data(t, &path))
            })
            .await?;
        if reply.status.is_success() {
            Ok(format!(
                "Salesforce answered {} for {}",
                reply.status, self.object
            ))
        } else {
            Err(failure(&reply))
        }
    }
}
