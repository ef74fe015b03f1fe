//! What the destinations tests share: profiles seeded as the identity merger writes
//! them, their changes published through the real `profiles.changes` relay, and the
//! service started on the test's own database and stream prefix.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use domain::ProfileChangeKind;
use domain::api::{DestinationKind, DestinationMode, DestinationRequest, DestinationView};
use sqlx::PgPool;
use test_support::TestEnv;
use uuid::Uuid;

/// A test env whose retries are quick (100 ms doubling to 1 s).
pub async fn env() -> TestEnv {
    TestEnv::with_settings([
        ("DESTINATION_RETRY_BASE_MS", "100".into()),
        ("DESTINATION_RETRY_MAX_SECS", "1".into()),
    ])
    .await
}

/// `n` live profiles with an e-mail `{tag}{i}@example.com`, a name and orders; their
/// ids in order.
pub async fn seed(db: &PgPool, tag: &str, n: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let emails: Vec<String> = (0..n).map(|i| format!("{tag}{i}@example.com")).collect();
    let names: Vec<String> = (0..n).map(|i| format!("Asha{i} Rao{i}")).collect();
    let orders: Vec<i32> = (0..n).map(|i| (i % 7) as i32).collect();
    sqlx::query(
        "INSERT INTO customer_profile (id, display_name, orders_count, total_spent, currency) \
         SELECT id, name, o, o * 499, 'INR' FROM unnest($1::uuid[], $2::text[], $3::int[]) AS u(id, name, o)",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&orders)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at) \
         SELECT 'email', e, id, 'shopify', now() - make_interval(secs => n), \
                now() - make_interval(secs => n) \
         FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(id, e, n)",
    )
    .bind(&ids)
    .bind(&emails)
    .execute(db)
    .await
    .unwrap();
    ids
}

/// Queues `kind` changes of `ids` as the merger does (published by [`relay`]).
pub async fn changed(db: &PgPool, ids: &[Uuid], kind: ProfileChangeKind) {
    let mut tx = db.begin().await.unwrap();
    let changes: Vec<(Uuid, ProfileChangeKind)> = ids.iter().map(|id| (*id, kind)).collect();
    storage::profile_changes::queue(&mut tx, &changes)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Starts the `profiles.changes` relay of this env.
pub fn relay(env: &TestEnv) {
    tokio::spawn(service_kit::profile_changes::run_relay(
        env.context().streams(),
        env.db.clone(),
        "test",
        Duration::from_millis(50),
        env.shutdown.clone(),
    ));
}

/// Creates a destination through the store, as the API and `ctl` do.
pub async fn create(
    env: &TestEnv,
    name: &str,
    kind: DestinationKind,
    config: serde_json::Value,
    credentials: &[(&str, &str)],
) -> DestinationView {
    let req = DestinationRequest {
        name: name.into(),
        kind,
        config: config.as_object().cloned().unwrap_or_default(),
        credentials: credentials
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        mapping: BTreeMap::new(),
        mode: DestinationMode::Upsert,
        audience_id: None,
    };
    destinations::store::create(&env.db, &env.secrets_key(), &req, "test")
        .await
        .unwrap()
}

/// A destination's status now.
pub async fn status(env: &TestEnv, id: Uuid) -> domain::api::DestinationStatus {
    destinations::store::get(&env.db, id).await.unwrap().status
}

/// Waits up to `secs` for `check` to hold.
pub async fn until(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    test_support::eventually(secs, what, || {
        let ok = check();
        async move { ok.then_some(()) }
    })
    .await;
}

/// Waits up to `secs` until the destination has nothing pending.
pub async fn drained(env: &TestEnv, id: Uuid, secs: u64) {
    test_support::eventually(secs, "the destination's queue to drain", || async {
        (status(env, id).await.pending == 0).then_some(())
    })
    .await;
}
