//! The merge log, the review queue and merge decisions: each decision is published on
//! `profiles.merge_requests` for the identity merger and answered 202; the item shows
//! the decision in flight until the merger's outcome replaces it.

mod common;

use chrono::{Duration, Utc};
use common::{Gateway, ProfileSeed, code};
use domain::MergeRequest;
use domain::api::{MergeRule, Role};
use serde_json::{Value, json};
use streams::Topic;
use uuid::Uuid;

fn requests(entries: &[Value]) -> Vec<MergeRequest> {
    entries
        .iter()
        .map(|e| serde_json::from_value(e["payload"].clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn merge_log_filters_and_pages() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let a = common::seed_profile(db, ProfileSeed::default()).await;
    let b = common::seed_profile(db, ProfileSeed::default()).await;
    let c = common::seed_profile(db, ProfileSeed::default()).await;
    let m1 = common::seed_merge(db, a, b, MergeRule::StrongIdentifier).await;
    let m2 = common::seed_merge(db, a, c, MergeRule::Manual).await;
    sqlx::query("UPDATE merge_history SET created_at = now() - interval '3 days' WHERE id = $1")
        .bind(m1)
        .execute(db)
        .await
        .unwrap();
    let viewer = gw.token(Role::Viewer).await;

    let (status, page) = gw.get("/merges?limit=1", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["id"], m2.to_string());
    let c1 = page["next_cursor"].as_str().unwrap();
    let (_, page) = gw
        .get(&format!("/merges?limit=1&cursor={c1}"), &viewer)
        .await;
    assert_eq!(page["items"][0]["id"], m1.to_string());
    assert!(page["next_cursor"].is_null());

    let (_, page) = gw.get("/merges?rule=manual", &viewer).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["rule"], "manual");
    let (_, page) = gw.get(&format!("/merges?profile_id={b}"), &viewer).await;
    assert_eq!(page["items"][0]["id"], m1.to_string());
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let since = (Utc::now() - Duration::days(1))
        .to_rfc3339()
        .replace('+', "%2B");
    let (_, page) = gw.get(&format!("/merges?from={since}"), &viewer).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (status, body) = gw.get("/merges?profile_id=nope", &viewer).await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "bad_filter");

    let (status, one) = gw.get(&format!("/merges/{m1}"), &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(one["survivor_id"], a.to_string());
    assert_eq!(one["rule"], "strong_identifier");
    assert_eq!(
        one["matched_identifiers"],
        json!([{"kind": "email", "value": "a@b.com"}])
    );
    let (status, _) = gw
        .get(&format!("/merges/{}", Uuid::now_v7()), &viewer)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn review_decisions_are_published_and_shown_in_flight() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let a = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Asha"),
            ..ProfileSeed::default()
        },
    )
    .await;
    let b = common::seed_profile(db, ProfileSeed::default()).await;
    let review = common::seed_review(db, &[a, b]).await;
    let decided = common::seed_review(db, &[a, b]).await;
    sqlx::query(
        "UPDATE manual_merge_queue SET status = 'rejected', decided_by = 'x' WHERE id = $1",
    )
    .bind(decided)
    .execute(db)
    .await
    .unwrap();
    let analyst = gw.session(Role::Analyst).await;

    let (status, page) = gw.get("/reviews?status=pending", &analyst).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let item = &page["items"][0];
    assert_eq!(item["id"], review.to_string());
    assert_eq!(item["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(item["evidence"]["identifiers"][0], "phone:+919876543210");
    assert!(item["requested"].is_null());
    let (_, all) = gw.get("/reviews", &analyst).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (status, _) = gw.get("/reviews?status=maybe", &analyst).await;
    assert_eq!(status, 400);

    let (status, accepted) = gw
        .post(&format!("/reviews/{review}/approve"), &analyst, Value::Null)
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["action"], "approve_review");
    assert_eq!(accepted["status_url"], format!("/api/v1/reviews/{review}"));
    let sent = requests(&gw.stream_entries(Topic::MergeRequests).await);
    assert!(
        matches!(&sent[..], [MergeRequest::ApproveReview { review_id, actor }]
        if *review_id == review && actor.starts_with("analyst-"))
    );

    // Until the merger applies it, the item shows the decision in flight.
    let (_, item) = gw.get(&format!("/reviews/{review}"), &analyst).await;
    assert_eq!(item["status"], "pending");
    assert_eq!(item["requested"]["action"], "approve_review");
    assert_eq!(item["requested"]["request_id"], accepted["request_id"]);
    // The merger's outcome replaces it.
    sqlx::query("UPDATE manual_merge_queue SET status = 'applied' WHERE id = $1")
        .bind(review)
        .execute(db)
        .await
        .unwrap();
    let (_, item) = gw.get(&format!("/reviews/{review}"), &analyst).await;
    assert_eq!(item["status"], "applied");
    assert!(item["requested"].is_null());

    // Decided items are not decided again.
    let (status, body) = gw
        .post(&format!("/reviews/{decided}/reject"), &analyst, Value::Null)
        .await;
    assert_eq!(status, 409);
    assert_eq!(code(&body), "conflict");
    let (status, _) = gw
        .post(
            &format!("/reviews/{}/reject", Uuid::now_v7()),
            &analyst,
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        gw.stream_entries(Topic::MergeRequests).await.len(),
        1,
        "nothing else sent"
    );

    let fresh = common::seed_review(db, &[a, b]).await;
    let (status, _) = gw
        .post(&format!("/reviews/{fresh}/reject"), &analyst, Value::Null)
        .await;
    assert_eq!(status, 202);
    let sent = requests(&gw.stream_entries(Topic::MergeRequests).await);
    assert!(
        matches!(&sent[1], MergeRequest::RejectReview { review_id, .. } if *review_id == fresh)
    );
}

