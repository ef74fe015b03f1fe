//! `bench-automations`: how long an audience preview and a full recompute take on this
//! machine, next to what its Postgres needs just to read the same rows, measured in the
//! same run. `bench/automations/run.sh` wraps it (release build).
//!
//! Seeds N profiles (default 100,000) set-based into a fresh schema: identifiers,
//! consent traits, order facts, channels, category affinity, churn and LTV
//! predictions, about five events each (views, checkouts, orders) and an order line
//! each. Then, for each rule of a small suite (a fact filter, a behaviour window, an
//! abandoned checkout, a nested mix), the median of R previews (`audiences::store::
//! preview`: the count and a sample); and a full recompute of one audience (everyone
//! entering, then nothing changing). The ceilings: a `count(*)` over the live profiles
//! and one over the events (each table read once, nothing else).
//!
//! With `--latency`, instead: trigger-to-provider-call latency of the automations
//! engine against the Twilio fake ([`latency`]).

mod latency;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use audiences::store;
use chrono::Utc;
use clap::Parser;
use config::Settings;
use domain::api::AudienceRequest;
use domain::audience::Rule;
use sqlx::PgPool;

#[derive(Parser)]
#[command(
    name = "bench-automations",
    about = "Audience preview and recompute benchmark"
)]
struct Cli {
    /// Profiles to seed.
    #[arg(long, default_value_t = 100_000)]
    profiles: i64,
    /// Previews per rule (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Measure trigger-to-provider-call latency instead (see `latency`).
    #[arg(long)]
    latency: bool,
    /// Triggers offered in the latency run.
    #[arg(long, default_value_t = 2_000)]
    triggers: usize,
    /// Triggers per second in the latency run.
    #[arg(long, default_value_t = 200)]
    rate: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    storage::ensure_database(&settings.database_url).await?;
    let db = storage::connect(&settings.database_url, settings.database_max_connections).await?;
    storage::migrate(&db).await?;
    if cli.latency {
        return latency::run(&db, cli.triggers, cli.rate).await;
    }
    let started = Instant::now();
    seed(&db, cli.profiles).await.context("seeding")?;
    println!(
        "seeded {} profiles in {:.1} s",
        cli.profiles,
        started.elapsed().as_secs_f64()
    );

