//! The one writer of `customer_profile` rows.
//!
//! The identity merger owns profiles: its every write (forward steps, region replays,
//! analysts' decisions, rebuilds) creates and rewrites them through [`upsert`] (and
//! [`insert_ids`] for profiles that only ever become tombstones), and so does the
//! simulated-brand loader of the ML tests (`ml::load`), so the columns a live profile
//! carries are decided here once. Tombstones (merges) stay with the merger's own
//! statements, which update, never insert.
//!
//! [`upsert`] writes a profile row once per call: a new profile is inserted whole (not
//! inserted bare and then updated), its order aggregates are computed from `orders` in
//! the same statement (not by a second update), and a row that would come out
//! unchanged is not rewritten. Every rewrite of a `customer_profile` row is a new row
//! version with entries in all of its indexes, so this is what a profile costs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::profile::ProfileState;
use domain::{Channel, Identifier};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

/// Rows per statement.
const CHUNK: usize = 2_000;

/// A live profile, written whole (its order aggregates are computed from `orders` by
/// [`upsert`], and its tombstone columns cleared).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileWrite<'a> {
    /// `customer_profile.id`.
    pub id: Uuid,
    /// Canonical position `(occurred_at, event_id)` of its first event, when the merger
    /// knows it.
    pub first_event: Option<(DateTime<Utc>, Uuid)>,
    /// Canonical position of its latest event.
    pub last_event: Option<(DateTime<Utc>, Uuid)>,
    /// First-name keys of its person (the name guard's input).
    pub name_keys: Vec<&'a str>,
    /// Name shown in lists.
    pub display_name: Option<String>,
    /// Its identifiers, order references left out (the caller's job).
    pub identifiers: Vec<&'a Identifier>,
    /// Person traits.
    pub traits: &'a serde_json::Map<String, serde_json::Value>,
    /// First activity.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest activity.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The channels it was seen on.
    pub channels: Vec<Channel>,
    /// Normalised category affinity (sums to 1, or empty).
    pub category_affinity: BTreeMap<String, f64>,
    /// Further Customer 360 facts kept incrementally.
    pub state: &'a ProfileState,
    /// When the row is first inserted: `None` for now. Never changed by a rewrite.
    pub created_at: Option<DateTime<Utc>>,
}

