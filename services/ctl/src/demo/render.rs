//! Renders the demo brand's events as the requests the brand's platforms would send to
//! ingest: signed Shopify and WooCommerce webhooks, Segment-style tracking messages,
//! Twilio WhatsApp messages and status callbacks, and POS bills — in the payload shapes
//! of `crates/ingestion/tests/fixtures/` — plus the CSV export of historical customers.
//!
//! The input is `scenario::identity`: the brand simulator's activities as normalised
//! events carrying the identifiers each touchpoint really had (several e-mails and
//! phones, households, counter phones, junk, guest checkouts, cookie churn), with the
//! truth of who did each. Each event is put where its identifiers would travel in the
//! platform's own payload, so the fleet has to recover them exactly as it would from the
//! real platforms.
//!
//! Pure and deterministic: the same scenario and integrations give the same bytes, and
//! every delivery carries the key ingest deduplicates it by (the raw event's
//! `source_event_id`), so the truth survives the trip and re-sending stores nothing
//! twice.
//!
//! How the brand's systems are laid out (so every source has a reason to exist):
//! - the web shop ran on WooCommerce until a re-platforming date a third into the
//!   history and on Shopify afterwards; an order's cancellation and refunds come from the
//!   platform it was placed on. Order webhooks carry no browser cookie, so the checkout
//!   page's own `identify` call (cookie, e-mail, user id) goes to the tracking API just
//!   before the order;
//! - the site and the app run a Segment-compatible SDK: page and product views, cart,
//!   checkout, web sign-ups as `identify`, QR codes scanned in store
//!   (`QR Code Scanned`), and the stores' Wi-Fi login (`Store Visited`); loyalty
//!   enrolment at a till is an `identify` from the in-store kiosk;
//! - tills post bills to the POS endpoint (bills cannot be voided or refunded through
//!   it, so those events are counted as skipped);
//! - WhatsApp goes through Twilio, and every inbound message gets an agent's reply whose
//!   delivery statuses Twilio reports. Twilio's callbacks carry no timestamp (ingest
//!   stamps them on arrival), so only the last `whatsapp_days` of conversations are
//!   sent, as a live tail; older ones are counted as skipped rather than stamped with
//!   today's date.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, FixedOffset, SecondsFormat, Utc};
use domain::{EventType, IdentifierKind, NormalizedEvent, OrderItem, Source};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;
use scenario::Brand;
use scenario::identity::PersonIdentity;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// One configured integration as the renderer needs it.
#[derive(Clone)]
pub struct Endpoint {
    /// Integration id (in webhook paths).
    pub id: Uuid,
    /// Its secret: signing secret, auth token, write key or bearer token.
    pub secret: String,
}

/// The integrations the demo delivers through.
#[derive(Clone)]
pub struct Endpoints {
    /// Shopify webhooks.
    pub shopify: Endpoint,
    /// WooCommerce webhooks.
    pub woocommerce: Endpoint,
    /// Twilio WhatsApp.
    pub twilio: Endpoint,
    /// Segment-compatible tracking (the secret is the write key).
    pub segment: Endpoint,
    /// POS bills (the secret is the bearer token).
    pub pos: Endpoint,
    /// Ingest's public base URL, which Twilio signatures cover.
    pub public_base_url: String,
}

/// What goes over the wire for one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A request of its own (signed webhooks, Twilio callbacks).
    Single {
        /// Path on ingest.
        path: String,
        /// Headers, signature included.
        headers: Vec<(&'static str, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// One tracking message; the sender batches them into `POST /v1/batch`.
    Segment(Value),
    /// One bill; the sender batches them into `POST /pos/{id}/bills`.
    Bill(Value),
}

/// One delivery and its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The source ingest stores it under.
    pub source: Source,
    /// The key ingest deduplicates it by (`customer_raw_event.source_event_id`).
    pub key: String,
    /// Who did it (ground truth).
    pub person: u32,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The request.
    pub payload: Payload,
}

/// An order as its source will report it in the end (for exact-count checks).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderTruth {
    /// Source (`shopify`, `woocommerce`, `pos`).
    pub source: Source,
    /// The source's order id, as the normalizer stores it (`orders.external_order_id`).
    pub order_id: String,
    /// Who placed it.
    pub person: u32,
    /// Order total.
    pub total: Decimal,
    /// Whether it ends cancelled.
    pub cancelled: bool,
    /// Sum of its refunds.
    pub refunded: Decimal,
}

/// The identifiers of one event, by the fields platforms carry them in.
#[derive(Debug, Clone, Default, PartialEq)]
struct Ids {
    emails: Vec<String>,
    /// E.164.
    phones: Vec<String>,
    loyalty: Option<String>,
    /// Shopify account number (from `shopify:<n>`).
    account: Option<u64>,
    /// Tracking user id (from `segment:<id>`).
    user_id: Option<String>,
    cookie: Option<String>,
    device: Option<String>,
}

impl Ids {
    fn of(ev: &NormalizedEvent) -> Self {
        let mut ids = Ids::default();
        for i in &ev.identifiers {
            match i.kind {
                IdentifierKind::Email => ids.emails.push(i.value.clone()),
                IdentifierKind::Phone => ids.phones.push(i.value.clone()),
                IdentifierKind::LoyaltyId => ids.loyalty = Some(i.value.clone()),
                IdentifierKind::CookieId => ids.cookie = Some(i.value.clone()),
                IdentifierKind::DeviceId => ids.device = Some(i.value.clone()),
                IdentifierKind::CustomerId => match i.value.split_once(':') {
                    Some(("shopify", n)) => ids.account = n.parse().ok(),
                    Some(("segment", u)) => ids.user_id = Some(u.to_owned()),
                    _ => {}
                },
                IdentifierKind::PosCustomer => {}
            }
        }
        ids
    }

