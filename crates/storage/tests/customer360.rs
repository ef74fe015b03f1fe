//! Customer 360 documents: built from Postgres, read through the Redis cache, merged-away
//! ids resolving to their survivor.

use std::time::Duration;

use domain::profile::{BrowsingEntry, DecayedWeight, ProfileState};
use domain::{Channel, EventType};
use redis::AsyncCommands as _;
use storage::customer360::{Customer360Cache, cache_key};
use test_support::TestEnv;
use uuid::Uuid;

async fn seed_profile(env: &TestEnv) -> (Uuid, Uuid) {
    let live = Uuid::now_v7();
    let tombstone = Uuid::now_v7();
    let now = chrono::Utc::now();
    let mut state = ProfileState {
        events_count: 3,
        ..ProfileState::default()
    };
    state.recent_browsing.push(BrowsingEntry {
        event_type: EventType::ProductViewed,
        occurred_at: now,
        sku: Some("TEE-1".into()),
        name: Some("Tee".into()),
        category: Some("Apparel".into()),
        url: None,
    });
    state.category_weights.insert(
        "Apparel".into(),
        DecayedWeight {
            weight: 3.0,
            as_of: now,
        },
    );
    state.category_weights.insert(
        "Shoes".into(),
        DecayedWeight {
            weight: 1.0,
            as_of: now,
        },
    );
    sqlx::query(
        "INSERT INTO customer_profile (id, display_name, orders_count, total_spent, currency, \
         channels, state, first_seen_at, last_seen_at) \
         VALUES ($1, 'Asha Rao', 2, 1500.50, 'INR', '{web,pos}', $2, $3, $3)",
    )
    .bind(live)
    .bind(sqlx::types::Json(&state))
    .bind(now)
    .execute(&env.db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO customer_profile (id, merged_into, merged_at) VALUES ($1, $2, now())")
        .bind(tombstone)
        .bind(live)
        .execute(&env.db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at) \
         VALUES ('email', 'asha@mail.in', $1, 'shopify', now(), now())",
    )
    .bind(live)
    .execute(&env.db)
    .await
    .unwrap();
    test_support::seed::attributed_order(
        &env.db,
        live,
        "1001",
        "1500.50".parse().unwrap(),
        "Apparel",
        now,
    )
    .await
    .unwrap();
    (live, tombstone)
}

#[tokio::test]
async fn documents_are_built_cached_and_follow_tombstones() {
    let env = TestEnv::new().await;
    let (live, tombstone) = seed_profile(&env).await;
    let cache = Customer360Cache::new(
        env.db.clone(),
        env.redis.clone(),
        env.prefix(),
        Duration::from_secs(60),
    );

    let first = cache.load(live).await.unwrap().unwrap();
    assert!(!first.cached && first.merged_into.is_none());
    let doc = &first.doc;
    assert_eq!(doc.profile_id, live);
    assert_eq!(doc.total_orders, 2);
    assert_eq!(doc.lifetime_value.to_string(), "1500.50");
    assert_eq!(doc.average_order_value.to_string(), "750.25");
    assert_eq!(doc.channels, vec![Channel::Web, Channel::Pos]);
    assert_eq!(doc.identifiers[0].value, "asha@mail.in");
    assert_eq!(doc.purchase_history[0].items[0].sku, "TEE-1");
    assert_eq!(doc.browsing_history.len(), 1);
    assert_eq!(doc.merged_profile_ids, vec![tombstone]);
    let affinity = &doc.category_affinity;
    assert!((affinity["Apparel"] - 0.75).abs() < 1e-6, "{affinity:?}");

    let second = cache.load(live).await.unwrap().unwrap();
    assert!(second.cached);
    let via_tombstone = cache.load(tombstone).await.unwrap().unwrap();
    assert_eq!(via_tombstone.merged_into, Some(live));
    assert_eq!(via_tombstone.doc.profile_id, live);

    // A refresh sees new facts; an emptied Redis refills from Postgres.
    sqlx::query("UPDATE customer_profile SET orders_count = 3 WHERE id = $1")
        .bind(live)
        .execute(&env.db)
        .await
        .unwrap();
    assert_eq!(cache.refresh(live).await.unwrap().unwrap().total_orders, 3);
    assert_eq!(cache.load(live).await.unwrap().unwrap().doc.total_orders, 3);
    let mut redis = env.redis.clone();
    redis
        .del::<_, ()>(cache_key(env.prefix(), live))
        .await
        .unwrap();
    let refilled = cache.load(live).await.unwrap().unwrap();
    assert!(!refilled.cached);
    let ttl: i64 = redis.ttl(cache_key(env.prefix(), live)).await.unwrap();
    assert!(ttl > 0 && ttl <= 60, "documents expire: {ttl}");

    assert!(cache.load(Uuid::now_v7()).await.unwrap().is_none());
    cache.invalidate(&[live]).await.unwrap();
    assert!(!cache.load(live).await.unwrap().unwrap().cached);
}

