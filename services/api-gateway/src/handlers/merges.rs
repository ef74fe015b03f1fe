//! The merge log, the review queue, and merge decisions (approve, reject, merge by hand,
//! unmerge).
//!
//! Decisions are not applied here: each is published on `profiles.merge_requests` as a
//! [`MergeRequest`] for the identity merger, which serialises every profile write. The
//! answer is 202 with the request id; the review item's `status` (or the merge's
//! `undone_at`, or the new merge in the log) shows the outcome once applied. The
//! gateway stores each request in `api_merge_requests` before publishing it (the
//! outbox in `crate::outbox`), which is also how a pending review item shows a decision
//! in flight.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::api::{
    Accepted, ApiErrorBody, ManualMergeRequest, MergeAction, MergeLogEntry, MergeLogQuery,
    MergeRule, Page, RequestedDecision, ReviewItem, ReviewQuery, ReviewReason, ReviewStatus,
};
use domain::{Identifier, MergeRequest};
use service_kit::ApiError;
use storage::Named;
use streams::{Envelope, Topic};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery, decode_cursor, page_limit, paginate};
use crate::handlers::conflict;
use crate::handlers::profiles::summaries;
use crate::state::AppState;

/// Most profiles one manual merge may join.
const MAX_MANUAL_MERGE: usize = 10;

/// Columns of a [`MergeRow`].
pub const MERGE_COLUMNS: &str = "id, created_at, survivor_id, absorbed_ids, rule, \
     matched_identifiers, trigger_event_id, actor, undone_at, undone_by";

/// A `merge_history` row without its snapshot.
#[derive(sqlx::FromRow)]
pub struct MergeRow {
    /// Merge id.
    pub id: Uuid,
    /// When the merge was made.
    pub created_at: DateTime<Utc>,
    survivor_id: Uuid,
    absorbed_ids: Vec<Uuid>,
    rule: Named<MergeRule>,
    matched_identifiers: sqlx::types::Json<Vec<Identifier>>,
    trigger_event_id: Option<Uuid>,
    actor: String,
    undone_at: Option<DateTime<Utc>>,
    undone_by: Option<String>,
}

impl MergeRow {
    /// The API view.
    pub fn into_entry(self) -> MergeLogEntry {
        MergeLogEntry {
            id: self.id,
            created_at: self.created_at,
            survivor_id: self.survivor_id,
            absorbed_ids: self.absorbed_ids,
            rule: self.rule.0,
            matched_identifiers: self.matched_identifiers.0,
            trigger_event_id: self.trigger_event_id,
            actor: self.actor,
            undone_at: self.undone_at,
            undone_by: self.undone_by,
        }
    }
}

/// What a published request is about, for `api_merge_requests`.
#[derive(Default)]
pub struct Targets {
    /// The review item an approval or rejection decides.
    pub review_id: Option<Uuid>,
    /// The merge an unmerge undoes.
    pub merge_id: Option<Uuid>,
    /// The profiles a manual merge joins, or a review item proposes.
    pub profile_ids: Vec<Uuid>,
}

