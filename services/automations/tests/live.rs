//! Audience membership kept live by the service: changes queued in Postgres as the
//! identity merger queues them, published by the `profiles.changes` relay, turned into
//! entries and exits within seconds; and the periodic recompute as the safety net.

use std::time::Duration;

use audiences::store;
use domain::ProfileChangeKind;
use domain::api::AudienceRequest as AudienceDraft;
use rust_decimal::Decimal;
use sqlx::PgPool;
use test_support::TestEnv;
use uuid::Uuid;

async fn big_spenders(db: &PgPool) -> Uuid {
    let draft = AudienceDraft {
        name: "Big spenders".into(),
        description: String::new(),
        rule: serde_json::from_value(
            serde_json::json!({"total_spent": {"op": "gte", "value": 1000}}),
        )
        .unwrap(),
    };
    store::create(db, &draft, "test").await.unwrap().id
}

/// Writes a profile's spend and queues its change in one transaction, as the merger does.
async fn change(db: &PgPool, id: Uuid, spent: Option<i64>, kind: ProfileChangeKind) {
    let mut tx = db.begin().await.unwrap();
    match spent {
        Some(spent) => {
            sqlx::query(
                "INSERT INTO customer_profile (id, total_spent, orders_count) VALUES ($1, $2, 1) \
                 ON CONFLICT (id) DO UPDATE SET total_spent = EXCLUDED.total_spent",
            )
            .bind(id)
            .bind(Decimal::new(spent, 0))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        None => {
            sqlx::query("DELETE FROM customer_profile WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    storage::profile_changes::queue(&mut tx, &[(id, kind)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn recomputed_at(db: &PgPool, audience: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT recomputed_at FROM audiences WHERE id = $1")
        .bind(audience)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn member(db: &PgPool, audience: Uuid, profile: Uuid) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM audience_membership \
         WHERE audience_id = $1 AND profile_id = $2 AND current)",
    )
    .bind(audience)
    .bind(profile)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn wait_for(db: &PgPool, audience: Uuid, profile: Uuid, want: bool) {
    for _ in 0..300 {
        if member(db, audience, profile).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("profile {profile} never became member={want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_enter_and_leave_as_their_changes_arrive() {
    let env = TestEnv::with_settings([("AUDIENCE_RECOMPUTE_INTERVAL_SECS", "3600".into())]).await;
    let db = &env.db;
    let audience = big_spenders(db).await;
    let created = recomputed_at(db, audience).await;
    env.spawn(automations::run).await;
    // The service recomputes every audience as it starts: let that pass first, so every
    // entry and exit below is the live path's.
    for _ in 0..300 {
        if recomputed_at(db, audience).await > created {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recomputed_at(db, audience).await > created,
        "no start-up recompute"
    );
    tokio::spawn(service_kit::profile_changes::run_relay(
        env.context().streams(),
        db.clone(),
        "test",
        Duration::from_millis(50),
        env.shutdown.clone(),
    ));

    let (ana, ben) = (Uuid::now_v7(), Uuid::now_v7());
    change(db, ana, Some(5000), ProfileChangeKind::Created).await;
    change(db, ben, Some(10), ProfileChangeKind::Created).await;
    wait_for(db, audience, ana, true).await;

    change(db, ben, Some(2500), ProfileChangeKind::Updated).await;
    wait_for(db, audience, ben, true).await;
    change(db, ana, Some(20), ProfileChangeKind::Updated).await;
    wait_for(db, audience, ana, false).await;
    change(db, ben, None, ProfileChangeKind::Erased).await;
    wait_for(db, audience, ben, false).await;

    // Redelivering a change records nothing more.
    change(db, ana, Some(20), ProfileChangeKind::Updated).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT profile_id, change, cause FROM audience_membership_change ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let live = |p, c: &str| (p, c.to_owned(), "live".to_owned());
    assert_eq!(
        log,
        vec![
            live(ana, "entered"),
            live(ben, "entered"),
            live(ana, "exited"),
            live(ben, "exited")
        ]
    );
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM profile_change_outbox")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(outbox, 0, "every queued change was published");
}

#[tokio::test]
async fn the_periodic_recompute_catches_what_no_change_announced() {
    let env = TestEnv::with_settings([("AUDIENCE_RECOMPUTE_INTERVAL_SECS", "1".into())]).await;
    let db = &env.db;
    let audience = big_spenders(db).await;
    env.spawn(automations::run).await;
    let quiet = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO customer_profile (id, total_spent, orders_count) VALUES ($1, 4000, 2)",
    )
    .bind(quiet)
    .execute(db)
    .await
    .unwrap();
    wait_for(db, audience, quiet, true).await;
    let cause: String =
        sqlx::query_scalar("SELECT cause FROM audience_membership_change WHERE profile_id = $1")
            .bind(quiet)
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(cause, "recompute");
    assert!(
        automations::recompute_if_free(db).await.unwrap().is_some(),
        "the lock is free between rounds"
    );
}
