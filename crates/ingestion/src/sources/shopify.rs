//! Shopify webhooks: which topics are accepted, how a delivery becomes a raw event, and
//! how each topic maps to a normalised event.
//!
//! Shopify signs the raw body (`X-Shopify-Hmac-Sha256`, see [`crate::signing`]), names the
//! topic in `X-Shopify-Topic` and gives every delivery an id in `X-Shopify-Webhook-Id`
//! and a trigger time in `X-Shopify-Triggered-At`. Only the body is signed, so the
//! deduplication key is the integration and the body's hash ([`dedupe_key`]), the topic
//! must fit the body, and a delivery triggered longer ago than `WEBHOOK_MAX_AGE_SECS` is
//! refused: a captured delivery cannot be stored again under a new id or as another
//! topic. Payloads are the REST Admin API resources (order, refund, customer, checkout,
//! cart).
//!
//! Mapping: `orders/create|updated|paid` → `order_placed` with the full order (the
//! order's `updated_at` is its version, so late deliveries of an older state do not win);
//! `orders/cancelled` → `order_cancelled`; `refunds/create` → `refund_issued` with the
//! amount refunded (keyed by refund id); `customers/*` → `identify`;
//! `checkouts/*` → `checkout_started`; `carts/*` → `added_to_cart`. Identifiers: the
//! customer id as `shopify:<id>`, e-mails and phones of the order, customer and billing
//! address (the shipping address may be someone else's, so it is not used).

use chrono::{DateTime, Utc};
use domain::{
    Channel, EventType, IdentifierKind, Order, OrderItem, OrderState, OrderStatus, OrderWrite,
    Source,
};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::edge::{check_signature, json_body, kept_headers};
use super::mapping::{
    Identifiers, copy_fields, decimal, event_of, quantity, required, s, saturating_sum, text, time,
    with_order, without_order,
};
use super::{
    Connector, Credential, Description, MapError, Normalized, Refusal, SignedWebhook,
    WebhookRequest, WebhookRoute,
};
use crate::raw_event::{NewRawEvent, RawRecord};
use crate::signing;
use domain::{Product, Refund};

/// The Shopify connector.
pub struct Shopify;

/// The webhook topics ingest accepts.
pub const TOPICS: [&str; 11] = [
    "orders/create",
    "orders/updated",
    "orders/paid",
    "orders/cancelled",
    "refunds/create",
    "customers/create",
    "customers/update",
    "checkouts/create",
    "checkouts/update",
    "carts/create",
    "carts/update",
];

/// The Shopify headers ingest keeps with the raw event.
pub const KEPT_HEADERS: [&str; 5] = [
    "x-shopify-topic",
    "x-shopify-shop-domain",
    "x-shopify-api-version",
    "x-shopify-webhook-id",
    "x-shopify-triggered-at",
];

const SIGNATURE: &str = "X-Shopify-Hmac-Sha256";

const ROUTES: [WebhookRoute; 1] = [WebhookRoute {
    suffix: "",
    kind: "",
    purpose: "webhooks",
    dedupe_key: "integration and SHA-256 of the signed body (the webhook id and topic are not signed)",
}];

const DESCRIPTION: Description = Description {
    source: Source::Shopify,
    label: "Shopify",
    credential: Credential::SigningSecret,
    authentication: "X-Shopify-Hmac-Sha256: base64 HMAC-SHA256 of the raw body with the secret",
    own_secret_hint: Some(
        "Paste the signing secret Shopify shows under Settings → Notifications → Webhooks (or your app's client secret).",
    ),
};

impl Connector for Shopify {
    fn description(&self) -> &'static Description {
        &DESCRIPTION
    }

    fn webhook(&self) -> Option<&dyn SignedWebhook> {
        Some(self)
    }

    fn setup_steps(&self, webhook_url: &str) -> Vec<String> {
        vec![
            "In Shopify admin open Settings → Notifications → Webhooks and choose Create webhook.".into(),
            format!("Pick the event (Customer creation, Order creation, Order update, Refund creation), format JSON, URL {webhook_url}."),
            "Repeat for each event. Shopify signs every delivery with its signing secret, which must be the secret of this integration.".into(),
            "Send a test notification: it appears in the delivery log below within seconds.".into(),
        ]
    }

    fn normalize(&self, raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
        normalize(raw, region)
    }

    fn test_delivery(
        &self,
        customer: &str,
        _key: &str,
        now: DateTime<Utc>,
    ) -> (&'static str, Value) {
        (
            "customers/create",
            json!({"id": customer, "first_name": "ConstIntel", "last_name": "Test",
                   "tags": "constintel_test", "created_at": now, "constintel_test": true}),
        )
    }
}

