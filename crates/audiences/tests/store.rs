//! Audiences stored, previewed, recomputed and kept live against the real Postgres.

use audiences::store::{self, AudienceError, Change, MembershipChange};
use chrono::{DateTime, Duration, Utc};
use domain::api::AudienceRequest as AudienceDraft;
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use test_support::TestEnv;
use uuid::Uuid;

fn draft(name: &str, rule: serde_json::Value) -> AudienceDraft {
    AudienceDraft {
        name: name.into(),
        description: String::new(),
        rule: serde_json::from_value(rule).unwrap(),
    }
}

async fn profile(db: &PgPool, n: u128, spent: i64, channels: &[&str]) -> Uuid {
    let id = Uuid::from_u128(n);
    sqlx::query(
        "INSERT INTO customer_profile (id, display_name, identifiers, orders_count, total_spent, channels) \
         VALUES ($1, $2, '[{\"kind\":\"phone\",\"value\":\"+919800000000\"}]', 1, $3, $4)",
    )
    .bind(id)
    .bind(format!("Person {n}"))
    .bind(Decimal::new(spent, 0))
    .bind(channels.iter().map(|c| c.to_string()).collect::<Vec<_>>())
    .execute(db)
    .await
    .unwrap();
    id
}

async fn log(db: &PgPool, audience: Uuid) -> Vec<(Uuid, String, String)> {
    sqlx::query_as(
        "SELECT profile_id, change, cause FROM audience_membership_change \
         WHERE audience_id = $1 ORDER BY id",
    )
    .bind(audience)
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn saving_checks_rules_names_references_and_cycles() {
    let env = TestEnv::new().await;
    let db = &env.db;
    let a = store::create(
        db,
        &draft(
            "Big spenders",
            json!({"total_spent": {"op": "gte", "value": 1000}}),
        ),
        "admin@test",
    )
    .await
    .unwrap();
    assert_eq!(a.version, 1);
    assert_eq!(a.created_by.as_deref(), Some("admin@test"));

    let bad = store::create(db, &draft("Bad", json!({"all": []})), "x").await;
    assert!(matches!(bad, Err(AudienceError::Rule(_))), "{bad:?}");
    let taken = store::create(db, &draft(" Big spenders ", json!("whatsapp_capable")), "x").await;
    assert!(
        matches!(taken, Err(AudienceError::NameTaken(_))),
        "{taken:?}"
    );
    let blank = store::create(db, &draft("  ", json!("whatsapp_capable")), "x").await;
    assert!(matches!(blank, Err(AudienceError::Invalid(_))), "{blank:?}");
    let missing = store::create(
        db,
        &draft("Ghost", json!({"in_audience": Uuid::from_u128(7)})),
        "x",
    )
    .await;
    assert!(matches!(missing, Err(AudienceError::Invalid(m)) if m.contains("does not exist")));

    let b = store::create(
        db,
        &draft(
            "Big on WhatsApp",
            json!({"all": [{"in_audience": a.id}, "whatsapp_capable"]}),
        ),
        "x",
    )
    .await
    .unwrap();
    let cycle = store::update(
        db,
        a.id,
        &draft("Big spenders", json!({"in_audience": b.id})),
    )
    .await;
    match cycle {
        Err(AudienceError::Cycle(path)) => {
            assert!(
                path.contains("Big spenders") && path.contains("Big on WhatsApp"),
                "{path}"
            )
        }
        other => panic!("{other:?}"),
    }
    let own = store::update(
        db,
        a.id,
        &draft("Big spenders", json!({"not": {"in_audience": a.id}})),
    )
    .await;
    assert!(matches!(own, Err(AudienceError::Cycle(_))), "{own:?}");

    let in_use = store::delete(db, a.id).await;
    assert!(
        matches!(in_use, Err(AudienceError::InUse(ref n)) if n.contains("Big on WhatsApp")),
        "{in_use:?}"
    );
    let renamed = store::update(
        db,
        a.id,
        &draft(
            "Bigger spenders",
            json!({"total_spent": {"op": "gte", "value": 2000}}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(renamed.version, 2);
    assert_eq!(store::get(db, a.id).await.unwrap().name, "Bigger spenders");
    store::delete(db, b.id).await.unwrap();
    store::delete(db, a.id).await.unwrap();
    assert!(matches!(
        store::get(db, a.id).await,
        Err(AudienceError::NotFound(_))
    ));
    assert!(store::list(db).await.unwrap().is_empty());
}

#[tokio::test]
async fn recompute_and_live_updates_record_each_entry_and_exit_once() {
    let env = TestEnv::new().await;
    let db = &env.db;
    let now: DateTime<Utc> = Utc::now();
    let rich = profile(db, 1, 5000, &["web", "whatsapp"]).await;
    let poor = profile(db, 2, 10, &["whatsapp"]).await;
    let rich_web = profile(db, 3, 9000, &["web"]).await;

    let big = store::create(
        db,
        &draft("Big", json!({"total_spent": {"op": "gte", "value": 1000}})),
        "t",
    )
    .await
    .unwrap();
    let reachable = store::create(
        db,
        &draft(
            "Big and reachable",
            json!({"all": [{"in_audience": big.id}, "whatsapp_capable"]}),
        ),
        "t",
    )
    .await
    .unwrap();

    let preview = store::preview(db, &big.rule, now, 1).await.unwrap();
    assert_eq!(preview.size, 2);
    assert_eq!(preview.sample, vec![rich]);

    // Dependency order: "Big" first, so "Big and reachable" sees its members.
    let done = store::recompute_all(db, now).await.unwrap();
    assert_eq!(
        done.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![big.id, reachable.id]
    );
    assert_eq!(done[0].1.entered, 2);
    assert_eq!(done[1].1.members, 1);
    assert_eq!(store::get(db, big.id).await.unwrap().member_count, 2);
    let again = store::recompute(db, big.id, now).await.unwrap();
    assert_eq!(
        (again.entered, again.exited, again.members),
        (0, 0, 2),
        "nothing twice"
    );

    // The poor profile spends: live evaluation moves it into both, in order.
    sqlx::query("UPDATE customer_profile SET total_spent = 1500 WHERE id = $1")
        .bind(poor)
        .execute(db)
        .await
        .unwrap();
    let changes = store::evaluate_profile(db, poor, now).await.unwrap();
    assert_eq!(
        changes,
        vec![
            MembershipChange {
                audience_id: big.id,
                profile_id: poor,
                change: Change::Entered
            },
            MembershipChange {
                audience_id: reachable.id,
                profile_id: poor,
                change: Change::Entered
            },
        ]
    );
    assert!(
        store::evaluate_profile(db, poor, now)
            .await
            .unwrap()
            .is_empty(),
        "no change, no record"
    );

    // Merged away: it leaves everything; the recompute agrees and records nothing more.
    sqlx::query("UPDATE customer_profile SET merged_into = $2 WHERE id = $1")
        .bind(rich)
        .bind(rich_web)
        .execute(db)
        .await
        .unwrap();
    let left = store::evaluate_profile(db, rich, now + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|c| c.change == Change::Exited));
    let after = store::recompute(db, big.id, now + Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!((after.entered, after.exited, after.members), (0, 0, 2));

    let history = log(db, big.id).await;
    let mine: Vec<(Uuid, String, String)> = vec![
        (rich, "entered".into(), "recompute".into()),
        (rich_web, "entered".into(), "recompute".into()),
        (poor, "entered".into(), "live".into()),
        (rich, "exited".into(), "live".into()),
    ];
    assert_eq!(history, mine);

    // Erased (the rows are gone, the tombstone first): a recompute sees it leave.
    for id in [rich, rich_web] {
        sqlx::query("DELETE FROM customer_profile WHERE id = $1")
            .bind(id)
            .execute(db)
            .await
            .unwrap();
    }
    let erased = store::recompute(db, big.id, now + Duration::seconds(3))
        .await
        .unwrap();
    assert_eq!((erased.exited, erased.members), (1, 1));

    let page = store::members(db, big.id, None, 10).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.profile_id).collect::<Vec<_>>(),
        vec![poor]
    );
    assert_eq!(page[0].display_name.as_deref(), Some("Person 2"));
}

#[tokio::test]
async fn members_page_by_profile_id() {
    let env = TestEnv::new().await;
    let db = &env.db;
    for n in 1..=5 {
        profile(db, n, 100, &["web"]).await;
    }
    let all = store::create(
        db,
        &draft("Everyone", json!({"has_identifier": "phone"})),
        "t",
    )
    .await
    .unwrap();
    store::recompute(db, all.id, Utc::now()).await.unwrap();
    let first = store::members(db, all.id, None, 2).await.unwrap();
    let second = store::members(db, all.id, Some(first[1].profile_id), 2)
        .await
        .unwrap();
    let third = store::members(db, all.id, Some(second[1].profile_id), 2)
        .await
        .unwrap();
    let ids: Vec<u128> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|m| m.profile_id.as_u128())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
}
