//! The Customer 360 document: built from Postgres, cached in Redis.
//!
//! One way to build it and one cache key, shared by everyone who needs it: the
//! identity merger refreshes a profile's document after every change, the api-gateway
//! reads through the cache (a miss builds from Postgres and refills), ml-inference
//! refreshes it after scoring. The cache key is `{STREAM_PREFIX}c360:{profile_id}` and
//! holds the JSON of [`domain::Customer360`] with a TTL, so a refresh that was ever
//! missed cannot keep a stale document forever. Redis holds no truth: losing it only
//! costs the rebuild on the next read.
//!
//! Erasure leaves a *tombstone* under the erased profile's key ([`Customer360Cache::tombstone`],
//! kept for `max(TTL, 7 days)`): every write of a document (a read's refill, a refresh)
//! and every removal goes through a Lua script that leaves a tombstone alone. So a read
//! that built the document just before the erase committed cannot put it back after
//! the erase, and a later refresh cannot clear the tombstone for it.
//!
//! Merged-away ids follow their `merged_into` chain to the live survivor: reading a
//! tombstone returns the survivor's document (and says so), and documents are cached
//! under live ids only.
//!
//! The document is assembled from what the merger maintains, never from a scan of
//! events: the profile row (order aggregates, channels, normalised category affinity,
//! and [`domain::profile::ProfileState`] in `state`), its identifier index rows, its
//! latest orders with their lines, its predictions, and its tombstones. Order
//! references (`customer_id` values in the `@order` namespace, which the merger uses to
//! tie an order's events together) are not listed as identifiers.
//!
//! The readers the document is built from ([`family`], [`identifiers`], [`orders`],
//! [`predictions`]) are public: the api-gateway's predictions and GDPR export endpoints
//! read the same rows through them, so each of those tables has one reader.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::api::ModelTask;
use domain::identifier::is_order_reference;
use domain::profile::{
    PredictionSummary, ProfileIdentifier, ProfileState, PurchaseSummary, Recommendation,
};
use domain::{Channel, Customer360, IdentifierKind, OrderItem, OrderStatus, Source};
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{Named, OrDefault};

/// Orders listed in the document, newest first (the timeline shows the rest).
pub const PURCHASES_SHOWN: i64 = 20;

/// Longest `merged_into` chain followed (merges make chains short; this only guards
/// against a corrupt cycle).
const MAX_CHAIN: i32 = 64;

