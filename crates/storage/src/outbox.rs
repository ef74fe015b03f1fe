//! What the profile-keyed outboxes share (`identity_prediction_outbox`,
//! `profile_change_outbox`): one row per profile with the time it last changed. A relay
//! remembers when each row it read had changed ([`ReadMarks`]) and, once the rows are
//! published, deletes only those that did not change since ([`delete_unchanged`]), so
//! a change landing during the publish is published again, never lost.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A profile-keyed outbox table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileOutbox {
    /// `identity_prediction_outbox` (`predictions.requests`).
    Predictions,
    /// `profile_change_outbox` (`profiles.changes`).
    ProfileChanges,
}

impl ProfileOutbox {
    fn table(self) -> &'static str {
        match self {
            ProfileOutbox::Predictions => "identity_prediction_outbox",
            ProfileOutbox::ProfileChanges => "profile_change_outbox",
        }
    }
}

/// When each row a relay read had last changed, until it is published.
#[derive(Debug, Default)]
pub struct ReadMarks(Mutex<HashMap<Uuid, DateTime<Utc>>>);

impl ReadMarks {
    /// Remembers that `profile`'s row, as read, had changed at `changed_at`.
    pub fn remember(&self, profile: Uuid, changed_at: DateTime<Utc>) {
        self.0
            .lock()
            .expect("outbox bookkeeping lock")
            .insert(profile, changed_at);
    }

    /// Forgets `ids`, returning those it knew with their change times.
    pub fn take(&self, ids: &[Uuid]) -> (Vec<Uuid>, Vec<DateTime<Utc>>) {
        let mut read = self.0.lock().expect("outbox bookkeeping lock");
        ids.iter()
            .filter_map(|id| read.remove(id).map(|t| (*id, t)))
            .unzip()
    }
}

/// Deletes the rows of `profiles` that did not change after `changed` (pairwise).
/// Rows being written right now are skipped (published again on the next pass): the
/// relay never waits on, or deadlocks with, a writer.
pub async fn delete_unchanged(
    db: &PgPool,
    outbox: ProfileOutbox,
    profiles: &[Uuid],
    changed: &[DateTime<Utc>],
) -> Result<(), sqlx::Error> {
    let table = outbox.table();
    sqlx::query(&format!(
        "DELETE FROM {table} WHERE profile_id IN ( \
             SELECT o.profile_id FROM {table} o \
             JOIN unnest($1::uuid[], $2::timestamptz[]) AS u(p, c) ON o.profile_id = u.p \
             WHERE o.changed_at <= u.c ORDER BY o.profile_id FOR UPDATE OF o SKIP LOCKED)"
    ))
    .bind(profiles)
    .bind(changed)
    .execute(db)
    .await?;
    Ok(())
}