impl SignedWebhook for Shopify {
    fn routes(&self) -> &'static [WebhookRoute] {
        &ROUTES
    }

    fn signature_header(&self) -> &'static str {
        SIGNATURE
    }

    fn verify(&self, secret: &str, request: &WebhookRequest<'_>) -> Result<(), Refusal> {
        check_signature(request, SIGNATURE, |sig| {
            signing::verify_shopify(secret, request.body, sig)
        })
    }

    fn raw_event(
        &self,
        integration: Uuid,
        _route: &WebhookRoute,
        request: &WebhookRequest<'_>,
    ) -> Result<NewRawEvent, Refusal> {
        let topic = request
            .header("x-shopify-topic")
            .ok_or_else(|| Refusal::invalid("missing_topic", "missing X-Shopify-Topic"))?;
        if let Some(triggered) = request.header("x-shopify-triggered-at") {
            let at = DateTime::parse_from_rfc3339(triggered).map_err(|_| {
                Refusal::invalid(
                    "invalid_webhook",
                    format!("X-Shopify-Triggered-At `{triggered}` is not an RFC 3339 time"),
                )
            })?;
            request.check_age(at.with_timezone(&Utc))?;
        }
        let webhook_id = request.header("x-shopify-webhook-id").unwrap_or_default();
        let body = json_body(request.body)?;
        raw_event(
            integration,
            topic,
            webhook_id,
            kept_headers(request.headers, &KEPT_HEADERS),
            request.body,
            body,
        )
        .map_err(|e| Refusal::invalid("invalid_webhook", e))
    }
}

/// The deduplication key of a delivery: the integration and the SHA-256 of the signed
/// body. Shopify's webhook id and topic are not covered by the signature, so they cannot
/// be part of it: a captured body sent again under a new id, or as another topic, is the
/// same delivery. (Two topics that carry the very same body, `orders/create` and
/// `orders/paid` for an order paid at once, report the same order state, so one of them
/// is enough.)
pub fn dedupe_key(integration_id: Uuid, body: &[u8]) -> String {
    format!(
        "{integration_id}:sha256:{}",
        hex::encode(Sha256::digest(body))
    )
}

/// Whether `body` is what `topic` delivers: an order for `orders/*` (cancelled for
/// `orders/cancelled`, not cancelled for `orders/create` and `orders/paid`), a refund
/// for `refunds/create`, a customer, checkout or cart for the others. The topic header
/// is not signed; this keeps a signed body from being replayed as another topic.
fn topic_fits(topic: &str, body: &Value) -> Result<(), String> {
    let has = |key: &str| body.get(key).is_some_and(|v| !v.is_null());
    let is_order =
        has("line_items") && has("total_price") && body.get("financial_status").is_some();
    let is_checkout =
        has("line_items") && (has("abandoned_checkout_url") || has("cart_token")) && !is_order;
    let fits = match topic {
        "orders/cancelled" => is_order && has("cancelled_at"),
        "orders/create" | "orders/paid" => is_order && !has("cancelled_at"),
        "orders/updated" => is_order,
        "refunds/create" => has("order_id") && !has("line_items"),
        "customers/create" | "customers/update" => {
            has("id") && !has("line_items") && !has("order_id")
        }
        "checkouts/create" | "checkouts/update" => is_checkout,
        "carts/create" | "carts/update" => has("line_items") && !is_order && !is_checkout,
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        Err(format!("the body is not what `{topic}` delivers"))
    }
}

/// Builds the raw event of a verified delivery. `headers` are the kept headers
/// (lower-case names); `raw_body` the signed bytes and `body` their JSON.
fn raw_event(
    integration_id: Uuid,
    topic: &str,
    webhook_id: &str,
    headers: Map<String, Value>,
    raw_body: &[u8],
    body: Value,
) -> Result<NewRawEvent, String> {
    if !TOPICS.contains(&topic) {
        return Err(format!(
            "unsupported topic `{topic}` (accepted: {})",
            TOPICS.join(", ")
        ));
    }
    if !body.is_object() {
        return Err("the body must be a JSON object".into());
    }
    if webhook_id.trim().is_empty() {
        return Err("missing X-Shopify-Webhook-Id".into());
    }
    topic_fits(topic, &body)?;
    let mut ev = NewRawEvent::new(
        Some(integration_id),
        Source::Shopify,
        dedupe_key(integration_id, raw_body),
        topic,
        body,
    );
    ev.occurred_at = occurred_at(topic, &ev.body);
    ev.headers = headers;
    Ok(ev)
}