#[tokio::test]
async fn manual_merges_and_unmerges_are_validated_then_published() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let a = common::seed_profile(db, ProfileSeed::default()).await;
    let b = common::seed_profile(db, ProfileSeed::default()).await;
    let gone = common::seed_profile(db, ProfileSeed::default()).await;
    let merge = common::seed_merge(db, a, gone, MergeRule::StrongIdentifier).await;
    let analyst = gw.token(Role::Analyst).await;

    for (body, status) in [
        (json!({"profile_ids": [a]}), 400),
        (json!({"profile_ids": [a, a]}), 400),
        (
            json!({"profile_ids": (0..11).map(|_| Uuid::now_v7()).collect::<Vec<_>>()}),
            400,
        ),
        (json!({"profile_ids": [a, Uuid::now_v7()]}), 404),
        (json!({"profile_ids": [a, gone]}), 409),
        (json!({"ids": [a, b]}), 400),
    ] {
        let (got, resp) = gw.post("/merges", &analyst, body.clone()).await;
        assert_eq!(got, status, "{body}: {resp}");
    }
    assert!(gw.stream_entries(Topic::MergeRequests).await.is_empty());

    let (status, accepted) = gw
        .post("/merges", &analyst, json!({"profile_ids": [b, a]}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(accepted["action"], "manual_merge");
    let (status, _) = gw
        .post(&format!("/merges/{merge}/unmerge"), &analyst, Value::Null)
        .await;
    assert_eq!(status, 202);
    let sent = requests(&gw.stream_entries(Topic::MergeRequests).await);
    assert!(
        matches!(&sent[0], MergeRequest::ManualMerge { profile_ids, actor }
        if *profile_ids == vec![b, a] && actor == "token:test")
    );
    assert!(matches!(&sent[1], MergeRequest::Unmerge { merge_id, .. } if *merge_id == merge));

    sqlx::query("UPDATE merge_history SET undone_at = now(), undone_by = 'x' WHERE id = $1")
        .bind(merge)
        .execute(db)
        .await
        .unwrap();
    let (status, _) = gw
        .post(&format!("/merges/{merge}/unmerge"), &analyst, Value::Null)
        .await;
    assert_eq!(status, 409, "already undone");
    let (status, _) = gw
        .post(
            &format!("/merges/{}/unmerge", Uuid::now_v7()),
            &analyst,
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);
}

/// Every merge decision, not only an erase, is accepted while Redis refuses the
/// publish: 202 once the request is stored in `api_merge_requests`, and the gateway's
/// outbox relay publishes each one once Redis answers again (so the OpenAPI document
/// lists no 503 for them).
#[tokio::test]
async fn decisions_accepted_while_redis_refuses_them_are_published_by_the_outbox_relay() {
    let gw = Gateway::start_with(vec![("OUTBOX_RELAY_AFTER_SECS", "0".to_owned())]).await;
    let db = gw.db();
    let a = common::seed_profile(db, ProfileSeed::default()).await;
    let b = common::seed_profile(db, ProfileSeed::default()).await;
    let gone = common::seed_profile(db, ProfileSeed::default()).await;
    let merge = common::seed_merge(db, a, gone, MergeRule::StrongIdentifier).await;
    let to_approve = common::seed_review(db, &[a, b]).await;
    let to_reject = common::seed_review(db, &[a, b]).await;
    let analyst = gw.session(Role::Analyst).await;
    // The stream's key holds a string: every XADD to it fails, as with Redis down.
    let key = Topic::MergeRequests.key(gw.env.prefix());
    let mut redis = gw.env.redis.clone();
    let () = redis::AsyncCommands::set(&mut redis, &key, "not a stream")
        .await
        .unwrap();

    let mut accepted = Vec::new();
    for (path, body, action) in [
        (
            format!("/reviews/{to_approve}/approve"),
            Value::Null,
            "approve_review",
        ),
        (
            format!("/reviews/{to_reject}/reject"),
            Value::Null,
            "reject_review",
        ),
        (
            "/merges".to_owned(),
            json!({"profile_ids": [a, b]}),
            "manual_merge",
        ),
        (format!("/merges/{merge}/unmerge"), Value::Null, "unmerge"),
    ] {
        let (status, answer) = gw.post(&path, &analyst, body).await;
        assert_eq!(status, 202, "{path} is durable in Postgres: {answer}");
        assert_eq!(answer["action"], action);
        let id: Uuid = answer["request_id"].as_str().unwrap().parse().unwrap();
        let unpublished: bool = sqlx::query_scalar(
            "SELECT published_at IS NULL AND entry_id IS NULL FROM api_merge_requests \
             WHERE id = $1 AND action = $2",
        )
        .bind(id)
        .bind(action)
        .fetch_one(db)
        .await
        .unwrap();
        assert!(unpublished, "{path}: stored, not published");
        accepted.push((id, action));
    }

    // Redis recovers: the relay publishes every stored request, each once.
    let () = redis::AsyncCommands::del(&mut redis, &key).await.unwrap();
    let entries = test_support::eventually(20, "the relay publishing the decisions", || async {
        let entries = gw.stream_entries(Topic::MergeRequests).await;
        (entries.len() >= accepted.len()).then_some(entries)
    })
    .await;
    let mut published: Vec<(Uuid, String)> = entries
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().parse().unwrap(),
                e["payload"]["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    published.sort();
    let mut expected: Vec<(Uuid, String)> = accepted
        .iter()
        .map(|(id, action)| (*id, (*action).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(published, expected);
    test_support::eventually(20, "the requests marked published", || async {
        let unpublished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api_merge_requests WHERE published_at IS NULL",
        )
        .fetch_one(db)
        .await
        .unwrap();
        (unpublished == 0).then_some(())
    })
    .await;
}
