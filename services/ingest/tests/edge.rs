//! Regressions of the edge's promises against the real service, Postgres and Redis:
//! one bad request never fails others, a 2xx is only answered for what can be stored
//! and normalised, a captured Shopify delivery is stored once whatever id or topic it is
//! replayed under, spec-valid Segment orders without a currency are kept, and the
//! abuse limits answer 429 with `Retry-After`.

mod common;

use common::*;
use serde_json::{Value, json};
use test_support::TestEnv;

async fn post_segment(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(format!("{base}{path}"))
        .header("authorization", basic(key))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.unwrap();
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
    body["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// The report's poison: a numeric `timestamp` far outside any calendar, posted among
/// 50 concurrent good requests. Only it is refused; all 50 are stored.
#[tokio::test]
async fn a_poison_timestamp_among_fifty_good_requests_fails_only_itself() {
    let env = TestEnv::with_settings([
        // One writer lingering long enough that the poison shares its INSERT with
        // good requests if the edge let it through.
        ("INGEST_COMMIT_WRITERS", "1".to_owned()),
        ("INGEST_COMMIT_LINGER_US", "20000".to_owned()),
    ])
    .await;
    let base = env.spawn(ingest::run).await;
    let (_, key) = integration(&env, "segment", "web").await;
    let client = reqwest::Client::new();
    let mut sends = Vec::new();
    for i in 0..51 {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        sends.push(tokio::spawn(async move {
            let mut msg = json!({"type": "track", "event": "Viewed", "userId": format!("u{i}"),
                "messageId": format!("m-{i}"), "timestamp": "2026-11-20T10:00:00Z"});
            if i == 25 {
                msg["timestamp"] = json!(-300_000_000_000_i64);
            }
            if i == 26 {
                // The other report: sentAt and timestamp far apart in opposite ways.
                msg["timestamp"] = json!(8_200_000_000_000_i64);
                msg["sentAt"] = json!(-8_200_000_000_000_i64);
            }
            let resp = post_segment(&client, &base, &key, "/v1/track", &msg).await;
            (i, resp.status().as_u16())
        }));
    }
    let mut refused = Vec::new();
    for s in sends {
        let (i, status) = s.await.unwrap();
        assert!(status == 200 || status == 400, "request {i}: {status}");
        if status == 400 {
            refused.push(i);
        }
    }
    assert_eq!(refused, vec![25, 26]);
    assert_eq!(raw_count(&env).await, 49);
}

/// Whatever would fail downstream is refused at the edge, with a reason: amounts
/// beyond the money columns, nesting the stream reader cannot read back, NUL in a form
/// field, a key too long for its index.
#[tokio::test]
async fn what_cannot_be_stored_is_refused_at_the_edge() {
    let env = TestEnv::new().await;
    let base = env.spawn(ingest::run).await;
    let (_, key) = integration(&env, "segment", "web").await;
    let (pos_id, token) = integration(&env, "pos", "tills").await;
    let (twilio_id, auth) = integration(&env, "twilio", "wa").await;
    let (shop_id, secret) = integration(&env, "shopify", "shop").await;
    let client = reqwest::Client::new();

    let huge = json!({"type": "track", "event": "Order Completed", "userId": "u1",
        "properties": {"order_id": "A-1", "currency": "INR", "total": 10_000_000_000_000_000_i64}});
    let resp = post_segment(&client, &base, &key, "/v1/track", &huge).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "out_of_range");

    let mut bill: Value = serde_json::from_slice(&fixture("pos/bill.json")).unwrap();
    bill["totals"]["total"] = json!("10000000000000000");
    let resp = client
        .post(format!("{base}/pos/{pos_id}/bills"))
        .bearer_auth(&token)
        .json(&bill)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "out_of_range");

    let mut order: Value = serde_json::from_slice(&fixture("shopify/orders_create.json")).unwrap();
    order["total_price"] = json!("10000000000000000.00");
    let body = serde_json::to_vec(&order).unwrap();
    let resp = post_shopify(
        &client,
        &base,
        shop_id,
        &secret,
        "orders/create",
        "w-huge",
        &body,
    )
    .await;
    assert_eq!(resp.status(), 400);

    // 126 levels deep: JSON parses, but the normalizer could not read it back.
    let mut deep = json!("x");
    for _ in 0..125 {
        deep = json!({ "d": deep });
    }
    let msg = json!({"type": "track", "event": "Deep", "userId": "u1", "properties": deep});
    let resp = post_segment(&client, &base, &key, "/v1/track", &msg).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "too_deep");

    let msg =
        json!({"type": "track", "event": "Long", "userId": "u1", "messageId": "m".repeat(600)});
    let resp = post_segment(&client, &base, &key, "/v1/track", &msg).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "key_too_long");

    // U+0000 in a signed Twilio form field; then in one a refusal quotes, whose
    // connection log line must still be written.
    let twilio = |suffix: &'static str, params: Vec<(String, String)>| {
        let url = format!("http://127.0.0.1:8081/webhooks/twilio/{twilio_id}{suffix}");
        client
            .post(format!("{base}/webhooks/twilio/{twilio_id}{suffix}"))
            .header(
                "x-twilio-signature",
                ingestion::signing::sign_twilio(&auth, &url, &params),
            )
            .form(&params)
            .send()
    };
    let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let resp = twilio(
        "",
        vec![
            p("MessageSid", "SM1"),
            p("From", "whatsapp:+919845012345"),
            p("Body", "hi\u{0}there"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "nul_character");
    let resp = twilio(
        "/status",
        vec![p("MessageSid", "SM2"), p("MessageStatus", "re\u{0}ad")],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let logs = wait_for_logs(&env, twilio_id, 2).await;
    assert!(
        logs.iter()
            .all(|(status, error)| *status == 400 && error.is_some())
    );

    assert_eq!(raw_count(&env).await, 0, "nothing refused was stored");
}

/// A captured signed delivery replayed under a new webhook id is a duplicate, and as
/// another topic is refused; either way it is stored once. One triggered long ago is
/// refused as a replay.
#[tokio::test]
async fn a_replayed_shopify_delivery_is_stored_once() {
    let env = TestEnv::new().await;
    let base = env.spawn(ingest::run).await;
    let (id, secret) = integration(&env, "shopify", "shop").await;
    let (other, other_secret) = integration(&env, "shopify", "another-shop").await;
    let client = reqwest::Client::new();
    let body = fixture("shopify/orders_create.json");

    let first = post_shopify(&client, &base, id, &secret, "orders/create", "wh-1", &body).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();

    let replay = post_shopify(
        &client,
        &base,
        id,
        &secret,
        "orders/create",
        "wh-new",
        &body,
    )
    .await;
    assert_eq!(replay.status(), 200);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(
        replay["duplicate"], true,
        "a new webhook id is the same delivery"
    );
    assert_eq!(replay["id"], first["id"]);

    let swapped = post_shopify(
        &client,
        &base,
        id,
        &secret,
        "orders/cancelled",
        "wh-x",
        &body,
    )
    .await;
    assert_eq!(
        swapped.status(),
        400,
        "an uncancelled order is not orders/cancelled"
    );
    let as_paid = post_shopify(&client, &base, id, &secret, "orders/paid", "wh-p", &body).await;
    assert_eq!(as_paid.status(), 200);
    assert_eq!(as_paid.json::<Value>().await.unwrap()["duplicate"], true);
    assert_eq!(raw_count(&env).await, 1);

    // Keys are per integration: another shop's identical body is its own delivery.
    let elsewhere = post_shopify(
        &client,
        &base,
        other,
        &other_secret,
        "orders/create",
        "wh-1",
        &body,
    )
    .await;
    assert_eq!(elsewhere.status(), 200);
    assert_eq!(elsewhere.json::<Value>().await.unwrap()["duplicate"], false);
    assert_eq!(raw_count(&env).await, 2);

    // Triggered three days ago (the window is two): refused.
    let mut order: Value = serde_json::from_slice(&body).unwrap();
    order["id"] = json!(77);
    let body = serde_json::to_vec(&order).unwrap();
    let old = (chrono::Utc::now() - chrono::TimeDelta::days(3)).to_rfc3339();
    let resp = client
        .post(format!("{base}/webhooks/shopify/{id}"))
        .header("x-shopify-topic", "orders/create")
        .header("x-shopify-webhook-id", "wh-old")
        .header("x-shopify-triggered-at", old)
        .header(
            "x-shopify-hmac-sha256",
            ingestion::signing::sign_shopify(&secret, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "stale_delivery");
    assert_eq!(raw_count(&env).await, 2);
}

/// Segment's `currency` is optional: the brand's default fills it in; without one the
/// event is still accepted and kept, without its order.
#[tokio::test]
async fn an_order_without_currency_takes_the_brand_default() {
    let env = TestEnv::with_settings([("DEFAULT_CURRENCY", "eur".to_owned())]).await;
    let base = env.spawn(ingest::run).await;
    let (_, key) = integration(&env, "segment", "web").await;
    let client = reqwest::Client::new();
    let msg = json!({"type": "track", "event": "Order Completed", "userId": "u1",
        "messageId": "o-1", "properties": {"order_id": "A-1", "total": 25}});
    let resp = post_segment(&client, &base, &key, "/v1/track", &msg).await;
    assert_eq!(resp.status(), 200);
    let headers: Value = sqlx::query_scalar("SELECT headers FROM customer_raw_event")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(
        headers[ingestion::sources::segment::DEFAULT_CURRENCY_HEADER],
        "EUR"
    );
}

/// Over its rate, an integration gets 429 with `Retry-After`; so does a client, told
/// apart through the trusted proxy's `X-Forwarded-For`. (One request per second each:
/// the five requests below take milliseconds, far less than the second a token takes
/// to come back.)
#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let env = TestEnv::with_settings([
        ("INGEST_RATE_PER_INTEGRATION", "1".to_owned()),
        ("INGEST_RATE_PER_CLIENT", "1".to_owned()),
        ("TRUSTED_PROXIES", "127.0.0.1, ::1".to_owned()),
    ])
    .await;
    let base = env.spawn(ingest::run).await;
    let (_, web) = integration(&env, "segment", "web").await;
    let (_, app) = integration(&env, "segment", "app").await;
    let client = reqwest::Client::new();
    let send = |key: &str, client_ip: &str| {
        let msg = json!({"type": "track", "event": "E", "userId": "u",
            "messageId": format!("{key}-{client_ip}")});
        client
            .post(format!("{base}/v1/track"))
            .header("authorization", basic(key))
            .header("x-forwarded-for", format!("6.6.6.6, {client_ip}"))
            .json(&msg)
            .send()
    };
    assert_eq!(send(&web, "198.51.100.1").await.unwrap().status(), 200);
    // Client B is new, but the `web` integration's budget is spent.
    let resp = send(&web, "198.51.100.2").await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 1);
    assert_eq!(error_code(resp).await, "rate_limited");
    // Client A's budget is spent whatever integration it writes to; so is B's (its
    // refused request counted); client C, on the fresh `app` integration, is fine.
    assert_eq!(send(&app, "198.51.100.1").await.unwrap().status(), 429);
    assert_eq!(send(&app, "198.51.100.2").await.unwrap().status(), 429);
    assert_eq!(send(&app, "198.51.100.3").await.unwrap().status(), 200);
    assert_eq!(raw_count(&env).await, 2);
}