fn occurred_at(topic: &str, body: &Value) -> Option<DateTime<Utc>> {
    match topic {
        "orders/create" | "customers/create" | "checkouts/create" | "carts/create" => {
            time(body, &["created_at"])
        }
        "orders/cancelled" => time(body, &["cancelled_at"]).or_else(|| time(body, &["updated_at"])),
        "refunds/create" => time(body, &["processed_at"]).or_else(|| time(body, &["created_at"])),
        _ => time(body, &["updated_at"]).or_else(|| time(body, &["created_at"])),
    }
}

/// Maps a Shopify raw event.
fn normalize(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    let body = raw.body;
    let at = occurred_at(raw.kind, body);
    match raw.kind {
        "orders/create" | "orders/updated" | "orders/paid" | "orders/cancelled" => {
            order_event(raw, region, at)
        }
        "refunds/create" => refund_event(raw, at),
        "customers/create" | "customers/update" => {
            let mut ev = event_of(
                raw,
                Channel::Web,
                EventType::Identify,
                Some(raw.kind.into()),
                at,
            );
            let mut ids = Identifiers::new(region);
            person(&mut ids, &mut ev.traits, body, body.get("default_address"));
            ev.properties.insert("topic".into(), s(raw.kind));
            shop_domain(raw, &mut ev.properties);
            Ok(without_order(ev, ids, Vec::new()))
        }
        "checkouts/create" | "checkouts/update" | "carts/create" | "carts/update" => {
            let checkout = raw.kind.starts_with("checkouts/");
            let event_type = if checkout {
                EventType::CheckoutStarted
            } else {
                EventType::AddedToCart
            };
            let mut ev = event_of(raw, Channel::Web, event_type, Some(raw.kind.into()), at);
            let mut ids = Identifiers::new(region);
            if checkout {
                if let Some(customer) = body.get("customer").filter(|c| c.is_object()) {
                    person(
                        &mut ids,
                        &mut ev.traits,
                        customer,
                        body.get("billing_address"),
                    );
                }
                ids.add(IdentifierKind::Email, text(body, &["email"]).as_deref());
                ids.add(IdentifierKind::Phone, text(body, &["phone"]).as_deref());
            }
            let currency =
                text(body, &["currency"]).or_else(|| text(body, &["presentment_currency"]));
            let items = line_items(body)?;
            let p = &mut ev.properties;
            p.insert("topic".into(), s(raw.kind));
            copy_fields(
                p,
                body,
                &[
                    ("token", "token"),
                    ("cart_token", "cart_token"),
                    ("total_price", "total"),
                    ("abandoned_checkout_url", "abandoned_checkout_url"),
                ],
            );
            if let Some(c) = &currency {
                p.insert("currency".into(), s(c.clone()));
            }
            p.insert(
                "products".into(),
                serde_json::to_value(&items).unwrap_or_default(),
            );
            shop_domain(raw, p);
            let products = Product::of_items(&items, currency.as_deref());
            Ok(without_order(ev, ids, products))
        }
        other => Err(MapError::Unsupported(format!("shopify topic `{other}`"))),
    }
}

fn shop_domain(raw: &RawRecord<'_>, props: &mut Map<String, Value>) {
    if let Some(domain) = raw
        .headers
        .get("x-shopify-shop-domain")
        .and_then(Value::as_str)
    {
        props.insert("shop_domain".into(), s(domain));
    }
}

/// Identifiers and traits of a customer object (or an order, which carries the same
/// fields at its top level), with `address` as the fallback for phone and place.
fn person(
    ids: &mut Identifiers<'_>,
    traits: &mut Map<String, Value>,
    who: &Value,
    address: Option<&Value>,
) {
    ids.add_customer_id("shopify", text(who, &["id"]).as_deref());
    ids.add(IdentifierKind::Email, text(who, &["email"]).as_deref());
    ids.add(IdentifierKind::Phone, text(who, &["phone"]).as_deref());
    copy_fields(
        traits,
        who,
        &[
            ("first_name", "first_name"),
            ("last_name", "last_name"),
            ("tags", "tags"),
            ("verified_email", "verified_email"),
        ],
    );
    if let Some(state) = text(who, &["email_marketing_consent", "state"]) {
        traits.insert("email_marketing".into(), s(state));
    } else if let Some(Value::Bool(b)) = who.get("accepts_marketing") {
        traits.insert(
            "email_marketing".into(),
            s(if *b { "subscribed" } else { "not_subscribed" }),
        );
    }
    if let Some(state) = text(who, &["sms_marketing_consent", "state"]) {
        traits.insert("sms_marketing".into(), s(state));
    }
    if let Some(addr) = address.filter(|a| a.is_object()) {
        ids.add(IdentifierKind::Phone, text(addr, &["phone"]).as_deref());
        copy_fields(
            traits,
            addr,
            &[
                ("city", "city"),
                ("province", "region"),
                ("country_code", "country"),
                ("zip", "postal_code"),
            ],
        );
        if !traits.contains_key("first_name") {
            copy_fields(
                traits,
                addr,
                &[("first_name", "first_name"), ("last_name", "last_name")],
            );
        }
    }
}

