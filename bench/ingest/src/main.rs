//! `bench-ingest`: how fast ingest stores signed events durably on this machine, next to
//! what this machine's Redis and Postgres can do at all, measured in the same run.
//!
//! - `prepare` / `cleanup`: create (and migrate) or drop the benchmark database and
//!   delete the benchmark's Redis keys; `bench/ingest/run.sh` wraps the whole run.
//! - `load --url URL`: first measures the ceilings (pipelined `XADD` of an envelope-sized
//!   entry; ingest's own group-commit statement — raw rows and the batch's
//!   `raw_event_outbox_batch` row — into copies of those tables, with and without taking the rows out of the
//!   outbox as the publisher does), then drives the running ingest
//!   with signed Shopify `orders/create` webhooks, Segment batches and a mix of both, and
//!   prints events/s, requests/s, p50/p99 latency and the ratios to the ceilings. At the
//!   end it counts the rows in Postgres: only events actually committed are reported.
//! - `csv-memory --rows N`: imports a generated N-row customer CSV through the importer
//!   and samples this process's resident memory while it runs (N/10 rows first, so the
//!   two peaks can be compared: flat memory means the same peak).

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use config::Settings;
use domain::Source;
use ingestion::raw_event::NewRawEvent;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "bench-ingest",
    about = "Ingest throughput and CSV memory benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create and migrate the benchmark database (DATABASE_URL) and clear its stream keys.
    Prepare,
    /// Drop the benchmark database and delete its stream keys.
    Cleanup,
    /// Drive a running ingest and measure the machine's ceilings in the same run.
    Load {
        /// Base URL of the running ingest.
        #[arg(long, default_value = "http://127.0.0.1:18481")]
        url: String,
        /// Seconds per scenario.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Concurrent HTTP connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Messages per Segment batch.
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// Import a generated customer CSV and report this process's memory.
    CsvMemory {
        /// Rows of the large file (a file a tenth that size is imported first).
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    match cli.command {
        Command::Prepare => prepare(&settings).await,
        Command::Cleanup => cleanup(&settings).await,
        Command::Load {
            url,
            seconds,
            connections,
            batch,
        } => load(&settings, &url, seconds, connections.max(2), batch.max(1)).await,
        Command::CsvMemory { rows } => csv_memory(&settings, rows).await,
    }
}

async fn prepare(settings: &Settings) -> anyhow::Result<()> {
    storage::ensure_database(&settings.database_url).await?;
    let db = storage::connect(&settings.database_url, 2).await?;
    storage::migrate(&db).await?;
    delete_keys(settings).await?;
    println!(
        "benchmark database {} ready",
        settings.database_url_redacted()
    );
    Ok(())
}

async fn cleanup(settings: &Settings) -> anyhow::Result<()> {
    delete_keys(settings).await?;
    let name = settings
        .database_url
        .rsplit('/')
        .next()
        .and_then(|n| n.split('?').next())
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(
        name.contains("bench"),
        "refusing to drop `{name}`: not a benchmark database"
    );
    let admin_url = settings
        .database_url
        .replacen(&format!("/{name}"), "/postgres", 1);
    let admin = storage::connect(&admin_url, 1).await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        storage::quote_ident(&name)
    ))
    .execute(&admin)
    .await?;
    println!("dropped {name}");
    Ok(())
}

async fn delete_keys(settings: &Settings) -> anyhow::Result<()> {
    let prefix = &settings.stream_prefix;
    anyhow::ensure!(!prefix.is_empty(), "set STREAM_PREFIX for the benchmark");
    let mut redis = redis::Client::open(settings.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut redis)
            .await?;
    }
    Ok(())
}

/// A Segment message like the e-commerce spec's, about 600 bytes.
fn segment_message(n: u64) -> serde_json::Value {
    serde_json::json!({
        "type": "track",
        "event": "Product Viewed",
        "userId": format!("user-{}", n % 50_000),
        "anonymousId": format!("anon-{}", n % 80_000),
        "messageId": Uuid::new_v4().to_string(),
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "context": {
            "ip": "203.0.113.24",
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36",
            "library": {"name": "analytics-node", "version": "2.1.2"},
            "page": {"url": "https://shop.example.com/products/linen-kurta", "path": "/products/linen-kurta"}
        },
        "properties": {"sku": format!("SKU-{}", n % 3_000), "name": "Linen Kurta", "category": "Kurtas",
                       "price": 899, "currency": "INR"}
    })
}

