//! Destinations: CRMs (HubSpot, Salesforce) and REST endpoints kept in sync with
//! Customer 360 — their settings, field mapping, sync status, delivery log and dead
//! letters. Credentials are write-only: no response carries them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

names! {
    /// What a destination is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum DestinationKind("destination kind") {
        /// HubSpot contacts (CRM v3 batch upsert, private-app token).
        Hubspot = "hubspot",
        /// Salesforce contacts or leads (sObject Collections upsert by external id, OAuth 2.0).
        Salesforce = "salesforce",
        /// Any HTTPS endpoint taking JSON batches (bearer token or HMAC-SHA256 signature).
        Rest = "rest",
    }
}

names! {
    /// What a destination does with profiles.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum DestinationMode("destination mode") {
        /// Adds and updates records; never removes one (except on erasure).
        #[default]
        Upsert = "upsert",
        /// Also removes the records of profiles that leave the destination's audience.
        Mirror = "mirror",
    }
}

names! {
    /// A Customer 360 field a destination field can be mapped from.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum ProfileField("profile field") {
        /// The profile's id.
        ProfileId = "profile_id",
        /// The most recently seen e-mail address.
        Email = "email",
        /// The most recently seen phone number (E.164).
        Phone = "phone",
        /// Display name.
        Name = "name",
        /// First name (trait `first_name`, else the display name's first word).
        FirstName = "first_name",
        /// Last name (trait `last_name`, else the display name's last words).
        LastName = "last_name",
        /// Orders placed.
        OrdersCount = "orders_count",
        /// Lifetime spend net of refunds.
        TotalSpent = "total_spent",
        /// Average order value.
        AverageOrderValue = "average_order_value",
        /// Currency of the money fields.
        Currency = "currency",
        /// Last order time (RFC 3339).
        LastOrderAt = "last_order_at",
        /// The customer segment's name.
        Segment = "segment",
        /// Churn probability, 0–1.
        ChurnScore = "churn_score",
        /// Churn risk band (`high`, `medium`, `low`).
        ChurnLabel = "churn_label",
        /// Predicted lifetime value.
        PredictedLtv = "predicted_ltv",
        /// Channels used, comma separated.
        Channels = "channels",
        /// Category with the highest affinity.
        TopCategory = "top_category",
        /// Recommended product names, best first, comma separated.
        RecommendedProducts = "recommended_products",
        /// E-mail marketing consent (`true` when subscribed).
        EmailConsent = "email_consent",
        /// SMS marketing consent (`true` when subscribed).
        SmsConsent = "sms_consent",
    }
}

/// `POST /destinations`: a new destination. The first sync (a backfill of every
/// profile it covers) starts as soon as it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DestinationRequest {
    /// Unique name (1–200 characters).
    pub name: String,
    /// What it is.
    pub kind: DestinationKind,
    /// Settings by kind (see docs/destinations.md): `base_url`, `login_url`, `url`,
    /// `batch_size`, `timeout_secs`, `requests_per_second`, `id_property`,
    /// `object`, `external_id_field`, `client_id`, `signing` (`bearer`|`hmac`).
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Secrets by kind: `token` (hubspot, rest bearer), `client_secret` (salesforce),
    /// `secret` (rest hmac). Stored sealed, never shown again.
    pub credentials: BTreeMap<String, String>,
    /// Remote field ← profile field; empty takes the kind's defaults.
    #[serde(default)]
    pub mapping: BTreeMap<String, ProfileField>,
    /// `upsert` (default) or `mirror` (needs an audience).
    #[serde(default)]
    pub mode: DestinationMode,
    /// Only the current members of this audience; none means every profile.
    #[serde(default)]
    pub audience_id: Option<Uuid>,
}

/// `PATCH /destinations/{id}`: what to change; a changed mapping, audience or mode
/// queues a new backfill (only records that differ are sent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DestinationUpdate {
    /// New settings (replacing the old ones).
    #[serde(default)]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// New credentials (replacing the old ones).
    #[serde(default)]
    pub credentials: Option<BTreeMap<String, String>>,
    /// New mapping.
    #[serde(default)]
    pub mapping: Option<BTreeMap<String, ProfileField>>,
    /// Pause (`false`) or resume (`true`).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A destination as the API shows it: no credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DestinationView {
    /// Its id.
    pub id: Uuid,
    /// Its unique name.
    pub name: String,
    /// What it is.
    pub kind: DestinationKind,
    /// Settings (no secrets).
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Names of the credentials the destination's kind and signing use (never their
    /// values).
    pub credential_names: Vec<String>,
    /// Remote field ← profile field.
    pub mapping: BTreeMap<String, ProfileField>,
    /// `upsert` or `mirror`.
    pub mode: DestinationMode,
    /// Only members of this audience, when set.
    pub audience_id: Option<Uuid>,
    /// Whether it syncs.
    pub enabled: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Sync status.
    pub status: DestinationStatus,
}

/// How a destination is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DestinationStatus {
    /// Profiles whose current record the remote has accepted.
    pub synced: i64,
    /// Profiles waiting to be sent.
    pub pending: i64,
    /// Age of the oldest pending profile, in seconds (0 when none).
    pub lag_secs: f64,
    /// When the remote last accepted a request.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Share of the requests of the last hour that failed (0–1).
    pub error_rate: f64,
    /// Dead letters not replayed yet.
    pub dead_letters: i64,
}

/// One request made to a destination (summaries only, never secrets or records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// Its id (newest first).
    pub id: i64,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// `upsert`, `delete`, `merge`, `token`, `test`, `properties`.
    pub operation: String,
    /// Records in the request.
    pub records: i32,
    /// HTTP status, when one came back.
    pub status: Option<i32>,
    /// `ok`, `partial`, `transient`, `permanent`.
    pub outcome: String,
    /// What was sent (method, path, record count).
    pub request: String,
    /// What came back (status, error text, shortened).
    pub response: String,
    /// How long it took.
    pub duration_ms: i32,
}

/// A profile a destination refused for good, waiting for a replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetterView {
    /// Its id.
    pub id: i64,
    /// The profile.
    pub profile_id: Uuid,
    /// `upsert` or `delete`.
    pub operation: String,
    /// The remote's error text.
    pub error: String,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
}

/// `POST /destinations/{id}/test`: whether the credentials and endpoint work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DestinationTestResult {
    /// The remote answered and accepted the credentials.
    pub ok: bool,
    /// What happened.
    pub message: String,
}

/// `POST /destinations/{id}/sync` and `/replay`: how many profiles were queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DestinationQueued {
    /// Profiles queued.
    pub queued: i64,
}