/// The line items of an order, checkout or cart. Lines without a SKU use the variant id
/// (`shopify:variant:<id>`) so products stay distinct.
fn line_items(body: &Value) -> Result<Vec<OrderItem>, MapError> {
    let Some(lines) = body.get("line_items").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    lines
        .iter()
        .map(|line| {
            let sku = text(line, &["sku"])
                .or_else(|| text(line, &["variant_id"]).map(|v| format!("shopify:variant:{v}")))
                .or_else(|| text(line, &["product_id"]).map(|v| format!("shopify:product:{v}")))
                .ok_or_else(|| {
                    MapError::Malformed("line item without sku, variant or product id".into())
                })?;
            let name = text(line, &["name"])
                .or_else(|| text(line, &["title"]))
                .unwrap_or_else(|| sku.clone());
            Ok(OrderItem {
                sku,
                name,
                category: text(line, &["product_type"]),
                qty: quantity(line, &["quantity"])?,
                price: decimal(line, &["price"]).unwrap_or_default(),
            })
        })
        .collect()
}

fn order_status(body: &Value) -> OrderStatus {
    if text(body, &["cancelled_at"]).is_some() {
        return OrderStatus::Cancelled;
    }
    match text(body, &["financial_status"]).as_deref() {
        Some("paid") => OrderStatus::Paid,
        Some("refunded") => OrderStatus::Refunded,
        Some("partially_refunded") => OrderStatus::PartiallyRefunded,
        _ => OrderStatus::Placed,
    }
}

/// The amount of a refund: its successful refund transactions, or (for refunds without
/// money movement recorded) its refunded lines.
fn refund_amount(refund: &Value) -> Decimal {
    let from_transactions = refund
        .get("transactions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| {
            text(t, &["kind"]).as_deref() == Some("refund")
                && text(t, &["status"]).as_deref() != Some("failure")
                && text(t, &["status"]).as_deref() != Some("error")
        })
        .filter_map(|t| decimal(t, &["amount"]));
    let from_transactions = saturating_sum(from_transactions);
    if !from_transactions.is_zero() {
        return from_transactions;
    }
    let from_lines = refund
        .get("refund_line_items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| decimal(l, &["subtotal"]));
    saturating_sum(from_lines)
}

fn refund_currency(refund: &Value) -> Option<String> {
    refund
        .get("transactions")
        .and_then(Value::as_array)
        .and_then(|ts| ts.iter().find_map(|t| text(t, &["currency"])))
        .or_else(|| {
            refund
                .get("refund_line_items")
                .and_then(Value::as_array)
                .and_then(|ls| {
                    ls.iter()
                        .find_map(|l| text(l, &["subtotal_set", "shop_money", "currency_code"]))
                })
        })
}

