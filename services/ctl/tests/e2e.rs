//! The whole product on one machine, end to end: the real binaries as separate
//! processes (`ctl up` on random ports, a fresh database and stream prefix), a small
//! demo brand sent through ingest's HTTP front door by `ctl demo`, and Redis wiped
//! while it is in flight. Once the demo has drained the pipeline and trained the
//! models, everything is checked against the ground truth the demo wrote:
//!
//! - every accepted delivery is stored exactly once, normalised once, and nothing else
//!   is stored; every order has its exact total, cancellation and refunds;
//! - the profiles match the truth within the identity goals (pairwise precision ≥ 0.995,
//!   recall ≥ 0.97);
//! - every live profile has a prediction from each active model;
//! - the Customer 360 API returns, for a person seen on the web shop, at a till and on
//!   WhatsApp, one profile holding the identifiers of all three channels;
//! - after the wipe the consumer groups exist again and the Customer 360 cache refills.
//!
//! Needs the service binaries next to `ctl` (`cargo build --workspace --bins`; the
//! README's test command builds them first).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;
use sqlx::PgPool;
use test_support::TestEnv;
use test_support::process::{self, Process};
use uuid::Uuid;

mod fleet_brand;

use fleet_brand::{BRAND_ARGS, SERVICES};

/// The brand, and how long `ctl demo` waits before re-driving after the wipe.
fn demo_args() -> Vec<&'static str> {
    let mut args = BRAND_ARGS.to_vec();
    args.extend(["--stall-secs", "20"]);
    args
}

/// The model versions of `task` that the demo's training run registered, read from its
/// summary's model lines (`"ltv      lightgbm mae …, rejected: … (VERSION-ID)"`).
fn demo_versions(summary: &Value, task: &str) -> Vec<Uuid> {
    summary["models"]
        .as_array()
        .expect("the summary lists its models")
        .iter()
        .filter_map(Value::as_str)
        .filter(|line| line.split_whitespace().next() == Some(task))
        .map(|line| {
            let id = line
                .rsplit_once('(')
                .and_then(|(_, rest)| rest.strip_suffix(')'))
                .unwrap_or_else(|| panic!("no version id in the model line {line:?}"));
            Uuid::parse_str(id).unwrap_or_else(|e| panic!("version id in {line:?}: {e}"))
        })
        .collect()
}

/// Events normalised before Redis is wiped: well into the load, well before its end.
const WIPE_AFTER_EVENTS: i64 = 2_500;

/// Sum of a Prometheus metric's samples in `text`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Truth {
    events: Vec<(String, String, u32)>,
    orders: Vec<Value>,
}

fn read_truth(path: &std::path::Path) -> Truth {
    let json: Value =
        serde_json::from_slice(&std::fs::read(path).expect("the demo wrote its truth"))
            .expect("the truth is JSON");
    let events = json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_owned(),
                e["key"].as_str().unwrap().to_owned(),
                u32::try_from(e["person"].as_u64().unwrap()).unwrap(),
            )
        })
        .collect();
    let orders = json["orders"].as_array().expect("orders").clone();
    Truth { events, orders }
}

/// Twilio's status callbacks for the messages the demo's automations sent (through the
/// fleet's Twilio fake) are stored like any delivery, but the demo did not send them:
/// the counts below leave them out (`r` is the raw event).
const AUTOMATION_CALLBACK: &str = "(r.kind = 'status' AND r.payload ->> 'MessageSid' IN \
     (SELECT provider_id FROM automation_send WHERE provider_id IS NOT NULL))";

/// Live profile of each stored event, by `(source, key)`; `None` for events on no profile.
async fn landed(db: &PgPool) -> HashMap<(String, String), Option<Uuid>> {
    let rows: Vec<(String, String, Option<Uuid>)> = sqlx::query_as(&format!(
        "SELECT r.source, r.source_event_id, n.profile_id FROM customer_raw_event r \
             LEFT JOIN normalized_event n ON n.event_id = r.id WHERE NOT {AUTOMATION_CALLBACK}"
    ))
    .fetch_all(db)
    .await
    .unwrap();
    let tombstones: HashMap<Uuid, Uuid> = sqlx::query_as(
        "SELECT id, merged_into FROM customer_profile WHERE merged_into IS NOT NULL",
    )
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let live = |mut id: Uuid| {
        while let Some(next) = tombstones.get(&id) {
            id = *next;
        }
        id
    };
    rows.into_iter()
        .map(|(s, k, p)| ((s, k), p.map(live)))
        .collect()
}

