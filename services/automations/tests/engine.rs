//! The automations engine end to end against the real Postgres and the Twilio fake:
//! the abandoned-checkout reminder, every guardrail, dry runs, the control group,
//! exactly once across a crash, retries and permanent refusals.

mod common;

use std::time::Duration;

use automations::engine;
use chrono::Utc;
use common::*;
use domain::ProfileChangeKind;
use domain::automation::in_control_group;
use serde_json::json;
use test_support::eventually;
use test_support::twilio::FROM;
use uuid::Uuid;

/// Queues profile changes as the merger does (published by the relay the test runs).
async fn changed(db: &sqlx::PgPool, ids: &[Uuid]) {
    let mut tx = db.begin().await.unwrap();
    let changes: Vec<(Uuid, ProfileChangeKind)> = ids
        .iter()
        .map(|i| (*i, ProfileChangeKind::Updated))
        .collect();
    storage::profile_changes::queue(&mut tx, &changes)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_abandoned_checkout_reminder_goes_once_after_the_wait_and_not_after_an_order() {
    let (env, fake) = world(vec![]).await;
    let db = &env.db;
    let a = automation(db, abandoned_checkout("Abandoned checkout", 2)).await;
    // The whole service: profiles.changes in, runs and sends out.
    env.spawn(automations::run).await;
    tokio::spawn(service_kit::profile_changes::run_relay(
        env.context().streams(),
        db.clone(),
        "test",
        Duration::from_millis(50),
        env.shutdown.clone(),
    ));
    let asha = person(db, "Asha Rao", "+919810000001", Some("subscribed")).await;
    let ben = person(db, "Ben Kurian", "+919810000002", Some("subscribed")).await;
    checkout(db, asha).await;
    checkout(db, ben).await;
    changed(db, &[asha, ben]).await;
    // Two runs wait; nothing is sent before the wait is over.
    eventually(10, "two waiting runs", || async {
        (runs(db, a).await.len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(fake.requests(), 0, "nothing before the wait ends");
    // Ben orders within the hour (here: the two seconds).
    event(db, ben, "order_placed", None, json!({}), Utc::now()).await;
    changed(db, &[ben]).await;

    let done = finished(db, a, 2, 15).await;
    let outcome = |p| done.iter().find(|r| r.0 == p).unwrap().2.clone().unwrap();
    assert_eq!(outcome(asha), "acted");
    assert_eq!(
        outcome(ben),
        "exited",
        "an order ends the wait without a message"
    );
    eventually(5, "the reminder to be accepted", || async {
        (sends(db, a).await == vec![("queued".to_owned(), None, 1)]).then_some(())
    })
    .await;
    let m = fake.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].param("To"), Some("whatsapp:+919810000001"));
    assert_eq!(m[0].param("From"), Some(FROM));
    // No inbound message opened the 24-hour window: the template, not the body.
    assert_eq!(m[0].param("Body"), None);
    assert_eq!(m[0].param("ContentSid"), Some(TEMPLATE));
    let vars: serde_json::Value =
        serde_json::from_str(m[0].param("ContentVariables").unwrap()).unwrap();
    assert_eq!(
        vars,
        json!({"1": "Asha", "2": "Masala Chai 250g, Steel Tumbler"})
    );

    // Redelivered changes start nothing again.
    changed(db, &[asha, ben]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(runs(db, a).await.len(), 2);
    assert_eq!(fake.requests(), 1, "sent exactly once");
}

#[tokio::test]
async fn inside_the_window_the_free_form_body_goes_and_caps_hold_across_automations() {
    let (env, fake) = world(vec![]).await;
    let db = &env.db;
    let first = automation(db, on_checkout("First")).await;
    let mut second = abandoned_checkout("Second", 1);
    second["wait"] = json!({"kind": "delay", "seconds": 1});
    let second = automation(db, second).await;
    let e = engine(&env);
    let p = person(db, "Chitra Iyer", "+919810000003", Some("subscribed")).await;
    // She wrote to the brand an hour ago: the window is open.
    event(
        db,
        p,
        "message_received",
        Some("whatsapp.inbound"),
        json!({}),
        Utc::now() - chrono::Duration::hours(1),
    )
    .await;
    checkout(db, p).await;
    engine::on_profile_changes(&e, &[p]).await.unwrap();
    finished(db, first, 1, 10).await;
    finished(db, second, 1, 10).await;
    eventually(5, "the first message to be accepted", || async {
        (sends(db, first).await == vec![("queued".to_owned(), None, 1)]).then_some(())
    })
    .await;
    // One message a day per person and channel, across automations.
    assert_eq!(sends(db, second).await[0].0, "capped");
    let m = fake.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0].param("ContentSid"),
        Some(TEMPLATE),
        "the first has no body"
    );

    // A body inside the window goes free-form (caps off for this one: a new env).
    let (env2, fake2) = world(vec![("FREQUENCY_CAP_PER_DAY", "0".into())]).await;
    let db2 = &env2.db;
    let a = automation(db2, {
        let mut s = abandoned_checkout("Body", 1);
        s["wait"] = json!({"kind": "delay", "seconds": 1});
        s
    })
    .await;
    let e2 = engine(&env2);
    let q = person(db2, "Dev Shah", "+919810000004", Some("subscribed")).await;
    fake2.open_window("+919810000004");
    event(db2, q, "message_received", None, json!({}), Utc::now()).await;
    checkout(db2, q).await;
    engine::on_profile_changes(&e2, &[q]).await.unwrap();
    finished(db2, a, 1, 10).await;
    eventually(5, "the body to be accepted", || async {
        (fake2.messages().len() == 1).then_some(())
    })
    .await;
    let m = fake2.messages();
    assert_eq!(
        m[0].param("Body"),
        Some("Hi Dev, your cart: Masala Chai 250g, Steel Tumbler")
    );
    assert_eq!(m[0].param("ContentSid"), None);
}

#[tokio::test]
async fn consent_opt_out_and_erasure_are_read_at_send_time() {
    let (env, fake) = world(vec![]).await;
    let db = &env.db;
    let mut spec = on_checkout("Guarded");
    spec["wait"] = json!({"kind": "delay", "seconds": 1});
    let a = automation(db, spec).await;
    let e = engine(&env);
    let never = person(db, "No Consent", "+919810000010", None).await;
    let stopped = person(db, "Opted Out", "+919810000011", Some("subscribed")).await;
    let erased = person(db, "Erased", "+919810000012", Some("subscribed")).await;
    let suppressed = person(db, "Suppressed", "+919810000013", Some("subscribed")).await;
    for p in [never, stopped, erased, suppressed] {
        checkout(db, p).await;
    }
    engine::on_profile_changes(&e, &[never, stopped, erased, suppressed])
        .await
        .unwrap();
    // During the wait: a STOP reply unsubscribes, an erasure deletes the profile, and
    // another's phone lands on the suppression list.
    sqlx::query(
        "UPDATE customer_profile SET traits = '{\"whatsapp_marketing\": \"unsubscribed\"}' \
         WHERE id = $1",
    )
    .bind(stopped)
    .execute(db)
    .await
    .unwrap();
    sqlx::query("DELETE FROM customer_profile WHERE id = $1")
        .bind(erased)
        .execute(db)
        .await
        .unwrap();
    let hash = {
        use sha2::Digest as _;
        sha2::Sha256::digest(b"phone:+919810000013").to_vec()
    };
    sqlx::query("INSERT INTO suppression (identifier_sha256, kind) VALUES ($1, 'phone')")
        .bind(hash)
        .execute(db)
        .await
        .unwrap();
    let done = finished(db, a, 4, 10).await;
    let outcome = |p| done.iter().find(|r| r.0 == p).unwrap().2.clone().unwrap();
    assert_eq!(outcome(erased), "suppressed");
    assert_eq!(outcome(suppressed), "suppressed");
    assert_eq!(outcome(never), "acted");
    assert_eq!(outcome(stopped), "acted");
    let mut statuses: Vec<String> = sends(db, a).await.into_iter().map(|s| s.0).collect();
    statuses.sort();
    assert_eq!(statuses, vec!["no_consent", "no_consent"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests(), 0, "nobody without consent is contacted");
    let results = journeys::store::results(db, a).await.unwrap();
    assert_eq!(results.sends_by_status.get("no_consent"), Some(&2));
    assert_eq!(results.runs_by_outcome.get("suppressed"), Some(&2));
}

/// Quiet hours around now in UTC: `(start, end)` as HH:MM.
fn quiet_around_now() -> (String, String) {
    let now = Utc::now();
    let m =
        i64::from(chrono::Timelike::hour(&now)) * 60 + i64::from(chrono::Timelike::minute(&now));
    let at = |m: i64| {
        let m = m.rem_euclid(1440);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    (at(m - 30), at(m + 60))
}

#[tokio::test]
async fn quiet_hours_hold_or_skip() {
    let (start, end) = quiet_around_now();
    let (env, fake) = world(vec![
        ("QUIET_HOURS_START", start),
        ("QUIET_HOURS_END", end),
        ("BRAND_TIME_ZONE", "UTC".into()),
    ])
    .await;
    let db = &env.db;
    let hold = automation(db, on_checkout("Hold")).await;
    let mut skip = on_checkout("Skip");
    skip["guardrails"] = json!({"quiet_hours": "skip"});
    let skip = automation(db, skip).await;
    let e = engine(&env);
    let p = person(db, "Night Owl", "+919810000020", Some("subscribed")).await;
    checkout(db, p).await;
    engine::on_profile_changes(&e, &[p]).await.unwrap();
    finished(db, skip, 1, 10).await;
    assert_eq!(sends(db, skip).await[0].0, "quiet_hours_skipped");
    // The held run waits until the quiet hours end (about an hour from now).
    let (status, wake_at): (String, chrono::DateTime<Utc>) =
        eventually(10, "a held run", || async {
            let r: Option<(String, chrono::DateTime<Utc>, Option<String>)> = sqlx::query_as(
                "SELECT status, wake_at, detail FROM automation_run WHERE automation_id = $1",
            )
            .bind(hold)
            .fetch_optional(db)
            .await
            .unwrap();
            r.filter(|r| r.2.as_deref().is_some_and(|d| d.contains("quiet hours")))
                .map(|r| (r.0, r.1))
        })
        .await;
    assert_eq!(status, "waiting");
    let ahead = wake_at - Utc::now();
    assert!(
        ahead > chrono::Duration::minutes(55) && ahead <= chrono::Duration::minutes(61),
        "held until the end of quiet hours, {ahead} from now"
    );
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn the_control_group_is_held_out_and_recorded_and_a_dry_run_sends_nothing() {
    let (env, fake) = world(vec![]).await;
    let db = &env.db;
    let mut spec = on_checkout("Win-back");
    spec["guardrails"] = json!({"control_percent": 50});
    let a = automation(db, spec).await;
    let mut people = Vec::new();
    for i in 0..12 {
        let p = person(
            db,
            &format!("Person {i}"),
            &format!("+9198100001{i:02}"),
            Some("subscribed"),
        )
        .await;
        checkout(db, p).await;
        people.push(p);
    }
    // A dry run first: who would get what, nothing recorded or sent.
    let view = journeys::store::get(db, a).await.unwrap();
    let policy = journeys::Policy::from_settings(&env.settings.automations).unwrap();
    let dry = journeys::dry::dry_run(db, &policy, a, &view.spec, None, 100)
        .await
        .unwrap();
    assert_eq!(dry.candidates, 12);
    for item in &dry.items {
        let held = in_control_group(a, item.profile_id, 50);
        if held {
            assert_eq!(item.outcome.as_str(), "held_out");
            assert!(item.actions.is_empty());
        } else {
            assert_eq!(item.outcome.as_str(), "acted");
            let r = item.actions[0].rendered.as_ref().unwrap();
            assert_eq!(r.content_sid.as_deref(), Some(TEMPLATE));
            assert_eq!(r.content_variables["1"], "Person");
        }
    }
    assert!(runs(db, a).await.is_empty(), "a dry run records nothing");

    let e = engine(&env);
    engine::on_profile_changes(&e, &people).await.unwrap();
    let done = finished(db, a, 12, 10).await;
    let expected_held: Vec<Uuid> = people
        .iter()
        .copied()
        .filter(|p| in_control_group(a, *p, 50))
        .collect();
    let held: Vec<Uuid> = done
        .iter()
        .filter(|r| r.2.as_deref() == Some("held_out"))
        .map(|r| r.0)
        .collect();
    assert_eq!(held.len(), expected_held.len());
    assert!(held.iter().all(|p| expected_held.contains(p)));
    eventually(5, "every treated message accepted", || async {
        (fake.messages().len() == 12 - expected_held.len()).then_some(())
    })
    .await;
    assert_eq!(
        fake.requests(),
        12 - expected_held.len(),
        "the control group gets nothing"
    );
    let results = journeys::store::results(db, a).await.unwrap();
    assert_eq!(results.conversions.control, expected_held.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_provider_call_and_its_record_never_sends_twice() {
    let (env, fake) = world(vec![]).await;
    let db = &env.db;
    let a = automation(db, on_checkout("Crash")).await;
    let p = person(db, "Esha Nair", "+919810000030", Some("subscribed")).await;
    checkout(db, p).await;
    // Twilio takes 3 s to answer; the engine dies while it waits.
    fake.delay_answers(Duration::from_secs(3));
    let first = std::sync::Arc::new(engine::Engine::new(db.clone(), &env.settings).unwrap());
    let stop = service_kit::CancellationToken::new();
    let task = tokio::spawn(engine::run(
        first.clone(),
        Duration::from_millis(50),
        stop.clone(),
    ));
    engine::on_profile_changes(&first, &[p]).await.unwrap();
    assert!(fake.wait_requests(1, Duration::from_secs(10)).await);
    task.abort();
    let _ = task.await;
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM automation_send WHERE automation_id = $1")
            .bind(a)
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), attempts),
        ("sending", 1),
        "the intent was recorded first"
    );

    // Restarted: the run is done, the intent has no answer; it is settled, not resent.
    fake.delay_answers(Duration::ZERO);
    let _second = engine(&env);
    engine::on_profile_changes(&_second, &[p]).await.unwrap();
    eventually(20, "the lost answer to be settled", || async {
        (sends(db, a).await[0].0 == "unknown").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.requests(), 1, "never resent");
    assert_eq!(runs(db, a).await.len(), 1);
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_refusals_recorded() {
    let (env, fake) = world(vec![("FREQUENCY_CAP_PER_DAY", "0".into())]).await;
    let db = &env.db;
    let a = automation(db, on_checkout("Retry")).await;
    let e = engine(&env);
    fake.fail_next(429, 1);
    fake.fail_next(503, 1);
    let ok = person(db, "Farah Khan", "+919810000040", Some("subscribed")).await;
    checkout(db, ok).await;
    engine::on_profile_changes(&e, &[ok]).await.unwrap();
    eventually(20, "the third attempt to be accepted", || async {
        let s = sends(db, a).await;
        (s.first().is_some_and(|s| s.0 == "queued")).then_some(())
    })
    .await;
    assert_eq!(sends(db, a).await[0].2, 3, "429, 503, then accepted");
    assert_eq!(fake.requests(), 3);

    // An invalid number: Twilio's 21211, recorded, never retried.
    let bad = person(db, "Bad Number", "+12", Some("subscribed")).await;
    checkout(db, bad).await;
    engine::on_profile_changes(&e, &[bad]).await.unwrap();
    eventually(10, "the refusal to be recorded", || async {
        let s = sends(db, a).await;
        (s.len() == 2 && s[1].0 == "failed").then_some(s)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = sends(db, a).await;
    assert_eq!(s[1], ("failed".to_owned(), Some("21211".to_owned()), 1));
    assert_eq!(fake.requests(), 4);
}

#[tokio::test]
async fn the_kill_switch_cancels_waiting_runs() {
    let (env, fake) = world(vec![]).await;
    let db = &env.db;
    let a = automation(db, abandoned_checkout("Killed", 1)).await;
    let e = engine(&env);
    let p = person(db, "Gita Rao", "+919810000050", Some("subscribed")).await;
    checkout(db, p).await;
    engine::on_profile_changes(&e, &[p]).await.unwrap();
    journeys::store::set_enabled(db, a, false).await.unwrap();
    let done = finished(db, a, 1, 10).await;
    assert_eq!(done[0].2.as_deref(), Some("cancelled"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.requests(), 0);
}

/// A receiver of automation webhooks: checks each signature, answers 503 to the first
/// delivery and 200 after, and keeps `(id, body)` of every delivery.
async fn receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value, bool)>>>,
) {
    use axum::http::{HeaderMap, StatusCode};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let ts: i64 = h(messaging::webhook::TIMESTAMP_HEADER).parse().unwrap_or(0);
                let valid = messaging::webhook::verify(
                    b"whsec-test",
                    ts,
                    &body,
                    &h(messaging::webhook::SIGNATURE_HEADER),
                    Utc::now().timestamp(),
                    300,
                );
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut k = kept.lock().unwrap();
                k.push((h(messaging::webhook::ID_HEADER), json, valid));
                if k.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn webhooks_are_signed_retried_with_one_id_and_lists_change() {
    let (env, fake) = world(vec![]).await;
    let db = &env.db;
    let (url, seen) = receiver().await;
    let a = automation(
        db,
        json!({
            "name": "Hook",
            "trigger": {"kind": "event", "event": {"type": "checkout_started"}},
            "actions": [{"kind": "webhook", "url": url},
                        {"kind": "add_to_list", "list": "vip"}]
        }),
    )
    .await;
    let e = engine(&env);
    let p = person(db, "Jaya Menon", "+919810000070", None).await;
    checkout(db, p).await;
    engine::on_profile_changes(&e, &[p]).await.unwrap();
    eventually(15, "the webhook to be delivered", || async {
        let s = sends(db, a).await;
        (s.iter().any(|s| s.0 == "queued")).then_some(())
    })
    .await;
    let deliveries = seen.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 2, "503, then delivered");
    assert!(
        deliveries.iter().all(|d| d.2),
        "every delivery is correctly signed"
    );
    assert_eq!(deliveries[0].0, deliveries[1].0, "one id across retries");
    let body = &deliveries[1].1;
    assert_eq!(body["id"], deliveries[1].0.as_str());
    assert_eq!(body["automation"]["name"], "Hook");
    assert_eq!(body["profile"]["id"], p.to_string());
    assert_eq!(body["profile"]["display_name"], "Jaya Menon");
    assert_eq!(
        body["run"]["context"]["items"][0]["name"],
        "Masala Chai 250g"
    );
    let on_list: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM profile_list_member WHERE list = 'vip' AND profile_id = $1)",
    )
    .bind(p)
    .fetch_one(db)
    .await
    .unwrap();
    assert!(on_list);
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn audience_entries_and_daily_schedules_start_one_run_each() {
    let (env, fake) = world(vec![("FREQUENCY_CAP_PER_DAY", "0".into())]).await;
    let db = &env.db;
    let audience = audiences::store::create(
        db,
        &serde_json::from_value(json!({"name": "WhatsApp people", "rule": "whatsapp_capable"}))
            .unwrap(),
        "test",
    )
    .await
    .unwrap()
    .id;
    let early = person(db, "Already In", "+919810000080", Some("subscribed")).await;
    audiences::store::recompute(db, audience, Utc::now())
        .await
        .unwrap();
    let entered = automation(
        db,
        json!({"name": "Welcome", "trigger": {"kind": "audience_entered", "audience_id": audience},
               "actions": [{"kind": "whatsapp", "content_sid": TEMPLATE}]}),
    )
    .await;
    // Entries before enabling start nothing; a new member does.
    let newcomer = person(db, "New Member", "+919810000081", Some("subscribed")).await;
    audiences::store::evaluate_profile(db, newcomer, Utc::now())
        .await
        .unwrap();
    let daily = automation(
        db,
        json!({"name": "Daily", "trigger": {"kind": "schedule", "audience_id": audience, "at": "00:00"},
               "actions": [{"kind": "add_to_list", "list": "daily"}]}),
    )
    .await;
    let _e = engine(&env);
    let done = finished(db, entered, 1, 10).await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, newcomer);
    // The schedule's time has passed today: everyone in the audience, once.
    let daily_runs = finished(db, daily, 2, 10).await;
    let mut who: Vec<uuid::Uuid> = daily_runs.iter().map(|r| r.0).collect();
    who.sort();
    let mut want = vec![early, newcomer];
    want.sort();
    assert_eq!(who, want);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(runs(db, daily).await.len(), 2, "once a day");
    assert_eq!(runs(db, entered).await.len(), 1);
    eventually(5, "the welcome message", || async {
        (fake.messages().len() == 1).then_some(())
    })
    .await;
}
