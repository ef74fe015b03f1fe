//! Twilio WhatsApp: inbound messages and delivery-status callbacks.
//!
//! Twilio POSTs form-encoded parameters and signs the public URL plus the sorted
//! parameters (`X-Twilio-Signature`, see [`crate::signing`]). The raw event's body is the
//! parameters as a JSON object. Deduplication, within the integration: an inbound
//! message by its `MessageSid`; a status callback by `MessageSid:MessageStatus`, since
//! one message reports queued, sent, delivered and read under the same sid.
//!
//! Mapping: inbound → `message_received` on the WhatsApp channel with the sender's phone
//! (`From=whatsapp:+E164`, `WaId`) and WhatsApp profile name; body, media, button replies
//! and shared locations become properties. Status → `message_status` for the recipient's
//! phone (`To`), with the status and any error code.
//!
//! Consent: an inbound message records WhatsApp marketing consent (`whatsapp_marketing`
//! with its source and time, see [`domain::consent`]): opted out by Twilio's opt-out
//! keywords, back in by its opt-in keywords, and in by any other message the person
//! writes.

use chrono::{DateTime, Utc};
use domain::consent::{self, ConsentChannel, ConsentStatus};
use domain::{Channel, EventType, IdentifierKind, Source};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::edge::{bad_signature, signature};
use super::mapping::{
    Identifiers, copy_fields, event_of, integer, required, s, text, without_order,
};
use super::{
    Connector, Credential, Description, MapError, Normalized, Refusal, SignedWebhook,
    WebhookAnswer, WebhookRequest, WebhookRoute,
};
use crate::raw_event::{NewRawEvent, RawRecord};
use crate::signing;

/// The Twilio WhatsApp connector.
pub struct Twilio;

/// Kind of an inbound message.
pub const KIND_MESSAGE: &str = "message";
/// Kind of a delivery-status callback.
pub const KIND_STATUS: &str = "status";

/// The delivery statuses Twilio reports for outbound messages.
pub const STATUSES: [&str; 9] = [
    "accepted",
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "read",
    "failed",
];

/// The empty TwiML document answered to inbound messages (no automatic reply).
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

const SIGNATURE: &str = "X-Twilio-Signature";

const ROUTES: [WebhookRoute; 2] = [
    WebhookRoute {
        suffix: "",
        kind: KIND_MESSAGE,
        purpose: "inbound messages",
        dedupe_key: "integration and `MessageSid`",
    },
    WebhookRoute {
        suffix: "/status",
        kind: KIND_STATUS,
        purpose: "status callbacks",
        dedupe_key: "integration and `MessageSid:MessageStatus` (one message reports each status once)",
    },
];

const DESCRIPTION: Description = Description {
    source: Source::Twilio,
    label: "Twilio WhatsApp",
    credential: Credential::AuthToken,
    authentication: "X-Twilio-Signature: base64 HMAC-SHA1 of the public URL and the sorted parameters, with the secret as auth token (Twilio's scheme)",
    own_secret_hint: Some("Paste your Twilio account's auth token: Twilio signs requests with it."),
};

impl Connector for Twilio {
    fn description(&self) -> &'static Description {
        &DESCRIPTION
    }

    fn webhook(&self) -> Option<&dyn SignedWebhook> {
        Some(self)
    }

    fn setup_steps(&self, webhook_url: &str) -> Vec<String> {
        vec![
            "In the Twilio console open Messaging → Senders → WhatsApp senders and pick your number.".into(),
            format!("Set “A message comes in” to {webhook_url} (HTTP POST)."),
            format!("Set the status callback URL to {webhook_url}{}.", ROUTES[1].suffix),
            "The secret is your account's auth token; when you rotate it in Twilio, update it here too.".into(),
        ]
    }

    fn normalize(&self, raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
        normalize(raw, region)
    }

    fn test_delivery(
        &self,
        _customer: &str,
        _key: &str,
        _now: DateTime<Utc>,
    ) -> (&'static str, Value) {
        // A status callback identifies the recipient by phone only, and a test must not
        // invent one: the event maps, and lands on no profile.
        (
            KIND_STATUS,
            json!({"MessageSid": format!("SMtest{}", Uuid::now_v7().simple()),
                   "MessageStatus": "delivered", "constintel_test": "true"}),
        )
    }
}