    let scan_profiles = median(cli.runs, || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM customer_profile WHERE merged_into IS NULL",
        )
        .fetch_one(&db)
        .await
        .map(|_| ())
    })
    .await?;
    let scan_events = median(cli.runs, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM normalized_event")
            .fetch_one(&db)
            .await
            .map(|_| ())
    })
    .await?;
    println!(
        "ceilings: count(*) of live profiles {:.1} ms, of events {:.1} ms",
        ms(scan_profiles),
        ms(scan_events)
    );

    println!(
        "| rule | members | preview (median of {}) | × profile scan | × event scan |",
        cli.runs
    );
    println!("|---|---|---|---|---|");
    for (label, rule) in suite() {
        rule.validate()
            .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        let size = store::preview(&db, &rule, Utc::now(), 10).await?.size;
        let took = median(cli.runs, || async {
            store::preview(&db, &rule, Utc::now(), 10).await.map(|_| ())
        })
        .await?;
        println!(
            "| {label} | {size} | {:.1} ms | {:.1} | {:.1} |",
            ms(took),
            took.as_secs_f64() / scan_profiles.as_secs_f64(),
            took.as_secs_f64() / scan_events.as_secs_f64(),
        );
    }

    let (_, rule) = suite().into_iter().last().context("the suite has rules")?;
    let audience = store::create(
        &db,
        &AudienceRequest {
            name: format!("bench {}", Utc::now().timestamp_micros()),
            description: String::new(),
            rule,
        },
        "bench",
    )
    .await?;
    for pass in ["everyone enters", "nothing changes"] {
        let started = Instant::now();
        let r = store::recompute(&db, audience.id, Utc::now()).await?;
        let took = started.elapsed();
        println!(
            "full recompute ({pass}): {:.1} ms, {} entered, {} exited, {} members; × profile scan {:.1}",
            ms(took),
            r.entered,
            r.exited,
            r.members,
            took.as_secs_f64() / scan_profiles.as_secs_f64()
        );
    }
    store::delete(&db, audience.id).await?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn median<F, Fut, E>(runs: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    let mut times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        f().await.map_err(Into::into)?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn suite() -> Vec<(&'static str, Rule)> {
    let rule =
        |v: serde_json::Value| serde_json::from_value::<Rule>(v).expect("a suite rule parses");
    vec![
        (
            "facts: spent ≥ 5000 and WhatsApp-capable and consent",
            rule(serde_json::json!({"all": [
                {"total_spent": {"op": "gte", "value": 5000}}, "whatsapp_capable", {"consent": "whatsapp"}]})),
        ),
        (
            "predictions: churn high, LTV ≥ 2000",
            rule(
                serde_json::json!({"all": [{"churn_label": "high"}, {"predicted_ltv": {"op": "gte", "value": 2000}}]}),
            ),
        ),
        (
            "behaviour: viewed Shoes ≥ 2 times in 30 days",
            rule(
                serde_json::json!({"did": {"event": {"type": "product_viewed",
                "where": [{"key": "category", "op": "eq", "value": "Shoes"}]}, "at_least": 2, "within_days": 30}}),
            ),
        ),
        (
            "abandoned checkout: no order within 1 h, last 7 days",
            rule(
                serde_json::json!({"did_without": {"event": {"type": "checkout_started"}, "within_days": 7,
                "without": {"type": "order_placed"}, "within_hours": 1}}),
            ),
        ),
        (
            "mix: (bought Shoes or affinity ≥ 0.5) and not churn low and has e-mail",
            rule(serde_json::json!({"all": [
                {"any": [{"bought_category": "Shoes"}, {"category_affinity": {"category": "Shoes", "at_least": 0.5}}]},
                {"not": {"churn_label": "low"}}, {"has_identifier": "email"}]})),
        ),
    ]
}

/// Seeds `n` profiles with their orders, events and predictions, set-based.
async fn seed(db: &PgPool, n: i64) -> anyhow::Result<()> {
    sqlx::query(
        "TRUNCATE customer_profile, profile_identifier, orders, order_items, normalized_event, \
         predictions, model_version, audiences CASCADE",
    )
    .execute(db)
    .await?;
    let statements = [
        "INSERT INTO model_version (id, task, algorithm, feature_set_version, artefact, status) VALUES \
         ('00000000-0000-0000-0000-0000000000c1', 'churn', 'bench', 1, '', 'candidate'), \
         ('00000000-0000-0000-0000-0000000000c2', 'ltv', 'bench', 1, '', 'candidate')",
        // Profile i: ids are deterministic so the other tables can refer to them.
        "INSERT INTO customer_profile (id, display_name, identifiers, traits, orders_count, total_spent, \
           last_order_at, channels, category_affinity, last_seen_at) \
         SELECT md5('p' || i)::uuid, 'Person ' || i, \
           CASE WHEN i % 3 = 0 THEN jsonb_build_array(jsonb_build_object('kind', 'phone', 'value', '+9198' || lpad(i::text, 8, '0'))) \
                WHEN i % 3 = 1 THEN jsonb_build_array(jsonb_build_object('kind', 'email', 'value', 'p' || i || '@mail.in')) \
                ELSE jsonb_build_array(jsonb_build_object('kind', 'email', 'value', 'p' || i || '@mail.in'), \
                                       jsonb_build_object('kind', 'phone', 'value', '+9197' || lpad(i::text, 8, '0'))) END, \
           CASE WHEN i % 4 = 0 THEN '{\"whatsapp_marketing\": \"subscribed\", \"email_marketing\": \"subscribed\"}'::jsonb \
                ELSE '{\"city\": \"Pune\"}'::jsonb END, \
           i % 7, (i % 97) * 113.5, now() - make_interval(days => (i % 400)::int), \
           CASE WHEN i % 2 = 0 THEN ARRAY['web', 'whatsapp'] ELSE ARRAY['web'] END, \
           jsonb_build_object('Shoes', ((i % 10) / 10.0)::float8, 'Tees', ((i % 5) / 5.0)::float8), now() \
         FROM generate_series(1, $1) AS i",
        "INSERT INTO predictions (profile_id, task, model_version_id, score, label) \
         SELECT md5('p' || i)::uuid, 'churn', '00000000-0000-0000-0000-0000000000c1', (i % 100) / 100.0, \
           CASE WHEN i % 100 >= 70 THEN 'high' WHEN i % 100 >= 30 THEN 'medium' ELSE 'low' END \
         FROM generate_series(1, $1) AS i",
        "INSERT INTO predictions (profile_id, task, model_version_id, score) \
         SELECT md5('p' || i)::uuid, 'ltv', '00000000-0000-0000-0000-0000000000c2', (i % 50) * 100.0 \
         FROM generate_series(1, $1) AS i",
        "INSERT INTO orders (id, source, external_order_id, profile_id, event_id, status, channel, placed_at, currency, total) \
         SELECT md5('o' || i)::uuid, 'shopify', 'o' || i, md5('p' || i)::uuid, md5('o' || i)::uuid, 'paid', 'web', \
           now() - make_interval(days => (i % 400)::int), 'INR', 499 \
         FROM generate_series(1, $1) AS i",
        "INSERT INTO order_items (order_id, line_no, sku, name, category, qty, price) \
         SELECT md5('o' || i)::uuid, 1, 'SKU' || (i % 50), 'Item', \
           (ARRAY['Shoes', 'Tees', 'Bags', 'Hats'])[1 + i % 4], 1, 499 \
         FROM generate_series(1, $1) AS i",
        // Five events per profile over the last 60 days: views, a checkout, sometimes an order.
        "INSERT INTO normalized_event (event_id, occurred_at, received_at, source, channel, type, properties, profile_id) \
         SELECT md5('e' || i || '-' || k)::uuid, now() - make_interval(hours => ((i * 7 + k * 131) % 1440)::int), now(), \
           'segment', 'web', \
           CASE WHEN k <= 3 THEN 'product_viewed' WHEN k = 4 THEN 'checkout_started' \
                WHEN i % 2 = 0 THEN 'order_placed' ELSE 'page_viewed' END, \
           jsonb_build_object('category', (ARRAY['Shoes', 'Tees', 'Bags'])[1 + (i + k) % 3], 'price', (i % 300)), \
           md5('p' || i)::uuid \
         FROM generate_series(1, $1) AS i, generate_series(1, 5) AS k",
        "ANALYZE",
    ];
    for sql in statements {
        let q = sqlx::query(sql);
        let q = if sql.contains("$1") { q.bind(n) } else { q };
        q.execute(db)
            .await
            .with_context(|| sql.chars().take(60).collect::<String>())?;
    }
    Ok(())
}
