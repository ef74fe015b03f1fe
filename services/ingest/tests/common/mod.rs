//! Helpers shared by the ingest integration tests: fixtures, signed requests, and counts
//! of what reached Postgres and Redis.

#![allow(dead_code)]

use std::path::PathBuf;

use test_support::TestEnv;
use uuid::Uuid;

/// A fixture file of `crates/ingestion/tests/fixtures`.
pub fn fixture(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/ingestion/tests/fixtures")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// Creates an integration and returns (id, secret).
pub async fn integration(env: &TestEnv, kind: &str, name: &str) -> (Uuid, String) {
    let i = ingestion::integrations::create(&env.db, &env.secrets_key(), kind, name, None)
        .await
        .unwrap();
    (i.id, i.secret)
}

/// Rows in `customer_raw_event`.
pub async fn raw_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM customer_raw_event")
        .fetch_one(&env.db)
        .await
        .unwrap()
}

/// Rows in `customer_raw_event` not yet published.
pub async fn unpublished_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM raw_event_outbox_events")
        .fetch_one(&env.db)
        .await
        .unwrap()
}

/// Entries on `events.raw` of this env's prefix.
pub async fn raw_stream_len(env: &TestEnv) -> u64 {
    let mut conn = env.redis.clone();
    redis::cmd("XLEN")
        .arg(streams::Topic::EventsRaw.key(env.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Connection log rows of an integration: (status, error).
pub async fn connection_logs(env: &TestEnv, integration: Uuid) -> Vec<(i16, Option<String>)> {
    sqlx::query_as(
        "SELECT status, error FROM connection_logs WHERE integration_id = $1 ORDER BY id",
    )
    .bind(integration)
    .fetch_all(&env.db)
    .await
    .unwrap()
}

/// Waits until an integration has `n` connection log rows and returns them.
pub async fn wait_for_logs(
    env: &TestEnv,
    integration: Uuid,
    n: usize,
) -> Vec<(i16, Option<String>)> {
    test_support::eventually(10, "connection logs", || async {
        let logs = connection_logs(env, integration).await;
        (logs.len() >= n).then_some(logs)
    })
    .await
}

/// POSTs a Shopify webhook signed with `secret`.
pub async fn post_shopify(
    client: &reqwest::Client,
    base: &str,
    integration: Uuid,
    secret: &str,
    topic: &str,
    webhook_id: &str,
    body: &[u8],
) -> reqwest::Response {
    client
        .post(format!("{base}/webhooks/shopify/{integration}"))
        .header("content-type", "application/json")
        .header("x-shopify-topic", topic)
        .header("x-shopify-webhook-id", webhook_id)
        .header("x-shopify-shop-domain", "loom-and-co.myshopify.com")
        .header("x-shopify-api-version", "2026-10")
        .header(
            "x-shopify-hmac-sha256",
            ingestion::signing::sign_shopify(secret, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// The `Authorization` value of a Segment write key (HTTP Basic, empty password).
pub fn basic(key: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}
