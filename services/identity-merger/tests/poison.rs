//! Poison isolation and money limits in the merger, on the real Postgres and Redis.
//!
//! - One event Postgres refuses (a trigger raising a data exception for it, as a numeric
//!   overflow would) is dead-lettered alone, with the reason; every other event of its
//!   batch reaches its profile once.
//! - An outage (every statement cancelled, SQLSTATE 57014) is waited out: nothing is
//!   dead-lettered, no delivery is counted, even with `STREAM_MAX_DELIVERIES=1`.
//! - Orders of the largest amount ingest admits attach without a dead letter; a profile's
//!   total spent is exact, or saturated at `domain::MAX_TOTAL` when no column could hold
//!   the sum.

use chrono::{DateTime, TimeZone, Utc};
use domain::{
    Channel, EventType, Identifier, IdentifierKind, NormalizedEvent, Order, OrderItem, OrderStatus,
    Source,
};
use rust_decimal::Decimal;
use streams::{Envelope, Streams, Topic};
use test_support::TestEnv;
use uuid::Uuid;

fn at(n: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap() + chrono::Duration::seconds(i64::from(n))
}

/// A page view by person `person`, the `n`th event.
fn view(n: u32, person: u32) -> NormalizedEvent {
    NormalizedEvent {
        event_id: Uuid::from_u128(0xE000_0000 + u128::from(n)),
        occurred_at: at(n),
        received_at: at(n),
        source: Source::Segment,
        integration_id: None,
        channel: Channel::Web,
        event_type: EventType::PageViewed,
        name: None,
        identifiers: vec![
            Identifier::parse(IdentifierKind::Email, &format!("p{person}@mail.in"), "IN").unwrap(),
        ],
        traits: Default::default(),
        properties: Default::default(),
        order: None,
    }
}

/// An order of `total` by person `person`, the `n`th event.
fn order(n: u32, person: u32, total: Decimal) -> NormalizedEvent {
    let mut e = view(n, person);
    e.source = Source::Shopify;
    e.event_type = EventType::OrderPlaced;
    e.order = Some(Order {
        order_id: format!("order-{n}"),
        total,
        currency: "INR".into(),
        status: OrderStatus::Paid,
        store: None,
        items: vec![OrderItem {
            sku: "TEE-1".into(),
            name: "Tee".into(),
            category: Some("Apparel".into()),
            qty: 1,
            price: total,
        }],
    });
    e
}

/// Stores the events as the normalizer does and publishes them.
async fn feed(env: &TestEnv, events: &[NormalizedEvent]) {
    identity::seed::store_events(&env.db, events).await.unwrap();
    let envs: Vec<Envelope<&NormalizedEvent>> = events
        .iter()
        .map(|e| Envelope::new(e.event_id, "normalizer", e.event_type.as_str(), e))
        .collect();
    streams(env)
        .publish_many(Topic::EventsNormalized, &envs)
        .await
        .unwrap();
}

fn streams(env: &TestEnv) -> Streams {
    Streams::new(env.redis.clone(), env.prefix(), 1_000_000)
}

/// Events attached to a profile, and the sum of the profiles' event counts.
async fn resolved(env: &TestEnv) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM normalized_event WHERE profile_id IS NOT NULL), \
                (SELECT COALESCE(sum((state->>'events_count')::bigint), 0)::bigint \
                 FROM customer_profile WHERE merged_into IS NULL)",
    )
    .fetch_one(&env.db)
    .await
    .unwrap()
}

/// How often each pending entry of the merger's group was delivered (none before the
/// group exists).
async fn delivery_counts(env: &TestEnv) -> Vec<usize> {
    let pending: redis::RedisResult<redis::streams::StreamPendingCountReply> =
        redis::cmd("XPENDING")
            .arg(streams(env).key(Topic::EventsNormalized))
            .arg(identity_merger::GROUP)
            .arg("-")
            .arg("+")
            .arg(100)
            .query_async(&mut env.redis.clone())
            .await;
    match pending {
        Ok(p) => p.ids.iter().map(|p| p.times_delivered).collect(),
        Err(e) if e.code() == Some("NOGROUP") => Vec::new(),
        Err(e) => panic!("XPENDING: {e}"),
    }
}

async fn wait_resolved(env: &TestEnv, n: i64) {
    test_support::eventually(120, "the events resolved", || async {
        (resolved(env).await.0 >= n).then_some(())
    })
    .await;
}

