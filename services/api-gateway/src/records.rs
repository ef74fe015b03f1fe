//! Reads around a profile that the Customer 360 document does not carry: the family
//! of a profile (it and everything merged into it), every order of that family, and
//! the latest predictions with their model's algorithm. They serve the timeline, the
//! predictions endpoint and the GDPR export. The document itself is built and cached by
//! `storage::customer360`, the one builder shared with the identity merger.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::OrderItem;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// `id` and every profile merged into it, directly or through a chain.
pub async fn family(db: &PgPool, id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    let mut all = storage::customer360::merged_profiles(db, id).await?;
    all.insert(0, id);
    Ok(all)
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    source: String,
    external_order_id: String,
    status: String,
    channel: String,
    store: Option<String>,
    placed_at: DateTime<Utc>,
    currency: String,
    total: Decimal,
    refunded_total: Decimal,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    order_id: Uuid,
    sku: String,
    name: String,
    category: Option<String>,
    qty: i32,
    price: Decimal,
}

/// A prediction row with its model's algorithm.
#[derive(sqlx::FromRow)]
pub struct PredictionRow {
    /// Task.
    pub task: String,
    /// Score.
    pub score: Option<f64>,
    /// Label.
    pub label: Option<String>,
    /// Model version.
    pub model_version_id: Uuid,
    /// That model's algorithm.
    pub algorithm: String,
    /// Scored.
    pub scored_at: DateTime<Utc>,
    /// Details.
    pub details: sqlx::types::Json<serde_json::Value>,
}

/// The latest predictions of a profile, one per task.
pub async fn predictions(db: &PgPool, id: Uuid) -> sqlx::Result<Vec<PredictionRow>> {
    sqlx::query_as(
        "SELECT p.task, p.score, p.label, p.model_version_id, m.algorithm, p.scored_at, p.details \
         FROM predictions p JOIN model_version m ON m.id = p.model_version_id \
         WHERE p.profile_id = $1 ORDER BY p.task",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

/// Orders of a set of profiles, newest first, with their lines.
pub async fn orders(
    db: &PgPool,
    profiles: &[Uuid],
    limit: Option<i64>,
) -> sqlx::Result<Vec<(OrderRowView, Vec<OrderItem>)>> {
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, source, external_order_id, status, channel, store, placed_at, currency, \
                total, refunded_total \
         FROM orders WHERE profile_id = ANY($1) ORDER BY placed_at DESC, id DESC \
         LIMIT $2",
    )
    .bind(profiles)
    .bind(limit.unwrap_or(i64::MAX))
    .fetch_all(db)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let items: Vec<ItemRow> = sqlx::query_as(
        "SELECT order_id, sku, name, category, qty, price FROM order_items \
         WHERE order_id = ANY($1) ORDER BY order_id, line_no",
    )
    .bind(&ids)
    .fetch_all(db)
    .await?;
    let mut by_order: BTreeMap<Uuid, Vec<OrderItem>> = BTreeMap::new();
    for i in items {
        by_order.entry(i.order_id).or_default().push(OrderItem {
            sku: i.sku,
            name: i.name,
            category: i.category,
            qty: i.qty,
            price: i.price,
        });
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let items = by_order.remove(&r.id).unwrap_or_default();
            (
                OrderRowView {
                    source: r.source,
                    order_id: r.external_order_id,
                    status: r.status,
                    channel: r.channel,
                    store: r.store,
                    placed_at: r.placed_at,
                    currency: r.currency,
                    total: r.total,
                    refunded_total: r.refunded_total,
                },
                items,
            )
        })
        .collect())
}

/// An order as stored.
pub struct OrderRowView {
    /// Source system.
    pub source: String,
    /// The source's order id.
    pub order_id: String,
    /// Status.
    pub status: String,
    /// Channel.
    pub channel: String,
    /// Store.
    pub store: Option<String>,
    /// Placed.
    pub placed_at: DateTime<Utc>,
    /// Currency.
    pub currency: String,
    /// Total.
    pub total: Decimal,
    /// Refunded.
    pub refunded_total: Decimal,
}
