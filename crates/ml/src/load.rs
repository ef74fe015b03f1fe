//! Writes a simulated brand straight into the shared tables — `customer_profile`,
//! `products`, `orders`, `order_items`, `normalized_event` — already attributed to
//! profiles, as if ingest, the normalizer and the identity merger had processed it.
//!
//! For ML tests and benchmarks that need a populated database without running the
//! pipeline (the demo goes through the real pipeline instead). Ids are derived from the
//! seed, so loading twice conflicts instead of duplicating, and events, orders and
//! channels match [`crate::synthetic`] exactly.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::Channel;
use rust_decimal::Decimal;
use scenario::{ActivityKind, Brand};
use sqlx::PgPool;
use uuid::Uuid;

use crate::synthetic::{channel_of, order_source, profile_id};

/// Rows written per statement.
const CHUNK: usize = 5_000;

/// What [`load_brand`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadSummary {
    /// Profiles.
    pub profiles: usize,
    /// Orders.
    pub orders: usize,
    /// Normalised events (orders included).
    pub events: usize,
}

fn derived_id(seed: u64, kind: u64, n: u64) -> Uuid {
    Uuid::from_u64_pair(seed.rotate_left(13) ^ (kind << 56), n)
}

#[derive(Default)]
struct EventRows {
    ids: Vec<Uuid>,
    at: Vec<DateTime<Utc>>,
    source: Vec<String>,
    channel: Vec<String>,
    kind: Vec<String>,
    properties: Vec<serde_json::Value>,
    order: Vec<Option<serde_json::Value>>,
    profile: Vec<Uuid>,
}

#[derive(Default)]
struct OrderRows {
    ids: Vec<Uuid>,
    source: Vec<String>,
    external: Vec<String>,
    profile: Vec<Uuid>,
    event: Vec<Uuid>,
    status: Vec<String>,
    channel: Vec<String>,
    store: Vec<Option<String>>,
    placed_at: Vec<DateTime<Utc>>,
    currency: Vec<String>,
    total: Vec<Decimal>,
    refunded: Vec<Decimal>,
}

#[derive(Default)]
struct ItemRows {
    order: Vec<Uuid>,
    line: Vec<i32>,
    sku: Vec<String>,
    name: Vec<String>,
    category: Vec<Option<String>>,
    qty: Vec<i32>,
    price: Vec<Decimal>,
}