fn order_event(
    raw: &RawRecord<'_>,
    region: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Normalized, MapError> {
    let body = raw.body;
    let order_id = required(text(body, &["id"]), "id")?;
    let currency = required(
        text(body, &["currency"]).or_else(|| text(body, &["presentment_currency"])),
        "currency",
    )?;
    let total = required(decimal(body, &["total_price"]), "total_price")?;
    let placed_at = required(
        time(body, &["processed_at"]).or_else(|| time(body, &["created_at"])),
        "created_at",
    )?;
    let version = time(body, &["updated_at"]).unwrap_or(placed_at);
    let status = order_status(body);
    let channel = if text(body, &["source_name"]).as_deref() == Some("pos") {
        Channel::Pos
    } else {
        Channel::Web
    };
    let items = line_items(body)?;
    let event_type = if status == OrderStatus::Cancelled || raw.kind == "orders/cancelled" {
        EventType::OrderCancelled
    } else {
        EventType::OrderPlaced
    };

    let mut ev = event_of(raw, channel, event_type, Some(raw.kind.into()), at);
    let mut ids = Identifiers::new(region);
    if let Some(customer) = body.get("customer").filter(|c| c.is_object()) {
        person(
            &mut ids,
            &mut ev.traits,
            customer,
            customer.get("default_address"),
        );
    }
    ids.add(IdentifierKind::Email, text(body, &["email"]).as_deref());
    ids.add(
        IdentifierKind::Email,
        text(body, &["contact_email"]).as_deref(),
    );
    ids.add(IdentifierKind::Phone, text(body, &["phone"]).as_deref());
    if let Some(billing) = body.get("billing_address").filter(|a| a.is_object()) {
        ids.add(IdentifierKind::Phone, text(billing, &["phone"]).as_deref());
        for (key, name) in [
            ("city", "city"),
            ("country_code", "country"),
            ("first_name", "first_name"),
            ("last_name", "last_name"),
        ] {
            if let Some(v) = text(billing, &[key]) {
                ev.traits.entry(name).or_insert_with(|| s(v));
            }
        }
    }
    if let Some(Value::Bool(b)) = body.get("buyer_accepts_marketing") {
        ev.traits
            .entry("email_marketing")
            .or_insert_with(|| s(if *b { "subscribed" } else { "not_subscribed" }));
    }

    let p = &mut ev.properties;
    p.insert("topic".into(), s(raw.kind));
    copy_fields(
        p,
        body,
        &[
            ("name", "order_name"),
            ("order_number", "order_number"),
            ("financial_status", "financial_status"),
            ("fulfillment_status", "fulfillment_status"),
            ("cancel_reason", "cancel_reason"),
            ("subtotal_price", "subtotal"),
            ("total_tax", "tax"),
            ("total_discounts", "discount"),
            ("source_name", "source_name"),
            ("landing_site", "landing_site"),
            ("referring_site", "referring_site"),
            ("tags", "tags"),
        ],
    );
    shop_domain(raw, p);

    let refunds: Vec<Refund> = body
        .get("refunds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(Refund {
                refund_id: text(r, &["id"])?,
                amount: refund_amount(r),
            })
        })
        .filter(|r| !r.amount.is_zero())
        .collect();

    Ok(with_order(
        ev,
        ids,
        order_id,
        OrderState {
            status,
            channel,
            store: None,
            placed_at,
            currency,
            total,
            items,
            version,
        },
        refunds,
    ))
}

fn refund_event(raw: &RawRecord<'_>, at: Option<DateTime<Utc>>) -> Result<Normalized, MapError> {
    let body = raw.body;
    let refund_id = required(text(body, &["id"]), "id")?;
    let order_id = required(text(body, &["order_id"]), "order_id")?;
    let amount = refund_amount(body);
    let currency = required(refund_currency(body), "transactions[].currency")?;
    let items: Vec<OrderItem> = body
        .get("refund_line_items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let line = l.get("line_item")?;
            let sku = text(line, &["sku"])
                .or_else(|| text(line, &["variant_id"]).map(|v| format!("shopify:variant:{v}")))?;
            Some(OrderItem {
                name: text(line, &["name"])
                    .or_else(|| text(line, &["title"]))
                    .unwrap_or_else(|| sku.clone()),
                sku,
                category: None,
                qty: quantity(l, &["quantity"]).ok()?,
                price: decimal(line, &["price"]).unwrap_or_default(),
            })
        })
        .collect();
    // A refund webhook names no customer: the identity merger attributes it through the
    // order (`orders.profile_id`).
    let mut ev = event_of(
        raw,
        Channel::Web,
        EventType::RefundIssued,
        Some(raw.kind.into()),
        at,
    );
    ev.properties.insert("topic".into(), s(raw.kind));
    ev.properties
        .insert("refund_id".into(), s(refund_id.clone()));
    copy_fields(&mut ev.properties, body, &[("note", "note")]);
    shop_domain(raw, &mut ev.properties);
    ev.order = Some(Order {
        order_id: order_id.clone(),
        total: amount,
        currency,
        status: OrderStatus::PartiallyRefunded,
        store: None,
        items,
    });
    Ok(Normalized {
        event: Some(ev),
        dropped: Vec::new(),
        order: Some(OrderWrite {
            external_order_id: order_id,
            state: None,
            refunds: vec![Refund { refund_id, amount }],
            deleted: false,
        }),
        products: Vec::new(),
    })
}
