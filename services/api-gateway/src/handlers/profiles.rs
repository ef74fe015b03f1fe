//! Profiles: search and list, Customer 360, timeline, merge history, predictions,
//! marketing consent, and the GDPR export and erasure.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::api::{
    Accepted, ApiErrorBody, CACHE_HEADER, ChurnBand, ConsentAccepted, ConsentUpdate, MergeAction,
    MergeLogEntry, Page, PageQuery, ProfileExport, ProfileQuery, ProfileSort, ProfileSummary,
    ProfileView, SortOrder, TimelineEvent, TimelineQuery,
};
use domain::profile::PredictionSummary;
use domain::{Channel, EventType, Identifier, IdentifierKind, MergeRequest, Order, Source};
use rust_decimal::Decimal;
use service_kit::ApiError;
use sqlx::{Postgres, QueryBuilder};
use storage::Named;
use storage::customer360 as c360;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery, decode_cursor, page_limit, paginate};
use crate::handlers::conflict;
use crate::handlers::merges::{MergeRow, publish_merge_request};
use crate::state::AppState;

/// The columns of a [`SummaryRow`], over `customer_profile p` joined with the latest
/// churn (`pc`) and segment (`ps`) predictions.
pub const SUMMARY_SELECT: &str = "SELECT p.id, p.display_name, p.identifiers, p.first_seen_at, \
     p.last_seen_at, p.orders_count, p.total_spent, p.currency, p.channels, \
     pc.score AS churn_probability, ps.label AS segment \
     FROM customer_profile p \
     LEFT JOIN predictions pc ON pc.profile_id = p.id AND pc.task = 'churn' \
     LEFT JOIN predictions ps ON ps.profile_id = p.id AND ps.task = 'segment' ";

/// A profile-list row.
#[derive(sqlx::FromRow)]
pub struct SummaryRow {
    id: Uuid,
    display_name: Option<String>,
    identifiers: sqlx::types::Json<serde_json::Value>,
    first_seen_at: Option<DateTime<Utc>>,
    last_seen_at: Option<DateTime<Utc>>,
    orders_count: i32,
    total_spent: Decimal,
    currency: Option<String>,
    channels: Vec<String>,
    churn_probability: Option<f64>,
    segment: Option<String>,
}