    fn email(&self) -> Option<&str> {
        self.emails.first().map(String::as_str)
    }

    fn phone(&self) -> Option<&str> {
        self.phones.first().map(String::as_str)
    }
}

/// Shopify's and WooCommerce's view of one web order, for its later webhooks.
struct WebOrder {
    source: Source,
    /// Numeric id on the platform.
    id: u64,
    number: u64,
    placed_at: DateTime<Utc>,
    ids: Ids,
    first_name: String,
    last_name: String,
    items: Vec<OrderItem>,
    total: Decimal,
    refunds: Vec<(u64, Decimal)>,
    truth: usize,
}

/// Walks a scenario's events in time order and renders each.
pub struct Renderer<'a> {
    brand: &'a Brand,
    people: &'a [PersonIdentity],
    ep: &'a Endpoints,
    migration: DateTime<Utc>,
    whatsapp_since: DateTime<Utc>,
    counter: u64,
    web_orders: HashMap<String, WebOrder>,
    /// Every order rendered, with its final state.
    pub orders: Vec<OrderTruth>,
    /// Events not rendered, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
}

const SHOP_DOMAIN: &str = "loomandco-demo.myshopify.com";
const WOO_SITE: &str = "https://classic.loomandco.example/";
const SITE: &str = "https://loomandco.example";
const BRAND_WHATSAPP: &str = "+14155238886";
const TWILIO_ACCOUNT: &str = "AC00000000000000000000000000demo0";
const SHOPIFY_ORDER_BASE: u64 = 5_900_000_000_000;
const SHOPIFY_REFUND_BASE: u64 = 920_000_000_000;

fn ist() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600 + 1800).expect("IST is a valid offset")
}

