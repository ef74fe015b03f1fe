//! Writes a simulated brand straight into the shared tables, through their one writers
//! — `customer_profile` through the merger's (`storage::profiles`), `products`,
//! `normalized_event`, `orders`, `order_items` and `order_refunds` through the
//! normalizer's (`storage::normalized`) — already attributed to profiles, as if ingest,
//! the normalizer and the identity merger had processed it.
//!
//! For ML tests and benchmarks that need a populated database without running the
//! pipeline (the demo goes through the real pipeline instead). Profile and event ids
//! are derived from the seed, so loading twice stores nothing twice, and
//! events, orders and channels match [`crate::synthetic`] exactly.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::profile::ProfileState;
use domain::{Channel, EventType, NormalizedEvent, Order, OrderStatus, Product};
use rust_decimal::Decimal;
use scenario::{ActivityKind, Brand};
use serde_json::json;
use sqlx::PgPool;
use storage::normalized::{self, EventWrite};
use storage::profiles::{self, ProfileWrite};
use uuid::Uuid;

use crate::synthetic::{channel_of, order_source, profile_id};

/// Rows written per statement.
const CHUNK: usize = 5_000;

/// What [`load_brand`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadSummary {
    /// Profiles written (one per simulated person).
    pub profiles: usize,
    /// Orders placed (cancellations and refunds not counted).
    pub orders: usize,
    /// Normalised events (orders included).
    pub events: usize,
}

fn derived_id(seed: u64, kind: u64, n: u64) -> Uuid {
    Uuid::from_u64_pair(seed.rotate_left(13) ^ (kind << 56), n)
}

