//! Shopify webhooks end to end against the real service, Postgres and Redis: a signed
//! delivery is stored once and published; anything unsigned, mis-signed, unknown,
//! disabled, malformed or oversize is refused and stores nothing.

mod common;

use common::*;
use test_support::TestEnv;

#[tokio::test]
async fn a_signed_webhook_is_stored_once_and_published() {
    let env = TestEnv::new().await;
    let base = env.spawn(ingest::run).await;
    let (id, secret) = integration(&env, "shopify", "loom-and-co").await;
    let client = reqwest::Client::new();
    let body = fixture("shopify/orders_create.json");

    let first = post_shopify(&client, &base, id, &secret, "orders/create", "wh-1", &body).await;
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(raw_count(&env).await, 1, "committed before the 2xx");

    // Shopify retries with the same webhook id: answered 200, nothing new stored.
    let again = post_shopify(&client, &base, id, &secret, "orders/create", "wh-1", &body).await;
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        again["id"], first["id"],
        "the duplicate names the stored event"
    );
    assert_eq!(raw_count(&env).await, 1);

    test_support::eventually(10, "the event published", || async {
        (unpublished_count(&env).await == 0).then_some(())
    })
    .await;
    assert_eq!(raw_stream_len(&env).await, 1, "published once");
    let ids = env.raw_stream_ids().await;
    assert_eq!(ids[0].to_string(), first["id"].as_str().unwrap());

    let (kind, key, topic, shop): (String, String, String, String) = sqlx::query_as(
        "SELECT kind, source_event_id, payload->>'name', headers->>'x-shopify-shop-domain' \
         FROM customer_raw_event",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), key.as_str()),
        (
            "orders/create",
            ingestion::sources::shopify::dedupe_key(id, &body).as_str()
        )
    );
    assert_eq!(topic, "#1043");
    assert_eq!(shop, "loom-and-co.myshopify.com");

    let logs = wait_for_logs(&env, id, 2).await;
    assert_eq!(logs, vec![(200, None), (200, None)]);
    let last: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_delivery_at FROM integrations WHERE id = $1")
            .bind(id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert!(last.is_some());
}

#[tokio::test]
async fn bad_signatures_are_refused_and_store_nothing() {
    let env = TestEnv::new().await;
    let base = env.spawn(ingest::run).await;
    let (id, secret) = integration(&env, "shopify", "loom-and-co").await;
    let client = reqwest::Client::new();
    let body = fixture("shopify/orders_create.json");
    let url = format!("{base}/webhooks/shopify/{id}");
    let send = |sig: Option<String>, body: Vec<u8>| {
        let mut req = client
            .post(&url)
            .header("x-shopify-topic", "orders/create")
            .header("x-shopify-webhook-id", "wh-bad")
            .body(body);
        if let Some(sig) = sig {
            req = req.header("x-shopify-hmac-sha256", sig);
        }
        req.send()
    };

    let wrong_secret = ingestion::signing::sign_shopify("not-the-secret", &body);
    let mut tampered = body.clone();
    let pos = tampered.windows(7).position(|w| w == b"2466.91").unwrap();
    tampered[pos] = b'1';
    let right_for_original = ingestion::signing::sign_shopify(&secret, &body);
    let cases = [
        ("wrong secret", Some(wrong_secret), body.clone()),
        ("tampered body", Some(right_for_original), tampered),
        ("garbage signature", Some("%%%".to_owned()), body.clone()),
        ("no signature", None, body.clone()),
    ];
    for (what, sig, body) in cases {
        let resp = send(sig, body).await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(err["error"]["code"].is_string(), "{what}: {err}");
    }
    assert_eq!(raw_count(&env).await, 0);
    let logs = wait_for_logs(&env, id, 4).await;
    assert!(
        logs.iter()
            .all(|(status, err)| *status == 401 && err.is_some())
    );
    assert_eq!(raw_stream_len(&env).await, 0);
}

#[tokio::test]
async fn unknown_disabled_malformed_and_oversize_are_refused() {
    let env = TestEnv::with_settings([
        ("INGEST_INTEGRATION_CACHE_MS", "0".to_owned()),
        ("INGEST_MAX_BODY_BYTES", "20000".to_owned()),
    ])
    .await;
    let base = env.spawn(ingest::run).await;
    let (id, secret) = integration(&env, "shopify", "loom-and-co").await;
    let (woo, _) = integration(&env, "woocommerce", "other-shop").await;
    let client = reqwest::Client::new();
    let body = fixture("shopify/orders_create.json");

    let unknown = uuid::Uuid::now_v7();
    let resp = post_shopify(
        &client,
        &base,
        unknown,
        &secret,
        "orders/create",
        "w1",
        &body,
    )
    .await;
    assert_eq!(resp.status(), 404, "unknown integration");
    let resp = post_shopify(&client, &base, woo, &secret, "orders/create", "w1", &body).await;
    assert_eq!(resp.status(), 404, "an integration of another kind");
    let resp = client
        .post(format!("{base}/webhooks/shopify/not-a-uuid"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let resp = post_shopify(
        &client,
        &base,
        id,
        &secret,
        "orders/create",
        "w2",
        b"{not json",
    )
    .await;
    assert_eq!(resp.status(), 400, "malformed JSON");
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "malformed_json");

    let resp = post_shopify(&client, &base, id, &secret, "app/uninstalled", "w3", &body).await;
    assert_eq!(resp.status(), 400, "unsupported topic");
    let resp = post_shopify(&client, &base, id, &secret, "orders/create", "", &body).await;
    assert_eq!(resp.status(), 400, "no webhook id");

    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(30_000));
    let resp = post_shopify(
        &client,
        &base,
        id,
        &secret,
        "orders/create",
        "w4",
        big.as_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 413, "oversize");

    storage::integrations::set_enabled(&env.db, &env.secrets_key(), id, false)
        .await
        .unwrap();
    let resp = post_shopify(&client, &base, id, &secret, "orders/create", "w5", &body).await;
    assert_eq!(resp.status(), 403, "disabled");

    assert_eq!(raw_count(&env).await, 0, "nothing stored");
    let logs = wait_for_logs(&env, id, 5).await;
    let statuses: Vec<i16> = logs.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, vec![400, 400, 400, 413, 403]);
}