/// A Segment batch of `size` messages shaped like [`segment_message`], written with
/// `format!` so the load generator spends its CPU on sending, not on building JSON trees.
fn segment_batch(n: u64, size: usize) -> String {
    let now = chrono::Utc::now().to_rfc3339();
    let mut body = String::with_capacity(size * 700 + 64);
    body.push_str("{\"batch\":[");
    for i in 0..size as u64 {
        if i > 0 {
            body.push(',');
        }
        let k = n.wrapping_mul(1000).wrapping_add(i);
        body.push_str(&format!(
            concat!(
                r#"{{"type":"track","event":"Product Viewed","userId":"user-{}","anonymousId":"anon-{}","#,
                r#""messageId":"{}","timestamp":"{}","context":{{"ip":"203.0.113.24","#,
                r#""userAgent":"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36","#,
                r#""library":{{"name":"analytics-node","version":"2.1.2"}},"#,
                r#""page":{{"url":"https://shop.example.com/products/linen-kurta","path":"/products/linen-kurta"}}}},"#,
                r#""properties":{{"sku":"SKU-{}","name":"Linen Kurta","category":"Kurtas","price":899,"currency":"INR"}}}}"#
            ),
            k % 50_000,
            k % 80_000,
            Uuid::new_v4(),
            now,
            k % 3_000
        ));
    }
    body.push_str("],\"sentAt\":\"");
    body.push_str(&now);
    body.push_str("\"}");
    body
}

// ---------------------------------------------------------------- ceilings