/// Stores `request` in the `profiles.merge_requests` outbox (`api_merge_requests`,
/// see `crate::outbox`) and then publishes it. Once the row is committed the request
/// is accepted: if Redis refuses the publish, the outbox relay publishes it later, so
/// a Redis outage delays a request (an erase too) but never drops it.
pub async fn publish_merge_request(
    app: &AppState,
    action: MergeAction,
    request: MergeRequest,
    targets: Targets,
    status_url: String,
) -> Result<Accepted, ApiError> {
    let request_id = Uuid::now_v7();
    let actor = match &request {
        MergeRequest::ApproveReview { actor, .. }
        | MergeRequest::RejectReview { actor, .. }
        | MergeRequest::ManualMerge { actor, .. }
        | MergeRequest::Unmerge { actor, .. }
        | MergeRequest::Erase { actor, .. } => actor.clone(),
    };
    let envelope = Envelope::new(request_id, "api-gateway", action.as_str(), &request);
    sqlx::query(
        "INSERT INTO api_merge_requests \
             (id, action, review_id, merge_id, profile_ids, actor, envelope) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(request_id)
    .bind(action.as_str())
    .bind(targets.review_id)
    .bind(targets.merge_id)
    .bind(&targets.profile_ids)
    .bind(&actor)
    .bind(sqlx::types::Json(&envelope))
    .execute(&app.db)
    .await?;
    match app.streams.publish(Topic::MergeRequests, &envelope).await {
        Ok(entry_id) => {
            sqlx::query(
                "UPDATE api_merge_requests SET entry_id = $2, published_at = now() \
                 WHERE id = $1 AND published_at IS NULL",
            )
            .bind(request_id)
            .bind(&entry_id)
            .execute(&app.db)
            .await?;
            tracing::info!(%request_id, action = action.as_str(), %actor, "merge request published");
        }
        Err(e) => tracing::warn!(
            %request_id,
            action = action.as_str(),
            error = %e,
            "publishing a merge request failed; the outbox relay will publish it"
        ),
    }
    Ok(Accepted {
        request_id,
        action,
        status_url,
    })
}

/// The merge log.
#[utoipa::path(
    get,
    path = "/merges",
    tag = "merges",
    summary = "Merge log",
    description = "Every merge, automatic and manual, newest first.",
    params(MergeLogQuery),
    responses(
        (status = 200, description = "A page of merges", body = Page<MergeLogEntry>),
        (status = 400, description = "A bad filter, cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn merge_log(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<MergeLogQuery>,
) -> Result<Json<Page<MergeLogEntry>>, ApiError> {
    let limit = page_limit(q.limit)?;
    // `from` after `to` is an empty window: it matches nothing.
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor("merges", q.cursor.as_deref())?;
    let (at, after_id) = after.unzip();
    let rows: Vec<MergeRow> = sqlx::query_as(&format!(
        "SELECT {MERGE_COLUMNS} FROM merge_history \
         WHERE ($1::text IS NULL OR rule = $1) \
           AND ($2::uuid IS NULL OR survivor_id = $2 OR $2 = ANY(absorbed_ids)) \
           AND ($3::timestamptz IS NULL OR created_at >= $3) \
           AND ($4::timestamptz IS NULL OR created_at < $4) \
           AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6)) \
         ORDER BY created_at DESC, id DESC LIMIT $7"
    ))
    .bind(q.rule.map(MergeRule::as_str))
    .bind(q.profile_id)
    .bind(q.from)
    .bind(q.to)
    .bind(at)
    .bind(after_id)
    .bind(limit + 1)
    .fetch_all(&app.db)
    .await?;
    let page = paginate(rows, limit, "merges", |r| (r.created_at, r.id));
    Ok(Json(crate::extract::map_page(page, MergeRow::into_entry)))
}

async fn find_merge(app: &AppState, id: Uuid) -> Result<MergeRow, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {MERGE_COLUMNS} FROM merge_history WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&app.db)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no merge {id}")))
}

