//! The Streams page through the HTTP surface: statistics, entries and dead letters page
//! by page, replay, and the live feed.

mod common;

use common::{Gateway, code, seed_dead_letter};
use domain::api::Role;
use futures::StreamExt as _;
use serde_json::Value;
use streams::{Envelope, Topic};
use uuid::Uuid;

#[tokio::test]
async fn stats_entries_dead_letters_and_replay() {
    let gw = Gateway::start().await;
    let streams = gw.env.context().streams();
    let mut ids = Vec::new();
    for i in 0..5 {
        let env = Envelope::new(Uuid::now_v7(), "test", "k", serde_json::json!({"n": i}));
        streams.publish(Topic::EventsRaw, &env).await.unwrap();
        ids.push(env.id);
    }
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(Topic::EventsRaw.key(gw.env.prefix()))
        .arg("normalizer")
        .arg("0")
        .query_async::<()>(&mut gw.env.redis.clone())
        .await
        .unwrap();
    let dead = seed_dead_letter(&gw, Topic::EventsRaw).await;
    let viewer = gw.token(Role::Viewer).await;

    let (status, overview) = gw.get("/streams", &viewer).await;
    assert_eq!(status, 200);
    let raw = overview["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "events.raw")
        .unwrap();
    assert_eq!(raw["length"], 5);
    assert_eq!(raw["dlq_length"], 1);
    assert_eq!(raw["groups"][0]["name"], "normalizer");
    assert_eq!(raw["groups"][0]["lag"], 5);
    assert_eq!(
        overview["topics"].as_array().unwrap().len(),
        Topic::ALL.len()
    );

    // Entries, newest first, two per page.
    let mut seen = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let path = match &cursor {
            Some(c) => format!("/streams/events.raw/entries?limit=2&cursor={c}"),
            None => "/streams/events.raw/entries?limit=2".into(),
        };
        let (status, page) = gw.get(&path, &viewer).await;
        assert_eq!(status, 200, "{page}");
        for e in page["items"].as_array().unwrap() {
            seen.push(e["envelope"]["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = ids.iter().rev().map(ToString::to_string).collect();
    assert_eq!(seen, expected);

    let (status, dlq) = gw.get("/streams/events.raw/dlq", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(dlq["items"][0]["entry_id"], dead.as_str());
    assert_eq!(dlq["items"][0]["error"], "boom");
    assert_eq!(dlq["items"][0]["deliveries"], 5);
    assert_eq!(dlq["items"][0]["envelope"]["source"], "test");

    for bad in ["/streams/events.fake/entries", "/streams/nope/dlq"] {
        let (status, body) = gw.get(bad, &viewer).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "{bad}");
    }
    let (status, _) = gw
        .get("/streams/events.raw/entries?cursor=zzz", &viewer)
        .await;
    assert_eq!(status, 400);

    // Replay moves the dead letter back onto its topic (admins only).
    let admin = gw.session(Role::Admin).await;
    let (status, replayed) = gw
        .post(
            &format!("/streams/events.raw/dlq/{dead}/replay"),
            &admin,
            Value::Null,
        )
        .await;
    assert_eq!(status, 202, "{replayed}");
    let (_, overview) = gw.get("/streams", &viewer).await;
    assert_eq!(overview["topics"][0]["length"], 6);
    assert_eq!(overview["topics"][0]["dlq_length"], 0);
    let (status, _) = gw
        .post(
            &format!("/streams/events.raw/dlq/{dead}/replay"),
            &admin,
            Value::Null,
        )
        .await;
    assert_eq!(status, 404, "replayed once only");
}

#[tokio::test]
async fn the_live_feed_sends_stats_and_new_entries() {
    let gw = Gateway::start().await;
    let viewer = gw.token(Role::Viewer).await;
    let resp = gw
        .request(reqwest::Method::GET, "/streams/live", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let streams = gw.env.context().streams();
    let env = Envelope::new(Uuid::now_v7(), "test", "live", serde_json::json!({}));
    let mut body = String::new();
    let mut published = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !body.contains(&env.id.to_string()) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the entry arrives on the feed")
            .unwrap()
            .unwrap();
        body.push_str(&String::from_utf8_lossy(&chunk));
        if !published && body.contains("event: stats") {
            streams
                .publish(Topic::EventsNormalized, &env)
                .await
                .unwrap();
            published = true;
        }
    }
    assert!(body.contains("event: entry"));
}
