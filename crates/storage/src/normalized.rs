//! The one writer of normalised events and what they change: `normalized_event`,
//! `orders` with `order_items` and `order_refunds`, and `products`. The normalizer
//! writes every batch's orders and products through it
//! ([`write_batch_leaving_events`]) and the identity merger the event rows, already
//! attached to their profiles ([`insert_attached`]); every seed of normalised events
//! (`identity::seed` behind `ctl identity eval`, the benchmarks and the tests) writes
//! both at once ([`write_batch`], rows unattached), so the tables hold the same rows
//! whichever path wrote them.
//!
//! Every write is idempotent, because a stream entry may be delivered twice:
//! - `normalized_event` is keyed by the raw event id (`ON CONFLICT DO NOTHING`);
//! - an order report is applied only if its source version (last-modified time) is not
//!   older than the stored one, so repeated and out-of-order deliveries converge on the
//!   latest state; its lines are replaced with it;
//! - refunds are keyed by the source's refund id, and `refunded_total` is recomputed as
//!   their sum, so a refund seen in its own webhook and in the updated order counts once
//!   (a refund arriving before its order is kept and counted when the order arrives);
//! - products are upserted by SKU, the most recently seen name and price winning; a
//!   sighting that changes nothing (a redelivery, an older sighting) writes nothing.
//!
//! Set-based: a batch costs a handful of statements whatever its size. Writes to one
//! order are applied in batch order, in rounds (the n-th write of every order in round
//! n), each round one statement per step. Every order of a batch, existing or not, is
//! locked first (a transaction-scoped advisory lock per order, taken in ascending key
//! order) and products are written in SKU order, so concurrent writers (the
//! normalizer's consumers and replicas) are serialised per order and cannot deadlock on
//! each other: a refund written beside its order's first report is counted whichever
//! commits first. `profile_id` columns are left for the identity merger.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use domain::{
    EventType, NormalizedEvent, OrderState, OrderStatus, OrderWrite, Product, Refund, Source,
};
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// What one normalised event writes: its own row, its order report and its products.
#[derive(Debug, Clone, PartialEq)]
pub struct EventWrite {
    /// The raw event id.
    pub event_id: Uuid,
    /// Its source (with the source's order id, the key of `orders`).
    pub source: Source,
    /// When it happened (products' last-seen time).
    pub occurred_at: DateTime<Utc>,
    /// The normalised event; `None` for catalogue-only updates.
    pub event: Option<NormalizedEvent>,
    /// What it changes in `orders`, `order_items` and `order_refunds`.
    pub order: Option<OrderWrite>,
    /// Products to upsert.
    pub products: Vec<Product>,
}

impl EventWrite {
    /// What a normalised event writes when the event is all there is (seeds have no
    /// source payload): an `order_placed` event's order as its full state at the
    /// event's time, a `refund_issued` event's order total as a refund keyed by the
    /// event id, and an `order_cancelled` event as a final cancellation (like a deletion
    /// at the source: no version of the order is known, and a seed's cancellation is
    /// its last word). The lines of a placed order are its products.
    pub fn of_event(event: NormalizedEvent) -> Self {
        let mut products = Vec::new();
        let order = event.order.as_ref().and_then(|o| {
            let mut write = OrderWrite {
                external_order_id: o.order_id.clone(),
                state: None,
                refunds: Vec::new(),
                deleted: false,
            };
            match event.event_type {
                EventType::OrderPlaced => {
                    products = Product::of_items(&o.items, Some(&o.currency));
                    write.state = Some(OrderState {
                        status: o.status,
                        channel: event.channel,
                        store: o.store.clone(),
                        placed_at: event.occurred_at,
                        currency: o.currency.clone(),
                        total: o.total,
                        items: o.items.clone(),
                        version: event.occurred_at,
                    });
                }
                EventType::RefundIssued => write.refunds.push(Refund {
                    refund_id: event.event_id.to_string(),
                    amount: o.total.abs(),
                }),
                EventType::OrderCancelled => write.deleted = true,
                _ => return None,
            }
            Some(write)
        });
        Self {
            event_id: event.event_id,
            source: event.source,
            occurred_at: event.occurred_at,
            order,
            products,
            event: Some(event),
        }
    }
}

