//! The outbox of `profiles.merge_requests`: analysts' requests (approve, reject, merge,
//! unmerge, erase) stored but not yet on the stream.
//!
//! `publish_merge_request` stores each request's envelope in `api_merge_requests` and
//! commits before it publishes, so a request the API answered 202 is durable even when
//! Redis is down or the process dies before `XADD`. `published_at IS NULL` is the
//! outbox (a partial index keeps it cheap); [`MergeRequestOutbox`] lets the streams
//! runtime's relay (`streams::run_outbox_relay_with`, run by the gateway) publish what
//! is left and mark it. `ctl republish` clears `published_at` of requests the merger has
//! not marked `done_at`, so a Redis wipe cannot drop an erase either.
//!
//! Guarantee: every stored request reaches the stream at least once. A request can be
//! published twice (the relay races a slow publish); every request is idempotent in the
//! merger, so its effect happens once.

use std::time::Duration;

use sqlx::PgPool;
use streams::{Envelope, OutboxRow, Topic};
use uuid::Uuid;

/// The `profiles.merge_requests` outbox over `api_merge_requests`.
#[derive(Clone)]
pub struct MergeRequestOutbox {
    db: PgPool,
}

impl MergeRequestOutbox {
    /// The outbox in `db`.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

#[async_trait::async_trait]
impl streams::OutboxStore for MergeRequestOutbox {
    async fn unpublished(
        &self,
        limit: usize,
        older_than: Duration,
    ) -> anyhow::Result<Vec<OutboxRow>> {
        let rows: Vec<(Uuid, sqlx::types::Json<Envelope<serde_json::Value>>)> = sqlx::query_as(
            "SELECT id, envelope FROM api_merge_requests \
             WHERE published_at IS NULL AND envelope IS NOT NULL \
               AND requested_at <= now() - $2::interval \
             ORDER BY requested_at LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(older_than)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, env)| (id, Topic::MergeRequests, env.0))
            .collect())
    }

    async fn mark_published(&self, ids: &[Uuid]) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE api_merge_requests SET published_at = now() \
             WHERE id = ANY($1) AND published_at IS NULL",
        )
        .bind(ids)
        .execute(&self.db)
        .await?;
        Ok(())
    }
}
