//! What every handler shares: the connections, the settings, the streams publisher, the
//! Customer 360 cache and the login limits. Cheap to clone (one `Arc`).

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use config::Settings;
use service_kit::{ServiceContext, TrustedProxies};
use sqlx::PgPool;
use storage::customer360::Customer360Cache;
use storage::secrets::SecretsKey;
use streams::Streams;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::AuthCache;
use crate::throttle::LoginLimiter;

/// The gateway's shared state.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields behind [`AppState`].
pub struct Shared {
    /// Postgres pool.
    pub db: PgPool,
    /// Redis connection (Customer 360 cache, stream inspection).
    pub redis: redis::aio::ConnectionManager,
    /// The fleet's settings.
    pub settings: Settings,
    /// Publisher and inspector of the fleet's streams.
    pub streams: Streams,
    /// Customer 360 documents through the Redis cache (shared with the merger).
    pub customer360: Customer360Cache,
    /// The key integration secrets are sealed with.
    pub secrets_key: SecretsKey,
    /// The proxies whose forwarded headers are believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// Limits on login attempts per client address and per account.
    pub(crate) login_limiter: LoginLimiter,
    /// Recently verified sessions and tokens.
    pub(crate) auth_cache: AuthCache,
    /// The OpenAPI document, serialised once when the API is built.
    pub(crate) openapi: OnceLock<bytes::Bytes>,
    /// Cancelled at shutdown: ends the server-sent-event feeds so the server can drain.
    pub shutdown: CancellationToken,
    /// CSV imports still running after their upload request answered; shutdown waits
    /// for them.
    pub(crate) background: TaskTracker,
}

impl AppState {
    /// State over a service context's connections, with the key integration secrets
    /// are sealed with (`service_kit::integration_secrets_key`).
    /// Fails on a malformed `TRUSTED_PROXIES`.
    pub fn new(ctx: &ServiceContext, secrets_key: SecretsKey) -> anyhow::Result<Self> {
        let trusted_proxies: TrustedProxies = ctx.settings.trusted_proxies.parse()?;
        Ok(Self(Arc::new(Shared {
            secrets_key,
            trusted_proxies,
            db: ctx.db.clone(),
            redis: ctx.redis.clone(),
            settings: ctx.settings.clone(),
            streams: ctx.streams(),
            customer360: Customer360Cache::new(
                ctx.db.clone(),
                ctx.redis.clone(),
                ctx.settings.stream_prefix.clone(),
                Duration::from_secs(ctx.settings.identity.customer360_cache_ttl_secs),
            ),
            login_limiter: LoginLimiter::new(
                ctx.settings.api.login_attempts_per_minute,
                ctx.settings.api.login_attempts_per_account_per_hour,
            ),
            auth_cache: AuthCache::new(Duration::from_millis(ctx.settings.api.auth_cache_ms)),
            openapi: OnceLock::new(),
            shutdown: ctx.shutdown.clone(),
            background: TaskTracker::new(),
        })))
    }

    /// The Redis key prefix of this fleet.
    pub fn prefix(&self) -> &str {
        &self.settings.stream_prefix
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
