//! `POST /pos/{integration}/bills`: point-of-sale bills, one or a batch, authorised by
//! the integration's bearer token. The bill format is documented in
//! `ingestion::sources::pos` and docs/ingestion.md. A batch is all-or-nothing: one
//! invalid bill refuses the request with its index, and nothing is stored.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use ingestion::sources::pos;
use serde_json::json;
use service_kit::ApiError;

use crate::App;
use crate::delivery::{Accepted, Delivery, header, ok_json, parse_json, read_body, store};
use crate::integrations::secret_matches;
use crate::webhooks::integration_for;

/// `POST /pos/{integration}/bills`.
pub(crate) async fn bills(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut delivery = Delivery::start("pos/bills");
    let result = async {
        let integration = integration_for(&app, &mut delivery, "pos", &id).await?;
        let token = header(&headers, "authorization")
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| {
                ApiError::unauthorized("missing_token", "Authorization: Bearer <token> is required")
            })?;
        if !secret_matches(&integration.secret, token) {
            return Err(ApiError::unauthorized(
                "bad_token",
                "the bearer token is not this integration's",
            ));
        }
        let body = read_body(body, app.max_body).await?;
        let json = parse_json(&body)?;
        let mut events = pos::raw_events(integration.id, json)
            .map_err(|e| ApiError::bad_request("invalid_bill", e))?;
        for ev in &mut events {
            ev.received_at = delivery.received_at;
        }
        let outcomes = store(&app, events).await?;
        let duplicates = outcomes.iter().filter(|o| o.duplicate).count();
        Ok(Accepted {
            response: ok_json(json!({
                "stored": outcomes.len() - duplicates,
                "duplicates": duplicates,
                "ids": outcomes.iter().map(|o| o.id).collect::<Vec<_>>(),
            })),
            raw_event_id: outcomes.first().map(|o| o.id),
        })
    }
    .await;
    delivery.finish(&app, result)
}
