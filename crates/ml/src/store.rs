//! Postgres and Redis I/O of the ML subsystem, apart from the registry: reading profile
//! histories and recommender activity (order lines and product views), writing features (the `features` table and the Redis feature store
//! `{prefix}features:{profile_id}`), writing predictions, and invalidating the
//! Customer 360 cache of re-scored profiles.
//!
//! Histories come from `orders` + `order_items` (the normalizer's de-duplicated orders)
//! and `normalized_event` (everything else; `order_placed` rows are skipped because the
//! order is already counted, outbound messages because they are the brand's doing),
//! attributed to profiles through `profile_id`, which the identity merger sets. Only
//! live profiles are read: merged-away ids are resolved to their survivor first.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use domain::{Channel, ProfileChangeKind};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use uuid::Uuid;

use crate::MlError;
use crate::features::{FEATURE_SET_VERSION, Features};
use crate::history::{EventFact, EventKind, OrderFact, ProfileHistory, order_key};
use crate::recs::{Activity, Basket, Catalogue, View};
use crate::scoring::Prediction;

/// Live profile ids after `after` (keyset paging, ascending), at most `limit`.
pub async fn live_profiles(
    db: &PgPool,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>, MlError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM customer_profile WHERE merged_into IS NULL AND ($1::uuid IS NULL OR id > $1) \
         ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Maps each id to the live profile it is (or was merged into); unknown ids are
/// dropped. The result is de-duplicated and sorted.
pub async fn resolve_live(db: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, MlError> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "WITH RECURSIVE chain(start, id, merged_into, depth) AS ( \
             SELECT p.id, p.id, p.merged_into, 0 FROM customer_profile p WHERE p.id = ANY($1) \
           UNION ALL \
             SELECT c.start, p.id, p.merged_into, c.depth + 1 \
             FROM chain c JOIN customer_profile p ON p.id = c.merged_into WHERE c.depth < 32) \
         SELECT DISTINCT id FROM chain WHERE merged_into IS NULL ORDER BY id",
    )
    .bind(ids)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

type OrderRow = (
    Uuid,
    String,
    String,
    DateTime<Utc>,
    String,
    f64,
    Vec<String>,
);
type EventRow = (
    Uuid,
    DateTime<Utc>,
    String,
    String,
    String,
    Option<String>,
    Option<f64>,
);

fn channel(name: &str) -> Channel {
    Channel::from_str(name).unwrap_or(Channel::Api)
}

/// The histories of `ids` (one per id, in the same order; empty for a profile with no
/// facts), reading facts before `until` only when given.
pub async fn load_histories(
    db: &PgPool,
    ids: &[Uuid],
    until: Option<DateTime<Utc>>,
) -> Result<Vec<ProfileHistory>, MlError> {
    let orders: Vec<OrderRow> = sqlx::query_as(
        "SELECT o.profile_id, o.source, o.external_order_id, o.placed_at, o.channel, o.total::float8, \
                COALESCE(array_agg(DISTINCT i.category) FILTER (WHERE i.category IS NOT NULL), '{}') \
         FROM orders o LEFT JOIN order_items i ON i.order_id = o.id \
         WHERE o.profile_id = ANY($1) AND ($2::timestamptz IS NULL OR o.placed_at < $2) \
         GROUP BY o.id",
    )
    .bind(ids)
    .bind(until)
    .fetch_all(db)
    .await?;
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT profile_id, occurred_at, channel, type, source, order_data->>'order_id', \
                (order_data->>'total')::float8 \
         FROM normalized_event \
         WHERE profile_id = ANY($1) AND ($2::timestamptz IS NULL OR occurred_at < $2) \
           AND type NOT IN ('order_placed', 'message_sent', 'message_status')",
    )
    .bind(ids)
    .bind(until)
    .fetch_all(db)
    .await?;

    let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut out: Vec<ProfileHistory> = ids
        .iter()
        .map(|id| ProfileHistory {
            profile_id: *id,
            ..ProfileHistory::default()
        })
        .collect();
    for (profile, source, external, placed_at, ch, total, mut categories) in orders {
        let Some(&i) = index.get(&profile) else {
            continue;
        };
        categories.sort();
        out[i].orders.push(OrderFact {
            order_key: order_key(&source, &external),
            placed_at,
            channel: channel(&ch),
            total,
            categories,
        });
    }
    for (profile, at, ch, kind, source, order_id, amount) in events {
        let Some(&i) = index.get(&profile) else {
            continue;
        };
        let key = || order_key(&source, order_id.as_deref().unwrap_or_default());
        let kind = match kind.as_str() {
            "product_viewed" => EventKind::ProductViewed,
            "added_to_cart" => EventKind::AddedToCart,
            "checkout_started" => EventKind::CheckoutStarted,
            "page_viewed" => EventKind::PageViewed,
            "message_received" => EventKind::MessageReceived,
            "qr_scanned" => EventKind::QrScanned,
            "store_visit" => EventKind::StoreVisit,
            "order_cancelled" if order_id.is_some() => {
                EventKind::OrderCancelled { order_key: key() }
            }
            "refund_issued" if order_id.is_some() => EventKind::RefundIssued {
                order_key: key(),
                amount: amount.unwrap_or(0.0),
            },
            _ => EventKind::Other,
        };
        out[i].events.push(EventFact {
            at,
            channel: channel(&ch),
            kind,
        });
    }
    Ok(out)
}

