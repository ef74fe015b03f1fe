//! Destinations: the CRMs and REST endpoints kept in sync with Customer 360 by the
//! destinations service — their settings and mapping, sync status, delivery log, dead
//! letters, and the test, sync and replay actions. Credentials are write-only: they are
//! sealed on the way in and no response carries them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use destinations::DestinationError;
use destinations::store;
use domain::api::{
    ApiErrorBody, DeadLetterView, DeliveryView, DestinationQueued, DestinationRequest,
    DestinationTestResult, DestinationUpdate, DestinationView,
};
use service_kit::ApiError;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath};
use crate::handlers::conflict;
use crate::state::AppState;

/// Deliveries and dead letters listed.
const LOG_LIMIT: i64 = 100;

fn destination_error(e: DestinationError) -> ApiError {
    match e {
        DestinationError::Invalid(m) => ApiError::bad_request("bad_request", m),
        DestinationError::NotFound(id) => ApiError::not_found(format!("no destination {id}")),
        DestinationError::Conflict(m) => conflict(m),
        other => ApiError::internal(other),
    }
}

/// Lists destinations with their sync status.
#[utoipa::path(
    get,
    path = "/destinations",
    tag = "destinations",
    summary = "List destinations",
    responses((status = 200, description = "Every destination, oldest first", body = Vec<DestinationView>))
)]
pub async fn list_destinations(
    State(app): State<AppState>,
) -> Result<Json<Vec<DestinationView>>, ApiError> {
    Ok(Json(store::list(&app.db).await.map_err(destination_error)?))
}

/// Creates a destination; its backfill is queued at once.
#[utoipa::path(
    post,
    path = "/destinations",
    tag = "destinations",
    summary = "Create a destination",
    description = "Validates the kind's settings, credentials and mapping (defaults per kind \
                   when empty), seals the credentials and queues every profile it covers.",
    request_body = DestinationRequest,
    responses(
        (status = 201, description = "Created; the backfill is queued", body = DestinationView),
        (status = 400, description = "Missing credential, bad URL, unknown field, mapping without the key (`bad_request`)", body = ApiErrorBody),
        (status = 409, description = "Another destination has this name (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn create_destination(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<DestinationRequest>,
) -> Result<(StatusCode, Json<DestinationView>), ApiError> {
    let view = store::create(&app.db, &app.secrets_key, &body, &caller.actor())
        .await
        .map_err(destination_error)?;
    tracing::info!(destination = %view.id, kind = %view.kind, by = %caller.actor(), "destination created");
    Ok((StatusCode::CREATED, Json(view)))
}

/// One destination with its status.
#[utoipa::path(
    get,
    path = "/destinations/{id}",
    tag = "destinations",
    summary = "One destination",
    params(("id" = Uuid, Path, description = "Destination id")),
    responses(
        (status = 200, description = "The destination", body = DestinationView),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such destination (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn get_destination(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<DestinationView>, ApiError> {
    Ok(Json(
        store::get(&app.db, id).await.map_err(destination_error)?,
    ))
}

/// Changes settings, credentials, mapping, or pauses/resumes a destination.
#[utoipa::path(
    patch,
    path = "/destinations/{id}",
    tag = "destinations",
    summary = "Change a destination",
    description = "A new mapping or new settings queue a backfill; only records that differ \
                   from what the remote accepted are sent.",
    params(("id" = Uuid, Path, description = "Destination id")),
    request_body = DestinationUpdate,
    responses(
        (status = 200, description = "Changed", body = DestinationView),
        (status = 400, description = "Invalid settings, credentials or mapping; malformed id (`bad_request`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such destination (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn update_destination(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<DestinationUpdate>,
) -> Result<Json<DestinationView>, ApiError> {
    let view = store::update(&app.db, &app.secrets_key, id, &body)
        .await
        .map_err(destination_error)?;
    tracing::info!(destination = %id, by = %caller.actor(), "destination changed");
    Ok(Json(view))
}

/// Checks the endpoint and credentials.
#[utoipa::path(
    post,
    path = "/destinations/{id}/test",
    tag = "destinations",
    summary = "Test a destination's connection",
    params(("id" = Uuid, Path, description = "Destination id")),
    responses(
        (status = 200, description = "What the remote answered", body = DestinationTestResult),
        (status = 404, description = "No such destination (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn test_destination(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<DestinationTestResult>, ApiError> {
    let result = destinations::test_connection(&app.db, &app.secrets_key, &app.settings, id)
        .await
        .map_err(destination_error)?;
    Ok(Json(match result {
        Ok(message) => DestinationTestResult { ok: true, message },
        Err(message) => DestinationTestResult { ok: false, message },
    }))
}

/// Queues every profile the destination covers.
#[utoipa::path(
    post,
    path = "/destinations/{id}/sync",
    tag = "destinations",
    summary = "Resync a destination",
    params(("id" = Uuid, Path, description = "Destination id")),
    responses(
        (status = 202, description = "Queued", body = DestinationQueued),
        (status = 404, description = "No such destination (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn sync_destination(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<DestinationQueued>), ApiError> {
    let queued = store::backfill(&app.db, id)
        .await
        .map_err(destination_error)?;
    Ok((StatusCode::ACCEPTED, Json(DestinationQueued { queued })))
}

/// Queues the destination's dead letters again.
#[utoipa::path(
    post,
    path = "/destinations/{id}/replay",
    tag = "destinations",
    summary = "Replay a destination's dead letters",
    params(("id" = Uuid, Path, description = "Destination id")),
    responses(
        (status = 202, description = "Queued", body = DestinationQueued),
        (status = 404, description = "No such destination (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn replay_destination(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<DestinationQueued>), ApiError> {
    let queued = store::replay(&app.db, id)
        .await
        .map_err(destination_error)?;
    tracing::info!(destination = %id, queued, by = %caller.actor(), "destination dead letters replayed");
    Ok((StatusCode::ACCEPTED, Json(DestinationQueued { queued })))
}

/// The latest requests made to the destination.
#[utoipa::path(
    get,
    path = "/destinations/{id}/deliveries",
    tag = "destinations",
    summary = "A destination's delivery log",
    params(("id" = Uuid, Path, description = "Destination id")),
    responses(
        (status = 200, description = "Newest first, at most 100", body = Vec<DeliveryView>),
        (status = 404, description = "No such destination (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn destination_deliveries(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    store::get(&app.db, id).await.map_err(destination_error)?;
    Ok(Json(
        store::deliveries(&app.db, id, LOG_LIMIT)
            .await
            .map_err(destination_error)?,
    ))
}

/// Profiles the destination refused for good.
#[utoipa::path(
    get,
    path = "/destinations/{id}/dead-letters",
    tag = "destinations",
    summary = "A destination's dead letters",
    params(("id" = Uuid, Path, description = "Destination id")),
    responses(
        (status = 200, description = "Open dead letters, newest first, at most 100", body = Vec<DeadLetterView>),
        (status = 404, description = "No such destination (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn destination_dead_letters(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    store::get(&app.db, id).await.map_err(destination_error)?;
    Ok(Json(
        store::dead_letters(&app.db, id, LOG_LIMIT)
            .await
            .map_err(destination_error)?,
    ))
}
