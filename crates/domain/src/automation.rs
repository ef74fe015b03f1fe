//! Automations: trigger → optional wait → conditions → actions, with guardrails.
//!
//! An [`AutomationSpec`] is pure data (the API's and the dashboard's shape, stored as
//! JSON), checked by [`AutomationSpec::validate`]. The automations service runs it: a
//! trigger occurrence creates one run per (automation, profile, occurrence), the run
//! waits (kept in Postgres), its conditions are judged fresh, and each action is sent
//! at most once through the guardrails (consent, suppression, frequency caps, quiet
//! hours, send rate, control group). Frequency caps, the quiet-hours window and the
//! brand time zone are brand-wide settings; the spec says what to do in quiet hours.
//! See docs/automations.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::profiles::ChurnBand;
use crate::audience::{EventMatch, MAX_TEXT_LEN, Rule, RuleError};

/// Longest wait (delay or timeout), in seconds: 30 days.
pub const MAX_WAIT_SECS: u64 = 30 * 24 * 3600;
/// Most actions an automation may have.
pub const MAX_ACTIONS: usize = 5;
/// Largest control group, in percent.
pub const MAX_CONTROL_PERCENT: u8 = 50;
/// Longest free-form message body, in characters (WhatsApp's limit is 1600 for Twilio).
pub const MAX_BODY_LEN: usize = 1600;
/// Longest conversion window, in hours (30 days).
pub const MAX_CONVERSION_HOURS: u32 = 720;

/// What starts an automation for a profile. Each occurrence starts at most one run per
/// profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// The profile entered an audience (an `entered` row of the audience's membership
    /// changes recorded after the automation was enabled).
    AudienceEntered {
        /// The audience.
        audience_id: Uuid,
    },
    /// An event of the profile matching `event` (e.g. type `checkout_started`, name
    /// `Checkout Started`), resolved to the profile after the automation was enabled.
    Event {
        /// Which events start a run (each event is one occurrence).
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        event: EventMatch,
    },
    /// The profile's churn-risk label became `label` (it was something else, or
    /// unscored, before).
    ChurnLabelBecame {
        /// The label that starts a run (usually `high`).
        label: ChurnBand,
    },
    /// Every day at `at` (`HH:MM`) in the brand time zone, for everyone then in an
    /// audience (each day is one occurrence).
    Schedule {
        /// The audience whose members the run is for.
        audience_id: Uuid,
        /// Local time of day, `HH:MM` (24-hour clock).
        at: String,
    },
}

/// How long a run waits between its trigger and its conditions and actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Wait {
    /// Wait a fixed time.
    Delay {
        /// Seconds to wait (1 – 30 days).
        seconds: u64,
    },
    /// Wait until `timeout_seconds` have passed; if the profile does `event` in the
    /// meantime the run exits without acting (an abandoned checkout: no order within an
    /// hour → remind; an order → nothing).
    UntilEvent {
        /// The event that ends the run early.
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        event: EventMatch,
        /// Seconds after the trigger at which the run goes on (1 – 30 days).
        timeout_seconds: u64,
    },
}

/// A value taken from the profile for a template variable or a body placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Variable {
    /// The first word of the profile's display name (`there` without one).
    FirstName,
    /// The name of the product last viewed (empty without one).
    LastViewedProduct,
    /// Up to three recommended product names from the `recommend` predictions.
    RecommendedProducts,
    /// The cart of the trigger event (or the latest checkout / cart event): item names.
    CartContents,
}

impl Variable {
    /// Every variable.
    pub const ALL: [Variable; 4] = [
        Variable::FirstName,
        Variable::LastViewedProduct,
        Variable::RecommendedProducts,
        Variable::CartContents,
    ];

    /// The placeholder name used in free-form bodies: `{{first_name}}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Variable::FirstName => "first_name",
            Variable::LastViewedProduct => "last_viewed_product",
            Variable::RecommendedProducts => "recommended_products",
            Variable::CartContents => "cart_contents",
        }
    }
}

