//! The Segment-compatible tracking API: `POST /v1/{track,identify,page,screen,group,
//! alias,batch,import}` and analytics.js's short forms (`/v1/t`, `/v1/b`, ...).
//!
//! Authentication is the write key: the HTTP Basic user name (Segment's server
//! libraries, RudderStack) or a `writeKey` field in the body (analytics.js, which sends
//! `text/plain` to avoid a CORS preflight). `Content-Encoding: gzip` bodies are inflated
//! with the size limit applied to the inflated bytes, so a small compressed bomb is
//! still refused with 413. Answers `{"success": true}` like Segment.

use std::io::Read as _;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use ingestion::sources::Connector;
use ingestion::sources::edge::{header, json_body};
use ingestion::sources::segment::{self, Endpoint};
use serde_json::json;
use service_kit::ApiError;

use crate::App;
use crate::delivery::{Accepted, Delivery, ok_json, read_body, refused, store};

/// `POST /v1/{call}`.
pub(crate) async fn tracking(
    State(app): State<App>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(endpoint) = Endpoint::from_path(&call) else {
        return Delivery::start("v1/unknown").finish(
            &app,
            Err(ApiError::not_found(format!(
                "no tracking endpoint /v1/{call}"
            ))),
        );
    };
    let mut delivery = Delivery::start(format!("v1/{}", endpoint.name()));
    let result = async {
        let raw = read_body(body, app.max_body).await?;
        let limit = endpoint.max_bytes();
        let bytes = match header(&headers, "content-encoding") {
            Some(enc) if enc.eq_ignore_ascii_case("gzip") => inflate(&raw, limit)?,
            Some(enc) if enc.eq_ignore_ascii_case("identity") => raw.to_vec(),
            Some(enc) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_encoding",
                    format!("Content-Encoding `{enc}` is not supported (gzip is)"),
                ));
            }
            None => raw.to_vec(),
        };
        if bytes.len() > limit {
            return Err(ApiError::too_large(format!(
                "{} bytes is over the {limit}-byte limit of /v1/{}",
                bytes.len(),
                endpoint.name()
            )));
        }
        // A key in the header is checked before the body is parsed; analytics.js puts it
        // in the body instead.
        let header_key = segment::header_write_key(&headers).map_err(refused)?;
        let json = json_body(&bytes).map_err(refused)?;
        let key = match header_key {
            Some(k) => k,
            None => segment::body_write_key(&json)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "missing_write_key",
                        "no write key (HTTP Basic user name or `writeKey`)",
                    )
                })?,
        };
        let integration = app
            .integrations
            .by_secret(segment::Segment.source().as_str(), &key)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "integration lookup failed");
                ApiError::unavailable("integrations cannot be read; retry")
            })?
            .ok_or_else(|| ApiError::unauthorized("bad_write_key", "unknown write key"))?;
        delivery.for_integration(integration.id);
        if !integration.enabled {
            return Err(ApiError::forbidden("this source is disabled"));
        }
        app.limits.integration(integration.id)?;
        let receipt = segment::Receipt {
            integration_id: integration.id,
            received_at: delivery.received_at,
            default_currency: app.default_currency.as_deref(),
        };
        let events = segment::raw_events(receipt, endpoint, json, bytes.len()).map_err(refused)?;
        let outcomes = store(&app, events).await?;
        Ok(Accepted {
            response: ok_json(json!({"success": true})),
            raw_event_id: outcomes.first().map(|o| o.id),
        })
    }
    .await;
    delivery.finish(&app, result)
}

/// Inflates a gzip body, refusing (413) once it grows past `limit`.
fn inflate(gz: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(gz.len().saturating_mul(4).min(limit + 1));
    flate2::read::GzDecoder::new(gz)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request("malformed_gzip", format!("the gzip body is corrupt: {e}"))
        })?;
    if out.len() > limit {
        return Err(ApiError::too_large(format!(
            "the inflated body is over the {limit}-byte limit"
        )));
    }
    Ok(out)
}
