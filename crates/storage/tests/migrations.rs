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

/// Asserts that Postgres plans the `EXPLAIN` statement `query` onto `index`.
async fn assert_plan_uses(conn: &mut PgConnection, query: &str, index: &str) {
    let plan: Vec<String> = sqlx::query_scalar(query)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert!(
        plan.iter().any(|line| line.contains(index)),
        "{query} does not use {index}: {plan:?}"
    );
}

/// A database of its own with every migration applied (kept while the guard lives).
async fn migrated() -> (EmptyDatabase, sqlx::PgPool) {
    let db = EmptyDatabase::create().await;
    let pool = storage::connect(&db.url, 2).await.unwrap();
    storage::migrate(&pool).await.unwrap();
    (db, pool)
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
    let (_db, pool) = migrated().await;
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

/// Every index entry is written with every row version, so an index whose columns
/// lead another index of the same table (same order, operator classes and predicate)
/// costs a write per row and answers nothing the longer one does not: the planner reads
/// the longer one for every query the shorter one served. Unique indexes are
/// constraints and stay.
#[tokio::test]
async fn no_index_is_a_prefix_of_another() {
    let (_db, pool) = migrated().await;
    let covered: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.indexrelid::regclass::text, b.indexrelid::regclass::text \
         FROM pg_index a \
         JOIN pg_index b ON b.indrelid = a.indrelid AND b.indexrelid <> a.indexrelid \
         JOIN pg_class ca ON ca.oid = a.indexrelid \
         JOIN pg_class cb ON cb.oid = b.indexrelid AND cb.relam = ca.relam \
         JOIN pg_am am ON am.oid = ca.relam AND am.amname = 'btree' \
         JOIN pg_namespace n ON n.oid = ca.relnamespace AND n.nspname = 'public' \
         WHERE NOT a.indisunique AND a.indexprs IS NULL AND b.indexprs IS NULL \
           AND (b.indkey::text || ' ') LIKE (a.indkey::text || ' %') \
           AND (b.indoption::text || ' ') LIKE (a.indoption::text || ' %') \
           AND (b.indclass::text || ' ') LIKE (a.indclass::text || ' %') \
           AND pg_get_expr(a.indpred, a.indrelid) IS NOT DISTINCT FROM pg_get_expr(b.indpred, b.indrelid) \
         ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        covered.is_empty(),
        "indexes that lead another index (covered, by): {covered:?}"
    );
}

