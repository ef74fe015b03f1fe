//! The merger as a service on the real Postgres and Redis, fed the scenario generator's
//! events through `events.normalized`: any number of replicas give the profiles one
//! replica gives (and canonical time order gives), `ctl identity rebuild` reproduces
//! them, and a replica killed mid-stream loses and doubles nothing.

use std::collections::BTreeSet;

use domain::NormalizedEvent;
use identity::engine::Constraints;
use identity::memory::{MemoryResolver, partition_of};
use identity::resolver::Resolver;
use identity::{Engine, Observation, Policy};
use rust_decimal::Decimal;
use scenario::identity::{IdentityConfig, IdentityScenario, generate};
use sqlx::Row;
use streams::{Envelope, Streams, Topic};
use test_support::TestEnv;
use test_support::process::{Process, Signal};
use uuid::Uuid;

/// About 20,000 events.
fn scenario() -> IdentityScenario {
    generate(&IdentityConfig::with_customers(250))
}

/// Stores what the normalizer stores (orders and products; the merger stores each
/// event's row, attached) and publishes the events, in time order.
async fn feed(env: &TestEnv, events: &[NormalizedEvent]) {
    let events = &identity::seed::store_effects(&env.db, events)
        .await
        .unwrap();
    let streams = Streams::new(env.redis.clone(), env.prefix(), 10_000_000);
    for chunk in events.chunks(2_000) {
        let envs: Vec<Envelope<&NormalizedEvent>> = chunk
            .iter()
            .map(|e| Envelope::new(e.event_id, "normalizer", e.event_type.as_str(), e))
            .collect();
        streams
            .publish_many(Topic::EventsNormalized, &envs)
            .await
            .unwrap();
    }
}

/// Waits until `total` events are stored and resolved (whether the normalizer's path
/// left their rows to the merger or a seed stored them unresolved).
async fn wait_resolved(env: &TestEnv, total: usize, secs: u64) {
    test_support::eventually(secs, "every event resolved", || async {
        let done = resolved(env).await;
        (done == total as i64).then_some(())
    })
    .await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM normalized_event")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(n as usize, total);
}

/// Events stored and resolved.
async fn resolved(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM normalized_event WHERE resolved_at IS NOT NULL")
        .fetch_one(&env.db)
        .await
        .unwrap()
}

async fn partition(env: &TestEnv) -> BTreeSet<BTreeSet<Uuid>> {
    let rows = sqlx::query("SELECT event_id, profile_id FROM normalized_event")
        .fetch_all(&env.db)
        .await
        .unwrap();
    partition_of(rows.iter().map(|r| {
        (
            r.get("event_id"),
            r.get::<Option<Uuid>, _>("profile_id").expect("resolved"),
        )
    }))
}

/// Runs `replicas` merger replicas in this process until `env` drops.
async fn replicas(env: &TestEnv, replicas: usize) {
    for _ in 0..replicas {
        env.spawn(identity_merger::run).await;
    }
}

/// Canonical-order resolution in memory, naming profiles as `env`'s database does.
async fn canonical(env: &TestEnv, s: &IdentityScenario) -> MemoryResolver {
    let ids = identity::resolver::load_profile_ids(&env.db).await.unwrap();
    MemoryResolver::rebuild(
        Engine::new(Policy::from_settings(&env.settings.identity), ids),
        Constraints::default(),
        s.events.iter().map(Observation::of).collect(),
    )
}

