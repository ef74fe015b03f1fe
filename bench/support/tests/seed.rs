//! The bulk seed makes exactly what the resolver makes: the same people stored and
//! resolved by `bench_support::seed` (in small chunks, so chunk boundaries are
//! exercised), by streaming them through `Resolver::resolve`, and by `ctl identity
//! rebuild`'s code give the same rows in every table the resolver writes, apart from
//! write times. Sets that touch what is stored are refused whole.

use bench_support::seed::{a_year_ago, existing_people, settle_outboxes, store_resolved};
use domain::NormalizedEvent;
use identity::resolver::Resolver;
use identity::resolver::disjoint::Disjoint;
use serde_json::Value;
use sqlx::PgPool;
use test_support::TestEnv;

/// Every table the resolver writes: (table, order of rows, columns that hold write times).
const TABLES: [(&str, &str, &[&str]); 9] = [
    ("normalized_event", "event_id", &["resolved_at"]),
    ("customer_profile", "id", &["created_at", "updated_at"]),
    ("profile_identifier", "kind, value", &[]),
    ("identity_identifier", "kind, value", &["suspect_since"]),
    ("identity_refused_link", "kind, value, event_id", &[]),
    (
        "merge_history",
        "survivor_id, trigger_event_id",
        &["id", "created_at"],
    ),
    (
        "manual_merge_queue",
        "trigger_event_id, reason",
        &["id", "created_at"],
    ),
    (
        "orders",
        "source, external_order_id",
        &["created_at", "updated_at"],
    ),
    ("products", "sku", &["first_seen_at", "last_seen_at"]),
];

/// Every row of `table` as JSON, without the columns `volatile`.
async fn dump(db: &PgPool, table: &str, order: &str, volatile: &[&str]) -> Value {
    let volatile: Vec<String> = volatile.iter().map(|c| (*c).to_owned()).collect();
    sqlx::query_scalar(&format!(
        "SELECT COALESCE(jsonb_agg(to_jsonb(t) - $1::text[] ORDER BY {order}), '[]'::jsonb) FROM {table} t"
    ))
    .bind(&volatile)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn outbox(db: &PgPool, sql: &str) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as(sql).fetch_all(db).await.unwrap()
}

const PREDICTIONS: &str =
    "SELECT profile_id, '' FROM identity_prediction_outbox ORDER BY profile_id";
const CHANGES: &str =
    "SELECT profile_id, change::text FROM profile_change_outbox ORDER BY profile_id, change";

async fn resolver(env: &TestEnv) -> Resolver {
    Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap()
}

