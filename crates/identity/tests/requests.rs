//! Analysts' decisions on the real Postgres: manual merge and its undo, review items
//! approved and rejected, erasure with suppression.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use domain::{
    Channel, EventType, Identifier, IdentifierKind, MergeRequest, NormalizedEvent, Source,
};
use identity::memory::partition_of;
use identity::resolver::Resolver;
use sqlx::Row;
use test_support::TestEnv;
use uuid::Uuid;

fn id(kind: IdentifierKind, v: &str) -> Identifier {
    Identifier::parse(kind, v, "IN").unwrap()
}

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

fn event(n: u32, ids: &[(IdentifierKind, &str)], name: Option<&str>) -> NormalizedEvent {
    let mut traits = serde_json::Map::new();
    if let Some(name) = name {
        traits.insert("first_name".into(), name.into());
    }
    NormalizedEvent {
        event_id: Uuid::from_u128(0xA000_0000 + u128::from(n)),
        occurred_at: at(i64::from(n)),
        received_at: at(i64::from(n)),
        source: Source::Segment,
        integration_id: None,
        channel: Channel::Web,
        event_type: EventType::Identify,
        name: None,
        identifiers: ids.iter().map(|(k, v)| id(*k, v)).collect(),
        traits,
        properties: Default::default(),
        order: None,
    }
}

async fn partition(env: &TestEnv) -> BTreeSet<BTreeSet<Uuid>> {
    let rows = sqlx::query("SELECT event_id, profile_id FROM normalized_event")
        .fetch_all(&env.db)
        .await
        .unwrap();
    partition_of(
        rows.iter()
            .map(|r| (r.get("event_id"), r.get::<Uuid, _>("profile_id"))),
    )
}