/// A WhatsApp message through Twilio's Messages API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WhatsappMessage {
    /// Free-form text, sent only inside the 24-hour window an inbound WhatsApp message
    /// of the profile opens; `{{first_name}}` etc. ([`Variable`]) are filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Approved template (`HX…`), sent outside the window (or always without `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sid: Option<String>,
    /// The template's variables (`"1"`, `"2"`, …) and where each value comes from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub content_variables: BTreeMap<String, Variable>,
}

/// What a run does once its wait is over and its conditions hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Send a WhatsApp message (consent `whatsapp_marketing`, caps, quiet hours apply).
    Whatsapp(WhatsappMessage),
    /// POST the profile summary and the trigger as JSON to `url`, signed
    /// (`X-ConstIntel-Signature`), retried with backoff.
    Webhook {
        /// `https://` (or `http://` for local receivers) URL.
        url: String,
    },
    /// Put the profile on a static list (a named set kept by automations).
    AddToList {
        /// The list's name.
        list: String,
    },
    /// Take the profile off a static list.
    RemoveFromList {
        /// The list's name.
        list: String,
    },
}

impl Action {
    /// The channel the action contacts the person on (`None`: no contact).
    pub fn channel(&self) -> Option<SendChannel> {
        match self {
            Action::Whatsapp(_) => Some(SendChannel::Whatsapp),
            Action::Webhook { .. } => Some(SendChannel::Webhook),
            Action::AddToList { .. } | Action::RemoveFromList { .. } => None,
        }
    }
}

/// What a run does when it is due inside the brand's quiet hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QuietHours {
    /// Hold the message until quiet hours end.
    #[default]
    Hold,
    /// Skip it (recorded as skipped).
    Skip,
}

/// Per-automation guardrails. Consent, suppression, frequency caps and the quiet-hours
/// window are brand-wide and always apply to messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    /// Hold or skip messages due in quiet hours.
    #[serde(default)]
    pub quiet_hours: QuietHours,
    /// Most messages this automation sends per minute (none: unlimited); runs over the
    /// limit wait for the next free slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sends_per_minute: Option<u32>,
    /// Percent (0–50) of eligible profiles held out, by a stable hash of automation and
    /// profile, and recorded, to measure uplift.
    #[serde(default)]
    pub control_percent: u8,
    /// Hours after a message (or a hold-out) in which an order counts as a conversion.
    #[serde(default = "default_conversion_hours")]
    pub conversion_window_hours: u32,
}

fn default_conversion_hours() -> u32 {
    72
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            quiet_hours: QuietHours::Hold,
            max_sends_per_minute: None,
            control_percent: 0,
            conversion_window_hours: default_conversion_hours(),
        }
    }
}

/// An automation's definition: what the API takes and stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AutomationSpec {
    /// Unique name (1–200 characters).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// What starts a run.
    pub trigger: Trigger,
    /// Wait before judging the conditions (none: act at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    /// Judged fresh after the wait (an audience rule; none: always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Rule>,
    /// What it does, in order (1–5).
    pub actions: Vec<Action>,
    /// Guardrails of its own.
    #[serde(default)]
    pub guardrails: Guardrails,
}

/// What is wrong with an automation, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// Where (`actions[0].body`).
    pub path: String,
    /// What.
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        path: path.into(),
        message: message.into(),
    }
}

fn text_ok(path: &str, s: &str, max: usize) -> Result<(), SpecError> {
    if s.trim().is_empty() || s.chars().count() > max || s.contains('\0') {
        return Err(err(path, format!("must be 1–{max} characters, not blank")));
    }
    Ok(())
}

fn rule_err(prefix: &str, e: RuleError) -> SpecError {
    err(format!("{prefix}.{}", e.path), e.message)
}