/// Building or caching a document failed.
#[derive(Debug, thiserror::Error)]
pub enum Customer360Error {
    /// Postgres failed.
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed (only [`Customer360Cache::refresh`] and
    /// [`Customer360Cache::invalidate`] report it; reads fall back to Postgres).
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// The document could not be serialised.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// What an erased profile's key holds instead of a document.
const TOMBSTONE: &str = "erased";

/// Shortest time a tombstone is kept (longer when the document TTL is longer).
const TOMBSTONE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Sets `KEYS[1]` to `ARGV[1]` for `ARGV[2]` seconds unless it holds the tombstone
/// `ARGV[3]`. Returns 1 when written, 0 when refused.
const PUT_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";

/// Deletes `KEYS[1]` unless it holds the tombstone `ARGV[1]`.
const DROP_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
";

/// The cache key of a profile's document.
pub fn cache_key(prefix: &str, profile_id: Uuid) -> String {
    format!("{prefix}c360:{profile_id}")
}

/// A document as read through the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer360Read {
    /// The document of the live profile.
    pub doc: Customer360,
    /// The survivor, when the requested id was merged away.
    pub merged_into: Option<Uuid>,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// Reads and refreshes Customer 360 documents.
#[derive(Clone)]
pub struct Customer360Cache {
    db: PgPool,
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

impl Customer360Cache {
    /// A cache over `db` and `redis`, keys under `prefix` (the `STREAM_PREFIX`),
    /// documents kept for `ttl` (`CUSTOMER360_CACHE_TTL_SECS`).
    pub fn new(
        db: PgPool,
        redis: ConnectionManager,
        prefix: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            db,
            redis,
            prefix: prefix.into(),
            ttl: ttl.max(Duration::from_secs(1)),
        }
    }

    /// The document of `id` (or of the survivor it was merged into): from the cache,
    /// else built from Postgres and written back. `None` when no such profile exists.
    /// A Redis failure is logged and the read served from Postgres.
    /// Every read counts as a hit or a miss in `customer360_cache_reads_total{result}`.
    pub async fn load(&self, id: Uuid) -> Result<Option<Customer360Read>, Customer360Error> {
        let read = self.load_uncounted(id).await?;
        if let Some(r) = &read {
            let result = if r.cached { "hit" } else { "miss" };
            metrics::counter!("customer360_cache_reads_total", "result" => result).increment(1);
        }
        Ok(read)
    }

    async fn load_uncounted(&self, id: Uuid) -> Result<Option<Customer360Read>, Customer360Error> {
        if let Some(doc) = self.cached(id).await
            && doc.profile_id == id
        {
            return Ok(Some(Customer360Read {
                doc,
                merged_into: None,
                cached: true,
            }));
        }
        let Some(live) = resolve(&self.db, id).await? else {
            return Ok(None);
        };
        let merged_into = (live != id).then_some(live);
        if merged_into.is_some()
            && let Some(doc) = self.cached(live).await
        {
            return Ok(Some(Customer360Read {
                doc,
                merged_into,
                cached: true,
            }));
        }
        let Some(doc) = build(&self.db, live).await? else {
            return Ok(None);
        };
        if let Err(e) = self.store(&doc).await {
            // The read still succeeds from Postgres; the next read retries the fill.
            tracing::warn!(error = %e, profile_id = %live, "refilling the Customer 360 cache failed");
        }
        Ok(Some(Customer360Read {
            doc,
            merged_into,
            cached: false,
        }))
    }

    /// Rebuilds the document of `id` (following tombstones) from Postgres and writes
    /// it to the cache. Returns it, or `None` (and removes any cached copy of `id`)
    /// when the profile does not exist.
    pub async fn refresh(&self, id: Uuid) -> Result<Option<Customer360>, Customer360Error> {
        let Some(live) = resolve(&self.db, id).await? else {
            self.invalidate(&[id]).await?;
            return Ok(None);
        };
        let Some(doc) = build(&self.db, live).await? else {
            return Ok(None);
        };
        self.store(&doc).await?;
        if live != id {
            self.invalidate(&[id]).await?;
        }
        Ok(Some(doc))
    }

    /// Rebuilds and caches the documents of many profiles at once (a fixed number of
    /// queries and one Redis pipeline): live ids are refreshed, tombstones and unknown
    /// ids have their cached copies removed. Returns how many documents were written.
    pub async fn refresh_many(&self, ids: &[Uuid]) -> Result<usize, Customer360Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        let docs = build_many(&self.db, ids).await?;
        let live: std::collections::BTreeSet<Uuid> = docs.iter().map(|d| d.profile_id).collect();
        let gone: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !live.contains(id))
            .collect();
        let mut pipe = redis::pipe();
        for doc in &docs {
            put(&mut pipe, &self.prefix, doc, self.ttl)?;
            pipe.ignore();
        }
        for id in &gone {
            remove(&mut pipe, &self.prefix, *id);
        }
        let mut redis = self.redis.clone();
        pipe.query_async::<()>(&mut redis).await?;
        Ok(docs.len())
    }

    /// Removes the cached documents of `ids` (merged-away profiles); tombstones stay.
    pub async fn invalidate(&self, ids: &[Uuid]) -> Result<(), Customer360Error> {
        let mut redis = self.redis.clone();
        remove_documents(&mut redis, &self.prefix, ids).await?;
        Ok(())
    }

    /// Replaces the cached documents of erased profiles `ids` with tombstones, so no
    /// document built before the erase can be written back (see the module docs).
    pub async fn tombstone(&self, ids: &[Uuid]) -> Result<(), Customer360Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let ttl = self.ttl.max(TOMBSTONE_TTL).as_secs();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.set_ex(cache_key(&self.prefix, *id), TOMBSTONE, ttl)
                .ignore();
        }
        let mut redis = self.redis.clone();
        pipe.query_async::<()>(&mut redis).await?;
        Ok(())
    }

    /// Caches `doc` unless its profile was erased (its key holds a tombstone). Returns
    /// whether it was written.
    pub async fn store(&self, doc: &Customer360) -> Result<bool, Customer360Error> {
        let mut pipe = redis::pipe();
        put(&mut pipe, &self.prefix, doc, self.ttl)?;
        let mut redis = self.redis.clone();
        let (written,): (i64,) = pipe.query_async(&mut redis).await?;
        Ok(written == 1)
    }

    async fn cached(&self, id: Uuid) -> Option<Customer360> {
        let mut redis = self.redis.clone();
        let raw: redis::RedisResult<Option<String>> = redis.get(cache_key(&self.prefix, id)).await;
        match raw {
            // An erased profile: nothing cached, and Postgres has nothing either.
            Ok(Some(json)) if json == TOMBSTONE => None,
            Ok(Some(json)) => match serde_json::from_str(&json) {
                Ok(doc) => Some(doc),
                Err(e) => {
                    // A document of another shape (older build): rebuild rather than fail.
                    tracing::warn!(error = %e, profile_id = %id, "unreadable Customer 360 cache entry");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "reading the Customer 360 cache failed; using Postgres");
                None
            }
        }
    }
}