/// Every profile's facts and order aggregates add up to the events and orders.
async fn assert_totals_exact(env: &TestEnv, s: &IdentityScenario) {
    let events: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum((state->>'events_count')::bigint), 0)::bigint FROM customer_profile WHERE merged_into IS NULL",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(events as usize, s.events.len(), "each event counted once");
    let (orders, spent): (i64, Decimal) = sqlx::query_as(
        "SELECT COALESCE(sum(orders_count), 0)::bigint, COALESCE(sum(total_spent), 0) FROM customer_profile \
         WHERE merged_into IS NULL",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    let (expected_orders, expected_spent): (i64, Decimal) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(total - refunded_total), 0) FROM orders WHERE status <> 'cancelled'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(
        (orders, spent),
        (expected_orders, expected_spent),
        "order totals exact"
    );
    let unattributed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE profile_id IS NULL")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(unattributed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_give_the_profiles_of_one_and_rebuild_reproduces_them() {
    let s = scenario();
    assert!(s.events.len() >= 19_000, "{} events", s.events.len());
    let one = TestEnv::new().await;
    let three = TestEnv::new().await;
    feed(&one, &s.events).await;
    feed(&three, &s.events).await;
    replicas(&one, 1).await;
    replicas(&three, 3).await;
    wait_resolved(&one, s.events.len(), 600).await;
    wait_resolved(&three, s.events.len(), 600).await;

    let expected = canonical(&one, &s).await;
    let by_one = partition(&one).await;
    assert_eq!(by_one, partition(&three).await, "3 replicas = 1 replica");
    assert_eq!(by_one, expected.partition(), "= canonical time order");
    assert_totals_exact(&one, &s).await;
    assert_totals_exact(&three, &s).await;

    // Rebuilding from the stored events changes nothing.
    let resolver = Resolver::new(three.db.clone(), three.redis.clone(), &three.settings)
        .await
        .unwrap();
    let report = resolver.rebuild().await.unwrap();
    assert_eq!(report.events, s.events.len());
    assert_eq!(report.moved_events, 0, "{report:?}");
    assert_eq!(report.retired_profiles, 0, "{report:?}");
    assert_eq!(report.repointed_tombstones, 0, "{report:?}");
    assert_eq!(partition(&three).await, by_one, "rebuild = streaming");
    assert_totals_exact(&three, &s).await;
    assert_tombstones_canonical(&one, &s).await;
    assert_tombstones_canonical(&three, &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merger_killed_mid_stream_loses_and_doubles_nothing() {
    let s = generate(&IdentityConfig::with_customers(120));
    let env = TestEnv::with_settings([("IDENTITY_MERGER_BATCH_SIZE", "64".to_owned())]).await;
    feed(&env, &s.events).await;
    let binary = env!("CARGO_BIN_EXE_identity-merger");
    let mut first = Process::spawn(binary, &[], &env.process_vars());
    // Kill it hard once it is well into the stream.
    test_support::eventually(300, "the first replica to resolve some events", || async {
        let done = resolved(&env).await;
        (done > (s.events.len() / 4) as i64).then_some(())
    })
    .await;
    first.signal(Signal::SIGKILL);
    first.wait_exit(30).await;
    assert!(
        (resolved(&env).await as usize) < s.events.len(),
        "killed before the end"
    );
    // A new replica takes over the dead one's pending entries and the rest.
    let _second = Process::spawn(binary, &[], &env.process_vars());
    wait_resolved(&env, s.events.len(), 600).await;
    assert_eq!(partition(&env).await, canonical(&env, &s).await.partition());
    assert_totals_exact(&env, &s).await;
    let history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT unnest(absorbed_ids) AS a FROM merge_history WHERE undone_at IS NULL) m \
         GROUP BY a HAVING count(*) > 1",
    )
    .fetch_optional(&env.db)
    .await
    .unwrap()
    .unwrap_or(0);
    assert_eq!(history, 0, "no profile was merged away twice");
}

/// Publishes `events` (already stored) in the given order.
async fn publish(env: &TestEnv, events: &[NormalizedEvent]) {
    let streams = Streams::new(env.redis.clone(), env.prefix(), 10_000_000);
    for chunk in events.chunks(2_000) {
        let envs: Vec<Envelope<&NormalizedEvent>> = chunk
            .iter()
            .map(|e| Envelope::new(e.event_id, "normalizer", e.event_type.as_str(), e))
            .collect();
        streams
            .publish_many(Topic::EventsNormalized, &envs)
            .await
            .unwrap();
    }
}

