//! Audiences: saved rules over profiles (`crate::audience::Rule`), their size preview,
//! members and export.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audience::Rule;

/// A saved audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AudienceView {
    /// Its id.
    pub id: Uuid,
    /// Its unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Who is in it.
    pub rule: Rule,
    /// Bumped on every change.
    pub version: i64,
    /// Who created it.
    pub created_by: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When its membership was last fully recomputed.
    pub recomputed_at: Option<DateTime<Utc>>,
    /// Members after the last full recompute.
    pub member_count: i64,
}

/// `POST /audiences`, `PUT /audiences/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AudienceRequest {
    /// Unique name (1–200 characters, not blank).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub name: String,
    /// What it is for (at most 2000 characters).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 2000))]
    pub description: String,
    /// Who is in it.
    pub rule: Rule,
}

/// `POST /audiences/preview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AudiencePreviewRequest {
    /// The rule to size.
    pub rule: Rule,
}

/// A rule's size now and a few of its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AudiencePreview {
    /// Live profiles matching the rule now.
    pub size: i64,
    /// Up to 10 of them.
    pub sample: Vec<AudienceMemberView>,
    /// How long the count took on the server, in milliseconds.
    pub elapsed_ms: u64,
}

/// A current member of an audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AudienceMemberView {
    /// The profile.
    pub profile_id: Uuid,
    /// Its display name.
    pub display_name: Option<String>,
    /// When it (last) entered; for a preview sample, the preview's time.
    pub entered_at: DateTime<Utc>,
}
