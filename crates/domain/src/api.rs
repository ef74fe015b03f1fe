//! Request and response payloads of the REST API under `/api/v1`.
//!
//! The api-gateway serialises these and the Leptos dashboard deserialises them, so both
//! sides compile against one definition and cannot drift. With the `openapi` feature
//! every type also derives `utoipa::ToSchema` (query structs `utoipa::IntoParams`), which
//! is how the gateway's OpenAPI document describes them; the dashboard builds without
//! that feature and gets plain serde types. `docs/api.md` lists the routes.
//!
//! Conventions every endpoint follows:
//! - every unbounded list is a [`Page`]: keyset pagination with an opaque `cursor`
//!   (pass `next_cursor` back as `cursor`; `None` means the last page was reached);
//! - errors are [`ApiErrorBody`] with a stable `code`;
//! - actions applied asynchronously by the identity merger answer 202 with [`Accepted`];
//! - timestamps are RFC 3339 in UTC, money is a JSON number in the row's currency.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{EventType, Order};
use crate::identifier::{Identifier, IdentifierKind};
use crate::profile::{Customer360, ProfileIdentifier};
use crate::source::{Channel, Source, UnknownName};

/// Name of the session cookie set by `POST /api/v1/auth/login`.
pub const SESSION_COOKIE: &str = "ci_session";

/// Header a cookie-authenticated client must send on every state-changing request
/// (`POST`, `PUT`, `PATCH`, `DELETE`). Browsers cannot add it to a cross-site request
/// without a CORS preflight the gateway refuses, so its presence proves same-origin.
/// Requests authenticated with a bearer token do not need it.
pub const CSRF_HEADER: &str = "x-requested-with";

/// Value to send in [`CSRF_HEADER`] (any non-empty value is accepted).
pub const CSRF_HEADER_VALUE: &str = "constintel";

/// Response header of `GET /api/v1/profiles/{id}`: `hit` when the Customer 360 came
/// from the Redis cache, `miss` when it was built from Postgres (and cached).
pub const CACHE_HEADER: &str = "x-cache";

/// Items per page when the request gives no `limit`.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;

/// The largest `limit` a list accepts.
pub const MAX_PAGE_LIMIT: u32 = 200;

// ---------------------------------------------------------------------------------
// Errors and pagination
// ---------------------------------------------------------------------------------

/// The body of every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiErrorDetail,
}

/// Code and message of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorDetail {
    /// Stable machine-readable code (`not_found`, `bad_request`, `forbidden`, ...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// One page of a list. Pass `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items of this page, in the list's order.
    pub items: Vec<T>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Paging parameters shared by lists without other filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct PageQuery {
    /// Cursor from the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page (1–200, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Answer of an action the identity merger applies asynchronously (approve, reject,
/// manual merge, unmerge, erase): the request was published on
/// `profiles.merge_requests`; the target's status shows the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// Id of the published request (the stream envelope id).
    pub request_id: Uuid,
    /// What was requested.
    pub action: MergeAction,
    /// Where to watch the outcome (an API path).
    pub status_url: String,
}

// ---------------------------------------------------------------------------------
// Authentication, users and API tokens
// ---------------------------------------------------------------------------------

/// What a user or API token may do. Each role includes the ones below it:
/// `viewer` reads, `analyst` also acts on merges, imports and test events,
/// `admin` also manages users, tokens, integrations, erasure and dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything except secrets.
    Viewer,
    /// Viewer plus merge decisions, CSV imports and test events.
    Analyst,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Analyst, Role::Admin];

    /// The lower-case name used in JSON and Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may call a route that needs `required`.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "role",
                value: s.to_owned(),
            })
    }
}

/// `POST /auth/login`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// The user's e-mail (case-insensitive).
    pub email: String,
    /// The user's password.
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// Answer of a successful login; the session itself travels in the
/// [`SESSION_COOKIE`] cookie (HttpOnly, SameSite=Strict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// The signed-in user.
    pub user: UserView,
    /// When the session expires.
    pub expires_at: DateTime<Utc>,
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A dashboard user with a session cookie.
    User,
    /// A machine with a bearer API token.
    Token,
}

/// `GET /auth/me`: who the caller is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// User or token.
    pub kind: PrincipalKind,
    /// User id or token id.
    pub id: Uuid,
    /// The user's e-mail or the token's name.
    pub name: String,
    /// The caller's role.
    pub role: Role,
    /// When the session expires (users only).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A dashboard user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// User id.
    pub id: Uuid,
    /// E-mail (lower-case), the login name.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Disabled users cannot sign in; their sessions stop working.
    pub disabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last successful login.
    #[serde(default)]
    pub last_login_at: Option<DateTime<Utc>>,
}

