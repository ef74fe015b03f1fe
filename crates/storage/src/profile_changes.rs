//! The one writer of `profile_change_outbox`: profiles whose change must reach
//! `profiles.changes`. Callers write in the transaction of the change itself, so the
//! row commits with it or not at all; a relay publishes it afterwards.
//!
//! One row per profile: a later change replaces the kind and the time, so a relay that
//! read the row before keeps it (it deletes only rows unchanged since it read them).

use domain::ProfileChangeKind;
use sqlx::PgConnection;
use uuid::Uuid;

/// Queues `changes` (a profile listed twice keeps its last kind).
pub async fn queue(
    conn: &mut PgConnection,
    changes: &[(Uuid, ProfileChangeKind)],
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    // Last kind per profile: ON CONFLICT cannot touch one row twice in a statement.
    let mut latest = std::collections::BTreeMap::new();
    for (id, kind) in changes {
        latest.insert(*id, kind.as_str());
    }
    let (ids, kinds): (Vec<Uuid>, Vec<&str>) = latest.into_iter().unzip();
    for (ids, kinds) in ids.chunks(10_000).zip(kinds.chunks(10_000)) {
        sqlx::query(
            "INSERT INTO profile_change_outbox (profile_id, change, changed_at) \
             SELECT p, c, clock_timestamp() FROM unnest($1::uuid[], $2::text[]) AS u(p, c) \
             ON CONFLICT (profile_id) DO UPDATE SET change = EXCLUDED.change, \
             changed_at = EXCLUDED.changed_at",
        )
        .bind(ids)
        .bind(kinds)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