/// Pipelined XADD of envelope-sized entries from `tasks` connections for `secs`.
async fn xadd_rate(settings: &Settings, secs: u64) -> anyhow::Result<f64> {
    let key = format!("{}bench.xadd", settings.stream_prefix);
    let body =
        serde_json::json!({"v": 1, "id": Uuid::now_v7(), "source": "segment", "kind": "track",
        "received_at": chrono::Utc::now(), "payload": {"source_event_id": "x", "headers": {},
        "body": segment_message(1)}})
        .to_string();
    let client = redis::Client::open(settings.redis_url.as_str())?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..2 {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (key, body, total) = (key.clone(), body.clone(), Arc::clone(&total));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let mut pipe = redis::pipe();
                for _ in 0..256 {
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
                total.fetch_add(256, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = total.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(rate)
}

/// The schema of the ceiling's own copies of `customer_raw_event` and
/// `raw_event_outbox_batch`, so the running ingest's outbox relay never sees its rows.
const LIMITS_SCHEMA: &str = "bench_limits";

/// Raw events stored for `secs` by ingest's own group-commit statement
/// (`ingestion::raw::insert_batch`: the raw rows and the batch's outbox row, 512 events a
/// batch) from two writers, into copies of `customer_raw_event` and
/// `raw_event_outbox_batch` (a schema of their own, first on the search path); with
/// `mark_published`, each batch is then taken out of the outbox as ingest's publisher
/// does (`ingestion::raw::mark_stored_published`).
async fn insert_rate(
    database_url: &str,
    secs: u64,
    body: serde_json::Value,
    mark_published: bool,
) -> anyhow::Result<f64> {
    let options = sqlx::postgres::PgConnectOptions::from_str(database_url)?
        .options([("search_path", LIMITS_SCHEMA)]);
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .context("connecting for the INSERT ceiling")?;
    for sql in [
        format!("DROP SCHEMA IF EXISTS {LIMITS_SCHEMA} CASCADE"),
        format!("CREATE SCHEMA {LIMITS_SCHEMA}"),
        format!(
            "CREATE TABLE {LIMITS_SCHEMA}.customer_raw_event (LIKE public.customer_raw_event INCLUDING ALL)"
        ),
        format!(
            "CREATE TABLE {LIMITS_SCHEMA}.raw_event_outbox_batch (LIKE public.raw_event_outbox_batch INCLUDING ALL)"
        ),
    ] {
        sqlx::query(&sql).execute(&db).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let total = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (db, total, body) = (db.clone(), Arc::clone(&total), body.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let events: Vec<NewRawEvent> = (0..512)
                    .map(|_| {
                        let key = Uuid::now_v7().to_string();
                        let mut e =
                            NewRawEvent::new(None, Source::Segment, key, "track", body.clone());
                        e.occurred_at = Some(e.received_at);
                        e
                    })
                    .collect();
                let outcomes = ingestion::raw::insert_batch(&db, &events).await?;
                let stored: Vec<Uuid> = outcomes
                    .iter()
                    .filter(|o| !o.duplicate)
                    .map(|o| o.id)
                    .collect();
                if mark_published {
                    ingestion::raw::mark_stored_published(&db, &stored).await?;
                }
                total.fetch_add(stored.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = total.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    sqlx::query(&format!("DROP SCHEMA {LIMITS_SCHEMA} CASCADE"))
        .execute(&db)
        .await?;
    db.close().await;
    Ok(rate)
}

// ---------------------------------------------------------------- load

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Shopify,
    Segment,
}

struct Target {
    base: String,
    shopify: Uuid,
    shopify_secret: String,
    segment_key: String,
    batch: usize,
}

/// The Shopify fixture with its order id replaced, signed.
struct ShopifyBody {
    head: String,
    tail: String,
}

impl ShopifyBody {
    fn new() -> Self {
        let raw =
            include_str!("../../../crates/ingestion/tests/fixtures/shopify/orders_create.json");
        let marker = "\"id\": 5940139491234";
        let at = raw.find(marker).expect("the fixture has its order id");
        Self {
            head: raw[..at].to_owned(),
            tail: raw[at + marker.len()..].to_owned(),
        }
    }

    fn with_id(&self, id: u64) -> String {
        format!("{}\"id\": {id}{}", self.head, self.tail)
    }
}

#[derive(Default)]
struct Outcome {
    requests: u64,
    events: u64,
    failures: u64,
    latencies_us: Vec<u32>,
}

async fn worker(
    client: reqwest::Client,
    target: Arc<Target>,
    kind: Kind,
    stop: Arc<AtomicBool>,
    counter: Arc<AtomicU64>,
    bodies: Arc<ShopifyBody>,
) -> Outcome {
    let mut out = Outcome::default();
    while !stop.load(Ordering::Relaxed) {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let (request, events) = match kind {
            Kind::Shopify => {
                let body = bodies.with_id(7_000_000_000_000 + n);
                let sig = ingestion::signing::sign_shopify(&target.shopify_secret, body.as_bytes());
                (
                    client
                        .post(format!(
                            "{}/webhooks/shopify/{}",
                            target.base, target.shopify
                        ))
                        .header("content-type", "application/json")
                        .header("x-shopify-topic", "orders/create")
                        .header("x-shopify-webhook-id", Uuid::new_v4().to_string())
                        .header("x-shopify-shop-domain", "bench.myshopify.com")
                        .header("x-shopify-hmac-sha256", sig)
                        .body(body),
                    1,
                )
            }
            Kind::Segment => {
                let body = segment_batch(n, target.batch);
                (
                    client
                        .post(format!("{}/v1/batch", target.base))
                        .basic_auth(&target.segment_key, Some(""))
                        .header("content-type", "application/json")
                        .body(body),
                    target.batch as u64,
                )
            }
        };
        let started = Instant::now();
        let result = request.send().await;
        let elapsed = started.elapsed();
        match result {
            Ok(resp) if resp.status().is_success() => {
                // Read the body so the connection is reused.
                let _ = resp.bytes().await;
                out.requests += 1;
                out.events += events;
                out.latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
            }
            Ok(resp) => {
                out.failures += 1;
                if out.failures <= 3 {
                    eprintln!(
                        "{kind:?}: {} {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    );
                }
            }
            Err(e) => {
                out.failures += 1;
                if out.failures <= 3 {
                    eprintln!("{kind:?}: {e}");
                }
            }
        }
    }
    out
}

struct ScenarioResult {
    name: &'static str,
    seconds: f64,
    by_kind: Vec<(Kind, Outcome)>,
}

impl ScenarioResult {
    fn events(&self) -> u64 {
        self.by_kind.iter().map(|(_, o)| o.events).sum()
    }
}

async fn scenario(
    name: &'static str,
    target: &Arc<Target>,
    mix: &[(Kind, usize)],
    seconds: u64,
) -> ScenarioResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("http client");
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(
        u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or_default(),
    ));
    let bodies = Arc::new(ShopifyBody::new());
    let mut tasks = Vec::new();
    for &(kind, connections) in mix {
        for _ in 0..connections {
            tasks.push((
                kind,
                tokio::spawn(worker(
                    client.clone(),
                    Arc::clone(target),
                    kind,
                    Arc::clone(&stop),
                    Arc::clone(&counter),
                    Arc::clone(&bodies),
                )),
            ));
        }
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut by_kind: Vec<(Kind, Outcome)> = Vec::new();
    for (kind, task) in tasks {
        let out = task.await.expect("worker");
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, total)) => {
                total.requests += out.requests;
                total.events += out.events;
                total.failures += out.failures;
                total.latencies_us.extend(out.latencies_us);
            }
            None => by_kind.push((kind, out)),
        }
    }
    ScenarioResult {
        name,
        seconds: started.elapsed().as_secs_f64(),
        by_kind,
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx]) / 1000.0
}

async fn load(
    settings: &Settings,
    url: &str,
    seconds: u64,
    connections: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let db = storage::connect(&settings.database_url, 4)
        .await
        .context("connecting to the benchmark database")?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("bench-ingest on {cores} cores; ingest at {url}");

    println!("measuring this machine's ceilings ...");
    let xadd = xadd_rate(settings, 5).await?;
    let database_url = settings.database_url.as_str();
    let insert_small = insert_rate(database_url, 6, segment_message(1), false).await?;
    let marked_small = insert_rate(database_url, 6, segment_message(1), true).await?;
    let shopify_json: serde_json::Value = serde_json::from_str(&ShopifyBody::new().with_id(1))?;
    let insert_large = insert_rate(database_url, 6, shopify_json.clone(), false).await?;
    let marked_large = insert_rate(database_url, 6, shopify_json, true).await?;

    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string();
    let key = storage::secrets::SecretsKey::from_base64(
        settings
            .integration_secrets_key
            .as_ref()
            .map(config::ExposeSecret::expose_secret)
            .context("INTEGRATION_SECRETS_KEY is not set (run.sh sets one)")?,
    )?;
    let shop =
        ingestion::integrations::create(&db, &key, "shopify", &format!("bench-{stamp}"), None)
            .await?;
    let seg =
        ingestion::integrations::create(&db, &key, "segment", &format!("bench-{stamp}"), None)
            .await?;
    let target = Arc::new(Target {
        base: url.trim_end_matches('/').to_owned(),
        shopify: shop.id,
        shopify_secret: shop.secret.clone(),
        segment_key: seg.secret.clone(),
        batch,
    });
    // Warm connections and caches.
    let _ = scenario(
        "warm-up",
        &target,
        &[(Kind::Shopify, 4), (Kind::Segment, 2)],
        2,
    )
    .await;
    let before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer_raw_event WHERE integration_id = ANY($1)",
    )
    .bind([shop.id, seg.id].as_slice())
    .fetch_one(&db)
    .await?;

    let results = vec![
        scenario(
            "shopify webhooks",
            &target,
            &[(Kind::Shopify, connections)],
            seconds,
        )
        .await,
        scenario(
            "segment batches",
            &target,
            &[(Kind::Segment, (connections / 4).max(2))],
            seconds,
        )
        .await,
        scenario(
            "mixed",
            &target,
            &[
                (Kind::Shopify, connections / 2),
                (Kind::Segment, (connections / 8).max(1)),
            ],
            seconds,
        )
        .await,
    ];

    let acked: u64 = results.iter().map(ScenarioResult::events).sum();
    let after: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer_raw_event WHERE integration_id = ANY($1)",
    )
    .bind([shop.id, seg.id].as_slice())
    .fetch_one(&db)
    .await?;
    let stored = u64::try_from(after - before).unwrap_or_default();

    println!();
    println!("ceilings measured in this run");
    for (label, rate, unit) in [
        ("redis XADD (pipelined, ~1 KB entries)", xadd, "entries/s"),
        (
            "postgres INSERT + outbox row, Segment-sized",
            insert_small,
            "rows/s",
        ),
        (
            "postgres INSERT + outbox row, Shopify-order",
            insert_large,
            "rows/s",
        ),
        (
            "… then outbox row deleted, Segment-sized",
            marked_small,
            "rows/s",
        ),
        (
            "… then outbox row deleted, Shopify-order",
            marked_large,
            "rows/s",
        ),
    ] {
        println!("  {label:<46} {rate:>10.0} {unit}");
    }
    println!();
    println!(
        "{:<18} {:>9} {:>8} {:>8} {:>8} {:>7} {:>10} {:>12} {:>8}",
        "scenario",
        "events/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "vs INSERT",
        "vs INS+mark",
        "vs XADD"
    );
    for r in &results {
        let eps = r.events() as f64 / r.seconds;
        let (ceiling, marked) = if r.name.starts_with("shopify") {
            (insert_large, marked_large)
        } else {
            (insert_small, marked_small)
        };
        println!(
            "{:<18} {:>9.0} {:>8} {:>8} {:>8} {:>7} {:>9.2}x {:>11.2}x {:>7.2}x",
            r.name,
            eps,
            "",
            "",
            "",
            "",
            eps / ceiling,
            eps / marked,
            eps / xadd
        );
        for (kind, o) in &r.by_kind {
            let mut lat = o.latencies_us.clone();
            lat.sort_unstable();
            println!(
                "  {:<16} {:>9.0} {:>8.0} {:>8.1} {:>8.1} {:>7}",
                format!("{kind:?}").to_lowercase(),
                o.events as f64 / r.seconds,
                o.requests as f64 / r.seconds,
                percentile(&lat, 0.50),
                percentile(&lat, 0.99),
                o.failures
            );
        }
    }
    println!();
    println!(
        "durability check: {acked} events acknowledged with 2xx, {stored} rows committed in customer_raw_event{}",
        if stored == acked {
            " (all)"
        } else {
            " — MISMATCH"
        }
    );
    anyhow::ensure!(
        stored == acked,
        "acknowledged events are missing from Postgres"
    );
    Ok(())
}