/// `POST /users`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserRequest {
    /// E-mail, the login name.
    pub email: String,
    /// Password, at least 12 characters.
    pub password: String,
    /// Role.
    pub role: Role,
}

impl fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .field("role", &self.role)
            .finish()
    }
}

/// `PATCH /users/{id}`: the fields to change (absent fields stay as they are).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateUserRequest {
    /// New role.
    #[serde(default)]
    pub role: Option<Role>,
    /// Disable (ends the user's sessions) or re-enable.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// New password, at least 12 characters (ends the user's sessions).
    #[serde(default)]
    pub password: Option<String>,
}

impl fmt::Debug for UpdateUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateUserRequest")
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// An API token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiTokenView {
    /// Token id.
    pub id: Uuid,
    /// What it is for.
    pub name: String,
    /// First characters of the token, to tell tokens apart.
    pub prefix: String,
    /// Role the token acts with.
    pub role: Role,
    /// The admin who created it.
    #[serde(default)]
    pub created_by: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last request made with it (updated at most once a minute).
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; revoked tokens are refused.
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// `POST /tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenRequest {
    /// What the token is for (e.g. `warehouse-sync`).
    pub name: String,
    /// Role it acts with.
    pub role: Role,
}

/// Answer of `POST /tokens`: the only time the token is shown.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The bearer token (`Authorization: Bearer <token>`). Store it now: only its hash
    /// is kept.
    pub token: String,
    /// The token's listing.
    pub info: ApiTokenView,
}

impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"[REDACTED]")
            .field("info", &self.info)
            .finish()
    }
}

// ---------------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------------

/// `GET /overview` parameters: the period (default: the last 30 days).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct OverviewQuery {
    /// Start of the period (inclusive).
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// End of the period (exclusive), default now.
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
}

/// The Overview page's KPIs for one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    /// Start of the period.
    pub from: DateTime<Utc>,
    /// End of the period.
    pub to: DateTime<Utc>,
    /// Live (not merged-away) profiles now.
    pub profiles_total: i64,
    /// Live profiles first seen in the period (their first event; else their creation).
    pub profiles_new: i64,
    /// Normalised events that occurred in the period.
    pub events_total: i64,
    /// Events per minute over the period, in equal buckets (at most 240).
    pub events_per_minute: Vec<RatePoint>,
    /// Orders placed in the period (cancelled excluded).
    pub orders: i64,
    /// Revenue of those orders net of refunds, per currency.
    pub revenue: Vec<MoneyTotal>,
    /// The same revenue per UTC day of the period, for each currency in `revenue`
    /// (days without orders included, at zero), oldest day first.
    pub revenue_per_day: Vec<DayRevenue>,
    /// Merges made in the period (automatic and manual, not undone).
    pub merges: i64,
    /// Review items created in the period.
    pub review_items_created: i64,
    /// Review items pending now.
    pub review_items_pending: i64,
    /// Live profiles per churn-risk band (profiles without a churn score are left out).
    pub churn_risk: Vec<ChurnBandCount>,
    /// Live profiles per segment.
    pub segments: Vec<SegmentCount>,
    /// Best-selling categories in the period, by revenue.
    pub top_categories: Vec<CategorySales>,
    /// Best-selling products in the period, by revenue.
    pub top_products: Vec<ProductSales>,
}

/// One bucket of a rate time series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RatePoint {
    /// Start of the bucket.
    pub at: DateTime<Utc>,
    /// Events in the bucket.
    pub count: i64,
    /// `count` divided by the bucket's length in minutes.
    pub per_minute: f64,
}

/// Revenue of one day in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayRevenue {
    /// The day (UTC).
    pub day: NaiveDate,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Orders placed that day (cancelled excluded).
    pub orders: i64,
    /// Their revenue net of refunds.
    pub amount: Decimal,
}

/// An amount of money in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MoneyTotal {
    /// ISO 4217 currency code.
    pub currency: String,
    /// Amount.
    pub amount: Decimal,
}

/// Profiles in one churn-risk band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChurnBandCount {
    /// The band.
    pub band: ChurnBand,
    /// Live profiles in it.
    pub profiles: i64,
}

/// Profiles in one segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SegmentCount {
    /// Segment name (Champions, Loyal, At Risk, ...).
    pub segment: String,
    /// Live profiles in it.
    pub profiles: i64,
}