/// Writes a batch in one transaction; see [`write()`].
pub async fn write_batch(db: &PgPool, batch: &mut [EventWrite]) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    let new = write(&mut tx, batch).await?;
    tx.commit().await?;
    Ok(new)
}

/// Writes what a batch changes in `orders`, `order_items`, `order_refunds` and
/// `products`, in one transaction, but not the events' own rows: the normalizer's
/// path. The identity merger stores each `normalized_event` row from the published
/// event, already attached to its profile ([`insert_attached`]), so the wide row is
/// written once instead of inserted here and rewritten by the merger (an update that
/// can never be HOT: `profile_id` is indexed). Until the merger has stored it, an event
/// lives in `customer_raw_event` and on the stream (`ctl republish` re-drives raw
/// events that have no attached row).
///
/// `BEGIN` and `SET LOCAL plan_cache_mode = force_custom_plan` (every statement planned
/// for its values) go in one simple-protocol message: one round trip fewer per batch.
/// A batch with neither orders nor products (identifies, page views) opens no
/// transaction at all.
pub async fn write_batch_leaving_events(
    db: &PgPool,
    batch: &mut [EventWrite],
) -> Result<(), sqlx::Error> {
    if batch
        .iter()
        .all(|w| w.order.is_none() && w.products.is_empty())
    {
        return Ok(());
    }
    let mut tx = db.begin_with(BEGIN_PLANNED_PER_USE).await?;
    write_orders_and_products(&mut tx, batch).await?;
    tx.commit().await
}

/// `BEGIN`, then [`PLAN_PER_USE`], as one message (constants: nothing is interpolated).
const BEGIN_PLANNED_PER_USE: &str = "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan";

/// Plans each statement of the transaction for its values, including the foreign-key
/// checks of `order_items` (one per line). Those checks are planned once per connection
/// and kept: planned while `orders` was still small (a fresh database, a new brand), the
/// plan is a sequential scan, repeated for every line while the table grows (39 ms per
/// 50 lines at 6,000 orders in the pipeline benchmark). Planning per use costs
/// microseconds. `SET LOCAL`: the caller's transaction only.
const PLAN_PER_USE: &str = "SET LOCAL plan_cache_mode = force_custom_plan";

async fn plan_per_use(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(PLAN_PER_USE).execute(conn).await?;
    Ok(())
}

/// Writes a batch on `conn` (the caller owns the transaction) and returns how many of
/// its events were new. A refund event's order status becomes the stored order's
/// (a refund webhook does not say what the order's status became).
pub async fn write(
    conn: &mut PgConnection,
    batch: &mut [EventWrite],
) -> Result<usize, sqlx::Error> {
    plan_per_use(conn).await?;
    write_orders_and_products(conn, batch).await?;
    let events: Vec<&NormalizedEvent> = batch.iter().filter_map(|w| w.event.as_ref()).collect();
    insert_unattached(conn, &events).await
}

/// Writes a batch's orders and products (everything but the events' rows), in a
/// transaction that plans per use ([`plan_per_use`]).
async fn write_orders_and_products(
    conn: &mut PgConnection,
    batch: &mut [EventWrite],
) -> Result<(), sqlx::Error> {
    write_orders(conn, batch).await?;
    let sightings: Vec<(&Product, DateTime<Utc>)> = batch
        .iter()
        .flat_map(|w| w.products.iter().map(|p| (p, w.occurred_at)))
        .collect();
    upsert_products(conn, &sightings).await
}

/// Attributes each written event, and the order whose full state it wrote, to the
/// profile at the same position of `profiles`, as the identity merger would. Only for
/// seeds of data that is already resolved (the ML fixtures, API and storage tests); in
/// the fleet the merger does this.
pub async fn attribute_as_resolved(
    db: &PgPool,
    writes: &[EventWrite],
    profiles: &[Uuid],
) -> Result<(), sqlx::Error> {
    let (events, event_profiles): (Vec<Uuid>, Vec<Uuid>) = writes
        .iter()
        .zip(profiles)
        .filter(|(w, _)| w.event.is_some())
        .map(|(w, p)| (w.event_id, *p))
        .unzip();
    sqlx::query(
        "UPDATE normalized_event e SET profile_id = u.p, resolved_at = e.occurred_at \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS u(id, p) WHERE e.event_id = u.id",
    )
    .bind(&events)
    .bind(&event_profiles)
    .execute(db)
    .await?;
    let mut sources = Vec::new();
    let mut keys = Vec::new();
    let mut order_profiles = Vec::new();
    for (w, p) in writes.iter().zip(profiles) {
        if let Some(o) = w.order.as_ref().filter(|o| o.state.is_some()) {
            sources.push(w.source.as_str());
            keys.push(o.external_order_id.as_str());
            order_profiles.push(*p);
        }
    }
    sqlx::query(
        "UPDATE orders o SET profile_id = u.p \
         FROM UNNEST($1::text[], $2::text[], $3::uuid[]) AS u(s, k, p) \
         WHERE o.source = u.s AND o.external_order_id = u.k",
    )
    .bind(&sources)
    .bind(&keys)
    .bind(&order_profiles)
    .execute(db)
    .await?;
    Ok(())
}