/// Parses `HH:MM` (24-hour clock) into minutes after midnight.
pub fn parse_time_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn event_ok(path: &str, e: &EventMatch) -> Result<(), SpecError> {
    // An event match is validated as the behaviour condition that carries it.
    Rule::Did(crate::audience::Behaviour {
        event: e.clone(),
        at_least: 1,
        within_days: 1,
    })
    .validate()
    .map_err(|r| rule_err(path, r))
}

fn wait_secs_ok(path: &str, s: u64) -> Result<(), SpecError> {
    if s == 0 || s > MAX_WAIT_SECS {
        return Err(err(
            path,
            format!("must be from 1 to {MAX_WAIT_SECS} seconds"),
        ));
    }
    Ok(())
}

impl AutomationSpec {
    /// Checks every bound the server enforces, except that referenced audiences exist.
    pub fn validate(&self) -> Result<(), SpecError> {
        text_ok("name", &self.name, 200)?;
        if self.description.chars().count() > 2000 || self.description.contains('\0') {
            return Err(err("description", "must be at most 2000 characters"));
        }
        match &self.trigger {
            Trigger::Event { event } => event_ok("trigger.event", event)?,
            Trigger::Schedule { at, .. } => {
                if parse_time_of_day(at).is_none() {
                    return Err(err("trigger.at", "must be HH:MM (00:00–23:59)"));
                }
            }
            Trigger::AudienceEntered { .. } | Trigger::ChurnLabelBecame { .. } => {}
        }
        match &self.wait {
            Some(Wait::Delay { seconds }) => wait_secs_ok("wait.seconds", *seconds)?,
            Some(Wait::UntilEvent {
                event,
                timeout_seconds,
            }) => {
                event_ok("wait.event", event)?;
                wait_secs_ok("wait.timeout_seconds", *timeout_seconds)?;
            }
            None => {}
        }
        if let Some(rule) = &self.conditions {
            rule.validate().map_err(|r| rule_err("conditions", r))?;
        }
        if self.actions.is_empty() || self.actions.len() > MAX_ACTIONS {
            return Err(err("actions", format!("must hold 1–{MAX_ACTIONS} actions")));
        }
        for (i, a) in self.actions.iter().enumerate() {
            let path = format!("actions[{i}]");
            match a {
                Action::Whatsapp(m) => {
                    if m.body.is_none() && m.content_sid.is_none() {
                        return Err(err(path, "needs a body, a content_sid or both"));
                    }
                    if let Some(b) = &m.body {
                        text_ok(&format!("{path}.body"), b, MAX_BODY_LEN)?;
                    }
                    if let Some(sid) = &m.content_sid {
                        let ok = sid.len() == 34
                            && sid.starts_with("HX")
                            && sid[2..].chars().all(|c| c.is_ascii_hexdigit());
                        if !ok {
                            return Err(err(
                                format!("{path}.content_sid"),
                                "must be a Twilio Content SID (HX and 32 hex digits)",
                            ));
                        }
                    } else if !m.content_variables.is_empty() {
                        return Err(err(
                            format!("{path}.content_variables"),
                            "only with a content_sid",
                        ));
                    }
                    for k in m.content_variables.keys() {
                        if k.is_empty() || k.len() > 3 || !k.chars().all(|c| c.is_ascii_digit()) {
                            return Err(err(
                                format!("{path}.content_variables"),
                                format!("key `{k}` must be a template position (\"1\", \"2\", …)"),
                            ));
                        }
                    }
                }
                Action::Webhook { url } => {
                    let ok = (url.starts_with("https://") || url.starts_with("http://"))
                        && url.len() <= 2000
                        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
                    if !ok {
                        return Err(err(
                            format!("{path}.url"),
                            "must be an http(s) URL of at most 2000 characters",
                        ));
                    }
                }
                Action::AddToList { list } | Action::RemoveFromList { list } => {
                    text_ok(&format!("{path}.list"), list, MAX_TEXT_LEN)?;
                }
            }
        }
        let g = &self.guardrails;
        if g.control_percent > MAX_CONTROL_PERCENT {
            return Err(err(
                "guardrails.control_percent",
                format!("must be 0–{MAX_CONTROL_PERCENT}"),
            ));
        }
        if g.max_sends_per_minute == Some(0) {
            return Err(err(
                "guardrails.max_sends_per_minute",
                "must be at least 1 (or absent: unlimited)",
            ));
        }
        if g.conversion_window_hours == 0 || g.conversion_window_hours > MAX_CONVERSION_HOURS {
            return Err(err(
                "guardrails.conversion_window_hours",
                format!("must be 1–{MAX_CONVERSION_HOURS}"),
            ));
        }
        Ok(())
    }

