//! The Segment-compatible tracking API: request parsing, limits and deduplication at the
//! edge, and the mapping of the Segment spec (track, identify, page, screen, group,
//! alias) to normalised events.
//!
//! Compatibility targets: Segment's HTTP Tracking API (`/v1/track`, `/v1/batch`, ...;
//! write key as the Basic-auth user name), analytics.js (short paths `/v1/t`, `/v1/b`,
//! write key in the JSON body, `text/plain` content type) and RudderStack SDKs (same API,
//! `originalTimestamp`). Limits as Segment's: 32 KB per message, 500 KB per batch.
//!
//! Each message is one raw event keyed by its `messageId` (a message without one is keyed
//! by the SHA-256 of its content, so an identical retry is still stored once). The write
//! key is removed from stored bodies; batch-level `sentAt` and `context` are copied into
//! each message so the normaliser sees one self-contained message. The time of a message
//! is corrected for the device's clock skew: `receivedAt - (sentAt - timestamp)`.
//!
//! E-commerce spec events get their own types: `Product Viewed`, `Product Added`,
//! `Checkout Started`, `Order Completed` (with the order), `Order Cancelled`,
//! `Order Refunded`; store touchpoints `QR Code Scanned` and `Store Visited` become
//! `qr_scanned` and `store_visit` on the store channel. Identifiers: `userId` →
//! `customer_id` `segment:<userId>`, `anonymousId` → `cookie_id`, `context.device.id` →
//! `device_id`, and e-mail, phone and loyalty id from traits. An `alias` links its
//! `previousId`: as the cookie when it is the message's `anonymousId`, otherwise in
//! both forms it may have (cookie, earlier user id) as link-only identifiers
//! (`domain::LINK_ONLY_PROPERTY`), so only the form a profile holds joins.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeDelta, Utc};
use domain::{
    Channel, EventType, IdentifierKind, Order, OrderItem, OrderState, OrderStatus, OrderWrite,
    Product, Refund, Source,
};
use http::HeaderMap;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::edge::header;
use super::mapping::{
    Identifiers, decimal, event_of, in_time_window, lines_total, quantity, s, text, time,
    with_order,
};
use super::{Connector, Credential, Description, EndpointDoc, MapError, Normalized, Refusal};
use crate::raw_event::{NewRawEvent, RawRecord};

/// The Segment-compatible tracking API connector.
pub struct Segment;

/// Ingest's route of the tracking API (`{call}` is a path of [`PATHS`]).
pub const TRACKING_ROUTE: &str = "/v1/{call}";

const DESCRIPTION: Description = Description {
    source: Source::Segment,
    label: "Segment-compatible source",
    credential: Credential::WriteKey,
    authentication: "HTTP Basic with the secret as write key (user name, empty password), or `writeKey` in the body (analytics.js)",
    own_secret_hint: None,
};

impl Connector for Segment {
    fn description(&self) -> &'static Description {
        &DESCRIPTION
    }

    /// SDKs take the base of the tracking API and add the call's path.
    fn webhook_url(&self, public_base_url: &str, _integration: Uuid) -> Option<String> {
        Some(format!("{}/v1", public_base_url.trim_end_matches('/')))
    }

    fn endpoints(&self) -> Vec<EndpointDoc> {
        let long: Vec<&str> = PATHS
            .iter()
            .filter(|p| p.0.len() > 1)
            .map(|p| p.0)
            .collect();
        let short: Vec<&str> = PATHS
            .iter()
            .filter(|p| p.0.len() == 1)
            .map(|p| p.0)
            .collect();
        vec![EndpointDoc {
            endpoint: format!(
                "POST /v1/{{{}}}` and `/v1/{{{}}}",
                long.join(","),
                short.join(",")
            ),
            authentication: self.authentication(),
            dedupe_key: "integration and `messageId` (SHA-256 of the message if absent)",
        }]
    }

    fn setup_steps(&self, webhook_url: &str) -> Vec<String> {
        vec![
            "Use any Segment or RudderStack SDK; this integration's secret is the write key.".into(),
            format!("Point the SDK's API host at {webhook_url} (analytics.js: integrations[\"Segment.io\"].apiHost)."),
            "track, identify, page, screen, group, alias and batch calls are accepted; messageId deduplicates retries.".into(),
        ]
    }

    fn normalize(&self, raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
        normalize(raw, region)
    }

    fn test_delivery(
        &self,
        customer: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> (&'static str, Value) {
        (
            "identify",
            json!({"type": "identify", "messageId": key, "userId": customer,
                   "timestamp": now, "traits": {"name": "ConstIntel Test"},
                   "context": {"constintel_test": true}, "constintel_test": true}),
        )
    }
}