/// Shopify's timestamp form: RFC 3339 in the shop's zone.
fn shop_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&ist())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// WooCommerce's `*_gmt` form: UTC without an offset.
fn woo_gmt(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// WooCommerce's local form (the site runs on IST).
fn woo_local(t: DateTime<Utc>) -> String {
    t.with_timezone(&ist())
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// Segment's timestamp form.
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn money(d: Decimal) -> String {
    format!("{:.2}", d.round_dp(2))
}

fn number(d: Decimal) -> Value {
    json!(d.to_f64().unwrap_or_default())
}

/// An E.164 Indian number as a till or a form takes it: mobiles as `98765 43210`,
/// landlines with their trunk prefix (`080 4100 2000`); anything else as is.
fn national(e164: &str) -> String {
    match e164.strip_prefix("+91") {
        Some(n) if n.len() == 10 && n.starts_with(['6', '7', '8', '9']) => {
            format!("{} {}", &n[..5], &n[5..])
        }
        Some(n) if n.len() == 10 => format!("0{} {} {}", &n[..2], &n[2..6], &n[6..]),
        _ => e164.to_owned(),
    }
}

fn slug(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

impl<'a> Renderer<'a> {
    /// A renderer for `brand` whose people are `people` (by person id), delivering
    /// through `ep`. WhatsApp conversations older than `whatsapp_days` before the
    /// brand's end are skipped.
    pub fn new(
        brand: &'a Brand,
        people: &'a [PersonIdentity],
        ep: &'a Endpoints,
        whatsapp_days: u32,
    ) -> Self {
        let start = brand.config.start();
        let end = brand.config.end;
        Self {
            brand,
            people,
            ep,
            migration: start + (end - start) / 3,
            whatsapp_since: end - Duration::days(i64::from(whatsapp_days)),
            counter: 0,
            web_orders: HashMap::new(),
            orders: Vec::new(),
            skipped: BTreeMap::new(),
        }
    }

    /// A fresh deterministic 128-bit value: the `n`th of this brand.
    fn next_bits(&mut self) -> u128 {
        self.counter += 1;
        let mut h = Sha256::new();
        h.update(self.brand.config.seed.to_le_bytes());
        h.update(self.counter.to_le_bytes());
        let d = h.finalize();
        u128::from_le_bytes(d[..16].try_into().expect("16 bytes"))
    }

    fn next_uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.next_bits().to_le_bytes()).into_uuid()
    }

    fn rng(&mut self) -> ChaCha8Rng {
        let bits = self.next_bits();
        ChaCha8Rng::seed_from_u64(bits as u64)
    }

    fn skip(&mut self, why: &'static str) {
        *self.skipped.entry(why).or_default() += 1;
    }

    /// Counts an event left out because it falls after the end of the history
    /// (refunds and complaints can trail the last order by days).
    pub fn skip_after_end(&mut self) {
        self.skip("after the end of the history");
    }

    fn names(&self, person: u32) -> (String, String) {
        self.people
            .get(person as usize)
            .map(|p| (p.first_name.clone(), p.last_name.clone()))
            .unwrap_or_default()
    }

    /// Renders one event of `person` into zero or more deliveries.
    pub fn render(&mut self, ev: &NormalizedEvent, person: u32) -> Vec<Delivery> {
        let mut out = Vec::new();
        let ids = Ids::of(ev);
        let at = ev.occurred_at;
        match (ev.source, ev.event_type) {
            (Source::Twilio, _) => {
                if at < self.whatsapp_since {
                    self.skip(
                        "whatsapp message before the live window (Twilio sends no timestamp)",
                    );
                } else {
                    self.whatsapp(ev, &ids, person, &mut out);
                }
            }
            (Source::Pos, EventType::OrderPlaced) => self.bill(ev, &ids, person, &mut out),
            (Source::Pos, EventType::OrderCancelled) => {
                self.skip("store bill voided (the POS endpoint takes bills only)");
            }
            (Source::Pos, EventType::RefundIssued) => {
                self.skip("store refund (the POS endpoint takes bills only)");
            }
            (Source::Pos, EventType::Identify) => {
                // Loyalty enrolment at the till's kiosk.
                let kiosk = format!("kiosk-{:016x}", self.next_bits() as u64);
                let msg = json!({
                    "type": "identify", "anonymousId": kiosk,
                    "traits": self.traits(ev, &ids, person),
                    "context": {"app": {"name": "Loom & Co Loyalty Kiosk", "version": "3.2.0"},
                        "library": {"name": "analytics-node", "version": "2.1.2"}},
                });
                out.push(self.segment_raw(at, person, msg));
            }
            (Source::Pos, EventType::StoreVisit) => {
                // The store's Wi-Fi login, by loyalty card or phone.
                let store = ev.properties.get("store").cloned().unwrap_or(Value::Null);
                let visitor = format!("wifi-{:016x}", self.next_bits() as u64);
                let mut traits = json!({});
                if let Some(l) = &ids.loyalty {
                    traits["loyaltyId"] = json!(l);
                }
                if let Some(p) = ids.phone() {
                    traits["phone"] = json!(p);
                }
                let msg = json!({
                    "type": "track", "event": "Store Visited", "anonymousId": visitor,
                    "properties": {"store": store, "source": "wifi-login"},
                    "context": {"traits": traits,
                        "library": {"name": "analytics-node", "version": "2.1.2"}},
                });
                out.push(self.segment_raw(at, person, msg));
            }
            (_, EventType::OrderPlaced) => self.web_order(ev, &ids, person, &mut out),
            (_, EventType::OrderCancelled) => self.cancelled(ev, &mut out),
            (_, EventType::RefundIssued) => self.refund(ev, &mut out),
            (_, EventType::Identify) => {
                let msg = json!({"type": "identify", "traits": self.traits(ev, &ids, person)});
                out.push(self.tracked(at, &ids, person, msg));
            }
            (_, EventType::PageViewed) => {
                let path = ev
                    .properties
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_owned();
                let title = match path.as_str() {
                    "/" => "Home".to_owned(),
                    "/cart" => "Cart".to_owned(),
                    p => p.rsplit('/').next().unwrap_or(p).replace('-', " "),
                };
                let msg = json!({
                    "type": "page", "name": title,
                    "properties": {"path": path, "url": format!("{SITE}{path}"), "title": title},
                    "context": {"page": {"path": path, "url": format!("{SITE}{path}")}},
                });
                out.push(self.tracked(at, &ids, person, msg));
            }
            (_, t @ (EventType::ProductViewed | EventType::AddedToCart)) => {
                let event = if t == EventType::ProductViewed {
                    "Product Viewed"
                } else {
                    "Product Added"
                };
                let sku = ev
                    .properties
                    .get("sku")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut props = json!({"currency": self.brand.config.currency});
                if let Some(p) = self.brand.product(sku) {
                    props = json!({
                        "sku": p.sku, "product_id": p.sku, "name": p.name, "category": p.category,
                        "price": number(p.price), "currency": self.brand.config.currency,
                        "url": format!("{SITE}/products/{}", slug(&p.name)),
                    });
                    if t == EventType::AddedToCart {
                        props["quantity"] = json!(1);
                    }
                }
                let msg = json!({"type": "track", "event": event, "properties": props});
                out.push(self.tracked(at, &ids, person, msg));
            }
            (_, EventType::CheckoutStarted) => {
                let msg = json!({"type": "track", "event": "Checkout Started",
                    "properties": {"currency": self.brand.config.currency}});
                out.push(self.tracked(at, &ids, person, msg));
            }
            (_, EventType::QrScanned) => {
                let store = ev
                    .properties
                    .get("store")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let code = ev
                    .properties
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let msg = json!({
                    "type": "track", "event": "QR Code Scanned",
                    "properties": {"code": format!("{store}-{code}"), "store": store,
                        "campaign": code.to_lowercase()},
                    "context": {"page": {"url": format!("{SITE}/qr/{store}/{}", code.to_lowercase())}},
                });
                out.push(self.tracked(at, &ids, person, msg));
            }
            _ => self.skip("an event kind the demo does not send"),
        }
        out
    }

    /// The person's traits as a form or a till states them.
    fn traits(&self, ev: &NormalizedEvent, ids: &Ids, person: u32) -> Value {
        let (first, last) = self.names(person);
        let mut traits = json!({
            "firstName": ev.traits.get("first_name").cloned().unwrap_or_else(|| json!(first)),
            "lastName": ev.traits.get("last_name").cloned().unwrap_or_else(|| json!(last)),
            "createdAt": iso(ev.occurred_at),
        });
        if let Some(e) = ids.email() {
            traits["email"] = json!(e);
        }
        if let Some(p) = ids.phone() {
            traits["phone"] = json!(national(p));
        }
        if let Some(l) = &ids.loyalty {
            traits["loyaltyId"] = json!(l);
        }
        traits
    }

    /// A tracking message from the site or the app: the browser's anonymous id (the
    /// app's installation id for app sessions), the device, the user id when logged in,
    /// and any contact the visit carried (a newsletter click's e-mail, a scanned card).
    fn tracked(&mut self, at: DateTime<Utc>, ids: &Ids, person: u32, mut msg: Value) -> Delivery {
        let anonymous = ids.cookie.clone().or_else(|| ids.device.clone());
        if let Some(a) = anonymous {
            msg["anonymousId"] = json!(a);
        }
        if let Some(u) = &ids.user_id {
            msg["userId"] = json!(u);
        }
        let is_identify = msg.get("type").and_then(Value::as_str) == Some("identify");
        let obj = msg.as_object_mut().expect("messages are objects");
        let ctx = obj.entry("context").or_insert_with(|| json!({}));
        ctx["locale"] = json!("en-IN");
        match &ids.device {
            Some(d) => {
                ctx["device"] = json!({"id": d});
                ctx["library"] = json!({"name": "analytics-android", "version": "4.11.3"});
            }
            None => ctx["library"] = json!({"name": "analytics.js", "version": "next-1.70.0"}),
        }
        if !is_identify {
            let mut traits = serde_json::Map::new();
            if let Some(e) = ids.email() {
                traits.insert("email".into(), json!(e));
            }
            if let Some(l) = &ids.loyalty {
                traits.insert("loyaltyId".into(), json!(l));
            }
            if !traits.is_empty() {
                ctx["traits"] = Value::Object(traits);
            }
        }
        self.segment_raw(at, person, msg)
    }

    fn segment_raw(&mut self, at: DateTime<Utc>, person: u32, mut msg: Value) -> Delivery {
        let id = format!("ajs-{}", self.next_uuid());
        msg["messageId"] = json!(id);
        msg["timestamp"] = json!(iso(at));
        Delivery {
            source: Source::Segment,
            key: ingestion::sources::segment::dedupe_key(self.ep.segment.id, &id),
            person,
            at,
            payload: Payload::Segment(msg),
        }
    }

    fn shopify(&mut self, topic: &str, body: Value, at: DateTime<Utc>, person: u32) -> Delivery {
        let body = serde_json::to_vec(&body).expect("JSON serialises");
        let webhook_id = self.next_uuid().to_string();
        let headers = vec![
            ("content-type", "application/json".to_owned()),
            ("x-shopify-topic", topic.to_owned()),
            (
                "x-shopify-hmac-sha256",
                ingestion::signing::sign_shopify(&self.ep.shopify.secret, &body),
            ),
            ("x-shopify-shop-domain", SHOP_DOMAIN.to_owned()),
            ("x-shopify-api-version", "2025-10".to_owned()),
            // X-Shopify-Triggered-At is stamped when the request is sent (`send`): a
            // historic time would be refused as a replay.
            ("x-shopify-webhook-id", webhook_id),
        ];
        Delivery {
            source: Source::Shopify,
            key: ingestion::sources::shopify::dedupe_key(self.ep.shopify.id, &body),
            person,
            at,
            payload: Payload::Single {
                path: ingest_path(Source::Shopify, "", self.ep.shopify.id),
                headers,
                body,
            },
        }
    }

    fn woocommerce(
        &mut self,
        topic: &str,
        resource: &str,
        body: Value,
        at: DateTime<Utc>,
        person: u32,
    ) -> Delivery {
        let bytes = serde_json::to_vec(&body).expect("JSON serialises");
        let key = ingestion::sources::woocommerce::dedupe_key(
            self.ep.woocommerce.id,
            topic,
            &body,
            &bytes,
        );
        let body = bytes;
        let delivery = self.next_bits() as u32;
        let headers = vec![
            ("content-type", "application/json".to_owned()),
            ("x-wc-webhook-source", WOO_SITE.to_owned()),
            ("x-wc-webhook-topic", topic.to_owned()),
            ("x-wc-webhook-resource", resource.to_owned()),
            (
                "x-wc-webhook-event",
                topic.split('.').nth(1).unwrap_or_default().to_owned(),
            ),
            (
                "x-wc-webhook-signature",
                ingestion::signing::sign_woocommerce(&self.ep.woocommerce.secret, &body),
            ),
            ("x-wc-webhook-id", "7".to_owned()),
            ("x-wc-webhook-delivery-id", delivery.to_string()),
        ];
        Delivery {
            source: Source::Woocommerce,
            key,
            person,
            at,
            payload: Payload::Single {
                path: ingest_path(Source::Woocommerce, "", self.ep.woocommerce.id),
                headers,
                body,
            },
        }
    }

    fn web_order(&mut self, ev: &NormalizedEvent, ids: &Ids, person: u32, out: &mut Vec<Delivery>) {
        let Some(order) = &ev.order else {
            self.skip("an order event without its order");
            return;
        };
        let at = ev.occurred_at;
        let n = self.web_orders.len() as u64 + 1;
        let source = if at < self.migration {
            Source::Woocommerce
        } else {
            Source::Shopify
        };
        let id = match source {
            Source::Shopify => SHOPIFY_ORDER_BASE + n * 37,
            _ => 3_000 + n,
        };
        // The checkout page identifies its visitor with what the checkout form took:
        // order webhooks carry no cookie.
        let (first, last) = self.names(person);
        if ids.cookie.is_some() || ids.device.is_some() {
            let mut traits = json!({"firstName": first, "lastName": last});
            if let Some(e) = ids.email() {
                traits["email"] = json!(e);
            }
            if let Some(p) = ids.phone() {
                traits["phone"] = json!(national(p));
            }
            let msg = json!({"type": "identify", "traits": traits});
            out.push(self.tracked(at - Duration::seconds(5), ids, person, msg));
        }
        self.orders.push(OrderTruth {
            source,
            order_id: id.to_string(),
            person,
            total: order.total,
            cancelled: false,
            refunded: Decimal::ZERO,
        });
        let web = WebOrder {
            source,
            id,
            number: 1000 + n,
            placed_at: at,
            ids: ids.clone(),
            first_name: first,
            last_name: last,
            items: order.items.clone(),
            total: order.total,
            refunds: Vec::new(),
            truth: self.orders.len() - 1,
        };
        let delivery = match source {
            Source::Shopify => {
                let body = shopify_order(&web, None, at);
                self.shopify("orders/create", body, at, person)
            }
            _ => {
                let body = woo_order(&web, "processing", at);
                self.woocommerce("order.created", "order", body, at, person)
            }
        };
        out.push(delivery);
        self.web_orders.insert(order.order_id.clone(), web);
    }

    fn cancelled(&mut self, ev: &NormalizedEvent, out: &mut Vec<Delivery>) {
        let Some(key) = ev.order.as_ref().map(|o| o.order_id.clone()) else {
            self.skip("an order event without its order");
            return;
        };
        let Some(order) = self.web_orders.remove(&key) else {
            self.skip("a cancellation of an order not sent");
            return;
        };
        let at = ev.occurred_at;
        self.orders[order.truth].cancelled = true;
        let person = self.orders[order.truth].person;
        let delivery = match order.source {
            Source::Shopify => {
                let body = shopify_order(&order, Some(at), at);
                self.shopify("orders/cancelled", body, at, person)
            }
            _ => {
                let body = woo_order(&order, "cancelled", at);
                self.woocommerce("order.updated", "order", body, at, person)
            }
        };
        out.push(delivery);
        self.web_orders.insert(key, order);
    }

    fn refund(&mut self, ev: &NormalizedEvent, out: &mut Vec<Delivery>) {
        let Some((key, amount)) = ev.order.as_ref().map(|o| (o.order_id.clone(), o.total)) else {
            self.skip("an order event without its order");
            return;
        };
        let Some(mut order) = self.web_orders.remove(&key) else {
            self.skip("a refund of an order not sent");
            return;
        };
        let at = ev.occurred_at;
        let refund_id = SHOPIFY_REFUND_BASE + self.counter;
        self.counter += 1;
        order.refunds.push((refund_id, amount));
        self.orders[order.truth].refunded += amount;
        let person = self.orders[order.truth].person;
        let delivery = match order.source {
            Source::Shopify => {
                let body = json!({
                    "id": refund_id, "order_id": order.id,
                    "created_at": shop_time(at), "processed_at": shop_time(at),
                    "note": "Refund requested by the customer", "restock": true,
                    "admin_graphql_api_id": format!("gid://shopify/Refund/{refund_id}"),
                    "refund_line_items": [],
                    "transactions": [{
                        "id": refund_id + 7, "order_id": order.id, "kind": "refund",
                        "gateway": "razorpay", "status": "success", "message": "Refunded",
                        "created_at": shop_time(at), "processed_at": shop_time(at),
                        "amount": money(amount), "currency": self.brand.config.currency,
                        "test": false,
                    }],
                    "order_adjustments": [],
                });
                self.shopify("refunds/create", body, at, person)
            }
            _ => {
                let refunded: Decimal = order.refunds.iter().map(|r| r.1).sum();
                let status = if refunded >= order.total {
                    "refunded"
                } else {
                    "processing"
                };
                let body = woo_order(&order, status, at);
                self.woocommerce("order.updated", "order", body, at, person)
            }
        };
        out.push(delivery);
        self.web_orders.insert(key, order);
    }

    fn bill(&mut self, ev: &NormalizedEvent, ids: &Ids, person: u32, out: &mut Vec<Delivery>) {
        let Some(order) = &ev.order else {
            self.skip("an order event without its order");
            return;
        };
        let store = order.store.clone().unwrap_or_else(|| "STORE".into());
        let bill_no = order
            .order_id
            .rsplit('/')
            .next()
            .unwrap_or(&order.order_id)
            .to_owned();
        let mut rng = self.rng();
        let mut customer = serde_json::Map::new();
        if let Some(name) = ev.traits.get("name") {
            customer.insert("name".into(), name.clone());
        }
        if let Some(p) = ids.phone() {
            customer.insert("phone".into(), json!(national(p)));
        }
        if let Some(e) = ids.email() {
            customer.insert("email".into(), json!(e));
        }
        if let Some(l) = &ids.loyalty {
            customer.insert("loyalty_id".into(), json!(l));
        }
        let lines: Vec<Value> = order
            .items
            .iter()
            .map(|i| {
                json!({"sku": i.sku, "name": i.name, "category": i.category, "qty": i.qty,
                    "price": money(i.price)})
            })
            .collect();
        let payment = ["upi", "card", "cash"][rng.random_range(0..3)];
        let total = money(order.total);
        let bill = json!({
            "store": store, "bill_no": bill_no, "billed_at": shop_time(ev.occurred_at),
            "currency": order.currency, "customer": customer, "lines": lines,
            "totals": {"subtotal": total, "discount": "0.00", "tax": "0.00", "total": total},
            "payment": payment,
            "cashier": format!("S-{:02}", rng.random_range(1..12)),
            "terminal": format!("T{}", rng.random_range(1..4)),
        });
        self.orders.push(OrderTruth {
            source: Source::Pos,
            order_id: format!("{store}:{bill_no}"),
            person,
            total: order.total,
            cancelled: false,
            refunded: Decimal::ZERO,
        });
        out.push(Delivery {
            source: Source::Pos,
            key: format!("{}:{store}:{bill_no}", self.ep.pos.id),
            person,
            at: ev.occurred_at,
            payload: Payload::Bill(bill),
        });
    }

    fn twilio(
        &mut self,
        status: bool,
        params: Vec<(String, String)>,
        key: String,
        at: DateTime<Utc>,
        person: u32,
    ) -> Delivery {
        let path = ingest_path(
            Source::Twilio,
            if status { "/status" } else { "" },
            self.ep.twilio.id,
        );
        let url = format!("{}{path}", self.ep.public_base_url.trim_end_matches('/'));
        let signature = ingestion::signing::sign_twilio(&self.ep.twilio.secret, &url, &params);
        let body = serde_urlencoded::to_string(&params)
            .expect("form parameters encode")
            .into_bytes();
        Delivery {
            source: Source::Twilio,
            key,
            person,
            at,
            payload: Payload::Single {
                path,
                headers: vec![
                    (
                        "content-type",
                        "application/x-www-form-urlencoded".to_owned(),
                    ),
                    ("x-twilio-signature", signature),
                    ("i-twilio-idempotency-token", self.next_uuid().to_string()),
                ],
                body,
            },
        }
    }

    fn whatsapp(&mut self, ev: &NormalizedEvent, ids: &Ids, person: u32, out: &mut Vec<Delivery>) {
        let Some(phone) = ids.phone().map(str::to_owned) else {
            self.skip("whatsapp message without a phone");
            return;
        };
        let at = ev.occurred_at;
        let body = ev
            .properties
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or("Hi")
            .to_owned();
        let profile_name = ev
            .traits
            .get("whatsapp_profile_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let sid = format!("SM{:032x}", self.next_bits());
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let inbound = vec![
            p("SmsMessageSid", &sid),
            p("NumMedia", "0"),
            p("ProfileName", &profile_name),
            p("MessageType", "text"),
            p("SmsSid", &sid),
            p("WaId", phone.trim_start_matches('+')),
            p("SmsStatus", "received"),
            p("Body", &body),
            p("To", &format!("whatsapp:{BRAND_WHATSAPP}")),
            p("NumSegments", "1"),
            p("ReferralNumMedia", "0"),
            p("MessageSid", &sid),
            p("AccountSid", TWILIO_ACCOUNT),
            p("From", &format!("whatsapp:{phone}")),
            p("ApiVersion", "2010-04-01"),
        ];
        let key = format!("{}:{sid}", self.ep.twilio.id);
        out.push(self.twilio(false, inbound, key, at, person));
        // The brand's agent answers; Twilio reports the reply's progress.
        let reply = format!("SM{:032x}", self.next_bits());
        let mut rng = self.rng();
        let mut statuses = vec!["sent", "delivered"];
        if rng.random_bool(0.7) {
            statuses.push("read");
        }
        for (i, status) in statuses.into_iter().enumerate() {
            let params = vec![
                p("ChannelPrefix", "whatsapp"),
                p("ApiVersion", "2010-04-01"),
                p("MessageStatus", status),
                p("SmsSid", &reply),
                p("SmsStatus", status),
                p("To", &format!("whatsapp:{phone}")),
                p("From", &format!("whatsapp:{BRAND_WHATSAPP}")),
                p("MessageSid", &reply),
                p("AccountSid", TWILIO_ACCOUNT),
                p("StructuredMessage", "false"),
            ];
            let at = at + Duration::minutes(4) + Duration::seconds(i as i64 * 20);
            let key = format!("{}:{reply}:{status}", self.ep.twilio.id);
            out.push(self.twilio(true, params, key, at, person));
        }
    }

    /// The CSV export of the legacy loyalty CRM: loyalty members who signed up in the
    /// first quarter of the history, with the header line first. Returns the file and,
    /// per data line (from line 2), the person.
    pub fn historical_customers_csv(&self) -> (String, Vec<u32>) {
        let start = self.brand.config.start();
        let cutoff = start + (self.brand.config.end - start) / 4;
        let mut csv = String::from("First Name,Last Name,Email,Phone,Loyalty ID,City,Created At\n");
        let mut people = Vec::new();
        for person in &self.brand.people {
            let Some(who) = self.people.get(person.person_id as usize) else {
                continue;
            };
            let Some(loyalty) = &who.loyalty_id else {
                continue;
            };
            if person.signed_up_at >= cutoff {
                continue;
            }
            csv.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                who.first_name,
                who.last_name,
                who.emails.first().map(String::as_str).unwrap_or_default(),
                who.phones.first().map(String::as_str).unwrap_or_default(),
                loyalty,
                person.city,
                person.signed_up_at.format("%Y-%m-%d %H:%M:%S"),
            ));
            people.push(person.person_id);
        }
        (csv, people)
    }
}

