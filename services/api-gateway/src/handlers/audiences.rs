//! Audiences: saved rules over profiles, their size preview, members and CSV export.
//! The rules and membership live in `audiences::store`; saving an audience recomputes
//! its membership at once, and the automations service keeps it live afterwards.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::api::{
    ApiErrorBody, AudienceMemberView, AudiencePreview, AudiencePreviewRequest, AudienceRequest,
    AudienceView, Page, PageQuery,
};
use service_kit::ApiError;
use uuid::Uuid;

use audiences::store::{self, AudienceError};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery, decode_cursor, page_limit, paginate};
use crate::handlers::conflict;
use crate::state::AppState;

/// Profiles a preview shows.
const PREVIEW_SAMPLE: i64 = 10;
/// Members read per query while exporting.
const EXPORT_CHUNK: i64 = 5_000;

fn audience_error(e: AudienceError) -> ApiError {
    match e {
        AudienceError::Rule(r) => ApiError::bad_request("invalid_rule", r.to_string()),
        AudienceError::Invalid(m) => ApiError::bad_request("bad_request", m),
        AudienceError::Cycle(m) => ApiError::bad_request(
            "invalid_rule",
            format!("audience references form a cycle: {m}"),
        ),
        AudienceError::NotFound(id) => ApiError::not_found(format!("no audience {id}")),
        e @ (AudienceError::NameTaken(_) | AudienceError::InUse(_)) => conflict(e.to_string()),
        AudienceError::Database(e) => ApiError::internal(e),
    }
}

/// Lists audiences, oldest first.
#[utoipa::path(
    get,
    path = "/audiences",
    tag = "audiences",
    summary = "List audiences",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of audiences", body = Page<AudienceView>),
        (status = 400, description = "Bad cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn list_audiences(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<AudienceView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<Uuid> = decode_cursor("audiences", q.cursor.as_deref())?;
    let rows = store::page(&app.db, after, limit + 1)
        .await
        .map_err(audience_error)?;
    Ok(Json(paginate(rows, limit, "audiences", |a| a.id)))
}

