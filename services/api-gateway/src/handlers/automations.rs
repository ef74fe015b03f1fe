//! Automations: definitions (trigger, wait, conditions, actions, guardrails), the kill
//! switch, dry runs, runs and sends, results. The rows live in `journeys::store`; the
//! automations service runs them (docs/automations.md).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use domain::api::{
    ApiErrorBody, AutomationActivityQuery, AutomationEnable, AutomationResults, AutomationRunView,
    AutomationSendView, AutomationView, DryRun, DryRunRequest, Page, PageQuery,
};
use domain::automation::AutomationSpec;
use journeys::store::{self, AutomationError};
use journeys::{Policy, dry};
use service_kit::ApiError;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery, decode_cursor, page_limit, paginate};
use crate::handlers::conflict;
use crate::state::AppState;

/// Profiles a dry run judges unless told otherwise.
const DRY_RUN_DEFAULT: u32 = 20;

fn automation_error(e: AutomationError) -> ApiError {
    match e {
        AutomationError::Spec(s) => ApiError::bad_request("invalid_automation", s.to_string()),
        AutomationError::Invalid(m) => ApiError::bad_request("bad_request", m),
        AutomationError::NotFound(id) => ApiError::not_found(format!("no automation {id}")),
        e @ AutomationError::NameTaken(_) => conflict(e.to_string()),
        AutomationError::Database(e) => ApiError::internal(e),
    }
}

fn policy(app: &AppState) -> Result<Policy, ApiError> {
    Policy::from_settings(&app.settings.automations)
        .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))
}

/// Lists automations, oldest first.
#[utoipa::path(
    get,
    path = "/automations",
    tag = "automations",
    summary = "List automations",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of automations", body = Page<AutomationView>),
        (status = 400, description = "Bad cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn list_automations(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<AutomationView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<Uuid> = decode_cursor("automations", q.cursor.as_deref())?;
    let rows = store::page(&app.db, after, limit + 1)
        .await
        .map_err(automation_error)?;
    Ok(Json(paginate(rows, limit, "automations", |a| a.id)))
}

