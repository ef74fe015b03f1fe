//! The destinations' rows: settings with sealed credentials, per-destination queues
//! (leased with `FOR UPDATE SKIP LOCKED`), what each remote accepted, dead letters and
//! the delivery log. Every statement binds its values.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::api::{
    DeadLetterView, DeliveryView, DestinationKind, DestinationMode, DestinationRequest,
    DestinationStatus, DestinationUpdate, DestinationView, ProfileField,
};
use sqlx::PgPool;
use sqlx::types::Json;
use storage::secrets::SecretsKey;
use uuid::Uuid;

use crate::DestinationError;
use crate::model::{Destination, DestinationConfig, default_mapping, validate};

type Row = (
    Uuid,
    String,
    String,
    Json<serde_json::Value>,
    Vec<u8>,
    Json<BTreeMap<String, ProfileField>>,
    String,
    Option<Uuid>,
    bool,
    i64,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

const COLUMNS: &str = "id, name, kind, config, credentials, mapping, mode, audience_id, \
                       enabled, version, created_at, last_success_at";

fn parse_kind(s: &str) -> Result<DestinationKind, DestinationError> {
    s.parse()
        .map_err(|e: domain::source::UnknownName| DestinationError::Invalid(e.to_string()))
}

fn open_credentials(
    key: &SecretsKey,
    id: Uuid,
    sealed: &[u8],
) -> Result<BTreeMap<String, String>, DestinationError> {
    let text = key.open(id.as_bytes(), sealed)?;
    serde_json::from_str(&text)
        .map_err(|_| DestinationError::Invalid("stored destination credentials are corrupt".into()))
}

fn seal_credentials(key: &SecretsKey, id: Uuid, creds: &BTreeMap<String, String>) -> Vec<u8> {
    let text = serde_json::to_string(creds).unwrap_or_default();
    key.seal(id.as_bytes(), &text)
}

/// Creates a destination and queues every profile it covers (its backfill).
pub async fn create(
    db: &PgPool,
    key: &SecretsKey,
    req: &DestinationRequest,
    actor: &str,
) -> Result<DestinationView, DestinationError> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(DestinationError::Invalid(
            "name must be 1–200 characters".into(),
        ));
    }
    let config = DestinationConfig::parse(&req.config)?;
    let mapping = if req.mapping.is_empty() {
        default_mapping(req.kind)
    } else {
        req.mapping.clone()
    };
    validate(req.kind, &config, &req.credentials, &mapping)?;
    if req.mode == DestinationMode::Mirror && req.audience_id.is_none() {
        return Err(DestinationError::Invalid(
            "mode `mirror` mirrors an audience: give audience_id".into(),
        ));
    }
    let id = Uuid::now_v7();
    let mut tx = db.begin().await?;
    if let Some(a) = req.audience_id {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM audiences WHERE id = $1)")
                .bind(a)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            return Err(DestinationError::Invalid(format!("no audience {a}")));
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO destinations (id, name, kind, config, credentials, mapping, mode, \
         audience_id, created_by, membership_cursor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
           (SELECT coalesce(max(id), 0) FROM audience_membership_change WHERE audience_id = $8)) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(id)
    .bind(name)
    .bind(req.kind.as_str())
    .bind(Json(serde_json::Value::Object(config.to_map())))
    .bind(seal_credentials(key, id, &req.credentials))
    .bind(Json(&mapping))
    .bind(req.mode.as_str())
    .bind(req.audience_id)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(DestinationError::Conflict(format!(
            "a destination named `{name}` exists"
        )));
    }
    backfill_in(&mut tx, id).await?;
    tx.commit().await?;
    get(db, id).await
}