/// One merge.
#[utoipa::path(
    get,
    path = "/merges/{id}",
    tag = "merges",
    summary = "One merge",
    params(("id" = Uuid, Path, description = "Merge id")),
    responses(
        (status = 200, description = "The merge", body = MergeLogEntry),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such merge (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn get_merge(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<MergeLogEntry>, ApiError> {
    Ok(Json(find_merge(&app, id).await?.into_entry()))
}

/// Merges profiles by hand.
#[utoipa::path(
    post,
    path = "/merges",
    tag = "merges",
    summary = "Merge profiles by hand",
    description = "Publishes a `manual_merge` request; the merger joins the profiles into \
                   the oldest and logs the merge with rule `manual`.",
    request_body = ManualMergeRequest,
    responses(
        (status = 202, description = "Merge requested: stored, and published now or by the outbox relay once Redis answers", body = Accepted),
        (status = 400, description = "Fewer than 2 or more than 10 profiles, or repeated ids (`bad_request`)", body = ApiErrorBody),
        (status = 404, description = "A profile does not exist (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "A profile was merged away already (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn manual_merge(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<ManualMergeRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let mut ids = body.profile_ids.clone();
    ids.sort();
    ids.dedup();
    if ids.len() != body.profile_ids.len() {
        return Err(ApiError::bad_request(
            "bad_request",
            "profile_ids lists a profile twice",
        ));
    }
    if !(2..=MAX_MANUAL_MERGE).contains(&ids.len()) {
        return Err(ApiError::bad_request(
            "bad_request",
            format!("a manual merge joins 2 to {MAX_MANUAL_MERGE} profiles"),
        ));
    }
    let found: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT id, merged_into FROM customer_profile WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&app.db)
            .await?;
    let found: HashMap<Uuid, Option<Uuid>> = found.into_iter().collect();
    for id in &ids {
        match found.get(id) {
            None => return Err(ApiError::not_found(format!("no profile {id}"))),
            Some(Some(into)) => {
                return Err(conflict(format!("profile {id} was merged into {into}")));
            }
            Some(None) => {}
        }
    }
    let accepted = publish_merge_request(
        &app,
        MergeAction::ManualMerge,
        MergeRequest::ManualMerge {
            profile_ids: body.profile_ids.clone(),
            actor: caller.actor(),
        },
        Targets {
            profile_ids: body.profile_ids,
            ..Targets::default()
        },
        format!("/api/v1/profiles/{}", ids[0]),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Undoes a merge.
#[utoipa::path(
    post,
    path = "/merges/{id}/unmerge",
    tag = "merges",
    summary = "Undo a merge",
    description = "Publishes an `unmerge` request; the merger restores the absorbed \
                   profiles with their identifiers and events and sets the merge's \
                   `undone_at`.",
    params(("id" = Uuid, Path, description = "Merge id")),
    responses(
        (status = 202, description = "Unmerge requested: stored, and published now or by the outbox relay once Redis answers", body = Accepted),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such merge (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "Already undone (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn unmerge(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let merge = find_merge(&app, id).await?;
    if let Some(at) = merge.undone_at {
        return Err(conflict(format!("merge {id} was undone at {at}")));
    }
    let accepted = publish_merge_request(
        &app,
        MergeAction::Unmerge,
        MergeRequest::Unmerge {
            merge_id: id,
            actor: caller.actor(),
        },
        Targets {
            merge_id: Some(id),
            ..Targets::default()
        },
        format!("/api/v1/merges/{id}"),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[derive(sqlx::FromRow)]
struct ReviewRow {
    id: Uuid,
    created_at: DateTime<Utc>,
    status: Named<ReviewStatus>,
    reason: Named<ReviewReason>,
    candidate_profile_ids: Vec<Uuid>,
    evidence: sqlx::types::Json<serde_json::Value>,
    trigger_event_id: Option<Uuid>,
    decided_at: Option<DateTime<Utc>>,
    decided_by: Option<String>,
    outcome: Option<sqlx::types::Json<serde_json::Value>>,
    request_id: Option<Uuid>,
    request_action: Option<Named<MergeAction>>,
    request_actor: Option<String>,
    requested_at: Option<DateTime<Utc>>,
}

/// The review columns with the latest request the API published for each item.
const REVIEW_SELECT: &str = "SELECT q.id, q.created_at, q.status, q.reason, \
     q.candidate_profile_ids, q.evidence, q.trigger_event_id, q.decided_at, q.decided_by, \
     q.outcome, r.id AS request_id, r.action AS request_action, r.actor AS request_actor, \
     r.requested_at \
     FROM manual_merge_queue q \
     LEFT JOIN LATERAL (SELECT id, action, actor, requested_at FROM api_merge_requests \
        WHERE review_id = q.id ORDER BY requested_at DESC LIMIT 1) r ON TRUE ";

async fn review_items(app: &AppState, rows: Vec<ReviewRow>) -> Result<Vec<ReviewItem>, ApiError> {
    let mut all: Vec<Uuid> = rows
        .iter()
        .flat_map(|r| r.candidate_profile_ids.iter().copied())
        .collect();
    all.sort();
    all.dedup();
    let by_id: HashMap<Uuid, domain::api::ProfileSummary> = summaries(app, &all)
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let status = r.status.0;
            let requested = match (status, r.request_id, r.request_action) {
                (ReviewStatus::Pending, Some(request_id), Some(Named(action))) => {
                    Some(RequestedDecision {
                        request_id,
                        action,
                        actor: r.request_actor.clone().unwrap_or_default(),
                        requested_at: r.requested_at.unwrap_or(r.created_at),
                    })
                }
                _ => None,
            };
            ReviewItem {
                id: r.id,
                created_at: r.created_at,
                status,
                reason: r.reason.0,
                candidates: r
                    .candidate_profile_ids
                    .iter()
                    .filter_map(|id| by_id.get(id).cloned())
                    .collect(),
                candidate_profile_ids: r.candidate_profile_ids,
                evidence: r.evidence.0,
                trigger_event_id: r.trigger_event_id,
                decided_at: r.decided_at,
                decided_by: r.decided_by,
                outcome: r.outcome.map(|o| o.0),
                requested,
            }
        })
        .collect())
}

/// The review queue.
#[utoipa::path(
    get,
    path = "/reviews",
    tag = "merges",
    summary = "Review queue",
    description = "Merges waiting for (or decided by) a person, newest first, with the \
                   candidate profiles and the evidence.",
    params(ReviewQuery),
    responses(
        (status = 200, description = "A page of review items", body = Page<ReviewItem>),
        (status = 400, description = "A bad status, cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn list_reviews(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> Result<Json<Page<ReviewItem>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor("reviews", q.cursor.as_deref())?;
    let (at, after_id) = after.unzip();
    let rows: Vec<ReviewRow> = sqlx::query_as(&format!(
        "{REVIEW_SELECT} WHERE ($1::text IS NULL OR q.status = $1) \
           AND ($2::timestamptz IS NULL OR (q.created_at, q.id) < ($2, $3)) \
         ORDER BY q.created_at DESC, q.id DESC LIMIT $4"
    ))
    .bind(q.status.map(ReviewStatus::as_str))
    .bind(at)
    .bind(after_id)
    .bind(limit + 1)
    .fetch_all(&app.db)
    .await?;
    let page = paginate(rows, limit, "reviews", |r| (r.created_at, r.id));
    Ok(Json(Page {
        items: review_items(&app, page.items).await?,
        next_cursor: page.next_cursor,
    }))
}

async fn find_review(app: &AppState, id: Uuid) -> Result<ReviewItem, ApiError> {
    let row: ReviewRow = sqlx::query_as(&format!("{REVIEW_SELECT} WHERE q.id = $1"))
        .bind(id)
        .fetch_optional(&app.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no review item {id}")))?;
    Ok(review_items(app, vec![row])
        .await?
        .pop()
        .expect("one row in, one item out"))
}

/// One review item.
#[utoipa::path(
    get,
    path = "/reviews/{id}",
    tag = "merges",
    summary = "One review item",
    params(("id" = Uuid, Path, description = "Review item id")),
    responses(
        (status = 200, description = "The review item", body = ReviewItem),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such review item (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn get_review(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ReviewItem>, ApiError> {
    Ok(Json(find_review(&app, id).await?))
}

async fn decide(
    app: &AppState,
    id: Uuid,
    caller: &crate::auth::Principal,
    approve: bool,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let item = find_review(app, id).await?;
    if item.status != ReviewStatus::Pending {
        return Err(conflict(format!(
            "review item {id} is {} already",
            item.status.as_str()
        )));
    }
    let (action, request) = if approve {
        (
            MergeAction::ApproveReview,
            MergeRequest::ApproveReview {
                review_id: id,
                actor: caller.actor(),
            },
        )
    } else {
        (
            MergeAction::RejectReview,
            MergeRequest::RejectReview {
                review_id: id,
                actor: caller.actor(),
            },
        )
    };
    let accepted = publish_merge_request(
        app,
        action,
        request,
        Targets {
            review_id: Some(id),
            profile_ids: item.candidate_profile_ids,
            ..Targets::default()
        },
        format!("/api/v1/reviews/{id}"),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Approves a review item's merge.
#[utoipa::path(
    post,
    path = "/reviews/{id}/approve",
    tag = "merges",
    summary = "Approve a review item",
    description = "Publishes an `approve_review` request; the item's status becomes \
                   `applied` (or `failed`) once the merger has acted. Sending it again \
                   while the item is pending is harmless.",
    params(("id" = Uuid, Path, description = "Review item id")),
    responses(
        (status = 202, description = "Approval sent: stored, and published now or by the outbox relay once Redis answers", body = Accepted),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such review item (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "The item is no longer pending (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn approve_review(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    decide(&app, id, &caller, true).await
}

/// Rejects a review item.
#[utoipa::path(
    post,
    path = "/reviews/{id}/reject",
    tag = "merges",
    summary = "Reject a review item",
    description = "Publishes a `reject_review` request; the item's status becomes \
                   `rejected` once the merger has recorded it.",
    params(("id" = Uuid, Path, description = "Review item id")),
    responses(
        (status = 202, description = "Rejection sent: stored, and published now or by the outbox relay once Redis answers", body = Accepted),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such review item (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "The item is no longer pending (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn reject_review(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    decide(&app, id, &caller, false).await
}
