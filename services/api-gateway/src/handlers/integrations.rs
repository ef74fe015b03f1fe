//! Integrations: the kinds of source (from the source registry), the configured
//! sources, their secrets and webhook URLs, their delivery logs, and the "send test
//! event" action. Everything per kind (label, URL, authentication text, setup steps,
//! test event) comes from `ingestion::sources`, so the dashboard shows what the
//! registry says rather than a copy of it.
//!
//! Secrets are shown to admins only, and only through the endpoints that exist to show
//! them (create, rotate, reveal); lists and details carry the last four characters.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::api::{
    ApiErrorBody, CreateIntegrationRequest, DeliveryLogEntry, IntegrationSecret, IntegrationView,
    Page, PageQuery, SourceKindView, TestEventAccepted, UpdateIntegrationRequest,
};
use ingestion::sources::{self, Connector};
use service_kit::ApiError;
use storage::integrations::Integration;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery, decode_cursor, page_limit, paginate};
use crate::handlers::storage_error;
use crate::state::AppState;

/// The registry's connector of a stored integration.
fn connector_of(i: &Integration) -> Result<&'static dyn Connector, ApiError> {
    sources::by_kind(&i.kind).ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "integration {} has the unregistered kind `{}`",
            i.id,
            i.kind
        ))
    })
}

fn view(app: &AppState, i: &Integration) -> Result<IntegrationView, ApiError> {
    let connector = connector_of(i)?;
    let webhook_url = connector.webhook_url(&app.settings.ingest.public_base_url, i.id);
    let hint: String = i
        .secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Ok(IntegrationView {
        id: i.id,
        kind: connector.source(),
        label: connector.label().to_owned(),
        name: i.name.clone(),
        enabled: i.enabled,
        setup_steps: connector.setup_steps(webhook_url.as_deref().unwrap_or_default()),
        webhook_url,
        authentication: connector.authentication().to_owned(),
        secret_hint: format!("…{hint}"),
        settings: i.settings.clone(),
        created_at: i.created_at,
        updated_at: i.updated_at,
        last_delivery_at: i.last_delivery_at,
    })
}

fn with_secret(app: &AppState, i: Integration) -> Result<IntegrationSecret, ApiError> {
    Ok(IntegrationSecret {
        integration: view(app, &i)?,
        secret: i.secret,
    })
}

/// The kinds of source an integration can be, from the source registry.
#[utoipa::path(
    get,
    path = "/sources",
    tag = "integrations",
    summary = "Kinds of source",
    description = "Every source ConstIntel takes events from, as its registry describes it: \
                   label, whether it delivers to ingest, what its secret is and how \
                   deliveries authenticate.",
    responses(
        (status = 200, description = "The kinds, in a stable order", body = Vec<SourceKindView>),
    )
)]
pub async fn list_sources() -> Json<Vec<SourceKindView>> {
    Json(
        sources::all()
            .map(|c| SourceKindView {
                kind: c.source(),
                label: c.label().to_owned(),
                receives_deliveries: c.webhook_url("", Uuid::nil()).is_some(),
                secret_name: c.credential().name().to_owned(),
                authentication: c.authentication().to_owned(),
                own_secret_hint: c.own_secret_hint().map(str::to_owned),
            })
            .collect(),
    )
}

async fn find(app: &AppState, id: Uuid) -> Result<Integration, ApiError> {
    storage::integrations::get(&app.db, &app.secrets_key, id)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("no integration {id}")))
}

/// Lists integrations, newest first.
#[utoipa::path(
    get,
    path = "/integrations",
    tag = "integrations",
    summary = "List integrations",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of integrations", body = Page<IntegrationView>),
        (status = 400, description = "Bad cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn list_integrations(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<IntegrationView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor("integrations", q.cursor.as_deref())?;
    let rows = storage::integrations::page(&app.db, &app.secrets_key, after, limit + 1)
        .await
        .map_err(storage_error)?;
    let page = paginate(rows, limit, "integrations", |i| (i.created_at, i.id));
    Ok(Json(Page {
        items: page
            .items
            .iter()
            .map(|i| view(&app, i))
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    }))
}

