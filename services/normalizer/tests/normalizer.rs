//! The normalizer against the real Postgres and Redis: raw events in on `events.raw`,
//! normalised events, orders and products out; repeated and out-of-order deliveries of
//! one order converge; unmappable events are dead-lettered with the reason.

use std::path::Path;

use domain::{NormalizedEvent, Source};
use http::HeaderMap;
use ingestion::raw_event::NewRawEvent;
use ingestion::sources::{self, WebhookRequest, pos};
use rust_decimal::Decimal;
use serde_json::Value;
use streams::{Envelope, Streams, Topic};
use test_support::{TestEnv, eventually};
use uuid::Uuid;

fn fixture_bytes(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/ingestion/tests/fixtures")
        .join(path);
    std::fs::read(full).unwrap()
}

fn fixture(path: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(path)).unwrap()
}

/// The raw event of a Shopify webhook, as ingest's edge builds it.
fn shopify_event(topic: &str, webhook_id: &str, file: &str) -> NewRawEvent {
    let mut headers = HeaderMap::new();
    headers.insert("x-shopify-topic", topic.parse().unwrap());
    headers.insert("x-shopify-webhook-id", webhook_id.parse().unwrap());
    let body = fixture_bytes(file);
    let request = WebhookRequest {
        headers: &headers,
        body: &body,
        public_base_url: "https://in.example",
        path_and_query: "",
        received_at: chrono::Utc::now(),
        max_age: None,
    };
    sources::webhook_raw_event(Source::Shopify, "", Uuid::now_v7(), None, &request).unwrap()
}

async fn publish(streams: &Streams, events: &[&NewRawEvent]) {
    let envs: Vec<_> = events.iter().map(|e| e.envelope()).collect();
    streams.publish_many(Topic::EventsRaw, &envs).await.unwrap();
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.db).await.unwrap()
}

/// The distinct event ids published on `events.normalized` (a redelivered raw event
/// is published again).
async fn published_ids(env: &TestEnv) -> std::collections::BTreeSet<Uuid> {
    env.stream_bodies(&Topic::EventsNormalized.key(env.prefix()))
        .await
        .into_iter()
        .map(|e| {
            serde_json::from_value::<Envelope<NormalizedEvent>>(e)
                .unwrap()
                .id
        })
        .collect()
}

