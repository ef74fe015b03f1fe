//! Customer 360 and the messages that change or re-score profiles.
//!
//! [`Customer360`] is the document the identity merger keeps in the Redis cache
//! (`{STREAM_PREFIX}c360:{profile_id}`), the api-gateway serves at
//! `GET /api/v1/profiles/{id}` and the dashboard renders. [`MergeRequest`] is the
//! payload of `profiles.merge_requests`; [`PredictionRequest`] of
//! `predictions.requests`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::ModelTask;
use crate::event::{EventType, OrderItem, OrderStatus};
use crate::identifier::IdentifierKind;
use crate::source::{Channel, Source};

/// One identifier as a profile holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileIdentifier {
    /// Kind of identifier.
    pub kind: IdentifierKind,
    /// Normalised value.
    pub value: String,
    /// Source that first supplied it.
    #[serde(default)]
    pub source: Option<Source>,
    /// First time it was seen.
    pub first_seen_at: DateTime<Utc>,
    /// Last time it was seen.
    pub last_seen_at: DateTime<Utc>,
    /// Learned to be shared by many people; never merges.
    #[serde(default)]
    pub suspect: bool,
}

/// One order in a profile's purchase history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurchaseSummary {
    /// The source's order id.
    pub order_id: String,
    /// Source system.
    pub source: Source,
    /// Channel it was placed through.
    pub channel: Channel,
    /// Current status.
    pub status: OrderStatus,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// Total in `currency`.
    pub total: Decimal,
    /// Amount refunded so far.
    #[serde(default)]
    pub refunded_total: Decimal,
    /// ISO currency.
    pub currency: String,
    /// Store, for POS orders.
    #[serde(default)]
    pub store: Option<String>,
    /// Order lines.
    #[serde(default)]
    pub items: Vec<OrderItem>,
}

/// One recent browsing or cart event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrowsingEntry {
    /// What happened (product_viewed, added_to_cart, page_viewed, ...).
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When it happened (event time).
    pub occurred_at: DateTime<Utc>,
    /// Product SKU, when about a product.
    #[serde(default)]
    pub sku: Option<String>,
    /// Product or page name.
    #[serde(default)]
    pub name: Option<String>,
    /// Product category.
    #[serde(default)]
    pub category: Option<String>,
    /// Page URL, for page views.
    #[serde(default)]
    pub url: Option<String>,
}

/// The latest prediction of one task for a profile (in the Customer 360 document and at
/// `GET /profiles/{id}/predictions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PredictionSummary {
    /// What was predicted.
    pub task: ModelTask,
    /// Numeric score (churn probability, predicted spend), when the task has one.
    #[serde(default)]
    pub score: Option<f64>,
    /// Label (segment name, churn band), when the task has one.
    #[serde(default)]
    pub label: Option<String>,
    /// The model version that produced it.
    pub model_version_id: Uuid,
    /// That model's algorithm (`lightgbm`, `kmeans`, ...).
    #[serde(default)]
    pub algorithm: String,
    /// When it was scored.
    pub scored_at: DateTime<Utc>,
    /// Task-specific details (top churn reasons, recommended SKUs, ...).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// A recommended product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recommendation {
    /// Product SKU.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Product category, when the catalogue knows it.
    #[serde(default)]
    pub category: Option<String>,
    /// Relevance score (higher first).
    pub score: f64,
    /// Why it is recommended ("bought 4 times", "similar to X you viewed", "popular in
    /// Y").
    #[serde(default)]
    pub reason: Option<String>,
}

/// Everything known about one person, as one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Customer360 {
    /// Profile id (the survivor's id if the requested one was merged away).
    pub profile_id: Uuid,
    /// Display name, when known.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Every identifier with source and first/last seen.
    pub identifiers: Vec<ProfileIdentifier>,
    /// Person traits (name, city, consent, ...).
    #[serde(default)]
    pub traits: serde_json::Map<String, serde_json::Value>,
    /// First activity.
    #[serde(default)]
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest activity.
    #[serde(default)]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Orders placed (cancelled ones excluded).
    pub total_orders: i64,
    /// Realised lifetime value: spend net of refunds.
    pub lifetime_value: Decimal,
    /// Average order value.
    pub average_order_value: Decimal,
    /// Currency of the money figures (the profile's most used).
    #[serde(default)]
    pub currency: Option<String>,
    /// Last order time.
    #[serde(default)]
    pub last_order_at: Option<DateTime<Utc>>,
    /// Channels the person used.
    pub channels: Vec<Channel>,
    /// Category affinity, recency-decayed weights normalised to sum to 1.
    pub category_affinity: BTreeMap<String, f64>,
    /// Most recent orders first.
    pub purchase_history: Vec<PurchaseSummary>,
    /// Most recent browsing and cart activity first.
    pub browsing_history: Vec<BrowsingEntry>,
    /// Latest prediction per task.
    #[serde(default)]
    pub predictions: Vec<PredictionSummary>,
    /// Recommended products, best first.
    #[serde(default)]
    pub recommendations: Vec<Recommendation>,
    /// Marketing consent per channel (status, source, when).
    #[serde(default)]
    pub consent: Vec<crate::consent::ConsentEntry>,
    /// Most recent messages to and from the person first, with their delivery status.
    #[serde(default)]
    pub recent_messages: Vec<MessageEntry>,
    /// Ids of profiles merged into this one (tombstones that resolve here).
    #[serde(default)]
    pub merged_profile_ids: Vec<Uuid>,
    /// When this document was built.
    pub computed_at: DateTime<Utc>,
}