/// Sales of one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CategorySales {
    /// Category name.
    pub category: String,
    /// Orders containing it.
    pub orders: i64,
    /// Units sold.
    pub units: i64,
    /// Revenue (line price × quantity), all currencies added.
    pub revenue: Decimal,
}

/// Sales of one product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProductSales {
    /// SKU.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Category, when known.
    #[serde(default)]
    pub category: Option<String>,
    /// Units sold.
    pub units: i64,
    /// Revenue (line price × quantity), all currencies added.
    pub revenue: Decimal,
}

// ---------------------------------------------------------------------------------
// Profiles and Customer 360
// ---------------------------------------------------------------------------------

/// Churn-risk band of a churn probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChurnBand {
    /// Probability below [`ChurnBand::MEDIUM_FROM`].
    Low,
    /// Probability from [`ChurnBand::MEDIUM_FROM`] to below [`ChurnBand::HIGH_FROM`].
    Medium,
    /// Probability of at least [`ChurnBand::HIGH_FROM`].
    High,
}

impl ChurnBand {
    /// Every band, lowest risk first.
    pub const ALL: [ChurnBand; 3] = [ChurnBand::Low, ChurnBand::Medium, ChurnBand::High];
    /// Lowest churn probability of the medium band.
    pub const MEDIUM_FROM: f64 = 0.3;
    /// Lowest churn probability of the high band.
    pub const HIGH_FROM: f64 = 0.7;

    /// The band of a churn probability.
    pub fn of(probability: f64) -> ChurnBand {
        if probability >= Self::HIGH_FROM {
            ChurnBand::High
        } else if probability >= Self::MEDIUM_FROM {
            ChurnBand::Medium
        } else {
            ChurnBand::Low
        }
    }

    /// The probability range `[low, high)` of this band.
    pub fn range(self) -> (f64, f64) {
        match self {
            ChurnBand::Low => (f64::NEG_INFINITY, Self::MEDIUM_FROM),
            ChurnBand::Medium => (Self::MEDIUM_FROM, Self::HIGH_FROM),
            ChurnBand::High => (Self::HIGH_FROM, f64::INFINITY),
        }
    }

    /// The lower-case name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            ChurnBand::Low => "low",
            ChurnBand::Medium => "medium",
            ChurnBand::High => "high",
        }
    }
}

/// Order of a profile list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProfileSort {
    /// By latest activity.
    #[default]
    LastSeen,
    /// By lifetime value.
    Ltv,
    /// By number of orders.
    Orders,
}

/// Direction of a sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Largest / latest first.
    #[default]
    Desc,
    /// Smallest / earliest first.
    Asc,
}

/// `GET /profiles` parameters. Every filter is optional; they combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct ProfileQuery {
    /// Any identifier, normalised as ingest does (`+91 98765 43210`, `User@Mail.com`,
    /// `shopify:123`, a loyalty id, a device or cookie id), or the start of a name.
    #[serde(default)]
    pub q: Option<String>,
    /// Read `q` as this identifier kind only (no name match).
    #[serde(default)]
    pub kind: Option<IdentifierKind>,
    /// Only profiles in this segment.
    #[serde(default)]
    pub segment: Option<String>,
    /// Only profiles that used this channel.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// Only profiles in this churn-risk band.
    #[serde(default)]
    pub churn_band: Option<ChurnBand>,
    /// Only profiles last seen at or after this time.
    #[serde(default)]
    pub last_seen_from: Option<DateTime<Utc>>,
    /// Only profiles last seen before this time.
    #[serde(default)]
    pub last_seen_to: Option<DateTime<Utc>>,
    /// Sort key (default `last_seen`).
    #[serde(default)]
    pub sort: Option<ProfileSort>,
    /// Sort direction (default `desc`).
    #[serde(default)]
    pub order: Option<SortOrder>,
    /// Cursor from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page (1–200, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One row of the profile list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileSummary {
    /// Profile id.
    pub id: Uuid,
    /// Display name, when known.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The profile's identifiers (kind and value).
    pub identifiers: Vec<Identifier>,
    /// First activity.
    #[serde(default)]
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest activity.
    #[serde(default)]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Orders placed.
    pub total_orders: i64,
    /// Realised lifetime value.
    pub lifetime_value: Decimal,
    /// Currency of `lifetime_value`.
    #[serde(default)]
    pub currency: Option<String>,
    /// Channels used.
    pub channels: Vec<Channel>,
    /// Latest churn probability, when scored.
    #[serde(default)]
    pub churn_probability: Option<f64>,
    /// Its band.
    #[serde(default)]
    pub churn_band: Option<ChurnBand>,
    /// Latest segment, when scored.
    #[serde(default)]
    pub segment: Option<String>,
}

