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

/// The plan Postgres makes for `sql` with the given literal arguments, as a custom plan
/// for those values (what a prepared statement's first executions get).
async fn plan_for(env: &TestEnv, sql: &str, args: &str) -> String {
    let mut conn = env.db.acquire().await.unwrap();
    sqlx::raw_sql(&format!("DEALLOCATE ALL; PREPARE q AS {sql}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE q({args})"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql("DEALLOCATE q")
        .execute(&mut *conn)
        .await
        .unwrap();
    plan.join("\n")
}

/// The Customer 360 refresh reads a batch's identifiers, orders and order lines with one
/// index probe per key even where the tables have no statistics yet (a fresh brand, a
/// burst before autovacuum): planned as `= ANY` of the batch's keys, those reads were
/// sequential scans comparing every row with every key.
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
        "SELECT count(*) FROM pg_stats WHERE tablename IN ('orders', 'order_items', 'profile_identifier')",
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
    let array = |ids: &[Uuid]| {
        let list: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        format!("'{{{}}}'::uuid[]", list.join(","))
    };
    let plans = [
        (
            plan_for(
                &env,
                storage::customer360::IDENTIFIERS_OF_PROFILES,
                &array(&profiles),
            )
            .await,
            "profile_identifier",
        ),
        (
            plan_for(
                &env,
                storage::customer360::ORDERS_OF_PROFILES,
                &format!("{}, 20", array(&profiles)),
            )
            .await,
            "orders",
        ),
    ];
    let orders: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM orders WHERE profile_id = ANY($1) ORDER BY id")
            .bind(&profiles)
            .fetch_all(&env.db)
            .await
            .unwrap();
    let lines = plan_for(&env, storage::customer360::LINES_OF_ORDERS, &array(&orders)).await;
    for (plan, table) in plans
        .iter()
        .map(|(p, t)| (p, *t))
        .chain([(&lines, "order_items")])
    {
        assert!(
            !plan.contains(&format!("Seq Scan on {table}")),
            "{table} is scanned whole:\n{plan}"
        );
    }

    // The same rows as before: every identifier and order of the batch, each order with
    // its line, newest first; at most `per_profile` orders of each.
    let identifiers = storage::customer360::identifiers(&env.db, &profiles)
        .await
        .unwrap();
    assert_eq!(identifiers.len(), 500);
    assert!(identifiers.windows(2).all(|w| {
        (w[0].1.kind.as_str(), &w[0].1.value) <= (w[1].1.kind.as_str(), &w[1].1.value)
    }));
    let all = storage::customer360::orders(&env.db, &profiles, i64::MAX)
        .await
        .unwrap();
    assert_eq!(all.len(), 500);
    assert!(all.iter().all(|(_, o)| o.items.len() == 1));
    assert!(all.windows(2).all(|w| w[0].1.placed_at >= w[1].1.placed_at));
    let newest = storage::customer360::orders(&env.db, &profiles, 1)
        .await
        .unwrap();
    assert_eq!(newest.len(), 250);
    assert!(newest.iter().all(|(_, o)| o.order_id.ends_with("-1")));
}