/// The `_channel` hint of identify calls made by ConstIntel's own API (consent writes):
/// they land on the `api` channel.
pub const API_CHANNEL: &str = "api";

/// The identify call that records a consent written through the API
/// (`PUT /api/v1/profiles/{id}/consent`): a Segment-spec message addressed to the
/// profile by its e-mail, phone and loyalty id (`ids`, at least one), whose traits
/// carry the consent with its source ([`domain::consent::record`]), timed `now`. It is
/// stored and published like any delivery, so the write flows through the normalizer
/// and the identity merger like every other. `actor` is kept in the raw event's
/// headers (`x-constintel-actor`), not in the profile. `None` without identifiers.
pub fn api_consent_event(
    ids: &[(IdentifierKind, String)],
    channel: domain::consent::ConsentChannel,
    status: domain::consent::ConsentStatus,
    source: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Option<NewRawEvent> {
    let mut traits = Map::new();
    for (kind, value) in ids {
        let key = match kind {
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
            IdentifierKind::LoyaltyId => "loyaltyId",
            _ => continue,
        };
        traits
            .entry(key)
            .or_insert_with(|| Value::String(value.clone()));
    }
    if traits.is_empty() {
        return None;
    }
    domain::consent::record(&mut traits, channel, status, source, now);
    let key = format!("api-consent:{}", Uuid::now_v7());
    let body = json!({"type": "identify", "messageId": key, "_channel": API_CHANNEL,
                      "timestamp": now, "traits": traits,
                      "context": {"library": {"name": "constintel-api"}}});
    let mut event = NewRawEvent::new(None, Source::Segment, key, "identify", body);
    event.occurred_at = Some(now);
    event
        .headers
        .insert("x-constintel-actor".into(), Value::String(actor.into()));
    Some(event)
}

/// Largest message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Largest batch, in bytes (after decompression).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// The call types of the Segment spec.
pub const CALLS: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// One message of the given call type (`/v1/track`, `/v1/t`, ...).
    Single(&'static str),
    /// `/v1/batch` or `/v1/b`.
    Batch,
    /// `/v1/import`: a batch of historical messages (channel `import`).
    Import,
}

/// The paths after `/v1/` and their endpoints: Segment's names and analytics.js's
/// one-letter forms.
pub const PATHS: [(&str, Endpoint); 15] = [
    ("track", Endpoint::Single("track")),
    ("identify", Endpoint::Single("identify")),
    ("page", Endpoint::Single("page")),
    ("screen", Endpoint::Single("screen")),
    ("group", Endpoint::Single("group")),
    ("alias", Endpoint::Single("alias")),
    ("batch", Endpoint::Batch),
    ("import", Endpoint::Import),
    ("t", Endpoint::Single("track")),
    ("i", Endpoint::Single("identify")),
    ("p", Endpoint::Single("page")),
    ("s", Endpoint::Single("screen")),
    ("g", Endpoint::Single("group")),
    ("a", Endpoint::Single("alias")),
    ("b", Endpoint::Batch),
];

impl Endpoint {
    /// The endpoint of a path segment after `/v1/` (`track`, `t`, `batch`, ...).
    pub fn from_path(segment: &str) -> Option<Self> {
        PATHS.iter().find(|(p, _)| *p == segment).map(|(_, e)| *e)
    }

    /// The largest body this endpoint accepts.
    pub fn max_bytes(self) -> usize {
        match self {
            Endpoint::Single(_) => MAX_MESSAGE_BYTES,
            Endpoint::Batch | Endpoint::Import => MAX_BATCH_BYTES,
        }
    }

    /// Name for logs and connection logs.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Single(call) => call,
            Endpoint::Batch => "batch",
            Endpoint::Import => "import",
        }
    }
}

/// The write key of an `Authorization: Basic` header (its user name), if there is one;
/// a malformed header is refused.
pub fn header_write_key(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = header(headers, "authorization") else {
        return Ok(None);
    };
    let bad = || {
        Refusal::unauthorized(
            "bad_authorization",
            "Authorization must be Basic <base64(writeKey:)>",
        )
    };
    let (scheme, encoded) = value.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    if user.is_empty() {
        return Err(bad());
    }
    Ok(Some(user.to_owned()))
}

/// The write key a body carries (analytics.js puts it there instead of the header).
pub fn body_write_key(body: &Value) -> Option<&str> {
    body.get("writeKey")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
}

/// The header a raw event carries when ingest chose the currency of an order message
/// that named none: the brand's `DEFAULT_CURRENCY` at the time it was received.
pub const DEFAULT_CURRENCY_HEADER: &str = "x-constintel-default-currency";