impl SummaryRow {
    /// The API view.
    pub fn into_summary(self) -> ProfileSummary {
        // Entries that are not `{kind, value}` of a known kind are skipped, not fatal.
        let identifiers = self
            .identifiers
            .0
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| serde_json::from_value::<Identifier>(v.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        ProfileSummary {
            id: self.id,
            display_name: self.display_name,
            identifiers,
            first_seen_at: self.first_seen_at,
            last_seen_at: self.last_seen_at,
            total_orders: i64::from(self.orders_count),
            lifetime_value: self.total_spent,
            currency: self.currency,
            channels: self
                .channels
                .iter()
                .filter_map(|c| c.parse::<Channel>().ok())
                .collect(),
            churn_probability: self.churn_probability,
            churn_band: self.churn_probability.map(ChurnBand::of),
            segment: self.segment,
        }
    }
}

/// Summaries of the given profiles (live ones only), in no particular order.
pub async fn summaries(app: &AppState, ids: &[Uuid]) -> sqlx::Result<Vec<ProfileSummary>> {
    let rows: Vec<SummaryRow> = sqlx::query_as(&format!(
        "{SUMMARY_SELECT} WHERE p.id = ANY($1) AND p.merged_into IS NULL"
    ))
    .bind(ids)
    .fetch_all(&app.db)
    .await?;
    Ok(rows.into_iter().map(SummaryRow::into_summary).collect())
}

/// Every identifier `q` can be, normalised as ingest does, or just `kind` when given.
fn identifier_candidates(q: &str, kind: Option<IdentifierKind>, region: &str) -> Vec<Identifier> {
    match kind {
        // A `q` that cannot be an identifier of this kind matches none.
        Some(kind) => Identifier::parse(kind, q, region).into_iter().collect(),
        None => {
            let mut all: Vec<Identifier> = IdentifierKind::ALL
                .into_iter()
                .filter_map(|k| Identifier::parse(k, q, region).ok())
                .collect();
            all.sort();
            all.dedup();
            all
        }
    }
}

/// The profile list's last-seen key: a profile never seen sorts as the earliest time.
/// The index `customer_profile_list_last_seen` is on exactly this expression (of live
/// profiles), so the list's sort and its last-seen window must both be written with it.
const LAST_SEEN_KEY: &str = "COALESCE(p.last_seen_at, '-infinity'::timestamptz)";

/// The sort key of a profile-list row, as the cursor carries it.
#[derive(serde::Serialize, serde::Deserialize)]
enum SortKey {
    /// Last seen (absent sorts first ascending, last descending).
    LastSeen(Option<DateTime<Utc>>, Uuid),
    /// Lifetime value, as a decimal string (exact).
    Ltv(String, Uuid),
    /// Orders placed, then the id.
    Orders(i32, Uuid),
}

/// Lists profiles: search by identifier or name, filter, sort, page.
#[utoipa::path(
    get,
    path = "/profiles",
    tag = "profiles",
    summary = "Search and list profiles",
    description = "`q` matches any identifier normalised exactly as ingest does \
                   (`+91 98765 43210`, `User@Mail.com`, `shopify:123`, ...) or the start \
                   of a display name. Filters combine with AND. Only live profiles are \
                   listed (merged-away ones resolve through `GET /profiles/{id}`).",
    params(ProfileQuery),
    responses(
        (status = 200, description = "A page of profiles", body = Page<ProfileSummary>),
        (status = 400, description = "A bad filter, sort, cursor or limit, with the reason (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn list_profiles(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<ProfileQuery>,
) -> Result<Json<Page<ProfileSummary>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let sort = q.sort.unwrap_or_default();
    let order = q.order.unwrap_or_default();
    let list = format!("profiles:{sort:?}:{order:?}");
    let after: Option<SortKey> = decode_cursor(&list, q.cursor.as_deref())?;
    // Every combination the document allows is answered: `last_seen_from` after
    // `last_seen_to` matches nothing, `kind` without `q` restricts nothing.

    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(SUMMARY_SELECT);
    sql.push("WHERE p.merged_into IS NULL");
    if let Some(text) = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let ids = identifier_candidates(text, q.kind, &app.settings.default_phone_region);
        let (kinds, values): (Vec<String>, Vec<String>) = ids
            .into_iter()
            .map(|i| (i.kind.as_str().to_owned(), i.value))
            .unzip();
        // An identifier may still point at a profile merged away since: follow it.
        sql.push(
            " AND (p.id IN (SELECT COALESCE(cp.merged_into, cp.id) FROM profile_identifier pi \
               JOIN customer_profile cp ON cp.id = pi.profile_id \
               WHERE (pi.kind, pi.value) IN (SELECT * FROM UNNEST(",
        );
        sql.push_bind(kinds);
        sql.push("::text[], ");
        sql.push_bind(values);
        sql.push("::text[])))");
        if q.kind.is_none() {
            sql.push(" OR lower(p.display_name) LIKE ");
            sql.push_bind(format!("{}%", escape_like(&text.to_lowercase())));
        }
        sql.push(")");
    }
    if let Some(segment) = q.segment.as_deref().filter(|s| !s.is_empty()) {
        sql.push(" AND ps.label = ");
        sql.push_bind(segment.to_owned());
    }
    if let Some(band) = q.churn_band {
        let (lo, hi) = band.range();
        sql.push(" AND pc.score >= ");
        sql.push_bind(lo);
        sql.push(" AND pc.score < ");
        sql.push_bind(hi);
    }
    if let Some(channel) = q.channel {
        sql.push(" AND p.channels @> ARRAY[");
        sql.push_bind(channel.as_str());
        sql.push("]::text[]");
    }
    // The window compares the list's last-seen key, so the list's index
    // (`customer_profile_list_last_seen`) answers it in any sort: `last_seen_at`
    // itself has no index. A profile never seen is in no window: its key,
    // `-infinity`, is below any `last_seen_from`, and excluded explicitly when only
    // `last_seen_to` is given.
    if let Some(from) = q.last_seen_from {
        sql.push(format!(" AND {LAST_SEEN_KEY} >= "));
        sql.push_bind(from);
    }
    if let Some(to) = q.last_seen_to {
        if q.last_seen_from.is_none() {
            sql.push(format!(" AND {LAST_SEEN_KEY} > '-infinity'::timestamptz"));
        }
        sql.push(format!(" AND {LAST_SEEN_KEY} < "));
        sql.push_bind(to);
    }
    let key_expr = match sort {
        ProfileSort::LastSeen => LAST_SEEN_KEY,
        ProfileSort::Ltv => "p.total_spent",
        ProfileSort::Orders => "p.orders_count",
    };
    let (op, dir_sql) = match order {
        SortOrder::Desc => ("<", "DESC"),
        SortOrder::Asc => (">", "ASC"),
    };
    match after {
        None => {}
        Some(SortKey::LastSeen(at, id)) if sort == ProfileSort::LastSeen => {
            sql.push(format!(" AND ({key_expr}, p.id) {op} (COALESCE("));
            sql.push_bind(at);
            sql.push("::timestamptz, '-infinity'::timestamptz), ");
            sql.push_bind(id);
            sql.push(")");
        }
        Some(SortKey::Ltv(v, id)) if sort == ProfileSort::Ltv => {
            let v: Decimal = v.parse().map_err(|_| {
                ApiError::bad_request("bad_cursor", "the cursor is not one this list handed out")
            })?;
            sql.push(format!(" AND ({key_expr}, p.id) {op} ("));
            sql.push_bind(v);
            sql.push(", ");
            sql.push_bind(id);
            sql.push(")");
        }
        Some(SortKey::Orders(n, id)) if sort == ProfileSort::Orders => {
            sql.push(format!(" AND ({key_expr}, p.id) {op} ("));
            sql.push_bind(n);
            sql.push(", ");
            sql.push_bind(id);
            sql.push(")");
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_cursor",
                "the cursor is not one this list handed out",
            ));
        }
    }
    sql.push(format!(
        " ORDER BY {key_expr} {dir_sql}, p.id {dir_sql} LIMIT "
    ));
    sql.push_bind(limit + 1);
    let rows: Vec<SummaryRow> = sql.build_query_as().fetch_all(&app.db).await?;
    let page = paginate(rows, limit, &list, |r| match sort {
        ProfileSort::LastSeen => SortKey::LastSeen(r.last_seen_at, r.id),
        ProfileSort::Ltv => SortKey::Ltv(r.total_spent.to_string(), r.id),
        ProfileSort::Orders => SortKey::Orders(r.orders_count, r.id),
    });
    Ok(Json(crate::extract::map_page(
        page,
        SummaryRow::into_summary,
    )))
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The Customer 360 of a profile.
#[utoipa::path(
    get,
    path = "/profiles/{id}",
    tag = "profiles",
    summary = "Customer 360",
    description = "Served from the Redis cache, falling back to Postgres and refilling \
                   the cache (header `x-cache: hit|miss`). A merged-away id answers with \
                   the survivor's document and `merged_into` set.",
    params(("id" = Uuid, Path, description = "Profile id (a merged-away id resolves to its survivor)")),
    responses(
        (status = 200, description = "The Customer 360", body = ProfileView,
         headers(("x-cache" = String, description = "`hit` or `miss`"))),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such profile (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn get_profile(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let read = app
        .customer360
        .load(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no profile {id}")))?;
    let mut resp = Json(ProfileView {
        requested_id: id,
        merged_into: read.merged_into,
        profile: read.doc,
    })
    .into_response();
    resp.headers_mut().insert(
        CACHE_HEADER,
        HeaderValue::from_static(if read.cached { "hit" } else { "miss" }),
    );
    Ok(resp)
}

/// The live profile `id` resolves to, or 404.
async fn live(app: &AppState, id: Uuid) -> Result<Uuid, ApiError> {
    storage::customer360::resolve(&app.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no profile {id}")))
}

#[derive(sqlx::FromRow)]
struct EventRow {
    event_id: Uuid,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    source: Named<Source>,
    channel: Named<Channel>,
    #[sqlx(rename = "type")]
    event_type: Named<EventType>,
    name: Option<String>,
    profile_id: Option<Uuid>,
    identifiers: sqlx::types::Json<serde_json::Value>,
    properties: sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
    order_data: Option<sqlx::types::Json<serde_json::Value>>,
}

impl EventRow {
    fn into_event(self, fallback_profile: Uuid) -> TimelineEvent {
        TimelineEvent {
            event_id: self.event_id,
            occurred_at: self.occurred_at,
            received_at: self.received_at,
            source: self.source.0,
            channel: self.channel.0,
            event_type: self.event_type.0,
            name: self.name,
            profile_id: self.profile_id.unwrap_or(fallback_profile),
            identifiers: serde_json::from_value(self.identifiers.0).unwrap_or_default(),
            properties: self.properties.0,
            order: self
                .order_data
                .and_then(|o| serde_json::from_value::<Order>(o.0).ok()),
        }
    }
}

const EVENT_COLUMNS: &str = "event_id, occurred_at, received_at, source, channel, type, name, \
     profile_id, identifiers, properties, order_data";

/// A profile's timeline.
#[utoipa::path(
    get,
    path = "/profiles/{id}/timeline",
    tag = "profiles",
    summary = "Timeline of a profile",
    description = "Every normalised event of the profile and of the profiles merged into \
                   it, newest first.",
    params(("id" = Uuid, Path, description = "Profile id"), TimelineQuery),
    responses(
        (status = 200, description = "A page of events", body = Page<TimelineEvent>),
        (status = 400, description = "Bad type, cursor, limit or id (`bad_filter`, `bad_cursor`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such profile (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn timeline(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<TimelineQuery>,
) -> Result<Json<Page<TimelineEvent>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor("timeline", q.cursor.as_deref())?;
    let survivor = live(&app, id).await?;
    let family = c360::family(&app.db, survivor).await?;
    let (at, after_id) = after.unzip();
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM normalized_event \
         WHERE profile_id = ANY($1) \
           AND ($2::text IS NULL OR type = $2) \
           AND ($3::timestamptz IS NULL OR (occurred_at, event_id) < ($3, $4)) \
         ORDER BY occurred_at DESC, event_id DESC LIMIT $5"
    ))
    .bind(&family)
    .bind(q.event_type.map(EventType::as_str))
    .bind(at)
    .bind(after_id)
    .bind(limit + 1)
    .fetch_all(&app.db)
    .await?;
    let page = paginate(rows, limit, "timeline", |r| (r.occurred_at, r.event_id));
    Ok(Json(crate::extract::map_page(page, |r| {
        r.into_event(survivor)
    })))
}

/// The merges that involved a profile.
#[utoipa::path(
    get,
    path = "/profiles/{id}/merges",
    tag = "profiles",
    summary = "Merge history of a profile",
    description = "Merges in which the profile, or a profile merged into it, survived or \
                   was absorbed; newest first.",
    params(("id" = Uuid, Path, description = "Profile id"), PageQuery),
    responses(
        (status = 200, description = "A page of merges", body = Page<MergeLogEntry>),
        (status = 400, description = "Bad cursor, limit or id (`bad_filter`, `bad_cursor`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such profile (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn profile_merges(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<MergeLogEntry>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> =
        decode_cursor("profile-merges", q.cursor.as_deref())?;
    let survivor = live(&app, id).await?;
    let family = c360::family(&app.db, survivor).await?;
    let rows = merges_of(&app, &family, after, limit + 1).await?;
    let page = paginate(rows, limit, "profile-merges", |r| (r.created_at, r.id));
    Ok(Json(crate::extract::map_page(page, MergeRow::into_entry)))
}

async fn merges_of(
    app: &AppState,
    family: &[Uuid],
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<MergeRow>> {
    let (at, after_id) = after.unzip();
    sqlx::query_as(&format!(
        "SELECT {} FROM merge_history \
         WHERE (survivor_id = ANY($1) OR absorbed_ids && $1) \
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4",
        crate::handlers::merges::MERGE_COLUMNS
    ))
    .bind(family)
    .bind(at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(&app.db)
    .await
}

/// A profile's latest predictions.
#[utoipa::path(
    get,
    path = "/profiles/{id}/predictions",
    tag = "models",
    summary = "Predictions of a profile",
    description = "The latest prediction per task (at most one per task, so not paged), \
                   with the model version that made it.",
    params(("id" = Uuid, Path, description = "Profile id")),
    responses(
        (status = 200, description = "Predictions, one per task", body = Vec<PredictionSummary>),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such profile (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn profile_predictions(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Vec<PredictionSummary>>, ApiError> {
    let survivor = live(&app, id).await?;
    Ok(Json(latest_predictions(&app, survivor).await?))
}

async fn latest_predictions(app: &AppState, id: Uuid) -> sqlx::Result<Vec<PredictionSummary>> {
    let rows = c360::predictions(&mut *app.db.acquire().await?, &[id]).await?;
    Ok(rows.into_iter().map(|(_, p)| p).collect())
}

#[derive(sqlx::FromRow)]
struct ExportProfileRow {
    display_name: Option<String>,
    traits: sqlx::types::Json<serde_json::Value>,
}

/// Everything stored about a person (GDPR access request).
#[utoipa::path(
    get,
    path = "/profiles/{id}/export",
    tag = "profiles",
    summary = "Export a profile (GDPR)",
    description = "The profile and the profiles merged into it: traits, identifiers, \
                   every event, every order, predictions and merges, as one JSON document.",
    params(("id" = Uuid, Path, description = "Profile id")),
    responses(
        (status = 200, description = "The export", body = ProfileExport),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such profile (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn export_profile(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ProfileExport>, ApiError> {
    let survivor = live(&app, id).await?;
    let family = c360::family(&app.db, survivor).await?;
    let profile: ExportProfileRow =
        sqlx::query_as("SELECT display_name, traits FROM customer_profile WHERE id = $1")
            .bind(survivor)
            .fetch_one(&app.db)
            .await?;
    let identifiers = c360::identifiers(&mut *app.db.acquire().await?, &family).await?;
    let events: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM normalized_event WHERE profile_id = ANY($1) \
         ORDER BY occurred_at DESC, event_id DESC"
    ))
    .bind(&family)
    .fetch_all(&app.db)
    .await?;
    let orders = c360::orders(&mut *app.db.acquire().await?, &family, i64::MAX).await?;
    let predictions = latest_predictions(&app, survivor).await?;
    let merges = merges_of(&app, &family, None, i64::MAX).await?;
    tracing::info!(profile_id = %survivor, by = %caller.actor(), "profile exported");
    Ok(Json(ProfileExport {
        exported_at: Utc::now(),
        profile_id: survivor,
        merged_profile_ids: family.iter().copied().filter(|f| *f != survivor).collect(),
        display_name: profile.display_name,
        traits: profile.traits.0,
        identifiers: identifiers.into_iter().map(|(_, i)| i).collect(),
        events: events.into_iter().map(|e| e.into_event(survivor)).collect(),
        orders: orders.into_iter().map(|(_, o)| o).collect(),
        predictions,
        merges: merges.into_iter().map(MergeRow::into_entry).collect(),
    }))
}

/// Asks the identity merger to erase a profile (GDPR erasure).
#[utoipa::path(
    post,
    path = "/profiles/{id}/erase",
    tag = "profiles",
    summary = "Erase a profile (GDPR)",
    description = "Stores an `erase` request in Postgres and publishes it on \
                   `profiles.merge_requests` (an outbox relay publishes it if Redis is \
                   refusing). The merger deletes the profile's events, identifiers, orders \
                   and predictions and unlinked raw events naming it, leaves a tombstone in \
                   its cache entry, deletes its stream entries and dead letters, and \
                   suppresses its identifiers so they are never ingested again. Answers \
                   202; the profile answers 404 once erased. A merged-away id is refused: \
                   erase the survivor it names.",
    params(("id" = Uuid, Path, description = "Profile id")),
    responses(
        (status = 202, description = "Erasure requested: stored, and published now or by the outbox relay once Redis answers", body = Accepted),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such profile (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "The profile was merged into another (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn erase_profile(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let survivor = live(&app, id).await?;
    if survivor != id {
        return Err(conflict(format!(
            "profile {id} was merged into {survivor}; erase that profile"
        )));
    }
    let accepted = publish_merge_request(
        &app,
        MergeAction::Erase,
        MergeRequest::Erase {
            profile_id: id,
            actor: caller.actor(),
        },
        Default::default(),
        format!("/api/v1/profiles/{id}"),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Longest caller-given consent source.
const MAX_CONSENT_SOURCE: usize = 48;

/// Records a marketing-consent decision for a profile.
#[utoipa::path(
    put,
    path = "/profiles/{id}/consent",
    tag = "profiles",
    summary = "Record marketing consent",
    description = "Records `subscribed` or `unsubscribed` for one channel (`whatsapp`, \
                   `email`, `sms`). The write flows through the pipeline like every other: \
                   it is stored as a raw event (a Segment-spec `identify` on the `api` \
                   channel, addressed to the profile by its e-mail, phone and loyalty id) \
                   and published on `events.raw`; the normalizer and the identity merger \
                   apply it, and the latest consent by time wins, so a later STOP reply \
                   still overrides it. The Customer 360 shows status, source \
                   (`api` or `api:<source>`) and time once the merger has applied it \
                   (usually within a second). A merged-away id is addressed to its survivor.",
    params(("id" = Uuid, Path, description = "Profile id")),
    request_body = ConsentUpdate,
    responses(
        (status = 202, description = "Stored and queued", body = ConsentAccepted),
        (status = 400, description = "Malformed id or body (`bad_path`, `bad_request`)", body = ApiErrorBody),
        (status = 404, description = "No such profile (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "The profile has no e-mail, phone or loyalty id to address the consent to (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn put_consent(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(update): ApiJson<ConsentUpdate>,
) -> Result<(StatusCode, Json<ConsentAccepted>), ApiError> {
    let source = consent_source(update.source.as_deref())?;
    let survivor = live(&app, id).await?;
    // Addressed by the identifiers only this profile holds: suspect ones (shared by
    // several people) would carry the consent to someone else.
    let ids: Vec<(IdentifierKind, String)> =
        c360::identifiers(&mut *app.db.acquire().await?, &[survivor])
            .await?
            .into_iter()
            .map(|(_, i)| i)
            .filter(|i| !i.suspect)
            .map(|i| (i.kind, i.value))
            .collect();
    let now = Utc::now();
    let actor = caller.actor();
    let event = ingestion::sources::segment::api_consent_event(
        &ids,
        update.channel,
        update.status,
        &source,
        &actor,
        now,
    )
    .ok_or_else(|| {
        conflict(format!(
            "profile {survivor} has no e-mail, phone or loyalty id to address the consent to"
        ))
    })?;
    let outcome = ingestion::raw::insert_batch(&app.db, std::slice::from_ref(&event))
        .await
        .map_err(ApiError::internal)?;
    let stored = outcome.first().map_or(event.id, |o| o.id);
    // A failed publish leaves the row to the outbox relay, as for any delivery.
    ingestion::raw::publish_stored(&app.streams, &app.db, std::slice::from_ref(&event)).await;
    tracing::info!(profile = %survivor, raw_event_id = %stored, channel = update.channel.as_str(),
                   status = %update.status, by = %actor, "consent recorded");
    Ok((
        StatusCode::ACCEPTED,
        Json(ConsentAccepted {
            profile_id: survivor,
            raw_event_id: stored,
            channel: update.channel,
            status: update.status,
            source,
            recorded_at: now,
        }),
    ))
}

/// The recorded source of an API consent write: `api`, or `api:<source>` for a
/// caller-given source of letters, digits, `-`, `_` and `.`.
fn consent_source(given: Option<&str>) -> Result<String, ApiError> {
    let Some(given) = given.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(domain::consent::SOURCE_API.to_owned());
    };
    let ok = given.len() <= MAX_CONSENT_SOURCE
        && given
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(ApiError::bad_request(
            "bad_request",
            format!(
                "`source` must be at most {MAX_CONSENT_SOURCE} letters, digits, `-`, `_` or `.`"
            ),
        ));
    }
    Ok(format!("{}:{given}", domain::consent::SOURCE_API))
}

#[cfg(test)]
mod consent_tests {
    use super::consent_source;

    #[test]
    fn sources() {
        assert_eq!(consent_source(None).unwrap(), "api");
        assert_eq!(consent_source(Some("  ")).unwrap(), "api");
        assert_eq!(
            consent_source(Some("call-centre")).unwrap(),
            "api:call-centre"
        );
        assert!(consent_source(Some("a b")).is_err());
        assert!(consent_source(Some(&"x".repeat(49))).is_err());
    }
}
