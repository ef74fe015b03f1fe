//! The outbox of `events.raw`: raw events committed but not yet published.
//!
//! `customer_raw_event.published_at IS NULL` is the outbox (a partial index keeps it
//! cheap to scan). Normally the ingest publisher empties it within milliseconds; rows
//! stay when Redis refused the publish or the process died between commit and publish.
//! [`RawEventOutbox`] lets the streams runtime's relay (`streams::run_outbox_relay`) find
//! rows older than a grace period, rebuild their envelopes exactly as ingest would have,
//! publish them and mark them published.
//!
//! Guarantee: every committed raw event reaches `events.raw` at least once. An event can
//! be published twice (the relay races a slow publisher, or two ingest replicas relay at
//! once); the normalizer is idempotent on the raw id, so effects happen once.

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
            String,
            String,
            String,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
            serde_json::Value,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, integration_id, source, source_event_id, kind, received_at, occurred_at, \
                    headers, payload \
             FROM customer_raw_event \
             WHERE published_at IS NULL AND received_at <= now() - $2::interval \
             ORDER BY received_at \
             LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(older_than)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    integration_id,
                    source,
                    source_event_id,
                    kind,
                    received_at,
                    occurred_at,
                    headers,
                    body,
                )| {
                    Envelope {
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
                    }
                },
            )
            .collect())
    }

    /// How many raw events wait in the outbox (for metrics and `ctl`).
    pub async fn backlog(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM customer_raw_event WHERE published_at IS NULL")
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