/// Queues the tombstone-respecting write of `doc` on `pipe` (one reply: 1 written, 0
/// refused).
fn put(
    pipe: &mut redis::Pipeline,
    prefix: &str,
    doc: &Customer360,
    ttl: Duration,
) -> Result<(), serde_json::Error> {
    pipe.cmd("EVAL")
        .arg(PUT_SCRIPT)
        .arg(1)
        .arg(cache_key(prefix, doc.profile_id))
        .arg(serde_json::to_string(doc)?)
        .arg(ttl.as_secs())
        .arg(TOMBSTONE);
    Ok(())
}

/// Queues the tombstone-respecting removal of `id`'s document on `pipe` (no reply).
fn remove(pipe: &mut redis::Pipeline, prefix: &str, id: Uuid) {
    pipe.cmd("EVAL")
        .arg(DROP_SCRIPT)
        .arg(1)
        .arg(cache_key(prefix, id))
        .arg(TOMBSTONE)
        .ignore();
}

/// Removes the cached documents of `ids` under `prefix`, leaving erased profiles'
/// tombstones in place (for holders of a bare connection, such as ml-inference).
pub async fn remove_documents(
    redis: &mut ConnectionManager,
    prefix: &str,
    ids: &[Uuid],
) -> Result<(), redis::RedisError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        remove(&mut pipe, prefix, *id);
    }
    pipe.query_async::<()>(redis).await
}

/// The live profile `id` resolves to: itself, or the end of its `merged_into` chain.
/// `None` when no such profile exists.
pub async fn resolve(db: &PgPool, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    resolve_in(&mut *db.acquire().await?, id).await
}

/// [`resolve`] on a connection (inside a transaction).
pub async fn resolve_in(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH RECURSIVE chain (id, merged_into, depth) AS ( \
             SELECT id, merged_into, 0 FROM customer_profile WHERE id = $1 \
             UNION ALL \
             SELECT p.id, p.merged_into, c.depth + 1 FROM customer_profile p \
             JOIN chain c ON p.id = c.merged_into WHERE c.depth < $2) \
         SELECT id FROM chain WHERE merged_into IS NULL LIMIT 1",
    )
    .bind(id)
    .bind(MAX_CHAIN)
    .fetch_optional(conn)
    .await
}

/// Every profile merged into `id`, directly or through a chain (not `id` itself).
pub async fn merged_profiles(db: &PgPool, id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH RECURSIVE absorbed (id, depth) AS ( \
             SELECT id, 1 FROM customer_profile WHERE merged_into = $1 \
             UNION ALL \
             SELECT p.id, a.depth + 1 FROM customer_profile p \
             JOIN absorbed a ON p.merged_into = a.id WHERE a.depth < $2) \
         SELECT DISTINCT id FROM absorbed ORDER BY id",
    )
    .bind(id)
    .bind(MAX_CHAIN)
    .fetch_all(db)
    .await
}

/// `id` and every profile merged into it, directly or through a chain: the profiles
/// whose events, orders and merges make up `id`'s history.
pub async fn family(db: &PgPool, id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut all = merged_profiles(db, id).await?;
    all.insert(0, id);
    Ok(all)
}

#[derive(sqlx::FromRow)]
struct ProfileRow {
    id: Uuid,
    display_name: Option<String>,
    traits: sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
    first_seen_at: Option<DateTime<Utc>>,
    last_seen_at: Option<DateTime<Utc>>,
    orders_count: i32,
    total_spent: Decimal,
    currency: Option<String>,
    last_order_at: Option<DateTime<Utc>>,
    channels: Vec<String>,
    state: OrDefault<ProfileState>,
}

#[derive(sqlx::FromRow)]
struct IdentifierRow {
    profile_id: Uuid,
    kind: Named<IdentifierKind>,
    value: String,
    source: Option<Named<Source>>,
    first_seen_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    suspect: bool,
}

