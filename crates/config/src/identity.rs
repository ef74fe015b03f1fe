//! Settings of identity resolution (the identity-merger service and `ctl identity`).

use serde::{Deserialize, Serialize};

/// Identity resolution settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentitySettings {
    /// Extra junk identifier values, comma separated, on top of the built-in blocklist.
    /// Each entry is a bare value (junk for every kind) or `kind:value`.
    pub identity_blocklist_extra: String,
    /// An identifier seen with more distinct strong identifiers of one kind than one
    /// person may hold (the per-profile limit of that kind) plus this many is marked
    /// suspect and stops merging.
    pub identity_suspect_threshold: u32,
    /// An event linking more profiles than this goes to the review queue.
    pub identity_max_auto_merge: u32,
    /// Most e-mails one profile may hold before a merge needs review.
    pub identity_max_emails: u32,
    /// Most phones one profile may hold before a merge needs review.
    pub identity_max_phones: u32,
    /// Most customer ids per source one profile may hold.
    pub identity_max_customer_ids_per_source: u32,
    /// Most loyalty ids one profile may hold before a merge needs review.
    pub identity_max_loyalty_ids: u32,
    /// Never join profiles whose people's first names clearly differ (family members
    /// typing one phone number); such links become review items.
    pub identity_name_guard: bool,
    /// Milliseconds to collect changes of one profile before asking for new predictions.
    pub identity_predictions_debounce_ms: u64,
    /// Seconds a Customer 360 document stays in the Redis cache before a read rebuilds
    /// it from Postgres (bounds staleness if a refresh was ever missed).
    pub customer360_cache_ttl_secs: u64,
    /// Most `events.normalized` entries the merger resolves in one transaction (its
    /// stream batch; `STREAM_BATCH_SIZE` is the other consumers'). Under a backlog a
    /// larger batch spreads each step's fixed round trips and its one region replay
    /// over more events; at low rates batches stay as small as what arrived.
    pub identity_merger_batch_size: usize,
}

impl IdentitySettings {
    pub(crate) fn defaults() -> Self {
        Self {
            identity_blocklist_extra: String::new(),
            identity_suspect_threshold: 2,
            identity_max_auto_merge: 3,
            identity_max_emails: 3,
            identity_max_phones: 3,
            identity_max_customer_ids_per_source: 1,
            identity_max_loyalty_ids: 1,
            identity_name_guard: true,
            identity_predictions_debounce_ms: 2_000,
            customer360_cache_ttl_secs: 86_400,
            identity_merger_batch_size: 1_000,
        }
    }
}