fn shopify_customer(at: DateTime<Utc>, o: &WebOrder, account: u64) -> Value {
    json!({
        "id": account, "email": o.ids.email(), "phone": o.ids.phone(),
        "created_at": shop_time(at), "updated_at": shop_time(at),
        "first_name": o.first_name, "last_name": o.last_name,
        "state": "enabled", "verified_email": true, "tags": "", "currency": "INR",
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"},
        "admin_graphql_api_id": format!("gid://shopify/Customer/{account}"),
        "default_address": {"first_name": o.first_name, "last_name": o.last_name,
            "country": "India", "country_code": "IN", "default": true},
    })
}

fn shopify_order(
    o: &WebOrder,
    cancelled_at: Option<DateTime<Utc>>,
    updated: DateTime<Utc>,
) -> Value {
    let lines: Vec<Value> = o
        .items
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "id": o.id * 10 + i as u64, "variant_id": 44_000_000_000_000u64 + i as u64,
                "product_id": 8_000_000_000_000u64 + i as u64,
                "sku": l.sku, "name": l.name, "title": l.name, "quantity": l.qty,
                "price": money(l.price), "product_type": l.category, "vendor": "Loom & Co",
                "requires_shipping": true, "taxable": true,
            })
        })
        .collect();
    let mut body = json!({
        "id": o.id, "admin_graphql_api_id": format!("gid://shopify/Order/{}", o.id),
        "name": format!("#{}", o.number), "order_number": o.number, "number": o.number - 1000,
        "email": o.ids.email(), "contact_email": o.ids.email(), "phone": null,
        "created_at": shop_time(o.placed_at), "processed_at": shop_time(o.placed_at),
        "updated_at": shop_time(updated),
        "currency": "INR", "presentment_currency": "INR",
        "subtotal_price": money(o.total), "total_line_items_price": money(o.total),
        "total_price": money(o.total), "total_tax": "0.00", "total_discounts": "0.00",
        "financial_status": if cancelled_at.is_some() { "voided" } else { "paid" },
        "fulfillment_status": null, "source_name": "web", "test": false, "tags": "",
        "cancelled_at": cancelled_at.map(shop_time),
        "cancel_reason": cancelled_at.map(|_| "customer"),
        "buyer_accepts_marketing": true, "customer_locale": "en-IN",
        "payment_gateway_names": ["razorpay"],
        "billing_address": {"first_name": o.first_name, "last_name": o.last_name,
            "country": "India", "country_code": "IN", "phone": o.ids.phone().map(national)},
        "line_items": lines, "refunds": [],
    });
    // A guest checkout names no customer.
    if let Some(account) = o.ids.account {
        body["customer"] = shopify_customer(o.placed_at, o, account);
    }
    body
}

