//! `ctl demo`: loads a believable brand into a running fleet through the real front
//! door, waits until the pipeline has drained, trains the models and prints what the
//! pipeline made of it against the ground truth.
//!
//! 1. A brand is simulated (`scenario::brand`: catalogue, stores, ~5,000 people over
//!    18 months by default) and dressed with the identifiers each touchpoint carries,
//!    mess included, and the truth of who did what (`scenario::identity`, the identity
//!    issue's generator: the same data its quality goals are measured on).
//! 2. Integrations are created (or reused: `Demo …` by kind) and every event is
//!    rendered as its platform would send it ([`render`]): signed Shopify and
//!    WooCommerce webhooks, Segment-style tracking, Twilio WhatsApp callbacks, POS bills.
//! 3. Everything is sent to ingest ([`send`]), the people's lanes kept together in the
//!    brand's time; then the legacy CRM's customers go in as one CSV upload through the
//!    api-gateway (with an API token made for the run and revoked after it). Its rows
//!    are stamped on arrival, so they come after the history.
//! 4. [`drain`] waits until every stored event is normalised and attached to a profile,
//!    re-driving from Postgres if stream entries were lost on the way.
//! 5. The models are trained and every profile scored ([`train`], the library `ctl ml`
//!    uses), and the [`summary`] is printed: deliveries, stored events, profiles,
//!    merges, review items and pairwise precision/recall of the profiles against the
//!    truth. `--truth FILE` keeps the truth (the end-to-end test checks against it).
//! 6. The brand's two audiences ([`audiences`]: abandoned checkout, high churn risk
//!    worth winning back) are created if missing and recomputed.
//!
//! Before anything is sent, the brand's two automations ([`automations`]: abandoned
//! checkout reminder, win-back with a control group) are created and enabled, so their
//! results fill while the demo loads.
//!
//! The same seed and end date render the same bytes, and every delivery carries its
//! deduplication key, so running the demo again stores nothing twice.

mod audiences;
mod automations;
mod drain;
mod render;
mod send;
mod summary;
mod train;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use storage::secrets::SecretsKey;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use config::Settings;
use domain::api::{CsvImportAccepted, CsvImportRowError, CsvImportStatus, CsvImportView, Page};
use scenario::BrandConfig;
use scenario::identity::IdentityConfig;
use sha2::Digest as _;
use sqlx::PgPool;

use render::{Endpoint, Endpoints, Renderer};
use summary::{Summary, Truth, TruthEvent, TruthOrder};

/// `ctl demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// People in the brand.
    #[arg(long, default_value_t = 5_000)]
    pub customers: usize,
    /// Months of history.
    #[arg(long, default_value_t = 18)]
    pub months: u32,
    /// Seed of the simulation: same seed and end, same brand.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Last day of the history (default: now).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub end: Option<NaiveDate>,
    /// Physical stores.
    #[arg(long, default_value_t = 6)]
    pub stores: usize,
    /// Days of WhatsApp conversations sent through Twilio (its callbacks carry no
    /// timestamp, so older ones would all look like today's).
    #[arg(long, default_value_t = 30)]
    pub whatsapp_days: u32,
    /// Ingest's address (default: INGEST_BIND).
    #[arg(long)]
    pub ingest_url: Option<String>,
    /// The api-gateway's address, for the CSV upload (default: API_GATEWAY_BIND).
    #[arg(long)]
    pub api_url: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Send at most this many deliveries per second, evenly spread (default: as fast as
    /// ingest answers). A steady load for watching the fleet, or for fault drills.
    #[arg(long, value_name = "PER_SEC", value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Minutes of the brand's history a lane may run ahead of the earliest delivery any
    /// lane still has to send: deliveries of different people arrive roughly in time
    /// order, as a live brand's platforms deliver them (0: in lock-step).
    #[arg(long, default_value_t = send::DEFAULT_LANE_SKEW_MINS)]
    pub lane_skew_mins: u32,
    /// Attempts per request before giving up on it: failures in transit, 5xx and 429
    /// are retried after a pause of 0.2 s doubling up to 5 s (8 attempts ride out about
    /// 15 s of ingest or Postgres being away, 20 about 80 s).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempts: u32,
    /// Skip training the models after the load.
    #[arg(long)]
    pub no_train: bool,
    /// Give up waiting for the pipeline after this many seconds.
    #[arg(long, default_value_t = 3_600)]
    pub drain_timeout: u64,
    /// Re-drive from Postgres when nothing moved for this many seconds.
    #[arg(long, default_value_t = 30)]
    pub stall_secs: u64,
    /// Write the ground truth (who did each accepted delivery, every order) as JSON.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Write the summary as JSON.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Load even if the database already has events.
    #[arg(long, conflicts_with = "if_empty")]
    pub force: bool,
    /// Do nothing, successfully, if the database already has events (first-start jobs).
    #[arg(long)]
    pub if_empty: bool,
}

