//! What the normalizer writes to Postgres for a batch of mapped events, in one
//! transaction: orders (with their lines and refunds), products, and the normalised
//! events themselves.
//!
//! Every write is idempotent, because a stream entry may be delivered twice:
//! - `normalized_event` is keyed by the raw event id (`ON CONFLICT DO NOTHING`);
//! - an order report is applied only if its source version (last-modified time) is not
//!   older than the stored one, so repeated and out-of-order deliveries converge on the
//!   latest state; its lines are replaced with it;
//! - refunds are keyed by the source's refund id, and `refunded_total` is recomputed as
//!   their sum, so a refund seen in its own webhook and in the updated order counts once;
//! - products are upserted by SKU, the most recently seen name and price winning.
//!
//! Rows are locked in a fixed order (orders by key, products by SKU) so concurrent
//! normalizer replicas cannot deadlock. `profile_id` columns are left for the identity
//! merger.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{EventType, NormalizedEvent, OrderStatus, Source};
use ingestion::normalize::{Normalized, OrderWrite, Product};
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One mapped event ready to write.
pub struct Mapped {
    /// The raw event id.
    pub event_id: Uuid,
    /// Its source.
    pub source: Source,
    /// When it happened (products' last-seen time).
    pub occurred_at: DateTime<Utc>,
    /// The mapping result.
    pub normalized: Normalized,
}

/// Writes a batch in one transaction and returns the events to publish (with order
/// statuses as stored, for refund events whose webhook does not say).
pub async fn write_batch(db: &PgPool, batch: &mut [Mapped]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;

    // Orders in key order.
    let mut order_idx: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].normalized.order.is_some())
        .collect();
    order_idx.sort_by(|&a, &b| {
        let ka = (
            batch[a].source.as_str(),
            &batch[a]
                .normalized
                .order
                .as_ref()
                .unwrap()
                .external_order_id,
        );
        let kb = (
            batch[b].source.as_str(),
            &batch[b]
                .normalized
                .order
                .as_ref()
                .unwrap()
                .external_order_id,
        );
        ka.cmp(&kb).then(a.cmp(&b))
    });
    for i in order_idx {
        let m = &mut batch[i];
        let write = m.normalized.order.as_ref().expect("filtered on orders");
        let stored = write_order(&mut tx, m.source, m.event_id, write).await?;
        // A refund webhook does not say what the order's status became; the stored
        // order does.
        if let (Some(status), Some(ev)) = (stored, m.normalized.event.as_mut())
            && ev.event_type == EventType::RefundIssued
            && let Some(order) = ev.order.as_mut()
        {
            order.status = status;
        }
    }

    upsert_products(&mut tx, batch).await?;
    insert_events(
        &mut tx,
        batch.iter().filter_map(|m| m.normalized.event.as_ref()),
    )
    .await?;
    tx.commit().await
}

