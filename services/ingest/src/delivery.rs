//! What every endpoint does around its own logic: time the delivery, answer errors in
//! the one JSON shape (a source's refusals included), record the delivery in the
//! integration's connection log and count it in the metrics.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ingestion::connection_log::DeliveryLog;
use ingestion::raw::{StoreError, StoreOutcome};
use ingestion::raw_event::NewRawEvent;
use ingestion::sources::Refusal;
use service_kit::ApiError;
use uuid::Uuid;

use crate::App;

/// One delivery in progress.
pub(crate) struct Delivery {
    /// The endpoint's name in the connection log and the metrics (`webhooks/shopify`).
    endpoint: metrics::SharedString,
    started: Instant,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    integration: Option<Uuid>,
}

/// An endpoint's successful answer and the first raw event it stored (for the log).
pub(crate) struct Accepted {
    pub response: Response,
    pub raw_event_id: Option<Uuid>,
}

impl Delivery {
    pub(crate) fn start(endpoint: impl Into<metrics::SharedString>) -> Self {
        Self {
            endpoint: endpoint.into(),
            started: Instant::now(),
            received_at: Utc::now(),
            integration: None,
        }
    }

    /// From here on the delivery is logged against `integration`.
    pub(crate) fn for_integration(&mut self, integration: Uuid) {
        self.integration = Some(integration);
    }

    /// Answers, logs and counts.
    pub(crate) fn finish(self, app: &App, result: Result<Accepted, ApiError>) -> Response {
        let (response, raw_event_id, error) = match result {
            Ok(a) => (a.response, a.raw_event_id, None),
            Err(e) => {
                let message = e.message.clone();
                (e.into_response(), None, Some(message))
            }
        };
        let status = response.status();
        metrics::counter!(
            "ingest_requests_total",
            "endpoint" => self.endpoint.clone(),
            "status" => status.as_u16().to_string()
        )
        .increment(1);
        let elapsed = self.started.elapsed();
        metrics::histogram!("ingest_request_seconds", "endpoint" => self.endpoint.clone())
            .record(elapsed.as_secs_f64());
        if let Some(integration_id) = self.integration {
            app.connection_log.record(DeliveryLog {
                integration_id,
                at: self.received_at,
                endpoint: self.endpoint.to_string(),
                status: status.as_u16(),
                latency_ms: elapsed.as_secs_f32() * 1000.0,
                error,
                raw_event_id,
            });
        }
        response
    }
}

/// Reads a request body of at most `limit` bytes; longer bodies are refused with 413
/// before they are read whole.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::too_large(format!("the request body is larger than {limit} bytes"))
        } else {
            ApiError::bad_request("unreadable_body", format!("reading the body failed: {e}"))
        }
    })
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The answer to a source's refusal, with its status and stable code.
pub(crate) fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Unauthorized { code, message } => ApiError::unauthorized(code, message),
        Refusal::Invalid { code, message } => ApiError::bad_request(code, message),
        Refusal::TooLarge(message) => ApiError::too_large(message),
    }
}

/// Stores events through the group commit; a storage failure answers 503 so the sender
/// retries (nothing was stored), data Postgres refuses 400 (retrying would not help).
pub(crate) async fn store(
    app: &App,
    events: Vec<NewRawEvent>,
) -> Result<Vec<StoreOutcome>, ApiError> {
    // Each event's line at debug level, so `grep <event id>` finds where it came in.
    let keys: Vec<(&'static str, String)> = if tracing::enabled!(tracing::Level::DEBUG) {
        events
            .iter()
            .map(|e| (e.source.as_str(), e.source_event_id.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let outcomes = app.store.store(events).await.map_err(|e| match e {
        StoreError::Stopped => ApiError::unavailable("ingest is shutting down; retry"),
        StoreError::Rejected(reason) => ApiError::bad_request(
            "unstorable_event",
            format!("the delivery cannot be stored: {reason}"),
        ),
        StoreError::Database(cause) => {
            tracing::error!(error = %cause, "raw event commit failed");
            ApiError::unavailable("events could not be stored; retry")
        }
    })?;
    for ((source, key), o) in keys.iter().zip(&outcomes) {
        tracing::debug!(event_id = %o.id, source, key = %key, duplicate = o.duplicate, "raw event stored");
    }
    Ok(outcomes)
}

/// A JSON answer with status 200.
pub(crate) fn ok_json(body: serde_json::Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}
