//! What the benchmarks in `bench/` share: a fresh throw-away database and stream prefix
//! per run, this machine's own limits measured in the same run (Postgres round trips and
//! batched upserts, the pure identity engine), the release binaries beside the benchmark
//! and the load average printed with every figure.
//!
//! Every benchmark refuses a `DATABASE_URL` whose database name does not contain
//! `bench` ([`require_bench_database`]), since [`fresh_database`] drops it first.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use config::Settings;
use domain::NormalizedEvent;
use identity::engine::Constraints;
use identity::memory::MemoryResolver;
use identity::{Engine, Observation, Policy};
use sqlx::PgPool;
use uuid::Uuid;

pub mod pgstats;
pub mod seed;

/// The database name of a Postgres URL (without query parameters).
pub fn database_name(url: &str) -> anyhow::Result<String> {
    let (_, name) = url
        .rsplit_once('/')
        .context("DATABASE_URL has no database name")?;
    Ok(name.split('?').next().unwrap_or(name).to_owned())
}

/// Fails unless `settings` name a benchmark database (its name contains `bench`) and a
/// stream prefix of their own: a benchmark drops and clears both.
pub fn require_bench_database(settings: &Settings) -> anyhow::Result<()> {
    anyhow::ensure!(
        database_name(&settings.database_url)?.contains("bench"),
        "DATABASE_URL must name a benchmark database (run the benchmark's run.sh)"
    );
    anyhow::ensure!(
        !settings.stream_prefix.is_empty(),
        "set STREAM_PREFIX for the benchmark"
    );
    Ok(())
}

/// Drops the benchmark database (if a previous run left it), creates and migrates it
/// again, and returns a pool of `connections` to it.
pub async fn fresh_database(settings: &Settings, connections: u32) -> anyhow::Result<PgPool> {
    let (base, _) = settings
        .database_url
        .rsplit_once('/')
        .context("DATABASE_URL has no database name")?;
    let name = database_name(&settings.database_url)?;
    let admin = storage::connect(&format!("{base}/postgres"), 1).await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        storage::quote_ident(&name)
    ))
    .execute(&admin)
    .await?;
    admin.close().await;
    storage::ensure_database(&settings.database_url).await?;
    let db = storage::connect(&settings.database_url, connections).await?;
    storage::migrate(&db).await?;
    Ok(db)
}

/// Deletes every Redis key under the settings' stream prefix.
pub async fn clear_prefix(settings: &Settings) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(settings.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", settings.stream_prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Sequential round trips/s (`SELECT 1`, one after the other) to `db`.
pub async fn round_trip_rate(db: &PgPool) -> anyhow::Result<f64> {
    let n = 2_000;
    let started = Instant::now();
    for _ in 0..n {
        sqlx::query("SELECT 1").execute(db).await?;
    }
    Ok(f64::from(n) / started.elapsed().as_secs_f64())
}

/// Rows/s of a batched `INSERT … SELECT FROM unnest … ON CONFLICT DO UPDATE` shaped like
/// the identifier index (200,000 rows, 5,000 a statement, into a temporary table).
pub async fn upsert_rate(db: &PgPool) -> anyhow::Result<f64> {
    let mut conn = db.acquire().await?;
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS ceiling (kind TEXT, value TEXT, profile_id UUID, \
         seen BIGINT, PRIMARY KEY (kind, value))",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query("TRUNCATE ceiling").execute(&mut *conn).await?;
    let rows = 200_000usize;
    let started = Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(5_000) {
        let kinds: Vec<&str> = chunk.iter().map(|_| "email").collect();
        let values: Vec<String> = chunk.iter().map(|i| format!("person{i}@mail.in")).collect();
        let profiles: Vec<Uuid> = chunk.iter().map(|_| Uuid::new_v4()).collect();
        sqlx::query(
            "INSERT INTO ceiling SELECT k, v, p, 1 FROM unnest($1::text[], $2::text[], $3::uuid[]) \
             AS u(k, v, p) ON CONFLICT (kind, value) DO UPDATE SET seen = ceiling.seen + 1",
        )
        .bind(&kinds)
        .bind(&values)
        .bind(&profiles)
        .execute(&mut *conn)
        .await?;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE ceiling")
        .execute(&mut *conn)
        .await?;
    Ok(rate)
}

/// The pure identity engine over `events` in memory (no I/O): events/s and the profiles
/// it makes.
pub fn engine_rate(settings: &Settings, events: &[NormalizedEvent]) -> (f64, usize) {
    let started = Instant::now();
    let m = MemoryResolver::rebuild(
        Engine::new(
            Policy::from_settings(&settings.identity),
            identity::model::ProfileIds::TIME_ORDERED,
        ),
        Constraints::default(),
        events.iter().map(Observation::of).collect(),
    );
    let rate = events.len() as f64 / started.elapsed().as_secs_f64();
    (rate, m.graph.profiles.len())
}

/// The folder of the running benchmark binary (the release binaries sit beside it).
pub fn release_dir() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.parent().context("binary folder")?.to_path_buf())
}

/// The release binary `name` beside the benchmark, or an error naming how to build it.
pub fn release_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = release_dir()?.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} missing: cargo build --release -p {name}",
        path.display()
    );
    Ok(path)
}

/// CPU seconds (user + system) process `pid` has used so far, from `/proc/{pid}/stat`
/// (clock ticks of 1/100 s, as Linux reports them); `None` if it cannot be read. A
/// count that a busy machine does not inflate the way it inflates wall time.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_of_this_process() {
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i.wrapping_mul(i)));
        }
        assert!(x > 0);
        let used = cpu_seconds(std::process::id()).expect("own /proc stat");
        assert!(used > 0.0, "{used}");
        assert!(cpu_seconds(u32::MAX).is_none());
    }

    #[test]
    fn database_names() {
        assert_eq!(
            database_name("postgres://u@h:5432/constintel_bench_x?sslmode=disable").unwrap(),
            "constintel_bench_x"
        );
        assert!(database_name("no-slash").is_err());
    }
}
