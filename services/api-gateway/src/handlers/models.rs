//! The model registry: versions with metrics and status, and the active model of each
//! task. (A profile's predictions are under `/profiles/{id}/predictions`.)

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use domain::api::{ApiErrorBody, ModelQuery, ModelStatus, ModelTask, ModelVersionView, Page};
use service_kit::ApiError;
use storage::models::{COLUMNS, ModelVersionRow};
use uuid::Uuid;

use crate::extract::{ApiPath, ApiQuery, decode_cursor, page_limit, paginate};
use crate::state::AppState;

/// Lists model versions, newest first.
#[utoipa::path(
    get,
    path = "/models",
    tag = "models",
    summary = "List model versions",
    params(ModelQuery),
    responses(
        (status = 200, description = "A page of model versions", body = Page<ModelVersionView>),
        (status = 400, description = "A bad task, status, cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn list_models(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ModelQuery>,
) -> Result<Json<Page<ModelVersionView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor("models", q.cursor.as_deref())?;
    let (at, after_id) = after.unzip();
    let rows: Vec<ModelVersionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM model_version \
         WHERE ($1::text IS NULL OR task = $1) AND ($2::text IS NULL OR status = $2) \
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5"
    ))
    .bind(q.task.map(ModelTask::as_str))
    .bind(q.status.map(ModelStatus::as_str))
    .bind(at)
    .bind(after_id)
    .bind(limit + 1)
    .fetch_all(&app.db)
    .await?;
    let page = paginate(rows, limit, "models", |r| (r.created_at, r.id));
    Ok(Json(Page {
        items: page.items.into_iter().map(ModelVersionView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// The active model of each task.
#[utoipa::path(
    get,
    path = "/models/active",
    tag = "models",
    summary = "Active model per task",
    description = "At most one per task, so not paged.",
    responses((status = 200, description = "The active models", body = Vec<ModelVersionView>))
)]
pub async fn active_models(
    State(app): State<AppState>,
) -> Result<Json<Vec<ModelVersionView>>, ApiError> {
    let rows: Vec<ModelVersionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM model_version WHERE status = 'active' ORDER BY task"
    ))
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows.into_iter().map(ModelVersionView::from).collect()))
}

/// One model version.
#[utoipa::path(
    get,
    path = "/models/{id}",
    tag = "models",
    summary = "One model version",
    params(("id" = Uuid, Path, description = "Model version id")),
    responses(
        (status = 200, description = "The model version", body = ModelVersionView),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such model version (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn get_model(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ModelVersionView>, ApiError> {
    let row: Option<ModelVersionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM model_version WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&app.db)
    .await?;
    row.map(|r| Json(r.into()))
        .ok_or_else(|| ApiError::not_found(format!("no model version {id}")))
}
