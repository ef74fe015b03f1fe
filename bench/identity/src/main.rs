//! `bench-identity`: how fast identity resolution runs on this machine, next to what
//! this machine's Postgres does at all and what the pure engine does without it,
//! measured in the same run. `bench/identity/run.sh` wraps it (release build).
//!
//! - `stream --people N --replicas 1,3`: for each replica count, a fresh database gets
//!   the scenario's events stored (as the normalizer would) and published on
//!   `events.normalized`; that many `identity-merger` processes (the release binary) are
//!   started and timed until every event is resolved. Prints events/s and the ratio to
//!   the pure engine's events/s on the same events (the ceiling of the rules alone),
//!   plus the Postgres ceilings: sequential round trips/s and rows/s of a batched upsert
//!   shaped like the identifier index. `--shuffle-window N` delivers the events out of
//!   time order (scrambled within each run of N) to measure what late events cost;
//!   `--pg-stats` prints what each run asked of Postgres per 1,000 events. Each run
//!   also prints what the mergers counted of late events (read from their `/metrics`):
//!   how many were applied in place, the region replays and the events they re-applied,
//!   and the events resolved by replays, by cause.
//! - `lateness --people N --shuffle-window W --batch B`: what late events look like and
//!   what resolving them costs, in memory (no database, deterministic): the scenario
//!   delivered as `stream` delivers it to a merger with a backlog — through the
//!   consumer's ordering window (`streams::window`; `--no-window`: batches as read),
//!   each step's events sorted as the merger's step sorts them — through the in-memory
//!   resolver twice — replaying every late event's region (the
//!   old path) and applying settled, witnessed late events in place — printing how far
//!   back late events land, how many replays and how many events they re-apply, and why
//!   the late events that replay could not be applied in place.
//! - `rebuild --events N`: stores about N scenario events (streamed person by person,
//!   never all in memory), then times `ctl identity rebuild` (the release binary) on
//!   them, and the time it takes just to read the events back (the read ceiling).

use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bench_support::{
    clear_prefix, engine_rate, fresh_database, load_average, release_binary,
    require_bench_database, round_trip_rate, upsert_rate,
};
use clap::{Parser, Subcommand};
use config::Settings;
use domain::NormalizedEvent;
use identity::engine::{Constraints, Engine};
use identity::memory::MemoryResolver;
use identity::model::{EventKey, Observation, ProfileIds};
use identity::rules::Policy;
use scenario::brand::Simulator;
use scenario::identity::{IdentityConfig, generate, person_events};
use sqlx::PgPool;
use streams::{Envelope, Streams, Topic};

#[derive(Parser)]
#[command(name = "bench-identity", about = "Identity resolution benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Events/s through N merger replicas (one fresh database per run).
    Stream {
        /// People in the scenario (750 gives about 60,000 events).
        #[arg(long, default_value_t = 750)]
        people: usize,
        /// Replica counts to run, comma separated.
        #[arg(long, default_value = "1,3")]
        replicas: String,
        /// Deliver the events out of time order: each run of this many consecutive
        /// events (in time order) is published in a fixed scrambled order, so events
        /// arrive up to that many places late, as retries and per-lane senders deliver
        /// them. 0 (the default) publishes in time order; a number above the event
        /// count shuffles the whole stream.
        #[arg(long, default_value_t = 0)]
        shuffle_window: usize,
        /// Print what each run asked of Postgres per 1,000 events (top statements,
        /// rows per table, WAL); needs `pg_stat_statements` preloaded
        /// (`PGSTAT_BENCH=identity bench/pipeline/pgstat.sh stream …` starts such a server).
        #[arg(long)]
        pg_stats: bool,
    },
    /// What late events look like and what resolving them costs, in memory.
    Lateness {
        /// People in the scenario (750 gives about 60,000 events).
        #[arg(long, default_value_t = 750)]
        people: usize,
        /// As `stream --shuffle-window`.
        #[arg(long, default_value_t = 2_000)]
        shuffle_window: usize,
        /// Events per merger step (`IDENTITY_MERGER_BATCH_SIZE`).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Hand each batch over as read, as the merger's consumer did before its
        /// ordering window (by default batches go through the window, as the merger
        /// reads a backlog: `streams::window`).
        #[arg(long)]
        no_window: bool,
    },
    /// Time `ctl identity rebuild` on about this many stored events.
    Rebuild {
        /// Events to store.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    require_bench_database(&settings)?;
    match cli.command {
        Command::Stream {
            people,
            replicas,
            shuffle_window,
            pg_stats,
        } => {
            let counts: Vec<usize> = replicas
                .split(',')
                .map(|r| r.trim().parse())
                .collect::<Result<_, _>>()
                .context("--replicas is a comma separated list of numbers")?;
            stream(&settings, people, &counts, shuffle_window, pg_stats).await
        }
        Command::Lateness {
            people,
            shuffle_window,
            batch,
            no_window,
        } => {
            lateness(&settings, people, shuffle_window, batch, !no_window);
            Ok(())
        }
        Command::Rebuild { events } => rebuild(&settings, events).await,
    }
}

