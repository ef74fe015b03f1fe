//! The pieces every ConstIntel service shares, so each `main` stays a few lines.
//!
//! - [`ServiceContext`]: settings, the Postgres pool, a Redis connection and the
//!   shutdown token, built once by [`ServiceContext::connect`] (which also migrates);
//!   [`ServiceContext::streams`] is the service's Redis Streams handle.
//! - [`ops_router`]: `GET /healthz` (alive), `GET /readyz` (Postgres and Redis answer)
//!   and `GET /metrics` (Prometheus text).
//! - [`serve`]: runs an axum router on a listener until the token is cancelled, then
//!   drains in-flight requests; idle connections are closed after
//!   [`HttpTimeouts::idle`], and routers add [`HttpTimeouts::request_layer`]. Tests bind port 0 and pass their own token.
//! - [`main`] exits the process `SHUTDOWN_DEADLINE_SECS` after SIGTERM/SIGINT if the
//!   service has not stopped by then.
//! - [`shutdown_signal`]: resolves on SIGINT or SIGTERM.
//! - [`ApiError`]: the one JSON error shape of every HTTP surface.
//! - [`client_ip`]: the client address of a request behind `TRUSTED_PROXIES`.
//! - [`profile_changes`]: the `profiles.changes` outbox relay the identity merger and
//!   ml-inference run.
//! - [`handler_error`]: what a consumer answers for a failed delivery, by
//!   [`storage::fault::classify`] (outage, bad data, unknown).
//!
//! # Assumptions, running, testing
//!
//! A service built on it assumes Postgres and Redis at `DATABASE_URL` / `REDIS_URL`
//! (the context migrates Postgres on connect) and a bind address from its `*_BIND`
//! setting. Tests: it has none of its own; every service's `tests/ops.rs` checks the ops
//! endpoints and a clean stop on SIGTERM on the real binary (`cargo nextest run -p
//! ingest --test ops`, ...). No benchmark of its own: `bench/api`
//! measures the gateway's trivial `/healthz` rate as the HTTP ceiling.

pub mod client_ip;
mod error;
mod ops;
pub mod profile_changes;

pub use client_ip::{PeerAddr, TrustedProxies};
pub use error::{ApiError, ErrorBody};
pub use ops::{Readiness, ops_router};
pub use tokio_util::sync::CancellationToken;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use config::Settings;
use sqlx::PgPool;
use storage::fault::Fault;
use storage::secrets::SecretsKey;
use streams::HandlerError;
use tokio::net::TcpListener;

/// What a running service holds: settings, connections and the shutdown token.
#[derive(Clone)]
pub struct ServiceContext {
    /// The loaded settings.
    pub settings: Settings,
    /// Pool of Postgres connections.
    pub db: PgPool,
    /// Multiplexed, auto-reconnecting Redis connection.
    pub redis: redis::aio::ConnectionManager,
    /// Cancelled when the service must stop.
    pub shutdown: CancellationToken,
}

impl ServiceContext {
    /// Connects to Postgres (applying pending migrations) and Redis.
    pub async fn connect(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let db = storage::connect_with_timeouts(
            &settings.database_url,
            settings.database_max_connections,
            query_timeouts(&settings),
        )
        .await
        .with_context(|| {
            format!(
                "connecting to Postgres at {}",
                settings.database_url_redacted()
            )
        })?;
        storage::migrate(&db).await.context("applying migrations")?;
        let redis = connect_redis(&settings.redis_url).await?;
        // Display of a ConnectionUrl leaves the password out.
        tracing::info!(
            database = %settings.database_url,
            redis = %settings.redis_url,
            "connected"
        );
        Ok(Self {
            settings,
            db,
            redis,
            shutdown,
        })
    }

    /// The readiness checks of this context's connections.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            db: self.db.clone(),
            redis: self.redis.clone(),
        }
    }

    /// Serves `router` on `listener` with this service's [`HttpTimeouts`] until its
    /// shutdown token is cancelled (see [`serve`]).
    pub async fn serve(&self, listener: TcpListener, router: Router) -> anyhow::Result<()> {
        serve(
            listener,
            router,
            HttpTimeouts::from_settings(&self.settings),
            self.shutdown.clone(),
        )
        .await
    }

    /// The streams runtime of this service: its Redis connection, `STREAM_PREFIX`,
    /// `STREAM_MAXLEN` and `STREAM_DLQ_MAXLEN`. Consumers started from it block on a
    /// dedicated connection.
    pub fn streams(&self) -> streams::Streams {
        let streams = streams::Streams::new(
            self.redis.clone(),
            self.settings.stream_prefix.clone(),
            self.settings.stream_maxlen,
        )
        .with_dlq_maxlen(self.settings.stream_dlq_maxlen);
        // The URL was already used to connect `self.redis`, so it parses; if it somehow
        // does not, consumers fall back to polling rather than failing the service.
        match redis::Client::open(self.settings.redis_url.as_str()) {
            Ok(client) => streams.with_client(client),
            Err(_) => streams,
        }
    }
}

/// The statement and lock timeouts of a service's pool (`DATABASE_STATEMENT_TIMEOUT_MS`,
/// `DATABASE_LOCK_TIMEOUT_MS`).
pub fn query_timeouts(settings: &Settings) -> storage::QueryTimeouts {
    storage::QueryTimeouts::from_millis(
        settings.database_statement_timeout_ms,
        settings.database_lock_timeout_ms,
    )
}

