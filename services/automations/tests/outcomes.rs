//! A send's lifecycle from Twilio's signed status callbacks, through the real ingest
//! (signature check against the Twilio integration's auth token), normalizer and identity
//! merger, to the send row: queued → sent → delivered → read, and failed with Twilio's error code.

mod common;

use std::time::Duration;

use automations::engine;
use chrono::Utc;
use common::*;
use serde_json::json;
use test_support::eventually;
use test_support::twilio::AUTH_TOKEN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_callbacks_move_sends_to_read_or_failed_with_the_error_code() {
    let port = test_support::process::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let (env, fake) = world(vec![
        ("PUBLIC_BASE_URL", public.clone()),
        ("FREQUENCY_CAP_PER_DAY", "0".into()),
    ])
    .await;
    let db = &env.db;
    // The Twilio integration ingest verifies callbacks with: the account's auth token.
    ingestion::integrations::create(
        db,
        &env.secrets_key(),
        "twilio",
        "WhatsApp",
        Some(AUTH_TOKEN),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(ingest::run(env.context(), listener));
    env.spawn(normalizer::run).await;
    // The merger stores the callbacks' event rows (attached), which the sends read.
    env.spawn(identity_merger::run).await;

    let mut template = on_checkout("Template");
    template["trigger"]["event"]["name"] = json!("Checkout Started");
    let template = automation(db, template).await;
    let mut body_only = on_checkout("Body only");
    body_only["actions"] = json!([{"kind": "whatsapp", "body": "Hi {{first_name}}"}]);
    body_only["trigger"]["event"]["name"] = json!("Second");
    let body_only = automation(db, body_only).await;
    let e = engine(&env);

    let read = person(db, "Hema Pillai", "+919810000060", Some("subscribed")).await;
    checkout(db, read).await;
    // Our records show an inbound message (the window looks open) but Twilio has none:
    // it accepts the free-form body and then fails it with 63016.
    let refused = person(db, "Ira Sen", "+919810000061", Some("subscribed")).await;
    event(db, refused, "message_received", None, json!({}), Utc::now()).await;
    event(
        db,
        refused,
        "checkout_started",
        Some("Second"),
        json!({}),
        Utc::now(),
    )
    .await;
    engine::on_profile_changes(&e, &[read, refused])
        .await
        .unwrap();

    eventually(30, "the template send to be read", || async {
        (sends(db, template)
            .await
            .first()
            .is_some_and(|s| s.0 == "read"))
        .then_some(())
    })
    .await;
    let failed = eventually(30, "the body send to fail with 63016", || async {
        sends(db, body_only)
            .await
            .into_iter()
            .find(|s| s.0 == "failed")
    })
    .await;
    assert_eq!(failed.1.as_deref(), Some("63016"));
    let m = fake.messages();
    assert_eq!(m.len(), 2);
    assert!(
        m.iter().all(|m| m
            .param("StatusCallback")
            .is_some_and(|u| u.starts_with(&public))),
        "StatusCallback is ingest's Twilio status webhook"
    );
    let results = journeys::store::results(db, template).await.unwrap();
    let funnel: Vec<i64> = results.funnel.iter().map(|f| f.count).collect();
    assert_eq!(
        funnel[..5],
        [1, 1, 1, 1, 1],
        "triggered, acted, sent, delivered, read"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
}
