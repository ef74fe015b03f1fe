//! Durability across a crash: ingest is killed (SIGKILL) after committing deliveries but
//! before they reach `events.raw`; a new ingest's outbox relay publishes every one of
//! them exactly once, and redeliveries add nothing.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use ingestion::outbox::RawEventOutbox;
use streams::{Streams, Topic};
use test_support::TestEnv;
use test_support::process::{self, Process, Signal};
use uuid::Uuid;

async fn start_ingest(env: &TestEnv, relay_after_secs: u64) -> (Process, String) {
    let port = process::free_port();
    let mut vars = env.process_vars();
    vars.push(("INGEST_BIND".into(), format!("127.0.0.1:{port}")));
    vars.push((
        "OUTBOX_RELAY_AFTER_SECS".into(),
        relay_after_secs.to_string(),
    ));
    let proc = Process::spawn(env!("CARGO_BIN_EXE_ingest"), &[], &vars);
    let base = format!("http://127.0.0.1:{port}");
    process::wait_ready(&base, 60).await;
    (proc, base)
}

async fn deliver_all(base: &str, shopify: (Uuid, &str), segment_key: &str, n: usize) {
    let client = reqwest::Client::new();
    let order: serde_json::Value =
        serde_json::from_slice(&fixture("shopify/orders_create.json")).unwrap();
    let mut sends = Vec::new();
    for i in 0..n {
        // Distinct orders: the same body is one delivery whatever its webhook id.
        let mut order = order.clone();
        order["id"] = serde_json::json!(9_000_000 + i);
        let body = serde_json::to_vec(&order).unwrap();
        let (client, base) = (client.clone(), base.to_owned());
        let (id, secret) = (shopify.0, shopify.1.to_owned());
        sends.push(tokio::spawn(async move {
            post_shopify(
                &client,
                &base,
                id,
                &secret,
                "orders/create",
                &format!("crash-{i}"),
                &body,
            )
            .await
            .status()
        }));
    }
    for s in sends {
        assert_eq!(s.await.unwrap(), 200);
    }
    let resp = client
        .post(format!("{base}/v1/batch"))
        .basic_auth(segment_key, Some(""))
        .body(fixture("segment/batch_mixed.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_killed_ingest_loses_nothing_and_doubles_nothing() {
    let env = TestEnv::new().await;
    let (shop, secret) = integration(&env, "shopify", "loom-and-co").await;
    let (_, key) = integration(&env, "segment", "web-app").await;
    let raw_key = Topic::EventsRaw.key(env.prefix());
    let mut redis = env.redis.clone();

    // Publishing fails for real: the stream's key holds a string, so XADD is refused.
    redis::cmd("SET")
        .arg(&raw_key)
        .arg("not a stream")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let (mut first, base) = start_ingest(&env, 3600).await;
    deliver_all(&base, (shop, &secret), &key, 25).await;
    assert_eq!(
        raw_count(&env).await,
        32,
        "every delivery committed before its 2xx"
    );
    assert_eq!(unpublished_count(&env).await, 32, "none reached events.raw");
    first.signal(Signal::SIGKILL);
    first.wait_exit(30).await;

    // Redis is healthy again; a new ingest's relay publishes what the dead one left.
    redis::cmd("DEL")
        .arg(&raw_key)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let (mut second, base) = start_ingest(&env, 0).await;
    test_support::eventually(30, "the outbox relay to publish", || async {
        (unpublished_count(&env).await == 0).then_some(())
    })
    .await;
    let published = env.raw_stream_ids().await;
    let stored: HashSet<Uuid> = sqlx::query_scalar("SELECT id FROM customer_raw_event")
        .fetch_all(&env.db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(published.len(), 32, "nothing doubled");
    assert_eq!(
        published.iter().copied().collect::<HashSet<_>>(),
        stored,
        "nothing lost"
    );

    // Every sender retries: all duplicates, nothing stored or published again.
    deliver_all(&base, (shop, &secret), &key, 25).await;
    assert_eq!(raw_count(&env).await, 32);
    let streams = Streams::new(env.redis.clone(), env.prefix(), 100_000);
    let relayed = streams::relay_once(
        &streams,
        &RawEventOutbox::new(env.db.clone()),
        1000,
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(relayed, 0, "the outbox is empty");
    assert_eq!(raw_stream_len(&env).await, 32);

    second.signal(Signal::SIGTERM);
    assert!(second.wait_exit(30).await.success());
}