    /// The audiences the automation refers to (trigger and conditions).
    pub fn referenced_audiences(&self) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = match &self.trigger {
            Trigger::AudienceEntered { audience_id } | Trigger::Schedule { audience_id, .. } => {
                vec![*audience_id]
            }
            _ => Vec::new(),
        };
        if let Some(r) = &self.conditions {
            out.extend(r.referenced_audiences());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Whether a profile falls in an automation's control group: a stable hash of both ids
/// (FNV-1a over their bytes) mod 100 below `percent`. Stable across runs, replicas and
/// releases, so a profile is always treated or always held out by one automation.
pub fn in_control_group(automation: Uuid, profile: Uuid, percent: u8) -> bool {
    if percent == 0 {
        return false;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in automation.as_bytes().iter().chain(profile.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % 100) < u64::from(percent)
}

names! {
    /// The channel of a send.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum SendChannel("send channel") {
        /// WhatsApp through Twilio.
        Whatsapp = "whatsapp",
        /// A signed outbound webhook.
        Webhook = "webhook",
        /// A static list (no contact).
        List = "list",
    }
}

names! {
    /// Where a run is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum RunStatus("run status") {
        /// Waiting for its wait to end (or quiet hours, or a send-rate slot).
        Waiting = "waiting",
        /// Being acted on by a replica.
        Processing = "processing",
        /// Finished; see its outcome.
        Done = "done",
    }
}

names! {
    /// How a finished run ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum RunOutcome("run outcome") {
        /// Its actions ran (see the sends for each one's fate).
        Acted = "acted",
        /// The wait's event happened: nothing was done (an order came in).
        Exited = "exited",
        /// The conditions did not hold after the wait.
        ConditionsNotMet = "conditions_not_met",
        /// In the control group: held out, recorded, nothing sent.
        HeldOut = "held_out",
        /// The profile no longer exists (erased) or its identifiers are suppressed.
        Suppressed = "suppressed",
        /// The automation was disabled (kill switch) before the run acted.
        Cancelled = "cancelled",
    }
}

names! {
    /// A send's state: the guardrail that stopped it, or its lifecycle at the provider.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum SendStatus("send status") {
        /// Intent recorded, provider call under way.
        Sending = "sending",
        /// A transient failure (429, 5xx, connection refused): retried with backoff.
        Retrying = "retrying",
        /// The call's outcome is unknown (the process stopped between the provider call and
        /// recording its answer); not resent, see docs/automations.md.
        Unknown = "unknown",
        /// Accepted by the provider (Twilio `queued`/`accepted`; a webhook answered 2xx).
        Queued = "queued",
        /// Twilio: sent to WhatsApp.
        Sent = "sent",
        /// Twilio: delivered to the phone.
        Delivered = "delivered",
        /// Twilio: read by the person.
        Read = "read",
        /// Refused or failed (Twilio 4xx, `failed`/`undelivered`, a webhook's 4xx or
        /// retries used up); see the error code.
        Failed = "failed",
        /// No consent on the channel (read fresh at send time).
        NoConsent = "no_consent",
        /// The person's identifiers are suppressed (erased) or the profile has no address.
        Suppressed = "suppressed",
        /// A frequency cap (brand-wide, per channel) was reached.
        Capped = "capped",
        /// Due in quiet hours and the automation skips then.
        QuietHoursSkipped = "quiet_hours_skipped",
        /// A list change that was applied.
        Applied = "applied",
    }
}