/// What a run leaves, keyed by ids that do not depend on arrival order: each live
/// profile with its events, identifiers (with their suspect flags) and facts; each
/// identifier's learned state. Category weights are sums of decayed floats, whose last
/// bits depend on the order they were added in: compared to nine decimals.
async fn outcome(env: &TestEnv) -> Vec<String> {
    let profiles: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' | ', p.id, p.first_event_id, p.last_event_id, p.name_keys::text, \
                p.orders_count, p.total_spent, p.traits::text, (p.state - 'category_weights')::text, \
                (SELECT string_agg(w.k || ':' || (w.v->>'as_of') || ':' || round((w.v->>'weight')::numeric, 9), ',' \
                        ORDER BY w.k) FROM jsonb_each(p.state->'category_weights') AS w(k, v)), \
                (SELECT string_agg(e.event_id::text, ',' ORDER BY e.event_id) FROM normalized_event e \
                  WHERE e.profile_id = p.id), \
                (SELECT string_agg(i.kind || ':' || i.value || ':' || i.suspect, ',' ORDER BY i.kind, i.value) \
                   FROM profile_identifier i WHERE i.profile_id = p.id)) \
         FROM customer_profile p WHERE p.merged_into IS NULL ORDER BY p.id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let identifiers: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' | ', kind, value, last_event_id, suspect, shared) FROM identity_identifier \
         ORDER BY kind, value",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    profiles.into_iter().chain(identifiers).collect()
}

/// Every stored event row, all columns but `resolved_at` (a time of day), in id order.
async fn event_rows(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws(' | ', event_id, occurred_at, received_at, source, integration_id, channel, type, \
                name, identifiers::text, traits::text, properties::text, order_data::text, profile_id, \
                resolved_at IS NOT NULL) \
         FROM normalized_event ORDER BY event_id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap()
}

