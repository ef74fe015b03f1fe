//! `bench-pipeline`: the whole pipeline on this machine — Segment batches of realistic
//! people posted to ingest, normalised, resolved by the identity merger — timed until
//! every event is attached to its profile, next to this machine's own limits measured in
//! the same run. `bench/pipeline/run.sh` wraps it (release build).
//!
//! One run:
//! 1. a fresh benchmark database (its name must contain `bench`) and stream prefix;
//! 2. the limits: a batched `INSERT … SELECT FROM unnest … ON CONFLICT DO UPDATE` shaped
//!    like the identifier index (rows/s), pipelined `XADD` of envelope-sized entries
//!    (entries/s), and the pure identity engine over the scenario generator's events
//!    (events/s, no I/O);
//! 3. `--profiles` people already resolved (stored as identify events and resolved in
//!    bulk by the rebuild's code, `bench_support::seed`), so the hot path meets a
//!    database of that size;
//! 4. the services as release processes (ingest, normalizer, `--replicas` identity
//!    mergers, ml-inference);
//! 5. a **steady** run: `--steady-rate` events/s for `--steady-seconds`, then freshness
//!    (`resolved_at − received_at`) p50/p99 of those events;
//! 6. a **burst** run: `--people` people (identify with e-mail, phone and user id, three
//!    anonymous product views, an order: 5 events each) posted as fast as ingest takes
//!    them, counted until every event is attached: events/s end to end, freshness
//!    p50/p99 and each process's CPU share while it ran.
//!
//! CPU shares are CPU seconds per wall second (1.0 = one core) from `/proc`; Postgres
//! and Redis are the machine's shared servers, so their figures include whatever else
//! runs against them — the load average is printed with every table for that reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bench_support::seed::{Settle, phone, seed_people};
use bench_support::{
    clear_prefix, engine_rate, fresh_database, load_average, release_dir, require_bench_database,
    upsert_rate,
};
use chrono::{DateTime, Utc};
use clap::Parser;
use config::Settings;
use identity::resolver::Resolver;
use scenario::identity::{IdentityConfig, generate};
use sqlx::PgPool;
use streams::Topic;

#[derive(Parser)]
#[command(
    name = "bench-pipeline",
    about = "End-to-end pipeline throughput and freshness"
)]
struct Cli {
    /// Profiles already in the database before the load.
    #[arg(long, default_value_t = 1_000)]
    profiles: usize,
    /// People of the burst run (5 events each).
    #[arg(long, default_value_t = 12_000)]
    people: usize,
    /// Events/s of the steady run (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    steady_rate: u64,
    /// Seconds of the steady run.
    #[arg(long, default_value_t = 20)]
    steady_seconds: u64,
    /// Messages per Segment batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent HTTP connections of the burst run.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Identity-merger replicas.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Leave ml-inference out of the fleet.
    #[arg(long)]
    no_ml: bool,
    /// Base URL ingest listens on (run.sh sets `INGEST_BIND` to match).
    #[arg(long, default_value = "http://127.0.0.1:18491")]
    ingest_url: String,
    /// Give up waiting for the pipeline to drain after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// After the run, print what the load asked of Postgres (top statements, table
    /// rows, WAL per 1,000 events); needs `pg_stat_statements` preloaded
    /// (`bench/pipeline/pgstat.sh`).
    #[arg(long)]
    pg_stats: bool,
    /// Measure right after seeding `--profiles`, without the `CHECKPOINT` that
    /// otherwise follows the seed's `VACUUM ANALYZE` (the bulk load's dirty pages are
    /// then written while the load runs, as they are not in a long-lived database).
    #[arg(long)]
    no_checkpoint: bool,
}

/// Messages per person: three anonymous product views, an identify, an order.
const EVENTS_PER_PERSON: usize = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    require_bench_database(&settings)?;
    let db = fresh_database(&settings, 4).await?;
    clear_prefix(&settings).await?;
    let result = run(&cli, &settings, &db).await;
    db.close().await;
    clear_prefix(&settings).await?;
    result
}

