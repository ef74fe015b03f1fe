//! What ingest's HTTP edge hands a source and gets back: a delivery as received
//! ([`WebhookRequest`]), the reasons a delivery is refused ([`Refusal`], each with its
//! HTTP status and stable code), and the body and header readers every source shares.
//!
//! Plain types over `http::HeaderMap` and bytes, so the source modules hold their edge
//! rules (which headers, which key, which refusal) without depending on the web server.

use chrono::{DateTime, TimeDelta, Utc};
use http::HeaderMap;
use serde_json::{Map, Value};

/// Why a delivery is refused. Nothing of a refused delivery is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The credential is missing or wrong (401).
    #[error("{message}")]
    Unauthorized {
        /// Stable error code (`missing_signature`, `bad_signature`, `bad_token`, ...).
        code: &'static str,
        /// What is wrong, for the sender.
        message: String,
    },
    /// The request is not one the source sends (400).
    #[error("{message}")]
    Invalid {
        /// Stable error code (`malformed_json`, `invalid_webhook`, `invalid_bill`, ...).
        code: &'static str,
        /// What is wrong, naming the field or batch index.
        message: String,
    },
    /// Over a size limit (413).
    #[error("{0}")]
    TooLarge(String),
}

impl Refusal {
    /// A 401 with `code`.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::Unauthorized {
            code,
            message: message.into(),
        }
    }

    /// A 400 with `code`.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The same refusal with its message prefixed (`batch[3]: …`).
    pub fn at(self, prefix: &str) -> Self {
        match self {
            Refusal::Unauthorized { code, message } => Refusal::Unauthorized {
                code,
                message: format!("{prefix}: {message}"),
            },
            Refusal::Invalid { code, message } => Refusal::Invalid {
                code,
                message: format!("{prefix}: {message}"),
            },
            Refusal::TooLarge(message) => Refusal::TooLarge(format!("{prefix}: {message}")),
        }
    }
}

/// A webhook delivery as ingest received it, before anything in it is trusted.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw body, exactly as signed.
    pub body: &'a [u8],
    /// Ingest's public base URL (`PUBLIC_BASE_URL`, no trailing slash).
    pub public_base_url: &'a str,
    /// The path and query the platform called.
    pub path_and_query: &'a str,
    /// When ingest received it.
    pub received_at: DateTime<Utc>,
    /// How old a delivery may be by the platform's own trigger time before it is
    /// refused as a replay (`WEBHOOK_MAX_AGE_SECS`); `None`: any age.
    pub max_age: Option<TimeDelta>,
}

impl WebhookRequest<'_> {
    /// A header's value as text, if present, printable and not blank.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(self.headers, name)
    }

    /// Refuses (400 `stale_delivery`) a delivery the platform says it triggered at
    /// `triggered_at`, when that is more than [`max_age`](Self::max_age) before it was
    /// received: a captured delivery replayed later. Unsigned headers can be forged, so
    /// this stops naive replays only; the deduplication key is the real guard.
    pub fn check_age(&self, triggered_at: DateTime<Utc>) -> Result<(), Refusal> {
        let Some(max_age) = self.max_age else {
            return Ok(());
        };
        let age = self.received_at.signed_duration_since(triggered_at);
        if age > max_age {
            return Err(Refusal::invalid(
                "stale_delivery",
                format!(
                    "the delivery was triggered {} h ago; deliveries older than {} h are refused",
                    age.num_hours(),
                    max_age.num_hours()
                ),
            ));
        }
        Ok(())
    }

    /// The URL the platform called as the public sees it: behind a proxy it differs
    /// from the one ingest sees, and Twilio signs it.
    pub fn public_url(&self) -> String {
        format!("{}{}", self.public_base_url, self.path_and_query)
    }
}

/// The signature header of a webhook, or the 401 saying it is missing.
pub(crate) fn signature<'r>(
    request: &WebhookRequest<'r>,
    name: &'static str,
) -> Result<&'r str, Refusal> {
    header(request.headers, name)
        .ok_or_else(|| Refusal::unauthorized("missing_signature", format!("missing {name}")))
}

/// Checks the signature header `name` with `verify` (which gets the header's value):
/// 401 `missing_signature` without it, 401 `bad_signature` when it does not verify.
pub(crate) fn check_signature(
    request: &WebhookRequest<'_>,
    name: &'static str,
    verify: impl FnOnce(&str) -> bool,
) -> Result<(), Refusal> {
    if verify(signature(request, name)?) {
        Ok(())
    } else {
        Err(bad_signature(name))
    }
}

/// The 401 of a signature that does not verify.
pub(crate) fn bad_signature(name: &'static str) -> Refusal {
    Refusal::unauthorized("bad_signature", format!("{name} does not verify"))
}

/// A header's value as text, if present, printable and not blank.
pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The named headers present in `headers`, as a JSON object with lower-case names:
/// the ones a raw event keeps for the normalizer.
pub fn kept_headers(headers: &HeaderMap, names: &[&str]) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|&name| {
            header(headers, name).map(|v| (name.to_owned(), Value::String(v.to_owned())))
        })
        .collect()
}

/// The value of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    header(headers, "authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// Parses a JSON body, refusing (400 `malformed_json`) with the parser's reason.
pub fn json_body(body: &[u8]) -> Result<Value, Refusal> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Refusal::invalid("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    if super::admission::has_nul(&value) {
        // Postgres JSONB cannot hold U+0000; refusing here keeps one bad request from
        // failing a whole group commit.
        return Err(Refusal::invalid(
            "nul_character",
            "the body contains a U+0000 character, which cannot be stored",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_with_nul_are_refused() {
        assert!(json_body(br#"{"a": "x\u0000y"}"#).is_err());
        assert!(json_body(b"{oops").is_err());
        assert_eq!(json_body(br#"{"a": 1}"#).unwrap()["a"], 1);
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "bearer  tok ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("tok"));
        h.insert("authorization", "Basic tok".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
    }
}