/// How a request was received: through which integration, when, and the brand's
/// default currency for order messages without one (`DEFAULT_CURRENCY`).
#[derive(Debug, Clone, Copy)]
pub struct Receipt<'a> {
    /// The integration whose write key authenticated the request.
    pub integration_id: Uuid,
    /// When ingest received it.
    pub received_at: DateTime<Utc>,
    /// `DEFAULT_CURRENCY`, if set.
    pub default_currency: Option<&'a str>,
}

/// The deduplication key of a message: its `messageId` (or the SHA-256 of its content
/// when it has none), scoped to the integration, so one write key cannot shadow
/// another's messages.
pub fn dedupe_key(integration_id: Uuid, message_id: &str) -> String {
    format!("{integration_id}:{message_id}")
}

/// Turns a parsed request body into one raw event per message. `body_len` is the
/// decompressed size; the caller has checked it against [`Endpoint::max_bytes`].
/// All-or-nothing: one invalid message rejects the request, naming its index; every
/// message passes [`admission::admit`](super::admission::admit).
pub fn raw_events(
    receipt: Receipt<'_>,
    endpoint: Endpoint,
    mut body: Value,
    body_len: usize,
) -> Result<Vec<NewRawEvent>, Refusal> {
    let Value::Object(obj) = &mut body else {
        return Err(invalid("the body must be a JSON object"));
    };
    obj.remove("writeKey");
    let (messages, batch_sent_at, batch_context) = match endpoint {
        Endpoint::Single(call) => {
            match obj.get("type").and_then(Value::as_str) {
                Some(t) if t != call => {
                    return Err(invalid(format!("a `{t}` message sent to /v1/{call}")));
                }
                _ => {
                    obj.insert("type".into(), s(call));
                }
            }
            (vec![body], None, None)
        }
        Endpoint::Batch | Endpoint::Import => {
            let batch = match obj.remove("batch") {
                Some(Value::Array(batch)) => batch,
                _ => {
                    return Err(invalid("`batch` must be an array of messages"));
                }
            };
            if batch.is_empty() {
                return Err(invalid("`batch` is empty"));
            }
            (batch, obj.remove("sentAt"), obj.remove("context"))
        }
    };
    // A message can only exceed the per-message limit if the whole body does.
    let check_sizes = body_len > MAX_MESSAGE_BYTES;
    let channel_hint = (endpoint == Endpoint::Import).then_some("import");
    messages
        .into_iter()
        .enumerate()
        .map(|(i, msg)| {
            message_event(
                receipt,
                msg,
                batch_sent_at.as_ref(),
                batch_context.as_ref(),
                check_sizes,
                channel_hint,
            )
            .and_then(|ev| {
                super::admission::admit(&ev, "invalid_message")?;
                Ok(ev)
            })
            .map_err(|r| {
                if matches!(endpoint, Endpoint::Single(_)) {
                    r
                } else {
                    r.at(&format!("batch[{i}]"))
                }
            })
        })
        .collect()
}

