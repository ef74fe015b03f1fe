//! The model registry: versions with metrics and status, and the active model of each
//! task; and what the recommendation model serves: a profile's recommended products and
//! a product's similar products. (A profile's other predictions are under
//! `/profiles/{id}/predictions`.)

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use domain::api::{
    ApiErrorBody, ModelQuery, ModelStatus, ModelTask, ModelVersionView, Page,
    ProfileRecommendations, RecommendationQuery, SimilarProduct, SimilarProducts,
};
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

/// `k` of a recommendation query: 1–10, default 10.
fn recommendation_count(k: Option<u32>) -> Result<i64, ApiError> {
    match k.unwrap_or(10) {
        k @ 1..=10 => Ok(i64::from(k)),
        k => Err(ApiError::bad_request(
            "bad_filter",
            format!("k must be 1 to 10, not {k}"),
        )),
    }
}

/// The products recommended to a profile.
#[utoipa::path(
    get,
    path = "/profiles/{id}/recommendations",
    tag = "models",
    summary = "Recommended products of a profile",
    description = "The top `k` products of the profile's latest `recommend` prediction, best \
                   first, each with name, category, score and reason (\"bought 4 times\", \
                   \"similar to X you viewed\", \"popular in Y\"). Empty `items` when no \
                   recommendation model has scored the profile.",
    params(("id" = Uuid, Path, description = "Profile id (a merged-away id resolves to its survivor)"), RecommendationQuery),
    responses(
        (status = 200, description = "The recommendations", body = ProfileRecommendations),
        (status = 400, description = "Malformed id or `k` out of range (`bad_path`, `bad_filter`)", body = ApiErrorBody),
        (status = 404, description = "No such profile (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn profile_recommendations(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<RecommendationQuery>,
) -> Result<Json<ProfileRecommendations>, ApiError> {
    let k = recommendation_count(q.k)?;
    // A malformed stored list is our fault, not the caller's: 500, not 400.
    storage::recommendations::for_profile(&app.db, id, k as usize)
        .await
        .map_err(|e| match e {
            storage::StorageError::Database(e) => ApiError::from(e),
            other => ApiError::internal(other),
        })?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no profile {id}")))
}

/// Products similar to one product.
#[utoipa::path(
    get,
    path = "/products/{sku}/similar",
    tag = "models",
    summary = "Similar products",
    description = "The `k` products nearest to this one by the active `recommend` model's \
                   item vectors (item2vec over baskets and browsing sessions, searched \
                   through its HNSW index), most similar first.",
    params(("sku" = String, Path, description = "Product SKU"), RecommendationQuery),
    responses(
        (status = 200, description = "The similar products", body = SimilarProducts),
        (status = 400, description = "`k` out of range (`bad_filter`)", body = ApiErrorBody),
        (status = 404, description = "No active recommendation model, or it has no vector for this product (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn similar_products(
    State(app): State<AppState>,
    ApiPath(sku): ApiPath<String>,
    ApiQuery(q): ApiQuery<RecommendationQuery>,
) -> Result<Json<SimilarProducts>, ApiError> {
    let k = recommendation_count(q.k)?;
    let rows: Vec<(Uuid, String, String, Option<String>, f64)> = sqlx::query_as(
        "SELECT s.model_version_id, s.similar_sku, COALESCE(p.name, s.similar_sku), p.category, \
                s.similarity \
         FROM product_similarity s \
         JOIN model_version m ON m.id = s.model_version_id AND m.task = 'recommend' AND m.status = 'active' \
         LEFT JOIN products p ON p.sku = s.similar_sku \
         WHERE s.sku = $1 ORDER BY s.rank LIMIT $2",
    )
    .bind(&sku)
    .bind(k)
    .fetch_all(&app.db)
    .await?;
    let Some(model_version_id) = rows.first().map(|r| r.0) else {
        return Err(ApiError::not_found(format!(
            "the active recommendation model has no similar products for {sku}"
        )));
    };
    Ok(Json(SimilarProducts {
        sku,
        model_version_id,
        items: rows
            .into_iter()
            .map(|(_, sku, name, category, similarity)| SimilarProduct {
                sku,
                name,
                category,
                similarity,
            })
            .collect(),
    }))
}
