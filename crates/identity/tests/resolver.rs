//! The resolver on the real Postgres and Redis: profiles, merges, orders, the cache,
//! redelivery, and late events replayed into canonical order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use domain::{
    EventType, Identifier, IdentifierKind, NormalizedEvent, Order, OrderItem, OrderStatus, Source,
};
use identity::Observation;
use identity::engine::{Constraints, Unsettled};
use identity::memory::{MemoryResolver, partition_of};
use identity::resolver::{ReplayCause, Resolver};
use redis::AsyncCommands as _;
use rust_decimal::Decimal;
use sqlx::Row;
use test_support::TestEnv;
use test_support::events::{self, id};
use uuid::Uuid;

fn event(n: u32, ids: Vec<Identifier>) -> NormalizedEvent {
    events::event(n).identifiers(ids).build()
}

/// An event carrying `ids`, naming its person `name` (a `first_name` trait) if given.
fn named(n: u32, ids: &[(IdentifierKind, &str)], name: Option<&str>) -> NormalizedEvent {
    events::event(n).ids(ids).named(name).build()
}

fn order_event(
    n: u32,
    ids: Vec<Identifier>,
    order_id: &str,
    total: i64,
    t: EventType,
) -> NormalizedEvent {
    let mut e = event(n, ids);
    e.source = Source::Shopify;
    e.event_type = t;
    e.order = Some(Order {
        order_id: order_id.into(),
        total: Decimal::new(total, 0),
        currency: "INR".into(),
        status: OrderStatus::Paid,
        store: None,
        items: vec![OrderItem {
            sku: "TEE-1".into(),
            name: "Tee".into(),
            category: Some("Apparel".into()),
            qty: 1,
            price: Decimal::new(total, 0),
        }],
    });
    e
}

/// Which events share a profile; checks on the way that no identifier row names a
/// profile that is missing or merged away.
async fn partition(env: &TestEnv) -> BTreeSet<BTreeSet<Uuid>> {
    let stray = env.stray_identifier_rows().await;
    assert!(
        stray.is_empty(),
        "identifier rows name no live profile: {stray:?}"
    );
    let rows = sqlx::query("SELECT event_id, profile_id FROM normalized_event")
        .fetch_all(&env.db)
        .await
        .unwrap();
    partition_of(rows.iter().map(|r| {
        (
            r.get("event_id"),
            r.get::<Option<Uuid>, _>("profile_id")
                .expect("every event resolved"),
        )
    }))
}

/// One buyer seen by cookie, e-mail and phone: two orders (500 and 300), a refund of
/// 200 carrying no customer identifier (it still finds the order's profile); the phone
/// profile merges into the cookie's.
fn one_buyer() -> Vec<NormalizedEvent> {
    let email = id(IdentifierKind::Email, "asha@mail.in");
    let phone = id(IdentifierKind::Phone, "+919812345678");
    let cookie = id(IdentifierKind::CookieId, "ck-1");
    vec![
        event(1, vec![cookie.clone()]),
        order_event(
            2,
            vec![email.clone(), cookie],
            "1001",
            500,
            EventType::OrderPlaced,
        ),
        event(3, vec![phone.clone()]),
        order_event(4, vec![phone, email], "1002", 300, EventType::OrderPlaced),
        order_event(5, vec![], "1001", 200, EventType::RefundIssued),
    ]
}