/// Every tombstone points directly at a live profile: the one holding the event that
/// created it (profile ids are derived from their creating events). Returns how many
/// tombstones there are.
async fn assert_tombstones_canonical(env: &TestEnv, s: &IdentityScenario) -> usize {
    let ids = identity::resolver::load_profile_ids(&env.db).await.unwrap();
    let creators: std::collections::HashMap<Uuid, Uuid> = s
        .events
        .iter()
        .map(|e| (ids.profile_id(e.event_id), e.event_id))
        .collect();
    let rows: Vec<(Uuid, Uuid, Option<Uuid>)> = sqlx::query_as(
        "SELECT t.id, t.merged_into, live.merged_into FROM customer_profile t \
         JOIN customer_profile live ON live.id = t.merged_into WHERE t.merged_into IS NOT NULL",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let holders: std::collections::HashMap<Uuid, Uuid> =
        sqlx::query_as::<_, (Uuid, Uuid)>("SELECT event_id, profile_id FROM normalized_event")
            .fetch_all(&env.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (tombstone, into, into_merged) in &rows {
        assert_eq!(
            *into_merged, None,
            "{tombstone} points at the tombstone {into}"
        );
        let creator = creators
            .get(tombstone)
            .unwrap_or_else(|| panic!("{tombstone} was created by no event"));
        assert_eq!(
            holders.get(creator),
            Some(into),
            "{tombstone} points where its creating event is not"
        );
    }
    rows.len()
}

/// Every stored profile (live or tombstone) with the live profile it ends in, following
/// tombstones.
async fn ends(env: &TestEnv) -> std::collections::BTreeMap<Uuid, Uuid> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "WITH RECURSIVE chain (start, id, depth) AS ( \
             SELECT id, id, 0 FROM customer_profile \
             UNION ALL \
             SELECT c.start, p.merged_into, c.depth + 1 FROM chain c JOIN customer_profile p ON p.id = c.id \
             WHERE p.merged_into IS NOT NULL AND c.depth < 100) \
         SELECT c.start, c.id FROM chain c JOIN customer_profile p ON p.id = c.id AND p.merged_into IS NULL",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// The profiles the merge history names (survivors and absorbed).
async fn named_by_history(env: &TestEnv) -> BTreeSet<Uuid> {
    sqlx::query_scalar(
        "SELECT survivor_id FROM merge_history UNION SELECT unnest(absorbed_ids) FROM merge_history",
    )
    .fetch_all(&env.db)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// The same events delivered shuffled — within and across small batches, some twice —
/// to three replicas give exactly what one replica fed them sorted gives: the same
/// profiles (ids, events, identifiers, facts, order totals) and identifier states, and
/// every profile the sorted run merged away is merged away (or never created) there,
/// redirecting to the same live profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shuffled_deliveries_to_three_replicas_equal_a_sorted_single_replica_run() {
    let s = generate(&IdentityConfig::with_customers(60));
    let mut sorted_events = s.events.clone();
    sorted_events.sort_by_key(|e| (e.occurred_at, e.event_id));
    // A fixed permutation (an odd multiplier scrambles the v7 ids' time prefix), then a
    // tenth of the events delivered a second time.
    let mut shuffled_events = s.events.clone();
    shuffled_events.sort_by_key(|e| {
        e.event_id
            .as_u128()
            .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    });
    let again: Vec<NormalizedEvent> = shuffled_events.iter().step_by(10).cloned().collect();
    shuffled_events.extend(again);
    let displaced = sorted_events
        .iter()
        .zip(&shuffled_events)
        .filter(|(a, b)| a.event_id != b.event_id)
        .count();
    assert!(displaced > sorted_events.len() / 2, "really shuffled");

    let sorted = TestEnv::with_settings([("IDENTITY_MERGER_BATCH_SIZE", "1000".to_owned())]).await;
    let shuffled = TestEnv::with_settings([("IDENTITY_MERGER_BATCH_SIZE", "37".to_owned())]).await;
    // The sorted run's event rows are stored first, unresolved (a seed's path: the
    // merger updates them); the shuffled run's are left to the merger, which stores
    // them attached (the normalizer's path). Both end with the same rows.
    identity::seed::store_events(&sorted.db, &s.events)
        .await
        .unwrap();
    let published: std::collections::HashMap<Uuid, NormalizedEvent> =
        identity::seed::store_effects(&shuffled.db, &s.events)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.event_id, e))
            .collect();
    let shuffled_events: Vec<NormalizedEvent> = shuffled_events
        .iter()
        .map(|e| published[&e.event_id].clone())
        .collect();
    publish(&sorted, &sorted_events).await;
    publish(&shuffled, &shuffled_events).await;
    replicas(&sorted, 1).await;
    replicas(&shuffled, 3).await;
    wait_resolved(&sorted, s.events.len(), 600).await;
    wait_resolved(&shuffled, s.events.len(), 600).await;

    let expected = outcome(&sorted).await;
    let got = outcome(&shuffled).await;
    assert_eq!(expected.len(), got.len());
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(e, g, "shuffled 3 replicas = sorted 1 replica");
    }
    assert_eq!(
        event_rows(&sorted).await,
        event_rows(&shuffled).await,
        "the rows the merger stored = the rows stored first and attached after"
    );
    assert_eq!(
        partition(&sorted).await,
        canonical(&sorted, &s).await.partition()
    );
    assert_totals_exact(&sorted, &s).await;
    assert_totals_exact(&shuffled, &s).await;

    // Merge history: every profile the sorted run merged away is merged away in the
    // shuffled run too (or never existed there: a late event's replay may attach an event
    // to its final profile before it ever creates one), never live.
    let named = named_by_history(&sorted).await;
    let (end_sorted, end_shuffled) = (ends(&sorted).await, ends(&shuffled).await);
    assert!(!named.is_empty(), "the scenario merges profiles");
    let mut compared = 0;
    for profile in &named {
        let Some(there) = end_shuffled.get(profile) else {
            continue;
        };
        let here = end_sorted.get(profile).expect("named profiles are stored");
        assert_eq!(
            there == profile,
            here == profile,
            "{profile} is live in one run only"
        );
        compared += 1;
        assert_eq!(
            there, here,
            "{profile} redirects to different live profiles"
        );
    }
    assert!(compared > 0, "merged profiles exist in both runs");
    // Every tombstone of either run (also those only one run created) points at the
    // profile holding its creating event: the same in both.
    let sorted_tombstones = assert_tombstones_canonical(&sorted, &s).await;
    let shuffled_tombstones = assert_tombstones_canonical(&shuffled, &s).await;
    eprintln!(
        "{compared} profiles of the sorted run's merge history also exist in the shuffled run, \
         each redirecting to the same live profile; tombstones: {sorted_tombstones} sorted, \
         {shuffled_tombstones} shuffled"
    );
}

