//! The merge log and the review queue (`/merges`, `/reviews`): merges made, merges
//! proposed for a person to decide, and the decisions sent to the identity merger.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::profiles::ProfileSummary;
use crate::identifier::Identifier;

names! {
    /// An action on `profiles.merge_requests`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum MergeAction("merge action") {
        /// Apply a review item's merge.
        ApproveReview = "approve_review",
        /// Close a review item without merging.
        RejectReview = "reject_review",
        /// Merge profiles by hand.
        ManualMerge = "manual_merge",
        /// Undo a merge.
        Unmerge = "unmerge",
        /// GDPR erasure of a profile.
        Erase = "erase",
    }
}

names! {
    /// Why profiles were merged, as `merge_history.rule` records it. The identity merger's
    /// rules (`crates/identity`, docs/identity.md) decide which applies.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum MergeRule("merge rule") {
        /// An event carried a phone, e-mail or customer id of each profile.
        StrongIdentifier = "strong_identifier",
        /// The weakest link was a loyalty id or store customer code.
        MediumIdentifier = "medium_identifier",
        /// The weakest link was a device or cookie (no conflicting strong identifiers).
        WeakIdentifier = "weak_identifier",
        /// An analyst merged them by hand.
        Manual = "manual",
        /// An analyst approved a review item.
        ReviewApproved = "review_approved",
        /// Events arriving out of order (or an identifier turning out to be shared) were
        /// replayed in time order, which joined these profiles.
        Replay = "replay",
    }
}

names! {
    /// Why a link needs a person to decide, as `manual_merge_queue.reason` records it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum ReviewReason("review reason") {
        /// One event linked more profiles than may merge automatically.
        TooManyProfiles = "too_many_profiles",
        /// A device or cookie links profiles with different strong identifiers.
        SharedWeakIdentifier = "shared_weak_identifier",
        /// The merge would exceed a per-profile identifier limit.
        LimitExceeded = "limit_exceeded",
        /// The people's first names clearly differ.
        NameConflict = "name_conflict",
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
    /// Only merges made by this rule.
    #[serde(default)]
    pub rule: Option<MergeRule>,
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
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
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
    pub rule: MergeRule,
    /// The identifiers that linked them (none for manual merges).
    pub matched_identifiers: Vec<Identifier>,
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

names! {
    /// Status of a review item. `approved` and `rejected` are decisions the merger has
    /// taken in; `applied` means the approved merge was made, `failed` that it could not be.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum ReviewStatus("review status") {
        /// Waiting for a decision.
        Pending = "pending",
        /// Approved, merge in progress.
        Approved = "approved",
        /// Rejected: the profiles stay apart.
        Rejected = "rejected",
        /// Approved and merged.
        Applied = "applied",
        /// Approved but the merge failed (see `outcome`).
        Failed = "failed",
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
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
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
    /// Where the item stands: pending, or how it was decided.
    pub status: ReviewStatus,
    /// Why it needs a person.
    pub reason: ReviewReason,
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
    /// When it was published.
    pub requested_at: DateTime<Utc>,
}

/// `POST /merges`: merge profiles by hand (the oldest survives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManualMergeRequest {
    /// Two to ten distinct live profiles.
    #[cfg_attr(feature = "openapi", schema(schema_with = manual_merge_ids_schema))]
    pub profile_ids: Vec<Uuid>,
}

/// `profile_ids` of a manual merge: 2–10 distinct UUIDs (utoipa's attributes have no
/// `uniqueItems`, its builder has).
#[cfg(feature = "openapi")]
fn manual_merge_ids_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        )
        .min_items(Some(2))
        .max_items(Some(10))
        .unique_items(true)
        .description(Some("Two to ten distinct live profiles."))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ReviewStatus::ALL {
            assert_eq!(s.as_str().parse::<ReviewStatus>().unwrap(), s);
        }
        for r in MergeRule::ALL {
            assert_eq!(r.as_str().parse::<MergeRule>().unwrap(), r);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        for r in ReviewReason::ALL {
            assert_eq!(r.as_str().parse::<ReviewReason>().unwrap(), r);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        for a in MergeAction::ALL {
            assert_eq!(a.as_str().parse::<MergeAction>().unwrap(), a);
        }
        assert!("shared_strong_identifier".parse::<MergeRule>().is_err());
    }
}
