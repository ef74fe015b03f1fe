//! Marketing consent per channel: how it is recorded, read and shown.
//!
//! Consent lives in the profile's traits, like any other fact about the person:
//! `whatsapp_marketing`, `email_marketing` and `sms_marketing` hold `subscribed` or
//! `unsubscribed` (Shopify's own states, such as `not_subscribed` or `pending`, are
//! kept as sent and count as no consent). Beside each, `<trait>_source` says where the
//! latest value came from (`whatsapp_inbound`, `whatsapp_keyword`, `segment`, `csv`,
//! `shopify`, `api`, ...) and `<trait>_updated_at` when (the event's time). The
//! identity merger keeps, per trait, the value of the latest event by event time, so
//! the latest consent wins whatever order the events arrive in; at the very same
//! instant `unsubscribed` wins (the larger JSON text), so an opt-out is never lost to a
//! tie.
//!
//! Every write path ends in [`stamp`]: the normalizer calls it on every event, so a
//! Segment trait, a CSV column, a Shopify webhook, a WhatsApp reply and the API's
//! consent endpoint all record status, source and time the same way.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::audience::ConsentChannel;

names! {
    /// A consent decision.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum ConsentStatus("consent status") {
        /// The person agreed to marketing on the channel.
        Subscribed = "subscribed",
        /// The person refused or withdrew consent.
        Unsubscribed = "unsubscribed",
    }
}

impl ConsentStatus {
    /// Reads a consent value as sources send it: `true`/`false`, `yes`/`no`,
    /// `subscribed`/`unsubscribed`, `opted_in`/`opted_out`, `1`/`0` (any case).
    /// `None` for anything else (Shopify's `pending`, an empty cell, ...).
    pub fn from_value(value: &Value) -> Option<ConsentStatus> {
        match value {
            Value::Bool(true) => Some(ConsentStatus::Subscribed),
            Value::Bool(false) => Some(ConsentStatus::Unsubscribed),
            Value::Number(n) => match n.as_i64() {
                Some(1) => Some(ConsentStatus::Subscribed),
                Some(0) => Some(ConsentStatus::Unsubscribed),
                _ => None,
            },
            Value::String(s) => ConsentStatus::from_word(s),
            _ => None,
        }
    }

    /// Reads a consent word (see [`ConsentStatus::from_value`]).
    pub fn from_word(word: &str) -> Option<ConsentStatus> {
        let w = word.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        match w.as_str() {
            "subscribed" | "true" | "yes" | "y" | "1" | "opted_in" | "opt_in" | "optin"
            | "granted" => Some(ConsentStatus::Subscribed),
            "unsubscribed" | "false" | "no" | "n" | "0" | "opted_out" | "opt_out" | "optout"
            | "revoked" | "denied" => Some(ConsentStatus::Unsubscribed),
            _ => None,
        }
    }
}

/// Twilio's default opt-out keywords ("Twilio support for opt-out keywords (SMS STOP
/// filtering)"): a reply that is exactly one of them, in any case, opts out.
pub const OPT_OUT_KEYWORDS: [&str; 6] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];

/// Twilio's default opt-in keywords (same document): a reply that is exactly one of
/// them opts back in.
pub const OPT_IN_KEYWORDS: [&str; 3] = ["START", "YES", "UNSTOP"];

/// The consent a reply's body asks for, when the whole body (trimmed, any case) is one
/// of Twilio's keywords. Only single-word replies count, as at Twilio: "STOP PLEASE"
/// is not an opt-out.
pub fn keyword(body: &str) -> Option<ConsentStatus> {
    let word = body.trim().to_ascii_uppercase();
    if OPT_OUT_KEYWORDS.contains(&word.as_str()) {
        Some(ConsentStatus::Unsubscribed)
    } else if OPT_IN_KEYWORDS.contains(&word.as_str()) {
        Some(ConsentStatus::Subscribed)
    } else {
        None
    }
}