/// The key of an order in `orders`.
type OrderKey<'a> = (&'static str, &'a str);

fn order_key(w: &EventWrite) -> Option<OrderKey<'_>> {
    w.order
        .as_ref()
        .map(|o| (w.source.as_str(), o.external_order_id.as_str()))
}

async fn write_orders(
    conn: &mut PgConnection,
    batch: &mut [EventWrite],
) -> Result<(), sqlx::Error> {
    // Rounds: the n-th write of each order, in batch order, goes in round n.
    let mut seen: HashMap<OrderKey<'_>, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, w) in batch.iter().enumerate() {
        if let Some(key) = order_key(w) {
            let n = seen.entry(key).or_insert(0);
            if rounds.len() <= *n {
                rounds.push(Vec::new());
            }
            rounds[*n].push(i);
            *n += 1;
        }
    }
    if rounds.is_empty() {
        return Ok(());
    }
    // Every order of the batch is locked before anything touches it, whether it exists
    // or not: a refund (or a deletion) written while its order's first report is being
    // inserted by another transaction would otherwise see no order, and the report's
    // recompute would not see the refund yet, so the refund would never be counted.
    lock_orders(conn, seen.keys()).await?;

    let mut stored: Vec<(usize, OrderStatus)> = Vec::new();
    for mut round in rounds {
        round.sort_by_key(|&i| order_key(&batch[i]));
        stored.extend(write_round(conn, batch, &round).await?);
    }
    for (i, status) in stored {
        let w = &mut batch[i];
        if let Some(ev) = w.event.as_mut()
            && ev.event_type == EventType::RefundIssued
            && let Some(order) = ev.order.as_mut()
        {
            order.status = status;
        }
    }
    Ok(())
}

/// Takes a transaction-scoped advisory lock on each order of `keys` (existing or not),
/// in ascending lock-key order, so two writers sharing orders are serialised on them and
/// can never wait on each other in a cycle. Keys are 64-bit hashes of
/// `order:<source>:<order id>`, the key space of the identity merger's identifier and
/// profile locks, whose hashes name their kind differently.
async fn lock_orders<'a>(
    conn: &mut PgConnection,
    keys: impl Iterator<Item = &'a OrderKey<'a>>,
) -> Result<(), sqlx::Error> {
    let locks: Vec<i64> = keys
        .map(|(source, id)| order_lock(source, id))
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect();
    // A function scan over the array returns its elements in order, and the aggregate
    // consumes them in that order: the locks are taken ascending.
    sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k")
        .bind(&locks)
        .execute(conn)
        .await?;
    Ok(())
}

/// The advisory lock key of an order.
fn order_lock(source: &str, external_order_id: &str) -> i64 {
    crate::advisory_key(&[
        b"order:",
        source.as_bytes(),
        b":",
        external_order_id.as_bytes(),
    ])
}