/// A decision for the identity merger, published on `profiles.merge_requests`.
/// All profile writes go through the merger; the api-gateway and `ctl` only publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum MergeRequest {
    /// Apply the merge a review item proposes.
    ApproveReview {
        /// The review item (manual_merge_queue id).
        review_id: Uuid,
        /// Who decided (user e-mail or token name).
        actor: String,
    },
    /// Close a review item without merging.
    RejectReview {
        /// The review item.
        review_id: Uuid,
        /// Who decided.
        actor: String,
    },
    /// Merge the given profiles by hand (the oldest survives).
    ManualMerge {
        /// Profiles to merge (two or more).
        profile_ids: Vec<Uuid>,
        /// Who decided.
        actor: String,
    },
    /// Undo a past merge: restore the absorbed profiles with their identifiers and events.
    Unmerge {
        /// The merge_history row to undo.
        merge_id: Uuid,
        /// Who decided.
        actor: String,
    },
    /// GDPR erasure: delete the profile's events, identifiers, orders and predictions,
    /// and suppress its identifiers so they never come back.
    Erase {
        /// The profile to erase.
        profile_id: Uuid,
        /// Who asked.
        actor: String,
    },
}

/// A profile whose facts changed, published on `predictions.requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictionRequest {
    /// The profile to (re-)score.
    pub profile_id: Uuid,
}

names! {
    /// What happened to a profile, as `profiles.changes` says.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum ProfileChangeKind("profile change") {
        /// A new profile.
        Created = "created",
        /// Its facts changed (an event, an order, a replay).
        Updated = "updated",
        /// It was merged into another profile (the survivor gets its own `updated`).
        Merged = "merged",
        /// It was erased (GDPR).
        Erased = "erased",
        /// It got new predictions.
        Predicted = "predicted",
    }
}

/// A profile changed; published on `profiles.changes` after the change committed
/// (identity merger, ml-inference), so consumers re-read the profile from Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileChange {
    /// The profile.
    pub profile_id: Uuid,
    /// What happened to it (the latest of its changes not yet published).
    pub change: ProfileChangeKind,
}

/// A recency-decayed weight: `weight` as of `as_of`, halving every
/// [`AFFINITY_HALF_LIFE_DAYS`]. Adding weights decayed to a common instant is
/// commutative, so the result does not depend on the order events arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecayedWeight {
    /// The weight at `as_of`.
    pub weight: f64,
    /// The instant `weight` is expressed at.
    pub as_of: DateTime<Utc>,
}

/// Days after which a category signal counts half as much.
pub const AFFINITY_HALF_LIFE_DAYS: f64 = 90.0;

impl DecayedWeight {
    /// The weight decayed (or, for an earlier instant, grown back) to `at`.
    pub fn at(&self, at: DateTime<Utc>) -> f64 {
        let days = (at - self.as_of).num_seconds() as f64 / 86_400.0;
        self.weight * 0.5_f64.powf(days / AFFINITY_HALF_LIFE_DAYS)
    }

    /// Adds `weight` observed at `at`, keeping the later of the two instants.
    pub fn add(&mut self, weight: f64, at: DateTime<Utc>) {
        if at > self.as_of {
            self.weight = self.at(at) + weight;
            self.as_of = at;
        } else {
            self.weight += DecayedWeight { weight, as_of: at }.at(self.as_of);
        }
    }
}

