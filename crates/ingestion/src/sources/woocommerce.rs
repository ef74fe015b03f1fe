//! WooCommerce webhooks: accepted topics, the save-time ping, deduplication keys, and the
//! mapping of orders, customers and products.
//!
//! WooCommerce signs the raw body like Shopify (`X-WC-Webhook-Signature`) and names the
//! topic in `X-WC-Webhook-Topic`. Its delivery id changes on every attempt and the
//! topic is not signed, so the deduplication key is the integration, the resource and
//! its modification time ([`dedupe_key`]), falling back to a hash of the body: the same
//! state delivered twice, under any topic, is stored once; the topic must fit the body. When a webhook is saved WooCommerce sends
//! an unsigned form-encoded `webhook_id=<n>` ping, which is answered 200 and not stored.
//!
//! Payloads are the REST API v3 resources. Orders map to `order_placed` (or
//! `order_cancelled` for cancelled/failed/trashed orders and `order.deleted`), with
//! `date_modified_gmt` as the order's version and its `refunds` as refunds; customers to
//! `identify`; products only update the product catalogue.

use chrono::{DateTime, Utc};
use domain::{
    Channel, EventType, IdentifierKind, OrderItem, OrderState, OrderStatus, OrderWrite, Product,
    Refund, Source,
};
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

/// The WooCommerce connector.
pub struct WooCommerce;

/// The webhook topics ingest accepts.
pub const TOPICS: [&str; 7] = [
    "order.created",
    "order.updated",
    "order.deleted",
    "customer.created",
    "customer.updated",
    "product.created",
    "product.updated",
];

/// The WooCommerce headers ingest keeps with the raw event.
pub const KEPT_HEADERS: [&str; 5] = [
    "x-wc-webhook-topic",
    "x-wc-webhook-source",
    "x-wc-webhook-id",
    "x-wc-webhook-delivery-id",
    "x-wc-webhook-resource",
];

const SIGNATURE: &str = "X-WC-Webhook-Signature";

const ROUTES: [WebhookRoute; 1] = [WebhookRoute {
    suffix: "",
    kind: "",
    purpose: "webhooks",
    dedupe_key: "integration, resource, its id and `date_modified_gmt` (body hash if none): the delivery id changes on every retry, the topic is not signed",
}];

const DESCRIPTION: Description = Description {
    source: Source::Woocommerce,
    label: "WooCommerce",
    credential: Credential::SigningSecret,
    authentication: "X-WC-Webhook-Signature: base64 HMAC-SHA256 of the raw body with the secret",
    own_secret_hint: None,
};

impl Connector for WooCommerce {
    fn description(&self) -> &'static Description {
        &DESCRIPTION
    }

    fn webhook(&self) -> Option<&dyn SignedWebhook> {
        Some(self)
    }

    fn setup_steps(&self, webhook_url: &str) -> Vec<String> {
        vec![
            "In WordPress open WooCommerce → Settings → Advanced → Webhooks and choose Add webhook.".into(),
            format!("Status Active, topic Order created (then again for Order updated and Customer created), delivery URL {webhook_url}."),
            "Paste this integration's secret into Secret and save; WooCommerce pings the URL, which answers 200.".into(),
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
            "customer.created",
            json!({"id": customer, "first_name": "ConstIntel", "last_name": "Test",
                   "date_created_gmt": now, "constintel_test": true}),
        )
    }
}

impl SignedWebhook for WooCommerce {
    fn routes(&self) -> &'static [WebhookRoute] {
        &ROUTES
    }

    fn signature_header(&self) -> &'static str {
        SIGNATURE
    }

    fn verify(&self, secret: &str, request: &WebhookRequest<'_>) -> Result<(), Refusal> {
        check_signature(request, SIGNATURE, |sig| {
            signing::verify_woocommerce(secret, request.body, sig)
        })
    }

    /// The ping WooCommerce sends when a webhook is saved proves the URL works; it
    /// carries no event.
    fn is_ping(&self, request: &WebhookRequest<'_>) -> bool {
        is_ping(request.body)
    }

    fn raw_event(
        &self,
        integration: Uuid,
        _route: &WebhookRoute,
        request: &WebhookRequest<'_>,
    ) -> Result<NewRawEvent, Refusal> {
        let topic = request
            .header("x-wc-webhook-topic")
            .ok_or_else(|| Refusal::invalid("missing_topic", "missing X-WC-Webhook-Topic"))?;
        let body = json_body(request.body)?;
        raw_event(
            integration,
            topic,
            kept_headers(request.headers, &KEPT_HEADERS),
            request.body,
            body,
        )
        .map_err(|e| Refusal::invalid("invalid_webhook", e))
    }
}

