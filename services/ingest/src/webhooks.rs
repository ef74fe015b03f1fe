//! Signed webhooks: Shopify, WooCommerce and Twilio WhatsApp.
//!
//! Each handler follows the same order, so every failure is cheap and stores nothing:
//! the integration in the path must exist and be of the endpoint's kind (404), be
//! enabled (403), and the signature must verify in constant time (401); only then is the
//! body parsed (400 when malformed) and the delivery committed to `customer_raw_event`
//! before the 2xx. A redelivery answers 200 with `"duplicate": true` and stores nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ingestion::signing;
use ingestion::sources::{shopify, twilio, woocommerce};
use serde_json::json;
use service_kit::ApiError;
use storage::integrations::Integration;
use uuid::Uuid;

use crate::App;
use crate::delivery::{
    Accepted, Delivery, header, kept_headers, ok_json, parse_json, read_body, store,
};

/// Resolves the integration named in the path for an endpoint of `kind`.
pub(crate) async fn integration_for(
    app: &App,
    delivery: &mut Delivery,
    kind: &'static str,
    id: &str,
) -> Result<Arc<Integration>, ApiError> {
    let unknown = || ApiError::not_found(format!("no {kind} integration `{id}`"));
    let id: Uuid = id.parse().map_err(|_| unknown())?;
    let integration = app
        .integrations
        .by_id(kind, id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "integration lookup failed");
            ApiError::unavailable("integrations cannot be read; retry")
        })?
        .ok_or_else(unknown)?;
    delivery.for_integration(integration.id);
    if !integration.enabled {
        return Err(ApiError::forbidden(format!(
            "integration `{id}` is disabled"
        )));
    }
    Ok(integration)
}

fn bad_signature(what: &str) -> ApiError {
    ApiError::unauthorized("bad_signature", format!("{what} does not verify"))
}

/// `POST /webhooks/shopify/{integration}`.
pub(crate) async fn shopify(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut delivery = Delivery::start("webhooks/shopify");
    let result = async {
        let integration = integration_for(&app, &mut delivery, "shopify", &id).await?;
        let body = read_body(body, app.max_body).await?;
        let sig = header(&headers, "x-shopify-hmac-sha256").ok_or_else(|| {
            ApiError::unauthorized("missing_signature", "missing X-Shopify-Hmac-Sha256")
        })?;
        if !signing::verify_shopify(&integration.secret, &body, sig) {
            return Err(bad_signature("X-Shopify-Hmac-Sha256"));
        }
        let topic = header(&headers, "x-shopify-topic")
            .ok_or_else(|| ApiError::bad_request("missing_topic", "missing X-Shopify-Topic"))?;
        let webhook_id = header(&headers, "x-shopify-webhook-id").unwrap_or_default();
        let json = parse_json(&body)?;
        let mut event = shopify::raw_event(
            integration.id,
            topic,
            webhook_id,
            kept_headers(&headers, &shopify::KEPT_HEADERS),
            json,
        )
        .map_err(|e| ApiError::bad_request("invalid_webhook", e))?;
        event.received_at = delivery.received_at;
        let outcome = store(&app, vec![event]).await?[0];
        Ok(Accepted {
            response: ok_json(json!({"id": outcome.id, "duplicate": outcome.duplicate})),
            raw_event_id: Some(outcome.id),
        })
    }
    .await;
    delivery.finish(&app, result)
}

/// `POST /webhooks/woocommerce/{integration}`.
pub(crate) async fn woocommerce(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut delivery = Delivery::start("webhooks/woocommerce");
    let result = async {
        let integration = integration_for(&app, &mut delivery, "woocommerce", &id).await?;
        let body = read_body(body, app.max_body).await?;
        let signature = header(&headers, "x-wc-webhook-signature");
        // The ping WooCommerce sends when a webhook is saved proves the URL works; it
        // carries no event, so it is answered and nothing is stored.
        if signature.is_none() && woocommerce::is_ping(&body) {
            return Ok(Accepted {
                response: ok_json(json!({"ping": true})),
                raw_event_id: None,
            });
        }
        let sig = signature.ok_or_else(|| {
            ApiError::unauthorized("missing_signature", "missing X-WC-Webhook-Signature")
        })?;
        if !signing::verify_woocommerce(&integration.secret, &body, sig) {
            return Err(bad_signature("X-WC-Webhook-Signature"));
        }
        if woocommerce::is_ping(&body) {
            return Ok(Accepted {
                response: ok_json(json!({"ping": true})),
                raw_event_id: None,
            });
        }
        let topic = header(&headers, "x-wc-webhook-topic")
            .ok_or_else(|| ApiError::bad_request("missing_topic", "missing X-WC-Webhook-Topic"))?;
        let json = parse_json(&body)?;
        let mut event = woocommerce::raw_event(
            integration.id,
            topic,
            kept_headers(&headers, &woocommerce::KEPT_HEADERS),
            &body,
            json,
        )
        .map_err(|e| ApiError::bad_request("invalid_webhook", e))?;
        event.received_at = delivery.received_at;
        let outcome = store(&app, vec![event]).await?[0];
        Ok(Accepted {
            response: ok_json(json!({"id": outcome.id, "duplicate": outcome.duplicate})),
            raw_event_id: Some(outcome.id),
        })
    }
    .await;
    delivery.finish(&app, result)
}

/// `POST /webhooks/twilio/{integration}`: inbound WhatsApp messages.
pub(crate) async fn twilio_inbound(
    State(app): State<App>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    twilio(
        app,
        id,
        uri,
        headers,
        body,
        twilio::KIND_MESSAGE,
        "webhooks/twilio",
    )
    .await
}

/// `POST /webhooks/twilio/{integration}/status`: delivery-status callbacks.
pub(crate) async fn twilio_status(
    State(app): State<App>,
    Path(id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    twilio(
        app,
        id,
        uri,
        headers,
        body,
        twilio::KIND_STATUS,
        "webhooks/twilio/status",
    )
    .await
}

async fn twilio(
    app: App,
    id: String,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
    kind: &'static str,
    endpoint: &'static str,
) -> Response {
    let mut delivery = Delivery::start(endpoint);
    let result = async {
        let integration = integration_for(&app, &mut delivery, "twilio", &id).await?;
        let body = read_body(body, app.max_body).await?;
        let sig = header(&headers, "x-twilio-signature").ok_or_else(|| {
            ApiError::unauthorized("missing_signature", "missing X-Twilio-Signature")
        })?;
        let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).map_err(|e| {
            ApiError::bad_request(
                "malformed_form",
                format!("the body is not form-encoded: {e}"),
            )
        })?;
        // Twilio signs the URL it called, which is the public one: behind a proxy the
        // host and scheme this process sees differ, so the configured base is used.
        let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        let url = format!("{}{}", app.public_base_url, path_and_query);
        if !signing::verify_twilio(&integration.secret, &url, &params, sig) {
            return Err(bad_signature("X-Twilio-Signature"));
        }
        let mut event = twilio::raw_event(integration.id, kind, &params)
            .map_err(|e| ApiError::bad_request("invalid_callback", e))?;
        event.received_at = delivery.received_at;
        let outcome = store(&app, vec![event]).await?[0];
        Ok(Accepted {
            response: (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                twilio::EMPTY_TWIML,
            )
                .into_response(),
            raw_event_id: Some(outcome.id),
        })
    }
    .await;
    delivery.finish(&app, result)
}