/// The Customer 360 facts the identity merger keeps per profile in
/// `customer_profile.state` (beside the aggregate columns), updated on every event and
/// merge so a Customer 360 read never scans events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    /// Events attached to the profile.
    #[serde(default)]
    pub events_count: i64,
    /// Most recent browsing and cart activity first (bounded).
    #[serde(default)]
    pub recent_browsing: Vec<BrowsingEntry>,
    /// Raw recency-decayed category weights; [`ProfileState::category_affinity`]
    /// normalises them.
    #[serde(default)]
    pub category_weights: BTreeMap<String, DecayedWeight>,
    /// When each trait was last set, so the latest value wins whatever the arrival
    /// order.
    #[serde(default)]
    pub trait_times: BTreeMap<String, DateTime<Utc>>,
    /// Most recent messages to and from the person first (bounded), one entry per
    /// message with its latest delivery status.
    #[serde(default)]
    pub recent_messages: Vec<MessageEntry>,
}

names! {
    /// Which way a message went.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum MessageDirection("message direction") {
        /// From the person to the brand.
        Inbound = "inbound",
        /// From the brand to the person.
        Outbound = "outbound",
    }
}

/// One message to or from the person (WhatsApp through Twilio today).
///
/// Outbound messages are known from their send event (`message_sent`) and Twilio's
/// status callbacks (`message_status`), which arrive in any order; entries of one
/// message (same `message_sid`) combine with [`MessageEntry::combine`], which keeps the
/// furthest status of the lifecycle, so the result does not depend on arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageEntry {
    /// The provider's message id (Twilio `MessageSid`), when known.
    #[serde(default)]
    pub message_sid: Option<String>,
    /// Inbound or outbound.
    pub direction: MessageDirection,
    /// The channel (WhatsApp).
    pub channel: Channel,
    /// When the message was first seen (received, sent or first status).
    pub at: DateTime<Utc>,
    /// Latest status: `received` for inbound messages; Twilio's lifecycle (`queued`,
    /// `sent`, `delivered`, `read`, `undelivered`, `failed`) for outbound ones.
    #[serde(default)]
    pub status: Option<String>,
    /// When the latest status was reported.
    #[serde(default)]
    pub status_at: Option<DateTime<Utc>>,
    /// The text, when the event carried it (status callbacks do not).
    #[serde(default)]
    pub body: Option<String>,
    /// The provider's error code of a failed or undelivered message.
    #[serde(default)]
    pub error_code: Option<String>,
}

/// Position of a status in a message's lifecycle: later statuses replace earlier ones.
/// `read` is the furthest a message gets; `failed`/`undelivered` end it before
/// delivery; unknown statuses count as the earliest.
pub fn message_status_rank(status: &str) -> u8 {
    match status {
        "accepted" | "scheduled" => 1,
        "queued" => 2,
        "sending" => 3,
        "sent" => 4,
        "undelivered" | "failed" => 5,
        "delivered" => 6,
        "read" => 7,
        "received" => 8,
        _ => 0,
    }
}

impl MessageEntry {
    /// Whether `other` is about the same message.
    pub fn same_message(&self, other: &MessageEntry) -> bool {
        self.message_sid.is_some() && self.message_sid == other.message_sid
    }

    /// Combines two entries of one message; commutative and associative.
    pub fn combine(self, other: MessageEntry) -> MessageEntry {
        let key = |e: &MessageEntry| {
            (
                e.status.as_deref().map_or(0, message_status_rank),
                e.status.clone(),
                std::cmp::Reverse(e.status_at),
            )
        };
        let (latest, earlier) = if key(&self) >= key(&other) {
            (self, other)
        } else {
            (other, self)
        };
        MessageEntry {
            message_sid: latest.message_sid.clone().or(earlier.message_sid.clone()),
            direction: latest.direction.min(earlier.direction),
            channel: latest.channel.min(earlier.channel),
            at: latest.at.min(earlier.at),
            body: latest.body.clone().max(earlier.body.clone()),
            error_code: latest.error_code.clone().or(earlier.error_code),
            status: latest.status,
            status_at: latest.status_at,
        }
    }
}

impl ProfileState {
    /// Category affinity at `at`: decayed weights normalised to sum to 1 (empty when
    /// nothing is known).
    pub fn category_affinity(&self, at: DateTime<Utc>) -> BTreeMap<String, f64> {
        let decayed: BTreeMap<String, f64> = self
            .category_weights
            .iter()
            .map(|(c, w)| (c.clone(), w.at(at).max(0.0)))
            .collect();
        let total: f64 = decayed.values().sum();
        if total <= 0.0 {
            return BTreeMap::new();
        }
        decayed.into_iter().map(|(c, w)| (c, w / total)).collect()
    }
}
