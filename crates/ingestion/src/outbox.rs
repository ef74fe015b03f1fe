//! The outbox of `events.raw`: raw events committed but not yet published.
//!
//! The outbox is two narrow tables: `raw_event_outbox_batch`, one row per stored batch
//! (its arrival time and every new event id) inserted with the batch's
//! `customer_raw_event` rows in the same statement ([`crate::raw`]) and deleted once the
//! batch is on `events.raw`; and `raw_event_outbox`, one row (id, arrival time) per
//! event, which the relay publishes from (`ctl republish` queues events there too).
//! Normally the ingest publisher empties the batch table within milliseconds; rows stay
//! when Redis refused the publish or the process died between commit and publish.
//! [`RawEventOutbox`] lets the streams runtime's relay (`streams::run_outbox_relay`)
//! find what is older than a grace period — batch rows are first turned into single
//! rows, in one statement — rebuild the envelopes exactly as ingest would have, publish
//! them and take them out. The view `raw_event_outbox_events` lists every waiting event
//! of both tables.
//!
//! Guarantee: every committed raw event reaches `events.raw` at least once. An event can
//! be published twice (the relay races a slow publisher, or two ingest replicas relay at
//! once); the normalizer is idempotent on the raw id, so effects happen once. An outbox
//! row whose raw event was erased before it was published is dropped by the relay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use streams::{Envelope, Topic};
use uuid::Uuid;

use crate::raw;
use crate::raw_event::RawPayload;

/// The `events.raw` outbox over `customer_raw_event`.
#[derive(Clone)]
pub struct RawEventOutbox {
    db: PgPool,
}

impl RawEventOutbox {
    /// The outbox in `db`.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Unpublished raw events received more than `older_than` ago, oldest first, as the
    /// envelopes ingest publishes.
    pub async fn pending(
        &self,
        limit: usize,
        older_than: Duration,
    ) -> Result<Vec<Envelope<RawPayload>>, sqlx::Error> {
        type Row = (
            Uuid,
            Option<Uuid>,
            Option<Uuid>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            Option<sqlx::types::Json<serde_json::Map<String, serde_json::Value>>>,
            Option<serde_json::Value>,
        );
        // Batches ingest has not taken out within the grace period become single rows
        // (in one statement: a batch is in one table or the other, never in neither).
        sqlx::query(
            "WITH due AS (DELETE FROM raw_event_outbox_batch \
                          WHERE received_at <= now() - $1::interval \
                          RETURNING received_at, event_ids) \
             INSERT INTO raw_event_outbox (id, received_at) \
             SELECT unnest(event_ids), received_at FROM due ON CONFLICT (id) DO NOTHING",
        )
        .bind(older_than)
        .execute(&self.db)
        .await?;
        // Raw ids are UUIDv7: key order is arrival order.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT o.id, r.id, r.integration_id, r.source, r.source_event_id, r.kind, \
                    r.received_at, r.occurred_at, r.headers, r.payload \
             FROM raw_event_outbox o LEFT JOIN customer_raw_event r ON r.id = o.id \
             WHERE o.received_at <= now() - $2::interval \
             ORDER BY o.id \
             LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(older_than)
        .fetch_all(&self.db)
        .await?;
        let mut erased = Vec::new();
        let mut pending = Vec::with_capacity(rows.len());
        for (
            queued,
            id,
            integration_id,
            source,
            source_event_id,
            kind,
            received_at,
            occurred_at,
            headers,
            body,
        ) in rows
        {
            let (
                Some(id),
                Some(source),
                Some(source_event_id),
                Some(kind),
                Some(received_at),
                Some(headers),
                Some(body),
            ) = (
                id,
                source,
                source_event_id,
                kind,
                received_at,
                headers,
                body,
            )
            else {
                // The raw event was erased before it was published: nothing to send.
                erased.push(queued);
                continue;
            };
            pending.push(Envelope {
                v: streams::ENVELOPE_VERSION,
                id,
                source,
                kind,
                received_at,
                occurred_at,
                payload: RawPayload {
                    integration_id,
                    source_event_id,
                    headers: headers.0,
                    body,
                },
            });
        }
        if !erased.is_empty() {
            raw::mark_published(&self.db, &erased).await?;
        }
        Ok(pending)
    }

    /// How many raw events wait in the outbox (for metrics and `ctl`).
    pub async fn backlog(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM raw_event_outbox_events")
            .fetch_one(&self.db)
            .await
    }
}

#[async_trait::async_trait]
impl streams::OutboxStore for RawEventOutbox {
    async fn unpublished(
        &self,
        limit: usize,
        older_than: Duration,
    ) -> anyhow::Result<Vec<(Uuid, Topic, Envelope<serde_json::Value>)>> {
        let pending = self.pending(limit, older_than).await?;
        pending
            .into_iter()
            .map(|env| {
                let payload = serde_json::to_value(&env.payload)?;
                Ok((
                    env.id,
                    Topic::EventsRaw,
                    Envelope {
                        v: env.v,
                        id: env.id,
                        source: env.source,
                        kind: env.kind,
                        received_at: env.received_at,
                        occurred_at: env.occurred_at,
                        payload,
                    },
                ))
            })
            .collect()
    }

    async fn mark_published(&self, ids: &[Uuid]) -> anyhow::Result<()> {
        raw::mark_published(&self.db, ids).await?;
        Ok(())
    }
}
