//! Fault injection: the fleet as processes (`ctl up`) against a Postgres and a Redis of
//! this test's own on spare ports (never the machine's shared ones), under a steady load
//! of signed Shopify and WooCommerce webhooks, Twilio callbacks, POS bills and Segment
//! batches (`ctl demo --rate`), while each fault happens in turn:
//!
//! 1. every service is killed with SIGKILL mid-load (the supervisor restarts it);
//! 2. Postgres is stopped for `FAULTS_POSTGRES_DOWN_SECS` (60 s; 20 s when `CI` is
//!    set) and started again;
//! 3. Redis is killed and started again empty 5 s later (everything it held is lost),
//!    and the operator runs `ctl republish` as docs/runbook.md says.
//!
//! After each fault, every event received before it ended is normalised and attached
//! by the merger, and no dead-letter stream has an entry. Once the load is over, every
//! accepted (2xx) delivery is stored exactly once, normalised once and on a profile,
//! nothing was refused, order totals, cancellations and refunds are exact and the
//! profiles match the truth as well as without faults.
//!
//! What each fault costs is printed as a table (`faults:` lines): how long the fault
//! lasted, how long the backlog took to drain after it ended, the oldest unfinished
//! event during it (how late events were), against the same figure in the steady
//! state before. docs/reliability.md holds the figures of a run.
//!
//! Needs the service binaries next to `ctl` (`cargo build --workspace --bins`; the
//! README's test command builds them first), and Postgres's and Redis's server
//! binaries (`initdb`, `pg_ctl`, `redis-server`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use test_support::process::{self, Process, Signal};
use test_support::servers::{PrivatePostgres, PrivateRedis};

mod fleet_brand;

use fleet_brand::{BRAND_ARGS, SERVICES};

/// `ctl demo`'s arguments besides the brand: no training, and no re-drive of its own.
const LOAD_ARGS: [&str; 5] = [
    "--no-train",
    // The test re-drives after the Redis wipe itself, as an operator would: the
    // demo's own re-drive on a stall must not hide a loss.
    "--stall-secs",
    "3600",
    "--concurrency",
    "8",
];

/// Deliveries per second of the load (`FAULTS_RATE`, default 30): ~9,400 deliveries
/// last about five minutes, longer than the faults.
fn rate() -> f64 {
    std::env::var("FAULTS_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0)
}

/// How long Postgres stays down: `FAULTS_POSTGRES_DOWN_SECS`, else 20 s under CI (to
/// keep the suite's time sane on two cores) and 60 s otherwise.
fn postgres_down() -> Duration {
    let secs = std::env::var("FAULTS_POSTGRES_DOWN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            if std::env::var("CI").is_ok_and(|v| matches!(v.as_str(), "true" | "1" | "yes")) {
                20
            } else {
                60
            }
        });
    Duration::from_secs(secs)
}

/// The senders' longest pause between two attempts (`ctl demo`'s back-off cap).
const SENDER_MAX_PAUSE: chrono::Duration = chrono::Duration::seconds(5);

/// Each fault is watched for at least this long from its start...
const OBSERVE: Duration = Duration::from_secs(20);

/// ... and this long after its backlog drained: the steady state the next fault's
/// figures are compared with is the ten seconds before it.
const SETTLE: Duration = Duration::from_secs(10);

/// How long Redis stays away before it starts again, empty (a restart's seconds).
const REDIS_DOWN: Duration = Duration::from_secs(5);

/// One sample of the pipeline's backlog: events received but not yet through the
/// merger, and the age of the oldest of them.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    backlog: i64,
    oldest_secs: f64,
}