/// `GET /profiles/{id}`: the Customer 360 of a profile. Asking for a merged-away id
/// answers with the survivor's document and says so in `merged_into`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileView {
    /// The id in the request.
    pub requested_id: Uuid,
    /// The survivor `requested_id` was merged into (directly or through a chain), when
    /// it was merged away; `profile.profile_id` is then this id.
    #[serde(default)]
    pub merged_into: Option<Uuid>,
    /// The Customer 360 document.
    pub profile: Customer360,
}

/// `GET /profiles/{id}/timeline` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct TimelineQuery {
    /// Only events of this type.
    #[serde(rename = "type", default)]
    pub event_type: Option<EventType>,
    /// Cursor from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page (1–200, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One event of a profile's timeline (newest first), including the events of the
/// profiles merged into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEvent {
    /// The event id (the raw event id).
    pub event_id: Uuid,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When ingest stored it.
    pub received_at: DateTime<Utc>,
    /// Source system.
    pub source: String,
    /// Touchpoint.
    pub channel: Channel,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The source's own name for it.
    #[serde(default)]
    pub name: Option<String>,
    /// The profile the event was attached to (an absorbed profile's id for events
    /// that arrived before a merge).
    pub profile_id: Uuid,
    /// Identifiers the event carried.
    pub identifiers: Vec<Identifier>,
    /// Event properties (product, page, message, ...).
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// The order, for order events.
    #[serde(default)]
    pub order: Option<Order>,
}

// ---------------------------------------------------------------------------------
// Merges and the review queue
// ---------------------------------------------------------------------------------

/// An action on `profiles.merge_requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MergeAction {
    /// Apply a review item's merge.
    ApproveReview,
    /// Close a review item without merging.
    RejectReview,
    /// Merge profiles by hand.
    ManualMerge,
    /// Undo a merge.
    Unmerge,
    /// GDPR erasure of a profile.
    Erase,
}

impl MergeAction {
    /// The snake_case name (as in `MergeRequest`'s `action` tag).
    pub fn as_str(self) -> &'static str {
        match self {
            MergeAction::ApproveReview => "approve_review",
            MergeAction::RejectReview => "reject_review",
            MergeAction::ManualMerge => "manual_merge",
            MergeAction::Unmerge => "unmerge",
            MergeAction::Erase => "erase",
        }
    }
}

/// `GET /merges` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct MergeLogQuery {
    /// Only merges made by this rule (e.g. `shared_strong_identifier`, `manual`).
    #[serde(default)]
    pub rule: Option<String>,
    /// Only merges in which this profile survived or was absorbed.
    #[serde(default)]
    pub profile_id: Option<Uuid>,
    /// Only merges at or after this time.
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// Only merges before this time.
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    /// Cursor from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page (1–200, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One merge of the merge log (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MergeLogEntry {
    /// Merge id (what `POST /merges/{id}/unmerge` takes).
    pub id: Uuid,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The profile that survived.
    pub survivor_id: Uuid,
    /// The profiles absorbed into it.
    pub absorbed_ids: Vec<Uuid>,
    /// The rule that merged them.
    pub rule: String,
    /// The identifiers that matched.
    pub matched_identifiers: serde_json::Value,
    /// The event that triggered it, for automatic merges.
    #[serde(default)]
    pub trigger_event_id: Option<Uuid>,
    /// Who merged (`identity-merger` or a user / token).
    pub actor: String,
    /// When it was undone.
    #[serde(default)]
    pub undone_at: Option<DateTime<Utc>>,
    /// Who undid it.
    #[serde(default)]
    pub undone_by: Option<String>,
}

/// Status of a review item. `approved` and `rejected` are decisions the merger has
/// taken in; `applied` means the approved merge was made, `failed` that it could not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved, merge in progress.
    Approved,
    /// Rejected: the profiles stay apart.
    Rejected,
    /// Approved and merged.
    Applied,
    /// Approved but the merge failed (see `outcome`).
    Failed,
}

impl ReviewStatus {
    /// Every status.
    pub const ALL: [ReviewStatus; 5] = [
        ReviewStatus::Pending,
        ReviewStatus::Approved,
        ReviewStatus::Rejected,
        ReviewStatus::Applied,
        ReviewStatus::Failed,
    ];