async fn run(cli: &Cli, settings: &Settings, db: &PgPool) -> anyhow::Result<()> {
    println!("load before the run: {}", load_average());

    // The machine's limits, in this run.
    let upserts = upsert_rate(db).await?;
    let xadds = redis_xadd_rate(settings).await?;
    let (engine, _) = engine_rate(
        settings,
        &generate(&IdentityConfig::with_customers(750)).events,
    );
    println!(
        "limits here: Postgres batched upsert {upserts:.0} rows/s | Redis XADD {xadds:.0} entries/s | \
         pure engine {engine:.0} events/s"
    );

    let settle = if cli.no_checkpoint {
        Settle::VacuumOnly
    } else {
        Settle::Checkpoint
    };
    seed_profiles(settings, db, cli.profiles, settle).await?;
    // The fleet.
    let bins = release_dir()?;
    let integration = create_integration(settings, db).await?;
    let mut fleet = Fleet::start(&bins, cli)?;
    wait_ready(&cli.ingest_url).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.connections.max(2))
        .build()?;
    let target = Arc::new(Target {
        client,
        url: format!("{}/v1/batch", cli.ingest_url.trim_end_matches('/')),
        key: integration,
        batch: cli.batch.max(EVENTS_PER_PERSON),
    });

    if cli.pg_stats {
        bench_support::pgstats::reset(db).await?;
    }
    let mut next_person: u64 = 0;
    let mut all_posted: u64 = 0;
    let load_started = Utc::now();
    if cli.steady_rate > 0 {
        let people = (cli.steady_rate * cli.steady_seconds) as usize / EVENTS_PER_PERSON;
        let started = Utc::now();
        let sent = post_people(&target, next_person, people, Some(cli.steady_rate), 4).await?;
        next_person += people as u64;
        all_posted += sent;
        drain(db, settings, load_started, cli.timeout).await?;
        let f = freshness(db, started).await?;
        println!(
            "steady {} events/s for {}s ({sent} events, {} profiles before): freshness p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms | load {}",
            cli.steady_rate,
            cli.steady_seconds,
            cli.profiles,
            f.p50_ms,
            f.p99_ms,
            f.max_ms,
            load_average()
        );
    }

    // The burst: as fast as ingest takes it, until every event is attached.
    let started = Utc::now();
    let clock = Instant::now();
    let before = fleet.cpu();
    let stages = StageWatch::start(settings, db).await?;
    let posted = post_people(&target, next_person, cli.people, None, cli.connections).await?;
    let posting = clock.elapsed();
    drain(db, settings, load_started, cli.timeout).await?;
    let elapsed = clock.elapsed();
    let timeline = stages.stop().await?;
    let after = fleet.cpu();
    let f = freshness(db, started).await?;
    let rate = posted as f64 / elapsed.as_secs_f64();
    println!(
        "burst: {posted} events of {} people posted in {:.1}s, all attached after {:.1}s = {rate:.0} events/s end to end \
         ({} profiles before, {} merger replica(s)) | freshness p50 {:.0} ms, p99 {:.0} ms | load {}",
        cli.people,
        posting.as_secs_f64(),
        elapsed.as_secs_f64(),
        cli.profiles,
        cli.replicas,
        f.p50_ms,
        f.p99_ms,
        load_average()
    );
    println!(
        "  as shares of the limits: {:.3} of the Postgres batched upsert rate, {:.3} of the Redis XADD rate, \
         {:.3} of the pure engine",
        rate / upserts,
        rate / xadds,
        rate / engine
    );
    let wall = elapsed.as_secs_f64();
    let mut line = String::from("  CPU (cores) while it ran:");
    for (name, used) in &after.by_name {
        let was = before.by_name.get(name).copied().unwrap_or(0.0);
        line.push_str(&format!(" {name} {:.2} |", (used - was) / wall));
    }
    line.push_str(&format!(
        " whole machine {:.2} of {} cores",
        (after.machine - before.machine) / wall,
        cores()
    ));
    println!("{line}");
    println!("{}", timeline.describe(posted, posting));
    let outcome = sqlx::query_as::<_, (i64, i64, i64)>(
        "SELECT (SELECT count(*) FROM customer_profile WHERE merged_into IS NULL), \
                (SELECT count(*) FROM merge_history), \
                (SELECT count(*) FROM merge_history WHERE rule = 'replay')",
    )
    .fetch_one(db)
    .await?;
    println!(
        "  live profiles {}, merges {} ({} from region replays)",
        outcome.0, outcome.1, outcome.2
    );
    fleet.stop();
    if cli.pg_stats {
        bench_support::pgstats::report(db, all_posted + posted).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- limits

/// Entries/s of pipelined `XADD` (1,000 a pipeline) of a ~700-byte envelope.
async fn redis_xadd_rate(settings: &Settings) -> anyhow::Result<f64> {
    let mut conn = redis::Client::open(settings.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let key = format!("{}limit.xadd", settings.stream_prefix);
    let body = "x".repeat(700);
    let entries = 200_000usize;
    let started = Instant::now();
    for _ in 0..entries / 1_000 {
        let mut pipe = redis::pipe();
        for _ in 0..1_000 {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(100_000)
                .arg("*")
                .arg("e")
                .arg(&body)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    let rate = entries as f64 / started.elapsed().as_secs_f64();
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(rate)
}

// ---------------------------------------------------------------- existing profiles

/// Puts `count` resolved people in place (`bench_support::seed`: one identify event
/// each — e-mail, phone, user id — stored by the normalizer's writer and resolved by the
/// rebuild's code in bulk), so the hot path meets a database of that size; `settle`
/// says whether a `CHECKPOINT` follows.
async fn seed_profiles(
    settings: &Settings,
    db: &PgPool,
    count: usize,
    settle: Settle,
) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let redis = redis::Client::open(settings.redis_url.as_str())?;
    let redis = redis::aio::ConnectionManager::new(redis).await?;
    let resolver = Resolver::new(db.clone(), redis, settings).await?;
    let seeded = seed_people(db, &resolver, count, settle).await?;
    let checkpoint = seeded.checkpoint.map_or_else(
        || String::from("no CHECKPOINT after it (--no-checkpoint)"),
        |t| format!("CHECKPOINT in {:.1}s", t.as_secs_f64()),
    );
    println!(
        "existing profiles: {} ({} identify events stored and resolved in {:.1}s, \
         {:.0} people/s; outboxes emptied and VACUUM ANALYZE in {:.1}s, {checkpoint}) | load {}",
        seeded.profiles,
        seeded.events,
        seeded.load.as_secs_f64(),
        seeded.events as f64 / seeded.load.as_secs_f64(),
        seeded.vacuum.as_secs_f64(),
        load_average()
    );
    Ok(())
}

// ---------------------------------------------------------------- the fleet

struct Fleet {
    children: Vec<(String, Child)>,
}

/// CPU seconds used so far, per process name and by the whole machine.
struct Cpu {
    by_name: BTreeMap<String, f64>,
    machine: f64,
}

impl Fleet {
    fn start(bins: &Path, cli: &Cli) -> anyhow::Result<Self> {
        let mut names: Vec<(&str, &str)> = vec![("ingest", ""), ("normalizer", "NORMALIZER_BIND")];
        names.extend(std::iter::repeat_n(
            ("identity-merger", "IDENTITY_MERGER_BIND"),
            cli.replicas.max(1),
        ));
        if !cli.no_ml {
            names.push(("ml-inference", "ML_INFERENCE_BIND"));
        }
        let mut children = Vec::new();
        for (name, bind) in names {
            let path = bins.join(name);
            anyhow::ensure!(
                path.is_file(),
                "{} missing: cargo build --release -p {name}",
                path.display()
            );
            let mut cmd = Process::new(&path);
            if !bind.is_empty() {
                cmd.env(bind, "127.0.0.1:0");
            }
            let child = cmd
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {name}"))?;
            children.push((name.to_owned(), child));
        }
        Ok(Self { children })
    }

    fn cpu(&self) -> Cpu {
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for (name, child) in &self.children {
            *by_name.entry(name.clone()).or_default() += process_cpu(child.id()).unwrap_or(0.0);
        }
        for server in ["postgres", "redis-server"] {
            let used: f64 = processes_named(server)
                .into_iter()
                .filter_map(process_cpu)
                .sum();
            by_name.insert(format!("{server} (shared)"), used);
        }
        by_name.insert(
            "load generator".into(),
            process_cpu(std::process::id()).unwrap_or(0.0),
        );
        Cpu {
            by_name,
            machine: machine_busy().unwrap_or(0.0),
        }
    }

    fn stop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

const TICKS: f64 = 100.0;

/// utime + stime of a process, in seconds.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

fn processes_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == name || c.trim().starts_with(name))
        })
        .collect()
}