/// Changes a destination; a new mapping or new settings queue a backfill (records the
/// remote already has unchanged are not sent again).
pub async fn update(
    db: &PgPool,
    key: &SecretsKey,
    id: Uuid,
    upd: &DestinationUpdate,
) -> Result<DestinationView, DestinationError> {
    let mut tx = db.begin().await?;
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM destinations WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or(DestinationError::NotFound(id))?;
    let kind = parse_kind(&row.2)?;
    let config = match &upd.config {
        Some(c) => DestinationConfig::parse(c)?,
        None => serde_json::from_value(row.3.0.clone())
            .map_err(|e| DestinationError::Invalid(format!("stored config: {e}")))?,
    };
    let credentials = match &upd.credentials {
        Some(c) => c.clone(),
        None => open_credentials(key, id, &row.4)?,
    };
    let mapping = upd.mapping.clone().unwrap_or_else(|| row.5.0.clone());
    validate(kind, &config, &credentials, &mapping)?;
    let enabled = upd.enabled.unwrap_or(row.8);
    sqlx::query(
        "UPDATE destinations SET config = $2, credentials = $3, mapping = $4, enabled = $5, \
         version = version + 1, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(Json(serde_json::Value::Object(config.to_map())))
    .bind(seal_credentials(key, id, &credentials))
    .bind(Json(&mapping))
    .bind(enabled)
    .execute(&mut *tx)
    .await?;
    if upd.mapping.is_some() || upd.config.is_some() {
        backfill_in(&mut tx, id).await?;
    }
    tx.commit().await?;
    get(db, id).await
}

async fn backfill_in(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<i64, sqlx::Error> {
    // Every live profile the destination covers, plus those the remote has a record of
    // (an audience member that left, a profile merged away since).
    let queued = sqlx::query(
        "INSERT INTO destination_queue (destination_id, profile_id) \
         SELECT d.id, p.id FROM destinations d JOIN customer_profile p ON p.merged_into IS NULL \
         WHERE d.id = $1 AND (d.audience_id IS NULL OR EXISTS ( \
             SELECT 1 FROM audience_membership m \
             WHERE m.audience_id = d.audience_id AND m.profile_id = p.id AND m.current)) \
         UNION \
         SELECT destination_id, profile_id FROM destination_state WHERE destination_id = $1 \
         ON CONFLICT (destination_id, profile_id) DO UPDATE SET enqueued_at = clock_timestamp()",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(queued.rows_affected() as i64)
}

/// Queues every profile the destination covers again (`ctl destination sync`); returns
/// how many were queued. Unchanged records are still not sent.
pub async fn backfill(db: &PgPool, id: Uuid) -> Result<i64, DestinationError> {
    let mut tx = db.begin().await?;
    exists(&mut tx, id).await?;
    let n = backfill_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(n)
}

async fn exists(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<(), DestinationError> {
    let found: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM destinations WHERE id = $1)")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    if found {
        Ok(())
    } else {
        Err(DestinationError::NotFound(id))
    }
}

/// Queues changed profiles for every enabled destination that may care: all of them
/// for unscoped destinations; for audience destinations the current members and the
/// profiles the remote has a record of (entries and exits come from
/// [`poll_memberships`]).
pub async fn enqueue_changes(db: &PgPool, profiles: &[Uuid]) -> Result<u64, sqlx::Error> {
    if profiles.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO destination_queue (destination_id, profile_id) \
         SELECT d.id, p FROM destinations d CROSS JOIN unnest($1::uuid[]) AS p \
         WHERE d.enabled AND (d.audience_id IS NULL \
           OR EXISTS (SELECT 1 FROM audience_membership m WHERE m.audience_id = d.audience_id \
                      AND m.profile_id = p AND m.current) \
           OR EXISTS (SELECT 1 FROM destination_state s WHERE s.destination_id = d.id \
                      AND s.profile_id = p)) \
         ON CONFLICT (destination_id, profile_id) DO UPDATE SET enqueued_at = clock_timestamp()",
    )
    .bind(profiles)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Queues `profile` for one destination (a merge's survivor).
pub async fn enqueue_one(db: &PgPool, destination: Uuid, profile: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO destination_queue (destination_id, profile_id) VALUES ($1, $2) \
         ON CONFLICT (destination_id, profile_id) DO UPDATE SET enqueued_at = clock_timestamp()",
    )
    .bind(destination)
    .bind(profile)
    .execute(db)
    .await?;
    Ok(())
}

/// Queues the audience entries and exits recorded since each audience destination last
/// looked; returns how many profiles were queued.
pub async fn poll_memberships(db: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let dests: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
        "SELECT id, audience_id, membership_cursor FROM destinations \
         WHERE enabled AND audience_id IS NOT NULL FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut queued = 0;
    for (id, audience, cursor) in dests {
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT max(id) FROM audience_membership_change WHERE audience_id = $1 AND id > $2",
        )
        .bind(audience)
        .bind(cursor)
        .fetch_one(&mut *tx)
        .await?;
        let Some(max) = max else { continue };
        queued += sqlx::query(
            "INSERT INTO destination_queue (destination_id, profile_id) \
             SELECT DISTINCT $1::uuid, profile_id FROM audience_membership_change \
             WHERE audience_id = $2 AND id > $3 AND id <= $4 \
             ON CONFLICT (destination_id, profile_id) DO UPDATE SET enqueued_at = clock_timestamp()",
        )
        .bind(id)
        .bind(audience)
        .bind(cursor)
        .bind(max)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE destinations SET membership_cursor = $2 WHERE id = $1")
            .bind(id)
            .bind(max)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(queued)
}

/// A profile leased from a destination's queue, with the enqueue time it was leased
/// at (a newer change moves it, and then the row stays queued after the send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The profile.
    pub profile_id: Uuid,
    /// Its queue row's enqueue time when leased.
    pub enqueued_at: DateTime<Utc>,
    /// Attempts so far.
    pub attempts: i32,
}

/// Leases up to `limit` due profiles of `destination` for `lease`, oldest first.
/// Concurrent workers skip each other's rows.
pub async fn claim(
    db: &PgPool,
    destination: Uuid,
    limit: usize,
    lease: Duration,
) -> Result<Vec<Claim>, sqlx::Error> {
    let rows: Vec<(Uuid, DateTime<Utc>, i32)> = sqlx::query_as(
        "UPDATE destination_queue q SET leased_until = clock_timestamp() + $3 \
         FROM (SELECT profile_id FROM destination_queue \
               WHERE destination_id = $1 AND not_before <= clock_timestamp() \
                 AND (leased_until IS NULL OR leased_until < clock_timestamp()) \
               ORDER BY enqueued_at LIMIT $2 FOR UPDATE SKIP LOCKED) due \
         WHERE q.destination_id = $1 AND q.profile_id = due.profile_id \
         RETURNING q.profile_id, q.enqueued_at, q.attempts",
    )
    .bind(destination)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(sqlx::postgres::types::PgInterval::try_from(lease).unwrap_or_default())
    .fetch_all(db)
    .await?;
    let mut out: Vec<Claim> = rows
        .into_iter()
        .map(|(profile_id, enqueued_at, attempts)| Claim {
            profile_id,
            enqueued_at,
            attempts,
        })
        .collect();
    out.sort_by_key(|c| (c.enqueued_at, c.profile_id));
    Ok(out)
}

/// Removes finished profiles from the queue, unless they were queued again meanwhile
/// (then only the lease and the failure count are cleared).
pub async fn finish(db: &PgPool, destination: Uuid, done: &[Claim]) -> Result<(), sqlx::Error> {
    if done.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = done.iter().map(|c| c.profile_id).collect();
    let at: Vec<DateTime<Utc>> = done.iter().map(|c| c.enqueued_at).collect();
    sqlx::query(
        "DELETE FROM destination_queue q USING unnest($2::uuid[], $3::timestamptz[]) AS d(p, at) \
         WHERE q.destination_id = $1 AND q.profile_id = d.p AND q.enqueued_at = d.at",
    )
    .bind(destination)
    .bind(&ids)
    .bind(&at)
    .execute(db)
    .await?;
    sqlx::query(
        "UPDATE destination_queue SET leased_until = NULL, attempts = 0, first_failed_at = NULL, \
         last_error = NULL, not_before = '-infinity' \
         WHERE destination_id = $1 AND profile_id = ANY($2)",
    )
    .bind(destination)
    .bind(&ids)
    .execute(db)
    .await?;
    Ok(())
}

/// Gives leased profiles back untouched (a worker that found its destination changed).
pub async fn release(db: &PgPool, destination: Uuid, claims: &[Claim]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.profile_id).collect();
    sqlx::query(
        "UPDATE destination_queue SET leased_until = NULL \
         WHERE destination_id = $1 AND profile_id = ANY($2)",
    )
    .bind(destination)
    .bind(&ids)
    .execute(db)
    .await?;
    Ok(())
}

