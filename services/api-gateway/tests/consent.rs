//! Marketing consent end to end on the real Postgres and Redis, with the normalizer and
//! the identity merger running: WhatsApp replies (an opt-in by writing, STOP and START
//! keywords, in either arrival order), Twilio status callbacks of an outbound message,
//! and `PUT /api/v1/profiles/{id}/consent` all flow through `events.raw` and land in the
//! Customer 360 (consent per channel with source and time, recent messages, channels).

mod common;

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use common::{Credentials, Gateway, code, into_json};
use domain::Source;
use domain::api::Role;
use ingestion::raw_event::NewRawEvent;
use ingestion::sources::twilio;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const PHONE: &str = "+919845012345";

/// A Twilio callback as ingest stores it (the POST parameters as a JSON object).
fn twilio_event(kind: &str, key: &str, params: Value, at: DateTime<Utc>) -> NewRawEvent {
    let mut ev = NewRawEvent::new(None, Source::Twilio, key, kind, params);
    ev.occurred_at = Some(at);
    ev
}

fn inbound(sid: &str, body: &str, at: DateTime<Utc>) -> NewRawEvent {
    twilio_event(
        twilio::KIND_MESSAGE,
        sid,
        json!({"MessageSid": sid, "From": format!("whatsapp:{PHONE}"),
               "To": "whatsapp:+14155238886", "Body": body, "NumMedia": "0",
               "WaId": PHONE.trim_start_matches('+'), "ProfileName": "Meera"}),
        at,
    )
}

fn status(sid: &str, status: &str, at: DateTime<Utc>) -> NewRawEvent {
    twilio_event(
        twilio::KIND_STATUS,
        &format!("{sid}:{status}"),
        json!({"MessageSid": sid, "MessageStatus": status,
               "To": format!("whatsapp:{PHONE}"), "From": "whatsapp:+14155238886"}),
        at,
    )
}

/// Stores and publishes raw events one at a time, in the given order, as ingest does.
async fn deliver(gw: &Gateway, events: &[NewRawEvent]) {
    let streams = gw.env.context().streams();
    for ev in events {
        ingestion::raw::insert_batch(gw.db(), std::slice::from_ref(ev))
            .await
            .unwrap();
        assert!(ingestion::raw::publish_stored(&streams, gw.db(), std::slice::from_ref(ev)).await);
    }
}

/// The profile an event landed on, once the merger resolved it.
async fn profile_of(gw: &Gateway, event: Uuid) -> Uuid {
    test_support::eventually(30, "the event to be resolved", || async {
        sqlx::query_scalar::<_, Option<Uuid>>(
            "SELECT profile_id FROM normalized_event WHERE event_id = $1",
        )
        .bind(event)
        .fetch_optional(gw.db())
        .await
        .unwrap()
        .flatten()
    })
    .await
}

/// The live profile `id` resolves to (itself, or the survivor it was merged into).
async fn live(gw: &Gateway, who: &Credentials, id: Uuid) -> Option<Uuid> {
    let (status, view) = gw.get(&format!("/profiles/{id}"), who).await;
    (status == 200).then(|| view["profile"]["profile_id"].as_str()?.parse().ok())?
}

/// The Customer 360 once `check` accepts it.
async fn c360_when(
    gw: &Gateway,
    who: &Credentials,
    id: Uuid,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    test_support::eventually(30, what, || async {
        let (status, view) = gw.get(&format!("/profiles/{id}"), who).await;
        (status == 200 && check(&view["profile"])).then_some(view["profile"].clone())
    })
    .await
}

