//! `POST /pos/{integration}/bills`: point-of-sale bills, one or a batch, authorised by
//! the integration's bearer token. The bill format, the token check and the
//! deduplication key live in `ingestion::sources::pos` (and docs/ingestion.md). A batch
//! is all-or-nothing: one invalid bill refuses the request with its index, and nothing
//! is stored.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use ingestion::sources::edge::json_body;
use ingestion::sources::{Connector, pos};
use serde_json::json;

use crate::App;
use crate::delivery::{Accepted, Delivery, ok_json, read_body, refused, store};
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
        let kind = pos::Pos.source().as_str();
        let integration = integration_for(&app, &mut delivery, kind, &id).await?;
        pos::verify_token(&integration.secret, &headers).map_err(refused)?;
        app.limits.integration(integration.id)?;
        let body = read_body(body, app.max_body).await?;
        let json = json_body(&body).map_err(refused)?;
        let mut events = pos::raw_events(integration.id, json).map_err(refused)?;
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
