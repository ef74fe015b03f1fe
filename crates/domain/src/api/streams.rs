//! The Redis Streams pipeline as operators see it (`/streams/*`): topic and group
//! state, entries, dead letters and the live feed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `GET /streams`: the state of every topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamsOverview {
    /// When it was measured.
    pub at: DateTime<Utc>,
    /// One entry per topic, in pipeline order.
    pub topics: Vec<TopicStats>,
}

/// The state of one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicStats {
    /// Topic name (`events.raw`, ...), without the fleet's prefix.
    pub topic: String,
    /// Entries in the stream.
    pub length: u64,
    /// Entries in its dead-letter stream.
    pub dlq_length: u64,
    /// Id of the newest entry.
    #[serde(default)]
    pub last_entry_id: Option<String>,
    /// Its consumer groups.
    pub groups: Vec<ConsumerGroupStats>,
}

/// The state of one consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerGroupStats {
    /// Group name.
    pub name: String,
    /// Consumers in the group.
    pub consumers: u64,
    /// Entries delivered but not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group, when Redis can tell.
    #[serde(default)]
    pub lag: Option<u64>,
    /// Last entry delivered to the group.
    pub last_delivered_id: String,
}

/// `GET /streams/{topic}/entries` and `.../dlq` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct StreamEntriesQuery {
    /// Cursor from the previous page (entries older than it).
    #[serde(default)]
    pub cursor: Option<String>,
    /// Entries per page (1–200, default 50).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    pub limit: Option<u32>,
}

/// One stream entry (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamEntry {
    /// Redis entry id.
    pub entry_id: String,
    /// Topic name.
    pub topic: String,
    /// The envelope (`{v, id, source, kind, received_at, occurred_at, payload}`), or
    /// the raw fields when the entry is not a valid envelope.
    pub envelope: serde_json::Value,
}

/// One dead-lettered entry (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqEntry {
    /// Entry id in the dead-letter stream (what replay takes).
    pub entry_id: String,
    /// Topic the entry failed on.
    pub topic: String,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Consumer group it failed in.
    #[serde(default)]
    pub group: Option<String>,
    /// Deliveries before it was dead-lettered.
    #[serde(default)]
    pub deliveries: Option<u64>,
    /// Entry id it had in the topic.
    #[serde(default)]
    pub original_entry_id: Option<String>,
    /// The envelope, as it was.
    pub envelope: serde_json::Value,
}

/// Answer of a dead-letter replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplayAccepted {
    /// The entry's new id in its topic.
    pub entry_id: String,
}

/// Server-sent event names of `GET /streams/live`: `stats` carries a
/// [`StreamsOverview`] every `LIVE_INTERVAL_MS` (default one second), `entry` a
/// [`StreamEntry`] of `events.raw` or `events.normalized` as it arrives (at most 50 per
/// topic and tick: the feed is a viewer, not a consumer).
pub mod live_events {
    /// Event name of a [`super::StreamsOverview`] tick.
    pub const STATS: &str = "stats";
    /// Event name of a new [`super::StreamEntry`].
    pub const ENTRY: &str = "entry";
}