/// Every identifier `profiles` hold, with the profile holding it, by kind and value.
/// Order references (see the module documentation) are included.
pub async fn identifiers(
    conn: &mut PgConnection,
    profiles: &[Uuid],
) -> Result<Vec<(Uuid, ProfileIdentifier)>, sqlx::Error> {
    let rows: Vec<IdentifierRow> = sqlx::query_as(
        "SELECT profile_id, kind, value, source, first_seen_at, last_seen_at, suspect \
         FROM profile_identifier WHERE profile_id = ANY($1) ORDER BY kind, value",
    )
    .bind(profiles)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|i| {
            (
                i.profile_id,
                ProfileIdentifier {
                    kind: i.kind.0,
                    value: i.value,
                    source: i.source.map(|s| s.0),
                    first_seen_at: i.first_seen_at,
                    last_seen_at: i.last_seen_at,
                    suspect: i.suspect,
                },
            )
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    profile_id: Uuid,
    source: Named<Source>,
    external_order_id: String,
    status: Named<OrderStatus>,
    channel: Named<Channel>,
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

/// The orders of `profiles` with their lines and the profile each belongs to, newest
/// first; at most `per_profile` of each profile (`i64::MAX` for all of them).
pub async fn orders(
    conn: &mut PgConnection,
    profiles: &[Uuid],
    per_profile: i64,
) -> Result<Vec<(Uuid, PurchaseSummary)>, sqlx::Error> {
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, profile_id, source, external_order_id, status, channel, store, placed_at, \
                currency, total, refunded_total \
         FROM (SELECT o.*, row_number() OVER (PARTITION BY profile_id \
                                              ORDER BY placed_at DESC, id DESC) AS rank \
               FROM orders o WHERE profile_id = ANY($1)) ranked \
         WHERE rank <= $2 ORDER BY placed_at DESC, id DESC",
    )
    .bind(profiles)
    .bind(per_profile)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let items: Vec<ItemRow> = sqlx::query_as(
        "SELECT order_id, sku, name, category, qty, price FROM order_items \
         WHERE order_id = ANY($1) ORDER BY order_id, line_no",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
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
            (
                r.profile_id,
                PurchaseSummary {
                    items: by_order.remove(&r.id).unwrap_or_default(),
                    order_id: r.external_order_id,
                    source: r.source.0,
                    channel: r.channel.0,
                    status: r.status.0,
                    placed_at: r.placed_at,
                    total: r.total,
                    refunded_total: r.refunded_total,
                    currency: r.currency,
                    store: r.store,
                },
            )
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct PredictionRow {
    profile_id: Uuid,
    task: Named<ModelTask>,
    score: Option<f64>,
    label: Option<String>,
    model_version_id: Uuid,
    algorithm: String,
    scored_at: DateTime<Utc>,
    details: sqlx::types::Json<serde_json::Value>,
}

/// The latest prediction of each task for each of `profiles`, with the profile and the
/// algorithm of the model that made it, by profile and task.
pub async fn predictions(
    conn: &mut PgConnection,
    profiles: &[Uuid],
) -> Result<Vec<(Uuid, PredictionSummary)>, sqlx::Error> {
    let rows: Vec<PredictionRow> = sqlx::query_as(
        "SELECT p.profile_id, p.task, p.score, p.label, p.model_version_id, m.algorithm, \
                p.scored_at, p.details \
         FROM predictions p JOIN model_version m ON m.id = p.model_version_id \
         WHERE p.profile_id = ANY($1) ORDER BY p.profile_id, p.task",
    )
    .bind(profiles)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.profile_id,
                PredictionSummary {
                    task: r.task.0,
                    score: r.score,
                    label: r.label,
                    model_version_id: r.model_version_id,
                    algorithm: r.algorithm,
                    scored_at: r.scored_at,
                    details: r.details.0,
                },
            )
        })
        .collect())
}

/// Builds the document of `id` from Postgres, following `merged_into` to the live
/// profile (the document's `profile_id` is the survivor). `None` when no such profile
/// exists.
pub async fn build(db: &PgPool, id: Uuid) -> Result<Option<Customer360>, sqlx::Error> {
    let Some(live) = resolve(db, id).await? else {
        return Ok(None);
    };
    Ok(build_many(db, &[live]).await?.pop())
}