/// Loads `brand` into the database behind `db`.
pub async fn load_brand(db: &PgPool, brand: &Brand) -> Result<LoadSummary, sqlx::Error> {
    let seed = brand.config.seed;
    let store_code = |s: u32| brand.stores.get(s as usize).map(|s| s.code.clone());

    // Products.
    let skus: Vec<String> = brand.catalogue.iter().map(|p| p.sku.clone()).collect();
    let names: Vec<String> = brand.catalogue.iter().map(|p| p.name.clone()).collect();
    let cats: Vec<String> = brand.catalogue.iter().map(|p| p.category.clone()).collect();
    let prices: Vec<Decimal> = brand.catalogue.iter().map(|p| p.price).collect();
    sqlx::query(
        "INSERT INTO products (sku, name, category, price, currency) \
         SELECT *, $5 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[]) \
         ON CONFLICT (sku) DO NOTHING",
    )
    .bind(&skus)
    .bind(&names)
    .bind(&cats)
    .bind(&prices)
    .bind(&brand.config.currency)
    .execute(db)
    .await?;

    // Profiles: first and last seen from their activities.
    let mut seen: HashMap<u32, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
    for a in &brand.activities {
        let e = seen.entry(a.person_id).or_insert((a.at, a.at));
        e.0 = e.0.min(a.at);
        e.1 = e.1.max(a.at);
    }
    for people in brand.people.chunks(CHUNK) {
        let ids: Vec<Uuid> = people
            .iter()
            .map(|p| profile_id(seed, p.person_id))
            .collect();
        let names: Vec<String> = people
            .iter()
            .map(|p| format!("{} {}", p.first_name, p.last_name))
            .collect();
        let traits: Vec<serde_json::Value> = people
            .iter()
            .map(|p| serde_json::json!({"first_name": p.first_name, "last_name": p.last_name, "city": p.city}))
            .collect();
        let first: Vec<Option<DateTime<Utc>>> = people
            .iter()
            .map(|p| seen.get(&p.person_id).map(|s| s.0))
            .collect();
        let last: Vec<Option<DateTime<Utc>>> = people
            .iter()
            .map(|p| seen.get(&p.person_id).map(|s| s.1))
            .collect();
        sqlx::query(
            "INSERT INTO customer_profile (id, display_name, traits, first_seen_at, last_seen_at, created_at) \
             SELECT id, n, t, f, l, COALESCE(f, now()) \
             FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::timestamptz[]) AS x(id, n, t, f, l)",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&traits)
        .bind(&first)
        .bind(&last)
        .execute(db)
        .await?;
    }

    // Final state of each order (cancelled, refunded) before writing it.
    let mut cancelled: HashMap<&str, ()> = HashMap::new();
    let mut refunded: HashMap<&str, Decimal> = HashMap::new();
    let mut order_channels: HashMap<String, Channel> = HashMap::new();
    for a in &brand.activities {
        match &a.kind {
            ActivityKind::OrderCancelled { order_id } => {
                cancelled.insert(order_id, ());
            }
            ActivityKind::Refund { order_id, amount } => {
                *refunded.entry(order_id).or_default() += *amount
            }
            ActivityKind::OrderPlaced {
                order_id, channel, ..
            } => {
                order_channels.insert(order_id.clone(), *channel);
            }
            _ => {}
        }
    }

    let mut summary = LoadSummary {
        profiles: brand.people.len(),
        ..LoadSummary::default()
    };
    for (chunk_no, chunk) in brand.activities.chunks(CHUNK).enumerate() {
        let mut ev = EventRows::default();
        let mut ord = OrderRows::default();
        let mut items = ItemRows::default();
        for (i, a) in chunk.iter().enumerate() {
            let n = (chunk_no * CHUNK + i) as u64;
            let event_id = derived_id(seed, 1, n);
            let person = &brand.people[a.person_id as usize];
            let profile = profile_id(seed, a.person_id);
            let channel = channel_of(person, &a.kind, &order_channels);
            let source_of = |order_id: &str| {
                order_source(
                    order_channels
                        .get(order_id)
                        .copied()
                        .unwrap_or(Channel::Web),
                )
                .to_owned()
            };
            let currency = &brand.config.currency;
            let (source, kind, properties, order) = match &a.kind {
                ActivityKind::SignedUp => (
                    "segment".to_owned(),
                    "identify",
                    serde_json::json!({}),
                    None,
                ),
                ActivityKind::OrderPlaced {
                    order_id,
                    channel,
                    store,
                    items: lines,
                    total,
                    currency,
                } => {
                    let source = order_source(*channel).to_owned();
                    let order_uuid = derived_id(seed, 2, n);
                    let refund = refunded.get(order_id.as_str()).copied().unwrap_or_default();
                    let status = if cancelled.contains_key(order_id.as_str()) {
                        "cancelled"
                    } else if refund >= *total {
                        "refunded"
                    } else if refund > Decimal::ZERO {
                        "partially_refunded"
                    } else {
                        "paid"
                    };
                    ord.ids.push(order_uuid);
                    ord.source.push(source.clone());
                    ord.external.push(order_id.clone());
                    ord.profile.push(profile);
                    ord.event.push(event_id);
                    ord.status.push(status.to_owned());
                    ord.channel.push(channel.as_str().to_owned());
                    ord.store.push(store.and_then(store_code));
                    ord.placed_at.push(a.at);
                    ord.currency.push(currency.clone());
                    ord.total.push(*total);
                    ord.refunded.push(refund);
                    for (line, item) in lines.iter().enumerate() {
                        items.order.push(order_uuid);
                        items.line.push(line as i32 + 1);
                        items.sku.push(item.sku.clone());
                        items.name.push(item.name.clone());
                        items.category.push(item.category.clone());
                        items.qty.push(item.qty);
                        items.price.push(item.price);
                    }
                    let order = domain::Order {
                        order_id: order_id.clone(),
                        total: *total,
                        currency: currency.clone(),
                        status: domain::OrderStatus::Paid,
                        store: store.and_then(store_code),
                        items: lines.clone(),
                    };
                    (
                        source,
                        "order_placed",
                        serde_json::json!({}),
                        serde_json::to_value(order).ok(),
                    )
                }
                ActivityKind::OrderCancelled { order_id } => {
                    let order = serde_json::json!({"order_id": order_id, "total": 0, "currency": currency, "status": "cancelled"});
                    (
                        source_of(order_id),
                        "order_cancelled",
                        serde_json::json!({}),
                        Some(order),
                    )
                }
                ActivityKind::Refund { order_id, amount } => {
                    let order = serde_json::json!({"order_id": order_id, "total": amount, "currency": currency, "status": "partially_refunded"});
                    (
                        source_of(order_id),
                        "refund_issued",
                        serde_json::json!({}),
                        Some(order),
                    )
                }
                ActivityKind::ProductViewed { sku } => (
                    "segment".into(),
                    "product_viewed",
                    serde_json::json!({"sku": sku}),
                    None,
                ),
                ActivityKind::AddedToCart { sku } => (
                    "segment".into(),
                    "added_to_cart",
                    serde_json::json!({"sku": sku}),
                    None,
                ),
                ActivityKind::CheckoutStarted => (
                    "segment".into(),
                    "checkout_started",
                    serde_json::json!({}),
                    None,
                ),
                ActivityKind::PageViewed { path } => (
                    "segment".into(),
                    "page_viewed",
                    serde_json::json!({"path": path}),
                    None,
                ),
                ActivityKind::WhatsAppInbound { body } => (
                    "twilio".into(),
                    "message_received",
                    serde_json::json!({"body": body}),
                    None,
                ),
                ActivityKind::QrScanned { code, store } => (
                    "segment".into(),
                    "qr_scanned",
                    serde_json::json!({"code": code, "store": store_code(*store)}),
                    None,
                ),
                ActivityKind::StoreVisit { store } => (
                    "pos".into(),
                    "store_visit",
                    serde_json::json!({"store": store_code(*store)}),
                    None,
                ),
            };
            ev.ids.push(event_id);
            ev.at.push(a.at);
            ev.source.push(source);
            ev.channel.push(channel.as_str().to_owned());
            ev.kind.push(kind.to_owned());
            ev.properties.push(properties);
            ev.order.push(order);
            ev.profile.push(profile);
        }
        sqlx::query(
            "INSERT INTO normalized_event (event_id, occurred_at, received_at, source, channel, type, properties, order_data, profile_id, resolved_at) \
             SELECT id, at, at, s, c, t, p, o, pr, at \
             FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::uuid[]) \
               AS x(id, at, s, c, t, p, o, pr)",
        )
        .bind(&ev.ids)
        .bind(&ev.at)
        .bind(&ev.source)
        .bind(&ev.channel)
        .bind(&ev.kind)
        .bind(&ev.properties)
        .bind(&ev.order)
        .bind(&ev.profile)
        .execute(db)
        .await?;
        sqlx::query(
            "INSERT INTO orders (id, source, external_order_id, profile_id, event_id, status, channel, store, placed_at, updated_at, currency, total, refunded_total) \
             SELECT id, s, x, pr, e, st, c, sto, at, at, cur, tot, ref \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::numeric[], $12::numeric[]) \
               AS y(id, s, x, pr, e, st, c, sto, at, cur, tot, ref)",
        )
        .bind(&ord.ids)
        .bind(&ord.source)
        .bind(&ord.external)
        .bind(&ord.profile)
        .bind(&ord.event)
        .bind(&ord.status)
        .bind(&ord.channel)
        .bind(&ord.store)
        .bind(&ord.placed_at)
        .bind(&ord.currency)
        .bind(&ord.total)
        .bind(&ord.refunded)
        .execute(db)
        .await?;
        sqlx::query(
            "INSERT INTO order_items (order_id, line_no, sku, name, category, qty, price) \
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::numeric[])",
        )
        .bind(&items.order)
        .bind(&items.line)
        .bind(&items.sku)
        .bind(&items.name)
        .bind(&items.category)
        .bind(&items.qty)
        .bind(&items.price)
        .execute(db)
        .await?;
        summary.events += ev.ids.len();
        summary.orders += ord.ids.len();
    }
    Ok(summary)
}