#[tokio::test]
async fn events_make_profiles_merges_and_orders() {
    let env = TestEnv::new().await;
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    let events = one_buyer();
    identity::seed::store_events(&env.db, &events)
        .await
        .unwrap();
    let report = resolver.resolve(&events).await.unwrap();
    assert_eq!(report.resolved, 5);
    assert_eq!(
        report.merges, 1,
        "the phone profile merges into the cookie's"
    );
    let parts = partition(&env).await;
    assert_eq!(parts.len(), 1, "{parts:?}");

    let live: Vec<(Uuid, i32, Decimal)> = sqlx::query_as(
        "SELECT id, orders_count, total_spent FROM customer_profile WHERE merged_into IS NULL",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(live.len(), 1);
    let (profile, orders, spent) = live[0];
    assert_eq!(
        profile,
        resolver.engine().ids.profile_id(events[0].event_id)
    );
    assert_eq!(
        (orders, spent),
        (2, Decimal::new(600, 0)),
        "500 + 300 - 200 refunded"
    );
    let tombstones: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_profile WHERE merged_into = $1")
            .bind(profile)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(tombstones, 1);
    let history: (String, Vec<Uuid>) =
        sqlx::query_as("SELECT rule, absorbed_ids FROM merge_history")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(history.0, "strong_identifier");
    let order_owners: Vec<Option<Uuid>> = sqlx::query_scalar("SELECT profile_id FROM orders")
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert!(order_owners.iter().all(|p| *p == Some(profile)));

    // The document is in the cache, and a prediction request is queued.
    let mut redis = env.redis.clone();
    let doc: Option<String> = redis
        .get(storage::customer360::cache_key(env.prefix(), profile))
        .await
        .unwrap();
    let doc: domain::Customer360 = serde_json::from_str(&doc.expect("cached")).unwrap();
    assert_eq!(doc.total_orders, 2);
    assert_eq!(
        doc.identifiers.len(),
        3,
        "order references are not listed: {:?}",
        doc.identifiers
    );
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM identity_prediction_outbox")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(queued, 1);

    // Redelivery changes nothing.
    let again = resolver.resolve(&events).await.unwrap();
    assert_eq!(
        (again.resolved, again.already_resolved, again.merges),
        (0, 5, 0)
    );
    assert_eq!(partition(&env).await, parts);
}

/// Every tombstone with where it points.
async fn tombstones(env: &TestEnv) -> BTreeMap<Uuid, Uuid> {
    sqlx::query_as::<_, (Uuid, Uuid)>(
        "SELECT id, merged_into FROM customer_profile WHERE merged_into IS NOT NULL",
    )
    .fetch_all(&env.db)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test]
async fn late_events_are_replayed_into_time_order() {
    let env = TestEnv::new().await;
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    let e = named;
    use IdentifierKind::*;
    let events = vec![
        e(1, &[(CookieId, "c1")], None),
        e(
            2,
            &[(CookieId, "c1"), (Email, "asha@mail.in")],
            Some("Asha"),
        ),
        e(
            3,
            &[(Email, "asha@mail.in"), (Phone, "+919812345678")],
            None,
        ),
        e(
            4,
            &[(Phone, "+919812345678"), (Email, "ravi@mail.in")],
            Some("Ravi"),
        ),
        e(
            5,
            &[(DeviceId, "d1"), (Email, "ravi@mail.in")],
            Some("Ravi"),
        ),
        e(
            6,
            &[(DeviceId, "d1"), (Email, "meena@mail.in")],
            Some("Meena"),
        ),
        e(7, &[(LoyaltyId, "L-1"), (Phone, "+919812345678")], None),
        e(8, &[(LoyaltyId, "L-1")], None),
    ];
    identity::seed::store_events(&env.db, &events)
        .await
        .unwrap();
    // Arrive backwards, one at a time: every event is late for the ones before it.
    let mut replays = 0;
    for ev in events.iter().rev() {
        replays += resolver
            .resolve(std::slice::from_ref(ev))
            .await
            .unwrap()
            .replays;
    }
    assert!(replays > 0);
    let engine = resolver.engine().clone();
    let expected = MemoryResolver::rebuild(
        engine.clone(),
        Constraints::default(),
        events.iter().map(Observation::of).collect(),
    );
    assert_eq!(partition(&env).await, expected.partition());
    let ids: HashMap<Uuid, Uuid> =
        sqlx::query_as::<_, (Uuid, Uuid)>("SELECT event_id, profile_id FROM normalized_event")
            .fetch_all(&env.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(
        &ids,
        expected.assignment(),
        "the same profile ids as time order gives"
    );
    // The profiles the backwards arrival created and retired are tombstones, each
    // pointing straight at the live profile holding the event that created it — the
    // table the in-memory resolver keeps for the same arrival order.
    let stored = tombstones(&env).await;
    assert!(!stored.is_empty(), "replays retired profiles");
    let mut streamed = MemoryResolver::new(engine, Constraints::default());
    for ev in events.iter().rev() {
        streamed.ingest(Observation::of(ev));
    }
    assert_eq!(stored, streamed.redirects());
    for (tombstone, into) in &stored {
        let creator = events
            .iter()
            .find(|e| resolver.engine().ids.profile_id(e.event_id) == *tombstone)
            .expect("created by an event");
        assert_eq!(ids[&creator.event_id], *into, "{tombstone}");
    }

    // A tombstone pointing elsewhere (as older versions could leave one) is settled by a
    // rebuild: back at the holder of its creating event, nothing else moved.
    let (&tombstone, &into) = stored.iter().next().unwrap();
    let elsewhere = ids
        .values()
        .copied()
        .find(|p| *p != into)
        .expect("more than one live profile");
    sqlx::query("UPDATE customer_profile SET merged_into = $2 WHERE id = $1")
        .bind(tombstone)
        .bind(elsewhere)
        .execute(&env.db)
        .await
        .unwrap();
    let report = resolver.rebuild().await.unwrap();
    assert_eq!(report.repointed_tombstones, 1, "{report:?}");
    assert_eq!(report.moved_events, 0, "{report:?}");
    assert_eq!(report.retired_profiles, 0, "{report:?}");
    let settled = tombstones(&env).await;
    assert_eq!(settled, stored);
    // The identifier index agrees with the profiles.
    let holders: Vec<(String, String, Uuid)> =
        sqlx::query_as("SELECT kind, value, profile_id FROM profile_identifier")
            .fetch_all(&env.db)
            .await
            .unwrap();
    for (kind, value, p) in holders {
        let ident = Identifier {
            kind: kind.parse().unwrap(),
            value,
        };
        assert_eq!(expected.graph.identifiers[&ident].owner, Some(p), "{ident}");
    }
}

/// Where a row of `table` physically is (a rewritten row moves).
async fn place(env: &TestEnv, table: &str, filter: &str, bind: Uuid) -> String {
    sqlx::query_scalar(&format!(
        "SELECT ctid::text FROM {table} WHERE {filter} = $1"
    ))
    .bind(bind)
    .fetch_one(&env.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_replay_rewrites_only_what_the_late_event_changed() {
    let env = TestEnv::new().await;
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    use IdentifierKind::*;
    let late = named(1, &[(CookieId, "c1")], None);
    let events = vec![
        named(
            2,
            &[(Email, "asha@mail.in"), (Phone, "+919812345678")],
            Some("Asha"),
        ),
        named(3, &[(Phone, "+919812345678"), (CookieId, "c1")], None),
        // Ravi typed Asha's phone: refused (name conflict), so Ravi's profile is in the
        // region of everything Asha's phone reaches, and comes out of its replay as it was.
        named(
            4,
            &[(Email, "ravi@mail.in"), (Phone, "+919812345678")],
            Some("Ravi"),
        ),
        named(5, &[(Email, "ravi@mail.in")], Some("Ravi")),
    ];
    let all: Vec<NormalizedEvent> = events.iter().cloned().chain([late.clone()]).collect();
    identity::seed::store_events(&env.db, &all).await.unwrap();
    for ev in &events {
        assert_eq!(
            resolver
                .resolve(std::slice::from_ref(ev))
                .await
                .unwrap()
                .replays,
            0
        );
    }
    let ravi = resolver.engine().ids.profile_id(events[2].event_id);
    let refused: i64 =
        sqlx::query_scalar("SELECT count(*) FROM identity_refused_link WHERE event_id = $1")
            .bind(events[2].event_id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(refused, 1, "Ravi's event refused Asha's phone");
    let version = |env: &TestEnv| {
        let db = env.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT version FROM customer_profile WHERE id = $1")
                .bind(ravi)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let ravi_version = version(&env).await;
    let ravi_profile = place(&env, "customer_profile", "id", ravi).await;
    let ravi_email = place(&env, "profile_identifier", "profile_id", ravi).await;
    let ravi_refused = place(
        &env,
        "identity_refused_link",
        "event_id",
        events[2].event_id,
    )
    .await;
    let asha_email: String = sqlx::query_scalar(
        "SELECT ctid::text FROM profile_identifier WHERE kind = 'email' AND value = 'asha@mail.in'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    for table in ["identity_prediction_outbox", "profile_change_outbox"] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&env.db)
            .await
            .unwrap();
    }

    let report = resolver.resolve(std::slice::from_ref(&late)).await.unwrap();
    assert_eq!(report.replays, 1, "{report:?}");
    // Canonical order: the late cookie event created the profile the others joined.
    let engine = resolver.engine().clone();
    let expected = MemoryResolver::rebuild(
        engine,
        Constraints::default(),
        all.iter().map(Observation::of).collect(),
    );
    assert_eq!(partition(&env).await, expected.partition());
    let asha = resolver.engine().ids.profile_id(late.event_id);
    assert_eq!(expected.assignment()[&events[0].event_id], asha);
    assert_eq!(expected.assignment()[&events[2].event_id], ravi);

    // Ravi's profile was replayed and came out the same: nothing of it was written.
    assert!(!report.changed.contains(&ravi), "{report:?}");
    assert!(report.changed.contains(&asha), "{report:?}");
    assert_eq!(version(&env).await, ravi_version);
    assert_eq!(
        place(&env, "customer_profile", "id", ravi).await,
        ravi_profile
    );
    assert_eq!(
        place(&env, "profile_identifier", "profile_id", ravi).await,
        ravi_email
    );
    assert_eq!(
        place(
            &env,
            "identity_refused_link",
            "event_id",
            events[2].event_id
        )
        .await,
        ravi_refused
    );
    for table in ["identity_prediction_outbox", "profile_change_outbox"] {
        let queued: Vec<Uuid> = sqlx::query_scalar(&format!("SELECT profile_id FROM {table}"))
            .fetch_all(&env.db)
            .await
            .unwrap();
        assert!(queued.contains(&asha), "{table}: {queued:?}");
        assert!(!queued.contains(&ravi), "{table}: {queued:?}");
    }
    // Asha's e-mail moved to the profile the late event created: rewritten in place.
    let (holder, count): (Uuid, i64) = sqlx::query_as(
        "SELECT profile_id, seen_count FROM profile_identifier WHERE kind = 'email' AND value = 'asha@mail.in'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!((holder, count), (asha, 1));
    let moved: String = sqlx::query_scalar(
        "SELECT ctid::text FROM profile_identifier WHERE kind = 'email' AND value = 'asha@mail.in'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_ne!(moved, asha_email);
    // The index agrees with the profiles, with the counts time order gives.
    let holders: Vec<(String, String, Uuid, i64)> =
        sqlx::query_as("SELECT kind, value, profile_id, seen_count FROM profile_identifier")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(holders.len(), 4, "{holders:?}");
    for (kind, value, p, n) in holders {
        let ident = Identifier {
            kind: kind.parse().unwrap(),
            value: value.clone(),
        };
        assert_eq!(expected.graph.identifiers[&ident].owner, Some(p), "{ident}");
        let seen = all
            .iter()
            .filter(|e| expected.assignment()[&e.event_id] == p && e.identifiers.contains(&ident))
            .count() as i64;
        assert_eq!(n, seen, "{ident}");
    }
}

/// A server-side Segment `alias` (no anonymousId): the previous id arrives in both the
/// forms it may have had, link-only, as the normaliser maps it. The anonymous visitor
/// and the signed-up user become one profile, the form nobody held is given to no one,
/// and arrival order and a rebuild from Postgres agree.
/// A fresh database with `events` stored, resolved one at a time in `arrival` order.
async fn resolved_one_by_one(events: &[NormalizedEvent], arrival: &[usize]) -> (TestEnv, Resolver) {
    let env = TestEnv::new().await;
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    identity::seed::store_events(&env.db, events).await.unwrap();
    for &i in arrival {
        resolver
            .resolve(std::slice::from_ref(&events[i]))
            .await
            .unwrap();
    }
    (env, resolver)
}

#[tokio::test]
async fn an_alias_joins_anonymous_browsing_to_the_user() {
    use IdentifierKind::*;
    let cookie = id(CookieId, "anon-9");
    let not_a_user = id(CustomerId, "segment:anon-9");
    let user = id(CustomerId, "segment:u-9");
    let mut alias = event(3, vec![cookie.clone(), not_a_user.clone(), user.clone()]);
    alias.event_type = EventType::Identify;
    alias.name = Some("alias".into());
    alias.properties.insert(
        domain::LINK_ONLY_PROPERTY.into(),
        serde_json::to_value([&cookie, &not_a_user]).unwrap(),
    );
    let events = vec![
        event(1, vec![cookie.clone()]),
        event(2, vec![user.clone(), id(Email, "asha@mail.in")]),
        alias,
    ];
    for arrival in [vec![0, 1, 2], vec![2, 1, 0]] {
        let (env, resolver) = resolved_one_by_one(&events, &arrival).await;
        let parts = partition(&env).await;
        assert_eq!(parts.len(), 1, "one person: {parts:?}");
        let held: Vec<(String, String)> =
            sqlx::query_as("SELECT kind, value FROM profile_identifier ORDER BY kind, value")
                .fetch_all(&env.db)
                .await
                .unwrap();
        assert!(
            !held.contains(&("customer_id".into(), not_a_user.value.clone())),
            "the previous id's other form is nobody's: {held:?}"
        );
        let rebuilt = resolver.rebuild().await.unwrap();
        assert_eq!(rebuilt.events, 3);
        assert_eq!(partition(&env).await, parts, "a rebuild agrees");
    }
}

/// Events published without a row (the normalizer's path) are stored by the resolver,
/// attached, with the columns a seed stores; two resolvers handed the same events at
/// once (a redelivery racing the first delivery) store and count each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unstored_events_are_stored_attached_once_by_racing_resolvers() {
    let mut events = one_buyer();
    // No identifier at all: no lock orders the two resolvers on it.
    events.push(event(6, vec![]));
    events[0]
        .properties
        .insert("path".into(), serde_json::json!("/kurtas"));

    let seeded = TestEnv::new().await;
    identity::seed::store_events(&seeded.db, &events)
        .await
        .unwrap();
    let report = Resolver::new(seeded.db.clone(), seeded.redis.clone(), &seeded.settings)
        .await
        .unwrap()
        .resolve(&events)
        .await
        .unwrap();
    assert_eq!(report.stored, 0, "a seed stored the rows: they are updated");

    let env = TestEnv::new().await;
    // What the normalizer publishes (a refund carries its order's stored status).
    let published = identity::seed::store_effects(&env.db, &events)
        .await
        .unwrap();
    let rows = |db: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT concat_ws(' | ', event_id, occurred_at, received_at, source, integration_id, channel, \
                    type, name, identifiers::text, traits::text, properties::text, order_data::text, \
                    profile_id, resolved_at IS NOT NULL) \
             FROM normalized_event ORDER BY event_id",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    };
    assert!(
        rows(env.db.clone()).await.is_empty(),
        "no row before the merger"
    );
    for _ in 0..3 {
        let a = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
            .await
            .unwrap();
        let b = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
            .await
            .unwrap();
        let (ra, rb) = tokio::join!(a.resolve(&published), b.resolve(&published));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra.stored + rb.stored <= events.len(), "{ra:?} {rb:?}");
    }
    assert_eq!(
        rows(env.db.clone()).await,
        rows(seeded.db.clone()).await,
        "stored attached = stored first, attached after"
    );
    let (counted, orders, spent): (i64, i64, Decimal) = sqlx::query_as(
        "SELECT sum((state->>'events_count')::bigint)::bigint, sum(orders_count)::bigint, sum(total_spent) \
         FROM customer_profile WHERE merged_into IS NULL",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(counted, events.len() as i64, "each event counted once");
    assert_eq!((orders, spent), (2, Decimal::new(600, 0)));
    let seen: i64 = sqlx::query_scalar(
        "SELECT seen_count FROM profile_identifier WHERE kind = 'cookie_id' AND value = 'ck-1'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(seen, 2, "each sighting counted once");
}

/// Identifier-index rows whose suspect flag disagrees with what the merger learned of
/// the identifier (suspect or shared), and rows flagged.
async fn flags(env: &TestEnv) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE pi.suspect <> (ii.suspect OR ii.shared)), \
                count(*) FILTER (WHERE pi.suspect) \
         FROM profile_identifier pi JOIN identity_identifier ii USING (kind, value)",
    )
    .fetch_one(&env.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_shared_device_is_flagged_in_the_identifier_index() {
    use IdentifierKind::*;
    // Two people on one device: the cookie links different e-mails, so it turns shared
    // and the profile holding it keeps it flagged. Arriving late, the first event
    // replays the region, which rewrites the flags too.
    let device = id(CookieId, "family-tablet");
    let events = vec![
        event(1, vec![device.clone(), id(Email, "asha@mail.in")]),
        event(2, vec![device.clone(), id(Email, "ravi@mail.in")]),
        event(3, vec![device.clone()]),
    ];
    for arrival in [vec![0, 1, 2], vec![2, 1, 0]] {
        let (env, resolver) = resolved_one_by_one(&events, &arrival).await;
        let (wrong, flagged) = flags(&env).await;
        assert_eq!(wrong, 0, "every index row's flag is its identifier's");
        assert_eq!(flagged, 1, "the device is flagged where it is held");
        resolver.rebuild().await.unwrap();
        assert_eq!(flags(&env).await, (0, 1), "a rebuild flags the same row");
    }
}

/// Whether `conn` can take the fleet lock exclusively, as a rebuild does (released
/// again at once when taken).
async fn fleet_free(conn: &mut sqlx::PgConnection) -> bool {
    use identity::resolver::locks::FLEET_LOCK;
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(FLEET_LOCK.0)
        .bind(FLEET_LOCK.1)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    if taken {
        sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(FLEET_LOCK.0)
            .bind(FLEET_LOCK.1)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    taken
}

#[tokio::test]
async fn a_resolver_transaction_holds_the_fleet_lock_from_its_begin() {
    let env = TestEnv::new().await;
    let mut other = env.db.acquire().await.unwrap();
    assert!(fleet_free(&mut other).await);
    let tx = identity::resolver::locks::begin_shared(&env.db)
        .await
        .unwrap();
    assert!(
        !fleet_free(&mut other).await,
        "a rebuild cannot start while the transaction is open"
    );
    tx.commit().await.unwrap();
    assert!(fleet_free(&mut other).await, "the commit released it");
}

/// Every row of `table` as JSON text, sorted, without the columns that record when a
/// write happened (`merged_at`, `created_at`, …), a random id, or how often replays
/// raised a review item again (a replay's own count, which arrival order decides).
async fn rows(env: &TestEnv, table: &str) -> Vec<String> {
    sqlx::query_scalar(&format!(
        "SELECT (to_jsonb(t) - 'id' - 'created_at' - 'updated_at' - 'merged_at' - 'resolved_at' \
                 - 'received_at' - 'suspect_since' #- '{{evidence,repeats}}')::text AS row \
         FROM {table} t ORDER BY 1"
    ))
    .fetch_all(&env.db)
    .await
    .unwrap()
}

/// A time-ordered run of `events` (one call each), and a fresh database with them
/// stored unresolved and its resolver.
async fn sorted_and_stored(events: &[NormalizedEvent]) -> (TestEnv, TestEnv, Resolver) {
    let (sorted, _) = resolved_one_by_one(events, &(0..events.len()).collect::<Vec<_>>()).await;
    let env = TestEnv::new().await;
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    identity::seed::store_events(&env.db, events).await.unwrap();
    (sorted, env, resolver)
}

/// Resolves `events` one call each in `arrival` order; returns the late events applied
/// in place and the regions replayed.
async fn resolve_each(
    resolver: &Resolver,
    events: &[NormalizedEvent],
    arrival: &[usize],
) -> (usize, usize) {
    let (mut settled, mut replays) = (0, 0);
    for &i in arrival {
        let report = resolver
            .resolve(std::slice::from_ref(&events[i]))
            .await
            .unwrap();
        settled += report.settled;
        replays += report.replays;
    }
    (settled, replays)
}

/// Every table identity writes is as in `sorted` (a time-ordered run).
async fn assert_tables_equal(env: &TestEnv, sorted: &TestEnv) {
    for table in [
        "normalized_event",
        "customer_profile",
        "profile_identifier",
        "identity_identifier",
        "identity_refused_link",
        "merge_history",
        "manual_merge_queue",
    ] {
        assert_eq!(
            rows(env, table).await,
            rows(sorted, table).await,
            "{table} differs from a time-ordered run"
        );
    }
}

/// Browsing that arrives late against its own profile. A view whose cookie an earlier
/// event of the profile carried, refused nothing, is applied in place (no replay); an
/// e-mail whose only earlier carrier was refused a link (Ravi on Asha's browser) has no
/// witness and replays. Every table ends as a time-ordered run leaves it.
#[tokio::test]
async fn late_events_with_a_witness_are_applied_in_place_and_end_as_time_order() {
    use IdentifierKind::*;
    let e = named;
    let events = vec![
        e(1, &[(CookieId, "c1")], None),
        e(
            2,
            &[(CookieId, "c1"), (Email, "asha@mail.in")],
            Some("Asha"),
        ),
        e(3, &[(CookieId, "c1")], None),
        e(4, &[(CookieId, "c1")], None),
        e(
            5,
            &[(CookieId, "c1"), (Email, "ravi@mail.in")],
            Some("Ravi"),
        ),
        e(6, &[(Email, "ravi@mail.in")], None),
        e(7, &[(CookieId, "c2"), (Email, "ravi@mail.in")], None),
        e(8, &[(CookieId, "c2")], None),
        e(9, &[(CookieId, "c2"), (Email, "ravi@mail.in")], None),
    ];
    // 3 after 4 (witness: 1), 8 after 9 (witness: 7), 6 after 9 (5 was refused the
    // cookie: no witness).
    let (sorted, env, resolver) = sorted_and_stored(&events).await;
    let late = resolve_each(&resolver, &events, &[0, 1, 3, 2, 4, 6, 8, 7, 5]).await;
    assert_eq!(late, (2, 1), "3 and 8 in place, 6 replayed");
    assert_tables_equal(&env, &sorted).await;
}

/// Named late events (the name guard is on). One stating the name its profile
/// remembers, witnessed by an earlier event that carried its e-mail and stated the same
/// name, is applied in place; one whose cookie's only earlier carrier stated no name has
/// no witness and replays, counted as such. Every table ends as a time-ordered run
/// leaves it.
#[tokio::test]
async fn a_named_late_event_with_a_witness_stating_its_name_is_applied_in_place() {
    use IdentifierKind::*;
    let e = named;
    let events = vec![
        e(
            1,
            &[(CookieId, "c1"), (Email, "asha@mail.in")],
            Some("Asha"),
        ),
        e(2, &[(CookieId, "c1")], None),
        e(3, &[(Email, "asha@mail.in")], Some("asha")),
        e(4, &[(CookieId, "c1"), (Email, "asha@mail.in")], None),
        e(5, &[(CookieId, "c2"), (Email, "asha@mail.in")], None),
        e(6, &[(CookieId, "c2")], Some("Asha")),
        e(7, &[(CookieId, "c2")], None),
    ];
    let (sorted, env, resolver) = sorted_and_stored(&events).await;
    // 3 after 4 (witness: 1), 6 after 7 (5 carried the cookie but stated no name).
    let late = resolve_each(&resolver, &events, &[0, 1, 3, 2, 4, 6]).await;
    // The last one alone: why its step replayed.
    let last = resolver
        .resolve(std::slice::from_ref(&events[5]))
        .await
        .unwrap();
    assert_eq!(
        (late.0 + last.settled, late.1 + last.replays),
        (1, 1),
        "3 in place, 6 replayed"
    );
    assert_eq!(
        last.replayed_because.into_iter().collect::<Vec<_>>(),
        vec![(ReplayCause::Late(Unsettled::Unwitnessed), 1)]
    );
    assert_tables_equal(&env, &sorted).await;
}

/// A late order whose e-mail its profile already held, through an earlier event refused
/// nothing, is applied in place although its order reference is new (no event carried
/// it, and an order reference has no class the rule reads); the tables end as a
/// time-ordered run leaves them.
#[tokio::test]
async fn a_late_order_bringing_its_new_order_reference_is_applied_in_place() {
    use IdentifierKind::*;
    let email = || id(Email, "asha@mail.in");
    let events = vec![
        event(1, vec![id(CookieId, "c1"), email()]),
        order_event(2, vec![email()], "1001", 250, EventType::OrderPlaced),
        event(3, vec![id(CookieId, "c1"), email()]),
    ];
    let (sorted, env, resolver) = sorted_and_stored(&events).await;
    let late = resolve_each(&resolver, &events, &[0, 2, 1]).await;
    assert_eq!(late, (1, 0), "the order is applied in place");
    assert_tables_equal(&env, &sorted).await;
    let owner: Option<Uuid> = sqlx::query_scalar("SELECT profile_id FROM orders")
        .fetch_one(&env.db)
        .await
        .unwrap();
    let expected: Option<Uuid> = sqlx::query_scalar("SELECT profile_id FROM orders")
        .fetch_one(&sorted.db)
        .await
        .unwrap();
    assert_eq!(owner, expected);
    assert!(owner.is_some());
}