async fn live_ids(env: &TestEnv) -> BTreeSet<Uuid> {
    sqlx::query_scalar("SELECT id FROM customer_profile WHERE merged_into IS NULL")
        .fetch_all(&env.db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn setup(events: &[NormalizedEvent]) -> (TestEnv, Resolver) {
    let env = TestEnv::new().await;
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings);
    identity::seed::store_events(&env.db, events).await.unwrap();
    resolver.resolve(events).await.unwrap();
    (env, resolver)
}

#[tokio::test]
async fn unmerge_undoes_a_manual_merge_and_keeps_them_apart() {
    use IdentifierKind::*;
    let events = vec![
        event(
            1,
            &[(Email, "asha@mail.in"), (CookieId, "c1")],
            Some("Asha"),
        ),
        event(2, &[(Phone, "+919812345678")], None),
        event(3, &[(CookieId, "c1")], None),
        event(4, &[(Phone, "+919812345678"), (DeviceId, "d2")], None),
    ];
    let (env, resolver) = setup(&events).await;
    let before = partition(&env).await;
    let before_ids = live_ids(&env).await;
    assert_eq!(before.len(), 2);

    let ids: Vec<Uuid> = before_ids.iter().copied().collect();
    let merged = resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::ManualMerge {
                profile_ids: ids.clone(),
                actor: "analyst@brand.in".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(partition(&env).await.len(), 1);
    let (merge_id, rule, actor): (Uuid, String, String) =
        sqlx::query_as("SELECT id, rule, actor FROM merge_history")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(
        (rule.as_str(), actor.as_str()),
        ("manual", "analyst@brand.in")
    );
    assert_eq!(merged.detail["merge_ids"][0], merge_id.to_string());

    // A later event of the absorbed person lands on the merged profile.
    let late = event(5, &[(DeviceId, "d2")], None);
    identity::seed::store_events(&env.db, std::slice::from_ref(&late))
        .await
        .unwrap();
    resolver.resolve(std::slice::from_ref(&late)).await.unwrap();
    assert_eq!(partition(&env).await.len(), 1);

    resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::Unmerge {
                merge_id,
                actor: "analyst@brand.in".into(),
            },
        )
        .await
        .unwrap();
    let after: BTreeSet<BTreeSet<Uuid>> = partition(&env).await;
    let mut expected = before.clone();
    // Event 5 follows its device to the restored profile.
    let phone_side = expected
        .iter()
        .find(|s| s.contains(&events[1].event_id))
        .unwrap()
        .clone();
    expected.remove(&phone_side);
    let mut with_late = phone_side;
    with_late.insert(late.event_id);
    expected.insert(with_late);
    assert_eq!(after, expected, "unmerge(merge(x)) = x");
    assert_eq!(
        live_ids(&env).await,
        before_ids,
        "the original profile ids come back"
    );
    let undone: Option<String> =
        sqlx::query_scalar("SELECT undone_by FROM merge_history WHERE id = $1")
            .bind(merge_id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(undone.as_deref(), Some("analyst@brand.in"));

    // Evidence linking them again no longer merges them: the analyst said they differ.
    let link = event(
        6,
        &[(Email, "asha@mail.in"), (Phone, "+919812345678")],
        None,
    );
    identity::seed::store_events(&env.db, std::slice::from_ref(&link))
        .await
        .unwrap();
    resolver.resolve(std::slice::from_ref(&link)).await.unwrap();
    assert_eq!(live_ids(&env).await.len(), 2);
}

#[tokio::test]
async fn review_items_are_approved_or_rejected() {
    use IdentifierKind::*;
    // Two people on one device: a review item.
    let events = vec![
        event(1, &[(Email, "asha@mail.in"), (DeviceId, "tablet")], None),
        event(2, &[(Email, "ravi@mail.in")], None),
        event(3, &[(Email, "ravi@mail.in"), (DeviceId, "tablet")], None),
        event(
            4,
            &[(Email, "meena@mail.in"), (LoyaltyId, "L-1")],
            Some("Meena"),
        ),
        event(
            5,
            &[(Phone, "+919812345678"), (LoyaltyId, "L-2")],
            Some("Kiran"),
        ),
        event(6, &[(LoyaltyId, "L-1"), (Phone, "+919812345678")], None),
    ];
    let (env, resolver) = setup(&events).await;
    let reviews: Vec<(Uuid, String, Vec<Uuid>)> = sqlx::query_as(
        "SELECT id, reason, candidate_profile_ids FROM manual_merge_queue ORDER BY reason",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let reasons: Vec<&str> = reviews.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(reasons, vec!["name_conflict", "shared_weak_identifier"]);
    assert_eq!(live_ids(&env).await.len(), 4);

    let (name_review, _, _) = &reviews[0];
    resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::ApproveReview {
                review_id: *name_review,
                actor: "a@brand.in".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(live_ids(&env).await.len(), 3, "approving merges the two");
    let status: (String, Option<String>) =
        sqlx::query_as("SELECT status, decided_by FROM manual_merge_queue WHERE id = $1")
            .bind(name_review)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(
        status,
        ("applied".to_owned(), Some("a@brand.in".to_owned()))
    );

    let (device_review, _, _) = &reviews[1];
    resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::RejectReview {
                review_id: *device_review,
                actor: "a@brand.in".into(),
            },
        )
        .await
        .unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM manual_merge_queue WHERE id = $1")
        .bind(device_review)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(status, "rejected");
    // The same evidence again raises nothing new.
    let again = event(7, &[(Email, "ravi@mail.in"), (DeviceId, "tablet")], None);
    identity::seed::store_events(&env.db, std::slice::from_ref(&again))
        .await
        .unwrap();
    let report = resolver
        .resolve(std::slice::from_ref(&again))
        .await
        .unwrap();
    assert_eq!(report.reviews, 0);
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM manual_merge_queue WHERE status = 'pending'")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn erasure_deletes_the_person_and_suppresses_their_identifiers() {
    use IdentifierKind::*;
    let events = vec![
        event(
            1,
            &[(Email, "asha@mail.in"), (Phone, "+919812345678")],
            Some("Asha"),
        ),
        event(2, &[(Phone, "+919812345678"), (CookieId, "c1")], None),
        event(3, &[(Email, "ravi@mail.in")], Some("Ravi")),
    ];
    let (env, resolver) = setup(&events).await;
    let asha: Uuid = sqlx::query_scalar(
        "SELECT profile_id FROM profile_identifier WHERE value = 'asha@mail.in'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    let out = resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::Erase {
                profile_id: asha,
                actor: "dpo@brand.in".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(out.detail["events"], 2);
    assert_eq!(out.detail["suppressed_identifiers"], 3);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM normalized_event")
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert_eq!(left, vec![events[2].event_id]);
    let profiles: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_profile")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(profiles, 1);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM profile_identifier WHERE value LIKE '%asha%' OR value = '+919812345678'")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(kept, 0);

    // The person comes back through a webhook: the event is dropped, nothing returns.
    let back = event(9, &[(Phone, "+91 98123 45678"), (CookieId, "c9")], None);
    identity::seed::store_events(&env.db, std::slice::from_ref(&back))
        .await
        .unwrap();
    let report = resolver.resolve(std::slice::from_ref(&back)).await.unwrap();
    assert_eq!(report.suppressed, 1);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM normalized_event WHERE event_id = $1")
            .bind(back.event_id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(stored, 0);
    // Erasing again is a no-op.
    let again = resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::Erase {
                profile_id: asha,
                actor: "dpo@brand.in".into(),
            },
        )
        .await
        .unwrap();
    assert!(again.detail["note"].is_string());
}
