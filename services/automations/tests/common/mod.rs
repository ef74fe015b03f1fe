//! Fixtures of the automations engine tests: profiles and events written as the
//! identity merger writes them, automations saved and enabled through `journeys`, and
//! the Twilio fake.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::automation::AutomationSpec;
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::TestEnv;
use test_support::twilio::{ACCOUNT_SID, AUTH_TOKEN, FROM, FakeTwilio};
use uuid::Uuid;

/// A template SID in the right shape.
pub const TEMPLATE: &str = "HX0123456789abcdef0123456789abcdef";

/// Settings for an engine against `fake`, no quiet hours, caps 1/day 3/week.
pub fn settings(fake: &FakeTwilio) -> Vec<(&'static str, String)> {
    vec![
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
        ("TWILIO_API_BASE", fake.base.clone()),
        ("TWILIO_WHATSAPP_FROM", FROM.into()),
        ("QUIET_HOURS_START", String::new()),
        ("QUIET_HOURS_END", String::new()),
        ("AUTOMATION_TICK_MS", "50".into()),
        ("AUTOMATION_PROVIDER_TIMEOUT_SECS", "1".into()),
        ("AUTOMATION_WEBHOOK_SECRET", "whsec-test".into()),
        ("AUDIENCE_RECOMPUTE_INTERVAL_SECS", "3600".into()),
    ]
}

/// A fake and an env wired to it, with `extra` settings on top.
pub async fn world(extra: Vec<(&'static str, String)>) -> (TestEnv, FakeTwilio) {
    let fake = FakeTwilio::start(ACCOUNT_SID, AUTH_TOKEN).await.unwrap();
    let mut s = settings(&fake);
    s.extend(extra);
    (TestEnv::with_settings(s).await, fake)
}

/// The engine of `env`, its pass loop running until the env drops.
pub fn engine(env: &TestEnv) -> Arc<automations::engine::Engine> {
    let e = Arc::new(automations::engine::Engine::new(env.db.clone(), &env.settings).unwrap());
    tokio::spawn(automations::engine::run(
        e.clone(),
        Duration::from_millis(50),
        env.shutdown.clone(),
    ));
    e
}

/// A live profile with a phone, the WhatsApp channel and (when given) a consent trait.
pub async fn person(db: &PgPool, name: &str, phone: &str, consent: Option<&str>) -> Uuid {
    let id = Uuid::now_v7();
    let traits = match consent {
        Some(c) => json!({"whatsapp_marketing": c}),
        None => json!({}),
    };
    sqlx::query(
        "INSERT INTO customer_profile (id, display_name, identifiers, traits, channels) \
         VALUES ($1, $2, $3, $4, ARRAY['whatsapp'])",
    )
    .bind(id)
    .bind(name)
    .bind(json!([{"kind": "phone", "value": phone}]))
    .bind(traits)
    .execute(db)
    .await
    .unwrap();
    id
}

/// An event resolved to `profile` now, as the merger attaches it.
pub async fn event(
    db: &PgPool,
    profile: Uuid,
    event_type: &str,
    name: Option<&str>,
    properties: Value,
    occurred_at: DateTime<Utc>,
) -> Uuid {
    let id = Uuid::now_v7();
    let channel = if event_type == "message_received" {
        "whatsapp"
    } else {
        "web"
    };
    sqlx::query(
        "INSERT INTO normalized_event (event_id, occurred_at, received_at, source, channel, \
         type, name, properties, profile_id, resolved_at) \
         VALUES ($1, $2, now(), 'segment', $3, $4, $5, $6, $7, now())",
    )
    .bind(id)
    .bind(occurred_at)
    .bind(channel)
    .bind(event_type)
    .bind(name)
    .bind(properties)
    .bind(profile)
    .execute(db)
    .await
    .unwrap();
    id
}

/// A checkout with a two-item cart.
pub async fn checkout(db: &PgPool, profile: Uuid) -> Uuid {
    event(
        db,
        profile,
        "checkout_started",
        Some("Checkout Started"),
        json!({"items": [{"name": "Masala Chai 250g"}, {"name": "Steel Tumbler"}]}),
        Utc::now(),
    )
    .await
}

/// Saves and enables an automation from JSON.
pub async fn automation(db: &PgPool, spec: Value) -> Uuid {
    let spec: AutomationSpec = serde_json::from_value(spec).unwrap();
    let a = journeys::store::create(db, &spec, "test").await.unwrap();
    journeys::store::set_enabled(db, a.id, true).await.unwrap();
    a.id
}

/// "Checkout Started, no order within `timeout` seconds → WhatsApp reminder".
pub fn abandoned_checkout(name: &str, timeout: u64) -> Value {
    json!({
        "name": name,
        "trigger": {"kind": "event", "event": {"type": "checkout_started", "name": "Checkout Started"}},
        "wait": {"kind": "until_event", "event": {"type": "order_placed"}, "timeout_seconds": timeout},
        "actions": [{"kind": "whatsapp",
                     "body": "Hi {{first_name}}, your cart: {{cart_contents}}",
                     "content_sid": TEMPLATE,
                     "content_variables": {"1": "first_name", "2": "cart_contents"}}]
    })
}

/// An automation that messages at once on a checkout.
pub fn on_checkout(name: &str) -> Value {
    json!({
        "name": name,
        "trigger": {"kind": "event", "event": {"type": "checkout_started"}},
        "actions": [{"kind": "whatsapp", "content_sid": TEMPLATE,
                     "content_variables": {"1": "first_name"}}]
    })
}

/// `(status, error_code, attempts)` of every send of `automation`, oldest first.
pub async fn sends(db: &PgPool, automation: Uuid) -> Vec<(String, Option<String>, i32)> {
    sqlx::query_as(
        "SELECT status, error_code, attempts FROM automation_send WHERE automation_id = $1 \
         ORDER BY id",
    )
    .bind(automation)
    .fetch_all(db)
    .await
    .unwrap()
}

/// `(profile, status, outcome)` of every run of `automation`, oldest first.
pub async fn runs(db: &PgPool, automation: Uuid) -> Vec<(Uuid, String, Option<String>)> {
    sqlx::query_as(
        "SELECT profile_id, status, outcome FROM automation_run WHERE automation_id = $1 \
         ORDER BY id",
    )
    .bind(automation)
    .fetch_all(db)
    .await
    .unwrap()
}

/// Waits until `automation` has `n` finished runs; returns every run.
pub async fn finished(
    db: &PgPool,
    automation: Uuid,
    n: usize,
    secs: u64,
) -> Vec<(Uuid, String, Option<String>)> {
    test_support::eventually(secs, "runs to finish", || async {
        let r = runs(db, automation).await;
        (r.iter().filter(|x| x.1 == "done").count() >= n).then_some(r)
    })
    .await
}