/// Creates an automation (disabled: enable it to start).
#[utoipa::path(
    post,
    path = "/automations",
    tag = "automations",
    summary = "Create an automation",
    description = "Validates the definition (see docs/automations.md) and saves it \
                   disabled; `POST /automations/{id}/enabled` turns it on.",
    request_body = AutomationSpec,
    responses(
        (status = 201, description = "Created, disabled", body = AutomationView),
        (status = 400, description = "Invalid definition or a missing audience (`invalid_automation`, `bad_request`)", body = ApiErrorBody),
        (status = 409, description = "Another automation has this name (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn create_automation(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<AutomationSpec>,
) -> Result<(StatusCode, Json<AutomationView>), ApiError> {
    let created = store::create(&app.db, &body, &caller.actor())
        .await
        .map_err(automation_error)?;
    tracing::info!(automation = %created.id, by = %caller.actor(), "automation created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// One automation.
#[utoipa::path(
    get,
    path = "/automations/{id}",
    tag = "automations",
    summary = "One automation",
    params(("id" = Uuid, Path, description = "Automation id")),
    responses(
        (status = 200, description = "The automation", body = AutomationView),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such automation (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn get_automation(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AutomationView>, ApiError> {
    Ok(Json(
        store::get(&app.db, id).await.map_err(automation_error)?,
    ))
}

/// Changes an automation's definition.
#[utoipa::path(
    put,
    path = "/automations/{id}",
    tag = "automations",
    summary = "Change an automation",
    description = "Waiting runs continue under the new definition (each step reads it \
                   when it runs); the enabled state is unchanged.",
    params(("id" = Uuid, Path, description = "Automation id")),
    request_body = AutomationSpec,
    responses(
        (status = 200, description = "Changed", body = AutomationView),
        (status = 400, description = "Invalid definition, a missing audience, malformed id (`invalid_automation`, `bad_request`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such automation (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "Another automation has this name (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn update_automation(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AutomationSpec>,
) -> Result<Json<AutomationView>, ApiError> {
    let view = store::update(&app.db, id, &body)
        .await
        .map_err(automation_error)?;
    tracing::info!(automation = %id, by = %caller.actor(), "automation changed");
    Ok(Json(view))
}

/// Deletes an automation with its runs and sends.
#[utoipa::path(
    delete,
    path = "/automations/{id}",
    tag = "automations",
    summary = "Delete an automation",
    params(("id" = Uuid, Path, description = "Automation id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such automation (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn delete_automation(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    store::delete(&app.db, id).await.map_err(automation_error)?;
    tracing::info!(automation = %id, by = %caller.actor(), "automation deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The kill switch.
#[utoipa::path(
    post,
    path = "/automations/{id}/enabled",
    tag = "automations",
    summary = "Enable or disable an automation",
    description = "Enabling starts from now (only later trigger occurrences start runs). \
                   Disabling is the kill switch: waiting runs are cancelled at once and a \
                   run being acted on checks again before each provider call.",
    params(("id" = Uuid, Path, description = "Automation id")),
    request_body = AutomationEnable,
    responses(
        (status = 200, description = "Switched", body = AutomationView),
        (status = 400, description = "Malformed id or body (`bad_path`, `bad_request`)", body = ApiErrorBody),
        (status = 404, description = "No such automation (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn enable_automation(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AutomationEnable>,
) -> Result<Json<AutomationView>, ApiError> {
    let view = store::set_enabled(&app.db, id, body.enabled)
        .await
        .map_err(automation_error)?;
    tracing::info!(automation = %id, enabled = body.enabled, by = %caller.actor(), "automation switched");
    Ok(Json(view))
}

async fn run_dry(
    app: &AppState,
    id: Uuid,
    spec: &AutomationSpec,
    body: &DryRunRequest,
) -> Result<Json<DryRun>, ApiError> {
    let limit = body.limit.unwrap_or(DRY_RUN_DEFAULT);
    let out = dry::dry_run(&app.db, &policy(app)?, id, spec, body.profile_id, limit)
        .await
        .map_err(automation_error)?;
    Ok(Json(out))
}

/// Dry run of an unsaved definition.
#[utoipa::path(
    post,
    path = "/automations/dry-run",
    tag = "automations",
    summary = "Dry run of a definition",
    description = "Who the trigger reaches now and what each would get (rendered \
                   messages, or the guardrail that stops them), as if the wait were over. \
                   Nothing is sent or recorded. `spec` is required.",
    request_body = DryRunRequest,
    responses(
        (status = 200, description = "The judged candidates", body = DryRun),
        (status = 400, description = "Missing or invalid definition, limit out of range (`invalid_automation`, `bad_request`)", body = ApiErrorBody),
    )
)]
pub async fn dry_run_spec(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<DryRunRequest>,
) -> Result<Json<DryRun>, ApiError> {
    let spec = body
        .spec
        .clone()
        .ok_or_else(|| ApiError::bad_request("bad_request", "`spec` is required"))?;
    run_dry(&app, Uuid::nil(), &spec, &body).await
}

/// Dry run of a saved automation.
#[utoipa::path(
    post,
    path = "/automations/{id}/dry-run",
    tag = "automations",
    summary = "Dry run of an automation",
    description = "As `POST /automations/dry-run` for the saved definition (`spec` must \
                   be absent); the control group is the automation's own.",
    params(("id" = Uuid, Path, description = "Automation id")),
    request_body = DryRunRequest,
    responses(
        (status = 200, description = "The judged candidates", body = DryRun),
        (status = 400, description = "A `spec` given, limit out of range, malformed id (`bad_request`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such automation (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn dry_run_automation(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<DryRunRequest>,
) -> Result<Json<DryRun>, ApiError> {
    if body.spec.is_some() {
        return Err(ApiError::bad_request(
            "bad_request",
            "a saved automation's dry run takes no `spec`",
        ));
    }
    let a = store::get(&app.db, id).await.map_err(automation_error)?;
    run_dry(&app, id, &a.spec, &body).await
}

/// A page of an automation's runs.
#[utoipa::path(
    get,
    path = "/automations/{id}/runs",
    tag = "automations",
    summary = "An automation's runs",
    params(("id" = Uuid, Path, description = "Automation id"), AutomationActivityQuery),
    responses(
        (status = 200, description = "A page of runs, newest first", body = Page<AutomationRunView>),
        (status = 400, description = "Malformed id, bad cursor or limit (`bad_path`, `bad_filter`, `bad_cursor`)", body = ApiErrorBody),
        (status = 404, description = "No such automation (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn automation_runs(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<AutomationActivityQuery>,
) -> Result<Json<Page<AutomationRunView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let before: Option<Uuid> = decode_cursor("automation-runs", q.cursor.as_deref())?;
    store::get(&app.db, id).await.map_err(automation_error)?;
    let rows = store::runs(&app.db, id, q.profile_id, before, limit + 1)
        .await
        .map_err(automation_error)?;
    Ok(Json(paginate(rows, limit, "automation-runs", |r| r.id)))
}

/// A page of an automation's sends.
#[utoipa::path(
    get,
    path = "/automations/{id}/sends",
    tag = "automations",
    summary = "An automation's sends",
    params(("id" = Uuid, Path, description = "Automation id"), AutomationActivityQuery),
    responses(
        (status = 200, description = "A page of sends, newest first", body = Page<AutomationSendView>),
        (status = 400, description = "Malformed id, bad cursor or limit (`bad_path`, `bad_filter`, `bad_cursor`)", body = ApiErrorBody),
        (status = 404, description = "No such automation (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn automation_sends(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<AutomationActivityQuery>,
) -> Result<Json<Page<AutomationSendView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let before: Option<Uuid> = decode_cursor("automation-sends", q.cursor.as_deref())?;
    store::get(&app.db, id).await.map_err(automation_error)?;
    let rows = store::sends(&app.db, Some(id), q.profile_id, before, limit + 1)
        .await
        .map_err(automation_error)?;
    Ok(Json(paginate(rows, limit, "automation-sends", |r| r.id)))
}

/// Every automation's sends (a profile's recent messages with `profile_id`).
#[utoipa::path(
    get,
    path = "/automations/sends",
    tag = "automations",
    summary = "Sends of every automation",
    description = "With `profile_id`: the messages automations sent (or stopped) for one \
                   profile, newest first (the Customer 360's recent messages).",
    params(AutomationActivityQuery),
    responses(
        (status = 200, description = "A page of sends, newest first", body = Page<AutomationSendView>),
        (status = 400, description = "Bad cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn all_sends(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<AutomationActivityQuery>,
) -> Result<Json<Page<AutomationSendView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let before: Option<Uuid> = decode_cursor("all-automation-sends", q.cursor.as_deref())?;
    let rows = store::sends(&app.db, None, q.profile_id, before, limit + 1)
        .await
        .map_err(automation_error)?;
    Ok(Json(paginate(rows, limit, "all-automation-sends", |r| {
        r.id
    })))
}

/// An automation's results.
#[utoipa::path(
    get,
    path = "/automations/{id}/results",
    tag = "automations",
    summary = "An automation's results",
    description = "Runs by status and outcome, sends by status (sent, delivered, read, \
                   failed, no consent, suppressed, capped, …), the outcome funnel, and \
                   conversions (orders within the window after a message) vs. the \
                   control group.",
    params(("id" = Uuid, Path, description = "Automation id")),
    responses(
        (status = 200, description = "The results", body = AutomationResults),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such automation (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn automation_results(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AutomationResults>, ApiError> {
    Ok(Json(
        store::results(&app.db, id)
            .await
            .map_err(automation_error)?,
    ))
}