    /// The lower-case name used in JSON and Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Rejected => "rejected",
            ReviewStatus::Applied => "applied",
            ReviewStatus::Failed => "failed",
        }
    }
}

impl FromStr for ReviewStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReviewStatus::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "review status",
                value: s.to_owned(),
            })
    }
}

/// `GET /reviews` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct ReviewQuery {
    /// Only items in this status (default: every status).
    #[serde(default)]
    pub status: Option<ReviewStatus>,
    /// Cursor from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page (1–200, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A merge the merger did not dare to make alone, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewItem {
    /// Review item id.
    pub id: Uuid,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// Status.
    pub status: ReviewStatus,
    /// Why it needs a person (`too_many_profiles`, `weak_identifier_conflict`, ...).
    pub reason: String,
    /// The profiles it proposes to merge.
    pub candidate_profile_ids: Vec<Uuid>,
    /// Those profiles as they are now (merged-away or erased ones are missing).
    pub candidates: Vec<ProfileSummary>,
    /// What the merger saw (identifiers, which profile holds which, ...).
    pub evidence: serde_json::Value,
    /// The event that raised it.
    #[serde(default)]
    pub trigger_event_id: Option<Uuid>,
    /// When it was decided.
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
    /// Who decided.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// What the merger did (merge id, error, ...).
    #[serde(default)]
    pub outcome: Option<serde_json::Value>,
    /// The latest decision sent from the API and not yet visible in `status`.
    #[serde(default)]
    pub requested: Option<RequestedDecision>,
}

/// A decision published to the merger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestedDecision {
    /// Request id.
    pub request_id: Uuid,
    /// What was asked.
    pub action: MergeAction,
    /// Who asked.
    pub actor: String,
    /// When.
    pub requested_at: DateTime<Utc>,
}

/// `POST /merges`: merge profiles by hand (the oldest survives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManualMergeRequest {
    /// Two to ten live profiles.
    pub profile_ids: Vec<Uuid>,
}

// ---------------------------------------------------------------------------------
// Integrations
// ---------------------------------------------------------------------------------

/// A configured source, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationView {
    /// Integration id.
    pub id: Uuid,
    /// Source kind.
    pub kind: Source,
    /// Name, unique per kind.
    pub name: String,
    /// Disabled integrations refuse deliveries.
    pub enabled: bool,
    /// Where the source must send its deliveries (absent for CSV, which uploads
    /// through `POST /imports`).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// How deliveries authenticate with the secret.
    pub authentication: String,
    /// Last four characters of the secret, to tell secrets apart.
    pub secret_hint: String,
    /// Kind-specific settings.
    pub settings: serde_json::Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Last accepted delivery.
    #[serde(default)]
    pub last_delivery_at: Option<DateTime<Utc>>,
}

/// `POST /integrations`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateIntegrationRequest {
    /// Source kind.
    pub kind: Source,
    /// Name, unique per kind.
    pub name: String,
    /// The secret the source already has (Shopify's signing secret, Twilio's auth
    /// token); absent generates one.
    #[serde(default)]
    pub secret: Option<String>,
}

impl fmt::Debug for CreateIntegrationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateIntegrationRequest")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// `PATCH /integrations/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateIntegrationRequest {
    /// Enable or disable.
    pub enabled: bool,
}

/// An integration with its secret: the answer of create, rotate and reveal (admins).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationSecret {
    /// The integration.
    pub integration: IntegrationView,
    /// Its secret (signing secret, auth token, write key or bearer token).
    pub secret: String,
}

impl fmt::Debug for IntegrationSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationSecret")
            .field("integration", &self.integration)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// One delivery attempt of an integration (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryLogEntry {
    /// Log entry id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Endpoint that received it.
    pub endpoint: String,
    /// HTTP status answered.
    pub status: i16,
    /// Time to answer, in milliseconds.
    pub latency_ms: f32,
    /// Why it was refused, when it was.
    #[serde(default)]
    pub error: Option<String>,
    /// The raw event stored, when one was.
    #[serde(default)]
    pub raw_event_id: Option<Uuid>,
}

/// Answer of `POST /integrations/{id}/test-event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestEventAccepted {
    /// The stored raw event (its payload carries `"constintel_test": true`).
    pub raw_event_id: Uuid,
    /// Its source event id (`test:<uuid>`).
    pub source_event_id: String,
}

// ---------------------------------------------------------------------------------
// CSV imports
// ---------------------------------------------------------------------------------

