//! Integrations: one row per configured source with its secret. Shared by ingest (to
//! authenticate deliveries), the api-gateway and `ctl` (to manage them).
//!
//! Which kinds exist and what their secrets look like is the source registry's
//! (`ingestion::integrations::create` and `rotate_secret` call [`insert`] and
//! [`set_secret`]); this module stores rows. Secrets are random ([`generate_secret`],
//! the OS generator) and stored sealed under the [`SecretsKey`] every function here
//! takes (see [`crate::secrets`]); rows read come back with the secret opened. A row
//! written before secrets were sealed still holds its plaintext until
//! [`seal_plaintext`] seals it. The table keeps `secret_sha256` next to each secret so
//! ingest can find the integration for a write key or bearer token by an indexed hash
//! lookup.

use chrono::{DateTime, Utc};
use domain::Source;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::StorageError;
use crate::secrets::SecretsKey;

/// A configured source.
#[derive(Clone, Serialize, Deserialize)]
pub struct Integration {
    /// Integration id (appears in webhook URLs).
    pub id: Uuid,
    /// Source kind (`shopify`, `woocommerce`, `twilio`, `segment`, `pos`, `csv`).
    pub kind: String,
    /// Human name, unique per kind.
    pub name: String,
    /// Signing secret, auth token, write key or bearer token.
    pub secret: String,
    /// Disabled integrations reject deliveries with 403.
    pub enabled: bool,
    /// Kind-specific settings.
    pub settings: serde_json::Value,
    /// When the integration was created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Last accepted delivery.
    pub last_delivery_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("secret", &"[REDACTED]")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a secret, as stored in `secret_sha256`.
pub fn secret_sha256(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A new random secret: 32 bytes from the OS generator, hex encoded, after `prefix`
/// (the source's credential prefix, so leaked keys are recognisable).
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random generator is available");
    format!("{prefix}{}", hex::encode(bytes))
}

const COLUMNS: &str = "id, kind, name, secret, secret_sealed, enabled, settings, created_at, \
     updated_at, last_delivery_at";

/// A row as stored: the secret sealed (or, written before sealing, plain).
#[derive(sqlx::FromRow)]
struct Stored {
    id: Uuid,
    kind: String,
    name: String,
    secret: Option<String>,
    secret_sealed: Option<Vec<u8>>,
    enabled: bool,
    settings: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_delivery_at: Option<DateTime<Utc>>,
}

impl Stored {
    fn open(self, key: &SecretsKey) -> Result<Integration, StorageError> {
        let secret = match (self.secret_sealed, self.secret) {
            (Some(sealed), _) => key.open(self.id.as_bytes(), &sealed)?,
            (None, Some(plain)) => plain,
            (None, None) => {
                return Err(StorageError::Invalid(format!(
                    "integration {} has no secret",
                    self.id
                )));
            }
        };
        Ok(Integration {
            id: self.id,
            kind: self.kind,
            name: self.name,
            secret,
            enabled: self.enabled,
            settings: self.settings,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_delivery_at: self.last_delivery_at,
        })
    }
}

fn open_all(rows: Vec<Stored>, key: &SecretsKey) -> Result<Vec<Integration>, StorageError> {
    rows.into_iter().map(|r| r.open(key)).collect()
}

fn open_one(row: Option<Stored>, key: &SecretsKey) -> Result<Option<Integration>, StorageError> {
    row.map(|r| r.open(key)).transpose()
}

/// Stores a new integration of `kind` with `secret` (sealed under `key`).
pub async fn insert(
    db: &PgPool,
    key: &SecretsKey,
    kind: Source,
    name: &str,
    secret: &str,
) -> Result<Integration, StorageError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StorageError::Invalid("integration name is empty".into()));
    }
    let id = Uuid::now_v7();
    let row = sqlx::query_as::<_, Stored>(&format!(
        "INSERT INTO integrations (id, kind, name, secret_sealed, secret_sha256) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(kind.as_str())
    .bind(name)
    .bind(key.seal(id.as_bytes(), secret))
    .bind(secret_sha256(secret))
    .fetch_one(db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => StorageError::Conflict(
            format!("a {kind} integration named `{name}` already exists"),
        ),
        _ => e.into(),
    })?;
    row.open(key)
}