/// The key integration secrets are sealed with, from `INTEGRATION_SECRETS_KEY`.
pub fn secrets_key(settings: &Settings) -> anyhow::Result<SecretsKey> {
    use config::ExposeSecret as _;
    let value = settings.integration_secrets_key.as_ref().context(
        "INTEGRATION_SECRETS_KEY is not set: integration secrets are sealed with it at rest. \
         Make one with `openssl rand -base64 32` (`./scripts/dev up` writes one into .env) \
         and give every service the same",
    )?;
    Ok(SecretsKey::from_base64(value.expose_secret())?)
}

/// [`secrets_key`], after sealing the integration secrets still stored in plaintext
/// (written before secrets were sealed): what services that read integrations call
/// at start-up.
pub async fn integration_secrets_key(ctx: &ServiceContext) -> anyhow::Result<SecretsKey> {
    let key = secrets_key(&ctx.settings)?;
    let sealed = storage::integrations::seal_plaintext(&ctx.db, &key)
        .await
        .context("sealing integration secrets stored in plaintext")?;
    if sealed > 0 {
        tracing::info!(integrations = sealed, key = %key.id(), "sealed integration secrets that were stored in plaintext");
    }
    Ok(key)
}

/// The outcome of a delivery its handler failed with `err`, by
/// [`storage::fault::classify`]: an outage is [`HandlerError::Transient`] (held and
/// retried, never counted), data Postgres refuses or that cannot be decoded is
/// [`HandlerError::Permanent`] (dead-lettered with the error's whole chain as the
/// reason), anything else [`HandlerError::Retry`]. Every consumer of the fleet maps its
/// errors through here.
pub fn handler_error(err: &(dyn std::error::Error + 'static)) -> HandlerError {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        // Transparent wrappers repeat their source's text; say it once.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = e.source();
    }
    match storage::fault::classify(err) {
        Fault::Transient => HandlerError::Transient(anyhow::anyhow!(message)),
        Fault::Permanent => HandlerError::Permanent(message),
        Fault::Unknown => HandlerError::Retry(anyhow::anyhow!(message)),
    }
}

/// Opens a managed Redis connection (reconnects on its own after a drop, within
/// [`streams::RECONNECT_MAX_DELAY`]). Errors name the URL without its password.
pub async fn connect_redis(url: &str) -> anyhow::Result<redis::aio::ConnectionManager> {
    let shown = || config::redact_url_password(url);
    let client =
        redis::Client::open(url).with_context(|| format!("invalid REDIS_URL {}", shown()))?;
    streams::managed_connection(client)
        .await
        .with_context(|| format!("connecting to Redis at {}", shown()))
}

/// How long HTTP clients may take: a request until its response starts, and a
/// connection to send a request's headers (`HTTP_REQUEST_TIMEOUT_SECS`,
/// `HTTP_IDLE_TIMEOUT_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// From a request's arrival to its response's head; answered 408 after that
    /// ([`HttpTimeouts::request_layer`], which ingest and the api-gateway put on their
    /// routes). A streamed response body (the live feeds) is not cut by it.
    pub request: Duration,
    /// How long a connection may wait before the headers of its next request are in —
    /// a new connection, or a kept-alive one between requests; closed after that.
    pub idle: Duration,
}

impl HttpTimeouts {
    /// The timeouts from the settings (at least a second each).
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            request: Duration::from_secs(settings.http_request_timeout_secs.max(1)),
            idle: Duration::from_secs(settings.http_idle_timeout_secs.max(1)),
        }
    }

    /// The layer that answers 408 (`request_timeout`) to a request whose response has
    /// not started within [`HttpTimeouts::request`].
    pub fn request_layer(&self) -> tower_http::timeout::TimeoutLayer {
        tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            self.request,
        )
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets in-flight requests finish (the process-wide `SHUTDOWN_DEADLINE_SECS` of [`main`]
/// bounds how long). A connection that has not sent the headers of its next request
/// within `timeouts.idle` (new, or kept alive between requests) is closed; the request
/// timeout is the router's own ([`HttpTimeouts::request_layer`]), so a route that streams
/// a large upload can go without it. Handlers can read the peer address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: HttpTimeouts,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "listening");
    // HTTP/1.1, as before: no client of the fleet speaks HTTP/2 to it.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let mut accept_failures = 0u32;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_failures = 0;
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    accept_failures = accept_failures.saturating_add(1);
                    tracing::warn!(error = %e, "accepting a connection failed");
                    let pause = Duration::from_millis(50 * u64::from(accept_failures.min(20)));
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed the process is still stoppable by SIGTERM.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// The standard `main` of a long-running service: loads settings, initialises
/// telemetry, binds `bind(&settings)`, connects, and runs `run` until SIGINT/SIGTERM.
///
/// `run` receives the context and the bound listener and must return when the
/// context's shutdown token is cancelled.
pub async fn main<F, Fut>(
    service: &'static str,
    bind: fn(&Settings) -> SocketAddr,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(ServiceContext, TcpListener) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = Settings::load()?;
    telemetry::init(service, settings.log_format);
    let addr = bind(&settings);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let shutdown = CancellationToken::new();
    let ctx = ServiceContext::connect(settings, shutdown.clone()).await?;
    let deadline = Duration::from_secs(ctx.settings.shutdown_deadline_secs);
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
            // In-flight requests and batches get until the deadline; a stuck one (a
            // client that never reads, a hung dependency) must not keep the process.
            tokio::time::sleep(deadline).await;
            tracing::error!(
                secs = deadline.as_secs(),
                "{service} did not stop within SHUTDOWN_DEADLINE_SECS; exiting"
            );
            std::process::exit(1);
        }
    });
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "{service} starting");
    let result = run(ctx, listener).await;
    match &result {
        Ok(()) => tracing::info!("{service} stopped"),
        Err(e) => tracing::error!(error = format!("{e:#}"), "{service} failed"),
    }
    result
}