fn people(count: usize) -> Vec<NormalizedEvent> {
    existing_people(0, count, a_year_ago()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulk_seed_writes_what_streaming_and_the_rebuild_write() {
    let events = people(40);

    let bulk = TestEnv::new().await;
    let (stored, profiles) = store_resolved(&resolver(&bulk).await, &events, 7)
        .await
        .unwrap();
    assert_eq!((stored, profiles), (40, 40));

    let streamed = TestEnv::new().await;
    identity::seed::store_events(&streamed.db, &events)
        .await
        .unwrap();
    let report = resolver(&streamed).await.resolve(&events).await.unwrap();
    assert_eq!(report.resolved, 40);

    let rebuilt = TestEnv::new().await;
    identity::seed::store_events(&rebuilt.db, &events)
        .await
        .unwrap();
    let report = resolver(&rebuilt).await.rebuild().await.unwrap();
    assert_eq!(report.profiles, 40);

    for (table, order, volatile) in TABLES {
        let want = dump(&streamed.db, table, order, volatile).await;
        assert_eq!(
            dump(&bulk.db, table, order, volatile).await,
            want,
            "{table}: bulk seed against streaming"
        );
        assert_eq!(
            dump(&rebuilt.db, table, order, volatile).await,
            want,
            "{table}: rebuild against streaming"
        );
    }
    let rows = dump(&bulk.db, "customer_profile", "id", &[]).await;
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(40),
        "one profile per person"
    );
    let unresolved: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM normalized_event WHERE profile_id IS NULL OR resolved_at IS NULL",
    )
    .fetch_one(&bulk.db)
    .await
    .unwrap();
    assert_eq!(unresolved, 0);

    // The queued requests and changes are streaming's, until the seed empties them.
    for sql in [PREDICTIONS, CHANGES] {
        let queued = outbox(&bulk.db, sql).await;
        assert_eq!(queued.len(), 40);
        assert_eq!(queued, outbox(&streamed.db, sql).await);
    }
    settle_outboxes(&bulk.db).await.unwrap();
    for sql in [PREDICTIONS, CHANGES] {
        assert!(outbox(&bulk.db, sql).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_who_are_already_known_are_refused_whole() {
    let env = TestEnv::new().await;
    let resolver = resolver(&env).await;
    let events = people(5);
    store_resolved(&resolver, &events[..3], 10).await.unwrap();
    // The same three people again (new events, same identifiers) and two new ones.
    let again = people(5);
    identity::seed::store_events(&env.db, &again).await.unwrap();
    let ids: Vec<uuid::Uuid> = again.iter().map(|e| e.event_id).collect();
    let outcome = resolver.resolve_disjoint(&ids).await.unwrap();
    assert_eq!(
        outcome,
        Disjoint::Overlaps(9),
        "three identifiers of three people"
    );
    let unresolved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM normalized_event WHERE resolved_at IS NULL")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(unresolved, 5, "nothing of the refused set was written");
    // The two new people alone are resolved.
    let outcome = resolver.resolve_disjoint(&ids[3..]).await.unwrap();
    assert_eq!(
        outcome,
        Disjoint::Resolved {
            events: 2,
            profiles: 2
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_refuses_known_people_stored_events_and_orders_whole() {
    let env = TestEnv::new().await;
    let resolver = resolver(&env).await;
    let events = people(5);
    assert_eq!(
        resolver.seed_disjoint(&events[..3]).await.unwrap(),
        Disjoint::Resolved {
            events: 3,
            profiles: 3
        }
    );
    let count = |sql: &'static str| {
        let db = env.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let before = (
        count("SELECT count(*) FROM normalized_event").await,
        count("SELECT count(*) FROM customer_profile").await,
        count("SELECT count(*) FROM profile_identifier").await,
    );
    assert_eq!(before, (3, 3, 9));

    // The same people again (new events, same identifiers) beside two new ones.
    let again = people(5);
    assert_eq!(
        resolver.seed_disjoint(&again).await.unwrap(),
        Disjoint::Overlaps(9),
        "three identifiers of three people"
    );
    // Events already stored, even of new people.
    let mut stored = events[3..].to_vec();
    identity::seed::store_events(&env.db, &stored[..1])
        .await
        .unwrap();
    assert_eq!(
        resolver.seed_disjoint(&stored).await.unwrap(),
        Disjoint::Stored(1)
    );
    // Orders belong to the normalizer's writer.
    let mut ordered = existing_people(100, 1, a_year_ago()).unwrap();
    ordered[0].order = Some(
        serde_json::from_value(serde_json::json!({
            "order_id": "SEED-1", "currency": "INR", "total": "10.00", "items": []
        }))
        .unwrap(),
    );
    assert!(matches!(
        resolver.seed_disjoint(&ordered).await,
        Err(identity::resolver::disjoint::SeedError::CarriesOrder(_))
    ));
    assert_eq!(
        (
            count("SELECT count(*) FROM normalized_event").await,
            count("SELECT count(*) FROM customer_profile").await,
            count("SELECT count(*) FROM profile_identifier").await,
        ),
        (4, 3, 9),
        "nothing of a refused set written (the one event stored beside them aside)"
    );
    // The new person whose event is not stored yet is seeded alone.
    stored.remove(0);
    assert_eq!(
        resolver.seed_disjoint(&stored).await.unwrap(),
        Disjoint::Resolved {
            events: 1,
            profiles: 1
        }
    );
}