fn status_of(s: &str) -> Option<OrderStatus> {
    [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Cancelled,
        OrderStatus::Refunded,
        OrderStatus::PartiallyRefunded,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
}

/// Applies one order report; returns the order's stored status afterwards (None when
/// the order does not exist yet, e.g. a refund that arrived first).
async fn write_order(
    tx: &mut PgConnection,
    source: Source,
    event_id: Uuid,
    write: &OrderWrite,
) -> Result<Option<OrderStatus>, sqlx::Error> {
    let source = source.as_str();
    let key = write.external_order_id.as_str();
    if !write.refunds.is_empty() {
        let ids: Vec<&str> = write.refunds.iter().map(|r| r.refund_id.as_str()).collect();
        let amounts: Vec<Decimal> = write.refunds.iter().map(|r| r.amount.round_dp(2)).collect();
        sqlx::query(
            "INSERT INTO order_refunds (source, external_order_id, refund_id, amount, event_id) \
             SELECT $1, $2, r.id, r.amount, $5 FROM UNNEST($3::text[], $4::numeric[]) AS r(id, amount) \
             ON CONFLICT DO NOTHING",
        )
        .bind(source)
        .bind(key)
        .bind(&ids)
        .bind(&amounts)
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(state) = &write.state {
        let applied: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO orders (id, source, external_order_id, event_id, status, channel, store, \
                                 placed_at, updated_at, currency, total, refunded_total, source_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), $9, $10, 0, $11) \
             ON CONFLICT (source, external_order_id) DO UPDATE SET \
                 event_id = EXCLUDED.event_id, status = EXCLUDED.status, channel = EXCLUDED.channel, \
                 store = EXCLUDED.store, placed_at = EXCLUDED.placed_at, updated_at = now(), \
                 currency = EXCLUDED.currency, total = EXCLUDED.total, \
                 source_version = EXCLUDED.source_version \
             WHERE orders.source_version IS NULL OR orders.source_version <= EXCLUDED.source_version \
             RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(source)
        .bind(key)
        .bind(event_id)
        .bind(state.status.as_str())
        .bind(state.channel.as_str())
        .bind(state.store.as_deref())
        .bind(state.placed_at)
        .bind(&state.currency)
        .bind(state.total.round_dp(2))
        .bind(state.version)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(order_id) = applied {
            sqlx::query("DELETE FROM order_items WHERE order_id = $1")
                .bind(order_id)
                .execute(&mut *tx)
                .await?;
            if !state.items.is_empty() {
                let line_no: Vec<i32> = (1..=state.items.len() as i32).collect();
                let skus: Vec<&str> = state.items.iter().map(|i| i.sku.as_str()).collect();
                let names: Vec<&str> = state.items.iter().map(|i| i.name.as_str()).collect();
                let categories: Vec<Option<&str>> =
                    state.items.iter().map(|i| i.category.as_deref()).collect();
                let qty: Vec<i32> = state.items.iter().map(|i| i.qty).collect();
                let prices: Vec<Decimal> =
                    state.items.iter().map(|i| i.price.round_dp(2)).collect();
                sqlx::query(
                    "INSERT INTO order_items (order_id, line_no, sku, name, category, qty, price) \
                     SELECT $1, * FROM UNNEST($2::int4[], $3::text[], $4::text[], $5::text[], \
                                              $6::int4[], $7::numeric[])",
                )
                .bind(order_id)
                .bind(&line_no)
                .bind(&skus)
                .bind(&names)
                .bind(&categories)
                .bind(&qty)
                .bind(&prices)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    if write.deleted {
        // Deleted at the source: cancelled for good, whatever reports come later.
        sqlx::query(
            "UPDATE orders SET status = 'cancelled', source_version = 'infinity', event_id = $3, \
                 updated_at = now() \
             WHERE source = $1 AND external_order_id = $2",
        )
        .bind(source)
        .bind(key)
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
    }
    // Refunded total and the status it implies, from every refund known for the order.
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE orders o SET \
             refunded_total = r.total, \
             status = CASE \
                 WHEN o.status = 'cancelled' THEN o.status \
                 WHEN r.total > 0 AND r.total >= o.total THEN 'refunded' \
                 WHEN r.total > 0 THEN 'partially_refunded' \
                 ELSE o.status END \
         FROM (SELECT COALESCE(sum(amount), 0) AS total FROM order_refunds \
               WHERE source = $1 AND external_order_id = $2) r \
         WHERE o.source = $1 AND o.external_order_id = $2 \
         RETURNING o.status",
    )
    .bind(source)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(status.as_deref().and_then(status_of))
}

async fn upsert_products(tx: &mut PgConnection, batch: &[Mapped]) -> Result<(), sqlx::Error> {
    // One row per SKU, the latest sighting winning; BTreeMap keeps SKU order.
    let mut latest: BTreeMap<&str, (&Product, DateTime<Utc>)> = BTreeMap::new();
    for m in batch {
        for p in &m.normalized.products {
            let entry = latest.entry(p.sku.as_str()).or_insert((p, m.occurred_at));
            if m.occurred_at >= entry.1 {
                *entry = (p, m.occurred_at);
            }
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let skus: Vec<&str> = latest.keys().copied().collect();
    let names: Vec<&str> = latest.values().map(|(p, _)| p.name.as_str()).collect();
    let categories: Vec<Option<&str>> = latest
        .values()
        .map(|(p, _)| p.category.as_deref())
        .collect();
    let prices: Vec<Option<Decimal>> = latest
        .values()
        .map(|(p, _)| p.price.map(|d| d.round_dp(2)))
        .collect();
    let currencies: Vec<Option<&str>> = latest
        .values()
        .map(|(p, _)| p.currency.as_deref())
        .collect();
    let seen: Vec<DateTime<Utc>> = latest.values().map(|(_, t)| *t).collect();
    sqlx::query(
        "INSERT INTO products (sku, name, category, price, currency, first_seen_at, last_seen_at) \
         SELECT p.sku, p.name, p.category, p.price, p.currency, p.seen, p.seen \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[], $6::timestamptz[]) \
              AS p(sku, name, category, price, currency, seen) \
         ON CONFLICT (sku) DO UPDATE SET \
             name = CASE WHEN EXCLUDED.last_seen_at >= products.last_seen_at THEN EXCLUDED.name ELSE products.name END, \
             category = COALESCE(CASE WHEN EXCLUDED.last_seen_at >= products.last_seen_at THEN EXCLUDED.category END, products.category), \
             price = COALESCE(CASE WHEN EXCLUDED.last_seen_at >= products.last_seen_at THEN EXCLUDED.price END, products.price), \
             currency = COALESCE(CASE WHEN EXCLUDED.last_seen_at >= products.last_seen_at THEN EXCLUDED.currency END, products.currency), \
             first_seen_at = LEAST(products.first_seen_at, EXCLUDED.first_seen_at), \
             last_seen_at = GREATEST(products.last_seen_at, EXCLUDED.last_seen_at)",
    )
    .bind(&skus)
    .bind(&names)
    .bind(&categories)
    .bind(&prices)
    .bind(&currencies)
    .bind(&seen)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_events<'a>(
    tx: &mut PgConnection,
    events: impl Iterator<Item = &'a NormalizedEvent>,
) -> Result<(), sqlx::Error> {
    let mut events: Vec<&NormalizedEvent> = events.collect();
    if events.is_empty() {
        return Ok(());
    }
    events.sort_by_key(|e| e.event_id);
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let received: Vec<DateTime<Utc>> = events.iter().map(|e| e.received_at).collect();
    let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
    let integrations: Vec<Option<Uuid>> = events.iter().map(|e| e.integration_id).collect();
    let channels: Vec<&str> = events.iter().map(|e| e.channel.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let names: Vec<Option<&str>> = events.iter().map(|e| e.name.as_deref()).collect();
    let identifiers: Vec<Json<&Vec<domain::Identifier>>> =
        events.iter().map(|e| Json(&e.identifiers)).collect();
    let traits: Vec<Json<&serde_json::Map<String, serde_json::Value>>> =
        events.iter().map(|e| Json(&e.traits)).collect();
    let properties: Vec<Json<&serde_json::Map<String, serde_json::Value>>> =
        events.iter().map(|e| Json(&e.properties)).collect();
    let orders: Vec<Option<Json<&domain::Order>>> =
        events.iter().map(|e| e.order.as_ref().map(Json)).collect();
    sqlx::query(
        "INSERT INTO normalized_event (event_id, occurred_at, received_at, source, integration_id, \
                                       channel, type, name, identifiers, traits, properties, order_data) \
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::uuid[], \
                              $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::jsonb[], \
                              $11::jsonb[], $12::jsonb[]) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&occurred)
    .bind(&received)
    .bind(&sources)
    .bind(&integrations)
    .bind(&channels)
    .bind(&types)
    .bind(&names)
    .bind(&identifiers)
    .bind(&traits)
    .bind(&properties)
    .bind(&orders)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