/// The queries the dropped indexes could have served plan onto the ones that remain:
/// a profile's timeline (newest first) and the profile search by name prefix.
#[tokio::test]
async fn timeline_and_name_search_use_an_index() {
    let (_db, pool) = migrated().await;
    let mut tx = pool.begin().await.unwrap();
    // Enough named profiles that a prefix is selective, and statistics that say so.
    for statement in [
        "INSERT INTO customer_profile (id, display_name) \
         SELECT gen_random_uuid(), 'Shopper ' || g FROM generate_series(1, 2000) g",
        "ANALYZE customer_profile",
        "SET LOCAL enable_seqscan = off",
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    for (query, index) in [
        (
            "EXPLAIN SELECT event_id FROM normalized_event \
             WHERE profile_id = '00000000-0000-0000-0000-000000000001' \
             ORDER BY occurred_at DESC, event_id DESC LIMIT 50",
            "normalized_event_profile_keyset",
        ),
        (
            "EXPLAIN SELECT max(occurred_at) FROM normalized_event \
             WHERE profile_id = '00000000-0000-0000-0000-000000000001'",
            "normalized_event_profile_keyset",
        ),
        (
            "EXPLAIN SELECT id FROM customer_profile \
             WHERE merged_into IS NULL AND lower(display_name) LIKE 'shopper 12%'",
            "customer_profile_name_prefix",
        ),
        (
            "EXPLAIN SELECT id, at FROM connection_logs \
             WHERE integration_id = '00000000-0000-0000-0000-000000000001' \
             ORDER BY at DESC, id DESC LIMIT 50",
            "connection_logs_keyset",
        ),
    ] {
        assert_plan_uses(&mut tx, query, index).await;
    }
    tx.rollback().await.unwrap();
}

/// A re-sighted identifier is updated in place (HOT: no new index entries) in both
/// identifier tables, as the merger re-sights them: a page of rows written in one
/// transaction, then an eighth of them seen again in the next (their first/last seen
/// and count, their latest event). With full pages (fillfactor 100) only the rows of
/// the last, partly filled page could be; the pages keep room for the next versions
/// (migration `20261214100000`).
#[tokio::test]
async fn re_sighted_identifiers_are_updated_in_place() {
    let (_db, pool) = migrated().await;
    let profile = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO customer_profile (id) VALUES ($1)")
        .bind(profile)
        .execute(&pool)
        .await
        .unwrap();
    let values: Vec<String> = (0..2_000)
        .map(|i| format!("person{i}@example.com"))
        .collect();
    let kinds = vec!["email".to_owned(); values.len()];
    sqlx::query(
        "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at) \
         SELECT k, v, $3, 'segment', now(), now() FROM unnest($1::text[], $2::text[]) AS u(k, v)",
    )
    .bind(&kinds)
    .bind(&values)
    .bind(profile)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO identity_identifier (kind, value, last_event_at, last_event_id, partners) \
         SELECT k, v, now(), gen_random_uuid(), '{\"phone\": [1, 2]}'::jsonb \
         FROM unnest($1::text[], $2::text[]) AS u(k, v)",
    )
    .bind(&kinds)
    .bind(&values)
    .execute(&pool)
    .await
    .unwrap();

    let again: Vec<String> = values.iter().step_by(8).cloned().collect();
    let again_kinds = vec!["email".to_owned(); again.len()];
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at) \
         SELECT k, v, $3, 'segment', now(), now() + interval '1 minute' \
         FROM unnest($1::text[], $2::text[]) AS u(k, v) \
         ON CONFLICT (kind, value) DO UPDATE SET profile_id = EXCLUDED.profile_id, \
             last_seen_at = GREATEST(profile_identifier.last_seen_at, EXCLUDED.last_seen_at), \
             seen_count = profile_identifier.seen_count + 1",
    )
    .bind(&again_kinds)
    .bind(&again)
    .bind(profile)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO identity_identifier (kind, value, last_event_at, last_event_id, partners) \
         SELECT k, v, now() + interval '1 minute', gen_random_uuid(), '{\"phone\": [1, 2, 3]}'::jsonb \
         FROM unnest($1::text[], $2::text[]) AS u(k, v) \
         ON CONFLICT (kind, value) DO UPDATE SET last_event_at = EXCLUDED.last_event_at, \
             last_event_id = EXCLUDED.last_event_id, partners = EXCLUDED.partners",
    )
    .bind(&again_kinds)
    .bind(&again)
    .execute(&mut *tx)
    .await
    .unwrap();
    // This transaction's own counts, exact (not the collector's delayed totals).
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables \
         WHERE relname IN ('profile_identifier', 'identity_identifier') ORDER BY relname",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(counts.len(), 2, "{counts:?}");
    for (table, updated, hot) in &counts {
        assert_eq!(
            *updated,
            again.len() as i64,
            "{table}: every re-sighting updates"
        );
        assert!(
            *hot * 10 >= *updated * 9,
            "{table}: {hot} of {updated} re-sightings updated in place"
        );
    }
}

