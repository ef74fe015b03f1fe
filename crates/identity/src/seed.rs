//! Stores normalised events (and the orders they carry) the way the normalizer does, so
//! `ctl identity eval`, the benchmarks and the tests can drive the real resolver without
//! the ingest pipeline in front of it.
//!
//! Rows match the normalizer's: one `normalized_event` per event (`ON CONFLICT DO
//! NOTHING`), one `orders` row per `(source, order_id)` with its lines, cancellations
//! setting the status, refunds adding to `refunded_total`. Order effects are applied
//! only for events inserted by this call, so storing an event twice changes nothing.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use domain::{EventType, NormalizedEvent, OrderStatus};
use rust_decimal::Decimal;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

/// Rows written per statement.
const CHUNK: usize = 2_000;

/// Stores `events` and their orders. Returns how many events were new.
pub async fn store_events(db: &PgPool, events: &[NormalizedEvent]) -> Result<usize, sqlx::Error> {
    let mut inserted: HashSet<Uuid> = HashSet::new();
    for chunk in events.chunks(CHUNK) {
        let ids: Vec<Uuid> = chunk.iter().map(|e| e.event_id).collect();
        let occurred: Vec<DateTime<Utc>> = chunk.iter().map(|e| e.occurred_at).collect();
        let received: Vec<DateTime<Utc>> = chunk.iter().map(|e| e.received_at).collect();
        let sources: Vec<&str> = chunk.iter().map(|e| e.source.as_str()).collect();
        let integrations: Vec<Option<Uuid>> = chunk.iter().map(|e| e.integration_id).collect();
        let channels: Vec<&str> = chunk.iter().map(|e| e.channel.as_str()).collect();
        let types: Vec<&str> = chunk.iter().map(|e| e.event_type.as_str()).collect();
        let names: Vec<Option<&str>> = chunk.iter().map(|e| e.name.as_deref()).collect();
        let identifiers: Vec<Json<&Vec<domain::Identifier>>> =
            chunk.iter().map(|e| Json(&e.identifiers)).collect();
        let traits: Vec<Json<&serde_json::Map<String, serde_json::Value>>> =
            chunk.iter().map(|e| Json(&e.traits)).collect();
        let properties: Vec<Json<&serde_json::Map<String, serde_json::Value>>> =
            chunk.iter().map(|e| Json(&e.properties)).collect();
        let orders: Vec<Option<Json<&domain::Order>>> =
            chunk.iter().map(|e| e.order.as_ref().map(Json)).collect();
        let new: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO normalized_event (event_id, occurred_at, received_at, source, integration_id, \
                                           channel, type, name, identifiers, traits, properties, order_data) \
             SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::uuid[], \
                                  $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::jsonb[], \
                                  $11::jsonb[], $12::jsonb[]) \
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
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
        .fetch_all(db)
        .await?;
        inserted.extend(new);
    }
    let fresh: Vec<&NormalizedEvent> = events
        .iter()
        .filter(|e| inserted.contains(&e.event_id))
        .collect();
    store_orders(db, &fresh).await?;
    Ok(inserted.len())
}