/// Busy CPU seconds of the whole machine (every core) since boot.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)?;
    Some(busy / TICKS)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn create_integration(settings: &Settings, db: &PgPool) -> anyhow::Result<String> {
    let key = storage::secrets::SecretsKey::from_base64(
        settings
            .integration_secrets_key
            .as_ref()
            .map(config::ExposeSecret::expose_secret)
            .context("INTEGRATION_SECRETS_KEY is not set (run.sh sets one)")?,
    )?;
    let seg = ingestion::integrations::create(db, &key, "segment", "bench-pipeline", None).await?;
    Ok(seg.secret.clone())
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client
            .get(format!("{}/readyz", url.trim_end_matches('/')))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("ingest not ready at {url} after 30 s")
}

// ---------------------------------------------------------------- load

struct Target {
    client: reqwest::Client,
    url: String,
    key: String,
    batch: usize,
}

/// The five Segment messages of person `n`, occurring over the last few seconds in the
/// order a shopper makes them: three anonymous product views, logging in, an order.
fn person(n: u64, now: DateTime<Utc>, out: &mut Vec<serde_json::Value>) {
    let anon = format!("anon-{n}");
    let user = format!("user-{n}");
    let at = |s: i64| (now - chrono::Duration::milliseconds(s)).to_rfc3339();
    for (k, sku) in [(900, 11), (700, 12), (500, 13)] {
        let sku = (n * 7 + sku) % 2_000;
        out.push(serde_json::json!({
            "type": "track", "event": "Product Viewed", "anonymousId": anon,
            "messageId": format!("view-{n}-{k}"), "timestamp": at(k),
            "context": {"ip": "203.0.113.24", "page": {"path": format!("/products/p{sku}")}},
            "properties": {"product_id": format!("P{sku}"), "sku": format!("SKU-{sku}"),
                           "name": "Linen Kurta", "category": "Kurtas", "price": 899, "currency": "INR"}
        }));
    }
    out.push(serde_json::json!({
        "type": "identify", "userId": user, "anonymousId": anon,
        "messageId": format!("identify-{n}"), "timestamp": at(300),
        "traits": {"email": format!("shopper{n}@mail.example"), "phone": phone(n),
                   "firstName": "Asha", "lastName": format!("Shopper{n}")}
    }));
    out.push(serde_json::json!({
        "type": "track", "event": "Order Completed", "userId": user, "anonymousId": anon,
        "messageId": format!("order-{n}"), "timestamp": at(100),
        "properties": {"order_id": format!("BENCH-{n}"), "total": 1798, "currency": "INR",
                       "products": [{"product_id": format!("P{}", (n * 7 + 11) % 2_000),
                                     "sku": format!("SKU-{}", (n * 7 + 11) % 2_000),
                                     "price": 899, "quantity": 2}]}
    }));
}

