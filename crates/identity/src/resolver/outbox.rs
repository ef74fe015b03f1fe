//! The prediction-request outbox: profiles whose facts changed wait in
//! `identity_prediction_outbox` until their debounce interval has passed, then the
//! streams runtime's outbox relay publishes one `PredictionRequest` per profile on
//! `predictions.requests`.
//!
//! The row is written in the same transaction as the change, so a crash never loses a
//! request; many changes of one profile within the interval give one request. A row is
//! removed after publishing only if it did not change after it was read, so a change
//! landing during the publish is published again. Several replicas may publish the same
//! row once more; ml-inference scoring is idempotent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::PredictionRequest;
use sqlx::PgPool;
use streams::{Envelope, OutboxRow, OutboxStore, Topic};
use uuid::Uuid;

/// `identity_prediction_outbox` as an [`OutboxStore`].
pub struct PredictionOutbox {
    db: PgPool,
    read: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl PredictionOutbox {
    /// The outbox in `db`.
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            read: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl OutboxStore for PredictionOutbox {
    async fn unpublished(
        &self,
        limit: usize,
        _older_than: Duration,
    ) -> anyhow::Result<Vec<OutboxRow>> {
        let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT profile_id, changed_at FROM identity_prediction_outbox \
             WHERE due_at <= now() ORDER BY due_at, profile_id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db)
        .await?;
        let mut read = self.read.lock().expect("outbox bookkeeping lock");
        let mut out = Vec::with_capacity(rows.len());
        for (profile_id, changed_at) in rows {
            read.insert(profile_id, changed_at);
            let payload = serde_json::to_value(PredictionRequest { profile_id })?;
            out.push((
                profile_id,
                Topic::PredictionsRequests,
                Envelope::new(
                    Uuid::now_v7(),
                    "identity-merger",
                    "profile_changed",
                    payload,
                ),
            ));
        }
        Ok(out)
    }

    async fn mark_published(&self, ids: &[Uuid]) -> anyhow::Result<()> {
        let (profiles, changed): (Vec<Uuid>, Vec<DateTime<Utc>>) = {
            let mut read = self.read.lock().expect("outbox bookkeeping lock");
            ids.iter()
                .filter_map(|id| read.remove(id).map(|t| (*id, t)))
                .unzip()
        };
        // Rows a resolver is writing right now are skipped (their change is published on
        // the next pass): the relay never waits on, or deadlocks with, a resolver.
        sqlx::query(
            "DELETE FROM identity_prediction_outbox WHERE profile_id IN ( \
                 SELECT o.profile_id FROM identity_prediction_outbox o \
                 JOIN unnest($1::uuid[], $2::timestamptz[]) AS u(p, c) ON o.profile_id = u.p \
                 WHERE o.changed_at <= u.c ORDER BY o.profile_id FOR UPDATE OF o SKIP LOCKED)",
        )
        .bind(&profiles)
        .bind(&changed)
        .execute(&self.db)
        .await?;
        Ok(())
    }
}