/// Loads `brand` into the database behind `db`.
pub async fn load_brand(db: &PgPool, brand: &Brand) -> Result<LoadSummary, sqlx::Error> {
    let seed = brand.config.seed;
    let store_code = |s: u32| brand.stores.get(s as usize).map(|s| s.code.clone());

    // The catalogue, as first seen when the brand's history starts.
    let catalogue: Vec<Product> = brand
        .catalogue
        .iter()
        .map(|p| Product {
            sku: p.sku.clone(),
            name: p.name.clone(),
            category: Some(p.category.clone()),
            price: Some(p.price),
            currency: Some(brand.config.currency.clone()),
        })
        .collect();
    let start = brand.activities.first().map_or_else(Utc::now, |a| a.at);
    normalized::write_products(db, &catalogue, start).await?;

    // Profiles: first and last seen from their activities.
    let mut seen: HashMap<u32, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
    for a in &brand.activities {
        let e = seen.entry(a.person_id).or_insert((a.at, a.at));
        e.0 = e.0.min(a.at);
        e.1 = e.1.max(a.at);
    }
    let traits: Vec<serde_json::Map<String, serde_json::Value>> = brand
        .people
        .iter()
        .map(|p| {
            let t = json!({"first_name": p.first_name, "last_name": p.last_name, "city": p.city});
            match t {
                serde_json::Value::Object(map) => map,
                _ => unreachable!("a JSON object literal"),
            }
        })
        .collect();
    let state = ProfileState::default();
    let rows: Vec<ProfileWrite<'_>> = brand
        .people
        .iter()
        .zip(&traits)
        .map(|(p, traits)| {
            let seen = seen.get(&p.person_id);
            ProfileWrite {
                id: profile_id(seed, p.person_id),
                first_event: None,
                last_event: None,
                name_keys: Vec::new(),
                display_name: Some(format!("{} {}", p.first_name, p.last_name)),
                identifiers: Vec::new(),
                traits,
                first_seen_at: seen.map(|s| s.0),
                last_seen_at: seen.map(|s| s.1),
                channels: Vec::new(),
                category_affinity: Default::default(),
                state: &state,
                created_at: seen.map(|s| s.0),
            }
        })
        .collect();
    profiles::upsert(&mut *db.acquire().await?, &rows).await?;

    // The channel each order was placed through (its cancellation and refunds come
    // from the same source).
    let mut order_channels: HashMap<String, Channel> = HashMap::new();
    for a in &brand.activities {
        if let ActivityKind::OrderPlaced {
            order_id, channel, ..
        } = &a.kind
        {
            order_channels.insert(order_id.clone(), *channel);
        }
    }

    let mut summary = LoadSummary {
        profiles: brand.people.len(),
        ..LoadSummary::default()
    };
    // Activities are in time order, so an order's cancellation and refunds follow it.
    for (chunk_no, chunk) in brand.activities.chunks(CHUNK).enumerate() {
        let mut writes = Vec::with_capacity(chunk.len());
        let mut profiles = Vec::with_capacity(chunk.len());
        for (i, a) in chunk.iter().enumerate() {
            let n = (chunk_no * CHUNK + i) as u64;
            let person = &brand.people[a.person_id as usize];
            let channel = channel_of(person, &a.kind, &order_channels);
            let source_of = |order_id: &str| {
                order_source(
                    order_channels
                        .get(order_id)
                        .copied()
                        .unwrap_or(Channel::Web),
                )
            };
            let currency = &brand.config.currency;
            let order_of = |order_id: &str, total: Decimal, status: OrderStatus| Order {
                order_id: order_id.to_owned(),
                total,
                currency: currency.clone(),
                status,
                store: None,
                items: Vec::new(),
            };
            let (source, event_type, properties, order) = match &a.kind {
                ActivityKind::SignedUp => ("segment", EventType::Identify, json!({}), None),
                ActivityKind::OrderPlaced {
                    channel,
                    store,
                    items,
                    total,
                    currency,
                    order_id,
                } => (
                    order_source(*channel),
                    EventType::OrderPlaced,
                    json!({}),
                    Some(Order {
                        order_id: order_id.clone(),
                        total: *total,
                        currency: currency.clone(),
                        status: OrderStatus::Paid,
                        store: store.and_then(store_code),
                        items: items.clone(),
                    }),
                ),
                ActivityKind::OrderCancelled { order_id } => (
                    source_of(order_id),
                    EventType::OrderCancelled,
                    json!({}),
                    Some(order_of(order_id, Decimal::ZERO, OrderStatus::Cancelled)),
                ),
                ActivityKind::Refund { order_id, amount } => (
                    source_of(order_id),
                    EventType::RefundIssued,
                    json!({}),
                    Some(order_of(order_id, *amount, OrderStatus::PartiallyRefunded)),
                ),
                ActivityKind::ProductViewed { sku } => (
                    "segment",
                    EventType::ProductViewed,
                    json!({"sku": sku}),
                    None,
                ),
                ActivityKind::AddedToCart { sku } => {
                    ("segment", EventType::AddedToCart, json!({"sku": sku}), None)
                }
                ActivityKind::CheckoutStarted => {
                    ("segment", EventType::CheckoutStarted, json!({}), None)
                }
                ActivityKind::PageViewed { path } => (
                    "segment",
                    EventType::PageViewed,
                    json!({"path": path}),
                    None,
                ),
                ActivityKind::WhatsAppInbound { body } => (
                    "twilio",
                    EventType::MessageReceived,
                    json!({"body": body}),
                    None,
                ),
                ActivityKind::QrScanned { code, store } => (
                    "segment",
                    EventType::QrScanned,
                    json!({"code": code, "store": store_code(*store)}),
                    None,
                ),
                ActivityKind::StoreVisit { store } => (
                    "pos",
                    EventType::StoreVisit,
                    json!({"store": store_code(*store)}),
                    None,
                ),
            };
            if event_type == EventType::OrderPlaced {
                summary.orders += 1;
            }
            let event = NormalizedEvent {
                event_id: derived_id(seed, 1, n),
                occurred_at: a.at,
                received_at: a.at,
                source: source
                    .parse()
                    .expect("the loader's sources are registered names"),
                integration_id: None,
                channel,
                event_type,
                name: None,
                identifiers: Vec::new(),
                traits: serde_json::Map::new(),
                properties: match properties {
                    serde_json::Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                },
                order,
            };
            profiles.push(profile_id(seed, a.person_id));
            let mut write = EventWrite::of_event(event);
            // The catalogue is loaded above; order lines do not overwrite it.
            write.products.clear();
            writes.push(write);
        }
        summary.events += normalized::write_batch(db, &mut writes).await?;
        normalized::attribute_as_resolved(db, &writes, &profiles).await?;
    }
    Ok(summary)
}
