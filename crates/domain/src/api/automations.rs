//! Automations: their definitions (`crate::automation::AutomationSpec`), the kill
//! switch, dry runs, runs and sends, and results (funnel, conversions vs. control).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::automation::{AutomationSpec, RunOutcome, RunStatus, SendChannel, SendStatus};

/// A saved automation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AutomationView {
    /// Its id.
    pub id: Uuid,
    /// Whether it runs (the kill switch: disabling stops every waiting run from acting).
    pub enabled: bool,
    /// When it was last enabled: only occurrences after it start runs.
    pub enabled_at: Option<DateTime<Utc>>,
    /// Its definition.
    pub spec: AutomationSpec,
    /// Bumped on every change.
    pub version: i64,
    /// Who created it.
    pub created_by: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// `POST /automations/{id}/enabled`: turn an automation on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AutomationEnable {
    /// On or off.
    pub enabled: bool,
}

/// One run: an automation for one profile and one trigger occurrence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AutomationRunView {
    /// Its id.
    pub id: Uuid,
    /// The automation.
    pub automation_id: Uuid,
    /// The profile.
    pub profile_id: Uuid,
    /// The trigger occurrence (`event:<event id>`, `entered:<change id>`,
    /// `churn:<label>:<scored at>`, `schedule:<local date>`): unique per automation
    /// and profile.
    pub occurrence: String,
    /// Where it is.
    pub status: RunStatus,
    /// How it ended (when done).
    pub outcome: Option<RunOutcome>,
    /// When the trigger happened.
    pub triggered_at: DateTime<Utc>,
    /// When it is (or was) next due.
    pub wake_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it is held or ended as it did, in words.
    pub detail: Option<String>,
}

/// One action of a run: a message, a webhook call or a list change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AutomationSendView {
    /// Its id (also the webhook's `X-ConstIntel-Id`).
    pub id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// The automation.
    pub automation_id: Uuid,
    /// The profile.
    pub profile_id: Uuid,
    /// Which of the automation's actions.
    pub action_index: i32,
    /// The channel.
    pub channel: SendChannel,
    /// Where it is.
    pub status: SendStatus,
    /// The provider's id (Twilio `SM…`).
    pub provider_id: Option<String>,
    /// The provider's error code (Twilio's, e.g. `63016`, or an HTTP status).
    pub error_code: Option<String>,
    /// The provider's error message.
    pub error_message: Option<String>,
    /// Provider calls made.
    pub attempts: i32,
    /// What was (or would be) sent.
    pub rendered: Option<RenderedMessage>,
    /// When the intent was recorded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Filters of the runs and sends lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
#[serde(deny_unknown_fields)]
pub struct AutomationActivityQuery {
    /// Only this profile's.
    #[serde(default)]
    pub profile_id: Option<Uuid>,
    /// Cursor from the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page (1–200, default 50).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    pub limit: Option<u32>,
}

/// A message as rendered for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenderedMessage {
    /// The channel.
    pub channel: SendChannel,
    /// The address (`whatsapp:+E164`, a webhook URL, a list name).
    pub to: String,
    /// Free-form text (inside the 24-hour window).
    pub body: Option<String>,
    /// The template (outside the window).
    pub content_sid: Option<String>,
    /// The template's variables, filled in.
    #[serde(default)]
    pub content_variables: BTreeMap<String, String>,
    /// Whether the person's 24-hour WhatsApp window was open.
    pub in_session_window: bool,
    /// The webhook's JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub payload: Option<Value>,
}

/// `POST /automations/dry-run` (an unsaved definition) and
/// `POST /automations/{id}/dry-run` (a saved one; `spec` must then be absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// The definition to try (unsaved automations only).
    #[serde(default)]
    pub spec: Option<AutomationSpec>,
    /// Only this profile (e.g. to preview the message for one member).
    #[serde(default)]
    pub profile_id: Option<Uuid>,
    /// Most profiles to judge (1–100, default 20).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// What would happen to one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DryRunItem {
    /// The profile.
    pub profile_id: Uuid,
    /// Its display name.
    pub display_name: Option<String>,
    /// How the run would end (`acted` when its actions would run; conditions are judged
    /// now, as if the wait were over).
    pub outcome: RunOutcome,
    /// Per action: what it would do (`queued`: would be sent; otherwise the guardrail
    /// that stops it).
    pub actions: Vec<DryRunAction>,
}

/// What one action would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DryRunAction {
    /// The channel.
    pub channel: SendChannel,
    /// `queued` (would be sent) or the guardrail's status.
    pub status: SendStatus,
    /// Why, in words, when it would not be sent.
    pub detail: Option<String>,
    /// The message as it would be sent.
    pub rendered: Option<RenderedMessage>,
}

/// Who would get what; nothing is sent or recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DryRun {
    /// Profiles the trigger would reach now (audience members; profiles with the event
    /// or label in the last day).
    pub candidates: i64,
    /// The first of them, judged.
    pub items: Vec<DryRunItem>,
}

/// Counts of an automation's runs and sends, its funnel and its conversions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AutomationResults {
    /// The automation.
    pub automation_id: Uuid,
    /// Runs by status (`waiting`, `processing`, `done`).
    pub runs_by_status: BTreeMap<String, i64>,
    /// Finished runs by outcome (`acted`, `exited`, `held_out`, …).
    pub runs_by_outcome: BTreeMap<String, i64>,
    /// Sends by status (`queued`, `delivered`, `read`, `failed`, `capped`, …).
    pub sends_by_status: BTreeMap<String, i64>,
    /// The outcome funnel, widest first: triggered → acted → sent → delivered → read
    /// (a read message was delivered and sent; each step counts those that got at
    /// least that far).
    pub funnel: Vec<FunnelStep>,
    /// Orders after a message vs. after a hold-out.
    pub conversions: Conversions,
}

/// One step of the funnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunnelStep {
    /// `triggered`, `acted`, `sent`, `delivered`, `read`, `converted`.
    pub step: String,
    /// Runs (or messages) that got at least this far.
    pub count: i64,
}

/// Conversions: profiles with an order within the window after their message (treated)
/// or after their hold-out decision (control).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversions {
    /// The window, in hours.
    pub window_hours: u32,
    /// Profiles messaged (accepted by the provider).
    pub treated: i64,
    /// Of them, with an order within the window.
    pub treated_converted: i64,
    /// `treated_converted / treated` (none without treated).
    pub treated_rate: Option<f64>,
    /// Profiles held out.
    pub control: i64,
    /// Of them, with an order within the window.
    pub control_converted: i64,
    /// `control_converted / control` (none without control).
    pub control_rate: Option<f64>,
    /// `treated_rate - control_rate`, in percentage points (none without both).
    pub uplift_points: Option<f64>,
}
