//! Twilio WhatsApp: inbound messages and delivery-status callbacks.
//!
//! Twilio POSTs form-encoded parameters and signs the public URL plus the sorted
//! parameters (`X-Twilio-Signature`, see [`crate::signing`]). The raw event's body is the
//! parameters as a JSON object. Deduplication: an inbound message by its `MessageSid`; a
//! status callback by `MessageSid:MessageStatus`, since one message reports queued, sent,
//! delivered and read under the same sid.
//!
//! Mapping: inbound → `message_received` on the WhatsApp channel with the sender's phone
//! (`From=whatsapp:+E164`, `WaId`) and WhatsApp profile name; body, media, button replies
//! and shared locations become properties. Status → `message_status` for the recipient's
//! phone (`To`), with the status and any error code.

use domain::{Channel, EventType, IdentifierKind, Source};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::normalize::{
    Identifiers, MapError, Normalized, RawRecord, copy_fields, event_of, integer, required, s, text,
};
use crate::raw::NewRawEvent;

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

/// Builds the raw event of a verified request. `params` are the POST parameters.
pub fn raw_event(
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
            sid
        }
        KIND_STATUS => {
            let status = get("MessageStatus")
                .or_else(|| get("SmsStatus"))
                .ok_or("missing MessageStatus")?;
            if !STATUSES.contains(&status) {
                return Err(format!("unknown MessageStatus `{status}`"));
            }
            format!("{sid}:{status}")
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

/// Maps a Twilio raw event.
pub fn normalize(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    let body = raw.body;
    let mut ids = Identifiers::new(region);
    let mut ev = match raw.kind {
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
    let dropped = ids.finish(&mut ev);
    Ok(Normalized {
        event: Some(ev),
        dropped,
        order: None,
        products: Vec::new(),
    })
}