/// Whether `body` is the ping WooCommerce sends when a webhook is saved: a
/// form-encoded body whose only field is `webhook_id`.
fn is_ping(body: &[u8]) -> bool {
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else {
        return false;
    };
    matches!(pairs.as_slice(), [(k, v)] if k == "webhook_id" && !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
}

/// The deduplication key of a delivery to `integration` about `topic`'s resource:
/// the resource kind, its id and its modification time
/// (`<integration>:order:123:2026-11-20T10:00:00`), or the SHA-256 of the signed body
/// when the resource has no modification time. The delivery id changes on every retry
/// and the topic header is not signed, so neither is part of it: the same state sent
/// again, under any topic of the resource, is stored once.
pub fn dedupe_key(integration_id: Uuid, topic: &str, body: &Value, raw_body: &[u8]) -> String {
    let resource = topic.split('.').next().unwrap_or(topic);
    let id = text(body, &["id"]).unwrap_or_default();
    match text(body, &["date_modified_gmt"]) {
        Some(modified) => format!("{integration_id}:{resource}:{id}:{modified}"),
        None => format!(
            "{integration_id}:{resource}:{id}:sha256:{}",
            hex::encode(Sha256::digest(raw_body))
        ),
    }
}

/// Whether `body` is what `topic` delivers: `order.deleted` carries only the id; an
/// order has lines, a total and a status; a customer has no lines; a product has a
/// type. The topic header is not signed; this keeps a signed body from being replayed
/// as another topic (an order as `order.deleted`).
fn topic_fits(topic: &str, body: &Value) -> Result<(), String> {
    let has = |key: &str| body.get(key).is_some_and(|v| !v.is_null());
    let fits = match topic {
        "order.deleted" => !has("line_items") && !has("total"),
        "order.created" | "order.updated" => has("line_items") && has("total") && has("status"),
        "customer.created" | "customer.updated" => !has("line_items") && !has("type"),
        "product.created" | "product.updated" => !has("line_items") && has("type"),
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        Err(format!("the body is not what `{topic}` delivers"))
    }
}

/// Builds the raw event of a verified delivery.
fn raw_event(
    integration_id: Uuid,
    topic: &str,
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
    text(&body, &["id"]).ok_or("the resource has no `id`")?;
    topic_fits(topic, &body)?;
    let key = dedupe_key(integration_id, topic, &body, raw_body);
    let mut ev = NewRawEvent::new(Some(integration_id), Source::Woocommerce, key, topic, body);
    ev.occurred_at =
        time(&ev.body, &["date_modified_gmt"]).or_else(|| time(&ev.body, &["date_created_gmt"]));
    ev.headers = headers;
    Ok(ev)
}

/// Maps a WooCommerce raw event.
fn normalize(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    match raw.kind {
        "order.created" | "order.updated" => order_event(raw, region),
        "order.deleted" => {
            let order_id = required(text(raw.body, &["id"]), "id")?;
            let mut ev = event_of(
                raw,
                Channel::Web,
                EventType::OrderCancelled,
                Some(raw.kind.into()),
                None,
            );
            ev.properties.insert("topic".into(), s(raw.kind));
            ev.properties.insert("order_id".into(), s(order_id.clone()));
            site(raw, &mut ev.properties);
            Ok(Normalized {
                event: Some(ev),
                dropped: Vec::new(),
                order: Some(OrderWrite {
                    external_order_id: order_id,
                    state: None,
                    refunds: Vec::new(),
                    deleted: true,
                }),
                products: Vec::new(),
            })
        }
        "customer.created" | "customer.updated" => {
            let body = raw.body;
            let mut ev = event_of(
                raw,
                Channel::Web,
                EventType::Identify,
                Some(raw.kind.into()),
                None,
            );
            let mut ids = Identifiers::new(region);
            customer_id(&mut ids, text(body, &["id"]));
            ids.add(IdentifierKind::Email, text(body, &["email"]).as_deref());
            copy_fields(
                &mut ev.traits,
                body,
                &[
                    ("first_name", "first_name"),
                    ("last_name", "last_name"),
                    ("username", "username"),
                    ("is_paying_customer", "is_paying_customer"),
                ],
            );
            if let Some(billing) = body.get("billing") {
                contact(&mut ids, &mut ev.traits, billing);
            }
            ev.properties.insert("topic".into(), s(raw.kind));
            site(raw, &mut ev.properties);
            Ok(without_order(ev, ids, Vec::new()))
        }
        "product.created" | "product.updated" => {
            let body = raw.body;
            let id = required(text(body, &["id"]), "id")?;
            let sku = text(body, &["sku"]).unwrap_or_else(|| format!("woocommerce:{id}"));
            let product = Product {
                name: text(body, &["name"]).unwrap_or_else(|| sku.clone()),
                sku,
                category: body
                    .get("categories")
                    .and_then(Value::as_array)
                    .and_then(|cs| cs.iter().find_map(|c| text(c, &["name"]))),
                price: decimal(body, &["price"]).or_else(|| decimal(body, &["regular_price"])),
                currency: None,
            };
            Ok(Normalized {
                event: None,
                dropped: Vec::new(),
                order: None,
                products: vec![product],
            })
        }
        other => Err(MapError::Unsupported(format!(
            "woocommerce topic `{other}`"
        ))),
    }
}

fn site(raw: &RawRecord<'_>, props: &mut Map<String, Value>) {
    if let Some(src) = raw
        .headers
        .get("x-wc-webhook-source")
        .and_then(Value::as_str)
    {
        props.insert("site".into(), s(src));
    }
}

/// Guests have customer id 0, which identifies nobody.
fn customer_id(ids: &mut Identifiers<'_>, id: Option<String>) {
    if let Some(id) = id.filter(|id| id != "0") {
        ids.add_customer_id("woocommerce", Some(&id));
    }
}

fn contact(ids: &mut Identifiers<'_>, traits: &mut Map<String, Value>, address: &Value) {
    ids.add(IdentifierKind::Email, text(address, &["email"]).as_deref());
    ids.add(IdentifierKind::Phone, text(address, &["phone"]).as_deref());
    for (key, name) in [
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("city", "city"),
        ("state", "region"),
        ("country", "country"),
        ("postcode", "postal_code"),
    ] {
        if let Some(v) = text(address, &[key]) {
            traits.entry(name).or_insert_with(|| s(v));
        }
    }
}

fn order_status(status: &str) -> OrderStatus {
    match status {
        "processing" | "completed" => OrderStatus::Paid,
        "cancelled" | "failed" | "trash" => OrderStatus::Cancelled,
        "refunded" => OrderStatus::Refunded,
        _ => OrderStatus::Placed,
    }
}

fn order_event(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    let body = raw.body;
    let order_id = required(text(body, &["id"]), "id")?;
    let currency = required(text(body, &["currency"]), "currency")?;
    let total = required(decimal(body, &["total"]), "total")?;
    let placed_at = required(
        time(body, &["date_created_gmt"]).or_else(|| time(body, &["date_created"])),
        "date_created_gmt",
    )?;
    let version = time(body, &["date_modified_gmt"]).unwrap_or(placed_at);
    let wc_status = text(body, &["status"]).unwrap_or_default();
    let mut status = order_status(&wc_status);
    let items = body
        .get("line_items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|line| {
            let sku = text(line, &["sku"])
                .or_else(|| {
                    text(line, &["variation_id"])
                        .filter(|v| v != "0")
                        .or_else(|| text(line, &["product_id"]))
                        .map(|id| format!("woocommerce:{id}"))
                })
                .ok_or_else(|| MapError::Malformed("line item without sku or product id".into()))?;
            let qty = quantity(line, &["quantity"])?;
            let price = decimal(line, &["price"]).or_else(|| {
                decimal(line, &["total"])
                    .filter(|_| qty != 0)
                    .map(|t| t / rust_decimal::Decimal::from(qty))
            });
            Ok(OrderItem {
                name: text(line, &["name"]).unwrap_or_else(|| sku.clone()),
                sku,
                category: None,
                qty,
                price: price.unwrap_or_default().round_dp(2),
            })
        })
        .collect::<Result<Vec<_>, MapError>>()?;
    let refunds: Vec<Refund> = body
        .get("refunds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(Refund {
                refund_id: text(r, &["id"])?,
                amount: decimal(r, &["total"])?.abs(),
            })
        })
        .collect();
    let refunded = saturating_sum(refunds.iter().map(|r| r.amount));
    if status == OrderStatus::Paid && !refunded.is_zero() {
        status = if refunded >= total {
            OrderStatus::Refunded
        } else {
            OrderStatus::PartiallyRefunded
        };
    }
    let event_type = if status == OrderStatus::Cancelled {
        EventType::OrderCancelled
    } else {
        EventType::OrderPlaced
    };
    let mut ev = event_of(raw, Channel::Web, event_type, Some(raw.kind.into()), None);
    let mut ids = Identifiers::new(region);
    customer_id(&mut ids, text(body, &["customer_id"]));
    if let Some(billing) = body.get("billing") {
        contact(&mut ids, &mut ev.traits, billing);
    }
    let p = &mut ev.properties;
    p.insert("topic".into(), s(raw.kind));
    p.insert("woocommerce_status".into(), s(wc_status));
    copy_fields(
        p,
        body,
        &[
            ("number", "order_number"),
            ("payment_method", "payment_method"),
            ("created_via", "created_via"),
            ("total_tax", "tax"),
            ("discount_total", "discount"),
            ("shipping_total", "shipping"),
        ],
    );
    site(raw, p);
    Ok(with_order(
        ev,
        ids,
        order_id,
        OrderState {
            status,
            channel: Channel::Web,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_save_ping_is_recognised() {
        assert!(is_ping(b"webhook_id=17"));
        assert!(!is_ping(b"webhook_id="));
        assert!(!is_ping(br#"{"webhook_id": 17}"#));
        assert!(!is_ping(b"webhook_id=17&x=1"));
    }
}
