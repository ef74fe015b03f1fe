//! Settings of the ingest service, the normalizer and the CSV importer.

use serde::{Deserialize, Serialize};

/// Ingest and normalizer settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestSettings {
    /// The public base URL brands reach ingest on (`https://ingest.example.com`). Used
    /// for Twilio signatures (a proxy may change host or scheme) and in webhook URLs.
    pub public_base_url: String,
    /// Largest request body ingest reads, in bytes (Segment batches are 500 KB).
    pub ingest_max_body_bytes: usize,
    /// Most raw events written in one group-commit INSERT.
    pub ingest_commit_batch: usize,
    /// Longest a request waits for others to share its commit, in microseconds.
    pub ingest_commit_linger_us: u64,
    /// Group-commit writer tasks: while one INSERT commits, the next batch collects.
    pub ingest_commit_writers: usize,
    /// Tasks publishing committed raw events to `events.raw`.
    pub ingest_publishers: usize,
    /// Consumers each normalizer process runs on `events.raw` (in its consumer group,
    /// like replicas): while one waits on Postgres for its batch, another writes the
    /// next. One by default: a second one interleaves batches on `events.normalized`,
    /// and with one merger the late events that makes cost more than it gains
    /// (docs/performance.md); worth 2 with several merger replicas.
    pub normalizer_consumers: usize,
    /// Milliseconds an integration (secret, enabled flag) is cached by ingest; a
    /// disabled or rotated integration takes effect within this time.
    pub ingest_integration_cache_ms: u64,
    /// Seconds an unpublished raw event waits before the outbox relay republishes it.
    pub outbox_relay_after_secs: u64,
    /// ISO 4217 currency of orders that name none (Segment's `currency` is optional);
    /// empty: such orders are not recorded, their events still are, saying why.
    pub default_currency: String,
    /// Seconds a signed webhook may be old, by the platform's own trigger time
    /// (Shopify's `X-Shopify-Triggered-At`), before it is refused as a replay; 0 turns
    /// the check off.
    pub webhook_max_age_secs: u64,
    /// Requests per second one integration (write key, webhook URL, POS token) may send
    /// to ingest; 0 turns the limit off.
    pub ingest_rate_per_integration: u32,
    /// Requests per second one client address may send to ingest; 0 turns it off.
    pub ingest_rate_per_client: u32,
    /// Largest CSV file an import accepts, in bytes.
    pub csv_max_bytes: u64,
    /// CSV rows written per INSERT during an import.
    pub csv_batch_rows: usize,
}

impl IngestSettings {
    pub(crate) fn defaults() -> Self {
        Self {
            public_base_url: "http://127.0.0.1:8081".into(),
            ingest_max_body_bytes: 1024 * 1024,
            ingest_commit_batch: 512,
            ingest_commit_linger_us: 2_000,
            ingest_commit_writers: 4,
            ingest_publishers: 2,
            normalizer_consumers: 1,
            ingest_integration_cache_ms: 1_000,
            outbox_relay_after_secs: 5,
            default_currency: "INR".into(),
            webhook_max_age_secs: 2 * 24 * 3600,
            ingest_rate_per_integration: 2_000,
            ingest_rate_per_client: 1_000,
            csv_max_bytes: 2 * 1024 * 1024 * 1024,
            csv_batch_rows: 1_000,
        }
    }
}