/// Creates bare profile rows for profiles that are merged away in the same write
/// (tombstones need a row; live profiles are inserted whole by [`upsert`]). Ids that
/// exist are left alone.
pub async fn insert_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(5 * CHUNK) {
        sqlx::query(
            "INSERT INTO customer_profile (id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING",
        )
        .bind(chunk)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Inserts or rewrites live profiles (reviving a tombstone if the id comes back), with
/// their order aggregates computed from `orders` as they stand: orders that were not
/// cancelled, spend net of refunds (saturating at ±`domain::MAX_TOTAL`), the most used
/// currency (kept when there is none), the last order. Attribute orders first. A row
/// that would come out unchanged is left alone.
pub async fn upsert(conn: &mut PgConnection, rows: &[ProfileWrite<'_>]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(CHUNK) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut first_at = Vec::with_capacity(chunk.len());
        let mut first_id = Vec::with_capacity(chunk.len());
        let mut last_at = Vec::with_capacity(chunk.len());
        let mut last_id = Vec::with_capacity(chunk.len());
        let mut names = Vec::with_capacity(chunk.len());
        let mut display = Vec::with_capacity(chunk.len());
        let mut identifiers = Vec::with_capacity(chunk.len());
        let mut traits = Vec::with_capacity(chunk.len());
        let mut first_seen = Vec::with_capacity(chunk.len());
        let mut last_seen = Vec::with_capacity(chunk.len());
        let mut channels = Vec::with_capacity(chunk.len());
        let mut affinity = Vec::with_capacity(chunk.len());
        let mut states = Vec::with_capacity(chunk.len());
        let mut created = Vec::with_capacity(chunk.len());
        for r in chunk {
            ids.push(r.id);
            first_at.push(r.first_event.map(|e| e.0));
            first_id.push(r.first_event.map(|e| e.1));
            last_at.push(r.last_event.map(|e| e.0));
            last_id.push(r.last_event.map(|e| e.1));
            names.push(Json(&r.name_keys));
            display.push(r.display_name.as_deref());
            identifiers.push(Json(&r.identifiers));
            traits.push(Json(r.traits));
            first_seen.push(r.first_seen_at);
            last_seen.push(r.last_seen_at);
            channels.push(Json(&r.channels));
            affinity.push(Json(&r.category_affinity));
            states.push(Json(r.state));
            created.push(r.created_at);
        }
        sqlx::query(
            "INSERT INTO customer_profile (id, first_event_at, first_event_id, last_event_at, last_event_id, \
                 name_keys, display_name, identifiers, traits, first_seen_at, last_seen_at, channels, \
                 category_affinity, state, created_at, orders_count, total_spent, currency, last_order_at) \
             SELECT u.id, u.fa, u.fi, u.la, u.li, \
                    ARRAY(SELECT jsonb_array_elements_text(u.names)), u.display, u.identifiers, u.traits, \
                    u.fs, u.ls, ARRAY(SELECT jsonb_array_elements_text(u.channels)), u.affinity, u.state, \
                    COALESCE(u.created, now()), a.n, LEAST(GREATEST(a.spent, -$16::numeric), $16::numeric), \
                    a.currency, a.last_order_at \
             FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::timestamptz[], $5::uuid[], \
                         $6::jsonb[], $7::text[], $8::jsonb[], $9::jsonb[], $10::timestamptz[], \
                         $11::timestamptz[], $12::jsonb[], $13::jsonb[], $14::jsonb[], $15::timestamptz[]) \
                  AS u(id, fa, fi, la, li, names, display, identifiers, traits, fs, ls, channels, affinity, state, created) \
             CROSS JOIN LATERAL (SELECT count(*)::int AS n, COALESCE(sum(o.total - o.refunded_total), 0) AS spent, \
                                        mode() WITHIN GROUP (ORDER BY o.currency) AS currency, \
                                        max(o.placed_at) AS last_order_at \
                                 FROM orders o WHERE o.profile_id = u.id AND o.status <> 'cancelled') a \
             ON CONFLICT (id) DO UPDATE SET \
                 merged_into = NULL, merged_at = NULL, updated_at = now(), version = customer_profile.version + 1, \
                 first_event_at = EXCLUDED.first_event_at, first_event_id = EXCLUDED.first_event_id, \
                 last_event_at = EXCLUDED.last_event_at, last_event_id = EXCLUDED.last_event_id, \
                 name_keys = EXCLUDED.name_keys, display_name = EXCLUDED.display_name, \
                 identifiers = EXCLUDED.identifiers, traits = EXCLUDED.traits, \
                 first_seen_at = EXCLUDED.first_seen_at, last_seen_at = EXCLUDED.last_seen_at, \
                 channels = EXCLUDED.channels, category_affinity = EXCLUDED.category_affinity, \
                 state = EXCLUDED.state, orders_count = EXCLUDED.orders_count, \
                 total_spent = EXCLUDED.total_spent, \
                 currency = COALESCE(EXCLUDED.currency, customer_profile.currency), \
                 last_order_at = EXCLUDED.last_order_at \
             WHERE customer_profile.merged_into IS NOT NULL \
                OR (customer_profile.first_event_at, customer_profile.first_event_id, \
                    customer_profile.last_event_at, customer_profile.last_event_id, customer_profile.name_keys, \
                    customer_profile.display_name, customer_profile.identifiers, customer_profile.traits, \
                    customer_profile.first_seen_at, customer_profile.last_seen_at, customer_profile.channels, \
                    customer_profile.category_affinity, customer_profile.state, customer_profile.orders_count, \
                    customer_profile.total_spent, customer_profile.currency, customer_profile.last_order_at) \
                   IS DISTINCT FROM \
                   (EXCLUDED.first_event_at, EXCLUDED.first_event_id, EXCLUDED.last_event_at, \
                    EXCLUDED.last_event_id, EXCLUDED.name_keys, EXCLUDED.display_name, EXCLUDED.identifiers, \
                    EXCLUDED.traits, EXCLUDED.first_seen_at, EXCLUDED.last_seen_at, EXCLUDED.channels, \
                    EXCLUDED.category_affinity, EXCLUDED.state, EXCLUDED.orders_count, EXCLUDED.total_spent, \
                    COALESCE(EXCLUDED.currency, customer_profile.currency), EXCLUDED.last_order_at)",
        )
        .bind(&ids)
        .bind(&first_at)
        .bind(&first_id)
        .bind(&last_at)
        .bind(&last_id)
        .bind(&names)
        .bind(&display)
        .bind(&identifiers)
        .bind(&traits)
        .bind(&first_seen)
        .bind(&last_seen)
        .bind(&channels)
        .bind(&affinity)
        .bind(&states)
        .bind(&created)
        // Any number of orders of any admitted amount: the sum saturates
        // (domain::MAX_TOTAL) instead of overflowing the column and failing the write.
        .bind(domain::MAX_TOTAL)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