/// Samples the backlog every half second until dropped (failed samples, while Postgres
/// is down, are skipped: the events' receipt times carry the delay across).
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(db: PgPool) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                let row: Result<(i64, f64), _> = sqlx::query_as(
                    "SELECT count(*), \
                            COALESCE(EXTRACT(EPOCH FROM now() - min(r.received_at))::float8, 0) \
                     FROM customer_raw_event r WHERE NOT EXISTS (SELECT 1 FROM normalized_event n \
                         WHERE n.event_id = r.id AND n.resolved_at IS NOT NULL)",
                )
                .fetch_one(&db)
                .await;
                if let Ok((backlog, oldest_secs)) = row {
                    sink.lock().unwrap().push(Sample {
                        at: Instant::now(),
                        backlog,
                        oldest_secs,
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { samples, task }
    }

    fn between(&self, from: Instant, to: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .copied()
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One fault the suite inflicts.
enum Fault {
    /// SIGKILL of one service's process; the supervisor restarts it.
    Kill(&'static str),
    /// Postgres stopped (fast shutdown) for this long, then started again.
    PostgresDown(Duration),
    /// Redis killed, started again empty `REDIS_DOWN` later, then `ctl republish`.
    RedisWiped,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kill(service) => write!(f, "kill -9 {service}"),
            Self::PostgresDown(d) => write!(f, "Postgres stopped for {} s", d.as_secs()),
            Self::RedisWiped => write!(
                f,
                "Redis killed, restarted empty after {} s",
                REDIS_DOWN.as_secs()
            ),
        }
    }
}

/// What one fault cost.
struct Cost {
    fault: String,
    /// From the fault's start until it was over (service ready again, server back).
    outage: Duration,
    /// From the end of the fault until every event received before it was through.
    drained_after: Duration,
    /// The oldest unfinished event, at worst, from the fault's start until drained.
    worst_delay_secs: f64,
    /// The same in the ten seconds before the fault: the steady state.
    steady_delay_secs: f64,
    /// The longest time between two accepted events' arrivals (`received_at`), from
    /// the fault's start until watched: what ingest could not take, the senders held
    /// and retried.
    ingest_gap_secs: f64,
    /// The same in the ten seconds before the fault.
    steady_gap_secs: f64,
    /// Events received from the fault's start until drained (at least `OBSERVE`): the
    /// load went on.
    received: i64,
}

impl Cost {
    /// The cost as a row of docs/reliability.md's table.
    fn row(&self) -> String {
        format!(
            "| {} | {:.1} s | {:.1} s | {:.1} s ({:.1} s) | {:.1} s ({:.1} s) | {} | 0 |",
            self.fault,
            self.outage.as_secs_f64(),
            self.drained_after.as_secs_f64(),
            self.worst_delay_secs,
            self.steady_delay_secs,
            self.ingest_gap_secs,
            self.steady_gap_secs,
            self.received
        )
    }
}

/// The fleet under test and the handles to hurt it.
/// (Fields drop in order: the fleet stops before its servers do.)
struct Rig {
    fleet: Process,
    sampler: Sampler,
    db: PgPool,
    prefix: String,
    urls: HashMap<&'static str, String>,
    vars: Vec<(String, String)>,
    redis: PrivateRedis,
    postgres: PrivatePostgres,
}

impl Rig {
    /// Waits until every event received up to `until` has gone through the merger.
    async fn drained_up_to(&self, until: DateTime<Utc>, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let left: Result<i64, _> = sqlx::query_scalar(
                "SELECT count(*) FROM customer_raw_event r WHERE r.received_at <= $1 \
                 AND NOT EXISTS (SELECT 1 FROM normalized_event n \
                     WHERE n.event_id = r.id AND n.resolved_at IS NOT NULL)",
            )
            .bind(until)
            .fetch_one(&self.db)
            .await;
            match left {
                Ok(0) => return,
                Ok(n) => assert!(
                    Instant::now() < deadline,
                    "{n} events received before the end of `{what}` never went through"
                ),
                Err(e) => assert!(Instant::now() < deadline, "counting the backlog: {e}"),
            }
            // The scan is cheap but not free: twice a second leaves the cores to the fleet.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Dead letters of every topic.
    async fn dead_letters(&self) -> Vec<(String, u64)> {
        let client = redis::Client::open(self.redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut out = Vec::new();
        for topic in streams::Topic::ALL {
            let n: u64 = redis::cmd("XLEN")
                .arg(topic.dlq_key(&self.prefix))
                .query_async(&mut conn)
                .await
                .unwrap();
            out.push((topic.name().to_owned(), n));
        }
        out
    }

    async fn all_ready(&self) {
        for url in self.urls.values() {
            process::wait_ready(url, 180).await;
        }
    }

    /// Inflicts `fault`, returning once it is over, and measures what it cost.
    async fn inflict(&mut self, fault: Fault) -> Cost {
        self.all_ready().await;
        let name = fault.to_string();
        let name = name.as_str();
        let fault_refuses_deliveries =
            matches!(fault, Fault::Kill("ingest") | Fault::PostgresDown(_));
        let started = Instant::now();
        let started_wall = Utc::now();
        eprintln!("faults: {name}");
        match fault {
            Fault::Kill(service) => kill_service(self, service).await,
            Fault::PostgresDown(down) => {
                self.postgres.stop();
                tokio::time::sleep(down).await;
                self.postgres.start_again();
            }
            Fault::RedisWiped => {
                self.redis.kill();
                tokio::time::sleep(REDIS_DOWN).await;
                self.redis.start_again().await;
                // The runbook's step after Redis lost data.
                let ctl = env!("CARGO_BIN_EXE_ctl");
                let mut republish = Process::spawn(ctl, &["republish"], &self.vars);
                let status = republish.wait_exit(120).await;
                assert!(status.success(), "ctl republish failed: {status}");
            }
        }
        let over = Instant::now();
        let over_wall = Utc::now();
        // A fault that refuses deliveries leaves requests held by their senders, which
        // retry within their longest pause: the fault's events are all in once ingest
        // stores again and that pause has passed.
        let cutoff = if fault_refuses_deliveries {
            let resumed = self.first_received_after(over_wall).await;
            let cutoff = resumed + SENDER_MAX_PAUSE;
            let wait = (cutoff - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            cutoff
        } else {
            over_wall
        };
        self.drained_up_to(cutoff, name).await;
        let drained = Instant::now();
        let dead = self.dead_letters().await;
        assert!(
            dead.iter().all(|(_, n)| *n == 0),
            "dead letters after {name}: {dead:?}"
        );
        // Watch at least OBSERVE from the start, so the load is seen going on, and
        // SETTLE after the drain, so the next fault starts from a steady state.
        let watch_until = (started + OBSERVE).max(drained + SETTLE);
        tokio::time::sleep(watch_until.saturating_duration_since(Instant::now())).await;
        let ended_wall = Utc::now();
        let during = self.sampler.between(started, drained);
        let before = self
            .sampler
            .between(started - Duration::from_secs(10), started);
        let worst = |s: &[Sample]| s.iter().map(|s| s.oldest_secs).fold(0.0, f64::max);
        let steady_from = started_wall - chrono::Duration::seconds(10);
        let cost = Cost {
            fault: name.to_owned(),
            outage: over - started,
            drained_after: drained - over,
            worst_delay_secs: worst(&during),
            steady_delay_secs: worst(&before),
            ingest_gap_secs: self.longest_gap(started_wall, ended_wall).await,
            steady_gap_secs: self.longest_gap(steady_from, started_wall).await,
            received: self.received(started_wall, ended_wall).await,
        };
        if cost.ingest_gap_secs > cost.outage.as_secs_f64() + 30.0 {
            eprintln!(
                "faults: NOTE: after `{name}` ingest accepted nothing for {:.0} s, far longer \
                 than the fault lasted ({:.0} s): senders had to hold and retry that long \
                 (see docs/reliability.md, known limits)",
                cost.ingest_gap_secs,
                cost.outage.as_secs_f64()
            );
        }
        eprintln!(
            "faults: {} (backlog at worst {} events)",
            cost.row(),
            during.iter().map(|s| s.backlog).max().unwrap_or(0)
        );
        cost
    }

    /// When ingest first stored an event after `after`.
    async fn first_received_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let first: Result<Option<DateTime<Utc>>, _> = sqlx::query_scalar(
                "SELECT min(received_at) FROM customer_raw_event WHERE received_at >= $1",
            )
            .bind(after)
            .fetch_one(&self.db)
            .await;
            if let Ok(Some(at)) = first {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "ingest stored nothing for 300 s after the fault"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The longest time between two stored events (or the window's ends) in a window.
    async fn longest_gap(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
        sqlx::query_scalar(
            "SELECT COALESCE(max(EXTRACT(EPOCH FROM gap))::float8, 0) FROM ( \
                 SELECT t - lag(t) OVER (ORDER BY t) AS gap FROM ( \
                     SELECT received_at AS t FROM customer_raw_event \
                     WHERE received_at BETWEEN $1 AND $2 \
                     UNION ALL SELECT $1 UNION ALL SELECT $2) times) gaps",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// Events stored in a window.
    async fn received(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM customer_raw_event WHERE received_at BETWEEN $1 AND $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }
}

/// SIGKILLs the supervisor's child running `service` and waits until its replacement
/// is ready.
async fn kill_service(rig: &mut Rig, service: &str) {
    let comm: String = service.chars().take(15).collect();
    let child = |rig: &Rig| {
        process::children_of(rig.fleet.pid())
            .into_iter()
            .find(|(_, name)| *name == comm)
            .map(|(pid, _)| pid)
    };
    let victim = child(rig).unwrap_or_else(|| panic!("ctl up runs {service}"));
    // A consumer dies with a batch in hand when it can: that is the case that costs.
    let in_hand = match consumed_by(service) {
        Some(topic) => batch_in_hand(rig, topic, service, victim).await,
        None => false,
    };
    process::send(victim, Signal::SIGKILL).unwrap();
    let replacement = test_support::eventually(60, &format!("{service} to be restarted"), || {
        let pid = child(rig).filter(|p| *p != victim);
        async move { pid }
    })
    .await;
    eprintln!(
        "faults: {service} (pid {victim}) killed{}, restarted as pid {replacement}",
        if in_hand { " with a batch in hand" } else { "" }
    );
    process::wait_ready(&rig.urls[service], 120).await;
}

/// The topic a service consumes, under a group named after it.
fn consumed_by(service: &str) -> Option<streams::Topic> {
    match service {
        "normalizer" => Some(streams::Topic::EventsRaw),
        "identity-merger" => Some(streams::Topic::EventsNormalized),
        "ml-inference" => Some(streams::Topic::PredictionsRequests),
        _ => None,
    }
}

/// Waits (up to 15 s) until process `pid`'s consumer holds pending entries of `topic`
/// in group `group`; whether it did.
async fn batch_in_hand(rig: &Rig, topic: streams::Topic, group: &str, pid: u32) -> bool {
    let client = redis::Client::open(rig.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let marker = format!("-{pid}-");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let summary: redis::RedisResult<redis::streams::StreamPendingReply> =
            redis::cmd("XPENDING")
                .arg(topic.key(&rig.prefix))
                .arg(group)
                .query_async(&mut conn)
                .await;
        if let Ok(redis::streams::StreamPendingReply::Data(data)) = summary
            && data
                .consumers
                .iter()
                .any(|c| c.name.contains(&marker) && c.pending > 0)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("the demo wrote it")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_survives_killed_services_and_restarted_postgres_and_redis() {
    for (service, _) in SERVICES {
        process::binary(service);
    }
    let postgres = PrivatePostgres::start();
    let redis = PrivateRedis::start().await;
    let admin = PgPool::connect(&postgres.url("postgres")).await.unwrap();
    sqlx::query("CREATE DATABASE constintel")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let database_url = postgres.url("constintel");
    // Short acquire timeout: the sampler must skip, not hang, while Postgres is down.
    let db = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&database_url)
        .await
        .unwrap();
    storage::migrate(&db).await.unwrap();

    let prefix = "faults:".to_owned();
    // Every other setting at its default (`STREAM_CLAIM_IDLE_MS` 30 s,
    // `OUTBOX_RELAY_AFTER_SECS` 5 s, ...): the figures are those of a fleet as shipped.
    let mut vars: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), database_url),
        ("REDIS_URL".into(), redis.url()),
        ("STREAM_PREFIX".into(), prefix.clone()),
        ("DATABASE_MAX_CONNECTIONS".into(), "8".into()),
        (
            "INTEGRATION_SECRETS_KEY".into(),
            storage::secrets::SecretsKey::generate().1,
        ),
    ];
    for inherited in ["PATH", "HOME", "RUST_LOG"] {
        if let Ok(v) = std::env::var(inherited) {
            vars.push((inherited.to_owned(), v));
        }
    }
    let urls = fleet_brand::bind_services(&mut vars);
    let ctl = env!("CARGO_BIN_EXE_ctl");
    let fleet = Process::spawn(ctl, &["up"], &vars);
    let mut rig = Rig {
        fleet,
        sampler: Sampler::start(db.clone()),
        db,
        prefix,
        urls,
        vars,
        redis,
        postgres,
    };
    rig.all_ready().await;

    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.json");
    let summary_path = dir.path().join("summary.json");
    let mut args: Vec<String> = vec!["demo".into()];
    args.extend(BRAND_ARGS.iter().chain(&LOAD_ARGS).map(|s| (*s).to_owned()));
    args.extend([
        "--rate".into(),
        rate().to_string(),
        // A request is retried for about three minutes: longer than any fault here.
        "--attempts".into(),
        "40".into(),
        "--truth".into(),
        truth_path.display().to_string(),
        "--summary-json".into(),
        summary_path.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut demo = Process::spawn(ctl, &args, &rig.vars);

    // The load is under way and steady.
    let db = rig.db.clone();
    test_support::eventually(300, "the load to be under way", || {
        let db = db.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM normalized_event WHERE resolved_at IS NOT NULL",
            )
            .fetch_one(&db)
            .await
            .ok()?;
            (n >= 300).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;

    let mut faults: Vec<Fault> = SERVICES.iter().map(|(s, _)| Fault::Kill(s)).collect();
    faults.push(Fault::PostgresDown(postgres_down()));
    faults.push(Fault::RedisWiped);
    let mut costs = Vec::new();
    for fault in faults {
        costs.push(rig.inflict(fault).await);
    }
    assert!(
        demo.is_running(),
        "the load ended before the last fault: lower FAULTS_RATE"
    );
    for c in &costs {
        assert!(
            c.received > 0,
            "no event arrived through `{}`: the load was not steady",
            c.fault
        );
    }

    let status = demo.wait_exit(900).await;
    assert!(status.success(), "ctl demo failed: {status}");
    let summary = read_json(&summary_path);
    eprintln!("faults: demo summary {summary:#}");
    assert_eq!(
        summary["rejected"], 0,
        "no delivery was refused or given up on"
    );
    assert_eq!(summary["dead_letters"], 0);

    // Every accepted delivery stored once, normalised once, through the merger and on a
    // profile; nothing else stored.
    let truth = read_json(&truth_path);
    let sent: HashSet<(String, String)> = truth["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_owned(),
                e["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        sent.len() > 5_000,
        "thousands of deliveries: {}",
        sent.len()
    );
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT source, source_event_id FROM customer_raw_event")
            .fetch_all(&rig.db)
            .await
            .unwrap();
    let stored_set: HashSet<(String, String)> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), stored_set.len(), "a delivery stored twice");
    let missing: Vec<_> = sent.difference(&stored_set).take(5).collect();
    let extra: Vec<_> = stored_set.difference(&sent).take(5).collect();
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");
    assert!(extra.is_empty(), "stored but never accepted: {extra:?}");
    let (normalized, unresolved, on_no_profile): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE resolved_at IS NULL), \
                count(*) FILTER (WHERE profile_id IS NULL) FROM normalized_event",
    )
    .fetch_one(&rig.db)
    .await
    .unwrap();
    assert_eq!(
        normalized as usize,
        sent.len(),
        "each event normalised once"
    );
    assert_eq!(unresolved, 0, "events the merger never finished");
    assert_eq!(on_no_profile, 0, "events on no profile");

    // Orders: exact totals, cancellations and refunds.
    fleet_brand::assert_orders_exact(&rig.db, truth["orders"].as_array().unwrap()).await;

    // The right profiles: the identity goals hold as without faults.
    let precision = summary["quality"]["precision"].as_f64().unwrap();
    let recall = summary["quality"]["recall"].as_f64().unwrap();
    assert!(precision >= 0.995, "pairwise precision {precision:.4}");
    assert!(recall >= 0.97, "pairwise recall {recall:.4}");

    eprintln!(
        "faults: {} deliveries at {} /s, {} requests retried by the sender, precision {precision:.4} recall {recall:.4}",
        sent.len(),
        rate(),
        summary["retries"]
    );
    eprintln!(
        "faults: | fault | over after | drained after it | oldest unfinished event (steady) | longest gap between arrivals (steady) | events received | lost |"
    );
    eprintln!("faults: |---|---|---|---|---|---|---|");
    for c in &costs {
        eprintln!("faults: {}", c.row());
    }
}