fn message_event(
    receipt: Receipt<'_>,
    mut msg: Value,
    batch_sent_at: Option<&Value>,
    batch_context: Option<&Value>,
    check_size: bool,
    channel_hint: Option<&str>,
) -> Result<NewRawEvent, Refusal> {
    if check_size {
        let len = serde_json::to_vec(&msg)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if len > MAX_MESSAGE_BYTES {
            return Err(Refusal::TooLarge(format!(
                "message of {len} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"
            )));
        }
    }
    let Value::Object(obj) = &mut msg else {
        return Err(invalid("a message must be a JSON object"));
    };
    obj.remove("writeKey");
    let call = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("message without `type`"))?
        .to_owned();
    if !CALLS.contains(&call.as_str()) {
        return Err(invalid(format!("unknown message type `{call}`")));
    }
    let has_id =
        obj.get("userId").is_some_and(non_blank) || obj.get("anonymousId").is_some_and(non_blank);
    match call.as_str() {
        "alias"
            if !obj.get("userId").is_some_and(non_blank)
                || !obj.get("previousId").is_some_and(non_blank) =>
        {
            return Err(invalid("alias needs `userId` and `previousId`"));
        }
        "alias" => {}
        _ if !has_id => {
            return Err(invalid(format!("{call} needs `userId` or `anonymousId`")));
        }
        "track" if !obj.get("event").is_some_and(non_blank) => {
            return Err(invalid("track needs `event`"));
        }
        "group" if !obj.get("groupId").is_some_and(non_blank) => {
            return Err(invalid("group needs `groupId`"));
        }
        _ => {}
    }
    for key in ["timestamp", "originalTimestamp", "sentAt"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null())
            && time(v, &[]).is_none()
        {
            return Err(invalid(NOT_A_TIME.replace("{key}", key)));
        }
    }
    if !obj.contains_key("sentAt")
        && let Some(sent) = batch_sent_at.filter(|v| !v.is_null())
    {
        if time(sent, &[]).is_none() {
            return Err(invalid(NOT_A_TIME.replace("{key}", "sentAt")));
        }
        obj.insert("sentAt".into(), sent.clone());
    }
    if let Some(ctx) = batch_context.and_then(Value::as_object) {
        let msg_ctx = obj
            .entry("context")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = msg_ctx {
            for (k, v) in ctx {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    if let Some(hint) = channel_hint {
        obj.insert("_channel".into(), s(hint));
    }
    let key = match obj.get("messageId").and_then(|v| text(v, &[])) {
        Some(id) => id,
        None => format!(
            "sha256:{}",
            hex::encode(Sha256::digest(msg.to_string().as_bytes()))
        ),
    };
    let needs_currency = call == "track"
        && is_order_event(&text(&msg, &["event"]).unwrap_or_default())
        && text(&msg, &["properties", "currency"]).is_none();
    let occurred_at = corrected_timestamp(&msg, receipt.received_at);
    let mut ev = NewRawEvent::new(
        Some(receipt.integration_id),
        Source::Segment,
        dedupe_key(receipt.integration_id, &key),
        call,
        msg,
    );
    ev.received_at = receipt.received_at;
    ev.occurred_at = occurred_at;
    if needs_currency && let Some(currency) = receipt.default_currency {
        ev.headers
            .insert(DEFAULT_CURRENCY_HEADER.into(), s(currency.to_uppercase()));
    }
    Ok(ev)
}

/// The property an order event carries when its order could not be recorded, with why.
pub const ORDER_NOT_RECORDED: &str = "order_not_recorded";

/// The refusal of a time field that does not parse or lies outside 1900–9999.
const NOT_A_TIME: &str =
    "`{key}` is not a timestamp between 1900 and 9999 (ISO 8601 or Unix seconds)";

/// Whether a track event of this name reports an order (and so needs a currency).
fn is_order_event(event: &str) -> bool {
    matches!(
        track_type(event).0,
        EventType::OrderPlaced | EventType::OrderCancelled | EventType::RefundIssued
    )
}

/// A 400 `invalid_message`.
fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::invalid("invalid_message", message)
}

fn non_blank(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.trim().is_empty(),
        Value::Number(_) => true,
        _ => false,
    }
}

/// How far past its arrival a message may say it happened: device clocks run fast.
const MAX_FUTURE: TimeDelta = TimeDelta::days(1);

/// When a message happened: the device's `timestamp` (or RudderStack's
/// `originalTimestamp`) moved by the device's clock skew, `receivedAt - sentAt`. Without
/// `sentAt` the timestamp is taken as is; without a timestamp, `None`.
///
/// Device clocks are untrusted, so the arithmetic is checked and the answer clamped: a
/// corrected time that overflows, or lands before 1900 or more than a day after
/// `received_at`, falls back to the uncorrected timestamp, and a timestamp more than a
/// day in the future to `received_at` (the message happened at the latest when it
/// arrived).
pub fn corrected_timestamp(msg: &Value, received_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let ts = time(msg, &["originalTimestamp"]).or_else(|| time(msg, &["timestamp"]))?;
    let latest = received_at
        .checked_add_signed(MAX_FUTURE)
        .unwrap_or(received_at);
    let plausible = |t: &DateTime<Utc>| in_time_window(*t) && *t <= latest;
    let corrected = time(msg, &["sentAt"]).and_then(|sent| {
        let skew = sent.signed_duration_since(ts);
        received_at.checked_sub_signed(skew)
    });
    Some(
        corrected
            .filter(plausible)
            .or(Some(ts).filter(plausible))
            .unwrap_or(received_at),
    )
}

