//! The raw event: the row a delivery becomes (`customer_raw_event`), the payload it
//! travels as on `events.raw`, and the borrowed view the source mappings read.
//!
//! Kept apart from the group-commit store ([`crate::raw`]) so the source modules, which
//! build and read raw events, depend on these types only, not on the store's machinery.

use chrono::{DateTime, Utc};
use domain::Source;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use streams::Envelope;
use uuid::Uuid;

/// A delivery ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRawEvent {
    /// The raw event id (UUID v7), the key of the event from here to the timeline.
    pub id: Uuid,
    /// The integration it arrived through.
    pub integration_id: Option<Uuid>,
    /// Which system sent it.
    pub source: Source,
    /// The source's own id of this delivery (webhook id, message id, `hash:line`, ...):
    /// the deduplication key with `source`.
    pub source_event_id: String,
    /// What it is within the source (Shopify topic, Segment call type, ...).
    pub kind: String,
    /// When ingest received it.
    pub received_at: DateTime<Utc>,
    /// When it happened, if the source says (Segment timestamps are skew-corrected).
    pub occurred_at: Option<DateTime<Utc>>,
    /// The request headers that matter to the normalizer (topic, shop domain, ...).
    pub headers: Map<String, Value>,
    /// The body as JSON (form-encoded bodies become an object of their parameters).
    pub body: Value,
}

impl NewRawEvent {
    /// A new event with a fresh id, received now, without headers or occurrence time.
    pub fn new(
        integration_id: Option<Uuid>,
        source: Source,
        source_event_id: impl Into<String>,
        kind: impl Into<String>,
        body: Value,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            integration_id,
            source,
            source_event_id: source_event_id.into(),
            kind: kind.into(),
            received_at: Utc::now(),
            occurred_at: None,
            headers: Map::new(),
            body,
        }
    }

    /// The `events.raw` envelope of this event, borrowing its body (publishing
    /// serialises it without copying the JSON tree).
    pub fn envelope_ref(&self) -> Envelope<RawPayloadRef<'_>> {
        Envelope {
            v: streams::ENVELOPE_VERSION,
            id: self.id,
            source: self.source.as_str().to_owned(),
            kind: self.kind.clone(),
            received_at: self.received_at,
            occurred_at: self.occurred_at,
            payload: RawPayloadRef {
                integration_id: self.integration_id,
                source_event_id: &self.source_event_id,
                headers: &self.headers,
                body: &self.body,
            },
        }
    }

    /// The `events.raw` envelope of this event.
    pub fn envelope(&self) -> Envelope<RawPayload> {
        self.envelope_ref().map(RawPayloadRef::into_owned)
    }

    /// The view the source mappings read, as the normalizer will see this event.
    pub fn record(&self) -> RawRecord<'_> {
        RawRecord {
            id: self.id,
            source: self.source,
            kind: &self.kind,
            received_at: self.received_at,
            occurred_at: self.occurred_at,
            integration_id: self.integration_id,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// The payload of an `events.raw` entry: what the normalizer needs besides the envelope's
/// `id`, `source`, `kind`, `received_at` and `occurred_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawPayload {
    /// The integration it arrived through.
    #[serde(default)]
    pub integration_id: Option<Uuid>,
    /// The source's id of the delivery.
    pub source_event_id: String,
    /// Headers that matter (see [`NewRawEvent::headers`]).
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// The body as JSON.
    pub body: Value,
}

/// [`RawPayload`] borrowed from a [`NewRawEvent`]; serialises to the same JSON.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RawPayloadRef<'a> {
    /// The integration it arrived through.
    pub integration_id: Option<Uuid>,
    /// The source's id of the delivery.
    pub source_event_id: &'a str,
    /// Headers that matter.
    pub headers: &'a Map<String, Value>,
    /// The body as JSON.
    pub body: &'a Value,
}

impl RawPayloadRef<'_> {
    /// The owned payload.
    pub fn into_owned(self) -> RawPayload {
        RawPayload {
            integration_id: self.integration_id,
            source_event_id: self.source_event_id.to_owned(),
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }
}

/// A raw event as the mappings read it: borrowed from a [`NewRawEvent`] or from an
/// `events.raw` envelope.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The raw event id.
    pub id: Uuid,
    /// The source.
    pub source: Source,
    /// Kind within the source (topic, call type).
    pub kind: &'a str,
    /// When ingest received it.
    pub received_at: DateTime<Utc>,
    /// When it happened, if ingest knew.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The integration.
    pub integration_id: Option<Uuid>,
    /// Headers kept by ingest.
    pub headers: &'a Map<String, Value>,
    /// The body.
    pub body: &'a Value,
}

impl<'a> RawRecord<'a> {
    /// The record of an `events.raw` entry whose source is `source`.
    pub fn of_envelope(env: &'a Envelope<RawPayload>, source: Source) -> Self {
        Self {
            id: env.id,
            source,
            kind: &env.kind,
            received_at: env.received_at,
            occurred_at: env.occurred_at,
            integration_id: env.payload.integration_id,
            headers: &env.payload.headers,
            body: &env.payload.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_envelopes_serialise_alike() {
        let mut ev = NewRawEvent::new(
            Some(Uuid::now_v7()),
            Source::Segment,
            "m-1",
            "track",
            serde_json::json!({"type": "track", "event": "A", "properties": {"n": 1}}),
        );
        ev.headers
            .insert("x-k".into(), serde_json::Value::String("v".into()));
        let owned = serde_json::to_value(ev.envelope()).unwrap();
        let borrowed = serde_json::to_value(ev.envelope_ref()).unwrap();
        assert_eq!(owned, borrowed);
        let back: Envelope<RawPayload> = serde_json::from_value(borrowed).unwrap();
        assert_eq!(back.payload.body, ev.body);
    }
}