/// Source recorded for an opt-in implied by an inbound WhatsApp message.
pub const SOURCE_WHATSAPP_INBOUND: &str = "whatsapp_inbound";
/// Source recorded for a WhatsApp opt-out or opt-in keyword reply.
pub const SOURCE_WHATSAPP_KEYWORD: &str = "whatsapp_keyword";
/// Source recorded for a write through `PUT /api/v1/profiles/{id}/consent` (the caller's
/// own source, when given, follows after a colon: `api:call-centre`).
pub const SOURCE_API: &str = "api";
/// Longest source text kept.
pub const MAX_SOURCE_LEN: usize = 64;

impl ConsentChannel {
    /// Every channel, in a stable order.
    pub const ALL: [ConsentChannel; 3] = [
        ConsentChannel::Whatsapp,
        ConsentChannel::Email,
        ConsentChannel::Sms,
    ];

    /// The trait that records where the latest value came from.
    pub fn source_key(self) -> String {
        format!("{}_source", self.trait_key())
    }

    /// The trait that records when the latest value was given (RFC 3339).
    pub fn updated_at_key(self) -> String {
        format!("{}_updated_at", self.trait_key())
    }

    /// The channel's name (`whatsapp`, `email`, `sms`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentChannel::Email => "email",
            ConsentChannel::Sms => "sms",
            ConsentChannel::Whatsapp => "whatsapp",
        }
    }
}

/// Records consent for `channel` in an event's traits: the status, its source and the
/// event's time.
pub fn record(
    traits: &mut Map<String, Value>,
    channel: ConsentChannel,
    status: ConsentStatus,
    source: &str,
    at: DateTime<Utc>,
) {
    traits.insert(
        channel.trait_key().into(),
        Value::String(status.as_str().into()),
    );
    traits.insert(channel.source_key(), Value::String(clip(source)));
    traits.insert(channel.updated_at_key(), Value::String(rfc3339(at)));
}

/// Completes the consent traits an event carries: a value given as a boolean or a
/// consent word becomes `subscribed`/`unsubscribed`, the source defaults to
/// `default_source` (the event's source), and the time is the event's. Events without
/// consent traits are left alone; the time and source of a channel are only written
/// beside a status.
pub fn stamp(traits: &mut Map<String, Value>, default_source: &str, at: DateTime<Utc>) {
    for channel in ConsentChannel::ALL {
        let key = channel.trait_key();
        let Some(value) = traits.get(key).filter(|v| !v.is_null()) else {
            traits.remove(&channel.source_key());
            traits.remove(&channel.updated_at_key());
            continue;
        };
        if let Some(status) = ConsentStatus::from_value(value) {
            traits.insert(key.into(), Value::String(status.as_str().into()));
        }
        let source = traits
            .get(&channel.source_key())
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map_or_else(|| default_source.to_owned(), clip);
        traits.insert(channel.source_key(), Value::String(source));
        traits.insert(channel.updated_at_key(), Value::String(rfc3339(at)));
    }
}