/// Maps a Segment raw event.
fn normalize(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    let msg = raw.body;
    let at = raw
        .occurred_at
        .or_else(|| corrected_timestamp(msg, raw.received_at));
    let channel_hint = text(msg, &["_channel"]);
    let import = channel_hint.as_deref() == Some("import");
    let base_channel = match channel_hint.as_deref() {
        Some("import") => Channel::Import,
        Some(API_CHANNEL) => Channel::Api,
        _ => Channel::Web,
    };
    let empty = Value::Object(Map::new());
    let props_in = msg
        .get("properties")
        .filter(|p| p.is_object())
        .unwrap_or(&empty);

    let (event_type, channel, name) = match raw.kind {
        "track" => {
            let event = text(msg, &["event"]).unwrap_or_default();
            let (t, c) = track_type(&event);
            (
                t,
                if import {
                    Channel::Import
                } else {
                    c.unwrap_or(base_channel)
                },
                Some(event),
            )
        }
        "identify" => (EventType::Identify, base_channel, None),
        "page" => (EventType::PageViewed, base_channel, text(msg, &["name"])),
        "screen" => (EventType::PageViewed, base_channel, text(msg, &["name"])),
        "group" => (EventType::Custom, base_channel, Some("group".into())),
        "alias" => (EventType::Identify, base_channel, Some("alias".into())),
        other => return Err(MapError::Unsupported(format!("segment call `{other}`"))),
    };
    let mut ev = event_of(raw, channel, event_type, name, at);

    let mut ids = Identifiers::new(region);
    let user_id = text(msg, &["userId"]);
    let anonymous_id = text(msg, &["anonymousId"]);
    if let Some(uid) = &user_id {
        ids.add_customer_id("segment", Some(uid));
    }
    ids.add(IdentifierKind::CookieId, anonymous_id.as_deref());
    ids.add(
        IdentifierKind::DeviceId,
        text(msg, &["context", "device", "id"]).as_deref(),
    );
    let mut link_only = Vec::new();
    if raw.kind == "alias"
        && let Some(prev) = text(msg, &["previousId"])
    {
        // The previous id is the anonymous id when an anonymous visitor signs up (then
        // the message says so, or it does not: server libraries send no anonymousId),
        // and an older user id otherwise. When the message does not tell, both forms
        // link, and neither is given to the profile: only the one someone holds joins.
        if anonymous_id.as_deref() == Some(prev.as_str()) {
            ids.add(IdentifierKind::CookieId, Some(&prev));
        } else {
            let before = ids.found.len();
            ids.add(IdentifierKind::CookieId, Some(&prev));
            ids.add_customer_id("segment", Some(&prev));
            link_only.extend(ids.found[before..].iter().cloned());
        }
    }
    // Traits: the context's (sent with every call by client libraries), then the
    // identify/group call's own, which win.
    let mut traits = Map::new();
    if let Some(Value::Object(t)) = msg.get("context").and_then(|c| c.get("traits")) {
        traits.extend(t.clone());
    }
    if raw.kind == "identify"
        && let Some(Value::Object(t)) = msg.get("traits")
    {
        traits.extend(t.clone());
    }
    person_traits(&mut ids, &traits);
    ev.traits = traits;

    let p = &mut ev.properties;
    if let Value::Object(props) = props_in {
        p.extend(props.clone());
    }
    match raw.kind {
        "page" | "screen" => {
            if let Some(Value::Object(page)) = msg.get("context").and_then(|c| c.get("page")) {
                for (k, v) in page {
                    p.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            if let Some(c) = text(msg, &["category"]) {
                p.insert("category".into(), s(c));
            }
            if raw.kind == "screen" {
                p.insert("screen".into(), Value::Bool(true));
            }
        }
        "group" => {
            if let Some(g) = text(msg, &["groupId"]) {
                p.insert("group_id".into(), s(g));
            }
            if let Some(t) = msg.get("traits").filter(|t| t.is_object()) {
                p.insert("group_traits".into(), t.clone());
            }
        }
        _ => {}
    }
    p.insert("call".into(), s(raw.kind));
    if !link_only.is_empty() {
        p.insert(
            domain::LINK_ONLY_PROPERTY.into(),
            serde_json::to_value(&link_only).unwrap_or_default(),
        );
    }
    if let Some(id) = text(msg, &["messageId"]) {
        p.insert("message_id".into(), s(id));
    }
    let context = context_summary(msg);
    if !context.is_empty() {
        p.insert("context".into(), Value::Object(context));
    }

    let mut order = None;
    let mut products = Vec::new();
    match event_type {
        EventType::ProductViewed | EventType::AddedToCart => {
            if let Some(product) = product_of(props_in) {
                products.push(product);
            }
        }
        EventType::CheckoutStarted => {
            // Lines that cannot be read only cost the catalogue update, not the event.
            let items = order_items(props_in).unwrap_or_default();
            products = Product::of_items(&items, text(props_in, &["currency"]).as_deref());
        }
        EventType::OrderPlaced | EventType::OrderCancelled | EventType::RefundIssued => {
            let currency = text(props_in, &["currency"]).or_else(|| {
                raw.headers
                    .get(DEFAULT_CURRENCY_HEADER)
                    .and_then(|v| text(v, &[]))
            });
            let order_id = text(props_in, &["order_id"]);
            let (order_id, currency, items) = match (order_id, currency, order_items(props_in)) {
                (Some(order_id), Some(currency), Ok(items)) => (order_id, currency, items),
                (order_id, currency, items) => {
                    // The event still reaches its person; only its order is left out,
                    // and the event says why.
                    let reason = if order_id.is_none() {
                        "properties.order_id is missing".to_owned()
                    } else if currency.is_none() {
                        "properties.currency is missing and DEFAULT_CURRENCY is not set".to_owned()
                    } else {
                        items.err().map(MapError::into_reason).unwrap_or_default()
                    };
                    ev.event_type = EventType::Custom;
                    ev.properties.insert(ORDER_NOT_RECORDED.into(), s(reason));
                    let dropped = ids.finish(&mut ev);
                    return Ok(Normalized {
                        event: Some(ev),
                        dropped,
                        order: None,
                        products: Vec::new(),
                    });
                }
            };
            let total = order_total(props_in, &items);
            let store = text(props_in, &["store"]);
            if event_type != EventType::RefundIssued {
                let placed_at = ev.occurred_at;
                return Ok(with_order(
                    ev,
                    ids,
                    order_id,
                    OrderState {
                        status: if event_type == EventType::OrderCancelled {
                            OrderStatus::Cancelled
                        } else {
                            OrderStatus::Paid
                        },
                        channel,
                        store,
                        placed_at,
                        currency,
                        total,
                        items,
                        version: placed_at,
                    },
                    Vec::new(),
                ));
            }
            // A refund's own id when the sender gives one; otherwise the message is the
            // refund, so a redelivery of the same message counts once.
            let refund_id = text(props_in, &["refund_id"]).unwrap_or_else(|| {
                let key = text(msg, &["messageId"]).unwrap_or_else(|| raw.id.to_string());
                format!("segment:{key}")
            });
            let amount = total.abs();
            products = Product::of_items(&items, Some(&currency));
            ev.order = Some(Order {
                order_id: order_id.clone(),
                total: amount,
                currency,
                status: OrderStatus::PartiallyRefunded,
                store,
                items,
            });
            order = Some(OrderWrite {
                external_order_id: order_id,
                state: None,
                refunds: vec![Refund { refund_id, amount }],
                deleted: false,
            });
        }
        _ => {}
    }
    let dropped = ids.finish(&mut ev);
    Ok(Normalized {
        event: Some(ev),
        dropped,
        order,
        products,
    })
}

/// The normalised type (and channel, for store touchpoints) of a track event name.
fn track_type(event: &str) -> (EventType, Option<Channel>) {
    match event {
        "Product Viewed" => (EventType::ProductViewed, None),
        "Product Added" => (EventType::AddedToCart, None),
        "Checkout Started" => (EventType::CheckoutStarted, None),
        "Order Completed" => (EventType::OrderPlaced, None),
        "Order Cancelled" => (EventType::OrderCancelled, None),
        "Order Refunded" => (EventType::RefundIssued, None),
        "QR Code Scanned" => (EventType::QrScanned, Some(Channel::Store)),
        "Store Visited" => (EventType::StoreVisit, Some(Channel::Store)),
        _ => (EventType::Custom, None),
    }
}

fn person_traits(ids: &mut Identifiers<'_>, traits: &Map<String, Value>) {
    let t = Value::Object(traits.clone());
    ids.add(IdentifierKind::Email, text(&t, &["email"]).as_deref());
    ids.add(IdentifierKind::Phone, text(&t, &["phone"]).as_deref());
    for key in ["loyaltyId", "loyalty_id", "loyaltyCardNumber"] {
        ids.add(IdentifierKind::LoyaltyId, text(&t, &[key]).as_deref());
    }
}

/// The parts of `context` worth keeping: where and on what the call was made.
fn context_summary(msg: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(ctx) = msg.get("context").filter(|c| c.is_object()) else {
        return out;
    };
    for (key, name) in [
        ("ip", "ip"),
        ("userAgent", "user_agent"),
        ("locale", "locale"),
        ("timezone", "timezone"),
        ("page", "page"),
        ("campaign", "campaign"),
        ("library", "library"),
        ("device", "device"),
        ("os", "os"),
        ("app", "app"),
        ("location", "location"),
        ("referrer", "referrer"),
    ] {
        if let Some(v) = ctx.get(key).filter(|v| !v.is_null()) {
            out.insert(name.into(), v.clone());
        }
    }
    out
}

fn product_of(props: &Value) -> Option<Product> {
    let sku = text(props, &["sku"]).or_else(|| text(props, &["product_id"]))?;
    Some(Product {
        name: text(props, &["name"]).unwrap_or_else(|| sku.clone()),
        sku,
        category: text(props, &["category"]),
        price: decimal(props, &["price"]),
        currency: text(props, &["currency"]),
    })
}

fn order_items(props: &Value) -> Result<Vec<OrderItem>, MapError> {
    props
        .get("products")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let sku = text(p, &["sku"]).or_else(|| text(p, &["product_id"]))?;
            Some(quantity(p, &["quantity"]).map(|qty| OrderItem {
                name: text(p, &["name"]).unwrap_or_else(|| sku.clone()),
                sku,
                category: text(p, &["category"]),
                qty,
                price: decimal(p, &["price"]).unwrap_or_default(),
            }))
        })
        .collect()
}

