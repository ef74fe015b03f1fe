//! The fleet's shared state: Postgres access, plus the cache and the credential hashing
//! that belong to rows kept here.
//!
//! Postgres is the system of record: every service connects through [`connect`], and
//! every schema change is a file in `migrations/` embedded here by [`MIGRATOR`]. Each
//! service applies pending migrations at start-up ([`migrate`]); sqlx takes a Postgres
//! advisory lock while migrating, so several services starting together apply each
//! migration exactly once. Queries use bound parameters only.
//!
//! - [`normalized`]: the one writer of normalised events, orders, refunds and products;
//!   [`profiles`]: the one writer of `customer_profile` rows; [`profile_changes`]: the
//!   one writer of `profile_change_outbox` (what `profiles.changes` publishes);
//!   [`outbox`]: what the relays of the profile-keyed outboxes share.
//! - [`fault`]: whether a failure is an outage, bad data or unknown — the one
//!   classification every consumer's retry and dead-letter decision uses.
//! - [`integrations`], [`models`] (the registry's rows as the API shows them), [`names`]
//!   (enum names in TEXT columns).
//! - [`customer360`]: the Customer 360 document, built from these tables, and its Redis
//!   cache (`{STREAM_PREFIX}c360:{id}`). It lives here, not in a crate of its own,
//!   because the document is nothing but a read of these rows; Redis only keeps a copy.
//! - [`recommendations`]: a profile's recommended products as the `recommend` model
//!   stored them, for the API, automation variables and destination fields.
//! - [`users`]: users, sessions and API tokens, with the argon2id password hashing and
//!   token digests, so a secret never leaves the module that stores its hash.
//!
//! # Assumptions, running, testing
//!
//! Assumes a Postgres reachable at `DATABASE_URL` (the database is created by
//! [`ensure_database`] or `ctl migrate`) and, for [`customer360`]'s cache, Redis. Tests:
//! `cargo nextest run -p storage` (`tests/` run against the real Postgres and Redis, each
//! in a database of its own: migrations, the normalised-event writer, the Customer 360
//! document and cache). Benchmark: `bench/api/run.sh` measures Customer 360 reads, cached
//! and built from Postgres.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

pub mod customer360;
pub mod fault;
pub mod integrations;
pub mod models;
pub mod names;
pub mod normalized;
pub mod outbox;
pub mod profile_changes;
pub mod profiles;
pub mod recommendations;
pub mod secrets;
pub mod users;

pub use names::Named;

/// Prices sequential scans out for the rest of the transaction (`SET LOCAL`), for
/// transactions whose every statement reads or writes rows by keys an index serves: the
/// merger's resolver transactions and the Customer 360 refresh's reads.
///
/// Postgres plans such a statement from the table's statistics and size, and a
/// connection keeps a statement's plan once it has run a few times. Where the
/// statistics are missing or stale (a fresh database, a new brand's first minutes, a
/// burst before autovacuum has analysed anything), or the plan was made while the table
/// was nearly empty, the planner scans whole tables for a batch's few hundred keys, and
/// keeps doing so as they grow. With sequential scans priced out an index probe per key
/// is taken at any size; a table no index can serve is still scanned.
pub const KEY_LOOKUPS_ONLY: &str = "SET LOCAL enable_seqscan = off";

/// A 64-bit advisory-lock key: the first 8 bytes (big-endian) of SHA-256 over `parts`
/// in order. One derivation for every lock of the fleet (orders, identifiers, profiles),
/// so keys of different kinds only differ by the prefix each kind hashes first.
pub fn advisory_key(parts: &[&[u8]]) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = parts
        .iter()
        .fold(Sha256::new(), |hasher, part| hasher.chain_update(part))
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}
pub use sqlx;

/// Every migration in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The connection string could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// Postgres refused or failed a statement. (Shown as the `sqlx` error, which stays
    /// in the source chain for [`fault::classify`].)
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed to apply.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The input was rejected (unknown kind, empty name, ...).
    #[error("{0}")]
    Invalid(String),
    /// The row would break a uniqueness rule.
    #[error("{0}")]
    Conflict(String),
}