/// The profile list's last-seen window and the raw events received since a time are
/// answered by an index after the hot path's index diet (migrations `20261215100000`,
/// `20261215100001`): `customer_profile_last_seen` (and the unread
/// `customer_profile_created`) are gone and the window, written
/// with the list's key as the API writes it (`COALESCE(last_seen_at, '-infinity')`),
/// reads `customer_profile_list_last_seen` whatever the sort, a narrow open window
/// included (the planner knows the key's distribution from the extended statistics,
/// not a guess); `received_at` has a block-range index, which `ctl republish --hours`
/// and the pipeline benchmark's drain count read.
#[tokio::test]
async fn the_last_seen_window_and_received_since_read_the_remaining_indexes() {
    let (_db, pool) = migrated().await;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'public' \
           AND tablename IN ('customer_profile', 'customer_raw_event') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for unread in ["customer_profile_last_seen", "customer_profile_created"] {
        assert!(
            !indexes.iter().any(|(name, _)| name == unread),
            "every profile version writes an entry into {unread}, which no query needs"
        );
    }
    let received = indexes
        .iter()
        .find(|(name, _)| name == "customer_raw_event_received")
        .map(|(_, def)| def.as_str());
    assert!(
        received.is_some_and(|def| def.contains("USING brin (received_at)")),
        "received_at: {received:?}"
    );

    let mut tx = pool.begin().await.unwrap();
    // 20,000 profiles last seen an hour apart (every 50th never), the raw events of the
    // last 20,000 minutes in the order they were received, and statistics that say so.
    for statement in [
        "INSERT INTO customer_profile (id, last_seen_at, total_spent, orders_count) \
         SELECT gen_random_uuid(), \
                CASE WHEN g % 50 = 0 THEN NULL ELSE now() - g * interval '1 hour' END, \
                (g * 7919) % 1000, g % 5 \
         FROM generate_series(1, 20000) g",
        "INSERT INTO customer_raw_event (id, source, source_event_id, kind, received_at, payload) \
         SELECT gen_random_uuid(), 'segment', 'e' || g, 'track', \
                now() - (20000 - g) * interval '1 minute', '{}'::jsonb \
         FROM generate_series(1, 20000) g",
        "ANALYZE customer_profile",
        "ANALYZE customer_raw_event",
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    let key = "COALESCE(p.last_seen_at, '-infinity'::timestamptz)";
    for (query, index) in [
        (
            format!(
                "EXPLAIN SELECT p.id FROM customer_profile p WHERE p.merged_into IS NULL \
                 AND {key} >= now() - interval '48 hours' AND {key} < now() \
                 ORDER BY {key} DESC, p.id DESC LIMIT 51"
            ),
            "customer_profile_list_last_seen",
        ),
        (
            format!(
                "EXPLAIN SELECT p.id FROM customer_profile p WHERE p.merged_into IS NULL \
                 AND {key} >= now() - interval '48 hours' AND {key} < now() \
                 ORDER BY p.total_spent DESC, p.id DESC LIMIT 51"
            ),
            "customer_profile_list_last_seen",
        ),
        (
            format!(
                "EXPLAIN SELECT p.id FROM customer_profile p WHERE p.merged_into IS NULL \
                 AND {key} >= now() - interval '48 hours' \
                 ORDER BY p.orders_count DESC, p.id DESC LIMIT 51"
            ),
            "customer_profile_list_last_seen",
        ),
        (
            format!(
                "EXPLAIN SELECT p.id FROM customer_profile p WHERE p.merged_into IS NULL \
                 AND {key} > '-infinity'::timestamptz \
                 AND {key} < now() - interval '19950 hours' \
                 ORDER BY p.total_spent DESC, p.id DESC LIMIT 51"
            ),
            "customer_profile_list_last_seen",
        ),
        (
            "EXPLAIN SELECT count(*) FROM customer_raw_event \
             WHERE received_at >= now() - interval '1 hour'"
                .to_owned(),
            "customer_raw_event_received",
        ),
    ] {
        assert_plan_uses(&mut tx, &query, index).await;
    }
    tx.rollback().await.unwrap();
}

/// The identifier index has no foreign key to `customer_profile` (issue 19: its check on
/// every new identifier row cost the merger 8–11 ms per 1,000 events); the resolver's
/// lock protocol keeps it from naming a missing profile
/// (`crates/identity/src/resolver/erase_race.rs`). Tombstones keep theirs.
#[tokio::test]
async fn only_tombstones_have_a_foreign_key_to_profiles() {
    let (_db, pool) = migrated().await;
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text FROM pg_constraint \
         WHERE contype = 'f' AND confrelid = 'customer_profile'::regclass ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        keys,
        [(
            "customer_profile".to_owned(),
            "customer_profile_merged_into_fkey".to_owned()
        )]
    );
}