/// Creates an audience and computes its members.
#[utoipa::path(
    post,
    path = "/audiences",
    tag = "audiences",
    summary = "Create an audience",
    description = "Validates the rule (see docs/audiences.md), saves it and computes its \
                   members before answering; from then on membership is kept live.",
    request_body = AudienceRequest,
    responses(
        (status = 201, description = "Created, members computed", body = AudienceView),
        (status = 400, description = "Invalid rule, name or description, a missing or circular audience reference (`invalid_rule`, `bad_request`)", body = ApiErrorBody),
        (status = 409, description = "Another audience has this name (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn create_audience(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<AudienceRequest>,
) -> Result<(StatusCode, Json<AudienceView>), ApiError> {
    let created = store::create(&app.db, &body, &caller.actor())
        .await
        .map_err(audience_error)?;
    store::recompute(&app.db, created.id, Utc::now())
        .await
        .map_err(audience_error)?;
    tracing::info!(audience = %created.id, by = %caller.actor(), "audience created");
    let view = store::get(&app.db, created.id)
        .await
        .map_err(audience_error)?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// One audience.
#[utoipa::path(
    get,
    path = "/audiences/{id}",
    tag = "audiences",
    summary = "One audience",
    params(("id" = Uuid, Path, description = "Audience id")),
    responses(
        (status = 200, description = "The audience", body = AudienceView),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such audience (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn get_audience(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AudienceView>, ApiError> {
    Ok(Json(store::get(&app.db, id).await.map_err(audience_error)?))
}

/// Changes an audience and recomputes its members.
#[utoipa::path(
    put,
    path = "/audiences/{id}",
    tag = "audiences",
    summary = "Change an audience",
    params(("id" = Uuid, Path, description = "Audience id")),
    request_body = AudienceRequest,
    responses(
        (status = 200, description = "Changed, members recomputed", body = AudienceView),
        (status = 400, description = "Invalid rule, name or description, a missing or circular audience reference, malformed id (`invalid_rule`, `bad_request`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such audience (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "Another audience has this name (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn update_audience(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AudienceRequest>,
) -> Result<Json<AudienceView>, ApiError> {
    store::update(&app.db, id, &body)
        .await
        .map_err(audience_error)?;
    store::recompute(&app.db, id, Utc::now())
        .await
        .map_err(audience_error)?;
    tracing::info!(audience = %id, by = %caller.actor(), "audience changed");
    Ok(Json(store::get(&app.db, id).await.map_err(audience_error)?))
}

/// Deletes an audience with its membership history.
#[utoipa::path(
    delete,
    path = "/audiences/{id}",
    tag = "audiences",
    summary = "Delete an audience",
    params(("id" = Uuid, Path, description = "Audience id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such audience (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "Another audience's rule refers to it (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn delete_audience(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    store::delete(&app.db, id).await.map_err(audience_error)?;
    tracing::info!(audience = %id, by = %caller.actor(), "audience deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Sizes a rule without saving it.
#[utoipa::path(
    post,
    path = "/audiences/preview",
    tag = "audiences",
    summary = "Preview a rule's size",
    description = "How many live profiles the rule matches now, and a few of them: one \
                   query, nothing saved (the builder calls it while the rule is edited).",
    request_body = AudiencePreviewRequest,
    responses(
        (status = 200, description = "Size and sample", body = AudiencePreview),
        (status = 400, description = "Invalid rule (`invalid_rule`)", body = ApiErrorBody),
    )
)]
pub async fn preview_audience(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<AudiencePreviewRequest>,
) -> Result<Json<AudiencePreview>, ApiError> {
    let started = Instant::now();
    let now = Utc::now();
    let preview = store::preview(&app.db, &body.rule, now, PREVIEW_SAMPLE)
        .await
        .map_err(audience_error)?;
    let sample = store::names(&app.db, &preview.sample)
        .await
        .map_err(audience_error)?
        .into_iter()
        .map(|(profile_id, display_name)| AudienceMemberView {
            profile_id,
            display_name,
            entered_at: now,
        })
        .collect();
    Ok(Json(AudiencePreview {
        size: preview.size,
        sample,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// A page of an audience's current members.
#[utoipa::path(
    get,
    path = "/audiences/{id}/members",
    tag = "audiences",
    summary = "An audience's members",
    params(("id" = Uuid, Path, description = "Audience id"), PageQuery),
    responses(
        (status = 200, description = "A page of members, by profile id", body = Page<AudienceMemberView>),
        (status = 400, description = "Malformed id, bad cursor or limit (`bad_path`, `bad_filter`, `bad_cursor`)", body = ApiErrorBody),
        (status = 404, description = "No such audience (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn audience_members(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<AudienceMemberView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<Uuid> = decode_cursor("audience-members", q.cursor.as_deref())?;
    store::get(&app.db, id).await.map_err(audience_error)?;
    let rows = store::members(&app.db, id, after, limit + 1)
        .await
        .map_err(audience_error)?;
    Ok(Json(paginate(rows, limit, "audience-members", |m| {
        m.profile_id
    })))
}

/// Every current member as CSV.
#[utoipa::path(
    get,
    path = "/audiences/{id}/export",
    tag = "audiences",
    summary = "Export an audience's members (CSV)",
    description = "One line per current member: `profile_id,display_name,email,phone,entered_at` \
                   (the profile's first e-mail and phone), with a header line.",
    params(("id" = Uuid, Path, description = "Audience id")),
    responses(
        (status = 200, description = "The members", content_type = "text/csv", body = String),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such audience (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn export_audience(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let audience = store::get(&app.db, id).await.map_err(audience_error)?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let csv_error = |e: csv::Error| ApiError::internal(anyhow::Error::new(e));
    out.write_record(["profile_id", "display_name", "email", "phone", "entered_at"])
        .map_err(csv_error)?;
    let mut after = None;
    let mut count = 0usize;
    loop {
        let rows = store::export_page(&app.db, id, after, EXPORT_CHUNK)
            .await
            .map_err(audience_error)?;
        let Some(last) = rows.last() else { break };
        after = Some(last.profile_id);
        for r in &rows {
            out.write_record([
                r.profile_id.to_string(),
                r.display_name.clone().unwrap_or_default(),
                r.email.clone().unwrap_or_default(),
                r.phone.clone().unwrap_or_default(),
                r.entered_at.to_rfc3339(),
            ])
            .map_err(csv_error)?;
        }
        count += rows.len();
        if (rows.len() as i64) < EXPORT_CHUNK {
            break;
        }
    }
    let body = out
        .into_inner()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("finishing the CSV: {e}")))?;
    tracing::info!(audience = %id, members = count, by = %caller.actor(), "audience exported");
    let filename: String = audience
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"audience-{filename}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}
