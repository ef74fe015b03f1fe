//! Operational endpoints every service exposes on its port: `/healthz` answers as long
//! as the process serves HTTP; `/readyz` answers 200 only when Postgres and Redis both
//! answer within a second (503 with the failing dependency otherwise); `/metrics` renders
//! the Prometheus registry.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;

/// The dependencies `/readyz` checks.
#[derive(Clone)]
pub struct Readiness {
    /// Postgres pool.
    pub db: PgPool,
    /// Redis connection.
    pub redis: redis::aio::ConnectionManager,
}

impl Readiness {
    /// Checks both dependencies; returns the names of those that failed.
    pub async fn check(&self) -> Vec<&'static str> {
        let timeout = Duration::from_secs(1);
        let mut failed = Vec::new();
        let pg = tokio::time::timeout(timeout, storage::ping(&self.db)).await;
        if !matches!(pg, Ok(Ok(()))) {
            failed.push("postgres");
        }
        let mut conn = self.redis.clone();
        let pong =
            tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut conn))
                .await;
        if !matches!(pong, Ok(Ok(_))) {
            failed.push("redis");
        }
        failed
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_router(readiness: Readiness) -> axum::Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let failed = readiness.check().await;
    if failed.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "failed": failed})),
        )
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::metrics_handle().render(),
    )
}