fn woo_order(o: &WebOrder, status: &str, modified: DateTime<Utc>) -> Value {
    let lines: Vec<Value> = o
        .items
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let line_total = l.price * Decimal::from(l.qty);
            json!({
                "id": o.id * 10 + i as u64, "name": l.name, "product_id": 90 + i,
                "variation_id": 0, "quantity": l.qty, "tax_class": "",
                "subtotal": money(line_total), "subtotal_tax": "0.00",
                "total": money(line_total), "total_tax": "0.00", "taxes": [], "meta_data": [],
                "sku": l.sku, "price": number(l.price),
            })
        })
        .collect();
    let refunds: Vec<Value> = o
        .refunds
        .iter()
        .map(|(id, amount)| json!({"id": id, "reason": "Customer request", "total": format!("-{}", money(*amount))}))
        .collect();
    let address = |billing: bool| {
        let mut a = json!({
            "first_name": o.first_name, "last_name": o.last_name, "company": "",
            "address_1": "", "address_2": "", "city": "", "state": "", "postcode": "", "country": "IN",
        });
        if billing {
            a["email"] = json!(o.ids.email().unwrap_or_default());
            a["phone"] = json!(o.ids.phone().map(national).unwrap_or_default());
        }
        a
    };
    json!({
        "id": o.id, "parent_id": 0, "number": o.id.to_string(), "status": status,
        "currency": "INR", "version": "9.4.2", "prices_include_tax": false,
        "date_created": woo_local(o.placed_at), "date_created_gmt": woo_gmt(o.placed_at),
        "date_modified": woo_local(modified), "date_modified_gmt": woo_gmt(modified),
        "discount_total": "0.00", "discount_tax": "0.00", "shipping_total": "0.00",
        "shipping_tax": "0.00", "cart_tax": "0.00", "total": money(o.total), "total_tax": "0.00",
        // The classic shop's customer ids were the account numbers; 0 is a guest.
        "customer_id": o.ids.account.unwrap_or(0),
        "order_key": format!("wc_order_{:x}", o.id * 7919),
        "billing": address(true), "shipping": address(false),
        "payment_method": "razorpay", "payment_method_title": "UPI / Cards / NetBanking",
        "created_via": "checkout", "customer_note": "",
        "line_items": lines, "refunds": refunds,
    })
}