/// Every integration, newest first.
pub async fn list(db: &PgPool, key: &SecretsKey) -> Result<Vec<Integration>, StorageError> {
    let rows = sqlx::query_as::<_, Stored>(&format!(
        "SELECT {COLUMNS} FROM integrations ORDER BY created_at DESC, id DESC"
    ))
    .fetch_all(db)
    .await?;
    open_all(rows, key)
}

/// Up to `limit` integrations, newest first, after `after` (`created_at`, `id` of the
/// previous page's last row).
pub async fn page(
    db: &PgPool,
    key: &SecretsKey,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Integration>, StorageError> {
    let (at, after_id) = after.unzip();
    let rows = sqlx::query_as::<_, Stored>(&format!(
        "SELECT {COLUMNS} FROM integrations \
         WHERE $1::timestamptz IS NULL OR (created_at, id) < ($1, $2) \
         ORDER BY created_at DESC, id DESC LIMIT $3"
    ))
    .bind(at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    open_all(rows, key)
}

/// One integration by id.
pub async fn get(
    db: &PgPool,
    key: &SecretsKey,
    id: Uuid,
) -> Result<Option<Integration>, StorageError> {
    let row =
        sqlx::query_as::<_, Stored>(&format!("SELECT {COLUMNS} FROM integrations WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?;
    open_one(row, key)
}

/// The integration of a kind whose secret is `secret` (write key, bearer token).
/// The lookup goes through the hash; the caller still compares the secret itself in
/// constant time.
pub async fn find_by_secret(
    db: &PgPool,
    key: &SecretsKey,
    kind: &str,
    secret: &str,
) -> Result<Option<Integration>, StorageError> {
    let row = sqlx::query_as::<_, Stored>(&format!(
        "SELECT {COLUMNS} FROM integrations WHERE kind = $1 AND secret_sha256 = $2"
    ))
    .bind(kind)
    .bind(secret_sha256(secret))
    .fetch_optional(db)
    .await?;
    open_one(row, key)
}

/// Replaces the secret of integration `id` (sealed under `key`) and returns the
/// updated row.
pub async fn set_secret(
    db: &PgPool,
    key: &SecretsKey,
    id: Uuid,
    secret: &str,
) -> Result<Option<Integration>, StorageError> {
    let row = sqlx::query_as::<_, Stored>(&format!(
        "UPDATE integrations SET secret = NULL, secret_sealed = $2, secret_sha256 = $3, \
         updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(key.seal(id.as_bytes(), secret))
    .bind(secret_sha256(secret))
    .fetch_optional(db)
    .await?;
    open_one(row, key)
}

/// Enables or disables an integration.
pub async fn set_enabled(
    db: &PgPool,
    key: &SecretsKey,
    id: Uuid,
    enabled: bool,
) -> Result<Option<Integration>, StorageError> {
    let row = sqlx::query_as::<_, Stored>(&format!(
        "UPDATE integrations SET enabled = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(enabled)
    .fetch_optional(db)
    .await?;
    open_one(row, key)
}

/// Seals the secrets still stored in plaintext (rows written before secrets were
/// sealed); returns how many. Idempotent and safe to run from several processes at
/// once (rows are locked while sealed).
pub async fn seal_plaintext(db: &PgPool, key: &SecretsKey) -> Result<u64, StorageError> {
    let mut tx = db.begin().await?;
    let plain: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, secret FROM integrations WHERE secret IS NOT NULL FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
    for (id, secret) in &plain {
        sqlx::query("UPDATE integrations SET secret = NULL, secret_sealed = $2 WHERE id = $1")
            .bind(id)
            .bind(key.seal(id.as_bytes(), secret))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(plain.len() as u64)
}

/// Re-seals every secret sealed under `old` under `new` (changing
/// `INTEGRATION_SECRETS_KEY`); rows already under `new` are left alone. Returns how
/// many were re-sealed. All or nothing.
pub async fn reseal(db: &PgPool, old: &SecretsKey, new: &SecretsKey) -> Result<u64, StorageError> {
    let mut tx = db.begin().await?;
    let sealed: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT id, secret_sealed FROM integrations WHERE secret_sealed IS NOT NULL FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut count = 0;
    for (id, value) in &sealed {
        if new.open(id.as_bytes(), value).is_ok() {
            continue;
        }
        let secret = old.open(id.as_bytes(), value)?;
        sqlx::query("UPDATE integrations SET secret_sealed = $2 WHERE id = $1")
            .bind(id)
            .bind(new.seal(id.as_bytes(), &secret))
            .execute(&mut *tx)
            .await?;
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}
