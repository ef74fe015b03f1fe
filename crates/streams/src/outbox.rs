//! The outbox relay: rows that a service stored durably but has not yet published (the
//! process died, or Redis was down, between commit and `XADD`) are published later.
//!
//! The store (for ingest: the outbox rows of `customer_raw_event`) says
//! what is unpublished and records what was published; the relay only moves rows from
//! one to the other. A row is marked after its entry is appended, so a crash in between
//! publishes it twice — at-least-once, which idempotent consumers absorb — and never
//! zero times. Only rows older than `older_than` are taken, so the relay does not race
//! the service's own immediate publish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consumer::{error_backoff, sleep_or_cancel};
use crate::{Envelope, Streams, Topic};

/// One unpublished row: its id in the store, the topic it belongs on, its envelope.
pub type OutboxRow = (Uuid, Topic, Envelope<serde_json::Value>);

/// Where the relay finds unpublished rows and records published ones.
#[async_trait::async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Up to `limit` rows not yet published and stored more than `older_than` ago,
    /// oldest first: row id, topic, envelope.
    async fn unpublished(
        &self,
        limit: usize,
        older_than: Duration,
    ) -> anyhow::Result<Vec<OutboxRow>>;

    /// Records that these rows are on their topic now.
    async fn mark_published(&self, ids: &[Uuid]) -> anyhow::Result<()>;
}

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// Pause between passes when the outbox is empty.
    pub interval: Duration,
    /// Rows younger than this are left to the service's own publish.
    pub older_than: Duration,
    /// Rows per pass (one `publish_many` per topic).
    pub batch: usize,
}

/// Runs the relay with `interval` as both the pause between passes and the minimum
/// row age, 500 rows per pass. See [`run_outbox_relay_with`].
pub async fn run_outbox_relay<S: OutboxStore>(
    streams: Streams,
    store: Arc<S>,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let opts = OutboxOptions {
        interval,
        older_than: interval,
        batch: 500,
    };
    run_outbox_relay_with(streams, store, opts, shutdown).await
}

/// Runs the relay until `shutdown` is cancelled: a pass every `interval`, and passes
/// back to back while full batches keep coming. Failures are logged and retried with
/// back-off; they never end the relay.
pub async fn run_outbox_relay_with<S: OutboxStore>(
    streams: Streams,
    store: Arc<S>,
    opts: OutboxOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(opts.batch > 0, "the outbox batch must be at least 1");
    let published = metrics::counter!("streams_outbox_published_total");
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let pause = match relay_once(&streams, store.as_ref(), opts.batch, opts.older_than).await {
            Ok(n) => {
                failures = 0;
                if n > 0 {
                    published.increment(n as u64);
                    tracing::info!(count = n, "outbox relay republished rows");
                }
                if n >= opts.batch {
                    continue;
                }
                opts.interval
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(
                    error = format!("{e:#}"),
                    failures,
                    "outbox relay pass failed"
                );
                error_backoff(failures).max(opts.interval)
            }
        };
        if sleep_or_cancel(pause, &shutdown).await {
            break;
        }
    }
    Ok(())
}

/// One pass: publishes up to `batch` unpublished rows older than `older_than` (one
/// pipeline per topic) and marks them. Returns how many rows were published.
pub async fn relay_once<S: OutboxStore + ?Sized>(
    streams: &Streams,
    store: &S,
    batch: usize,
    older_than: Duration,
) -> anyhow::Result<usize> {
    let rows = store.unpublished(batch, older_than).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut by_topic: HashMap<Topic, (Vec<Uuid>, Vec<Envelope<serde_json::Value>>)> =
        HashMap::new();
    for (id, topic, env) in rows {
        let (ids, envs) = by_topic.entry(topic).or_default();
        ids.push(id);
        envs.push(env);
    }
    let mut topics: Vec<_> = by_topic.into_iter().collect();
    // Topics in name order, so a pass is deterministic.
    topics.sort_by_key(|(topic, _)| topic.name());
    let mut total = 0;
    for (topic, (ids, envs)) in topics {
        streams.publish_many(topic, &envs).await?;
        store.mark_published(&ids).await?;
        total += ids.len();
    }
    Ok(total)
}