impl SignedWebhook for Twilio {
    fn routes(&self) -> &'static [WebhookRoute] {
        &ROUTES
    }

    fn signature_header(&self) -> &'static str {
        SIGNATURE
    }

    /// Twilio signs the URL it called, which is the public one: behind a proxy the host
    /// and scheme ingest sees differ, so the request's public URL is used.
    fn verify(&self, secret: &str, request: &WebhookRequest<'_>) -> Result<(), Refusal> {
        let sig = signature(request, SIGNATURE)?;
        let params = form(request.body)?;
        if signing::verify_twilio(secret, &request.public_url(), &params, sig) {
            Ok(())
        } else {
            Err(bad_signature(SIGNATURE))
        }
    }

    fn raw_event(
        &self,
        integration: Uuid,
        route: &WebhookRoute,
        request: &WebhookRequest<'_>,
    ) -> Result<NewRawEvent, Refusal> {
        raw_event(integration, route.kind, &form(request.body)?)
            .map_err(|e| Refusal::invalid("invalid_callback", e))
    }

    fn answer(&self) -> WebhookAnswer {
        WebhookAnswer::Xml(EMPTY_TWIML)
    }
}

/// The POST parameters of a form-encoded body.
fn form(body: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    serde_urlencoded::from_bytes(body).map_err(|e| {
        Refusal::invalid(
            "malformed_form",
            format!("the body is not form-encoded: {e}"),
        )
    })
}

/// Builds the raw event of a verified request. `params` are the POST parameters.
fn raw_event(
    integration_id: Uuid,
    kind: &str,
    params: &[(String, String)],
) -> Result<NewRawEvent, String> {
    let mut body = Map::new();
    for (k, v) in params {
        body.insert(k.clone(), Value::String(v.clone()));
    }
    let get = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let sid = get("MessageSid")
        .or_else(|| get("SmsSid"))
        .ok_or("missing MessageSid")?
        .to_owned();
    let key = match kind {
        KIND_MESSAGE => {
            get("From").ok_or("missing From")?;
            format!("{integration_id}:{sid}")
        }
        KIND_STATUS => {
            let status = get("MessageStatus")
                .or_else(|| get("SmsStatus"))
                .ok_or("missing MessageStatus")?;
            if !STATUSES.contains(&status) {
                return Err(format!("unknown MessageStatus `{status}`"));
            }
            format!("{integration_id}:{sid}:{status}")
        }
        other => return Err(format!("unknown Twilio callback `{other}`")),
    };
    Ok(NewRawEvent::new(
        Some(integration_id),
        Source::Twilio,
        key,
        kind,
        Value::Object(body),
    ))
}

/// The WhatsApp marketing consent an inbound message records, with its source.
///
/// A reply that is one of Twilio's opt-out keywords (STOP, STOPALL, UNSUBSCRIBE,
/// CANCEL, END, QUIT) opts out and an opt-in keyword (START, YES, UNSTOP) opts back in
/// ("Twilio support for opt-out keywords": whole single-word replies, any case); with
/// Advanced Opt-Out Twilio says so itself in `OptOutType` (`STOP`, `START`, `HELP`),
/// which is followed first. Any other message is the person writing to the brand and
/// records an opt-in; a HELP/INFO request changes nothing.
fn consent_of(body: &Value) -> Option<(ConsentStatus, &'static str)> {
    match text(body, &["OptOutType"])
        .map(|t| t.to_ascii_uppercase())
        .as_deref()
    {
        Some("STOP") => {
            return Some((
                ConsentStatus::Unsubscribed,
                consent::SOURCE_WHATSAPP_KEYWORD,
            ));
        }
        Some("START") => {
            return Some((ConsentStatus::Subscribed, consent::SOURCE_WHATSAPP_KEYWORD));
        }
        Some("HELP") => return None,
        _ => {}
    }
    let message = text(body, &["Body"]).unwrap_or_default();
    if let Some(status) = consent::keyword(&message) {
        return Some((status, consent::SOURCE_WHATSAPP_KEYWORD));
    }
    if matches!(
        message.trim().to_ascii_uppercase().as_str(),
        "HELP" | "INFO"
    ) {
        return None;
    }
    Some((ConsentStatus::Subscribed, consent::SOURCE_WHATSAPP_INBOUND))
}