/// What a CSV file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CsvImportKind {
    /// One customer per row.
    Customers,
    /// One order per row.
    Orders,
    /// One order line per row.
    OrderLines,
}

impl CsvImportKind {
    /// The snake_case name used in forms and Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            CsvImportKind::Customers => "customers",
            CsvImportKind::Orders => "orders",
            CsvImportKind::OrderLines => "order_lines",
        }
    }
}

impl FromStr for CsvImportKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            CsvImportKind::Customers,
            CsvImportKind::Orders,
            CsvImportKind::OrderLines,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| UnknownName {
            what: "CSV import kind",
            value: s.to_owned(),
        })
    }
}

/// State of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CsvImportStatus {
    /// Rows are being read.
    Running,
    /// Every row was read (some may have failed: see `error_rows`).
    Completed,
    /// The file could not be read to the end (see `error`).
    Failed,
}

/// `POST /imports` form (multipart/form-data). Send the text fields before `file`:
/// the file part is streamed into the importer as it arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CsvUploadForm {
    /// What the file holds.
    pub kind: CsvImportKind,
    /// JSON object mapping CSV column headers to fields (e.g.
    /// `{"Mobile": "phone", "E-mail": "email"}`); a field left unmapped is read from the
    /// column whose header, lower-cased with spaces and punctuation as `_`, is its name.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Currency of orders when the file has no currency column (ISO 4217).
    #[serde(default)]
    pub default_currency: Option<String>,
    /// Namespace of customer ids that are not namespaced already (default `csv`; use
    /// `shopify` for a Shopify export so its ids match the webhooks').
    #[serde(default)]
    pub customer_id_namespace: Option<String>,
    /// The CSV file.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Binary))]
    pub file: Vec<u8>,
}

/// Answer of `POST /imports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CsvImportAccepted {
    /// The import id (progress at `GET /imports/{id}`).
    pub import_id: Uuid,
}

/// An import and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CsvImportView {
    /// Import id.
    pub id: Uuid,
    /// What the file holds.
    pub kind: CsvImportKind,
    /// Uploaded file name.
    pub filename: String,
    /// SHA-256 of the file, once read.
    #[serde(default)]
    pub file_sha256: Option<String>,
    /// Column mapping used.
    pub mapping: serde_json::Value,
    /// State.
    pub status: CsvImportStatus,
    /// Rows read so far.
    pub total_rows: i64,
    /// Rows stored.
    pub imported_rows: i64,
    /// Rows already imported before (same file and row).
    pub duplicate_rows: i64,
    /// Rows refused (see the errors list).
    pub error_rows: i64,
    /// Why the import failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Who uploaded it.
    #[serde(default)]
    pub created_by: Option<String>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// One refused row of an import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CsvImportRowError {
    /// Line number in the file (the header is line 1).
    pub line: i64,
    /// Why it was refused.
    pub reason: String,
}

// ---------------------------------------------------------------------------------
// Models and predictions
// ---------------------------------------------------------------------------------

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ModelTask {
    /// Churn probability.
    Churn,
    /// Predicted lifetime value.
    Ltv,
    /// Customer segment.
    Segment,
    /// Product recommendations.
    Recommend,
}

impl ModelTask {
    /// Every task.
    pub const ALL: [ModelTask; 4] = [
        ModelTask::Churn,
        ModelTask::Ltv,
        ModelTask::Segment,
        ModelTask::Recommend,
    ];

    /// The lower-case name used in JSON and Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelTask::Churn => "churn",
            ModelTask::Ltv => "ltv",
            ModelTask::Segment => "segment",
            ModelTask::Recommend => "recommend",
        }
    }
}

impl FromStr for ModelTask {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelTask::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "model task",
                value: s.to_owned(),
            })
    }
}

/// Registry status of a model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Trained, not (yet) serving.
    Candidate,
    /// Serving its task.
    Active,
    /// Served before, replaced.
    Retired,
    /// Worse than the active model; never served.
    Rejected,
}

impl ModelStatus {
    /// Every status.
    pub const ALL: [ModelStatus; 4] = [
        ModelStatus::Candidate,
        ModelStatus::Active,
        ModelStatus::Retired,
        ModelStatus::Rejected,
    ];

    /// The lower-case name used in JSON and Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Candidate => "candidate",
            ModelStatus::Active => "active",
            ModelStatus::Retired => "retired",
            ModelStatus::Rejected => "rejected",
        }
    }
}

impl FromStr for ModelStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "model status",
                value: s.to_owned(),
            })
    }
}

