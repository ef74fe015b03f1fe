//! Dashboard users, their sessions, and API tokens for machines: the credentials the
//! api-gateway authenticates with, shared with `ctl user add` / `ctl token create`.
//!
//! Nothing secret is stored in the clear. Passwords are argon2id PHC strings; a session
//! cookie and an API token are 32 random bytes, stored only as their SHA-256, so a
//! database leak yields nothing that signs in. A token is found by the hash of what the
//! caller presents (an indexed equality lookup on a digest of 256 random bits, which
//! leaks nothing useful through timing).
//!
//! Password hashing is deliberately slow (tens of milliseconds): async callers run
//! [`hash_password`] and [`verify_password`] on a blocking thread.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Duration, Utc};
use domain::api::Role;
use domain::{Identifier, IdentifierKind};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Named, StorageError};

/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 12;

/// How often `last_used_at` / `last_seen_at` are refreshed at most: a write per request
/// would cost more than the information is worth.
const TOUCH_EVERY_SECS: i64 = 60;

/// A dashboard user.
#[derive(Clone, sqlx::FromRow)]
pub struct User {
    /// User id.
    pub id: Uuid,
    /// Lower-case e-mail, the login name.
    pub email: String,
    /// argon2 PHC string.
    pub password_hash: String,
    /// Its role; a name the code does not know fails the read (see [`crate::Named`]).
    pub role: Named<Role>,
    /// Disabled users cannot sign in.
    pub disabled: bool,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// Last successful login.
    pub last_login_at: Option<DateTime<Utc>>,
}

impl User {
    /// The user's role.
    pub fn role(&self) -> Role {
        self.role.0
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// An API token's stored row (never the token).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiToken {
    /// Token id.
    pub id: Uuid,
    /// What it is for.
    pub name: String,
    /// First characters of the token.
    pub prefix: String,
    /// Its role; a name the code does not know fails the read (see [`crate::Named`]).
    pub role: Named<Role>,
    /// The admin who created it.
    pub created_by: Option<Uuid>,
    /// When the token was created.
    pub created_at: DateTime<Utc>,
    /// Last use (refreshed at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked tokens are refused.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// The token's role.
    pub fn role(&self) -> Role {
        self.role.0
    }
}

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The signed-in user.
    pub user: User,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}

/// Normalises a login e-mail the way identifiers are (trimmed, lower-cased, checked).
pub fn normalize_email(raw: &str) -> Result<String, StorageError> {
    Identifier::parse(IdentifierKind::Email, raw, "")
        .map(|i| i.value)
        .map_err(|e| StorageError::Invalid(e.to_string()))
}

/// Rejects passwords that are too short.
pub fn validate_password(password: &str) -> Result<(), StorageError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(StorageError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// Hashes a password with argon2id and a random salt. Slow on purpose: call it on a
/// blocking thread from async code.
pub fn hash_password(password: &str) -> Result<String, StorageError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random generator is available");
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| StorageError::Invalid(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StorageError::Invalid(format!("hashing the password: {e}")))
}

/// Whether `password` matches the PHC string `hash` (constant-time comparison inside
/// argon2). A malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a password nobody has, to spend the same time verifying a login for an
/// unknown e-mail as for a known one (so response times do not reveal which e-mails
/// have accounts).
pub fn decoy_password_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 24];
        getrandom::fill(&mut random).expect("the OS random generator is available");
        hash_password(&hex::encode(random)).expect("hashing a random password")
    })
}

/// A new random secret: `prefix` followed by 32 random bytes in hex.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random generator is available");
    format!("{prefix}{}", hex::encode(bytes))
}

/// SHA-256 of a session or API token, as stored.
pub fn token_sha256(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

const USER_COLUMNS: &str = "id, email, password_hash, role, disabled, created_at, last_login_at";

fn conflict_on_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> StorageError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
            StorageError::Conflict(what())
        }
        _ => e.into(),
    }
}