/// Builds the documents of the live profiles among `ids` with a fixed number of
/// queries (tombstones and unknown ids are skipped). What the merger uses after each
/// batch.
pub async fn build_many(db: &PgPool, ids: &[Uuid]) -> Result<Vec<Customer360>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db.begin_with(KEY_LOOKUPS).await?;
    let profiles: Vec<ProfileRow> = sqlx::query_as(
        "SELECT id, display_name, traits, first_seen_at, last_seen_at, \
                orders_count, total_spent, currency, last_order_at, channels, state \
         FROM customer_profile WHERE id = ANY($1) AND merged_into IS NULL ORDER BY id",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let live: Vec<Uuid> = profiles.iter().map(|p| p.id).collect();
    if live.is_empty() {
        return Ok(Vec::new());
    }
    let tombstones = tombstones_of_many(&mut tx, &live).await?;

    let mut identifiers_of = by_profile(
        identifiers(&mut tx, &live)
            .await?
            .into_iter()
            .filter(|(_, i)| !is_order_reference(i.kind, &i.value)),
    );
    let mut tombstones_of = by_profile(tombstones);
    let mut purchases_of = by_profile(orders(&mut tx, &live, PURCHASES_SHOWN).await?);
    let mut predictions_of = by_profile(predictions(&mut tx, &live).await?);
    let mut profiles = profiles;
    let mut states: Vec<ProfileState> = profiles
        .iter_mut()
        .map(|p| std::mem::take(&mut p.state.0))
        .collect();
    fill_sent_texts(&mut tx, &mut states).await?;
    tx.commit().await?;

    let computed_at = Utc::now();
    Ok(profiles
        .into_iter()
        .zip(states)
        .map(|(p, state)| {
            let predictions = predictions_of.remove(&p.id).unwrap_or_default();
            let recommendations = predictions
                .iter()
                .find(|r| r.task == ModelTask::Recommend)
                .map(|r| recommendations_of(&r.details))
                .unwrap_or_default();
            let total_orders = i64::from(p.orders_count);
            let consent = domain::consent::entries(&p.traits.0, &state.trait_times);
            Customer360 {
                profile_id: p.id,
                display_name: p.display_name,
                identifiers: identifiers_of.remove(&p.id).unwrap_or_default(),
                traits: p.traits.0,
                first_seen_at: p.first_seen_at,
                last_seen_at: p.last_seen_at,
                total_orders,
                lifetime_value: p.total_spent,
                average_order_value: if total_orders > 0 {
                    (p.total_spent / Decimal::from(total_orders)).round_dp(2)
                } else {
                    Decimal::ZERO
                },
                currency: p.currency,
                last_order_at: p.last_order_at,
                channels: p
                    .channels
                    .iter()
                    .filter_map(|c| c.parse::<Channel>().ok())
                    .collect(),
                category_affinity: state.category_affinity(computed_at),
                purchase_history: purchases_of.remove(&p.id).unwrap_or_default(),
                browsing_history: state.recent_browsing,
                predictions,
                recommendations,
                consent,
                recent_messages: state.recent_messages,
                merged_profile_ids: tombstones_of.remove(&p.id).unwrap_or_default(),
                computed_at,
            }
        })
        .collect())
}

/// How [`build_many`] opens its reads: one read-only transaction (one snapshot for the
/// whole document, one connection) with [`crate::KEY_LOOKUPS_ONLY`], sent as one message
/// with `BEGIN` (constants: nothing is interpolated).
///
/// Every read of a document is a lookup by the keys of a batch of profiles (or of their
/// orders). Without statistics the planner takes `= ANY` of a few hundred keys to match
/// most of a table and scans it whole, comparing every row with every key: on the
/// pipeline benchmark a tenth of Postgres's CPU went to those comparisons, growing with
/// the tables.
const KEY_LOOKUPS: &str = "BEGIN READ ONLY; SET LOCAL enable_seqscan = off";

