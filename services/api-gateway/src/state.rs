//! What every handler shares: the connections, the settings, the streams publisher, the
//! Customer 360 cache and the login rate limiter. Cheap to clone (one `Arc`).

use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use config::Settings;
use service_kit::ServiceContext;
use sqlx::PgPool;
use storage::customer360::Customer360Cache;
use streams::Streams;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthCache, LoginLimiter};

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
    /// Per-client-address limit on login attempts.
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
    /// State over a service context's connections.
    pub fn new(ctx: &ServiceContext) -> Self {
        Self(Arc::new(Shared {
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
            login_limiter: LoginLimiter::new(ctx.settings.api.login_attempts_per_minute),
            auth_cache: AuthCache::new(Duration::from_millis(ctx.settings.api.auth_cache_ms)),
            openapi: OnceLock::new(),
            shutdown: ctx.shutdown.clone(),
            background: TaskTracker::new(),
        }))
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