/// Installs a trigger that makes Postgres refuse to attach `event` with `sqlstate`
/// while `test_fault` has a row (the table starts with one).
async fn refuse(env: &TestEnv, event: Option<Uuid>, sqlstate: &str) {
    sqlx::query("CREATE TABLE test_fault (on_event UUID)")
        .execute(&env.db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO test_fault VALUES ($1)")
        .bind(event)
        .execute(&env.db)
        .await
        .unwrap();
    // SQLSTATEs are not parameters of DDL; this one is a literal of the test.
    assert!(sqlstate.chars().all(|c| c.is_ascii_alphanumeric()));
    sqlx::query(&format!(
        "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.profile_id IS NOT NULL AND EXISTS \
              (SELECT 1 FROM test_fault f WHERE f.on_event IS NULL OR f.on_event = NEW.event_id) THEN \
             RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{sqlstate}'; \
           END IF; \
           RETURN NEW; \
         END $$"
    ))
    .execute(&env.db)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER test_refuse BEFORE UPDATE ON normalized_event \
         FOR EACH ROW EXECUTE FUNCTION test_refuse()",
    )
    .execute(&env.db)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_event_is_dead_lettered_alone_and_its_batch_mates_reach_their_profiles() {
    let env = TestEnv::new().await;
    let events: Vec<NormalizedEvent> = (0..40).map(|n| view(n, n % 7)).collect();
    let culprit = events[23].event_id;
    refuse(&env, Some(culprit), "22003").await;
    // Published before the merger starts, so the 40 arrive as one batch.
    feed(&env, &events).await;
    env.spawn(identity_merger::run).await;

    wait_resolved(&env, 39).await;
    let s = streams(&env);
    let dead = test_support::eventually(60, "the culprit dead-lettered", || async {
        let dead = s.dead_letters(Topic::EventsNormalized, 10).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].body.contains(&culprit.to_string()), "{dead:?}");
    assert!(dead[0].error.contains("refused by the test"), "{dead:?}");
    assert_eq!(dead[0].deliveries, 1, "dead-lettered on its first delivery");
    // Each innocent event attached once, the culprit not at all.
    assert_eq!(resolved(&env).await, (39, 39));
    let culprit_profile: Option<Uuid> =
        sqlx::query_scalar("SELECT profile_id FROM normalized_event WHERE event_id = $1")
            .bind(culprit)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(culprit_profile, None);
    // Once the cause is fixed, a replay attaches it.
    sqlx::query("DELETE FROM test_fault")
        .execute(&env.db)
        .await
        .unwrap();
    s.replay_all_dead_letters(Topic::EventsNormalized)
        .await
        .unwrap();
    wait_resolved(&env, 40).await;
    assert_eq!(resolved(&env).await, (40, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_waited_out_without_a_dead_letter_or_a_counted_delivery() {
    let env = TestEnv::with_settings([("STREAM_MAX_DELIVERIES", "1".into())]).await;
    let events: Vec<NormalizedEvent> = (0..20).map(|n| view(n, n % 5)).collect();
    // Every attach is cancelled as a statement timeout would cancel it.
    refuse(&env, None, "57014").await;
    feed(&env, &events).await;
    env.spawn(identity_merger::run).await;

    let s = streams(&env);
    // The merger has the entries in hand, delivered once, and keeps them through several
    // pauses (well past the one-second claim timeout of test envs).
    test_support::eventually(60, "the entries delivered", || async {
        (delivery_counts(&env).await.len() == 20).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let counts = delivery_counts(&env).await;
    assert_eq!(counts.len(), 20);
    assert!(
        counts.iter().all(|&n| n == 1),
        "an outage counted a delivery: {counts:?}"
    );
    assert_eq!(s.dlq_len(Topic::EventsNormalized).await.unwrap(), 0);
    assert_eq!(resolved(&env).await, (0, 0));

    // The outage ends: everything resolves, once, and nothing was dead-lettered.
    sqlx::query("DELETE FROM test_fault")
        .execute(&env.db)
        .await
        .unwrap();
    wait_resolved(&env, 20).await;
    assert_eq!(resolved(&env).await, (20, 20));
    assert_eq!(s.dlq_len(Topic::EventsNormalized).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_orders_attach_and_profile_totals_are_exact_or_saturated() {
    let env = TestEnv::new().await;
    let mut events = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    // Person 1: normal orders and two of the largest amount ingest admits.
    let normal = [
        Decimal::new(10_000, 2),
        Decimal::new(25_050, 2),
        Decimal::new(9_999, 2),
    ];
    for total in normal {
        events.push(order(next(), 1, total));
    }
    events.push(order(next(), 1, domain::MAX_AMOUNT));
    events.push(view(next(), 2));
    events.push(order(next(), 1, domain::MAX_AMOUNT));
    // Person 3: more orders of the largest amount than any column can sum.
    for _ in 0..1001 {
        events.push(order(next(), 3, domain::MAX_AMOUNT));
    }
    // Person 4: an ordinary customer among them.
    events.push(order(next(), 4, Decimal::new(49_900, 2)));
    let total = events.len() as i64;
    feed(&env, &events).await;
    env.spawn(identity_merger::run).await;

    wait_resolved(&env, total).await;
    assert_eq!(resolved(&env).await, (total, total));
    let s = streams(&env);
    assert_eq!(s.dlq_len(Topic::EventsNormalized).await.unwrap(), 0);
    let spent = |person: u32| {
        let db = env.db.clone();
        async move {
            sqlx::query_as::<_, (i32, Decimal)>(
                "SELECT p.orders_count, p.total_spent FROM customer_profile p \
                 JOIN profile_identifier i ON i.profile_id = p.id \
                 WHERE i.kind = 'email' AND i.value = $1 AND p.merged_into IS NULL",
            )
            .bind(format!("p{person}@mail.in"))
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    let exact = normal.iter().sum::<Decimal>() + domain::MAX_AMOUNT * Decimal::from(2);
    assert_eq!(spent(1).await, (5, exact));
    assert_eq!(spent(3).await, (1001, domain::MAX_TOTAL), "saturated");
    assert_eq!(spent(4).await, (1, Decimal::new(49_900, 2)));
}
