//! WooCommerce, Twilio WhatsApp, the Segment-compatible API and POS bills end to end:
//! each source's authenticity check, deduplication, limits and refusals, against the
//! real service, Postgres and Redis.

mod common;

use std::io::Write as _;

use common::*;
use ingestion::signing;
use test_support::TestEnv;

#[tokio::test]
async fn woocommerce_webhooks_pings_and_signatures() {
    let env = TestEnv::new().await;
    let base = env.spawn(ingest::run).await;
    let (id, secret) = integration(&env, "woocommerce", "chai-shop").await;
    let client = reqwest::Client::new();
    let url = format!("{base}/webhooks/woocommerce/{id}");
    let body = fixture("woocommerce/order.created.json");
    let post = |sig: String, body: Vec<u8>| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-wc-webhook-topic", "order.created")
            .header("x-wc-webhook-source", "https://shop.example.com/")
            .header("x-wc-webhook-delivery-id", uuid::Uuid::new_v4().to_string())
            .header("x-wc-webhook-signature", sig)
            .body(body)
            .send()
    };

    // The ping sent when the webhook is saved: unsigned, form-encoded, stores nothing.
    let ping = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("webhook_id=17")
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);
    assert_eq!(raw_count(&env).await, 0);

    let sig = signing::sign_woocommerce(&secret, &body);
    assert_eq!(post(sig.clone(), body.clone()).await.unwrap().status(), 200);
    // WooCommerce retries with a new delivery id; the order state is the same.
    let again: serde_json::Value = post(sig, body.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(raw_count(&env).await, 1);

    let bad = post(signing::sign_woocommerce("wrong", &body), body.clone())
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let unsigned_json = client.post(&url).body(body).send().await.unwrap();
    assert_eq!(
        unsigned_json.status(),
        401,
        "only the ping may come unsigned"
    );
    assert_eq!(raw_count(&env).await, 1);
}

fn form(path: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&fixture(path)).unwrap()
}

