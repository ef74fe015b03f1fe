//! The delivery log of each integration (`connection_logs`), shown on the dashboard's
//! Integrations page: every delivery that named a known integration, accepted or not,
//! with its status, latency and error.
//!
//! Entries are written in batches by one background task (one multi-row INSERT per
//! flush, plus one UPDATE of `integrations.last_delivery_at`), so a burst of webhooks
//! costs a handful of statements, not one per request. The log is an operational record,
//! not the event itself: when its queue is full an entry is dropped and counted
//! (`ingest_connection_log_dropped_total`) rather than slowing ingest down.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::sources::admission::storable_text;

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryLog {
    /// The integration the delivery named.
    pub integration_id: Uuid,
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// The endpoint (`shopify`, `segment/batch`, `csv`, ...).
    pub endpoint: String,
    /// HTTP status answered.
    pub status: u16,
    /// Time from arrival to answer.
    pub latency_ms: f32,
    /// Why it was rejected, for non-2xx answers.
    pub error: Option<String>,
    /// The raw event stored (the first, for batches).
    pub raw_event_id: Option<Uuid>,
}

/// Queues delivery log entries for the background writer. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionLog {
    tx: mpsc::Sender<DeliveryLog>,
}

impl ConnectionLog {
    /// Starts the writer; it flushes every `interval` or every `batch` entries, and once
    /// more when every handle is dropped.
    pub fn start(db: PgPool, batch: usize, interval: Duration) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(batch.max(1) * 16);
        let handle = tokio::spawn(writer(db, rx, batch.max(1), interval));
        (Self { tx }, handle)
    }

    /// Queues one entry; never waits.
    pub fn record(&self, entry: DeliveryLog) {
        if self.tx.try_send(entry).is_err() {
            metrics::counter!("ingest_connection_log_dropped_total").increment(1);
        }
    }
}

async fn writer(db: PgPool, mut rx: mpsc::Receiver<DeliveryLog>, batch: usize, interval: Duration) {
    let mut pending: Vec<DeliveryLog> = Vec::with_capacity(batch);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            entry = rx.recv() => match entry {
                Some(entry) => {
                    pending.push(entry);
                    if pending.len() >= batch {
                        flush(&db, &mut pending).await;
                    }
                }
                None => {
                    flush(&db, &mut pending).await;
                    return;
                }
            },
            _ = tick.tick() => flush(&db, &mut pending).await,
        }
    }
}

async fn flush(db: &PgPool, pending: &mut Vec<DeliveryLog>) {
    if pending.is_empty() {
        return;
    }
    let entries = std::mem::take(pending);
    if let Err(e) = write(db, &entries).await {
        metrics::counter!("ingest_connection_log_dropped_total").increment(entries.len() as u64);
        tracing::warn!(error = %e, entries = entries.len(), "writing connection logs failed");
    }
}

/// Writes entries now (one INSERT) and moves each integration's `last_delivery_at`
/// forward to its latest accepted delivery.
pub async fn write(db: &PgPool, entries: &[DeliveryLog]) -> Result<(), sqlx::Error> {
    let integrations: Vec<Uuid> = entries.iter().map(|e| e.integration_id).collect();
    let at: Vec<DateTime<Utc>> = entries.iter().map(|e| e.at).collect();
    let endpoints: Vec<&str> = entries.iter().map(|e| e.endpoint.as_str()).collect();
    let statuses: Vec<i16> = entries
        .iter()
        .map(|e| i16::try_from(e.status).unwrap_or(i16::MAX))
        .collect();
    let latencies: Vec<f32> = entries.iter().map(|e| e.latency_ms).collect();
    // A refusal's message may quote what the sender sent (a Twilio field with U+0000):
    // one such line must not fail the batch of log lines.
    let errors: Vec<Option<std::borrow::Cow<'_, str>>> = entries
        .iter()
        .map(|e| e.error.as_deref().map(storable_text))
        .collect();
    let raw_ids: Vec<Option<Uuid>> = entries.iter().map(|e| e.raw_event_id).collect();
    let mut tx = db.begin().await?;
    // An integration deleted meanwhile would fail the foreign key: its entries are
    // skipped instead of failing the whole batch. Ids follow arrival order.
    sqlx::query(
        "INSERT INTO connection_logs \
             (integration_id, at, endpoint, status, latency_ms, error, raw_event_id) \
         SELECT l.integration_id, l.at, l.endpoint, l.status, l.latency_ms, l.error, l.raw_event_id \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::int2[], $5::real[], \
                     $6::text[], $7::uuid[]) WITH ORDINALITY \
              AS l(integration_id, at, endpoint, status, latency_ms, error, raw_event_id, n) \
         WHERE EXISTS (SELECT 1 FROM integrations i WHERE i.id = l.integration_id) \
         ORDER BY l.n",
    )
    .bind(&integrations)
    .bind(&at)
    .bind(&endpoints)
    .bind(&statuses)
    .bind(&latencies)
    .bind(&errors)
    .bind(&raw_ids)
    .execute(&mut *tx)
    .await?;

    let mut latest: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for e in entries.iter().filter(|e| (200..300).contains(&e.status)) {
        let slot = latest.entry(e.integration_id).or_insert(e.at);
        *slot = (*slot).max(e.at);
    }
    if !latest.is_empty() {
        let mut ids: Vec<Uuid> = latest.keys().copied().collect();
        // Sorted so concurrent writers lock integration rows in one order.
        ids.sort();
        let times: Vec<DateTime<Utc>> = ids.iter().map(|id| latest[id]).collect();
        sqlx::query(
            "UPDATE integrations i SET last_delivery_at = GREATEST(i.last_delivery_at, d.at) \
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS d(id, at) WHERE i.id = d.id",
        )
        .bind(&ids)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