/// The path at ingest of `source`'s signed-webhook route ending in `suffix`, for
/// `integration` (from the source registry, as ingest mounts it).
fn ingest_path(source: Source, suffix: &str, integration: Uuid) -> String {
    let hook = ingestion::sources::of(source)
        .webhook()
        .expect("the demo renders signed webhooks only for signed-webhook sources");
    let route = hook
        .routes()
        .iter()
        .find(|r| r.suffix == suffix)
        .expect("the route is registered");
    ingestion::sources::route_url("", source, route, integration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use scenario::BrandConfig;
    use scenario::identity::{IdentityConfig, dress};

    fn endpoints() -> Endpoints {
        let ep = |n: u128| Endpoint {
            id: Uuid::from_u128(n),
            secret: format!("secret-{n}"),
        };
        Endpoints {
            shopify: ep(1),
            woocommerce: ep(2),
            twilio: ep(3),
            segment: ep(4),
            pos: ep(5),
            public_base_url: "http://ingest.test".into(),
        }
    }

    /// Renders like `ctl demo` does (events after the end left out), with the
    /// end-to-end test's WhatsApp window.
    fn render_all(brand_cfg: BrandConfig, ep: &Endpoints) -> (Vec<Delivery>, Vec<OrderTruth>) {
        let brand = scenario::generate(&brand_cfg);
        let cfg = IdentityConfig {
            brand: brand_cfg,
            ..IdentityConfig::default()
        };
        let scenario = dress(&cfg, &brand);
        let mut r = Renderer::new(&brand, &scenario.identities, ep, 120);
        let mut out = Vec::new();
        for ev in &scenario.events {
            if ev.occurred_at >= brand.config.end {
                r.skip_after_end();
                continue;
            }
            out.extend(r.render(ev, scenario.truth[&ev.event_id]));
        }
        (out, r.orders)
    }

    /// Every rendered delivery is accepted by ingestion's own parsers with the key the
    /// renderer predicted, verifies with its signature, and maps to a normalised event —
    /// so what the demo sends is exactly what a platform would.
    #[test]
    fn every_delivery_parses_verifies_and_normalises_with_the_predicted_key() {
        let ep = endpoints();
        let (deliveries, orders) = render_all(
            BrandConfig {
                customers: 120,
                seed: 5,
                ..BrandConfig::default()
            },
            &ep,
        );
        let mut keys = std::collections::HashSet::new();
        let mut sources = std::collections::BTreeMap::<&str, usize>::new();
        for d in &deliveries {
            assert!(
                keys.insert((d.source, d.key.clone())),
                "duplicate key {}",
                d.key
            );
            *sources.entry(d.source.as_str()).or_default() += 1;
            let raw = raw_event(&ep, d);
            assert_eq!(raw.source, d.source);
            assert_eq!(raw.source_event_id, d.key, "{:?}", d.payload);
            let n = ingestion::normalize::normalize(&raw.record(), "IN")
                .unwrap_or_else(|e| panic!("{} {} does not map: {e}", d.source, d.key));
            let ev = n.event.expect("every delivery is an event");
            assert!(
                !ev.identifiers.is_empty() || ev.event_type == domain::EventType::RefundIssued,
                "{} {} carries no identifier",
                d.source,
                d.key
            );
            if d.source != Source::Twilio {
                assert_eq!(
                    ev.occurred_at, d.at,
                    "{} {} keeps its time",
                    d.source, d.key
                );
            }
        }
        for s in ["shopify", "woocommerce", "segment", "pos", "twilio"] {
            assert!(
                sources.get(s).copied().unwrap_or(0) > 0,
                "no {s} deliveries: {sources:?}"
            );
        }
        assert!(orders.iter().any(|o| o.cancelled));
        assert!(orders.iter().any(|o| !o.refunded.is_zero()));
    }

    /// The profiles the identity engine builds from the scenario's own events, and from
    /// what ingest's parsers and the normalizer make of the rendered deliveries: the
    /// rendering must not lose (or invent) what ties events to people, so both score
    /// the same against the truth. In memory, with the engine the merger runs.
    #[test]
    fn rendering_keeps_identity_quality_of_the_scenario() {
        let brand_cfg = BrandConfig {
            customers: 150,
            months: 10,
            seed: 11,
            ..BrandConfig::default()
        };
        let engine = || {
            identity::Engine::new(
                identity::Policy::default(),
                identity::model::ProfileIds::TIME_ORDERED,
            )
        };
        let score = |observations: Vec<identity::Observation>, truth: &HashMap<Uuid, u32>| {
            let r = identity::memory::MemoryResolver::rebuild(
                engine(),
                identity::engine::Constraints::default(),
                observations,
            );
            let q = identity::quality::pairwise(r.assignment().iter().map(|(e, p)| (*p, truth[e])));
            (q, r.merges.len(), r.reviews.len())
        };

        let brand = scenario::generate(&brand_cfg);
        let scenario = dress(
            &IdentityConfig {
                brand: brand_cfg.clone(),
                ..IdentityConfig::default()
            },
            &brand,
        );
        let (own, ..) = score(
            scenario
                .events
                .iter()
                .map(identity::Observation::of)
                .collect(),
            &scenario.truth,
        );

        let ep = endpoints();
        let (deliveries, _) = render_all(brand_cfg, &ep);
        let mut people = HashMap::new();
        let observations: Vec<identity::Observation> = deliveries
            .iter()
            .map(|d| {
                let mut raw = raw_event(&ep, d);
                raw.id = Uuid::new_v4();
                raw.received_at = d.at;
                let ev = ingestion::normalize::normalize(&raw.record(), "IN")
                    .unwrap()
                    .event
                    .unwrap();
                people.insert(ev.event_id, d.person);
                identity::Observation::of(&ev)
            })
            .collect();
        let (rendered, merges, reviews) = score(observations, &people);
        eprintln!(
            "scenario events: precision {:.4} recall {:.4}; rendered: precision {:.4} recall {:.4} \
             ({} events of {} people in {} profiles, {merges} merges, {reviews} review items)",
            own.precision(),
            own.recall(),
            rendered.precision(),
            rendered.recall(),
            rendered.events,
            rendered.people,
            rendered.profiles
        );
        assert!(
            rendered.precision() >= own.precision() - 0.001,
            "rendering costs precision: {:.4} < {:.4}",
            rendered.precision(),
            own.precision()
        );
        assert!(
            rendered.recall() >= own.recall() - 0.002,
            "rendering costs recall: {:.4} < {:.4}",
            rendered.recall(),
            own.recall()
        );
    }

    /// The raw event ingest would store for a delivery, through the same edge code,
    /// signatures checked.
    fn raw_event(ep: &Endpoints, d: &Delivery) -> ingestion::raw_event::NewRawEvent {
        use ingestion::sources::{WebhookRequest, pos, segment};
        match &d.payload {
            Payload::Segment(msg) => {
                let body = json!({"batch": [msg]});
                let receipt = segment::Receipt {
                    integration_id: ep.segment.id,
                    received_at: Utc::now(),
                    default_currency: None,
                };
                let mut evs = segment::raw_events(receipt, segment::Endpoint::Batch, body, 100)
                    .expect("segment message accepted");
                evs.remove(0)
            }
            Payload::Bill(bill) => pos::raw_events(ep.pos.id, json!({"bills": [bill]}))
                .expect("bill accepted")
                .remove(0),
            Payload::Single {
                path,
                headers,
                body,
            } => {
                let endpoint = match d.source {
                    Source::Shopify => &ep.shopify,
                    Source::Woocommerce => &ep.woocommerce,
                    Source::Twilio => &ep.twilio,
                    other => panic!("unexpected single delivery from {other}"),
                };
                let prefix = ingest_path(d.source, "", endpoint.id);
                let suffix = path.strip_prefix(&prefix).expect("a path of the source");
                let mut map = http::HeaderMap::new();
                for (k, v) in headers {
                    map.insert(*k, v.parse().unwrap());
                }
                let request = WebhookRequest {
                    headers: &map,
                    body,
                    public_base_url: &ep.public_base_url,
                    path_and_query: path,
                    received_at: Utc::now(),
                    max_age: None,
                };
                ingestion::sources::webhook_raw_event(
                    d.source,
                    suffix,
                    endpoint.id,
                    Some(&endpoint.secret),
                    &request,
                )
                .unwrap_or_else(|e| panic!("{} delivery refused: {e}", d.source))
            }
        }
    }

    #[test]
    fn rendering_is_deterministic() {
        let ep = endpoints();
        let cfg = BrandConfig {
            customers: 40,
            ..BrandConfig::default()
        };
        assert_eq!(render_all(cfg.clone(), &ep), render_all(cfg, &ep));
    }
}
