//! Advisory locks: how merger replicas (and analysts' decisions) serialise on what they
//! touch.
//!
//! Every lock is transaction-scoped (`pg_advisory_xact_lock`), so a crash or rollback
//! releases it. Keys are 64-bit hashes: of `kind:value` for an identifier, of
//! `profile:<uuid>` for a profile. A transaction first takes the keys it knows about in
//! ascending order (blocking) — two transactions can never wait on each other in a
//! cycle that way. Keys discovered later (the profiles that own the event's
//! identifiers, a replay region) are only *tried*; if one is busy the transaction rolls
//! back and starts again, taking the larger set in order from the start.
//!
//! What a lock guards is read only once it is held, in a later statement (under READ
//! COMMITTED each statement sees what was committed when it began, so a statement that
//! takes a lock may not see a commit made just before it got it). A forward step takes
//! its identifiers' locks, then reads their owners and states; tries the owners'
//! locks, then reads the profiles and the owners again (an owner moved meanwhile: start
//! again); analysts' must-links are followed the same way. A profile read before its
//! lock could be stale, and writing it back would lose another step's commit to it.
//! On top, every
//! resolver transaction holds the shared *fleet lock*; `ctl identity rebuild` takes it
//! exclusively, so a rebuild never interleaves with streaming.

use std::collections::BTreeSet;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use domain::Identifier;

use crate::model::identifier_key;

/// The two-key advisory lock every resolver transaction holds shared and a rebuild holds
/// exclusively (`pg_advisory_xact_lock(FLEET_LOCK.0, FLEET_LOCK.1)`; two-key locks never
/// collide with the one-key identifier and profile locks).
pub const FLEET_LOCK: (i32, i32) = (0x1D_E7, 1);

/// The lock key of an identifier.
pub fn identifier_lock(identifier: &Identifier) -> i64 {
    identifier_key(identifier)
}

/// The lock key of a profile.
pub fn profile_lock(profile: Uuid) -> i64 {
    storage::advisory_key(&[b"profile:", profile.as_bytes()])
}

/// `BEGIN`, the shared fleet lock and [`storage::KEY_LOOKUPS_ONLY`] as one
/// simple-protocol message: one round trip instead of three for every resolver
/// transaction. The keys are [`FLEET_LOCK`]'s (constants, checked by a test), so nothing
/// is interpolated.
///
/// Every statement of a resolver transaction reads or writes rows by the keys of its
/// batch (identifiers, profiles, events, orders), each served by an index. A merger's
/// connection keeps each statement's plan once it has run a few times, and a plan made
/// while a table was nearly empty (a fresh database, a new brand, a benchmark) scans the
/// table whole: the profile upsert's count of each profile's orders then read every
/// order once per profile, for good (up to 94 million rows of `orders` read in one
/// 70,000-event run of the pipeline benchmark, and the run 1.8 times slower), until
/// autovacuum's next analysis of the table. Pricing sequential scans out keeps those
/// plans on the indexes at any size.
const BEGIN_FLEET_SHARED: &str =
    "BEGIN; SELECT pg_advisory_xact_lock_shared(7655, 1); SET LOCAL enable_seqscan = off";

/// Begins a transaction holding the fleet lock shared, with sequential scans priced out
/// ([`storage::KEY_LOOKUPS_ONLY`]: every statement of a resolver transaction works by
/// keys an index serves), in one round trip (`BEGIN`, `pg_advisory_xact_lock_shared` on
/// [`FLEET_LOCK`], the setting).
pub async fn begin_shared(db: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    db.begin_with(BEGIN_FLEET_SHARED).await
}

/// Takes the fleet lock exclusively (rebuild).
pub async fn fleet_exclusive(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(FLEET_LOCK.0)
        .bind(FLEET_LOCK.1)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes every key, in ascending order, waiting as needed.
pub async fn lock_all(conn: &mut PgConnection, keys: &BTreeSet<i64>) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<i64> = keys.iter().copied().collect();
    // A function scan over the array returns its elements in order, and the aggregate
    // consumes them in that order: the locks are taken ascending.
    sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k")
        .bind(&keys)
        .execute(conn)
        .await?;
    Ok(())
}

/// Tries to take every key without waiting. Returns whether all were taken (on
/// `false` the caller must roll back: some may be held).
pub async fn try_lock_all(
    conn: &mut PgConnection,
    keys: &BTreeSet<i64>,
) -> Result<bool, sqlx::Error> {
    if keys.is_empty() {
        return Ok(true);
    }
    let keys: Vec<i64> = keys.iter().copied().collect();
    let taken: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_try_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k",
    )
    .bind(&keys)
    .fetch_one(conn)
    .await?;
    Ok(taken == keys.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_round_trip_begin_takes_the_fleet_lock() {
        assert_eq!(
            BEGIN_FLEET_SHARED,
            format!(
                "BEGIN; SELECT pg_advisory_xact_lock_shared({}, {}); {}",
                FLEET_LOCK.0,
                FLEET_LOCK.1,
                storage::KEY_LOOKUPS_ONLY
            )
        );
    }

    #[tokio::test]
    async fn resolver_transactions_price_sequential_scans_out_and_only_they() {
        let env = test_support::TestEnv::new().await;
        // One connection, so the setting read after the commit is the same session's.
        let db = storage::connect(env.settings.database_url.as_str(), 1)
            .await
            .unwrap();
        let mut tx = begin_shared(&db).await.unwrap();
        let inside: String = sqlx::query_scalar("SHOW enable_seqscan")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let after: String = sqlx::query_scalar("SHOW enable_seqscan")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!((inside.as_str(), after.as_str()), ("off", "on"));
    }

    #[test]
    fn keys_are_stable_and_separate() {
        let p = Uuid::from_u128(7);
        assert_eq!(profile_lock(p), profile_lock(p));
        assert_ne!(profile_lock(p), profile_lock(Uuid::from_u128(8)));
        let e = Identifier::parse(domain::IdentifierKind::Email, "asha@mail.in", "IN").unwrap();
        assert_eq!(identifier_lock(&e), identifier_lock(&e.clone()));
        assert_ne!(identifier_lock(&e), profile_lock(p));
    }
}