/// Sequential round trips/s, and rows/s of a batched upsert like the identifier index.
async fn postgres_ceilings(db: &PgPool) -> anyhow::Result<(f64, f64)> {
    Ok((round_trip_rate(db).await?, upsert_rate(db).await?))
}

/// `events` (in time order) in delivery order: within each run of `window` events a
/// fixed permutation (an odd multiplier scrambles the v7 ids' time prefix, as the
/// streaming tests' shuffle does); `window` 0 keeps time order.
fn delivery_order(events: &[NormalizedEvent], window: usize) -> Vec<&NormalizedEvent> {
    let mut out: Vec<&NormalizedEvent> = events.iter().collect();
    if window > 1 {
        for run in out.chunks_mut(window) {
            run.sort_by_key(|e| {
                e.event_id
                    .as_u128()
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
            });
        }
    }
    out
}

/// Delivers the scenario as `stream` does, each batch sorted as the merger's step sorts
/// it, through the in-memory resolver with and without late events applied in place.
fn lateness(settings: &Settings, people: usize, shuffle_window: usize, batch: usize, window: bool) {
    let s = generate(&IdentityConfig::with_customers(people));
    let delivered = delivery_order(&s.events, shuffle_window);
    let mut arrivals: Vec<Observation> = Vec::with_capacity(delivered.len());
    // The whole stream is waiting (a backlog), so every full read may be held back.
    let mut held = Vec::new();
    for chunk in delivered.chunks(batch.max(1)) {
        let read: Vec<Observation> = chunk.iter().map(|e| Observation::of(e)).collect();
        let more_waiting = window && read.len() >= batch;
        let (now, later) = streams::window::split(
            held,
            read,
            batch,
            streams::window::MAX_HOLDS,
            more_waiting,
            |o: &Observation| o.key,
        );
        held = later;
        // Each step applies its events sorted, as the merger's step sorts them.
        arrivals.extend(now);
    }
    arrivals.extend(held.into_iter().map(|(_, o)| o));
    // How far back late events land: events already delivered that come later in time.
    let mut canonical: Vec<EventKey> = arrivals.iter().map(|o| o.key).collect();
    canonical.sort();
    let rank = |k: &EventKey| canonical.binary_search(k).unwrap_or_default();
    let mut seen = Fenwick::new(canonical.len());
    let mut back: Vec<usize> = Vec::new();
    for (n, o) in arrivals.iter().enumerate() {
        let r = rank(&o.key);
        let later = n - seen.count_upto(r);
        if later > 0 {
            back.push(later);
        }
        seen.add(r);
    }
    back.sort_unstable();
    let at =
        |q: f64| back.get(((back.len() as f64 * q) as usize).min(back.len().saturating_sub(1)));
    println!(
        "{} events, batches of {batch}{}, shuffled within runs of {shuffle_window}: {} arrive \
         after a later event (places back: median {:?}, p90 {:?}, max {:?})",
        arrivals.len(),
        if window {
            " through the ordering window"
        } else {
            " as read"
        },
        back.len(),
        at(0.5),
        at(0.9),
        back.last(),
    );
    let policy = Policy::from_settings(&settings.identity);
    for settling in [false, true] {
        let mut m = MemoryResolver::new(
            Engine::new(policy.clone(), ProfileIds::TIME_ORDERED),
            Constraints::default(),
        );
        if !settling {
            m = m.replaying_every_late_event();
        }
        let started = Instant::now();
        for o in &arrivals {
            m.ingest(o.clone());
        }
        println!(
            "{}: {} replays re-applying {} events ({:.1} per replay), {} late events applied in \
             place, {} profiles, {:.2} s CPU in memory{}",
            if settling {
                "late events applied in place when settled"
            } else {
                "every late event replays its region"
            },
            m.replays,
            m.replayed_events,
            m.replayed_events as f64 / m.replays.max(1) as f64,
            m.settled,
            m.graph.profiles.len(),
            started.elapsed().as_secs_f64(),
            if settling {
                let why: Vec<String> = m
                    .unsettled
                    .iter()
                    .map(|(w, n)| format!("{} {n}", w.as_str()))
                    .collect();
                format!(" | late events replayed, by why: {}", why.join(", "))
            } else {
                String::new()
            },
        );
    }
}

