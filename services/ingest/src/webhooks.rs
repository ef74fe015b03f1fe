//! Signed webhooks: one handler for every source that delivers them (Shopify,
//! WooCommerce, Twilio WhatsApp today), driven by the source's
//! `ingestion::sources::SignedWebhook`. The routes are built from the registry:
//! `/webhooks/{kind}/{integration}` plus each source's extra routes.
//!
//! Every delivery follows the same order, so every failure is cheap and stores nothing:
//! the integration in the path must exist and be of the route's kind (404), be enabled
//! (403), the body must fit (413), a ping is answered (200), the signature must verify
//! in constant time (401), the integration must be within its rate (429); only then is
//! the body parsed and checked (400 when malformed, unusable or beyond a limit,
//! `ingestion::sources::admission`) and the delivery committed to `customer_raw_event`
//! before the 2xx. A redelivery answers 200
//! with `"duplicate": true` and stores nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ingestion::sources::{self, Connector, WebhookAnswer, WebhookRequest, WebhookRoute};
use serde_json::json;
use service_kit::ApiError;
use storage::integrations::Integration;
use uuid::Uuid;

use crate::App;
use crate::delivery::{Accepted, Delivery, ok_json, read_body, refused, store};

/// The routes of every registered signed webhook.
pub(crate) fn routes() -> Router<App> {
    let mut router = Router::new();
    for connector in sources::all() {
        let Some(hook) = connector.webhook() else {
            continue;
        };
        for route in hook.routes() {
            let path = sources::webhook_path(connector.source(), route);
            // The route's name in connection logs and metrics (`webhooks/twilio/status`),
            // made once and shared by every delivery.
            let endpoint: Arc<str> =
                format!("webhooks/{}{}", connector.source(), route.suffix).into();
            router = router.route(
                &path,
                post(
                    move |State(app): State<App>,
                          Path(id): Path<String>,
                          OriginalUri(uri): OriginalUri,
                          headers: HeaderMap,
                          body: Body| {
                        let delivery = Delivery::start(endpoint.clone());
                        signed_webhook(app, delivery, connector, route, id, uri, headers, body)
                    },
                ),
            );
        }
    }
    router
}

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

/// `POST /webhooks/{kind}/{integration}{suffix}`.
#[allow(clippy::too_many_arguments)]
async fn signed_webhook(
    app: App,
    mut delivery: Delivery,
    connector: &'static dyn Connector,
    route: &'static WebhookRoute,
    id: String,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = connector.source();
    let result = async {
        let hook = connector
            .webhook()
            .expect("routes exist only for signed webhooks");
        let integration = integration_for(&app, &mut delivery, source.as_str(), &id).await?;
        let body = read_body(body, app.max_body).await?;
        let request = WebhookRequest {
            headers: &headers,
            body: &body,
            public_base_url: &app.public_base_url,
            path_and_query: uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()),
            received_at: delivery.received_at,
            max_age: app.webhook_max_age,
        };
        let ping = hook.is_ping(&request);
        if ping && request.header(hook.signature_header()).is_none() {
            return Ok(pinged());
        }
        hook.verify(&integration.secret, &request)
            .map_err(refused)?;
        app.limits.integration(integration.id)?;
        if ping {
            return Ok(pinged());
        }
        let mut event =
            sources::admitted_raw_event(hook, integration.id, route, &request).map_err(refused)?;
        event.received_at = delivery.received_at;
        let outcome = store(&app, vec![event]).await?[0];
        let response = match hook.answer() {
            WebhookAnswer::Stored => {
                ok_json(json!({"id": outcome.id, "duplicate": outcome.duplicate}))
            }
            WebhookAnswer::Xml(document) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                document,
            )
                .into_response(),
        };
        Ok(Accepted {
            response,
            raw_event_id: Some(outcome.id),
        })
    }
    .await;
    delivery.finish(&app, result)
}

/// The answer to a ping: it proves the URL works and carries no event.
fn pinged() -> Accepted {
    Accepted {
        response: ok_json(json!({"ping": true})),
        raw_event_id: None,
    }
}