fn whatsapp(doc: &Value) -> &Value {
    doc["consent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "whatsapp")
        .unwrap()
}

async fn put(gw: &Gateway, id: Uuid, who: &Credentials, body: Value) -> (u16, Value) {
    into_json(
        gw.request(Method::PUT, &format!("/profiles/{id}/consent"), who)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn consent_from_replies_status_callbacks_and_the_api() {
    let gw = Gateway::start().await;
    gw.env.spawn(normalizer::run).await;
    gw.env.spawn(identity_merger::run).await;
    let viewer = gw.token(Role::Viewer).await;
    let analyst = gw.session(Role::Analyst).await;

    // The person writes (an opt-in), then replies STOP a minute later; the STOP arrives
    // first. The latest by event time wins: unsubscribed.
    let t0 = Utc::now().trunc_subsecs(0) - Duration::hours(2);
    let hello = inbound("SMhello", "Is the indigo kurta back in M?", t0);
    let stop = inbound("SMstop", "stop", t0 + Duration::minutes(1));
    deliver(&gw, std::slice::from_ref(&stop)).await;
    let first = profile_of(&gw, stop.id).await;
    deliver(&gw, std::slice::from_ref(&hello)).await;
    let second = profile_of(&gw, hello.id).await;
    // One person: an earlier event may make the merger replay the profile in time
    // order, so both ids resolve to one live profile (the Customer 360 follows merges).
    let id: Uuid = test_support::eventually(30, "one person", || async {
        let (a, b) = (
            live(&gw, &viewer, first).await?,
            live(&gw, &viewer, second).await?,
        );
        (a == b).then_some(a)
    })
    .await;
    let doc = c360_when(&gw, &viewer, id, "both replies applied", |d| {
        d["recent_messages"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
    })
    .await;
    let wa = whatsapp(&doc);
    assert_eq!(wa["status"], "unsubscribed", "{doc}");
    assert_eq!(wa["subscribed"], false);
    assert_eq!(wa["source"], "whatsapp_keyword");
    let at: DateTime<Utc> = wa["updated_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        at.timestamp_micros(),
        (t0 + Duration::minutes(1)).timestamp_micros()
    );
    assert_eq!(doc["traits"]["whatsapp_marketing"], "unsubscribed");
    assert_eq!(
        doc["traits"]["whatsapp_marketing_source"],
        "whatsapp_keyword"
    );

    // An automation sent a message (recorded with its text, as the engine does);
    // Twilio's callbacks about it carry no text.
    let (automation, run) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO automations (id, name, spec) VALUES ($1, 'cart reminder', '{}')")
        .bind(automation)
        .execute(gw.db())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO automation_run (id, automation_id, profile_id, occurrence, status, \
                                     outcome, triggered_at, wake_at) \
         VALUES ($1, $2, $3, 'test', 'done', 'acted', now(), now())",
    )
    .bind(run)
    .bind(automation)
    .bind(id)
    .execute(gw.db())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO automation_send (id, run_id, automation_id, profile_id, action_index, \
                                      channel, status, provider_id, rendered) \
         VALUES ($1, $2, $3, $4, 0, 'whatsapp', 'queued', 'SMout1', $5)",
    )
    .bind(Uuid::new_v4())
    .bind(run)
    .bind(automation)
    .bind(id)
    .bind(json!({
        "channel": "whatsapp", "to": "whatsapp:+919800000001",
        "body": "Your indigo kurta is still in your cart",
        "content_sid": null, "content_variables": {}, "in_session_window": true,
    }))
    .execute(gw.db())
    .await
    .unwrap();

    // START opts back in; an outbound message's status callbacks arrive out of order.
    let t1 = t0 + Duration::minutes(10);
    deliver(
        &gw,
        &[
            inbound("SMstart", "START", t1),
            status("SMout1", "read", t1 + Duration::minutes(3)),
            status("SMout1", "queued", t1 + Duration::minutes(1)),
            status("SMout1", "delivered", t1 + Duration::minutes(2)),
        ],
    )
    .await;
    let doc = c360_when(&gw, &viewer, id, "the outbound message read", |d| {
        d["recent_messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|e| e["status"] == "read"))
            && d["consent"][0]["status"] == "subscribed"
    })
    .await;
    let messages = doc["recent_messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "one entry per message: {messages:?}");
    let out = &messages[0];
    assert_eq!(
        (&out["message_sid"], &out["direction"], &out["status"]),
        (&json!("SMout1"), &json!("outbound"), &json!("read"))
    );
    assert_eq!(
        out["body"], "Your indigo kurta is still in your cart",
        "the text the automation recorded with the send"
    );
    assert_eq!(messages[1]["direction"], "inbound");
    assert_eq!(messages[1]["body"], "START");
    assert!(
        doc["channels"]
            .as_array()
            .unwrap()
            .contains(&json!("whatsapp"))
    );
    assert_eq!(whatsapp(&doc)["source"], "whatsapp_keyword");
    // The outbound message is on the timeline: all three callbacks, once the two that
    // arrived after the later "read" (late events, resolved by a region replay) are in.
    let timeline =
        test_support::eventually(30, "three status callbacks on the timeline", || async {
            let (_, timeline) = gw
                .get(
                    &format!("/profiles/{id}/timeline?type=message_status"),
                    &viewer,
                )
                .await;
            (timeline["items"].as_array().map_or(0, Vec::len) >= 3).then_some(timeline)
        })
        .await;
    assert_eq!(timeline["items"].as_array().unwrap().len(), 3, "{timeline}");

    // The API: viewers may not write; bad input is refused; an analyst's write flows
    // through the pipeline and wins as the latest.
    let (s, body) = put(
        &gw,
        id,
        &viewer,
        json!({"channel": "whatsapp", "status": "unsubscribed"}),
    )
    .await;
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    for bad in [
        json!({"channel": "fax", "status": "unsubscribed"}),
        json!({"channel": "whatsapp", "status": "maybe"}),
        json!({"channel": "whatsapp", "status": "subscribed", "source": "a b"}),
        json!({"channel": "whatsapp", "status": "subscribed", "extra": 1}),
    ] {
        let (s, body) = put(&gw, id, &analyst, bad.clone()).await;
        assert_eq!(s, 400, "{bad} → {body}");
    }
    let (s, _) = put(
        &gw,
        Uuid::now_v7(),
        &analyst,
        json!({"channel": "whatsapp", "status": "subscribed"}),
    )
    .await;
    assert_eq!(s, 404);
    let (s, accepted) = put(
        &gw,
        id,
        &analyst,
        json!({"channel": "whatsapp", "status": "unsubscribed", "source": "call-centre"}),
    )
    .await;
    assert_eq!(s, 202, "{accepted}");
    assert_eq!(accepted["profile_id"], id.to_string());
    assert_eq!(accepted["source"], "api:call-centre");
    let (s, _) = put(
        &gw,
        id,
        &analyst,
        json!({"channel": "email", "status": "subscribed"}),
    )
    .await;
    assert_eq!(s, 202);
    let doc = c360_when(&gw, &viewer, id, "the API's consent applied", |d| {
        d["consent"][0]["status"] == "unsubscribed" && d["consent"][1]["status"] == "subscribed"
    })
    .await;
    assert_eq!(whatsapp(&doc)["source"], "api:call-centre");
    assert_eq!(doc["consent"][1]["channel"], "email");
    assert_eq!(doc["consent"][1]["source"], "api");
    assert_eq!(
        doc["consent"][2]["status"],
        Value::Null,
        "sms never recorded"
    );
    // The write is a stored raw event like any delivery, with who made it.
    let raw: Uuid = accepted["raw_event_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(profile_of(&gw, raw).await, id);
}

#[tokio::test]
async fn a_profile_without_contact_identifiers_is_refused() {
    let gw = Gateway::start().await;
    let analyst = gw.token(Role::Analyst).await;
    let id = common::seed_profile(
        gw.db(),
        common::ProfileSeed {
            identifiers: vec![("cookie_id", "c-1")],
            ..Default::default()
        },
    )
    .await;
    let (s, body) = put(
        &gw,
        id,
        &analyst,
        json!({"channel": "whatsapp", "status": "subscribed"}),
    )
    .await;
    assert_eq!((s, code(&body)), (409, "conflict"), "{body}");
}