fn channel_of(source: &str) -> &'static str {
    match source {
        "shopify" | "woocommerce" => "web shop",
        "pos" => "till",
        "twilio" => "whatsapp",
        "segment" => "tracking",
        _ => "import",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_brand_goes_through_the_front_door_and_survives_a_redis_wipe() {
    // Fails with build advice when a service binary is missing, so CI cannot skip this.
    for (service, _) in SERVICES {
        process::binary(service);
    }
    // A 45-day churn horizon leaves enough buyers before the training cutoff of a
    // ten-month history (the default 90 needs a longer one).
    let env = TestEnv::with_settings([
        ("OUTBOX_RELAY_AFTER_SECS", "2".into()),
        ("CHURN_HORIZON_DAYS", "45".into()),
    ])
    .await;
    let mut vars = env.process_vars();
    let urls = fleet_brand::bind_services(&mut vars);
    let ctl = env!("CARGO_BIN_EXE_ctl");
    let _fleet = Process::spawn(ctl, &["up"], &vars);
    for url in urls.values() {
        process::wait_ready(url, 180).await;
    }

    let dir = std::env::temp_dir().join(format!("constintel-e2e-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let truth_path = dir.join("truth.json");
    let summary_path = dir.join("summary.json");
    let mut args: Vec<String> = vec!["demo".into()];
    args.extend(demo_args().into_iter().map(str::to_owned));
    args.extend([
        "--truth".into(),
        truth_path.display().to_string(),
        "--summary-json".into(),
        summary_path.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut demo = Process::spawn(ctl, &args, &vars);

    // Redis loses everything while events are in flight.
    let db = env.db.clone();
    test_support::eventually(300, "the load to be well under way", || {
        let db = db.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM normalized_event")
                .fetch_one(&db)
                .await
                .ok()?;
            (n >= WIPE_AFTER_EVENTS).then_some(())
        }
    })
    .await;
    test_support::delete_prefix(env.prefix()).await.unwrap();
    eprintln!("e2e: Redis keys under {} deleted mid-load", env.prefix());

    let status = demo.wait_exit(900).await;
    assert!(status.success(), "ctl demo failed: {status}");
    let truth = read_truth(&truth_path);
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    eprintln!("e2e: demo summary {summary:#}");

    // Every accepted delivery stored exactly once, and nothing else.
    let sent: HashSet<(String, String)> = truth
        .events
        .iter()
        .map(|(s, k, _)| (s.clone(), k.clone()))
        .collect();
    assert_eq!(
        sent.len(),
        truth.events.len(),
        "the truth lists each delivery once"
    );
    assert!(
        sent.len() > 5_000,
        "a brand this size sends thousands of events: {}",
        sent.len()
    );
    let landed = landed(&env.db).await;
    let stored: HashSet<(String, String)> = landed.keys().cloned().collect();
    let missing: Vec<_> = sent.difference(&stored).take(5).collect();
    let extra: Vec<_> = stored.difference(&sent).take(5).collect();
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");
    assert!(extra.is_empty(), "stored but never sent: {extra:?}");
    let (raw, normalized): (i64, i64) = sqlx::query_as(
        &format!(
            "SELECT (SELECT count(*) FROM customer_raw_event r WHERE NOT {AUTOMATION_CALLBACK}), \
             (SELECT count(*) FROM normalized_event n JOIN customer_raw_event r ON r.id = n.event_id \
              WHERE NOT {AUTOMATION_CALLBACK})"
        ),
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(raw as usize, sent.len());
    assert_eq!(normalized, raw, "every raw event normalised exactly once");
    // The legacy CRM's rows are stamped on arrival, so they come after the history:
    // uploaded first, every later-sent event of their customers would arrive late.
    let (csv_rows, history_after_csv): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customer_raw_event WHERE source = 'csv'), \
                (SELECT count(*) FROM customer_raw_event WHERE source NOT IN ('csv', 'twilio') \
                 AND received_at > (SELECT min(received_at) FROM customer_raw_event \
                                    WHERE source = 'csv'))",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert!(csv_rows > 0, "the legacy CRM was imported");
    assert_eq!(
        history_after_csv, 0,
        "historical deliveries stored after the legacy CRM's rows"
    );

    // Orders: exact totals, cancellations and refunds.
    fleet_brand::assert_orders_exact(&env.db, &truth.orders).await;

    // Identity quality against the truth (events on no profile count as singletons).
    let mut unattributed = 0;
    let pairs: Vec<(u128, u32)> = truth
        .events
        .iter()
        .enumerate()
        .map(
            |(i, (s, k, person))| match landed[&(s.clone(), k.clone())] {
                Some(p) => (p.as_u128(), *person),
                None => {
                    unattributed += 1;
                    (u128::MAX - i as u128, *person)
                }
            },
        )
        .collect();
    let q = identity::quality::pairwise(pairs);
    eprintln!(
        "e2e: precision {:.4} recall {:.4} over {} events, {} people, {} profiles, {unattributed} on no profile",
        q.precision(),
        q.recall(),
        q.events,
        q.people,
        q.profiles
    );
    assert!(
        q.precision() >= 0.995,
        "pairwise precision {:.4} < 0.995",
        q.precision()
    );
    assert!(
        q.recall() >= 0.97,
        "pairwise recall {:.4} < 0.97",
        q.recall()
    );

    // Every live profile is scored by the active models: a segment for everyone, churn
    // and lifetime value for everyone who has ordered (the ML contract: both are defined
    // on buyers only), each by the active version of its task.
    let active: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT task, id FROM model_version WHERE status = 'active' ORDER BY task")
            .fetch_all(&env.db)
            .await
            .unwrap();
    let tasks: BTreeSet<&str> = active.iter().map(|(t, _)| t.as_str()).collect();
    for task in ["churn", "segment"] {
        assert!(tasks.contains(task), "no active {task} model: {active:?}");
    }
    // LTV is gated against a constant forecast (docs/ml.md): on a brand of 150 people
    // the validation MAE of BG/NBD x Gamma-Gamma and of LightGBM can tie with the
    // training median, and then, by design, no LTV model serves. That is the only
    // reason accepted here: every LTV version of the demo's training run must have been
    // refused for not beating a baseline (never for a missing metric, too little data or
    // an error). The run's versions are the ones its summary names: ml-inference's own
    // start-up training (5 s after start on an empty registry, as of the wall clock, on
    // whatever part of the load had arrived) registers versions of a later data window.
    let ltv_active = tasks.contains("ltv");
    if !ltv_active {
        let ltv_versions = demo_versions(&summary, "ltv");
        assert!(
            !ltv_versions.is_empty(),
            "the demo's summary names no LTV version: {summary:#}"
        );
        let reasons: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT algorithm, status, status_reason FROM model_version \
             WHERE task = 'ltv' AND id = ANY($1)",
        )
        .bind(&ltv_versions)
        .fetch_all(&env.db)
        .await
        .unwrap();
        assert_eq!(
            reasons.len(),
            ltv_versions.len(),
            "the demo's LTV versions are registered"
        );
        assert!(!reasons.is_empty(), "no LTV model was trained: {active:?}");
        for (algorithm, status, reason) in &reasons {
            let reason = reason.as_deref().unwrap_or_default();
            assert!(
                status == "rejected" && reason.contains("does not beat"),
                "LTV {algorithm} is {status} ({reason}) and no LTV model is active"
            );
        }
        assert!(
            reasons
                .iter()
                .any(|(_, _, r)| r.as_deref().unwrap_or_default().contains("constant")),
            "no LTV model is active, yet none was refused for a constant forecast: {reasons:?}"
        );
        eprintln!("e2e: no LTV model serves: {reasons:?}");
    }
    let (live, without_features, unsegmented, buyers, unscored_buyers): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "WITH live AS (SELECT p.id, (f.values->>'frequency')::float8 AS frequency \
                           FROM customer_profile p \
                           LEFT JOIN features f ON f.profile_id = p.id \
                           WHERE p.merged_into IS NULL), \
                  scored AS (SELECT pr.profile_id, pr.task FROM predictions pr \
                             JOIN model_version m ON m.id = pr.model_version_id \
                                                  AND m.status = 'active' AND m.task = pr.task) \
             SELECT (SELECT count(*) FROM live), \
                    (SELECT count(*) FROM live WHERE frequency IS NULL), \
                    (SELECT count(*) FROM live l WHERE NOT EXISTS (SELECT 1 FROM scored s \
                        WHERE s.profile_id = l.id AND s.task = 'segment')), \
                    (SELECT count(*) FROM live WHERE frequency > 0), \
                    (SELECT count(*) FROM live l WHERE l.frequency > 0 AND ( \
                        NOT EXISTS (SELECT 1 FROM scored s WHERE s.profile_id = l.id AND s.task = 'churn') \
                        OR ($1 AND NOT EXISTS (SELECT 1 FROM scored s WHERE s.profile_id = l.id AND s.task = 'ltv'))))",
        )
        .bind(ltv_active)
        .fetch_one(&env.db)
        .await
        .unwrap();
    eprintln!("e2e: {live} live profiles, {buyers} with orders");
    assert_eq!(without_features, 0, "live profiles without features");
    assert_eq!(
        unsegmented, 0,
        "live profiles without a segment from the active model"
    );
    assert!(buyers > 100, "a brand this size has many buyers: {buyers}");
    assert_eq!(
        unscored_buyers, 0,
        "buyers without churn and LTV from the active models"
    );

    // A person seen on the web shop, at a till and on WhatsApp: one profile, all three
    // channels' identifiers, through the Customer 360 API.
    let mut channels: HashMap<u32, BTreeSet<&str>> = HashMap::new();
    for (s, _, person) in &truth.events {
        channels.entry(*person).or_default().insert(channel_of(s));
    }
    let on_one_profile = |person: u32| {
        let mut profiles = truth
            .events
            .iter()
            .filter(|(s, _, p)| *p == person && channel_of(s) != "tracking")
            .map(|(s, k, _)| landed[&(s.clone(), k.clone())]);
        let first = profiles.next().flatten()?;
        profiles.all(|p| p == Some(first)).then_some(first)
    };
    let (person, profile) = channels
        .iter()
        .filter(|(_, c)| {
            ["web shop", "till", "whatsapp"]
                .iter()
                .all(|x| c.contains(x))
        })
        .filter_map(|(p, _)| on_one_profile(*p).map(|profile| (*p, profile)))
        .min()
        .expect("someone who used the web shop, a till and WhatsApp is on one profile");
    eprintln!("e2e: person {person} is profile {profile}");
    let (token, _) = storage::users::create_token(&env.db, "e2e", domain::api::Role::Viewer, None)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let view: domain::api::ProfileView = client
        .get(format!("{}/api/v1/profiles/{profile}", urls["api-gateway"]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let c360 = view.profile;
    assert_eq!(c360.profile_id, profile);
    let kinds: BTreeSet<&str> = c360.identifiers.iter().map(|i| i.kind.as_str()).collect();
    for kind in ["email", "phone", "customer_id"] {
        assert!(kinds.contains(kind), "no {kind} among {kinds:?}");
    }
    let profile_channels: BTreeSet<&str> = c360.channels.iter().map(|c| c.as_str()).collect();
    for channel in ["web", "pos", "whatsapp"] {
        assert!(
            profile_channels.contains(channel),
            "channel {channel} missing from {profile_channels:?}"
        );
    }
    eprintln!(
        "e2e: Customer 360 of person {person}: {} identifiers ({kinds:?}), channels {profile_channels:?}",
        c360.identifiers.len()
    );

    // After the wipe: groups are back and the cache refilled on that read.
    let mut redis = env.redis.clone();
    let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("{}events.raw", env.prefix()))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        !groups.groups.is_empty(),
        "the normalizer's group on events.raw was recreated"
    );
    let cached: bool = redis::cmd("EXISTS")
        .arg(storage::customer360::cache_key(env.prefix(), profile))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(cached, "the Customer 360 read refilled the cache");

    // The pipeline's key figures are exported (docs/metrics.md).
    for (service, name) in [
        ("ingest", "ingest_raw_events_stored_total"),
        ("normalizer", "normalizer_events_total"),
        ("normalizer", "streams_entries_processed_total"),
        ("identity-merger", "identity_events_resolved_total"),
        ("identity-merger", "streams_entries_processed_total"),
    ] {
        let text = client
            .get(format!("{}/metrics", urls[service]))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metric(&text, name) > 0.0, "{service} exports no {name}");
    }

    let _ = std::fs::remove_dir_all(&dir);
}
