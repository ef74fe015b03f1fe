//! Profiles (`/profiles/*`): the searchable list, the Customer 360 document, the
//! timeline, the latest predictions and the GDPR export.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::merges::MergeLogEntry;
use crate::event::{EventType, Order};
use crate::identifier::{Identifier, IdentifierKind};
use crate::profile::{Customer360, PredictionSummary, ProfileIdentifier, PurchaseSummary};
use crate::source::{Channel, Source};

/// Response header of `GET /api/v1/profiles/{id}`: `hit` when the Customer 360 came
/// from the Redis cache, `miss` when it was built from Postgres (and cached).
pub const CACHE_HEADER: &str = "x-cache";

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
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
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
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
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
    pub source: Source,
    /// The touchpoint the customer acted through.
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
    pub orders: Vec<PurchaseSummary>,
    /// Latest predictions.
    pub predictions: Vec<PredictionSummary>,
    /// Merges involving the profile.
    pub merges: Vec<MergeLogEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

/// Body of `PUT /profiles/{id}/consent`: a consent decision for one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsentUpdate {
    /// The channel (`whatsapp`, `email`, `sms`).
    pub channel: crate::consent::ConsentChannel,
    /// The decision.
    pub status: crate::consent::ConsentStatus,
    /// Where the decision was taken (`call-centre`, `store-form`, ...): recorded as
    /// `api:<source>` (letters, digits, `-`, `_`, `.`, at most 48 characters).
    #[serde(default)]
    pub source: Option<String>,
}

/// Answer of `PUT /profiles/{id}/consent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentAccepted {
    /// The profile the consent was addressed to (the survivor of a merged-away id).
    pub profile_id: Uuid,
    /// The stored raw event that carries the consent through the pipeline.
    pub raw_event_id: Uuid,
    /// The channel.
    pub channel: crate::consent::ConsentChannel,
    /// The decision.
    pub status: crate::consent::ConsentStatus,
    /// The source recorded beside it (`api` or `api:<source>`).
    pub source: String,
    /// The consent's time (the event's).
    pub recorded_at: DateTime<Utc>,
}