/// Applies one write to each of a set of distinct orders (`round`, in key order) and
/// returns, per write that needed its order's refunds recomputed (refunds, deletions,
/// refund events, reports of orders with refunds), the order's stored status afterwards
/// (none for an order that does not exist yet, e.g. a refund that arrived first).
async fn write_round(
    conn: &mut PgConnection,
    batch: &[EventWrite],
    round: &[usize],
) -> Result<Vec<(usize, OrderStatus)>, sqlx::Error> {
    let write = |i: usize| batch[i].order.as_ref().expect("rounds hold order writes");

    // The writes whose order needs its refunded total and status recomputed: refunds,
    // deletions, refund events (whose status is the stored order's), and (added below)
    // applied reports of orders with refunds. A report of an order without refunds (most
    // orders) already wrote what the recompute would find, so it skips that statement.
    let mut recompute: BTreeSet<usize> = round
        .iter()
        .copied()
        .filter(|&i| {
            !write(i).refunds.is_empty()
                || write(i).deleted
                || batch[i]
                    .event
                    .as_ref()
                    .is_some_and(|e| e.event_type == EventType::RefundIssued)
        })
        .collect();

    // Refunds, keyed by the source's refund id.
    let mut r_source = Vec::new();
    let mut r_order = Vec::new();
    let mut r_id = Vec::new();
    let mut r_amount = Vec::new();
    let mut r_event = Vec::new();
    for &i in round {
        for r in &write(i).refunds {
            r_source.push(batch[i].source.as_str());
            r_order.push(write(i).external_order_id.as_str());
            r_id.push(r.refund_id.as_str());
            r_amount.push(r.amount.round_dp(2));
            r_event.push(batch[i].event_id);
        }
    }
    if !r_id.is_empty() {
        sqlx::query(
            "INSERT INTO order_refunds (source, external_order_id, refund_id, amount, event_id) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::uuid[]) \
             ORDER BY 1, 2, 3 \
             ON CONFLICT DO NOTHING",
        )
        .bind(&r_source)
        .bind(&r_order)
        .bind(&r_id)
        .bind(&r_amount)
        .bind(&r_event)
        .execute(&mut *conn)
        .await?;
    }

    // Full states, applied only when not older than the stored version.
    let with_state: Vec<(usize, &OrderState)> = round
        .iter()
        .filter_map(|&i| write(i).state.as_ref().map(|s| (i, s)))
        .collect();
    if !with_state.is_empty() {
        let ids: Vec<Uuid> = with_state.iter().map(|_| Uuid::now_v7()).collect();
        let sources: Vec<&str> = with_state
            .iter()
            .map(|(i, _)| batch[*i].source.as_str())
            .collect();
        let keys: Vec<&str> = with_state
            .iter()
            .map(|(i, _)| write(*i).external_order_id.as_str())
            .collect();
        let events: Vec<Uuid> = with_state.iter().map(|(i, _)| batch[*i].event_id).collect();
        let statuses: Vec<&str> = with_state.iter().map(|(_, s)| s.status.as_str()).collect();
        let channels: Vec<&str> = with_state.iter().map(|(_, s)| s.channel.as_str()).collect();
        let stores: Vec<Option<&str>> =
            with_state.iter().map(|(_, s)| s.store.as_deref()).collect();
        let placed: Vec<DateTime<Utc>> = with_state.iter().map(|(_, s)| s.placed_at).collect();
        let currencies: Vec<&str> = with_state
            .iter()
            .map(|(_, s)| s.currency.as_str())
            .collect();
        let totals: Vec<Decimal> = with_state
            .iter()
            .map(|(_, s)| s.total.round_dp(2))
            .collect();
        let versions: Vec<DateTime<Utc>> = with_state.iter().map(|(_, s)| s.version).collect();
        // Then whether the row is new (`xmax = 0`), so it has no lines yet, and whether
        // any refund is known for it (one that arrived first, or an earlier one of an
        // existing order), so its refunded total and status need the recompute below.
        let applied: Vec<(Uuid, String, String, bool, bool)> = sqlx::query_as(
            "INSERT INTO orders (id, source, external_order_id, event_id, status, channel, store, \
                                 placed_at, updated_at, currency, total, refunded_total, source_version) \
             SELECT u.id, u.s, u.k, u.e, u.st, u.c, u.sto, u.p, now(), u.cur, u.t, 0, u.v \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[], \
                         $7::text[], $8::timestamptz[], $9::text[], $10::numeric[], $11::timestamptz[]) \
                  AS u(id, s, k, e, st, c, sto, p, cur, t, v) \
             ORDER BY u.s, u.k \
             ON CONFLICT (source, external_order_id) DO UPDATE SET \
                 event_id = EXCLUDED.event_id, status = EXCLUDED.status, channel = EXCLUDED.channel, \
                 store = EXCLUDED.store, placed_at = EXCLUDED.placed_at, updated_at = now(), \
                 currency = EXCLUDED.currency, total = EXCLUDED.total, \
                 source_version = EXCLUDED.source_version \
             WHERE orders.source_version IS NULL OR orders.source_version <= EXCLUDED.source_version \
             RETURNING id, source, external_order_id, xmax = 0, \
                 EXISTS (SELECT 1 FROM order_refunds f \
                         WHERE f.source = orders.source \
                           AND f.external_order_id = orders.external_order_id)",
        )
        .bind(&ids)
        .bind(&sources)
        .bind(&keys)
        .bind(&events)
        .bind(&statuses)
        .bind(&channels)
        .bind(&stores)
        .bind(&placed)
        .bind(&currencies)
        .bind(&totals)
        .bind(&versions)
        .fetch_all(&mut *conn)
        .await?;
        let state_of: HashMap<(&str, &str), usize> = with_state
            .iter()
            .map(|(i, _)| {
                (
                    (
                        batch[*i].source.as_str(),
                        write(*i).external_order_id.as_str(),
                    ),
                    *i,
                )
            })
            .collect();
        recompute.extend(
            applied
                .iter()
                .filter(|(_, _, _, _, refunded)| *refunded)
                .filter_map(|(_, s, k, _, _)| state_of.get(&(s.as_str(), k.as_str())).copied()),
        );
        if !applied.is_empty() {
            // An applied report's lines replace the stored ones.
            let order_of: HashMap<(&str, &str), Uuid> = applied
                .iter()
                .map(|(id, s, k, _, _)| ((s.as_str(), k.as_str()), *id))
                .collect();
            let replaced: Vec<Uuid> = applied
                .iter()
                .filter(|(_, _, _, new, _)| !new)
                .map(|(id, _, _, _, _)| *id)
                .collect();
            if !replaced.is_empty() {
                sqlx::query("DELETE FROM order_items WHERE order_id = ANY($1)")
                    .bind(&replaced)
                    .execute(&mut *conn)
                    .await?;
            }
            let mut l_order = Vec::new();
            let mut l_no = Vec::new();
            let mut l_sku = Vec::new();
            let mut l_name = Vec::new();
            let mut l_category = Vec::new();
            let mut l_qty = Vec::new();
            let mut l_price = Vec::new();
            for (i, state) in &with_state {
                let key = (
                    batch[*i].source.as_str(),
                    write(*i).external_order_id.as_str(),
                );
                let Some(&order_id) = order_of.get(&key) else {
                    continue;
                };
                for (n, item) in state.items.iter().enumerate() {
                    l_order.push(order_id);
                    l_no.push(n as i32 + 1);
                    l_sku.push(item.sku.as_str());
                    l_name.push(item.name.as_str());
                    l_category.push(item.category.as_deref());
                    l_qty.push(item.qty);
                    l_price.push(item.price.round_dp(2));
                }
            }
            if !l_order.is_empty() {
                sqlx::query(
                    "INSERT INTO order_items (order_id, line_no, sku, name, category, qty, price) \
                     SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::text[], \
                                          $5::text[], $6::int4[], $7::numeric[])",
                )
                .bind(&l_order)
                .bind(&l_no)
                .bind(&l_sku)
                .bind(&l_name)
                .bind(&l_category)
                .bind(&l_qty)
                .bind(&l_price)
                .execute(&mut *conn)
                .await?;
            }
        }
    }

    // Deleted at the source: cancelled for good, whatever reports come later.
    let deleted: Vec<usize> = round
        .iter()
        .copied()
        .filter(|&i| write(i).deleted)
        .collect();
    if !deleted.is_empty() {
        let sources: Vec<&str> = deleted.iter().map(|&i| batch[i].source.as_str()).collect();
        let keys: Vec<&str> = deleted
            .iter()
            .map(|&i| write(i).external_order_id.as_str())
            .collect();
        let events: Vec<Uuid> = deleted.iter().map(|&i| batch[i].event_id).collect();
        sqlx::query(
            "UPDATE orders o SET status = 'cancelled', source_version = 'infinity', \
                 event_id = u.e, updated_at = now() \
             FROM UNNEST($1::text[], $2::text[], $3::uuid[]) AS u(s, k, e) \
             WHERE o.source = u.s AND o.external_order_id = u.k",
        )
        .bind(&sources)
        .bind(&keys)
        .bind(&events)
        .execute(&mut *conn)
        .await?;
    }

    // Refunded total and the status it implies, from every refund known for each order.
    if recompute.is_empty() {
        return Ok(Vec::new());
    }
    let sources: Vec<&str> = recompute
        .iter()
        .map(|&i| batch[i].source.as_str())
        .collect();
    let keys: Vec<&str> = recompute
        .iter()
        .map(|&i| write(i).external_order_id.as_str())
        .collect();
    // Only rows whose total or status changes are written: an order without refunds
    // (most of them) keeps the row its report just wrote, with no second version.
    let statuses: Vec<(String, String, String)> = sqlx::query_as(
        "WITH r AS ( \
             SELECT o.id, o.source, o.external_order_id, o.status, o.total AS order_total, \
                    o.refunded_total AS was_total, LEAST(COALESCE(sum(f.amount), 0), $3) AS total \
             FROM (SELECT DISTINCT s, k FROM UNNEST($1::text[], $2::text[]) AS u(s, k)) u \
             JOIN orders o ON o.source = u.s AND o.external_order_id = u.k \
             LEFT JOIN order_refunds f ON f.source = u.s AND f.external_order_id = u.k \
             GROUP BY o.id), \
         w AS ( \
             SELECT r.*, CASE \
                 WHEN r.status = 'cancelled' THEN r.status \
                 WHEN r.total > 0 AND r.total >= r.order_total THEN 'refunded' \
                 WHEN r.total > 0 THEN 'partially_refunded' \
                 ELSE r.status END AS new_status \
             FROM r), \
         changed AS ( \
             UPDATE orders o SET refunded_total = w.total, status = w.new_status \
             FROM w WHERE o.id = w.id \
               AND (w.total IS DISTINCT FROM w.was_total OR w.new_status IS DISTINCT FROM w.status)) \
         SELECT source, external_order_id, new_status FROM w",
    )
    .bind(&sources)
    .bind(&keys)
    // Many refunds may add up past what the column holds: saturate (domain::MAX_TOTAL).
    .bind(domain::MAX_TOTAL)
    .fetch_all(&mut *conn)
    .await?;
    let status_of: HashMap<(&str, &str), OrderStatus> = statuses
        .iter()
        .filter_map(|(s, k, st)| Some(((s.as_str(), k.as_str()), status_named(st)?)))
        .collect();
    Ok(recompute
        .iter()
        .filter_map(|&i| {
            let key = (
                batch[i].source.as_str(),
                write(i).external_order_id.as_str(),
            );
            status_of.get(&key).map(|st| (i, *st))
        })
        .collect())
}