/// Inserts a user whose password is already hashed.
pub async fn insert_user(
    db: &PgPool,
    email: &str,
    password_hash: &str,
    role: Role,
) -> Result<User, StorageError> {
    let email = normalize_email(email)?;
    sqlx::query_as::<_, User>(&format!(
        "INSERT INTO users (id, email, password_hash, role) VALUES ($1, $2, $3, $4) \
         RETURNING {USER_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(&email)
    .bind(password_hash)
    .bind(role.as_str())
    .fetch_one(db)
    .await
    .map_err(|e| conflict_on_unique(e, || format!("a user with e-mail {email} already exists")))
}

/// Creates a user: validates the e-mail and password, hashes the password on a blocking
/// thread and inserts the row.
pub async fn create_user(
    db: &PgPool,
    email: &str,
    password: &str,
    role: Role,
) -> Result<User, StorageError> {
    normalize_email(email)?;
    validate_password(password)?;
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| StorageError::Invalid(format!("hashing task failed: {e}")))??;
    insert_user(db, email, &hash, role).await
}

/// Creates `email` as admin if no user exists yet; returns the user when it did. Safe
/// when several gateways start at once: the check and insert run under one advisory
/// lock.
pub async fn ensure_first_admin(
    db: &PgPool,
    email: &str,
    password: &str,
) -> Result<Option<User>, StorageError> {
    normalize_email(email)?;
    validate_password(password)?;
    let owned = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&owned))
        .await
        .map_err(|e| StorageError::Invalid(format!("hashing task failed: {e}")))??;
    let mut tx = db.begin().await?;
    // Key: "users" as a number, so concurrent bootstraps serialise on one lock.
    sqlx::query("SELECT pg_advisory_xact_lock(7573657273)")
        .execute(&mut *tx)
        .await?;
    let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
        .fetch_one(&mut *tx)
        .await?;
    if any {
        return Ok(None);
    }
    let user = sqlx::query_as::<_, User>(&format!(
        "INSERT INTO users (id, email, password_hash, role) VALUES ($1, $2, $3, 'admin') \
         RETURNING {USER_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(normalize_email(email)?)
    .bind(&hash)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(user))
}

/// A user by e-mail (normalised first); `None` for unknown or malformed e-mails.
pub async fn find_user_by_email(db: &PgPool, email: &str) -> Result<Option<User>, StorageError> {
    let Ok(email) = normalize_email(email) else {
        return Ok(None);
    };
    Ok(sqlx::query_as::<_, User>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(db)
    .await?)
}

