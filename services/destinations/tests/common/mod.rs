//! What the destinations tests share: profiles seeded as the identity merger writes
//! them, their changes published through the real `profiles.changes` relay, and the
//! service started on the test's own database and stream prefix.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use domain::ProfileChangeKind;
use domain::api::{DestinationKind, DestinationMode, DestinationRequest, DestinationView};
use serde_json::json;
use sqlx::PgPool;
use test_support::TestEnv;
use test_support::crm::{FakeHubSpot, FakeRest, FakeSalesforce, RestAuth};
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
    test_support::seed::profiles_with_email(db, tag, n).await
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

/// A HubSpot destination on the fake `hs`, with its token.
pub async fn hubspot(env: &TestEnv, name: &str, hs: &FakeHubSpot) -> DestinationView {
    create(
        env,
        name,
        DestinationKind::Hubspot,
        json!({"base_url": hs.url}),
        &[("token", &hs.token)],
    )
    .await
}

/// A Salesforce destination on the fake `sf` (login URL, client id and secret), with
/// the settings of `config` added.
pub async fn salesforce(
    env: &TestEnv,
    name: &str,
    sf: &FakeSalesforce,
    config: serde_json::Value,
) -> DestinationView {
    let mut c = json!({"login_url": sf.url, "client_id": sf.client_id});
    merge(&mut c, config);
    create(
        env,
        name,
        DestinationKind::Salesforce,
        c,
        &[("client_secret", &sf.client_secret)],
    )
    .await
}

/// A REST destination on the fake `rest`, signed as the fake checks (bearer or HMAC),
/// with the settings of `config` added.
pub async fn rest(
    env: &TestEnv,
    name: &str,
    rest: &FakeRest,
    config: serde_json::Value,
) -> DestinationView {
    let mut c = json!({"url": rest.endpoint()});
    let credential = match &rest.auth {
        RestAuth::Bearer(t) => ("token", t.as_str()),
        RestAuth::Hmac(s) => {
            merge(&mut c, json!({"signing": "hmac"}));
            ("secret", s.as_str())
        }
    };
    merge(&mut c, config);
    create(env, name, DestinationKind::Rest, c, &[credential]).await
}

fn merge(into: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), more) {
        a.extend(b);
    }
}

/// Starts the destinations service and the `profiles.changes` relay of this env.
pub async fn start(env: &TestEnv) {
    env.spawn(destinations::run).await;
    relay(env);
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