/// The order total by the spec's precedence: `total`, then `revenue`, then `value`, then
/// the sum of the lines.
fn order_total(props: &Value, items: &[OrderItem]) -> Decimal {
    decimal(props, &["total"])
        .or_else(|| decimal(props, &["revenue"]))
        .or_else(|| decimal(props, &["value"]))
        .unwrap_or_else(|| lines_total(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn receipt(now: DateTime<Utc>) -> Receipt<'static> {
        Receipt {
            integration_id: Uuid::nil(),
            received_at: now,
            default_currency: None,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn clock_skew_is_corrected_from_sent_at() {
        // The device clock runs 10 minutes fast: sent at 10:15 by its clock, received at 10:05.
        let msg = json!({"timestamp": "2026-05-01T10:10:00Z", "sentAt": "2026-05-01T10:15:00Z"});
        let received = t("2026-05-01T10:05:00Z");
        assert_eq!(
            corrected_timestamp(&msg, received),
            Some(t("2026-05-01T10:00:00Z"))
        );
        let no_sent = json!({"timestamp": "2026-05-01T10:10:00Z"});
        assert_eq!(
            corrected_timestamp(&no_sent, received),
            Some(t("2026-05-01T10:10:00Z"))
        );
        assert_eq!(corrected_timestamp(&json!({}), received), None);
    }

    #[test]
    fn absurd_clocks_never_panic_and_are_clamped() {
        let received = t("2026-05-01T10:05:00Z");
        // The pair from the report: both far apart, in opposite directions.
        let msg = json!({"timestamp": 8_200_000_000_000_i64, "sentAt": -8_200_000_000_000_i64});
        assert_eq!(
            corrected_timestamp(&msg, received),
            None,
            "outside the window: no time"
        );
        // Both in the window but the skew throws the time before 1900: uncorrected.
        let msg = json!({"timestamp": "1901-01-01T00:00:00Z", "sentAt": "9999-01-01T00:00:00Z"});
        assert_eq!(
            corrected_timestamp(&msg, received),
            Some(t("1901-01-01T00:00:00Z"))
        );
        // A device far in the future without sentAt: when it arrived.
        let msg = json!({"timestamp": "9000-01-01T00:00:00Z"});
        assert_eq!(corrected_timestamp(&msg, received), Some(received));
        // Huge skew the other way: the corrected time would be in the future.
        let msg = json!({"timestamp": "2026-05-01T10:00:00Z", "sentAt": "1900-01-02T00:00:00Z"});
        assert_eq!(
            corrected_timestamp(&msg, received),
            Some(t("2026-05-01T10:00:00Z"))
        );
    }

    #[test]
    fn batches_are_all_or_nothing() {
        let now = Utc::now();
        let id = Uuid::nil();
        let body = json!({"batch": [
            {"type": "track", "event": "A", "userId": "u1", "messageId": "m1"},
            {"type": "track", "userId": "u1", "messageId": "m2"}
        ]});
        let err = raw_events(receipt(now), Endpoint::Batch, body, 100).unwrap_err();
        assert_eq!(
            err,
            Refusal::invalid("invalid_message", "batch[1]: track needs `event`")
        );

        let body = json!({"writeKey": "k", "sentAt": "2026-05-01T10:00:00Z", "context": {"ip": "1.2.3.4"},
            "batch": [
            {"type": "identify", "anonymousId": "a1", "traits": {"email": "x@y.com"}},
            {"type": "page", "userId": "u1", "messageId": "m3", "writeKey": "k"}
        ]});
        let events = raw_events(receipt(now), Endpoint::Batch, body, 200).unwrap();
        assert_eq!(events.len(), 2);
        assert!(
            events[0]
                .source_event_id
                .starts_with(&format!("{id}:sha256:"))
        );
        assert_eq!(events[1].source_event_id, dedupe_key(id, "m3"));
        assert_eq!(events[1].body["sentAt"], "2026-05-01T10:00:00Z");
        assert_eq!(events[1].body["context"]["ip"], "1.2.3.4");
        assert!(
            events[1].body.get("writeKey").is_none(),
            "write keys are never stored"
        );
    }

    #[test]
    fn oversize_messages_are_refused() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let body = json!({"batch": [{"type": "track", "event": "A", "userId": "u", "properties": {"blob": big}}]});
        let err = raw_events(
            receipt(Utc::now()),
            Endpoint::Batch,
            body,
            MAX_MESSAGE_BYTES + 100,
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::TooLarge(_)), "{err:?}");
    }

    fn mapped(ev: &NewRawEvent) -> Normalized {
        normalize(&ev.record(), "IN").unwrap()
    }

    #[test]
    fn orders_without_currency_use_the_default_or_keep_the_event() {
        let now = Utc::now();
        let msg = json!({"type": "track", "event": "Order Completed", "userId": "u1",
            "messageId": "o1", "properties": {"order_id": "A-1", "total": 120}});
        let with_default = Receipt {
            default_currency: Some("inr"),
            ..receipt(now)
        };
        let ev = &raw_events(with_default, Endpoint::Single("track"), msg.clone(), 100).unwrap()[0];
        let n = mapped(ev);
        assert_eq!(n.event.unwrap().order.unwrap().currency, "INR");
        assert!(n.order.is_some());

        // No default: the event still reaches its person, without the order, saying why.
        let ev = &raw_events(receipt(now), Endpoint::Single("track"), msg, 100).unwrap()[0];
        let n = mapped(ev);
        let event = n.event.unwrap();
        assert_eq!(event.event_type, EventType::Custom);
        assert!(!event.identifiers.is_empty());
        assert!(
            event.properties[ORDER_NOT_RECORDED]
                .as_str()
                .unwrap()
                .contains("currency")
        );
        assert!(n.order.is_none());
    }

    #[test]
    fn poison_times_and_amounts_are_refused_at_the_edge() {
        let now = Utc::now();
        for ts in [
            json!(-300_000_000_000_i64),
            json!(8_200_000_000_000_i64),
            json!("+200000-01-01T00:00:00Z"),
        ] {
            let msg = json!({"type": "track", "event": "A", "userId": "u1", "timestamp": ts});
            let err = raw_events(receipt(now), Endpoint::Single("track"), msg, 100).unwrap_err();
            assert!(
                matches!(
                    err,
                    Refusal::Invalid {
                        code: "invalid_message",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        let msg = json!({"type": "track", "event": "Order Completed", "userId": "u1",
            "properties": {"order_id": "A-1", "currency": "INR", "total": 10_000_000_000_000_000_i64}});
        let err = raw_events(receipt(now), Endpoint::Single("track"), msg, 100).unwrap_err();
        assert!(
            matches!(
                err,
                Refusal::Invalid {
                    code: "out_of_range",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_alias_without_anonymous_id_links_both_forms_of_the_previous_id() {
        let msg = json!({"type": "alias", "previousId": "anon-1", "userId": "u-1"});
        let ev = &raw_events(receipt(Utc::now()), Endpoint::Single("alias"), msg, 100).unwrap()[0];
        let event = mapped(ev).event.unwrap();
        let link_only = event.link_only();
        let forms: std::collections::BTreeSet<(&str, &str)> = link_only
            .iter()
            .map(|i| (i.kind.as_str(), i.value.as_str()))
            .collect();
        assert_eq!(
            forms,
            [("cookie_id", "anon-1"), ("customer_id", "segment:anon-1")].into()
        );
        assert_eq!(link_only.len(), 2);
        for id in &link_only {
            assert!(event.identifiers.contains(id), "{id:?} is carried too");
        }
        assert!(event.identifiers.iter().any(|i| i.value == "segment:u-1"));

        // analytics.js says the previous id is the anonymous id: an ordinary cookie.
        let msg = json!({"type": "alias", "previousId": "anon-2", "anonymousId": "anon-2", "userId": "u-2"});
        let ev = &raw_events(receipt(Utc::now()), Endpoint::Single("alias"), msg, 100).unwrap()[0];
        let event = mapped(ev).event.unwrap();
        assert!(event.link_only().is_empty());
        assert!(
            !event
                .identifiers
                .iter()
                .any(|i| i.value == "segment:anon-2")
        );
    }

    #[test]
    fn short_paths_match_long_ones() {
        assert_eq!(Endpoint::from_path("t"), Endpoint::from_path("track"));
        assert_eq!(Endpoint::from_path("b"), Some(Endpoint::Batch));
        assert_eq!(Endpoint::from_path("nope"), None);
    }
}