fn status_named(s: &str) -> Option<OrderStatus> {
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

/// Upserts a catalogue of products seen at `seen_at` (a source's product feed, a
/// fixture's catalogue), with the same rule as the products events mention: the most
/// recently seen name and price win.
pub async fn write_products(
    db: &PgPool,
    products: &[Product],
    seen_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let sightings: Vec<(&Product, DateTime<Utc>)> = products.iter().map(|p| (p, seen_at)).collect();
    upsert_products(&mut conn, &sightings).await
}

async fn upsert_products(
    conn: &mut PgConnection,
    sightings: &[(&Product, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    // One row per SKU however often the batch saw it: the latest sighting's data, the
    // earliest and latest times. BTreeMap keeps SKU order.
    let mut by_sku: BTreeMap<&str, (&Product, DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for &(p, at) in sightings {
        let entry = by_sku.entry(p.sku.as_str()).or_insert((p, at, at));
        if at >= entry.2 {
            entry.0 = p;
            entry.2 = at;
        }
        entry.1 = entry.1.min(at);
    }
    if by_sku.is_empty() {
        return Ok(());
    }
    let skus: Vec<&str> = by_sku.keys().copied().collect();
    let names: Vec<&str> = by_sku.values().map(|(p, _, _)| p.name.as_str()).collect();
    let categories: Vec<Option<&str>> = by_sku
        .values()
        .map(|(p, _, _)| p.category.as_deref())
        .collect();
    let prices: Vec<Option<Decimal>> = by_sku
        .values()
        .map(|(p, _, _)| p.price.map(|d| d.round_dp(2)))
        .collect();
    let currencies: Vec<Option<&str>> = by_sku
        .values()
        .map(|(p, _, _)| p.currency.as_deref())
        .collect();
    let first: Vec<DateTime<Utc>> = by_sku.values().map(|(_, t, _)| *t).collect();
    let last: Vec<DateTime<Utc>> = by_sku.values().map(|(_, _, t)| *t).collect();
    // A sighting that changes nothing (a redelivery, or an older one saying what the
    // row already says) writes no new row version.
    sqlx::query(
        "INSERT INTO products (sku, name, category, price, currency, first_seen_at, last_seen_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[], \
                              $6::timestamptz[], $7::timestamptz[]) \
         ON CONFLICT (sku) DO UPDATE SET \
             name = CASE WHEN EXCLUDED.last_seen_at >= products.last_seen_at THEN EXCLUDED.name ELSE products.name END, \
             category = COALESCE(CASE WHEN EXCLUDED.last_seen_at >= products.last_seen_at THEN EXCLUDED.category END, products.category), \
             price = COALESCE(CASE WHEN EXCLUDED.last_seen_at >= products.last_seen_at THEN EXCLUDED.price END, products.price), \
             currency = COALESCE(CASE WHEN EXCLUDED.last_seen_at >= products.last_seen_at THEN EXCLUDED.currency END, products.currency), \
             first_seen_at = LEAST(products.first_seen_at, EXCLUDED.first_seen_at), \
             last_seen_at = GREATEST(products.last_seen_at, EXCLUDED.last_seen_at) \
         WHERE EXCLUDED.first_seen_at < products.first_seen_at \
            OR EXCLUDED.last_seen_at > products.last_seen_at \
            OR (EXCLUDED.last_seen_at = products.last_seen_at \
                AND (EXCLUDED.name IS DISTINCT FROM products.name \
                     OR COALESCE(EXCLUDED.category, products.category) IS DISTINCT FROM products.category \
                     OR COALESCE(EXCLUDED.price, products.price) IS DISTINCT FROM products.price \
                     OR COALESCE(EXCLUDED.currency, products.currency) IS DISTINCT FROM products.currency))",
    )
    .bind(&skus)
    .bind(&names)
    .bind(&categories)
    .bind(&prices)
    .bind(&currencies)
    .bind(&first)
    .bind(&last)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores events that no writer stored yet (see [`write_batch_leaving_events`]), each
/// attached to the profile given with it and resolved now, in the caller's
/// transaction. Returns how many rows it inserted: an event whose row exists already
/// (another merger replica stored it first) is left as it is and not counted, so a
/// caller that gets fewer than it gave knows it raced and must roll back.
pub async fn insert_attached(
    conn: &mut PgConnection,
    events: &[(&NormalizedEvent, Uuid)],
) -> Result<usize, sqlx::Error> {
    insert_rows(conn, events.iter().map(|(e, p)| (*e, Some(*p))).collect()).await
}

/// Stores events that no writer stored yet without a profile, in the caller's
/// transaction (seeds through [`write()`], and the merger's paths that attach or drop
/// an event by its stored row: region replays and erased identifiers). Returns how
/// many rows it inserted.
pub async fn insert_unattached(
    conn: &mut PgConnection,
    events: &[&NormalizedEvent],
) -> Result<usize, sqlx::Error> {
    insert_rows(conn, events.iter().map(|e| (*e, None)).collect()).await
}

/// The one `INSERT` of `normalized_event`: rows in event-id order (so concurrent
/// writers take the key locks in one order), a profile making the row resolved now.
async fn insert_rows(
    conn: &mut PgConnection,
    mut events: Vec<(&NormalizedEvent, Option<Uuid>)>,
) -> Result<usize, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    events.sort_by_key(|(e, _)| e.event_id);
    let profiles: Vec<Option<Uuid>> = events.iter().map(|(_, p)| *p).collect();
    let events: Vec<&NormalizedEvent> = events.into_iter().map(|(e, _)| e).collect();
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
    let new: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO normalized_event (event_id, occurred_at, received_at, source, integration_id, \
                                       channel, type, name, identifiers, traits, properties, order_data, \
                                       profile_id, resolved_at) \
         SELECT u.*, CASE WHEN u.p IS NOT NULL THEN now() END \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::uuid[], \
                     $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::jsonb[], \
                     $11::jsonb[], $12::jsonb[], $13::uuid[]) \
              AS u(e, o, r, s, i, c, t, n, ids, tr, pr, od, p) \
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
    .bind(&profiles)
    .fetch_all(&mut *conn)
    .await?;
    Ok(new.len())
}