/// The Redis key of a profile's feature vector.
pub fn feature_key(prefix: &str, profile_id: Uuid) -> String {
    format!("{prefix}features:{profile_id}")
}

/// When a re-score replaces a stored prediction (see [`save_scores`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rewrite<'a> {
    /// Relative change of a score below which the stored prediction stays
    /// (`ML_PREDICTION_TOLERANCE`; 0: any change of a score is written).
    pub tolerance: f64,
    /// Profiles whose predictions and features are written whether or not they changed
    /// (a batch whose cache updates failed after its commit, scored again).
    pub force: &'a [Uuid],
}

impl Rewrite<'_> {
    /// Write every prediction and feature vector (bulk re-scoring after training).
    pub const ALL: Rewrite<'static> = Rewrite {
        tolerance: -1.0,
        force: &[],
    };
}

/// Saves a batch's scores in one transaction and returns the profiles whose
/// predictions were written (ascending, distinct):
///
/// - a prediction is upserted unless the stored one of its profile and task has the
///   same model, the same label, a score within `rewrite.tolerance` (relative) of the
///   new one and — for recommendations, which have neither score nor label — the same
///   ranked products; so a re-score that changes nothing material writes nothing;
/// - each profile with a written prediction gets a `predicted` change queued for
///   `profiles.changes`;
/// - its feature vector is written to the `features` table with it (the table holds
///   the inputs of the stored predictions), as is the vector of a profile that has
///   none of this feature set yet;
///
/// after the commit the written vectors go to the Redis feature store
/// (`{prefix}features:{profile_id}`).
pub async fn save_scores(
    db: &PgPool,
    redis: &mut ConnectionManager,
    prefix: &str,
    rows: &[(Uuid, Features)],
    predictions: &[Prediction],
    as_of: DateTime<Utc>,
    rewrite: Rewrite<'_>,
) -> Result<Vec<Uuid>, MlError> {
    let mut tx = db.begin().await?;
    let mut changed: Vec<Uuid> = if predictions.is_empty() {
        Vec::new()
    } else {
        let ids: Vec<Uuid> = predictions.iter().map(|p| p.profile_id).collect();
        let tasks: Vec<&str> = predictions.iter().map(|p| p.task.as_str()).collect();
        let models: Vec<Uuid> = predictions.iter().map(|p| p.model_version_id).collect();
        let scores: Vec<Option<f64>> = predictions.iter().map(|p| p.score).collect();
        let labels: Vec<Option<String>> = predictions.iter().map(|p| p.label.clone()).collect();
        let details: Vec<serde_json::Value> =
            predictions.iter().map(|p| p.details.clone()).collect();
        sqlx::query_scalar(
            "INSERT INTO predictions AS p (profile_id, task, model_version_id, scored_at, score, label, details) \
             SELECT id, t, m, now(), s, l, d \
             FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::float8[], $5::text[], $6::jsonb[]) AS x(id, t, m, s, l, d) \
             ON CONFLICT (profile_id, task) DO UPDATE SET model_version_id = EXCLUDED.model_version_id, \
               scored_at = EXCLUDED.scored_at, score = EXCLUDED.score, label = EXCLUDED.label, details = EXCLUDED.details \
             WHERE $7::float8 < 0 OR p.profile_id = ANY($8) \
               OR p.model_version_id IS DISTINCT FROM EXCLUDED.model_version_id \
               OR p.label IS DISTINCT FROM EXCLUDED.label \
               OR (p.score IS NULL) <> (EXCLUDED.score IS NULL) \
               OR abs(p.score - EXCLUDED.score) > $7 * greatest(abs(p.score), abs(EXCLUDED.score)) \
               OR (EXCLUDED.score IS NULL AND EXCLUDED.label IS NULL \
                   AND jsonb_path_query_array(p.details, '$.recommendations[*].sku') \
                       IS DISTINCT FROM jsonb_path_query_array(EXCLUDED.details, '$.recommendations[*].sku')) \
             RETURNING profile_id",
        )
        .bind(&ids)
        .bind(&tasks)
        .bind(&models)
        .bind(&scores)
        .bind(&labels)
        .bind(&details)
        .bind(rewrite.tolerance)
        .bind(rewrite.force)
        .fetch_all(&mut *tx)
        .await?
    };
    changed.sort_unstable();
    changed.dedup();
    let written: Vec<(Uuid, serde_json::Value)> = if rows.is_empty() {
        Vec::new()
    } else {
        let ids: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
        let values: Vec<serde_json::Value> = rows.iter().map(|(_, f)| f.to_json()).collect();
        sqlx::query_as(
            "INSERT INTO features AS f (profile_id, feature_set_version, as_of, values, computed_at) \
             SELECT id, $3, $4, v, now() FROM UNNEST($1::uuid[], $2::jsonb[]) AS x(id, v) \
             ON CONFLICT (profile_id, feature_set_version) DO UPDATE \
               SET as_of = EXCLUDED.as_of, values = EXCLUDED.values, computed_at = EXCLUDED.computed_at \
             WHERE $6::float8 < 0 OR f.profile_id = ANY($5) \
             RETURNING profile_id, values",
        )
        .bind(&ids)
        .bind(&values)
        .bind(FEATURE_SET_VERSION)
        .bind(as_of)
        .bind(&changed)
        .bind(rewrite.tolerance)
        .fetch_all(&mut *tx)
        .await?
    };
    let changes: Vec<(Uuid, ProfileChangeKind)> = changed
        .iter()
        .map(|id| (*id, ProfileChangeKind::Predicted))
        .collect();
    storage::profile_changes::queue(&mut tx, &changes).await?;
    tx.commit().await?;
    if !written.is_empty() {
        let mut pipe = redis::pipe();
        for (id, v) in &written {
            let doc = serde_json::json!({"feature_set_version": FEATURE_SET_VERSION, "as_of": as_of, "values": v});
            pipe.set(feature_key(prefix, *id), doc.to_string()).ignore();
        }
        pipe.query_async::<()>(redis).await?;
    }
    Ok(changed)
}