/// A JSON column parsed straight into `T` (no `serde_json::Value` tree in between),
/// or `T::default()` when it does not parse: a profile `state` written by another build
/// reads as empty instead of failing the read (the identity step and the Customer 360
/// documents both read it so).
pub struct OrDefault<T>(pub T);

impl<T> sqlx::Type<sqlx::Postgres> for OrDefault<T> {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <sqlx::types::Json<T> as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <sqlx::types::Json<T> as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r, T: serde::Deserialize<'r> + Default + 'r> sqlx::Decode<'r, sqlx::Postgres>
    for OrDefault<T>
{
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let parsed = <sqlx::types::Json<T> as sqlx::Decode<'r, sqlx::Postgres>>::decode(value);
        Ok(Self(parsed.map(|j| j.0).unwrap_or_default()))
    }
}

/// Opens a pool of at most `max_connections` to `database_url`, with no limit on how
/// long a statement runs (operator tools, benchmarks); services use
/// [`connect_with_timeouts`].
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, StorageError> {
    connect_with_timeouts(database_url, max_connections, QueryTimeouts::default()).await
}

/// How long any statement on a pool's connections may run and wait for locks (Postgres
/// `statement_timeout` and `lock_timeout`, set when each connection starts), so no
/// query of a service hangs forever. Zero means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryTimeouts {
    /// `statement_timeout`.
    pub statement: Duration,
    /// `lock_timeout`.
    pub lock: Duration,
}

impl QueryTimeouts {
    /// `DATABASE_STATEMENT_TIMEOUT_MS` and `DATABASE_LOCK_TIMEOUT_MS`.
    pub fn from_millis(statement_ms: u64, lock_ms: u64) -> Self {
        Self {
            statement: Duration::from_millis(statement_ms),
            lock: Duration::from_millis(lock_ms),
        }
    }
}

/// Opens a pool of at most `max_connections` to `database_url` whose connections run
/// under `timeouts`. A statement cancelled by them fails with SQLSTATE 57014 or 55P03,
/// which [`fault::classify`] calls an outage.
pub async fn connect_with_timeouts(
    database_url: &str,
    max_connections: u32,
    timeouts: QueryTimeouts,
) -> Result<PgPool, StorageError> {
    let options = connect_options(database_url)?.options([
        (
            "statement_timeout",
            timeouts.statement.as_millis().to_string(),
        ),
        ("lock_timeout", timeouts.lock.as_millis().to_string()),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
}

fn connect_options(database_url: &str) -> Result<PgConnectOptions, StorageError> {
    PgConnectOptions::from_str(database_url)
        .map(|o| o.log_statements(tracing::log::LevelFilter::Trace))
        .map_err(|e| StorageError::InvalidUrl(e.to_string()))
}

/// Applies every pending migration. Idempotent. Runs on a connection of its own, taken
/// out of the pool, with no statement or lock timeout: a migration may rewrite a large
/// table or wait for the advisory lock of a concurrent start.
pub async fn migrate(pool: &PgPool) -> Result<(), StorageError> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut conn)
        .await?;
    sqlx::query("SET lock_timeout = 0")
        .execute(&mut conn)
        .await?;
    MIGRATOR.run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Creates the database named in `database_url` if it does not exist yet, connecting
/// to the server's `postgres` database to do so. Returns whether it was created.
pub async fn ensure_database(database_url: &str) -> Result<bool, StorageError> {
    let options = connect_options(database_url)?;
    let name = options
        .get_database()
        .ok_or_else(|| StorageError::InvalidUrl("no database name in URL".into()))?
        .to_owned();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if exists {
        return Ok(false);
    }
    // Identifiers cannot be bound as parameters; quote it as an identifier instead.
    let statement = format!("CREATE DATABASE {}", quote_ident(&name));
    match sqlx::query(&statement).execute(&mut admin).await {
        Ok(_) => Ok(true),
        // Another process created it between the check and the CREATE.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Quotes a Postgres identifier (`"name"`, doubling inner quotes).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Checks the database answers, for readiness probes.
pub async fn ping(pool: &PgPool) -> Result<(), StorageError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("abc"), "\"abc\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn migrations_are_embedded_in_order() {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert!(!versions.is_empty());
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
    }
}