/// Counts of ranks seen so far (a binary indexed tree).
struct Fenwick(Vec<usize>);

impl Fenwick {
    fn new(n: usize) -> Self {
        Self(vec![0; n + 1])
    }

    fn add(&mut self, rank: usize) {
        let mut i = rank + 1;
        while i < self.0.len() {
            self.0[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// How many ranks `<= rank` were added.
    fn count_upto(&self, rank: usize) -> usize {
        let (mut i, mut sum) = (rank + 1, 0);
        while i > 0 {
            sum += self.0[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

async fn stream(
    settings: &Settings,
    people: usize,
    counts: &[usize],
    shuffle_window: usize,
    pg_stats: bool,
) -> anyhow::Result<()> {
    let merger = release_binary("identity-merger")?;
    let s = generate(&IdentityConfig::with_customers(people));
    let events = s.events.len();
    let delivered = delivery_order(&s.events, shuffle_window);
    let displaced = delivered
        .iter()
        .zip(&s.events)
        .filter(|(a, b)| a.event_id != b.event_id)
        .count();
    println!(
        "scenario: {people} people, {events} events, delivered {} ({displaced} out of place)",
        if shuffle_window > 1 {
            format!("shuffled within runs of {shuffle_window}")
        } else {
            "in time order".to_owned()
        }
    );

    // The rules alone: the whole event set through the pure engine, in memory.
    let (engine_rate, profiles) = engine_rate(settings, &s.events);
    println!(
        "pure engine: {engine_rate:.0} events/s ({profiles} profiles) | load {}",
        load_average()
    );

    for &replicas in counts {
        let db = fresh_database(settings, 8).await?;
        clear_prefix(settings).await?;
        let (round_trips, upserts) = postgres_ceilings(&db).await?;
        identity::seed::store_events(&db, &s.events).await?;
        let streams = Streams::connect(
            &settings.redis_url,
            settings.stream_prefix.clone(),
            10_000_000,
        )
        .await?;
        for chunk in delivered.chunks(5_000) {
            let envs: Vec<Envelope<&NormalizedEvent>> = chunk
                .iter()
                .map(|e| Envelope::new(e.event_id, "normalizer", e.event_type.as_str(), *e))
                .collect();
            streams.publish_many(Topic::EventsNormalized, &envs).await?;
        }
        if pg_stats {
            bench_support::pgstats::reset(&db).await?;
        }
        // Each replica's ops port, to read its late-event counters at the end.
        let binds: Vec<String> = (0..replicas)
            .map(|_| {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                Ok(format!("127.0.0.1:{port}"))
            })
            .collect::<std::io::Result<_>>()?;
        let started = Instant::now();
        let mut children: Vec<Child> = binds
            .iter()
            .map(|bind| {
                Process::new(&merger)
                    .env("IDENTITY_MERGER_BIND", bind)
                    .stdout(Stdio::null())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        loop {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM normalized_event WHERE resolved_at IS NULL",
            )
            .fetch_one(&db)
            .await?;
            if left == 0 {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(1_800),
                "not done after 30 minutes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let elapsed = started.elapsed();
        let cpu: f64 = children
            .iter()
            .filter_map(|c| bench_support::cpu_seconds(c.id()))
            .sum();
        let late = late_counts(&binds).await?;
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let rate = events as f64 / elapsed.as_secs_f64();
        let (replays, merges): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM merge_history WHERE rule = 'replay'), (SELECT count(*) FROM merge_history)",
        )
        .fetch_one(&db)
        .await?;
        println!(
            "{replicas} replica(s): {events} events in {:.1}s = {rate:.0} events/s | {:.1}% of the pure engine | \
             Postgres here: {round_trips:.0} round trips/s, {upserts:.0} upserted rows/s | \
             {:.3} events per round trip | {merges} merges ({replays} from replays) | \
             merger CPU {cpu:.1} s ({:.0} ms per 1,000 events) | load {}",
            elapsed.as_secs_f64(),
            100.0 * rate / engine_rate,
            rate / round_trips,
            1_000.0 * cpu * 1_000.0 / events as f64,
            load_average(),
        );
        println!("{}", late.line());
        if pg_stats {
            bench_support::pgstats::report(&db, events as u64).await?;
        }
        db.close().await;
    }
    clear_prefix(settings).await?;
    Ok(())
}

/// What the mergers report about late events: how many were applied in place, and the
/// events their steps resolved by a region replay, by cause (`identity_replayed_events_total`).
#[derive(Default)]
struct LateCounts {
    in_place: u64,
    replays: u64,
    region_events: u64,
    replayed: std::collections::BTreeMap<String, u64>,
}

impl LateCounts {
    fn line(&self) -> String {
        let total: u64 = self.replayed.values().sum();
        let causes: Vec<String> = self
            .replayed
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        format!(
            "  late events applied in place: {} | {} region replays re-applying {} events and \
             resolving {total} of the step's, by cause: {}",
            self.in_place,
            self.replays,
            self.region_events,
            if causes.is_empty() {
                "none".to_owned()
            } else {
                causes.join(", ")
            },
        )
    }
}

/// Sums the late-event counters of the mergers listening on `binds`.
async fn late_counts(binds: &[String]) -> anyhow::Result<LateCounts> {
    let http = reqwest::Client::new();
    let mut counts = LateCounts::default();
    for bind in binds {
        let text = http
            .get(format!("http://{bind}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let value = value as u64;
            if name == "identity_late_events_in_place_total" {
                counts.in_place += value;
            } else if name == "identity_replays_total" {
                counts.replays += value;
            } else if name == "identity_replayed_region_events_total" {
                counts.region_events += value;
            } else if let Some(cause) = name
                .strip_prefix("identity_replayed_events_total{cause=\"")
                .and_then(|rest| rest.strip_suffix("\"}"))
            {
                *counts.replayed.entry(cause.to_owned()).or_default() += value;
            }
        }
    }
    Ok(counts)
}

async fn rebuild(settings: &Settings, target: usize) -> anyhow::Result<()> {
    let ctl = release_binary("ctl")?;
    let db = fresh_database(settings, 8).await?;
    let (round_trips, upserts) = postgres_ceilings(&db).await?;
    // About 80 events per person in the default brand.
    let people = (target / 80).max(1);
    let cfg = IdentityConfig::with_customers(people);
    let sim = Simulator::new(&cfg.brand);
    let started = Instant::now();
    let mut stored = 0usize;
    let mut pending: Vec<NormalizedEvent> = Vec::new();
    for person in 0..people as u32 {
        pending.extend(person_events(&cfg, &sim, person));
        if pending.len() >= 20_000 || person + 1 == people as u32 {
            stored += identity::seed::store_events(&db, &pending).await?;
            pending.clear();
        }
        if stored >= target {
            break;
        }
    }
    println!(
        "stored {stored} events of {people} people in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    sqlx::query("VACUUM ANALYZE normalized_event")
        .execute(&db)
        .await?;

    // The read ceiling: every event back, in canonical order, nothing else.
    let started = Instant::now();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT event_id, identifiers, traits, properties, order_data \
         FROM normalized_event ORDER BY occurred_at, event_id) e",
    )
    .fetch_one(&db)
    .await?;
    let read = started.elapsed();
    db.close().await;

    for run in [
        "first (every event unresolved)",
        "again (rebuild of a rebuilt graph)",
    ] {
        let started = Instant::now();
        let out = Process::new(&ctl).args(["identity", "rebuild"]).output()?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "ctl identity rebuild failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "ctl identity rebuild, {run}: {:.1}s for {n} events ({:.0} events/s; reading them alone takes {:.1}s) — {}",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            read.as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    println!(
        "Postgres here: {round_trips:.0} round trips/s, {upserts:.0} upserted rows/s | load {}",
        load_average()
    );
    Ok(())
}
