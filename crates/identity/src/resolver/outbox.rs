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

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::PredictionRequest;
use sqlx::PgPool;
use storage::outbox::{ProfileOutbox, ReadMarks, delete_unchanged};
use streams::{Envelope, OutboxRow, OutboxStore, Topic};
use uuid::Uuid;

/// `identity_prediction_outbox` as an [`OutboxStore`].
pub struct PredictionOutbox {
    db: PgPool,
    read: ReadMarks,
}

impl PredictionOutbox {
    /// The outbox in `db`.
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            read: ReadMarks::default(),
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
        let mut out = Vec::with_capacity(rows.len());
        for (profile_id, changed_at) in rows {
            self.read.remember(profile_id, changed_at);
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
        let (profiles, changed) = self.read.take(ids);
        delete_unchanged(&self.db, ProfileOutbox::Predictions, &profiles, &changed).await?;
        Ok(())
    }
}