fn clip(source: &str) -> String {
    source.trim().chars().take(MAX_SOURCE_LEN).collect()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One channel's consent as the Customer 360 shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentEntry {
    /// The channel.
    pub channel: ConsentChannel,
    /// The recorded value (`subscribed`, `unsubscribed`, or a source's own state such as
    /// `pending`); `None` when nothing was ever recorded.
    #[serde(default)]
    pub status: Option<String>,
    /// Whether marketing on the channel is allowed (the value is `subscribed`).
    pub subscribed: bool,
    /// Where the latest value came from.
    #[serde(default)]
    pub source: Option<String>,
    /// When the latest value was given.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The consent of every channel from a profile's traits and trait times (the time the
/// merger recorded for the status trait wins over the `_updated_at` text).
pub fn entries(
    traits: &Map<String, Value>,
    trait_times: &std::collections::BTreeMap<String, DateTime<Utc>>,
) -> Vec<ConsentEntry> {
    ConsentChannel::ALL
        .into_iter()
        .map(|channel| {
            let key = channel.trait_key();
            let status = traits.get(key).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            });
            let text = |k: &str| traits.get(k).and_then(Value::as_str).map(str::to_owned);
            ConsentEntry {
                channel,
                subscribed: status.as_deref() == Some(ConsentChannel::SUBSCRIBED),
                source: status.as_ref().and(text(&channel.source_key())),
                updated_at: status
                    .as_ref()
                    .and(trait_times.get(key).copied().or_else(|| {
                        text(&channel.updated_at_key())
                            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                            .map(|t| t.with_timezone(&Utc))
                    })),
                status,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keywords_are_whole_replies_in_any_case() {
        for w in OPT_OUT_KEYWORDS {
            assert_eq!(keyword(w), Some(ConsentStatus::Unsubscribed));
            assert_eq!(
                keyword(&format!("  {} ", w.to_lowercase())),
                Some(ConsentStatus::Unsubscribed)
            );
        }
        for w in OPT_IN_KEYWORDS {
            assert_eq!(keyword(w), Some(ConsentStatus::Subscribed));
        }
        assert_eq!(keyword("STOP PLEASE"), None);
        assert_eq!(keyword("please cancel"), None);
        assert_eq!(keyword("HELP"), None);
        assert_eq!(keyword("hi, is the blue kurta back?"), None);
    }

    #[test]
    fn values_and_words() {
        assert_eq!(
            ConsentStatus::from_value(&json!(true)),
            Some(ConsentStatus::Subscribed)
        );
        assert_eq!(
            ConsentStatus::from_value(&json!("Opted-Out")),
            Some(ConsentStatus::Unsubscribed)
        );
        assert_eq!(
            ConsentStatus::from_value(&json!(0)),
            Some(ConsentStatus::Unsubscribed)
        );
        assert_eq!(ConsentStatus::from_value(&json!("pending")), None);
        assert_eq!(ConsentStatus::from_value(&json!(null)), None);
    }

    #[test]
    fn stamp_canonicalises_and_records_source_and_time() {
        let at = "2026-12-01T10:00:00Z".parse().unwrap();
        let mut t = json!({"whatsapp_marketing": true, "email_marketing": "pending",
                           "sms_marketing_source": "stray", "city": "Pune"})
        .as_object()
        .cloned()
        .unwrap();
        stamp(&mut t, "segment", at);
        assert_eq!(t["whatsapp_marketing"], "subscribed");
        assert_eq!(t["whatsapp_marketing_source"], "segment");
        assert_eq!(
            t["whatsapp_marketing_updated_at"],
            "2026-12-01T10:00:00.000000Z"
        );
        assert_eq!(
            t["email_marketing"], "pending",
            "a source's own state is kept"
        );
        assert_eq!(t["email_marketing_source"], "segment");
        assert!(
            !t.contains_key("sms_marketing_source"),
            "no source without a status"
        );
        let mut given = Map::new();
        record(
            &mut given,
            ConsentChannel::Sms,
            ConsentStatus::Unsubscribed,
            "api:desk",
            at,
        );
        stamp(&mut given, "segment", at);
        assert_eq!(
            given["sms_marketing_source"], "api:desk",
            "an explicit source stays"
        );
    }

    #[test]
    fn entries_per_channel() {
        let at: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let mut t = Map::new();
        record(
            &mut t,
            ConsentChannel::Whatsapp,
            ConsentStatus::Subscribed,
            SOURCE_WHATSAPP_INBOUND,
            at,
        );
        let e = entries(&t, &Default::default());
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].channel, ConsentChannel::Whatsapp);
        assert!(e[0].subscribed);
        assert_eq!(e[0].source.as_deref(), Some(SOURCE_WHATSAPP_INBOUND));
        assert_eq!(e[0].updated_at, Some(at));
        assert_eq!(e[1].status, None);
        assert!(!e[1].subscribed);
    }
}