/// `GET /models` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct ModelQuery {
    /// Only models of this task.
    #[serde(default)]
    pub task: Option<ModelTask>,
    /// Only models in this status.
    #[serde(default)]
    pub status: Option<ModelStatus>,
    /// Cursor from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page (1–200, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A model version of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelVersionView {
    /// Model version id.
    pub id: Uuid,
    /// Task.
    pub task: ModelTask,
    /// Algorithm (`lightgbm`, `kmeans`, `item2vec`, ...).
    pub algorithm: String,
    /// Training parameters.
    pub params: serde_json::Value,
    /// Feature-set version it was trained on.
    pub feature_set_version: i32,
    /// Start of the training data window.
    #[serde(default)]
    pub data_window_start: Option<DateTime<Utc>>,
    /// End of the training data window.
    #[serde(default)]
    pub data_window_end: Option<DateTime<Utc>>,
    /// Training rows.
    pub train_rows: i32,
    /// Test rows.
    pub test_rows: i32,
    /// Evaluation metrics (accuracy, roc_auc, rmse, silhouette, recall_at_10, ...).
    pub metrics: serde_json::Value,
    /// Registry status.
    pub status: ModelStatus,
    /// Trained.
    pub created_at: DateTime<Utc>,
    /// Made active.
    #[serde(default)]
    pub activated_at: Option<DateTime<Utc>>,
}

/// The latest prediction of one task for a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PredictionView {
    /// Task.
    pub task: ModelTask,
    /// Score (churn probability, predicted spend), when the task has one.
    #[serde(default)]
    pub score: Option<f64>,
    /// Label (segment name), when the task has one.
    #[serde(default)]
    pub label: Option<String>,
    /// The model version that scored it.
    pub model_version_id: Uuid,
    /// That model's algorithm.
    pub algorithm: String,
    /// When it was scored.
    pub scored_at: DateTime<Utc>,
    /// Task-specific details (reasons, recommended SKUs, ...).
    pub details: serde_json::Value,
}

// ---------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------

/// `GET /streams`: the state of every topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamsOverview {
    /// When it was measured.
    pub at: DateTime<Utc>,
    /// One entry per topic, in pipeline order.
    pub topics: Vec<TopicStats>,
}

/// The state of one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicStats {
    /// Topic name (`events.raw`, ...), without the fleet's prefix.
    pub topic: String,
    /// Entries in the stream.
    pub length: u64,
    /// Entries in its dead-letter stream.
    pub dlq_length: u64,
    /// Id of the newest entry.
    #[serde(default)]
    pub last_entry_id: Option<String>,
    /// Its consumer groups.
    pub groups: Vec<ConsumerGroupStats>,
}

/// The state of one consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerGroupStats {
    /// Group name.
    pub name: String,
    /// Consumers in the group.
    pub consumers: u64,
    /// Entries delivered but not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group, when Redis can tell.
    #[serde(default)]
    pub lag: Option<u64>,
    /// Last entry delivered to the group.
    pub last_delivered_id: String,
}

/// `GET /streams/{topic}/entries` and `.../dlq` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct StreamEntriesQuery {
    /// Cursor from the previous page (entries older than it).
    #[serde(default)]
    pub cursor: Option<String>,
    /// Entries per page (1–200, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One stream entry (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamEntry {
    /// Redis entry id.
    pub entry_id: String,
    /// Topic name.
    pub topic: String,
    /// The envelope (`{v, id, source, kind, received_at, occurred_at, payload}`), or
    /// the raw fields when the entry is not a valid envelope.
    pub envelope: serde_json::Value,
}

/// One dead-lettered entry (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqEntry {
    /// Entry id in the dead-letter stream (what replay takes).
    pub entry_id: String,
    /// Topic the entry failed on.
    pub topic: String,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Consumer group it failed in.
    #[serde(default)]
    pub group: Option<String>,
    /// Deliveries before it was dead-lettered.
    #[serde(default)]
    pub deliveries: Option<u64>,
    /// Entry id it had in the topic.
    #[serde(default)]
    pub original_entry_id: Option<String>,
    /// The envelope, as it was.
    pub envelope: serde_json::Value,
}

/// Answer of a dead-letter replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplayAccepted {
    /// The entry's new id in its topic.
    pub entry_id: String,
}