/// The tombstones pointing at each of `live`, directly or through a chain, as
/// `(live profile, tombstone)` sorted. One plain lookup per level of the chains instead
/// of a recursive query: the writer keeps every tombstone pointing at a live profile, so
/// the second lookup finds nothing and ends it. (A recursive query's row estimate grows
/// with every level it might take; on a table whose statistics are stale, such as a
/// brand's first minutes, the estimate crossed `jit_above_cost` and every refresh spent
/// about 400 ms compiling the query — 25 % of the merger's Postgres time in the
/// identity benchmark.)
async fn tombstones_of_many(
    conn: &mut PgConnection,
    live: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let mut found: Vec<(Uuid, Uuid)> = Vec::new();
    let mut seen: std::collections::HashSet<Uuid> = live.iter().copied().collect();
    // Each id of the level being looked up, with the live profile it belongs to.
    let mut level: BTreeMap<Uuid, Uuid> = live.iter().map(|id| (*id, *id)).collect();
    for _ in 0..MAX_CHAIN {
        if level.is_empty() {
            break;
        }
        let ids: Vec<Uuid> = level.keys().copied().collect();
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT merged_into, id FROM customer_profile WHERE merged_into = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let mut next = BTreeMap::new();
        for (into, id) in rows {
            let Some(root) = level.get(&into).copied() else {
                continue;
            };
            if seen.insert(id) {
                found.push((root, id));
                next.insert(id, root);
            }
        }
        level = next;
    }
    found.sort();
    Ok(found)
}

/// Fills in the text of outbound messages the automations sent: Twilio's status
/// callbacks carry no text, so an outbound entry known only from its callbacks gets the
/// body (or the template and its variables) recorded with the send (`automation_send`,
/// matched by the provider's message id). One query for all the documents.
async fn fill_sent_texts(
    conn: &mut PgConnection,
    states: &mut [ProfileState],
) -> Result<(), sqlx::Error> {
    let sids: Vec<String> = states
        .iter()
        .flat_map(|s| &s.recent_messages)
        .filter(|m| m.body.is_none() && m.direction == domain::profile::MessageDirection::Outbound)
        .filter_map(|m| m.message_sid.clone())
        .collect();
    if sids.is_empty() {
        return Ok(());
    }
    let rows: Vec<(
        String,
        sqlx::types::Json<domain::api::automations::RenderedMessage>,
    )> = sqlx::query_as(
        "SELECT provider_id, rendered FROM automation_send \
             WHERE provider_id = ANY($1) AND rendered IS NOT NULL",
    )
    .bind(&sids)
    .fetch_all(&mut *conn)
    .await?;
    let texts: BTreeMap<String, String> = rows
        .into_iter()
        .map(|(sid, r)| (sid, sent_text(&r.0)))
        .collect();
    for m in states
        .iter_mut()
        .flat_map(|s| s.recent_messages.iter_mut())
        .filter(|m| m.body.is_none())
    {
        m.body = m
            .message_sid
            .as_ref()
            .and_then(|sid| texts.get(sid))
            .cloned();
    }
    Ok(())
}

/// What a rendered message said: its free-form body, or its template and variables.
fn sent_text(r: &domain::api::automations::RenderedMessage) -> String {
    match (&r.body, &r.content_sid) {
        (Some(body), _) => body.clone(),
        (None, Some(template)) if r.content_variables.is_empty() => format!("template {template}"),
        (None, Some(template)) => {
            let vars: Vec<String> = r
                .content_variables
                .iter()
                .map(|(k, v)| format!("{{{{{k}}}}} = {v}"))
                .collect();
            format!("template {template} ({})", vars.join(", "))
        }
        (None, None) => String::new(),
    }
}

/// Groups `(profile, item)` pairs by profile, keeping their order.
fn by_profile<T>(pairs: impl IntoIterator<Item = (Uuid, T)>) -> BTreeMap<Uuid, Vec<T>> {
    let mut out: BTreeMap<Uuid, Vec<T>> = BTreeMap::new();
    for (profile, item) in pairs {
        out.entry(profile).or_default().push(item);
    }
    out
}

/// Recommendations carried in a `recommend` prediction's details (none when they are
/// malformed: the document still shows everything else).
fn recommendations_of(details: &serde_json::Value) -> Vec<Recommendation> {
    crate::recommendations::from_details(details).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_reads_by_key_only() {
        assert_eq!(
            KEY_LOOKUPS,
            format!("BEGIN READ ONLY; {}", crate::KEY_LOOKUPS_ONLY)
        );
    }

    #[test]
    fn keys_and_recommendations() {
        let id = Uuid::nil();
        assert_eq!(
            cache_key("t-1:", id),
            "t-1:c360:00000000-0000-0000-0000-000000000000"
        );
        let details = serde_json::json!({"items": [{"sku": "A", "name": "a", "score": 0.5}]});
        assert_eq!(recommendations_of(&details)[0].sku, "A");
        assert!(recommendations_of(&serde_json::json!({})).is_empty());
    }
}