/// Creates an integration and shows its secret.
#[utoipa::path(
    post,
    path = "/integrations",
    tag = "integrations",
    summary = "Create an integration",
    description = "Without `secret` a random one is generated. The answer carries the \
                   secret and the webhook URL to configure at the source.",
    request_body = CreateIntegrationRequest,
    responses(
        (status = 201, description = "Created", body = IntegrationSecret),
        (status = 400, description = "Unknown kind or empty name (`bad_request`)", body = ApiErrorBody),
        (status = 409, description = "An integration of this kind has this name (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn create_integration(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<CreateIntegrationRequest>,
) -> Result<(StatusCode, Json<IntegrationSecret>), ApiError> {
    if body
        .secret
        .as_deref()
        .is_some_and(|s| s.trim().chars().count() < 8)
    {
        return Err(ApiError::bad_request(
            "bad_request",
            "a given secret must have at least 8 characters",
        ));
    }
    let created = ingestion::integrations::create(
        &app.db,
        &app.secrets_key,
        body.kind.as_str(),
        &body.name,
        body.secret.as_deref().map(str::trim),
    )
    .await
    .map_err(storage_error)?;
    tracing::info!(integration = %created.id, kind = %created.kind, by = %caller.actor(), "integration created");
    Ok((StatusCode::CREATED, Json(with_secret(&app, created)?)))
}

/// One integration.
#[utoipa::path(
    get,
    path = "/integrations/{id}",
    tag = "integrations",
    summary = "One integration",
    params(("id" = Uuid, Path, description = "Integration id")),
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such integration (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn get_integration(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<IntegrationView>, ApiError> {
    Ok(Json(view(&app, &find(&app, id).await?)?))
}

/// Enables or disables an integration.
#[utoipa::path(
    patch,
    path = "/integrations/{id}",
    tag = "integrations",
    summary = "Enable or disable an integration",
    description = "A disabled integration's deliveries are refused by ingest.",
    params(("id" = Uuid, Path, description = "Integration id")),
    request_body = UpdateIntegrationRequest,
    responses(
        (status = 200, description = "Updated", body = IntegrationView),
        (status = 400, description = "Malformed body or id (`bad_request`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such integration (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn update_integration(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateIntegrationRequest>,
) -> Result<Json<IntegrationView>, ApiError> {
    let updated = storage::integrations::set_enabled(&app.db, &app.secrets_key, id, body.enabled)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("no integration {id}")))?;
    Ok(Json(view(&app, &updated)?))
}

/// Shows an integration's secret.
#[utoipa::path(
    get,
    path = "/integrations/{id}/secret",
    tag = "integrations",
    summary = "Reveal an integration's secret",
    params(("id" = Uuid, Path, description = "Integration id")),
    responses(
        (status = 200, description = "The integration and its secret", body = IntegrationSecret),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such integration (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn reveal_secret(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<IntegrationSecret>, ApiError> {
    let found = find(&app, id).await?;
    tracing::info!(integration = %id, by = %caller.actor(), "integration secret revealed");
    Ok(Json(with_secret(&app, found)?))
}

/// Replaces an integration's secret with a new random one.
#[utoipa::path(
    post,
    path = "/integrations/{id}/rotate-secret",
    tag = "integrations",
    summary = "Rotate an integration's secret",
    description = "The old secret stops working at once; configure the new one at the source.",
    params(("id" = Uuid, Path, description = "Integration id")),
    responses(
        (status = 200, description = "The integration and its new secret", body = IntegrationSecret),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such integration (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn rotate_secret(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<IntegrationSecret>, ApiError> {
    let rotated = ingestion::integrations::rotate_secret(&app.db, &app.secrets_key, id)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("no integration {id}")))?;
    tracing::info!(integration = %id, by = %caller.actor(), "integration secret rotated");
    Ok(Json(with_secret(&app, rotated)?))
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    at: DateTime<Utc>,
    endpoint: String,
    status: i16,
    latency_ms: f32,
    error: Option<String>,
    raw_event_id: Option<Uuid>,
}

/// An integration's delivery log.
#[utoipa::path(
    get,
    path = "/integrations/{id}/deliveries",
    tag = "integrations",
    summary = "Delivery log of an integration",
    description = "Every delivery that named the integration, accepted or refused, newest first.",
    params(("id" = Uuid, Path, description = "Integration id"), PageQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = Page<DeliveryLogEntry>),
        (status = 400, description = "Bad cursor, limit or id (`bad_filter`, `bad_cursor`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such integration (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn deliveries(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<DeliveryLogEntry>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<(DateTime<Utc>, i64)> = decode_cursor("deliveries", q.cursor.as_deref())?;
    find(&app, id).await?;
    let (at, after_id) = after.unzip();
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, at, endpoint, status, latency_ms, error, raw_event_id FROM connection_logs \
         WHERE integration_id = $1 \
           AND ($2::timestamptz IS NULL OR (at, id) < ($2, $3)) \
         ORDER BY at DESC, id DESC LIMIT $4",
    )
    .bind(id)
    .bind(at)
    .bind(after_id)
    .bind(limit + 1)
    .fetch_all(&app.db)
    .await?;
    let page = paginate(rows, limit, "deliveries", |r| (r.at, r.id));
    Ok(Json(crate::extract::map_page(page, |r| DeliveryLogEntry {
        id: r.id,
        at: r.at,
        endpoint: r.endpoint,
        status: r.status,
        latency_ms: r.latency_ms,
        error: r.error,
        raw_event_id: r.raw_event_id,
    })))
}

/// Stores a synthetic, clearly marked event for an integration and publishes it.
#[utoipa::path(
    post,
    path = "/integrations/{id}/test-event",
    tag = "integrations",
    summary = "Send a test event",
    description = "Stores a synthetic delivery of the integration's kind through the \
                   ingestion library (raw event store, then `events.raw`), marked \
                   `constintel_test`, about a test customer `constintel-test-<id>`; it \
                   appears in the delivery log and flows through the pipeline like a real one.",
    params(("id" = Uuid, Path, description = "Integration id")),
    responses(
        (status = 202, description = "Stored and queued", body = TestEventAccepted),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such integration (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "The integration is disabled (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn send_test_event(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<TestEventAccepted>), ApiError> {
    let started = std::time::Instant::now();
    let integration = find(&app, id).await?;
    if !integration.enabled {
        return Err(crate::handlers::conflict(
            "the integration is disabled; enable it to receive events",
        ));
    }
    let event = sources::test_event(connector_of(&integration)?.source(), id);
    let outcome = ingestion::raw::insert_batch(&app.db, std::slice::from_ref(&event))
        .await
        .map_err(ApiError::internal)?;
    let stored = outcome.first().map_or(event.id, |o| o.id);
    // A failed publish leaves the row to the outbox relay, as for any delivery.
    ingestion::raw::publish_stored(&app.streams, &app.db, std::slice::from_ref(&event)).await;
    let latency_ms = started.elapsed().as_secs_f32() * 1000.0;
    sqlx::query(
        "INSERT INTO connection_logs (integration_id, endpoint, status, latency_ms, raw_event_id) \
         VALUES ($1, 'api-gateway/test-event', 202, $2, $3)",
    )
    .bind(id)
    .bind(latency_ms)
    .bind(stored)
    .execute(&app.db)
    .await?;
    sqlx::query("UPDATE integrations SET last_delivery_at = now() WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await?;
    tracing::info!(integration = %id, raw_event_id = %stored, by = %caller.actor(), "test event sent");
    Ok((
        StatusCode::ACCEPTED,
        Json(TestEventAccepted {
            raw_event_id: stored,
            source_event_id: event.source_event_id,
        }),
    ))
}
