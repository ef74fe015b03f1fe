//! The merge log and the review queue (`/merges`, `/reviews`): merges made, merges
//! proposed for a person to decide, and the decisions sent to the identity merger.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::profiles::ProfileSummary;
use crate::identifier::Identifier;
use crate::source::UnknownName;

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
    /// Every action.
    pub const ALL: [MergeAction; 5] = [
        MergeAction::ApproveReview,
        MergeAction::RejectReview,
        MergeAction::ManualMerge,
        MergeAction::Unmerge,
        MergeAction::Erase,
    ];

    /// The snake_case name (as in `MergeRequest`'s `action` tag and
    /// `api_merge_requests.action`).
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

impl FromStr for MergeAction {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MergeAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "merge action",
                value: s.to_owned(),
            })
    }
}

/// Why profiles were merged, as `merge_history.rule` records it. The identity merger's
/// rules (`crates/identity`, docs/identity.md) decide which applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MergeRule {
    /// An event carried a phone, e-mail or customer id of each profile.
    StrongIdentifier,
    /// The weakest link was a loyalty id or store customer code.
    MediumIdentifier,
    /// The weakest link was a device or cookie (no conflicting strong identifiers).
    WeakIdentifier,
    /// An analyst merged them by hand.
    Manual,
    /// An analyst approved a review item.
    ReviewApproved,
    /// Events arriving out of order (or an identifier turning out to be shared) were
    /// replayed in time order, which joined these profiles.
    Replay,
}

impl MergeRule {
    /// Every rule.
    pub const ALL: [MergeRule; 6] = [
        MergeRule::StrongIdentifier,
        MergeRule::MediumIdentifier,
        MergeRule::WeakIdentifier,
        MergeRule::Manual,
        MergeRule::ReviewApproved,
        MergeRule::Replay,
    ];

    /// The snake_case name used in JSON, query strings and Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            MergeRule::StrongIdentifier => "strong_identifier",
            MergeRule::MediumIdentifier => "medium_identifier",
            MergeRule::WeakIdentifier => "weak_identifier",
            MergeRule::Manual => "manual",
            MergeRule::ReviewApproved => "review_approved",
            MergeRule::Replay => "replay",
        }
    }
}

impl fmt::Display for MergeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for MergeRule {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MergeRule::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "merge rule",
                value: s.to_owned(),
            })
    }
}

/// Why a link needs a person to decide, as `manual_merge_queue.reason` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReviewReason {
    /// One event linked more profiles than may merge automatically.
    TooManyProfiles,
    /// A device or cookie links profiles with different strong identifiers.
    SharedWeakIdentifier,
    /// The merge would exceed a per-profile identifier limit.
    LimitExceeded,
    /// The people's first names clearly differ.
    NameConflict,
}

impl ReviewReason {
    /// Every reason.
    pub const ALL: [ReviewReason; 4] = [
        ReviewReason::TooManyProfiles,
        ReviewReason::SharedWeakIdentifier,
        ReviewReason::LimitExceeded,
        ReviewReason::NameConflict,
    ];

    /// The snake_case name used in JSON and Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewReason::TooManyProfiles => "too_many_profiles",
            ReviewReason::SharedWeakIdentifier => "shared_weak_identifier",
            ReviewReason::LimitExceeded => "limit_exceeded",
            ReviewReason::NameConflict => "name_conflict",
        }
    }
}

impl fmt::Display for ReviewReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ReviewReason {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReviewReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "review reason",
                value: s.to_owned(),
            })
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
