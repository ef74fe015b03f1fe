//! Trigger-to-provider-call latency: checkouts arrive at a fixed rate (default 200 per
//! second), each is handed to the engine as the `profiles.changes` consumer hands it
//! (`engine::on_profile_changes`), and the time until the Twilio fake receives the
//! message's create request is measured per trigger (p50, p99). The stream hop from
//! the merger to the consumer is not included (see bench/streams).
//!
//! Ceilings, measured in the same run on the same machine: one Postgres round trip
//! (`SELECT 1` on the pool) and one HTTP POST round trip to the fake itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use automations::engine::{self, Engine};
use config::Settings;
use messaging::fake::FakeTwilio;
use sqlx::PgPool;
use uuid::Uuid;

const SID: &str = "ACbench0000000000000000000000000000";
const TOKEN: &str = "bench-token";

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the latency benchmark with `triggers` checkouts at `rate` per second.
pub async fn run(db: &PgPool, triggers: usize, rate: u32) -> anyhow::Result<()> {
    let fake = FakeTwilio::start(SID, TOKEN).await?;
    let settings = Settings::from_pairs([
        ("TWILIO_ACCOUNT_SID", SID.to_owned()),
        ("TWILIO_AUTH_TOKEN", TOKEN.to_owned()),
        ("TWILIO_API_BASE", fake.base.clone()),
        ("TWILIO_WHATSAPP_FROM", "whatsapp:+14155238886".to_owned()),
        ("QUIET_HOURS_START", String::new()),
        ("QUIET_HOURS_END", String::new()),
        ("FREQUENCY_CAP_PER_DAY", "0".to_owned()),
        ("FREQUENCY_CAP_PER_WEEK", "0".to_owned()),
    ])?;
    sqlx::query("TRUNCATE automations, automation_run, automation_send CASCADE")
        .execute(db)
        .await?;
    let spec: domain::automation::AutomationSpec = serde_json::from_value(serde_json::json!({
        "name": "bench checkout",
        "trigger": {"kind": "event", "event": {"type": "checkout_started"}},
        "actions": [{"kind": "whatsapp", "content_sid": "HX0123456789abcdef0123456789abcdef",
                     "content_variables": {"1": "first_name"}}]
    }))?;
    let a = journeys::store::create(db, &spec, "bench").await?;
    journeys::store::set_enabled(db, a.id, true).await?;
    let engine = Arc::new(Engine::new(db.clone(), &settings)?);
    let stop = service_kit::CancellationToken::new();
    let loop_task = tokio::spawn(engine::run(
        engine.clone(),
        Duration::from_millis(settings.automations.automation_tick_ms),
        stop.clone(),
    ));

    // The profiles, with consent and a phone each, written before the clock starts.
    let ids: Vec<Uuid> = (0..triggers).map(|_| Uuid::now_v7()).collect();
    let phones: Vec<String> = (0..triggers).map(|i| format!("+9199{i:08}")).collect();
    sqlx::query(
        "INSERT INTO customer_profile (id, display_name, identifiers, traits, channels) \
         SELECT id, 'Bench ' || phone, jsonb_build_array(jsonb_build_object('kind', 'phone', 'value', phone)), \
           '{\"whatsapp_marketing\": \"subscribed\"}', ARRAY['whatsapp'] \
         FROM UNNEST($1::uuid[], $2::text[]) AS t (id, phone)",
    )
    .bind(&ids)
    .bind(&phones)
    .execute(db)
    .await?;

    // Ceilings.
    let mut pg = Vec::new();
    let mut http = Vec::new();
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(db).await?;
        pg.push(t.elapsed());
        let t = Instant::now();
        let _ = client
            .post(format!(
                "{}/2010-04-01/Accounts/{SID}/Messages.json",
                fake.base
            ))
            .send()
            .await?;
        http.push(t.elapsed());
    }
    pg.sort();
    http.sort();
    let before = fake.requests();

    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = Instant::now();
    let mut sent_at = Vec::with_capacity(triggers);
    let mut handlers = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let due = started + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let t0 = Instant::now();
        sent_at.push(t0);
        let (db, engine, id) = (db.clone(), engine.clone(), *id);
        handlers.spawn(async move {
            sqlx::query(
                "INSERT INTO normalized_event (event_id, occurred_at, received_at, source, channel, \
                 type, name, properties, profile_id, resolved_at) \
                 VALUES ($1, now(), now(), 'segment', 'web', 'checkout_started', 'Checkout Started', \
                 '{}', $2, now())",
            )
            .bind(Uuid::now_v7())
            .bind(id)
            .execute(&db)
            .await?;
            engine::on_profile_changes(&engine, &[id]).await?;
            Ok::<(), sqlx::Error>(())
        });
    }
    while let Some(r) = handlers.join_next().await {
        r.context("a trigger task")??;
    }
    let offered = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fake.messages().len() < triggers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let _ = loop_task.await;
    let by_phone: std::collections::HashMap<String, Instant> = fake
        .messages()
        .into_iter()
        .filter_map(|m| {
            let to = m.param("To")?.trim_start_matches("whatsapp:").to_owned();
            Some((to, m.received_at))
        })
        .collect();
    let mut lat: Vec<Duration> = phones
        .iter()
        .zip(&sent_at)
        .filter_map(|(p, t0)| by_phone.get(p).map(|r| r.saturating_duration_since(*t0)))
        .collect();
    anyhow::ensure!(!lat.is_empty(), "no message reached the fake");
    lat.sort();
    let (p50, p99) = (pct(&lat, 0.5), pct(&lat, 0.99));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "trigger → provider call: {} triggers offered at {rate}/s over {:.1} s ({:.0}/s achieved), {} calls ({} extra requests: none expected)",
        triggers,
        offered.as_secs_f64(),
        triggers as f64 / offered.as_secs_f64(),
        lat.len(),
        fake.requests().saturating_sub(before + lat.len()),
    );
    println!(
        "ceilings: Postgres round trip p50 {:.2} ms, HTTP POST to the fake p50 {:.2} ms",
        ms(pct(&pg, 0.5)),
        ms(pct(&http, 0.5))
    );
    println!("| | latency | × Postgres round trip | × HTTP round trip |");
    println!("|---|---|---|---|");
    for (label, d) in [("p50", p50), ("p99", p99)] {
        println!(
            "| {label} | {:.1} ms | {:.0} | {:.0} |",
            ms(d),
            d.as_secs_f64() / pct(&pg, 0.5).as_secs_f64(),
            d.as_secs_f64() / pct(&http, 0.5).as_secs_f64()
        );
    }
    Ok(())
}
