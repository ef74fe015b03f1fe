//! The embedded migrations build the schema on an empty database, applying them again
//! changes nothing, and the indexes the queries rely on exist.

use sqlx::{Connection, PgConnection};
use test_support::EmptyDatabase;

async fn applied_versions(url: &str) -> Vec<i64> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_are_idempotent() {
    let db = EmptyDatabase::create().await;
    let pool = storage::connect(&db.url, 2).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "the database starts empty");

    storage::migrate(&pool).await.unwrap();
    let expected: Vec<i64> = storage::MIGRATOR.iter().map(|m| m.version).collect();
    assert_eq!(
        applied_versions(&db.url).await,
        expected,
        "every migration applied"
    );

    // A second run (every service start does one) applies nothing and fails nothing.
    storage::migrate(&pool).await.unwrap();
    assert_eq!(applied_versions(&db.url).await, expected);

    for table in [
        "customer_raw_event",
        "customer_profile",
        "profile_identifier",
        "normalized_event",
        "orders",
        "order_items",
        "products",
        "features",
        "merge_history",
        "manual_merge_queue",
        "predictions",
        "model_version",
        "integrations",
        "connection_logs",
        "users",
        "sessions",
        "api_tokens",
        "csv_imports",
        "suppression",
    ] {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name = $1)",
        )
        .bind(table)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(exists, "table {table} exists");
    }
}

#[tokio::test]
async fn profile_identifiers_have_a_gin_index() {
    let db = EmptyDatabase::create().await;
    let pool = storage::connect(&db.url, 2).await.unwrap();
    storage::migrate(&pool).await.unwrap();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname, indexdef FROM pg_indexes \
         WHERE schemaname = 'public' AND tablename = 'customer_profile'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let gin = indexes
        .iter()
        .find(|(_, def)| def.contains("USING gin") && def.contains("(identifiers"))
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| panic!("no GIN index on customer_profile.identifiers: {indexes:?}"));
    // The planner can use it for containment search, the query the gateway runs.
    // On one connection (a transaction): the setting must hold for the EXPLAIN.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM customer_profile \
         WHERE identifiers @> '[{\"kind\": \"email\", \"value\": \"a@b.c\"}]'::jsonb",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        plan.iter().any(|line| line.contains(&gin)),
        "containment search does not use {gin}: {plan:?}"
    );
}