/// A `state` the current build cannot read (written by another build) gives a document
/// with empty facts, not a failed refresh: the state is parsed straight into its type,
/// and a failure there falls back to the default, as the `Value` round trip did.
#[tokio::test]
async fn an_unreadable_state_builds_a_document_with_empty_facts() {
    let env = TestEnv::new().await;
    let (live, _) = seed_profile(&env).await;
    sqlx::query(
        "UPDATE customer_profile SET state = '{\"events_count\": \"many\", \"recent_browsing\": 7}' \
         WHERE id = $1",
    )
    .bind(live)
    .execute(&env.db)
    .await
    .unwrap();
    let docs = storage::customer360::build_many(&env.db, &[live])
        .await
        .unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].total_orders, 2);
    assert!(docs[0].browsing_history.is_empty());
    assert!(docs[0].category_affinity.is_empty());
}

/// A document lists every tombstone behind its profile, also one reached through a
/// chain (the writer keeps chains flat, but older rows may hold one), each once.
#[tokio::test]
async fn documents_list_tombstones_through_chains() {
    let env = TestEnv::new().await;
    let (live, tombstone) = seed_profile(&env).await;
    let behind = Uuid::now_v7();
    sqlx::query("INSERT INTO customer_profile (id, merged_into, merged_at) VALUES ($1, $2, now())")
        .bind(behind)
        .bind(tombstone)
        .execute(&env.db)
        .await
        .unwrap();
    let docs = storage::customer360::build_many(&env.db, &[live, tombstone])
        .await
        .unwrap();
    assert_eq!(docs.len(), 1);
    let mut expected = vec![tombstone, behind];
    expected.sort();
    assert_eq!(docs[0].merged_profile_ids, expected);
}

/// Sequential scans of the tables a Customer 360 document reads by key, as the server
/// counts them (this connection's own counts flushed first).
async fn key_table_seq_scans(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT COALESCE(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables \
         WHERE relname IN ('orders', 'order_items', 'profile_identifier')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// The Customer 360 refresh reads a batch's identifiers, orders and order lines through
/// their indexes even where the tables have no statistics yet (a fresh brand, a burst
/// before autovacuum): left to the planner, a few hundred keys on such tables were
/// planned as whole-table scans comparing every row with every key.
#[tokio::test]
async fn the_refresh_reads_a_batch_through_the_indexes_without_statistics() {
    let env = TestEnv::new().await;
    // 3,000 people with two identifiers and two one-line orders each, never analysed.
    sqlx::raw_sql(
        "INSERT INTO customer_profile (id) \
             SELECT md5('p' || n)::uuid FROM generate_series(1, 3000) n; \
         INSERT INTO profile_identifier (kind, value, profile_id, first_seen_at, last_seen_at) \
             SELECT k, k || n, md5('p' || n)::uuid, now(), now() \
             FROM generate_series(1, 3000) n, (VALUES ('email'), ('phone')) AS v(k); \
         INSERT INTO orders (id, source, external_order_id, profile_id, event_id, status, \
                             channel, placed_at, currency, total) \
             SELECT md5('o' || n || '-' || j)::uuid, 'shopify', n || '-' || j, md5('p' || n)::uuid, \
                    gen_random_uuid(), 'placed', 'web', now() - make_interval(days => j), 'INR', 10 \
             FROM generate_series(1, 3000) n, generate_series(1, 2) j; \
         INSERT INTO order_items (order_id, line_no, sku, name, qty, price) \
             SELECT id, 1, 'SKU', 'Item', 1, 10 FROM orders;",
    )
    .execute(&env.db)
    .await
    .unwrap();
    let analysed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stats \
         WHERE tablename IN ('orders', 'order_items', 'profile_identifier')",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(analysed, 0, "the test needs tables without statistics");
    let profiles: Vec<Uuid> =
        sqlx::query_scalar("SELECT md5('p' || n)::uuid FROM generate_series(1, 3000, 12) n")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(profiles.len(), 250);

    // One connection, so the counts read after the build include the build's.
    let db = storage::connect(env.settings.database_url.as_str(), 1)
        .await
        .unwrap();
    let before = key_table_seq_scans(&mut db.acquire().await.unwrap()).await;
    let documents = storage::customer360::build_many(&db, &profiles)
        .await
        .unwrap();
    let after = key_table_seq_scans(&mut db.acquire().await.unwrap()).await;
    assert_eq!(after - before, 0, "the batch's tables were scanned whole");

    assert_eq!(documents.len(), 250);
    for d in &documents {
        assert_eq!(d.identifiers.len(), 2);
        assert_eq!(d.purchase_history.len(), 2);
        assert!(d.purchase_history[0].placed_at > d.purchase_history[1].placed_at);
        assert!(d.purchase_history.iter().all(|o| o.items.len() == 1));
    }
}