#[tokio::test]
async fn an_order_is_normalised_stored_and_published() {
    let env = TestEnv::new().await;
    let _base = env.spawn(normalizer::run).await;
    let streams = Streams::new(env.redis.clone(), env.prefix(), 10_000);
    let order = shopify_event("orders/create", "wh-1", "shopify/orders_create.json");
    publish(&streams, &[&order]).await;

    let published = eventually(15, "events.normalized", || async {
        let entries = env
            .stream_bodies(&Topic::EventsNormalized.key(env.prefix()))
            .await;
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!(published.len(), 1);
    let envelope: Envelope<NormalizedEvent> = serde_json::from_value(published[0].clone()).unwrap();
    assert_eq!(envelope.id, order.id, "the raw id travels on");
    let ev = envelope.payload;
    assert_eq!(ev.event_id, order.id);
    assert_eq!(ev.event_type.as_str(), "order_placed");
    assert!(
        ev.identifiers
            .iter()
            .any(|i| i.value == "shopify:7211204280482")
    );

    assert_eq!(ev.identifiers.len(), 3);
    assert_eq!(
        count(&env, "SELECT count(*) FROM normalized_event").await,
        0,
        "the event's row is left for the identity merger, which stores it attached"
    );
    let (total, status, profile): (Decimal, String, Option<Uuid>) = sqlx::query_as(
        "SELECT total, status, profile_id FROM orders WHERE source = 'shopify' AND external_order_id = '5940139491234'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(total, Decimal::new(246691, 2));
    assert_eq!(status, "paid");
    assert_eq!(profile, None, "left for the identity merger");
    assert_eq!(count(&env, "SELECT count(*) FROM order_items").await, 2);
    let (name, price): (String, Decimal) =
        sqlx::query_as("SELECT name, price FROM products WHERE sku = 'KURTA-LIN-IND-M'")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(
        (name.as_str(), price),
        ("Linen Kurta - Indigo / M", Decimal::new(89900, 2))
    );
}

#[tokio::test]
async fn repeated_and_out_of_order_deliveries_converge() {
    let env = TestEnv::new().await;
    let _base = env.spawn(normalizer::run).await;
    let streams = Streams::new(env.redis.clone(), env.prefix(), 10_000);
    let created = shopify_event("orders/create", "wh-c", "shopify/orders_create.json");
    let paid = shopify_event("orders/paid", "wh-p", "shopify/orders_paid.json");
    let updated = shopify_event("orders/updated", "wh-u", "shopify/orders_updated.json");
    let refund = shopify_event("refunds/create", "wh-r", "shopify/refunds_create.json");

    // The newest state and the refund first, then older reports, each twice.
    publish(
        &streams,
        &[
            &refund, &updated, &updated, &created, &paid, &refund, &created,
        ],
    )
    .await;
    let settled = || async { (published_ids(&env).await.len() == 4).then_some(()) };
    eventually(15, "four normalised events", settled).await;

    let (total, refunded, status): (Decimal, Decimal, String) = sqlx::query_as(
        "SELECT total, refunded_total, status FROM orders WHERE external_order_id = '5940139491234'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(total, Decimal::new(246691, 2));
    assert_eq!(refunded, Decimal::new(64793, 2), "the refund counts once");
    assert_eq!(status, "partially_refunded", "the newest report wins");
    assert_eq!(count(&env, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&env, "SELECT count(*) FROM order_refunds").await, 1);
    assert_eq!(count(&env, "SELECT count(*) FROM order_items").await, 2);

    // The refund event is published with the order's status as stored.
    let published = env
        .stream_bodies(&Topic::EventsNormalized.key(env.prefix()))
        .await;
    let refund_status = published
        .iter()
        .find(|e| e["payload"]["type"] == "refund_issued")
        .map(|e| e["payload"]["order"]["status"].clone());
    assert_eq!(
        refund_status,
        Some(Value::String("partially_refunded".into()))
    );

    // A newer cancellation applies; a late, older report does not undo it.
    let mut cancelled = shopify_event("orders/cancelled", "wh-x", "shopify/orders_cancelled.json");
    for key in ["updated_at", "cancelled_at"] {
        cancelled.body[key] = Value::String("2026-11-25T10:00:00+05:30".into());
    }
    let late = shopify_event("orders/paid", "wh-p2", "shopify/orders_paid.json");
    publish(&streams, &[&cancelled, &late]).await;
    eventually(15, "six normalised events", || async {
        (published_ids(&env).await.len() == 6).then_some(())
    })
    .await;
    let (status, refunded): (String, Decimal) = sqlx::query_as(
        "SELECT status, refunded_total FROM orders WHERE external_order_id = '5940139491234'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(status, "cancelled");
    assert_eq!(
        refunded,
        Decimal::new(64793, 2),
        "refunds survive the cancellation"
    );
}

#[tokio::test]
async fn unmappable_events_are_dead_lettered_and_bad_identifiers_counted() {
    let env = TestEnv::new().await;
    let base = env.spawn(normalizer::run).await;
    let client = reqwest::Client::new();
    // Installs the metrics recorder before anything is counted.
    client.get(format!("{base}/metrics")).send().await.unwrap();
    let streams = Streams::new(env.redis.clone(), env.prefix(), 10_000);

    let mut broken = shopify_event("orders/create", "wh-b", "shopify/orders_create.json");
    broken.body.as_object_mut().unwrap().remove("total_price");
    let bills = pos::raw_events(Uuid::now_v7(), fixture("pos/bills_batch.json")).unwrap();
    let mut all: Vec<&NewRawEvent> = vec![&broken];
    all.extend(bills.iter());
    publish(&streams, &all).await;

    let dead = eventually(15, "a dead letter", || async {
        let entries = env
            .stream_bodies(&Topic::EventsRaw.dlq_key(env.prefix()))
            .await;
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].to_string().contains("total_price"),
        "the reason names the problem: {}",
        dead[0]
    );
    eventually(15, "the bills normalised", || async {
        (published_ids(&env).await.len() == 3).then_some(())
    })
    .await;
    assert!(
        !published_ids(&env).await.contains(&broken.id),
        "the unmappable event is not published"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped_phone = metrics.lines().any(|l| {
        l.starts_with("normalizer_identifiers_dropped_total")
            && l.contains("kind=\"phone\"")
            && l.contains("reason=\"invalid_phone\"")
    });
    assert!(dropped_phone, "{metrics}");
    assert_eq!(
        count(&env, "SELECT count(*) FROM orders WHERE source = 'pos'").await,
        3
    );
}

#[tokio::test]
async fn the_process_runs_several_consumers_of_the_group() {
    let env = TestEnv::with_settings([("NORMALIZER_CONSUMERS", "2".into())]).await;
    let _base = env.spawn(normalizer::run).await;
    let streams = Streams::new(env.redis.clone(), env.prefix(), 10_000);
    let orders: Vec<NewRawEvent> = (0..4)
        .map(|i| {
            shopify_event(
                "orders/create",
                &format!("wh-{i}"),
                "shopify/orders_create.json",
            )
        })
        .collect();
    publish(&streams, &orders.iter().collect::<Vec<_>>()).await;
    // `NORMALIZER_CONSUMERS=2`: each reads the group on its own.
    let key = Topic::EventsRaw.key(env.prefix());
    eventually(15, "two consumers in the normalizer's group", || async {
        let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&key)
            .arg(normalizer::GROUP)
            .query_async(&mut env.redis.clone())
            .await
            .ok()?;
        (reply.consumers.len() == 2).then_some(())
    })
    .await;
    eventually(15, "every event published", || async {
        (published_ids(&env).await.len() == orders.len()).then_some(())
    })
    .await;
}
