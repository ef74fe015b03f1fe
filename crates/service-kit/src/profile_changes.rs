//! The relay of `profiles.changes`: rows of `profile_change_outbox` (written by
//! `storage::profile_changes` in the transaction of each change) published as
//! `domain::ProfileChange` entries by the streams runtime's outbox relay.
//!
//! The identity merger and ml-inference both run it, so each one's changes leave even
//! when the other is down; replicas may publish a row twice, which consumers absorb
//! (they re-read the profile). A row is deleted after publishing only if it did not
//! change after it was read, so a change landing during the publish goes out again.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{ProfileChange, ProfileChangeKind};
use sqlx::PgPool;
use storage::Named;
use storage::outbox::{ProfileOutbox, ReadMarks, delete_unchanged};
use streams::{Envelope, OutboxOptions, OutboxRow, OutboxStore, Streams, Topic};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// `profile_change_outbox` as an [`OutboxStore`], publishing as `producer`.
pub struct ProfileChangeOutbox {
    db: PgPool,
    producer: &'static str,
    read: ReadMarks,
}

impl ProfileChangeOutbox {
    /// The outbox in `db`; entries name `producer` (the service) as their source.
    pub fn new(db: PgPool, producer: &'static str) -> Self {
        Self {
            db,
            producer,
            read: ReadMarks::default(),
        }
    }
}

#[async_trait::async_trait]
impl OutboxStore for ProfileChangeOutbox {
    async fn unpublished(
        &self,
        limit: usize,
        _older_than: Duration,
    ) -> anyhow::Result<Vec<OutboxRow>> {
        let rows: Vec<(Uuid, Named<ProfileChangeKind>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT profile_id, change, changed_at FROM profile_change_outbox \
             ORDER BY changed_at, profile_id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (profile_id, change, changed_at) in rows {
            self.read.remember(profile_id, changed_at);
            let payload = serde_json::to_value(ProfileChange {
                profile_id,
                change: change.0,
            })?;
            out.push((
                profile_id,
                Topic::ProfileChanges,
                Envelope::new(Uuid::now_v7(), self.producer, change.0.as_str(), payload),
            ));
        }
        Ok(out)
    }

    async fn mark_published(&self, ids: &[Uuid]) -> anyhow::Result<()> {
        let (profiles, changed) = self.read.take(ids);
        delete_unchanged(&self.db, ProfileOutbox::ProfileChanges, &profiles, &changed).await?;
        Ok(())
    }
}

/// Runs the `profiles.changes` relay until `shutdown`: a pass every `interval`.
pub async fn run_relay(
    streams: Streams,
    db: PgPool,
    producer: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    streams::run_outbox_relay_with(
        streams,
        Arc::new(ProfileChangeOutbox::new(db, producer)),
        OutboxOptions {
            interval,
            older_than: Duration::ZERO,
            batch: 500,
        },
        shutdown,
    )
    .await
}
