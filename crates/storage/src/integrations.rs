//! Integrations: one row per configured source with its secret. Shared by ingest (to
//! authenticate deliveries), the api-gateway and `ctl` (to manage them).
//!
//! Which kinds exist and what their secrets look like is the source registry's
//! (`ingestion::integrations::create` and `rotate_secret` call [`insert`] and
//! [`set_secret`]); this module stores rows. Secrets are random ([`generate_secret`],
//! the OS generator). The table keeps `secret_sha256` next to each secret so ingest can
//! find the integration for a write key or bearer token by an indexed hash lookup.

use chrono::{DateTime, Utc};
use domain::Source;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::StorageError;

/// A configured source.
#[derive(Clone, Serialize, Deserialize, sqlx::FromRow)]
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

const COLUMNS: &str =
    "id, kind, name, secret, enabled, settings, created_at, updated_at, last_delivery_at";

/// Stores a new integration of `kind` with `secret`.
pub async fn insert(
    db: &PgPool,
    kind: Source,
    name: &str,
    secret: &str,
) -> Result<Integration, StorageError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StorageError::Invalid("integration name is empty".into()));
    }
    let row = sqlx::query_as::<_, Integration>(&format!(
        "INSERT INTO integrations (id, kind, name, secret, secret_sha256) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(kind.as_str())
    .bind(name)
    .bind(secret)
    .bind(secret_sha256(secret))
    .fetch_one(db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => StorageError::Conflict(
            format!("a {kind} integration named `{name}` already exists"),
        ),
        _ => e.into(),
    })?;
    Ok(row)
}

/// Every integration, newest first.
pub async fn list(db: &PgPool) -> Result<Vec<Integration>, StorageError> {
    Ok(sqlx::query_as::<_, Integration>(&format!(
        "SELECT {COLUMNS} FROM integrations ORDER BY created_at DESC, id DESC"
    ))
    .fetch_all(db)
    .await?)
}

/// One integration by id.
pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<Integration>, StorageError> {
    Ok(sqlx::query_as::<_, Integration>(&format!(
        "SELECT {COLUMNS} FROM integrations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// The integration of a kind whose secret is `secret` (write key, bearer token).
/// The lookup goes through the hash; the caller still compares the secret itself in
/// constant time.
pub async fn find_by_secret(
    db: &PgPool,
    kind: &str,
    secret: &str,
) -> Result<Option<Integration>, StorageError> {
    Ok(sqlx::query_as::<_, Integration>(&format!(
        "SELECT {COLUMNS} FROM integrations WHERE kind = $1 AND secret_sha256 = $2"
    ))
    .bind(kind)
    .bind(secret_sha256(secret))
    .fetch_optional(db)
    .await?)
}

/// Replaces the secret of integration `id` and returns the updated row.
pub async fn set_secret(
    db: &PgPool,
    id: Uuid,
    secret: &str,
) -> Result<Option<Integration>, StorageError> {
    Ok(sqlx::query_as::<_, Integration>(&format!(
        "UPDATE integrations SET secret = $2, secret_sha256 = $3, updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(secret)
    .bind(secret_sha256(secret))
    .fetch_optional(db)
    .await?)
}

/// Enables or disables an integration.
pub async fn set_enabled(
    db: &PgPool,
    id: Uuid,
    enabled: bool,
) -> Result<Option<Integration>, StorageError> {
    Ok(sqlx::query_as::<_, Integration>(&format!(
        "UPDATE integrations SET enabled = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(enabled)
    .fetch_optional(db)
    .await?)
}