/// Drops the cached Customer 360 documents of `ids`, so the next read rebuilds them
/// with the new predictions (an erased profile's tombstone stays).
pub async fn invalidate_customer360(
    redis: &mut ConnectionManager,
    prefix: &str,
    ids: &[Uuid],
) -> Result<(), MlError> {
    storage::customer360::remove_documents(redis, prefix, ids).await?;
    Ok(())
}

/// Which products recommender activity may name.
pub enum Products<'a> {
    /// Any: new ones are added with the `products` table's name and category (training).
    Add(&'a mut Catalogue),
    /// Only these: others are skipped (scoring with a trained model's catalogue).
    Known(&'a Catalogue),
}

/// Order lines and product views (`product_viewed`, `added_to_cart` with a `sku` or
/// `product_id` property) before `until`, as recommender activity per live profile
/// (ascending id; only profiles with any). `ids` limits it to those profiles.
pub async fn load_activities(
    db: &PgPool,
    ids: Option<&[Uuid]>,
    until: DateTime<Utc>,
    mut products: Products<'_>,
) -> Result<Vec<(Uuid, Activity)>, MlError> {
    type Line = (Uuid, Uuid, DateTime<Utc>, String, String, Option<String>);
    let lines: Vec<Line> = sqlx::query_as(
        "SELECT o.profile_id, o.id, o.placed_at, i.sku, COALESCE(p.name, i.name), \
                COALESCE(p.category, i.category) \
         FROM orders o JOIN order_items i ON i.order_id = o.id \
         JOIN customer_profile c ON c.id = o.profile_id AND c.merged_into IS NULL \
         LEFT JOIN products p ON p.sku = i.sku \
         WHERE o.placed_at < $2 AND ($1::uuid[] IS NULL OR o.profile_id = ANY($1)) \
         ORDER BY o.profile_id, o.placed_at, o.id, i.line_no",
    )
    .bind(ids)
    .bind(until)
    .fetch_all(db)
    .await?;
    type ViewRow = (Uuid, DateTime<Utc>, String, Option<String>, Option<String>);
    let views: Vec<ViewRow> = sqlx::query_as(
        "SELECT e.profile_id, e.occurred_at, v.sku, p.name, p.category \
         FROM normalized_event e \
         CROSS JOIN LATERAL (SELECT COALESCE(e.properties->>'sku', e.properties->>'product_id') AS sku) v \
         JOIN customer_profile c ON c.id = e.profile_id AND c.merged_into IS NULL \
         LEFT JOIN products p ON p.sku = v.sku \
         WHERE e.type IN ('product_viewed', 'added_to_cart') AND v.sku IS NOT NULL AND v.sku <> '' \
           AND e.occurred_at < $2 AND ($1::uuid[] IS NULL OR e.profile_id = ANY($1)) \
         ORDER BY e.profile_id, e.occurred_at",
    )
    .bind(ids)
    .bind(until)
    .fetch_all(db)
    .await?;
    let mut item = |sku: &str, name: Option<&str>, category: Option<&str>| match &mut products {
        Products::Add(catalogue) => Some(catalogue.intern(sku, name, category)),
        Products::Known(catalogue) => catalogue.get(sku),
    };
    let mut out: std::collections::BTreeMap<Uuid, Activity> = std::collections::BTreeMap::new();
    let mut last_order: Option<Uuid> = None;
    for (profile, order, placed_at, sku, name, category) in lines {
        let Some(i) = item(&sku, Some(&name), category.as_deref()) else {
            continue;
        };
        let activity = out.entry(profile).or_default();
        if last_order != Some(order) || activity.baskets.is_empty() {
            activity.baskets.push(Basket {
                at: placed_at,
                items: Vec::new(),
            });
            last_order = Some(order);
        }
        let basket = activity.baskets.last_mut().expect("pushed above");
        if !basket.items.contains(&i) {
            basket.items.push(i);
        }
    }
    for (profile, at, sku, name, category) in views {
        if let Some(i) = item(&sku, name.as_deref(), category.as_deref()) {
            out.entry(profile)
                .or_default()
                .views
                .push(View { at, item: i });
        }
    }
    Ok(out.into_iter().collect())
}

/// Stores a recommendation model's similar products (`product_similarity`), replacing
/// any rows of that version.
pub async fn save_similarity(
    db: &PgPool,
    version_id: Uuid,
    table: &[(String, Vec<(String, f32)>)],
) -> Result<(), MlError> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM product_similarity WHERE model_version_id = $1")
        .bind(version_id)
        .execute(&mut *tx)
        .await?;
    for chunk in table.chunks(1_000) {
        let (mut skus, mut ranks, mut similar, mut sims) = (vec![], vec![], vec![], vec![]);
        for (sku, list) in chunk {
            for (rank, (other, sim)) in list.iter().enumerate() {
                skus.push(sku.as_str());
                ranks.push(rank as i32 + 1);
                similar.push(other.as_str());
                sims.push(f64::from(*sim));
            }
        }
        sqlx::query(
            "INSERT INTO product_similarity (model_version_id, sku, rank, similar_sku, similarity) \
             SELECT $1, s, r, o, v FROM UNNEST($2::text[], $3::int4[], $4::text[], $5::float8[]) AS x(s, r, o, v)",
        )
        .bind(version_id)
        .bind(&skus)
        .bind(&ranks)
        .bind(&similar)
        .bind(&sims)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