#[tokio::test]
async fn prediction_requests_are_debounced_per_profile() {
    let s = generate(&IdentityConfig::with_customers(10));
    let env =
        TestEnv::with_settings([("IDENTITY_PREDICTIONS_DEBOUNCE_MS", "200".to_owned())]).await;
    feed(&env, &s.events).await;
    replicas(&env, 1).await;
    wait_resolved(&env, s.events.len(), 120).await;
    let live: BTreeSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM customer_profile WHERE merged_into IS NULL")
            .fetch_all(&env.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let streams = Streams::new(env.redis.clone(), env.prefix(), 1_000_000);
    let requested: BTreeSet<Uuid> =
        test_support::eventually(30, "prediction requests for every profile", || async {
            let ids = profiles_on(&streams, Topic::PredictionsRequests, &[]).await;
            live.is_subset(&ids).then_some(ids)
        })
        .await;
    let entries = streams
        .recent_entries(Topic::PredictionsRequests, 100_000)
        .await
        .unwrap();
    assert!(
        entries.len() < s.events.len() / 2,
        "{} requests for {} events: debounced",
        entries.len(),
        s.events.len()
    );
    assert!(live.is_subset(&requested));
}

#[tokio::test]
async fn every_profile_change_reaches_profiles_changes_after_commit() {
    let s = generate(&IdentityConfig::with_customers(10));
    let env = TestEnv::new().await;
    feed(&env, &s.events).await;
    replicas(&env, 1).await;
    wait_resolved(&env, s.events.len(), 120).await;
    let live: BTreeSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM customer_profile WHERE merged_into IS NULL")
            .fetch_all(&env.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let merged: BTreeSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM customer_profile WHERE merged_into IS NOT NULL")
            .fetch_all(&env.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let streams = Streams::new(env.redis.clone(), env.prefix(), 1_000_000);
    let changes =
        |kinds: &'static [&'static str]| profiles_on(&streams, Topic::ProfileChanges, kinds);
    test_support::eventually(30, "a change of every live profile", || async {
        let ids = changes(&["created", "updated"]).await;
        live.is_subset(&ids).then_some(())
    })
    .await;
    test_support::eventually(
        30,
        "a merged change of every profile merged away",
        || async {
            let ids = changes(&["merged"]).await;
            merged.is_subset(&ids).then_some(())
        },
    )
    .await;
    test_support::eventually(30, "the outbox empties", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM profile_change_outbox")
            .fetch_one(&env.db)
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
}

/// The profiles named by the recent entries of `topic` (with a `change` among `kinds`,
/// when any are given).
async fn profiles_on(streams: &Streams, topic: Topic, kinds: &[&str]) -> BTreeSet<Uuid> {
    let entries = streams.recent_entries(topic, 100_000).await.unwrap();
    entries
        .iter()
        .filter_map(|e| e.envelope.as_ref())
        .filter(|env| {
            kinds.is_empty()
                || env.payload["change"]
                    .as_str()
                    .is_some_and(|c| kinds.contains(&c))
        })
        .filter_map(|env| env.payload["profile_id"].as_str()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn every_live_profile_gets_its_current_customer360_document_and_merged_ones_none() {
    let s = generate(&IdentityConfig::with_customers(10));
    let env = TestEnv::new().await;
    feed(&env, &s.events).await;
    replicas(&env, 1).await;
    wait_resolved(&env, s.events.len(), 120).await;
    let live: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM customer_profile WHERE merged_into IS NULL")
            .fetch_all(&env.db)
            .await
            .unwrap();
    let merged: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM customer_profile WHERE merged_into IS NOT NULL")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert!(!merged.is_empty(), "the scenario merges");
    // The document as stored, without the time it was computed and what decays with
    // that time (category weights, recomputed to the last float digit at each build).
    let current = |doc: &domain::profile::Customer360| {
        let mut v = serde_json::to_value(doc).unwrap();
        let fields = v.as_object_mut().unwrap();
        fields.remove("computed_at");
        fields.remove("category_affinity");
        v
    };
    let mut redis = env.redis.clone();
    test_support::eventually(30, "every live profile's document is current", || async {
        let mut redis = redis.clone();
        for id in &live {
            let key = storage::customer360::cache_key(env.prefix(), *id);
            let cached: Option<String> = redis::AsyncCommands::get(&mut redis, &key).await.unwrap();
            let cached: domain::profile::Customer360 = serde_json::from_str(&cached?).ok()?;
            let built = storage::customer360::build(&env.db, *id).await.unwrap()?;
            if current(&cached) != current(&built) {
                return None;
            }
        }
        Some(())
    })
    .await;
    for id in &merged {
        let key = storage::customer360::cache_key(env.prefix(), *id);
        let cached: Option<String> = redis::AsyncCommands::get(&mut redis, &key).await.unwrap();
        assert_eq!(cached, None, "profile {id} was merged away: no document");
    }
}

/// The merger's counters (`/metrics` at `base`): events resolved, late events applied
/// in place, and events its replays resolved because they were late (by cause; events
/// riding along and identifiers turning suspect are not lateness).
async fn late_events(base: &str) -> (u64, u64, Vec<String>) {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut resolved = 0;
    let mut in_place = 0;
    let mut replayed = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if name == "identity_events_resolved_total" {
            resolved += value as u64;
        } else if name == "identity_late_events_in_place_total" {
            in_place += value as u64;
        } else if name.starts_with("identity_replayed_events_total")
            && !name.contains("touching")
            && !name.contains("new_suspect")
            && value > 0.0
        {
            replayed.push(line.to_owned());
        }
    }
    (resolved, in_place, replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_read_out_of_time_order_across_batches_is_applied_in_time_order() {
    let s = generate(&IdentityConfig::with_customers(20));
    let batch = 100;
    let env = TestEnv::with_settings([("IDENTITY_MERGER_BATCH_SIZE", batch.to_string())]).await;
    let mut stored = identity::seed::store_effects(&env.db, &s.events)
        .await
        .unwrap();
    stored.sort_by_key(|e| (e.occurred_at, e.event_id));
    // Each pair of batches in time order is published later batch first: read as it is
    // published, every event of the second read is late against the first.
    let mut delivered: Vec<NormalizedEvent> = Vec::with_capacity(stored.len());
    for pair in stored.chunks(2 * batch) {
        let (earlier, later) = pair.split_at(pair.len().min(batch));
        delivered.extend_from_slice(later);
        delivered.extend_from_slice(earlier);
    }
    assert!(s.events.len() > 8 * batch, "{} events", s.events.len());
    publish(&env, &delivered).await;
    // The binary, so its `/metrics` are its own.
    let bind = format!("127.0.0.1:{}", test_support::process::free_port());
    let mut vars = env.process_vars();
    vars.push(("IDENTITY_MERGER_BIND".to_owned(), bind.clone()));
    let _merger = Process::spawn(env!("CARGO_BIN_EXE_identity-merger"), &[], &vars);
    wait_resolved(&env, s.events.len(), 600).await;

    // The consumer's ordering window merged each pair of reads: nothing arrived late.
    let (resolved, in_place, replayed) = late_events(&format!("http://{bind}")).await;
    assert_eq!(
        resolved as usize,
        s.events.len(),
        "the counters are the merger's"
    );
    assert_eq!((in_place, replayed), (0, Vec::new()), "late events");
    assert_eq!(partition(&env).await, canonical(&env, &s).await.partition());
    assert_totals_exact(&env, &s).await;
}