/// `--rate`: a finite number of deliveries per second above zero.
fn positive_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err("must be a number of deliveries per second above 0".into())
    }
}

/// `http://host:port` for a bind address (`0.0.0.0` and `::` become loopback).
fn local_url(bind: std::net::SocketAddr) -> String {
    let host = match bind.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", bind.port())
}

/// The secret a new demo integration gets: the Twilio fake's token for Twilio when no
/// real Twilio account is configured (so the fake's signed callbacks verify), else a
/// generated one.
fn own_secret(kind: &str, twilio_configured: bool) -> Option<&'static str> {
    (kind == "twilio" && !twilio_configured).then_some(messaging::fake::DEV_AUTH_TOKEN)
}

/// The integrations of the demo: existing `Demo …` ones are reused, the rest created.
async fn integrations(
    db: &PgPool,
    key: &SecretsKey,
    public_base_url: &str,
    twilio_configured: bool,
) -> anyhow::Result<Endpoints> {
    let existing = storage::integrations::list(db, key).await?;
    let mut by_kind = HashMap::new();
    for (kind, name) in [
        ("shopify", "Demo web shop"),
        ("woocommerce", "Demo classic shop"),
        ("twilio", "Demo WhatsApp"),
        ("segment", "Demo site and app"),
        ("pos", "Demo stores"),
    ] {
        let found = existing.iter().find(|i| i.kind == kind && i.name == name);
        let integration = match found {
            Some(i) => i.clone(),
            // The dev fleet's Twilio fake signs status callbacks with its well-known
            // token: the demo's Twilio integration uses it when no real account is set.
            None => ingestion::integrations::create(
                db,
                key,
                kind,
                name,
                own_secret(kind, twilio_configured),
            )
            .await
            .with_context(|| format!("creating the {kind} integration"))?,
        };
        anyhow::ensure!(
            integration.enabled,
            "the {kind} integration `{name}` is disabled; enable it or delete it"
        );
        by_kind.insert(
            kind,
            Endpoint {
                id: integration.id,
                secret: integration.secret,
            },
        );
    }
    let mut take = |k: &str| by_kind.remove(k).expect("every kind was created");
    Ok(Endpoints {
        shopify: take("shopify"),
        woocommerce: take("woocommerce"),
        twilio: take("twilio"),
        segment: take("segment"),
        pos: take("pos"),
        public_base_url: public_base_url.to_owned(),
    })
}

