//! The versioned JSON envelope of every stream entry: `{v, id, source, kind,
//! received_at, occurred_at, payload}`. `id` is the raw event id and travels unchanged
//! through every topic, so logs and rows of one event share it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The envelope version this build writes. Readers accept this version only and
/// dead-letter others with a clear reason.
pub const ENVELOPE_VERSION: u16 = 1;

/// A stream entry's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Envelope version.
    pub v: u16,
    /// The raw event id (or, for non-event topics, the id of the request).
    pub id: Uuid,
    /// Where it came from (`shopify`, `normalizer`, `api-gateway`, ...).
    pub source: String,
    /// What it is within the topic (`orders/create`, `approve`, `profile_changed`, ...).
    pub kind: String,
    /// When ingest (or the publisher) received it.
    pub received_at: DateTime<Utc>,
    /// When it happened, if known.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// The topic-specific body.
    pub payload: T,
}

impl<T> Envelope<T> {
    /// A version-1 envelope received now.
    pub fn new(id: Uuid, source: impl Into<String>, kind: impl Into<String>, payload: T) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            id,
            source: source.into(),
            kind: kind.into(),
            received_at: Utc::now(),
            occurred_at: None,
            payload,
        }
    }

    /// The same envelope with its payload turned into another type.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Envelope<U> {
        Envelope {
            v: self.v,
            id: self.id,
            source: self.source,
            kind: self.kind,
            received_at: self.received_at,
            occurred_at: self.occurred_at,
            payload: f(self.payload),
        }
    }
}