/// Server-sent event names of `GET /streams/live`: `stats` carries a
/// [`StreamsOverview`] every `LIVE_INTERVAL_MS` (default one second), `entry` a
/// [`StreamEntry`] of `events.raw` or `events.normalized` as it arrives (at most 50 per
/// topic and tick: the feed is a viewer, not a consumer).
pub mod live_events {
    /// Event name of a [`super::StreamsOverview`] tick.
    pub const STATS: &str = "stats";
    /// Event name of a new [`super::StreamEntry`].
    pub const ENTRY: &str = "entry";
}

/// Server-sent event names of `GET /imports/{id}/events`: `progress` carries a
/// [`CsvImportView`] whenever it changes; `done` the final one, after which the
/// stream ends.
pub mod import_events {
    /// Event name of a progress update.
    pub const PROGRESS: &str = "progress";
    /// Event name of the final state.
    pub const DONE: &str = "done";
}

// ---------------------------------------------------------------------------------
// GDPR
// ---------------------------------------------------------------------------------

/// `GET /profiles/{id}/export`: everything stored about a person, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileExport {
    /// When the export was made.
    pub exported_at: DateTime<Utc>,
    /// The profile (the survivor, when a merged-away id was asked for).
    pub profile_id: Uuid,
    /// Profiles merged into it, whose data is included.
    pub merged_profile_ids: Vec<Uuid>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Person traits.
    pub traits: serde_json::Value,
    /// Every identifier with source and first/last seen.
    pub identifiers: Vec<ProfileIdentifier>,
    /// Every event, newest first.
    pub events: Vec<TimelineEvent>,
    /// Every order, newest first.
    pub orders: Vec<ExportedOrder>,
    /// Latest predictions.
    pub predictions: Vec<PredictionView>,
    /// Merges involving the profile.
    pub merges: Vec<MergeLogEntry>,
}

/// An order in an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportedOrder {
    /// Source system.
    pub source: String,
    /// The source's order id.
    pub order_id: String,
    /// Status.
    pub status: String,
    /// Channel.
    pub channel: String,
    /// Store, for POS orders.
    #[serde(default)]
    pub store: Option<String>,
    /// When placed.
    pub placed_at: DateTime<Utc>,
    /// Currency.
    pub currency: String,
    /// Total.
    pub total: Decimal,
    /// Refunded so far.
    pub refunded_total: Decimal,
    /// Lines.
    pub items: Vec<crate::event::OrderItem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Admin.allows(Role::Analyst));
        assert!(Role::Analyst.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Analyst));
        assert!(!Role::Analyst.allows(Role::Admin));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn churn_bands_cover_the_unit_interval() {
        assert_eq!(ChurnBand::of(0.0), ChurnBand::Low);
        assert_eq!(ChurnBand::of(0.299), ChurnBand::Low);
        assert_eq!(ChurnBand::of(0.3), ChurnBand::Medium);
        assert_eq!(ChurnBand::of(0.69), ChurnBand::Medium);
        assert_eq!(ChurnBand::of(0.7), ChurnBand::High);
        assert_eq!(ChurnBand::of(1.0), ChurnBand::High);
        for b in ChurnBand::ALL {
            let (lo, hi) = b.range();
            let mid = if lo.is_finite() { lo } else { hi - 0.01 };
            assert_eq!(ChurnBand::of(mid), b);
        }
    }

    #[test]
    fn secrets_never_print() {
        let login = LoginRequest {
            email: "a@b.com".into(),
            password: "hunter2hunter2".into(),
        };
        assert!(!format!("{login:?}").contains("hunter2"));
        let token = CreatedToken {
            token: "ci_tok_secret".into(),
            info: ApiTokenView {
                id: Uuid::nil(),
                name: "n".into(),
                prefix: "ci_tok".into(),
                role: Role::Viewer,
                created_by: None,
                created_at: Utc::now(),
                last_used_at: None,
                revoked_at: None,
            },
        };
        assert!(!format!("{token:?}").contains("ci_tok_secret"));
    }

    #[test]
    fn names_round_trip() {
        for s in ReviewStatus::ALL {
            assert_eq!(s.as_str().parse::<ReviewStatus>().unwrap(), s);
        }
        for t in ModelTask::ALL {
            assert_eq!(t.as_str().parse::<ModelTask>().unwrap(), t);
        }
        for s in ModelStatus::ALL {
            assert_eq!(s.as_str().parse::<ModelStatus>().unwrap(), s);
        }
        for k in ["customers", "orders", "order_lines"] {
            assert_eq!(k.parse::<CsvImportKind>().unwrap().as_str(), k);
        }
        let page: Page<u32> = serde_json::from_str(r#"{"items":[1,2]}"#).unwrap();
        assert_eq!(page.next_cursor, None);
    }
}