/// A user by id.
pub async fn get_user(db: &PgPool, id: Uuid) -> Result<Option<User>, StorageError> {
    Ok(
        sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Users in creation order, after the keyset `after` (`created_at`, `id`).
pub async fn list_users(
    db: &PgPool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<User>, StorageError> {
    let (at, id) = after.unzip();
    Ok(sqlx::query_as::<_, User>(&format!(
        "SELECT {USER_COLUMNS} FROM users \
         WHERE $1::timestamptz IS NULL OR (created_at, id) > ($1, $2) \
         ORDER BY created_at, id LIMIT $3"
    ))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Changes a user's role, disabled flag and/or password hash. Disabling a user or
/// changing the password ends their sessions. `None` when the user does not exist.
pub async fn update_user(
    db: &PgPool,
    id: Uuid,
    role: Option<Role>,
    disabled: Option<bool>,
    password_hash: Option<&str>,
) -> Result<Option<User>, StorageError> {
    let mut tx = db.begin().await?;
    let user = sqlx::query_as::<_, User>(&format!(
        "UPDATE users SET role = COALESCE($2, role), disabled = COALESCE($3, disabled), \
         password_hash = COALESCE($4, password_hash) WHERE id = $1 RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(role.map(Role::as_str))
    .bind(disabled)
    .bind(password_hash)
    .fetch_optional(&mut *tx)
    .await?;
    if user.is_some() && (disabled == Some(true) || password_hash.is_some()) {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(user)
}

/// Records a successful login.
pub async fn record_login(db: &PgPool, user_id: Uuid) -> Result<(), StorageError> {
    sqlx::query("UPDATE users SET last_login_at = now() WHERE id = $1")
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Starts a session of `ttl` for a user; returns the cookie value (shown once, stored
/// only hashed) and the expiry.
pub async fn create_session(
    db: &PgPool,
    user_id: Uuid,
    ttl: Duration,
) -> Result<(String, DateTime<Utc>), StorageError> {
    let token = new_secret("");
    let expires_at = Utc::now() + ttl;
    sqlx::query("INSERT INTO sessions (token_sha256, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(token_sha256(&token))
        .bind(user_id)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok((token, expires_at))
}

/// The live session of a cookie value: not expired, its user not disabled.
pub async fn find_session(db: &PgPool, token: &str) -> Result<Option<Session>, StorageError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: User,
        expires_at: DateTime<Utc>,
        last_seen_at: DateTime<Utc>,
    }
    let hash = token_sha256(token);
    let row = sqlx::query_as::<_, Row>(
        "SELECT u.id, u.email, u.password_hash, u.role, u.disabled, u.created_at, \
                u.last_login_at, s.expires_at, s.last_seen_at \
         FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_sha256 = $1 AND s.expires_at > now() AND NOT u.disabled",
    )
    .bind(&hash)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if (Utc::now() - row.last_seen_at).num_seconds() >= TOUCH_EVERY_SECS {
        sqlx::query("UPDATE sessions SET last_seen_at = now() WHERE token_sha256 = $1")
            .bind(&hash)
            .execute(db)
            .await?;
    }
    Ok(Some(Session {
        user: row.user,
        expires_at: row.expires_at,
    }))
}

/// Ends the session of a cookie value (no error if there is none).
pub async fn delete_session(db: &PgPool, token: &str) -> Result<(), StorageError> {
    sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1")
        .bind(token_sha256(token))
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes expired sessions; returns how many.
pub async fn purge_expired_sessions(db: &PgPool) -> Result<u64, StorageError> {
    Ok(
        sqlx::query("DELETE FROM sessions WHERE expires_at <= now()")
            .execute(db)
            .await?
            .rows_affected(),
    )
}

const TOKEN_COLUMNS: &str =
    "id, name, prefix, role, created_by, created_at, last_used_at, revoked_at";

/// Prefix of every API token, so a leaked one is recognisable.
pub const API_TOKEN_PREFIX: &str = "ci_tok_";

/// Creates an API token; returns the token (shown once, stored only hashed) and its row.
pub async fn create_token(
    db: &PgPool,
    name: &str,
    role: Role,
    created_by: Option<Uuid>,
) -> Result<(String, ApiToken), StorageError> {
    // As the API documents it: at most 100 characters, not blank.
    if name.chars().count() > 100 || name.trim().is_empty() {
        return Err(StorageError::Invalid(
            "the token name must have 1 to 100 characters".into(),
        ));
    }
    let name = name.trim();
    let token = new_secret(API_TOKEN_PREFIX);
    let prefix: String = token.chars().take(API_TOKEN_PREFIX.len() + 6).collect();
    let row = sqlx::query_as::<_, ApiToken>(&format!(
        "INSERT INTO api_tokens (id, name, token_sha256, prefix, role, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(token_sha256(&token))
    .bind(&prefix)
    .bind(role.as_str())
    .bind(created_by)
    .fetch_one(db)
    .await?;
    Ok((token, row))
}

/// The unrevoked API token whose value is `token`.
pub async fn find_token(db: &PgPool, token: &str) -> Result<Option<ApiToken>, StorageError> {
    let row = sqlx::query_as::<_, ApiToken>(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL"
    ))
    .bind(token_sha256(token))
    .fetch_optional(db)
    .await?;
    if let Some(t) = &row {
        let stale = t
            .last_used_at
            .is_none_or(|at| (Utc::now() - at).num_seconds() >= TOUCH_EVERY_SECS);
        if stale {
            sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE id = $1")
                .bind(t.id)
                .execute(db)
                .await?;
        }
    }
    Ok(row)
}

/// API tokens in creation order, after the keyset `after`.
pub async fn list_tokens(
    db: &PgPool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ApiToken>, StorageError> {
    let (at, id) = after.unzip();
    Ok(sqlx::query_as::<_, ApiToken>(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens \
         WHERE $1::timestamptz IS NULL OR (created_at, id) > ($1, $2) \
         ORDER BY created_at, id LIMIT $3"
    ))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Revokes a token (idempotent); `None` when it does not exist.
pub async fn revoke_token(db: &PgPool, id: Uuid) -> Result<Option<ApiToken>, StorageError> {
    Ok(sqlx::query_as::<_, ApiToken>(&format!(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 \
         RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert!(!verify_password("not a hash", "x"));
        assert_ne!(
            hash,
            hash_password("correct horse battery").unwrap(),
            "salted"
        );
        assert!(!verify_password(decoy_password_hash(), ""));
    }

    #[test]
    fn secrets_and_rules() {
        let t = new_secret(API_TOKEN_PREFIX);
        assert!(t.starts_with("ci_tok_"));
        assert_eq!(t.len(), API_TOKEN_PREFIX.len() + 64);
        assert_ne!(t, new_secret(API_TOKEN_PREFIX));
        assert_eq!(token_sha256("a").len(), 32);
        assert!(validate_password("short").is_err());
        assert!(validate_password("twelve chars").is_ok());
        assert_eq!(
            normalize_email(" Admin@Example.COM ").unwrap(),
            "admin@example.com"
        );
        assert!(normalize_email("nope").is_err());
    }
}