// ---------------------------------------------------------------- csv memory

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn write_customers(path: &std::path::Path, rows: usize) -> anyhow::Result<u64> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "Customer ID,First Name,Last Name,Email,Phone,City,Loyalty Card"
    )?;
    for i in 0..rows {
        writeln!(
            out,
            "{},Person{i},Example,person{i}@example.com,+9198{:08},Bengaluru,LOY-{i:07}",
            1_000_000 + i,
            i % 100_000_000
        )?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

async fn csv_memory(settings: &Settings, rows: usize) -> anyhow::Result<()> {
    let db = storage::connect(&settings.database_url, 4).await?;
    let dir = tempfile_dir()?;
    let mapping = domain::api::CsvMapping::parse_pairs("loyalty_id=Loyalty Card")?;
    let opts = ingestion::csv::ImportOptions::from_settings(settings);
    println!("rss at start: {} MiB", rss_kib() / 1024);
    for n in [rows / 10, rows] {
        let path = dir.join(format!("customers-{n}.csv"));
        let bytes = write_customers(&path, n)?;
        let before = rss_kib();
        let peak = Arc::new(AtomicU64::new(before));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let started = Instant::now();
        let file = tokio::fs::File::open(&path).await?;
        let summary = ingestion::csv::import(
            &db,
            None,
            file,
            domain::api::CsvImportKind::Customers,
            &mapping,
            "bench.csv",
            "bench",
            &opts,
        )
        .await?;
        let elapsed = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        sampler.await?;
        println!(
            "{n:>9} rows ({:>5} MiB file): {} imported, {} rejected in {elapsed:.1} s ({:.0} rows/s); \
             rss before {} MiB, peak during import {} MiB (+{} MiB)",
            bytes / (1024 * 1024),
            summary.imported_rows,
            summary.error_rows,
            n as f64 / elapsed,
            before / 1024,
            peak.load(Ordering::Relaxed) / 1024,
            peak.load(Ordering::Relaxed).saturating_sub(before) / 1024
        );
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