/// Maps a Twilio raw event.
fn normalize(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    let body = raw.body;
    let mut ids = Identifiers::new(region);
    let ev = match raw.kind {
        KIND_MESSAGE => {
            let from = required(text(body, &["From"]), "From")?;
            let mut ev = event_of(
                raw,
                Channel::Whatsapp,
                EventType::MessageReceived,
                Some("whatsapp.inbound".into()),
                None,
            );
            ids.add(IdentifierKind::Phone, Some(&from));
            // WaId is the sender's WhatsApp id: the number in international form without `+`.
            ids.add(
                IdentifierKind::Phone,
                text(body, &["WaId"]).map(|w| format!("+{w}")).as_deref(),
            );
            if let Some(name) = text(body, &["ProfileName"]) {
                ev.traits.insert("whatsapp_profile_name".into(), s(name));
            }
            if let Some((status, source)) = consent_of(body) {
                consent::record(
                    &mut ev.traits,
                    ConsentChannel::Whatsapp,
                    status,
                    source,
                    ev.occurred_at,
                );
            }
            let p = &mut ev.properties;
            copy_fields(
                p,
                body,
                &[
                    ("MessageSid", "message_sid"),
                    ("Body", "body"),
                    ("To", "to"),
                    ("MessageType", "message_type"),
                    ("ButtonText", "button_text"),
                    ("ButtonPayload", "button_payload"),
                    ("Latitude", "latitude"),
                    ("Longitude", "longitude"),
                    ("Address", "address"),
                    ("ReferralCtwaClid", "referral_click_id"),
                    ("ReferralSourceUrl", "referral_source_url"),
                    ("OriginalRepliedMessageSid", "replied_message_sid"),
                ],
            );
            let num_media = integer(body, &["NumMedia"]).unwrap_or(0).clamp(0, 10);
            p.insert("num_media".into(), Value::from(num_media));
            let media: Vec<Value> = (0..num_media)
                .filter_map(|i| {
                    let url = text(body, &[&format!("MediaUrl{i}")])?;
                    let mut m = Map::new();
                    m.insert("url".into(), s(url));
                    if let Some(ct) = text(body, &[&format!("MediaContentType{i}")]) {
                        m.insert("content_type".into(), s(ct));
                    }
                    Some(Value::Object(m))
                })
                .collect();
            if !media.is_empty() {
                p.insert("media".into(), Value::Array(media));
            }
            ev
        }
        KIND_STATUS => {
            let status = required(
                text(body, &["MessageStatus"]).or_else(|| text(body, &["SmsStatus"])),
                "MessageStatus",
            )?;
            let mut ev = event_of(
                raw,
                Channel::Whatsapp,
                EventType::MessageStatus,
                Some(format!("whatsapp.{status}")),
                None,
            );
            // The recipient of an outbound message is the customer.
            ids.add(IdentifierKind::Phone, text(body, &["To"]).as_deref());
            let p = &mut ev.properties;
            p.insert("status".into(), s(status));
            copy_fields(
                p,
                body,
                &[
                    ("MessageSid", "message_sid"),
                    ("From", "from"),
                    ("ErrorCode", "error_code"),
                    ("ErrorMessage", "error_message"),
                ],
            );
            ev
        }
        other => return Err(MapError::Unsupported(format!("twilio kind `{other}`"))),
    };
    Ok(without_order(ev, ids, Vec::new()))
}