/// Posts `people` people from `first` on, `connections` requests at a time, at `rate`
/// events/s (or as fast as ingest takes them). Returns the events accepted.
async fn post_people(
    target: &Arc<Target>,
    first: u64,
    people: usize,
    rate: Option<u64>,
    connections: usize,
) -> anyhow::Result<u64> {
    let per_batch = (target.batch / EVENTS_PER_PERSON).max(1);
    let batches = people.div_ceil(per_batch);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let target = target.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed) as usize;
                if b >= batches {
                    return Ok::<u64, anyhow::Error>(accepted);
                }
                if let Some(rate) = rate {
                    let due = Duration::from_secs_f64(
                        (b * per_batch * EVENTS_PER_PERSON) as f64 / rate as f64,
                    );
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                let from = b * per_batch;
                let to = ((b + 1) * per_batch).min(people);
                let now = Utc::now();
                let mut messages = Vec::with_capacity((to - from) * EVENTS_PER_PERSON);
                for p in from..to {
                    person(first + p as u64, now, &mut messages);
                }
                let body = serde_json::json!({"batch": messages, "sentAt": now.to_rfc3339()});
                let mut tries = 0;
                loop {
                    let resp = target
                        .client
                        .post(&target.url)
                        .basic_auth(&target.key, Some(""))
                        .json(&body)
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            accepted += messages.len() as u64;
                            break;
                        }
                        Ok(r) if tries < 20 => {
                            tries += 1;
                            let status = r.status();
                            let _ = r.bytes().await;
                            if tries == 1 {
                                eprintln!("ingest answered {status}; retrying");
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(r) => anyhow::bail!(
                            "ingest refused a batch: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        ),
                        Err(e) if tries < 20 => {
                            tries += 1;
                            eprintln!("posting failed ({e}); retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    Ok(accepted)
}

/// Waits until every raw event stored since `since` is normalised and every normalised
/// event is attached to a profile. Each poll is cheap whatever the database's size: it
/// asks Redis how many entries wait for each stage (`XINFO GROUPS`, acknowledged after
/// commit) and Postgres for stored rows not yet attached (the unresolved events have an
/// index of their own); only when both are zero does it count this run's raw events
/// against its attached events (index ranges of this run, but tens of milliseconds
/// under load: the merger stores each event's row attached, so "no unresolved row" alone
/// no longer says the merger is done). So the waiting does not compete with the
/// pipeline it waits for.
async fn drain(
    db: &PgPool,
    settings: &Settings,
    since: DateTime<Utc>,
    timeout: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = redis::Client::open(settings.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    loop {
        let mut waiting = 0;
        for (group, topic) in STAGES {
            let key = topic.key(&settings.stream_prefix);
            waiting += group_progress(&mut conn, &key, group).await?.1;
        }
        let open: i64 = if waiting == 0 {
            sqlx::query_scalar("SELECT count(*) FROM normalized_event WHERE resolved_at IS NULL")
                .fetch_one(db)
                .await?
        } else {
            -1
        };
        let (raw, normalized) = if open == 0 {
            // The load's events occur at most a second before they are posted; the
            // existing profiles' events a year before.
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT (SELECT count(*) FROM customer_raw_event WHERE received_at >= $1), \
                        (SELECT count(*) FROM normalized_event \
                          WHERE occurred_at >= $1 - interval '1 hour' AND integration_id IS NOT NULL)",
            )
            .bind(since)
            .fetch_one(db)
            .await?
        } else {
            (-1, -1)
        };
        if open == 0 && normalized >= raw {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(timeout),
            "not drained after {timeout} s: {waiting} stream entries waiting, {open} unresolved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- stages

/// The consuming stages of the pipeline, each a consumer group on its input stream.
const STAGES: [(&str, Topic); 2] = [
    (normalizer::GROUP, Topic::EventsRaw),
    (identity_merger::GROUP, Topic::EventsNormalized),
];

/// Watches each stage's consumer group during the burst (every 100 ms, `XINFO GROUPS`:
/// O(1) in Redis): how many entries it has handled and how many wait for it. The stage
/// whose backlog grows is the bottleneck. Once a second it also asks Postgres which
/// tables of the benchmark database a vacuum is working on (`pg_stat_progress_vacuum`,
/// a row per running vacuum: O(1) in the database's size), so background work that
/// competes with the burst is seen, not guessed.
struct StageWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Timeline>>,
}

/// What the watch saw of every stage, and of vacuums.
struct Timeline {
    stages: Vec<Stage>,
    /// Samples of `pg_stat_progress_vacuum` taken, and per table how many of them
    /// found a vacuum working on it.
    vacuum_samples: u32,
    vacuuming: BTreeMap<String, u32>,
}

/// One stage: entries it had handled when the watch began, and samples of (seconds
/// since then, entries handled since then, entries waiting).
struct Stage {
    name: &'static str,
    baseline: u64,
    samples: Vec<(f64, u64, u64)>,
}

impl StageWatch {
    async fn start(settings: &Settings, db: &PgPool) -> anyhow::Result<Self> {
        let db = db.clone();
        let mut conn = redis::Client::open(settings.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let keys: Vec<String> = STAGES
            .iter()
            .map(|(_, t)| t.key(&settings.stream_prefix))
            .collect();
        let mut stages = Vec::new();
        for ((group, _), key) in STAGES.iter().zip(&keys) {
            let (handled, _) = group_progress(&mut conn, key, group).await?;
            stages.push(Stage {
                name: group,
                baseline: handled,
                samples: Vec::new(),
            });
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut timeline = Timeline {
                stages,
                vacuum_samples: 0,
                vacuuming: BTreeMap::new(),
            };
            let clock = Instant::now();
            let mut tick = 0u32;
            while !flag.load(Ordering::Relaxed) {
                let at = clock.elapsed().as_secs_f64();
                if tick.is_multiple_of(10) {
                    let tables: Vec<String> = sqlx::query_scalar(
                        "SELECT relid::regclass::text FROM pg_stat_progress_vacuum \
                         WHERE datname = current_database()",
                    )
                    .fetch_all(&db)
                    .await?;
                    timeline.vacuum_samples += 1;
                    for table in tables {
                        *timeline.vacuuming.entry(table).or_default() += 1;
                    }
                }
                tick += 1;
                for ((group, _), (key, stage)) in STAGES
                    .iter()
                    .zip(keys.iter().zip(timeline.stages.iter_mut()))
                {
                    let (handled, waiting) = group_progress(&mut conn, key, group).await?;
                    stage
                        .samples
                        .push((at, handled.saturating_sub(stage.baseline), waiting));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(timeline)
        });
        Ok(Self { stop, task })
    }

    async fn stop(self) -> anyhow::Result<Timeline> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

/// Entries a group has handled (read and acknowledged) and entries waiting for it (not
/// yet read, or read and not acknowledged).
async fn group_progress(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    group: &str,
) -> anyhow::Result<(u64, u64)> {
    let exists: bool = redis::cmd("EXISTS").arg(key).query_async(conn).await?;
    if !exists {
        return Ok((0, 0));
    }
    let reply: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await?;
    let Some(g) = reply.groups.into_iter().find(|g| g.name == group) else {
        return Ok((0, 0));
    };
    let read = g.entries_read.unwrap_or(0) as u64;
    let pending = g.pending as u64;
    Ok((
        read.saturating_sub(pending),
        g.lag.unwrap_or(0) as u64 + pending,
    ))
}

impl Timeline {
    /// One line per stage: when it had handled every event of the burst, its rate up
    /// to then, and its largest backlog.
    fn describe(&self, events: u64, posting: Duration) -> String {
        let mut out = format!(
            "  stages: ingest stored every event after {:.1}s ({:.0} events/s)",
            posting.as_secs_f64(),
            events as f64 / posting.as_secs_f64()
        );
        for Stage { name, samples, .. } in &self.stages {
            let done = samples.iter().find(|(_, handled, _)| *handled >= events);
            let most = samples.iter().map(|s| s.2).max().unwrap_or(0);
            match done {
                Some((at, _, _)) => out.push_str(&format!(
                    " | {name} after {at:.1}s ({:.0} events/s), backlog at most {most}",
                    events as f64 / at
                )),
                None => out.push_str(&format!(
                    " | {name}: {} handled, backlog at most {most}",
                    samples.last().map_or(0, |s| s.1)
                )),
            }
        }
        out.push_str(&format!(
            "\n  vacuums seen during the burst (pg_stat_progress_vacuum, {} samples a second apart):",
            self.vacuum_samples
        ));
        if self.vacuuming.is_empty() {
            out.push_str(" none");
        }
        for (table, seen) in &self.vacuuming {
            out.push_str(&format!(" {table} in {seen} |"));
        }
        out
    }
}

struct Freshness {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Freshness (`resolved_at − received_at`) of the events received since `since`.
async fn freshness(db: &PgPool, since: DateTime<Utc>) -> anyhow::Result<Freshness> {
    let (p50, p99, max): (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) \
         FROM (SELECT (extract(epoch FROM resolved_at - received_at) * 1000)::float8 AS ms \
               FROM normalized_event WHERE received_at >= $1 AND integration_id IS NOT NULL) f",
    )
    .bind(since)
    .fetch_one(db)
    .await?;
    Ok(Freshness {
        p50_ms: p50.unwrap_or(0.0),
        p99_ms: p99.unwrap_or(0.0),
        max_ms: max.unwrap_or(0.0),
    })
}