/// A destination's current version (`None`: it no longer exists).
pub async fn version(db: &PgPool, destination: Uuid) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM destinations WHERE id = $1 AND enabled")
        .bind(destination)
        .fetch_optional(db)
        .await
}

/// How a transient failure is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First wait.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
    /// How long a profile keeps failing before it is dead-lettered.
    pub window: Duration,
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1`: exponential, capped, with full jitter in
    /// its upper half, and never shorter than the remote's `Retry-After`.
    pub fn delay(&self, attempts: i32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempts.clamp(0, 20))
            .min(self.max);
        let jitter = rand::random_range(0.5..=1.0);
        exp.mul_f64(jitter).max(retry_after.unwrap_or_default())
    }
}

/// Puts leased profiles back with a backoff after a transient failure; those failing
/// for longer than the policy's window go to the dead letters. Returns how many were
/// dead-lettered.
pub async fn retry_later(
    db: &PgPool,
    destination: Uuid,
    claims: &[Claim],
    operation: &str,
    error: &str,
    retry_after: Option<Duration>,
    policy: &RetryPolicy,
) -> Result<usize, sqlx::Error> {
    let mut dead = Vec::new();
    for c in claims {
        let delay = policy.delay(c.attempts, retry_after);
        let expired: bool = sqlx::query_scalar(
            "UPDATE destination_queue SET attempts = attempts + 1, leased_until = NULL, \
             first_failed_at = coalesce(first_failed_at, now()), last_error = $3, \
             not_before = clock_timestamp() + $4 \
             WHERE destination_id = $1 AND profile_id = $2 \
             RETURNING first_failed_at < now() - $5",
        )
        .bind(destination)
        .bind(c.profile_id)
        .bind(error)
        .bind(sqlx::postgres::types::PgInterval::try_from(delay).unwrap_or_default())
        .bind(sqlx::postgres::types::PgInterval::try_from(policy.window).unwrap_or_default())
        .fetch_optional(db)
        .await?
        .unwrap_or(false);
        if expired {
            dead.push(*c);
        }
    }
    let n = dead.len();
    if n > 0 {
        let msg = format!("still failing after the retry window: {error}");
        dead_letter(db, destination, &dead, operation, &msg).await?;
    }
    Ok(n)
}

/// Moves leased profiles to the destination's dead letters with the remote's error.
pub async fn dead_letter(
    db: &PgPool,
    destination: Uuid,
    claims: &[Claim],
    operation: &str,
    error: &str,
) -> Result<(), sqlx::Error> {
    if claims.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = claims.iter().map(|c| c.profile_id).collect();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO destination_dead_letters (destination_id, profile_id, operation, error) \
         SELECT $1, p, $3, $4 FROM unnest($2::uuid[]) AS p",
    )
    .bind(destination)
    .bind(&ids)
    .bind(operation)
    .bind(crate::http::shorten(error, 2000))
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM destination_queue WHERE destination_id = $1 AND profile_id = ANY($2)")
        .bind(destination)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("destination_dead_letters_total").increment(ids.len() as u64);
    Ok(())
}

/// Queues every open dead letter of a destination again and marks them replayed.
pub async fn replay(db: &PgPool, destination: Uuid) -> Result<i64, DestinationError> {
    let mut tx = db.begin().await?;
    exists(&mut tx, destination).await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE destination_dead_letters SET replayed_at = now() \
         WHERE destination_id = $1 AND replayed_at IS NULL RETURNING profile_id",
    )
    .bind(destination)
    .fetch_all(&mut *tx)
    .await?;
    let n = sqlx::query(
        "INSERT INTO destination_queue (destination_id, profile_id) \
         SELECT DISTINCT $1::uuid, p FROM unnest($2::uuid[]) AS p \
         ON CONFLICT (destination_id, profile_id) DO UPDATE SET enqueued_at = clock_timestamp(), \
           not_before = '-infinity', attempts = 0, first_failed_at = NULL",
    )
    .bind(destination)
    .bind(&ids)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n as i64)
}

/// What the remote last accepted for a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// Hash of the record.
    pub hash: Vec<u8>,
    /// The key it was sent under.
    pub remote_key: String,
    /// The remote's id for it, when the remote said.
    pub remote_id: Option<String>,
}

/// The accepted state of `profiles` at `destination`.
pub async fn states(
    db: &PgPool,
    destination: Uuid,
    profiles: &[Uuid],
) -> Result<HashMap<Uuid, Synced>, sqlx::Error> {
    let rows: Vec<(Uuid, Vec<u8>, String, Option<String>)> = sqlx::query_as(
        "SELECT profile_id, record_hash, remote_key, remote_id FROM destination_state \
         WHERE destination_id = $1 AND profile_id = ANY($2)",
    )
    .bind(destination)
    .bind(profiles)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(p, hash, remote_key, remote_id)| {
            (
                p,
                Synced {
                    hash,
                    remote_key,
                    remote_id,
                },
            )
        })
        .collect())
}

/// Records what the remote accepted (and when it last succeeded).
pub async fn save_states(
    db: &PgPool,
    destination: Uuid,
    accepted: &[(Uuid, Synced)],
) -> Result<(), sqlx::Error> {
    if accepted.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = accepted.iter().map(|a| a.0).collect();
    let hashes: Vec<Vec<u8>> = accepted.iter().map(|a| a.1.hash.clone()).collect();
    let keys: Vec<String> = accepted.iter().map(|a| a.1.remote_key.clone()).collect();
    let remote: Vec<Option<String>> = accepted.iter().map(|a| a.1.remote_id.clone()).collect();
    sqlx::query(
        "INSERT INTO destination_state (destination_id, profile_id, record_hash, remote_key, remote_id) \
         SELECT $1, p, h, k, r FROM unnest($2::uuid[], $3::bytea[], $4::text[], $5::text[]) AS u(p, h, k, r) \
         ON CONFLICT (destination_id, profile_id) DO UPDATE SET record_hash = EXCLUDED.record_hash, \
           remote_key = EXCLUDED.remote_key, \
           remote_id = coalesce(EXCLUDED.remote_id, destination_state.remote_id), synced_at = now()",
    )
    .bind(destination)
    .bind(&ids)
    .bind(&hashes)
    .bind(&keys)
    .bind(&remote)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets what the remote had for `profiles` (after a delete or a merge).
pub async fn forget(db: &PgPool, destination: Uuid, profiles: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM destination_state WHERE destination_id = $1 AND profile_id = ANY($2)")
        .bind(destination)
        .bind(profiles)
        .execute(db)
        .await?;
    Ok(())
}

/// Notes that the remote accepted a request now.
pub async fn mark_success(db: &PgPool, destination: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE destinations SET last_success_at = now() WHERE id = $1")
        .bind(destination)
        .execute(db)
        .await?;
    Ok(())
}

/// One line of the delivery log.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `upsert`, `delete`, `merge`, `token`, `test`, `properties`.
    pub operation: &'static str,
    /// Records in the request.
    pub records: usize,
    /// HTTP status, if any came back.
    pub status: Option<u16>,
    /// `ok`, `partial`, `transient`, `permanent`.
    pub outcome: &'static str,
    /// Request summary.
    pub request: String,
    /// Response summary.
    pub response: String,
    /// Duration.
    pub duration: Duration,
}

/// Appends to a destination's delivery log.
pub async fn record_delivery(
    db: &PgPool,
    destination: Uuid,
    d: &Delivery,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO destination_deliveries (destination_id, operation, records, status, outcome, \
         request, response, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(destination)
    .bind(d.operation)
    .bind(i32::try_from(d.records).unwrap_or(i32::MAX))
    .bind(d.status.map(i32::from))
    .bind(d.outcome)
    .bind(&d.request)
    .bind(&d.response)
    .bind(i32::try_from(d.duration.as_millis()).unwrap_or(i32::MAX))
    .execute(db)
    .await?;
    Ok(())
}

/// The enabled destinations and their versions (what the service runs workers for).
pub async fn enabled_versions(db: &PgPool) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT id, version FROM destinations WHERE enabled ORDER BY id")
        .fetch_all(db)
        .await
}

/// A destination with its credentials opened, for a worker or a connection test.
pub async fn load(
    db: &PgPool,
    key: &SecretsKey,
    id: Uuid,
) -> Result<Destination, DestinationError> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM destinations WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?;
    let row = row.ok_or(DestinationError::NotFound(id))?;
    Ok(Destination {
        id: row.0,
        name: row.1,
        kind: parse_kind(&row.2)?,
        config: serde_json::from_value(row.3.0)
            .map_err(|e| DestinationError::Invalid(format!("stored config: {e}")))?,
        credentials: open_credentials(key, id, &row.4)?,
        mapping: row.5.0,
        mode: row
            .6
            .parse()
            .map_err(|e: domain::source::UnknownName| DestinationError::Invalid(e.to_string()))?,
        audience_id: row.7,
        version: row.9,
    })
}

/// Finds a destination by id or name (for `ctl`).
pub async fn resolve(db: &PgPool, id_or_name: &str) -> Result<Uuid, DestinationError> {
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM destinations WHERE id::text = $1 OR name = $1 LIMIT 1")
            .bind(id_or_name)
            .fetch_optional(db)
            .await?;
    found.ok_or_else(|| DestinationError::Invalid(format!("no destination `{id_or_name}`")))
}

fn view(
    row: Row,
    status: DestinationStatus,
    key_names: Vec<String>,
) -> Result<DestinationView, DestinationError> {
    Ok(DestinationView {
        id: row.0,
        name: row.1,
        kind: parse_kind(&row.2)?,
        config: match row.3.0 {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
        credential_names: key_names,
        mapping: row.5.0,
        mode: row.6.parse().unwrap_or_default(),
        audience_id: row.7,
        enabled: row.8,
        created_at: row.10,
        status,
    })
}

/// One destination as the API shows it (no credential values).
pub async fn get(db: &PgPool, id: Uuid) -> Result<DestinationView, DestinationError> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM destinations WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?;
    let row = row.ok_or(DestinationError::NotFound(id))?;
    let s = status(db, id, row.11).await?;
    let names = credential_names(db, id).await?;
    view(row, s, names)
}

/// Every destination, oldest first, with its status.
pub async fn list(db: &PgPool) -> Result<Vec<DestinationView>, DestinationError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM destinations ORDER BY created_at, id"
    ))
    .fetch_all(db)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let s = status(db, row.0, row.11).await?;
        let names = credential_names(db, row.0).await?;
        out.push(view(row, s, names)?);
    }
    Ok(out)
}

/// The names of the stored credentials, kept unsealed beside them for display.
async fn credential_names(db: &PgPool, id: Uuid) -> Result<Vec<String>, sqlx::Error> {
    // Names are not secret; they are derived from the kind's required credentials.
    let kind: Option<(String, Json<serde_json::Value>)> =
        sqlx::query_as("SELECT kind, config FROM destinations WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(match kind {
        Some((k, c)) => match k.as_str() {
            "hubspot" => vec!["token".into()],
            "salesforce" => vec!["client_secret".into()],
            _ => {
                if c.0.get("signing").and_then(|s| s.as_str()) == Some("hmac") {
                    vec!["secret".into()]
                } else {
                    vec!["token".into()]
                }
            }
        },
        None => Vec::new(),
    })
}

/// A destination's sync status.
pub async fn status(
    db: &PgPool,
    id: Uuid,
    last_success_at: Option<DateTime<Utc>>,
) -> Result<DestinationStatus, sqlx::Error> {
    let (synced, pending, lag, dead, total, failed): (i64, i64, f64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM destination_state WHERE destination_id = $1), \
                    (SELECT count(*) FROM destination_queue WHERE destination_id = $1), \
                    coalesce((SELECT extract(epoch FROM now() - min(enqueued_at))::float8 \
                              FROM destination_queue WHERE destination_id = $1), 0), \
                    (SELECT count(*) FROM destination_dead_letters \
                     WHERE destination_id = $1 AND replayed_at IS NULL), \
                    (SELECT count(*) FROM destination_deliveries \
                     WHERE destination_id = $1 AND at > now() - interval '1 hour'), \
                    (SELECT count(*) FROM destination_deliveries WHERE destination_id = $1 \
                     AND at > now() - interval '1 hour' AND outcome IN ('transient', 'permanent'))",
        )
        .bind(id)
        .fetch_one(db)
        .await?;
    Ok(DestinationStatus {
        synced,
        pending,
        lag_secs: lag.max(0.0),
        last_success_at,
        error_rate: if total > 0 {
            failed as f64 / total as f64
        } else {
            0.0
        },
        dead_letters: dead,
    })
}

/// The newest deliveries of a destination.
pub async fn deliveries(
    db: &PgPool,
    id: Uuid,
    limit: i64,
) -> Result<Vec<DeliveryView>, DestinationError> {
    #[derive(sqlx::FromRow)]
    struct DeliveryRow {
        id: i64,
        at: DateTime<Utc>,
        operation: String,
        records: i32,
        status: Option<i32>,
        outcome: String,
        request: String,
        response: String,
        duration_ms: i32,
    }
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, at, operation, records, status, outcome, request, response, duration_ms \
         FROM destination_deliveries WHERE destination_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DeliveryView {
            id: r.id,
            at: r.at,
            operation: r.operation,
            records: r.records,
            status: r.status,
            outcome: r.outcome,
            request: r.request,
            response: r.response,
            duration_ms: r.duration_ms,
        })
        .collect())
}

/// The open dead letters of a destination, newest first.
pub async fn dead_letters(
    db: &PgPool,
    id: Uuid,
    limit: i64,
) -> Result<Vec<DeadLetterView>, DestinationError> {
    let rows: Vec<(i64, Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, profile_id, operation, error, failed_at FROM destination_dead_letters \
         WHERE destination_id = $1 AND replayed_at IS NULL ORDER BY id DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, profile_id, operation, error, failed_at)| DeadLetterView {
                id,
                profile_id,
                operation,
                error,
                failed_at,
            },
        )
        .collect())
}

/// Re-seals every destination's credentials from `old` to `new` (`ctl integration
/// reseal` changes the key for integrations and destinations alike); returns how many
/// were re-sealed. Credentials already under `new` are left as they are.
pub async fn reseal(
    db: &PgPool,
    old: &SecretsKey,
    new: &SecretsKey,
) -> Result<u64, DestinationError> {
    let mut tx = db.begin().await?;
    let rows: Vec<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT id, credentials FROM destinations FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
    let mut n = 0;
    for (id, sealed) in rows {
        if new.open(id.as_bytes(), &sealed).is_ok() {
            continue;
        }
        let creds = open_credentials(old, id, &sealed)?;
        sqlx::query(
            "UPDATE destinations SET credentials = $2, version = version + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(seal_credentials(new, id, &creds))
        .execute(&mut *tx)
        .await?;
        n += 1;
    }
    tx.commit().await?;
    Ok(n)
}