#[tokio::test]
async fn twilio_signatures_use_the_public_url() {
    let public = "https://hooks.example.com";
    let env = TestEnv::with_settings([("PUBLIC_BASE_URL", format!("{public}/"))]).await;
    let base = env.spawn(ingest::run).await;
    let (id, token) = integration(&env, "twilio", "whatsapp-main").await;
    let client = reqwest::Client::new();
    let send = |path: String, params: Vec<(String, String)>, sig: String| {
        client
            .post(format!("{base}{path}"))
            .header("x-twilio-signature", sig)
            .form(&params)
            .send()
    };

    let inbound = form("twilio/inbound_media.form");
    let path = format!("/webhooks/twilio/{id}");
    let sig = signing::sign_twilio(&token, &format!("{public}{path}"), &inbound);
    let resp = send(path.clone(), inbound.clone(), sig.clone())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    assert_eq!(
        resp.text().await.unwrap(),
        ingestion::sources::twilio::EMPTY_TWIML
    );
    // Redelivered message: stored once.
    assert_eq!(
        send(path.clone(), inbound.clone(), sig)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(raw_count(&env).await, 1);

    // Signed over the URL this process sees instead of the public one: refused.
    let local_sig = signing::sign_twilio(&token, &format!("{base}{path}"), &inbound);
    assert_eq!(
        send(path.clone(), inbound.clone(), local_sig)
            .await
            .unwrap()
            .status(),
        401
    );
    // A parameter changed after signing: refused.
    let mut tampered = inbound.clone();
    tampered.push(("Body".into(), "changed".into()));
    let sig = signing::sign_twilio(&token, &format!("{public}{path}"), &inbound);
    assert_eq!(
        send(path.clone(), tampered, sig).await.unwrap().status(),
        401
    );

    // Status callbacks: each status of one message is its own event.
    let status_path = format!("/webhooks/twilio/{id}/status");
    for status in ["sent", "delivered", "read", "read"] {
        let params = form(&format!("twilio/status_{status}.form"));
        let sig = signing::sign_twilio(&token, &format!("{public}{status_path}"), &params);
        let resp = send(status_path.clone(), params, sig).await.unwrap();
        assert_eq!(resp.status(), 200, "{status}");
    }
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT source_event_id FROM customer_raw_event WHERE kind = 'status' ORDER BY source_event_id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(
        keys,
        ["delivered", "read", "sent"]
            .map(|status| format!("{id}:SM5b4a3c2d1e0f9a8b7c6d5e4f3a2b1c0d:{status}"))
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn segment_batches_store_each_message_once() {
    let env = TestEnv::with_settings([("INGEST_INTEGRATION_CACHE_MS", "0".to_owned())]).await;
    let base = env.spawn(ingest::run).await;
    let (id, key) = integration(&env, "segment", "web-app").await;
    let client = reqwest::Client::new();
    let batch = fixture("segment/batch_mixed.json");

    let resp = client
        .post(format!("{base}/v1/batch"))
        .header("authorization", basic(&key))
        .header("content-type", "application/json")
        .body(batch.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["success"],
        true
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM customer_raw_event ORDER BY source_event_id")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(
        kinds,
        vec![
            "identify", "track", "page", "track", "group", "alias", "screen"
        ],
        "each call of the mixed batch is stored"
    );

    // The same batch gzipped (an SDK retry): nothing new.
    let resp = client
        .post(format!("{base}/v1/batch"))
        .header("authorization", basic(&key))
        .header("content-encoding", "gzip")
        .body(gzip(&batch))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(raw_count(&env).await, 7);

    // analytics.js: short path, text/plain, write key in the body (never stored).
    let ajs = String::from_utf8(fixture("segment/ajs_batch.json"))
        .unwrap()
        .replace("__WRITE_KEY__", &key);
    let resp = client
        .post(format!("{base}/v1/b"))
        .header("content-type", "text/plain")
        .body(ajs)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(raw_count(&env).await, 9);
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer_raw_event WHERE payload::text LIKE '%' || $1 || '%'",
    )
    .bind(&key)
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "write keys are not stored");

    // A single call with the clock-skew fields: occurred_at corrected.
    let track = fixture("segment/track_order_completed.json");
    let resp = client
        .post(format!("{base}/v1/track"))
        .header("authorization", basic(&key))
        .body(track)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let skew_ok: bool = sqlx::query_scalar(
        "SELECT abs(extract(epoch FROM (occurred_at - received_at)) + 1.25) < 0.001 \
         FROM customer_raw_event WHERE source_event_id = $1",
    )
    .bind(ingestion::sources::segment::dedupe_key(
        id,
        "ajs-next-1700001-aa04",
    ))
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert!(
        skew_ok,
        "occurred 1.25 s before it was received, as sentAt - timestamp says"
    );

    let logs = wait_for_logs(&env, id, 4).await;
    assert!(logs.iter().all(|(s, _)| *s == 200));
}

#[tokio::test]
async fn segment_refuses_bad_keys_oversize_and_invalid_messages() {
    let env = TestEnv::with_settings([("INGEST_INTEGRATION_CACHE_MS", "0".to_owned())]).await;
    let base = env.spawn(ingest::run).await;
    let (id, key) = integration(&env, "segment", "web-app").await;
    let client = reqwest::Client::new();
    let post = |path: &str, auth: String, body: Vec<u8>| {
        client
            .post(format!("{base}{path}"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let track = fixture("segment/track_product_viewed.json");

    assert_eq!(
        post("/v1/track", basic("nope"), track.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post("/v1/track", "Bearer x".into(), track.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    let no_key = client
        .post(format!("{base}/v1/track"))
        .body(track.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(
        post("/v1/nope", basic(&key), track.clone())
            .await
            .unwrap()
            .status(),
        404
    );

    // 32 KB per message, 500 KB per batch.
    let big = serde_json::json!({"type": "track", "event": "Big", "userId": "u1",
        "properties": {"blob": "x".repeat(33 * 1024)}});
    let resp = post("/v1/track", basic(&key), serde_json::to_vec(&big).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = post(
        "/v1/batch",
        basic(&key),
        serde_json::to_vec(&serde_json::json!({"batch": [big]})).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 413, "a message over 32 KB inside a batch");
    let many: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            serde_json::json!({"type": "track", "event": "Chunk", "userId": "u1",
            "messageId": format!("m{i}"), "properties": {"blob": "y".repeat(13 * 1024)}})
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({"batch": many})).unwrap();
    assert!(body.len() > 500 * 1024 && body.len() < 1024 * 1024);
    assert_eq!(
        post("/v1/batch", basic(&key), body.clone())
            .await
            .unwrap()
            .status(),
        413
    );
    // Compressed small, inflated over the limit: still refused.
    let resp = client
        .post(format!("{base}/v1/batch"))
        .header("authorization", basic(&key))
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    // One invalid message refuses the whole batch, naming it.
    let mixed = serde_json::json!({"batch": [
        {"type": "track", "event": "Fine", "userId": "u1", "messageId": "ok-1"},
        {"type": "track", "userId": "u1", "messageId": "bad-1"}
    ]});
    let resp = post(
        "/v1/batch",
        basic(&key),
        serde_json::to_vec(&mixed).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch[1]"),
        "{err}"
    );
    assert_eq!(
        post("/v1/batch", basic(&key), b"{oops".to_vec())
            .await
            .unwrap()
            .status(),
        400
    );

    storage::integrations::set_enabled(&env.db, &env.secrets_key(), id, false)
        .await
        .unwrap();
    assert_eq!(
        post("/v1/track", basic(&key), track)
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(raw_count(&env).await, 0, "nothing stored");
}

#[tokio::test]
async fn pos_bills_need_the_bearer_token_and_are_all_or_nothing() {
    let env = TestEnv::new().await;
    let base = env.spawn(ingest::run).await;
    let (id, token) = integration(&env, "pos", "stores").await;
    let client = reqwest::Client::new();
    let url = format!("{base}/pos/{id}/bills");
    let batch = fixture("pos/bills_batch.json");
    let post = |auth: String, body: Vec<u8>| {
        client
            .post(&url)
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    assert_eq!(
        post("Bearer wrong".into(), batch.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .post(&url)
            .body(batch.clone())
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let resp = post(format!("Bearer {token}"), batch.clone())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (body["stored"].as_u64(), body["duplicates"].as_u64()),
        (Some(3), Some(0))
    );
    let body: serde_json::Value = post(format!("Bearer {token}"), batch)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (body["stored"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(3))
    );

    let mut bills: serde_json::Value =
        serde_json::from_slice(&fixture("pos/bills_batch.json")).unwrap();
    for (i, bill) in bills["bills"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        bill["bill_no"] = serde_json::json!(format!("NEW-{i}"));
    }
    bills["bills"][2]["totals"] = serde_json::json!({});
    let resp = post(
        format!("Bearer {token}"),
        serde_json::to_vec(&bills).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("bills[2]"),
        "{err}"
    );
    assert_eq!(raw_count(&env).await, 3, "the invalid batch stored nothing");
}
