//! The ingest service: the HTTP edge where every source's events arrive.
//!
//! Its routes come from the source registry (`ingestion::sources`): every signed
//! webhook (`/webhooks/{kind}/{integration}…`: Shopify, WooCommerce, Twilio WhatsApp)
//! goes through one generic handler (`webhooks`); the Segment-compatible tracking API
//! (`/v1/{call}`, write key) and POS bills (`/pos/{integration}/bills`, bearer token)
//! keep their own handlers for their batch shapes. docs/ingestion.md has the endpoint
//! table, rendered from the same registry.
//!
//! A delivery is answered 2xx only after its raw event is committed to
//! `customer_raw_event` (group commit, see `ingestion::raw`); it is then published to
//! `events.raw`, and an outbox relay running here republishes whatever a crash or a
//! Redis outage left unpublished. Bad signatures (401), unknown integrations (404),
//! disabled ones (403), malformed bodies and anything that could not be stored or
//! normalised (400, `ingestion::sources::admission`), oversize bodies (413) and clients
//! or integrations over their rate (429, `limits`) store nothing.
//! Every delivery naming a known integration is recorded in its connection log.
//!
//! Shutdown: the server stops accepting, in-flight requests finish (their events are
//! committed), then the writer and publisher drain and the relay stops.
//!
//! # Assumptions, running, testing
//!
//! Assumes a migrated Postgres and Redis, integrations created (`ctl integration add` or the
//! dashboard) and `PUBLIC_BASE_URL` set to the address the platforms call (Twilio signs
//! the full public URL). Run: `just run ingest` (port 8081). Tests: `cargo nextest
//! run -p ingest` (the service on port 0: every source's signed deliveries, duplicates,
//! rejections, the outbox relay). Benchmark: `bench/ingest/run.sh` (events stored per
//! second against this machine's Redis and Postgres ceilings).

mod delivery;
mod integrations;
mod limits;
mod pos;
mod tracking;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, header};
use axum::routing::post;
use ingestion::connection_log::ConnectionLog;
use ingestion::outbox::RawEventOutbox;
use ingestion::raw::{RawEventStore, WriterOptions};
use service_kit::ServiceContext;
use streams::OutboxOptions;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use integrations::Integrations;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    store: RawEventStore,
    connection_log: ConnectionLog,
    integrations: Arc<Integrations>,
    /// `PUBLIC_BASE_URL` without a trailing slash.
    public_base_url: Arc<str>,
    max_body: usize,
    /// `DEFAULT_CURRENCY`, if set.
    default_currency: Option<Arc<str>>,
    /// `WEBHOOK_MAX_AGE_SECS`, if not 0.
    webhook_max_age: Option<chrono::TimeDelta>,
    limits: Arc<limits::RateLimits>,
}

fn router(app: App) -> Router {
    // Browser SDKs post from the brand's own site, so any origin may call the tracking
    // API; the write key, not the origin, authenticates it.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::CONTENT_ENCODING,
        ])
        .max_age(Duration::from_secs(86_400));
    let tracking = Router::new()
        .route(
            ingestion::sources::segment::TRACKING_ROUTE,
            post(tracking::tracking),
        )
        .layer(cors);
    webhooks::routes()
        .route(ingestion::sources::pos::BILLS_ROUTE, post(pos::bills))
        .merge(tracking)
        // Bodies are read with an explicit limit in each handler (JSON 413 answers).
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            limits::per_client,
        ))
        .with_state(app)
}

/// Runs the service on `listener` until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener) -> anyhow::Result<()> {
    let settings = &ctx.settings;
    let secrets_key = service_kit::integration_secrets_key(&ctx).await?;
    let streams = ctx.streams();
    let (store, store_tasks) = RawEventStore::start(
        ctx.db.clone(),
        Some(streams.clone()),
        WriterOptions::from_settings(settings),
    );
    let (connection_log, log_task) =
        ConnectionLog::start(ctx.db.clone(), 500, Duration::from_millis(200));
    let app = App {
        store,
        connection_log,
        integrations: Arc::new(Integrations::new(
            ctx.db.clone(),
            secrets_key,
            Duration::from_millis(settings.ingest.ingest_integration_cache_ms),
        )),
        public_base_url: Arc::from(settings.ingest.public_base_url.trim_end_matches('/')),
        max_body: settings.ingest.ingest_max_body_bytes,
        default_currency: Some(settings.ingest.default_currency.trim())
            .filter(|c| !c.is_empty())
            .map(Arc::from),
        webhook_max_age: (settings.ingest.webhook_max_age_secs > 0).then(|| {
            i64::try_from(settings.ingest.webhook_max_age_secs)
                .ok()
                .and_then(chrono::TimeDelta::try_seconds)
                .unwrap_or(chrono::TimeDelta::MAX)
        }),
        limits: Arc::new(limits::RateLimits::new(
            settings.ingest.ingest_rate_per_client,
            settings.ingest.ingest_rate_per_integration,
            settings
                .trusted_proxies
                .parse()
                .context("reading TRUSTED_PROXIES")?,
        )),
    };
    let relay = tokio::spawn(streams::run_outbox_relay_with(
        streams,
        Arc::new(RawEventOutbox::new(ctx.db.clone())),
        OutboxOptions {
            interval: Duration::from_secs(1),
            older_than: Duration::from_secs(settings.ingest.outbox_relay_after_secs),
            batch: 500,
        },
        ctx.shutdown.clone(),
    ));
    let router = router(app)
        .layer(service_kit::HttpTimeouts::from_settings(settings).request_layer())
        .merge(service_kit::ops_router(ctx.readiness()));
    let served = ctx.serve(listener, router).await;
    // The router (and with it every store handle) is gone: queued events commit and
    // publish, the log flushes.
    store_tasks.drained().await;
    let _ = log_task.await;
    match relay.await {
        Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "outbox relay stopped"),
        Err(e) => tracing::warn!(error = %e, "outbox relay panicked"),
        Ok(Ok(())) => {}
    }
    served
}