impl SendStatus {
    /// Counted against frequency caps: the message reached (or may have reached) the
    /// provider.
    pub const CAPPED_STATUSES: [SendStatus; 7] = [
        SendStatus::Sending,
        SendStatus::Retrying,
        SendStatus::Unknown,
        SendStatus::Queued,
        SendStatus::Sent,
        SendStatus::Delivered,
        SendStatus::Read,
    ];

    /// Rank on the provider lifecycle: a later status callback never moves a send
    /// back (`read` then a late `delivered` stays `read`).
    pub fn lifecycle_rank(self) -> u8 {
        match self {
            SendStatus::Queued => 1,
            SendStatus::Sent => 2,
            SendStatus::Delivered => 3,
            SendStatus::Read => 4,
            SendStatus::Failed => 5,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> AutomationSpec {
        serde_json::from_value(v).unwrap()
    }

    fn abandoned() -> serde_json::Value {
        json!({
            "name": "Abandoned checkout",
            "trigger": {"kind": "event", "event": {"type": "checkout_started", "name": "Checkout Started"}},
            "wait": {"kind": "until_event", "event": {"type": "order_placed"}, "timeout_seconds": 3600},
            "conditions": "whatsapp_capable",
            "actions": [{"kind": "whatsapp", "body": "Hi {{first_name}}, your cart: {{cart_contents}}",
                         "content_sid": "HX0123456789abcdef0123456789abcdef",
                         "content_variables": {"1": "first_name", "2": "cart_contents"}}],
            "guardrails": {"quiet_hours": "hold", "control_percent": 10}
        })
    }

    #[test]
    fn a_full_spec_round_trips_and_validates() {
        let s = spec(abandoned());
        s.validate().unwrap();
        let back: AutomationSpec =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.guardrails.conversion_window_hours, 72);
    }

    #[test]
    fn bad_specs_say_where() {
        let cases = [
            ("/actions", json!([]), "actions"),
            (
                "/guardrails/control_percent",
                json!(60),
                "guardrails.control_percent",
            ),
            ("/wait/timeout_seconds", json!(0), "wait.timeout_seconds"),
            (
                "/actions/0/content_sid",
                json!("HXnope"),
                "actions[0].content_sid",
            ),
            ("/name", json!("  "), "name"),
        ];
        for (pointer, value, path) in cases {
            let mut v = abandoned();
            *v.pointer_mut(pointer).unwrap() = value;
            let e = spec(v).validate().unwrap_err();
            assert_eq!(e.path, path, "{pointer}");
        }
        let mut v = abandoned();
        v["trigger"] = json!({"kind": "schedule", "audience_id": Uuid::nil(), "at": "25:00"});
        assert_eq!(spec(v).validate().unwrap_err().path, "trigger.at");
        let mut v = abandoned();
        v["unknown"] = json!(1);
        assert!(serde_json::from_value::<AutomationSpec>(v).is_err());
    }

    #[test]
    fn time_of_day_parses_strictly() {
        assert_eq!(parse_time_of_day("10:00"), Some(600));
        assert_eq!(parse_time_of_day("23:59"), Some(1439));
        for bad in ["24:00", "9:00", "10:60", "10-00", ""] {
            assert_eq!(parse_time_of_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn control_group_is_stable_and_near_its_percent() {
        let a = Uuid::from_u128(7);
        let held = (0..10_000u128)
            .filter(|i| in_control_group(a, Uuid::from_u128(*i * 7919 + 1), 20))
            .count();
        assert!((1_700..2_300).contains(&held), "{held}");
        let p = Uuid::from_u128(42);
        assert_eq!(in_control_group(a, p, 20), in_control_group(a, p, 20));
        assert!(!in_control_group(a, p, 0));
        assert!((0..1000u128).all(|i| in_control_group(a, Uuid::from_u128(i), 100)));
    }
}