async fn ready(client: &reqwest::Client, base: &str, what: &str) -> anyhow::Result<()> {
    let url = format!("{base}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            other => {
                if Instant::now() > deadline {
                    let why = match other {
                        Ok(r) => format!("answered {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    anyhow::bail!(
                        "{what} at {base} is not ready ({why}); start the fleet first (`ctl up`)"
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Uploads the historical customers through the api-gateway and waits for the import.
/// Returns the truth of every imported row.
async fn import_csv(
    client: &reqwest::Client,
    db: &PgPool,
    api: &str,
    csv: String,
    people: &[u32],
) -> anyhow::Result<Vec<TruthEvent>> {
    let (token, row) =
        storage::users::create_token(db, "ctl demo", domain::api::Role::Analyst, None)
            .await
            .context("creating an API token for the CSV upload")?;
    let result = async {
        let sha = hex::encode(sha2::Sha256::digest(csv.as_bytes()));
        let form = reqwest::multipart::Form::new()
            .text("kind", "customers")
            .part(
                "file",
                reqwest::multipart::Part::bytes(csv.into_bytes())
                    .file_name("legacy-loyalty-crm.csv")
                    .mime_str("text/csv")?,
            );
        let resp = client
            .post(format!("{api}/api/v1/imports"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .context("uploading the CSV")?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "the CSV upload was refused: {status} {}",
            resp.text().await.unwrap_or_default()
        );
        let accepted: CsvImportAccepted = resp.json().await?;
        let id = accepted.import_id;
        let view = loop {
            let view: CsvImportView = client
                .get(format!("{api}/api/v1/imports/{id}"))
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if view.status != CsvImportStatus::Running {
                break view;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        anyhow::ensure!(
            view.status == CsvImportStatus::Completed,
            "the CSV import failed: {}",
            view.error.unwrap_or_default()
        );
        let mut refused = std::collections::HashSet::new();
        if view.error_rows > 0 {
            let errors: Page<CsvImportRowError> = client
                .get(format!("{api}/api/v1/imports/{id}/errors?limit=1000"))
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            for e in errors.items {
                eprintln!("demo: CSV line {} refused: {}", e.line, e.reason);
                refused.insert(e.line);
            }
        }
        eprintln!(
            "demo: CSV of {} historical customers imported ({} rows, {} already there, {} refused)",
            people.len(),
            view.imported_rows,
            view.duplicate_rows,
            view.error_rows
        );
        Ok(people
            .iter()
            .enumerate()
            .map(|(i, &person)| (i as i64 + 2, person))
            .filter(|(line, _)| !refused.contains(line))
            .map(|(line, person)| TruthEvent {
                source: "csv",
                key: format!("{sha}:{line}"),
                person,
            })
            .collect())
    }
    .await;
    storage::users::revoke_token(db, row.id)
        .await
        .context("revoking the demo's API token")?;
    result
}

/// Runs `ctl demo`.
pub async fn run(settings: &Settings, args: DemoArgs) -> anyhow::Result<()> {
    let db = crate::db::connect(settings, 4, crate::db::Statements::Unlimited).await?;
    storage::migrate(&db).await.context("migrating")?;
    let streams = streams::Streams::connect(
        &settings.redis_url,
        settings.stream_prefix.clone(),
        settings.stream_maxlen,
    )
    .await
    .context("connecting to Redis")?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_raw_event")
        .fetch_one(&db)
        .await?;
    if existing > 0 && args.if_empty {
        println!("demo: the database already has {existing} events; nothing loaded");
        return Ok(());
    }
    anyhow::ensure!(
        existing == 0 || args.force,
        "the database already has {existing} events; `ctl demo` loads an empty one \
         (add --force to send the demo brand anyway: what is already stored is not stored twice)"
    );
    let ingest = args
        .ingest_url
        .clone()
        .unwrap_or_else(|| local_url(settings.ingest_bind));
    let api = args
        .api_url
        .clone()
        .unwrap_or_else(|| local_url(settings.api_gateway_bind));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.concurrency.max(1))
        .build()?;
    ready(&client, &ingest, "ingest").await?;
    ready(&client, &api, "the api-gateway").await?;

    let end: DateTime<Utc> = match args.end {
        Some(day) => day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc(),
        None => {
            let now = Utc::now();
            now - Duration::from_secs(u64::from(chrono::Timelike::second(&now)))
        }
    };
    let cfg = BrandConfig {
        seed: args.seed,
        customers: args.customers,
        months: args.months,
        end,
        stores: args.stores,
        ..BrandConfig::default()
    };
    eprintln!(
        "demo: simulating {} people over {} months ending {} (seed {})",
        cfg.customers, cfg.months, cfg.end, cfg.seed
    );
    let key = service_kit::secrets_key(settings)?;
    let ep = integrations(
        &db,
        &key,
        &settings.ingest.public_base_url,
        !settings.api.twilio_account_sid.trim().is_empty(),
    )
    .await?;
    for name in automations::ensure(&db).await? {
        eprintln!("demo: automation {name:?} enabled");
    }
    let whatsapp_days = args.whatsapp_days;
    let rendered = tokio::task::spawn_blocking(move || {
        let brand = scenario::generate(&cfg);
        let identity = IdentityConfig {
            brand: cfg,
            ..IdentityConfig::default()
        };
        let scenario = scenario::identity::dress(&identity, &brand);
        let mut r = Renderer::new(&brand, &scenario.identities, &ep, whatsapp_days);
        let mut deliveries = Vec::new();
        for ev in &scenario.events {
            if ev.occurred_at >= brand.config.end {
                r.skip_after_end();
                continue;
            }
            deliveries.extend(r.render(ev, scenario.truth[&ev.event_id]));
        }
        let csv = r.historical_customers_csv();
        let orders = std::mem::take(&mut r.orders);
        let skipped = std::mem::take(&mut r.skipped);
        (scenario.events.len(), deliveries, orders, skipped, csv, ep)
    })
    .await
    .context("simulating the brand")?;
    let (events, deliveries, orders, skipped, (csv, csv_people), ep) = rendered;
    eprintln!(
        "demo: {events} events of the scenario rendered as {} deliveries",
        deliveries.len()
    );

    let send_started = Instant::now();
    let opts = send::SendOptions {
        ingest_url: ingest.clone(),
        concurrency: args.concurrency,
        rate: args.rate,
        attempts: args.attempts,
        lane_skew: chrono::TimeDelta::minutes(args.lane_skew_mins.into()),
        ..send::SendOptions::default()
    };
    let (report, accepted) = send::send(&client, &opts, &ep, &deliveries).await;
    let send_secs = send_started.elapsed().as_secs_f64();
    for e in &report.errors {
        eprintln!("demo: refused: {e}");
    }
    // The legacy CRM goes in after the history: its rows are stamped on arrival (a CSV
    // row carries no event time), so uploaded first they would sit "in the future" of
    // every historical event of their customers, and each of those would arrive late.
    let mut truth_events = import_csv(&client, &db, &api, csv, &csv_people).await?;
    truth_events.extend(
        deliveries
            .iter()
            .zip(&accepted)
            .filter(|(_, ok)| **ok)
            .map(|(d, _)| TruthEvent {
                source: d.source.as_str(),
                key: d.key.clone(),
                person: d.person,
            }),
    );
    let truth = Truth {
        seed: args.seed,
        customers: args.customers,
        events: truth_events,
        orders: orders
            .iter()
            .map(|o| TruthOrder {
                source: o.source.as_str(),
                order_id: o.order_id.clone(),
                person: o.person,
                total: o.total,
                cancelled: o.cancelled,
                refunded: o.refunded,
            })
            .collect(),
    };
    if let Some(path) = &args.truth {
        std::fs::write(path, serde_json::to_vec(&truth)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    let drained = drain::wait(
        &db,
        &streams,
        &drain::DrainOptions {
            timeout: Duration::from_secs(args.drain_timeout),
            stall: Duration::from_secs(args.stall_secs),
            max_republish: 3,
            redis_url: settings.redis_url.as_str().to_owned(),
        },
    )
    .await?;
    eprintln!("demo: the pipeline has drained ({:.0?})", drained.waited);

    let models = if args.no_train {
        Vec::new()
    } else {
        train::train_and_score(settings, &db, end).await?
    };
    for (name, size) in audiences::ensure(&db).await? {
        eprintln!("demo: audience {name:?}: {size} members");
    }

    let quality = summary::quality(&db, &truth.events).await?;
    let (profiles, merges, review_items, suspect_identifiers, order_count, revenue) =
        summary::counts(&db).await?;
    let summary = Summary {
        events,
        deliveries: deliveries.len() + csv_people.len(),
        accepted: report.accepted + (truth.events.len() as u64 - report.accepted),
        duplicates: report.duplicates,
        rejected: report.rejected,
        retries: report.retries,
        by_source: {
            let mut by = report.by_source.clone();
            by.insert(
                "csv",
                truth.events.iter().filter(|e| e.source == "csv").count() as u64,
            );
            by
        },
        skipped,
        raw_events: drained.snapshot.raw,
        normalized_events: drained.snapshot.normalized,
        dead_letters: drained.snapshot.dead_letters(),
        profiles,
        merges,
        review_items,
        suspect_identifiers,
        orders: order_count,
        revenue,
        republished: drained.republished,
        send_secs,
        drain_secs: drained.waited.as_secs_f64(),
        quality,
        models,
        predictions: summary::predictions(&db).await?,
    };
    println!("{}", summary.render());
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::DemoArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    #[test]
    fn rate_and_attempts_are_read_and_nonsense_is_refused() {
        let args = Cli::try_parse_from(["demo", "--rate", "12.5", "--attempts", "30"])
            .unwrap()
            .demo;
        assert_eq!(args.rate, Some(12.5));
        assert_eq!(args.attempts, 30);
        let defaults = Cli::try_parse_from(["demo"]).unwrap().demo;
        assert_eq!(defaults.rate, None, "as fast as ingest answers by default");
        assert_eq!(defaults.attempts, 8);
        for bad in [
            ["demo", "--rate", "0"],
            ["demo", "--rate", "-3"],
            ["demo", "--rate", "inf"],
            ["demo", "--rate", "fast"],
            ["demo", "--attempts", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
