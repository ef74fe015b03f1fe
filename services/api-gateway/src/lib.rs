//! The api-gateway: the REST API under `/api/v1` that the dashboard and brands' own
//! systems use, its OpenAPI document and viewer, and the web server of the built
//! dashboard.
//!
//! Layout:
//! - [`routes`]: the route table. Every route is declared there with its minimum role;
//!   the same declaration mounts the handler, guards it and documents it, so the
//!   router, the authorisation rules and the OpenAPI document cannot disagree.
//! - `auth`: who is calling (session cookie or bearer token), the guard that enforces
//!   roles and CSRF rules; `throttle`: sign-in limits per client and per account;
//!   `live`: live feeds end when their caller's credential does.
//! - `headers`: the security headers of every response (CSP, framing, sniffing,
//!   referrer, HSTS over HTTPS).
//! - `handlers/*`: one module per endpoint group, named like the `domain::api` file of
//!   the payloads it serves. Reads around a profile (its family, orders, identifiers,
//!   predictions) go through `storage::customer360`, which also builds the Customer 360.
//! - `web`: the dashboard's files and the OpenAPI viewer.
//!
//! The gateway writes only what it owns (users, sessions, tokens, integrations, its
//! record of published requests); every profile change is a request on
//! `profiles.merge_requests` that the identity merger applies. Requests go through an
//! outbox in Postgres ([`outbox`]) whose relay runs here, so a Redis outage delays a
//! request but cannot drop it.
//!
//! # Assumptions, running, testing
//!
//! Assumes Postgres and Redis (the context migrates on start), the identity merger
//! running to apply the merge requests it publishes, the built dashboard in
//! `DASHBOARD_DIR` (`just build-dashboard`) and the OpenAPI viewer in
//! `OPENAPI_VIEWER_DIR` (the API works without either). Run: `just run api-gateway`
//! (port 8080). Tests: `cargo nextest run -p api-gateway` (the gateway on port 0 against
//! the real Postgres and Redis: every route for every role, auth, pagination, uploads,
//! the OpenAPI document); `just test-browser` drives the dashboard through it.
//! Benchmark: `bench/api/run.sh` (Customer 360 reads).

mod auth;
mod extract;
mod handlers;
mod headers;
mod live;
pub mod outbox;
pub mod routes;
mod state;
mod throttle;
mod web;

use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use config::ExposeSecret as _;
use service_kit::ServiceContext;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use state::AppState;

/// Header carrying each request's id (set when the client sends none, echoed back).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Runs the gateway on `listener` until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener) -> anyhow::Result<()> {
    bootstrap_admin(&ctx).await?;
    let secrets_key = service_kit::integration_secrets_key(&ctx).await?;
    let state = AppState::new(&ctx, secrets_key)?;
    tokio::spawn(purge_sessions(ctx.clone(), state.clone()));
    let relay = tokio::spawn(streams::run_outbox_relay_with(
        ctx.streams(),
        std::sync::Arc::new(outbox::MergeRequestOutbox::new(ctx.db.clone())),
        streams::OutboxOptions {
            interval: Duration::from_secs(1),
            older_than: Duration::from_secs(ctx.settings.ingest.outbox_relay_after_secs),
            batch: 100,
        },
        ctx.shutdown.clone(),
    ));
    let served = ctx.serve(listener, app(&ctx, state.clone())).await;
    ctx.shutdown.cancel();
    match relay.await {
        Ok(Err(e)) => tracing::warn!(
            error = format!("{e:#}"),
            "merge request outbox relay stopped"
        ),
        Err(e) => tracing::warn!(error = %e, "merge request outbox relay panicked"),
        Ok(Ok(())) => {}
    }
    // Imports whose upload already finished keep running until their file is read.
    state.background.close();
    state.background.wait().await;
    served
}

/// The whole HTTP surface: ops endpoints, `/api/v1`, the OpenAPI viewer and the
/// dashboard, with CORS, compression, request ids and tracing.
pub fn app(ctx: &ServiceContext, state: AppState) -> Router {
    let api = routes::build(state.clone());
    let api_router = headers::api(api.router);
    let router = Router::new()
        .merge(service_kit::ops_router(ctx.readiness()))
        .nest("/api/v1", api_router)
        .merge(web::router(&ctx.settings));
    headers::all(
        router,
        ctx.settings.api.hsts_max_age_secs,
        state.trusted_proxies.clone(),
    )
    .layer(cors(&ctx.settings.api.cors_origins))
        .layer(CompressionLayer::new())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// CORS for the origins in `CORS_ORIGINS` (comma separated); none means same-origin
/// only. Credentials are allowed for those origins, so the CSRF header check and the
/// SameSite cookie remain the defence for everyone else.
fn cors(origins: &str) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static(domain::api::CSRF_HEADER),
        ])
}

/// Creates `ADMIN_EMAIL` as admin when no user exists and `ADMIN_PASSWORD` is set.
async fn bootstrap_admin(ctx: &ServiceContext) -> anyhow::Result<()> {
    let Some(password) = &ctx.settings.api.admin_password else {
        return Ok(());
    };
    let created = storage::users::ensure_first_admin(
        &ctx.db,
        &ctx.settings.api.admin_email,
        password.expose_secret(),
    )
    .await
    .context("creating the first admin from ADMIN_EMAIL / ADMIN_PASSWORD")?;
    if let Some(user) = created {
        tracing::info!(email = %user.email, "created the first admin");
    }
    Ok(())
}

/// Deletes expired sessions every hour, and forgets idle sign-in limits every minute,
/// until shutdown.
async fn purge_sessions(ctx: ServiceContext, state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    let mut limits = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = limits.tick() => state.login_limiter.forget_idle(),
            _ = tick.tick() => {
                match storage::users::purge_expired_sessions(&ctx.db).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "purged expired sessions"),
                    Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
                }
            }
        }
    }
}