async fn store_orders(db: &PgPool, events: &[&NormalizedEvent]) -> Result<(), sqlx::Error> {
    // Placements first (whatever the order within the call), then cancellations and
    // refunds, which update the placed rows.
    let placed: Vec<&NormalizedEvent> = events
        .iter()
        .copied()
        .filter(|e| e.event_type == EventType::OrderPlaced && e.order.is_some())
        .collect();
    for chunk in placed.chunks(CHUNK) {
        let mut ids = Vec::new();
        let mut sources = Vec::new();
        let mut external = Vec::new();
        let mut event_ids = Vec::new();
        let mut statuses = Vec::new();
        let mut channels = Vec::new();
        let mut stores = Vec::new();
        let mut placed_at = Vec::new();
        let mut currencies = Vec::new();
        let mut totals = Vec::new();
        let mut line_order = Vec::new();
        let mut line_no = Vec::new();
        let mut skus = Vec::new();
        let mut line_names = Vec::new();
        let mut categories = Vec::new();
        let mut qtys = Vec::new();
        let mut prices = Vec::new();
        for e in chunk {
            let o = e.order.as_ref().expect("filtered on orders");
            let id = Uuid::now_v7();
            ids.push(id);
            sources.push(e.source.as_str());
            external.push(o.order_id.as_str());
            event_ids.push(e.event_id);
            statuses.push(o.status.as_str());
            channels.push(e.channel.as_str());
            stores.push(o.store.as_deref());
            placed_at.push(e.occurred_at);
            currencies.push(o.currency.as_str());
            totals.push(o.total);
            for (n, item) in o.items.iter().enumerate() {
                line_order.push(id);
                line_no.push(n as i32 + 1);
                skus.push(item.sku.as_str());
                line_names.push(item.name.as_str());
                categories.push(item.category.as_deref());
                qtys.push(item.qty);
                prices.push(item.price);
            }
        }
        let created: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO orders (id, source, external_order_id, event_id, status, channel, store, placed_at, \
                                 currency, total) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[], \
                                  $7::text[], $8::timestamptz[], $9::text[], $10::numeric[]) \
             ON CONFLICT (source, external_order_id) DO NOTHING RETURNING id",
        )
        .bind(&ids)
        .bind(&sources)
        .bind(&external)
        .bind(&event_ids)
        .bind(&statuses)
        .bind(&channels)
        .bind(&stores)
        .bind(&placed_at)
        .bind(&currencies)
        .bind(&totals)
        .fetch_all(db)
        .await?;
        sqlx::query(
            "INSERT INTO order_items (order_id, line_no, sku, name, category, qty, price) \
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[], \
                                  $7::numeric[]) AS u(o, n, s, nm, c, q, p) \
             WHERE u.o = ANY($8) ON CONFLICT DO NOTHING",
        )
        .bind(&line_order)
        .bind(&line_no)
        .bind(&skus)
        .bind(&line_names)
        .bind(&categories)
        .bind(&qtys)
        .bind(&prices)
        .bind(&created)
        .execute(db)
        .await?;
    }

    let cancelled: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.event_type == EventType::OrderCancelled)
        .filter_map(|e| Some((e.source.as_str(), e.order.as_ref()?.order_id.as_str())))
        .collect();
    for chunk in cancelled.chunks(CHUNK) {
        let (sources, ids): (Vec<&str>, Vec<&str>) = chunk.iter().copied().unzip();
        sqlx::query(
            "UPDATE orders o SET status = 'cancelled', updated_at = now() \
             FROM unnest($1::text[], $2::text[]) AS u(s, i) WHERE o.source = u.s AND o.external_order_id = u.i",
        )
        .bind(&sources)
        .bind(&ids)
        .execute(db)
        .await?;
    }

    let mut refunds: BTreeMap<(&str, &str), Decimal> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.event_type == EventType::RefundIssued)
    {
        if let Some(o) = &e.order {
            *refunds
                .entry((e.source.as_str(), o.order_id.as_str()))
                .or_default() += o.total;
        }
    }
    let refunds: Vec<_> = refunds.into_iter().collect();
    for chunk in refunds.chunks(CHUNK) {
        let sources: Vec<&str> = chunk.iter().map(|((s, _), _)| *s).collect();
        let ids: Vec<&str> = chunk.iter().map(|((_, i), _)| *i).collect();
        let amounts: Vec<Decimal> = chunk.iter().map(|(_, a)| *a).collect();
        sqlx::query(
            "UPDATE orders o SET refunded_total = LEAST(o.total, o.refunded_total + u.a), updated_at = now(), \
                 status = CASE WHEN o.status = 'cancelled' THEN o.status \
                               WHEN o.refunded_total + u.a >= o.total THEN $4 ELSE $5 END \
             FROM unnest($1::text[], $2::text[], $3::numeric[]) AS u(s, i, a) \
             WHERE o.source = u.s AND o.external_order_id = u.i",
        )
        .bind(&sources)
        .bind(&ids)
        .bind(&amounts)
        .bind(OrderStatus::Refunded.as_str())
        .bind(OrderStatus::PartiallyRefunded.as_str())
        .execute(db)
        .await?;
    }
    Ok(())
}
