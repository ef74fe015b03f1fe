//! `bench-destinations`: how long a destination's first backfill takes next to the
//! bound its rate limit sets, measured in the same run. `bench/destinations/run.sh`
//! wraps it (release build).
//!
//! Seeds N profiles (default 100,000) with an e-mail and a name, then for each kind
//! starts a fake of the platform (`test_support::crm`) with the platform's default
//! limit, creates a destination (which queues the backfill) and runs the service's
//! workers until the queue is empty. The bound is the requests the backfill needs
//! (⌈N ÷ batch⌉ plus HubSpot's property calls) divided by the allowed rate:
//! - HubSpot: 100 requests per 10 s (private apps, Free/Starter), batches of 100;
//! - Salesforce: no per-second limit (a daily allocation of 100,000+ requests); the
//!   destination's default pace of 10 requests/s, batches of 200;
//! - REST: no platform; a configured 20 requests/s, batches of 100.
//!
//! The ratio elapsed ÷ bound is printed (1.00 = at the ceiling).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use config::Settings;
use domain::api::{DestinationKind, DestinationMode, DestinationRequest};
use serde_json::json;
use sqlx::PgPool;
use storage::secrets::SecretsKey;
use test_support::crm::{FakeHubSpot, FakeRest, FakeSalesforce, RestAuth};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A fake's destination settings, credentials, allowed rate, batch size, and how to
/// read the requests it received.
type Setup = (
    serde_json::Value,
    Vec<(&'static str, String)>,
    f64,
    usize,
    Box<dyn Fn() -> usize>,
);

#[derive(Parser)]
#[command(name = "bench-destinations", about = "Destination backfill benchmark")]
struct Cli {
    /// Profiles to seed.
    #[arg(long, default_value_t = 100_000)]
    profiles: usize,
    /// Kinds to run, comma separated.
    #[arg(long, default_value = "hubspot,salesforce,rest")]
    kinds: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    storage::ensure_database(&settings.database_url).await?;
    let db = storage::connect(&settings.database_url, settings.database_max_connections).await?;
    storage::migrate(&db).await?;
    let started = Instant::now();
    seed(&db, cli.profiles).await.context("seeding")?;
    println!(
        "seeded {} profiles in {:.1} s",
        cli.profiles,
        started.elapsed().as_secs_f64()
    );
    let (key, _) = SecretsKey::generate();
    println!(
        "{:<11} {:>9} {:>8} {:>10} {:>10} {:>8}",
        "kind", "profiles", "requests", "elapsed s", "bound s", "ratio"
    );
    for kind in cli.kinds.split(',').map(str::trim) {
        let kind: DestinationKind = kind.parse()?;
        let (config, creds, rate, batch, fake_requests): Setup = match kind {
            DestinationKind::Hubspot => {
                let hs = FakeHubSpot::start(100, Duration::from_secs(10)).await;
                let token = hs.token.clone();
                let state = hs.state.clone();
                (
                    json!({"base_url": hs.url}),
                    vec![("token", token)],
                    10.0,
                    100,
                    Box::new(move || state.lock().unwrap().request_times.len()),
                )
            }
            DestinationKind::Salesforce => {
                let sf = FakeSalesforce::start().await;
                let state = sf.state.clone();
                (
                    json!({"login_url": sf.url, "client_id": sf.client_id, "batch_size": 200}),
                    vec![("client_secret", sf.client_secret.clone())],
                    10.0,
                    200,
                    Box::new(move || state.lock().unwrap().request_times.len() + 1),
                )
            }
            DestinationKind::Rest => {
                let rest = FakeRest::start(RestAuth::Bearer("bench".into())).await;
                let state = rest.state.clone();
                (
                    json!({"url": rest.endpoint(), "batch_size": 100, "requests_per_second": 20}),
                    vec![("token", "bench".to_owned())],
                    20.0,
                    100,
                    Box::new(move || state.lock().unwrap().batches),
                )
            }
        };
        let req = DestinationRequest {
            name: format!("bench-{kind}-{}", Uuid::new_v4().simple()),
            kind,
            config: config.as_object().cloned().unwrap_or_default(),
            credentials: creds.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            mapping: Default::default(),
            mode: DestinationMode::Upsert,
            audience_id: None,
        };
        let t0 = Instant::now();
        let dest = destinations::store::create(&db, &key, &req, "bench").await?;
        let stop = CancellationToken::new();
        let workers = tokio::spawn(destinations::supervise(
            db.clone(),
            key.clone(),
            settings.clone(),
            stop.clone(),
        ));
        // Polled with one index probe: the full status counts every row, and every
        // 100 ms that would be load the service never sees.
        loop {
            let pending: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM destination_queue WHERE destination_id = $1)",
            )
            .bind(dest.id)
            .fetch_one(&db)
            .await?;
            if !pending {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let s = destinations::store::status(&db, dest.id, None).await?;
        anyhow::ensure!(
            s.synced as usize == cli.profiles && s.dead_letters == 0,
            "{kind}: {} synced, {} dead letters",
            s.synced,
            s.dead_letters
        );
        stop.cancel();
        let _ = workers.await;
        let requests = fake_requests();
        let needed = cli.profiles.div_ceil(batch).max(requests);
        let bound = needed as f64 / rate;
        println!(
            "{:<11} {:>9} {:>8} {:>10.1} {:>10.1} {:>8.2}",
            kind.as_str(),
            cli.profiles,
            requests,
            elapsed,
            bound,
            elapsed / bound
        );
        sqlx::query("DELETE FROM destinations WHERE id = $1")
            .bind(dest.id)
            .execute(&db)
            .await?;
    }
    Ok(())
}

/// Replaces the bench database's profiles with `n` fresh ones.
async fn seed(db: &PgPool, n: usize) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE destinations, profile_identifier, customer_profile CASCADE")
        .execute(db)
        .await?;
    sqlx::query(
        "INSERT INTO customer_profile (id, display_name, orders_count, total_spent, currency) \
         SELECT gen_random_uuid(), 'Asha' || i || ' Rao', i % 9, (i % 9) * 499, 'INR' \
         FROM generate_series(1, $1) AS i",
    )
    .bind(i64::try_from(n)?)
    .execute(db)
    .await?;
    sqlx::query(
        "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at) \
         SELECT 'email', 'bench' || row_number() OVER (ORDER BY id) || '@example.com', id, \
                'shopify', now(), now() FROM customer_profile",
    )
    .execute(db)
    .await?;
    // Fresh statistics, as a running deployment's autovacuum keeps them: planned
    // against an empty table's, lookups by id scan the whole table.
    sqlx::query("ANALYZE customer_profile, profile_identifier")
        .execute(db)
        .await?;
    Ok(())
}
