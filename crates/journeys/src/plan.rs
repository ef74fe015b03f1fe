//! Judging one profile for one automation: context, guardrails, rendering.
//!
//! [`judge`] is what both the engine (before it records and sends) and a dry run (which
//! only shows it) call, so a dry run says exactly what the engine would do now. Every
//! fact is read fresh from Postgres: consent traits, suppression, caps, the 24-hour
//! WhatsApp window.

use std::collections::BTreeMap;

use audiences::facts::{self, EventScope};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use domain::api::RenderedMessage;
use domain::audience::{ConsentChannel, EventFact, EventMatch};
use domain::automation::{
    Action, AutomationSpec, QuietHours, RunOutcome, SendChannel, SendStatus, Variable, Wait,
    WhatsappMessage, in_control_group, parse_time_of_day,
};
use domain::profile::BrowsingEntry;
use domain::{EventType, IdentifierKind};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use storage::Named;
use uuid::Uuid;

/// How long an inbound WhatsApp message keeps the free-form window open.
pub const SESSION_WINDOW_HOURS: i64 = 24;

/// The brand-wide guardrails: time zone, quiet hours, frequency caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// IANA time zone of the brand (checked by [`Policy::check`]).
    pub time_zone: String,
    /// Quiet hours as minutes after local midnight, `[start, end)`; overnight when
    /// `start > end`. `None`: no quiet hours.
    pub quiet: Option<(u32, u32)>,
    /// Most messages per person and channel per rolling day (0: no cap).
    pub cap_per_day: u32,
    /// Most messages per person and channel per rolling week (0: no cap).
    pub cap_per_week: u32,
}

impl Policy {
    /// Builds the policy from the settings; an unparsable quiet-hours time is an error.
    pub fn from_settings(s: &config::automations::AutomationSettings) -> Result<Self, String> {
        let quiet = match (s.quiet_hours_start.trim(), s.quiet_hours_end.trim()) {
            ("", "") => None,
            (a, b) => {
                let a = parse_time_of_day(a)
                    .ok_or_else(|| format!("QUIET_HOURS_START `{a}` is not HH:MM"))?;
                let b = parse_time_of_day(b)
                    .ok_or_else(|| format!("QUIET_HOURS_END `{b}` is not HH:MM"))?;
                (a != b).then_some((a, b))
            }
        };
        Ok(Self {
            time_zone: s.brand_time_zone.clone(),
            quiet,
            cap_per_day: s.frequency_cap_per_day,
            cap_per_week: s.frequency_cap_per_week,
        })
    }

    /// Checks the time zone against Postgres's time-zone database.
    pub async fn check(&self, db: &PgPool) -> Result<(), String> {
        sqlx::query("SELECT now() AT TIME ZONE $1")
            .bind(&self.time_zone)
            .execute(db)
            .await
            .map(|_| ())
            .map_err(|e| format!("BRAND_TIME_ZONE `{}`: {e}", self.time_zone))
    }
}

/// The brand-local date and minute of day of `at`.
pub async fn local_time(
    db: &mut PgConnection,
    tz: &str,
    at: DateTime<Utc>,
) -> Result<(NaiveDate, u32), sqlx::Error> {
    let (date, minute): (NaiveDate, i32) = sqlx::query_as(
        "SELECT (($1::timestamptz AT TIME ZONE $2))::date, \
         (EXTRACT(HOUR FROM ($1::timestamptz AT TIME ZONE $2)) * 60 \
          + EXTRACT(MINUTE FROM ($1::timestamptz AT TIME ZONE $2)))::int",
    )
    .bind(at)
    .bind(tz)
    .fetch_one(&mut *db)
    .await?;
    Ok((date, u32::try_from(minute).unwrap_or(0)))
}

/// The instant of brand-local `date` at `minute` after midnight.
pub async fn instant_of(
    db: &mut PgConnection,
    tz: &str,
    date: NaiveDate,
    minute: u32,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("SELECT ($1::date + make_interval(mins => $2)) AT TIME ZONE $3")
        .bind(date)
        .bind(i32::try_from(minute).unwrap_or(0))
        .bind(tz)
        .fetch_one(&mut *db)
        .await
}

/// When the quiet hours around `at` end, or `None` when `at` is not in them.
pub async fn quiet_until(
    db: &mut PgConnection,
    policy: &Policy,
    at: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let Some((start, end)) = policy.quiet else {
        return Ok(None);
    };
    let (date, m) = local_time(db, &policy.time_zone, at).await?;
    let inside = if start < end {
        (start..end).contains(&m)
    } else {
        m >= start || m < end
    };
    if !inside {
        return Ok(None);
    }
    let end_date = if start > end && m >= start {
        date.succ_opt().unwrap_or(date)
    } else {
        date
    };
    Ok(Some(
        instant_of(db, &policy.time_zone, end_date, end).await?,
    ))
}

/// What automations know of one live profile when they act.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The live (survivor) profile.
    pub id: Uuid,
    /// Its display name.
    pub display_name: Option<String>,
    /// Its traits (consent among them), read now.
    pub traits: Map<String, Value>,
    /// Its identifiers as `(kind, value)`.
    pub identifiers: Vec<(String, String)>,
    /// Orders, spend, last order.
    pub orders_count: i32,
    /// Total spent.
    pub total_spent: f64,
    /// Its churn label, when scored.
    pub churn_label: Option<String>,
    /// When it last wrote to the brand on WhatsApp.
    pub last_inbound_whatsapp: Option<DateTime<Utc>>,
    /// Recent browsing and cart activity, most recent first.
    pub recent_browsing: Vec<BrowsingEntry>,
    /// Recommended product names, best first.
    pub recommended: Vec<String>,
}

impl Profile {
    /// The phone number WhatsApp messages go to (the first phone identifier).
    pub fn phone(&self) -> Option<&str> {
        self.identifiers
            .iter()
            .find(|(k, _)| k == IdentifierKind::Phone.as_str())
            .map(|(_, v)| v.as_str())
    }

    /// Whether the person gave marketing consent on `channel` (the trait, read now).
    pub fn consents(&self, channel: ConsentChannel) -> bool {
        self.traits.get(channel.trait_key()).and_then(Value::as_str)
            == Some(ConsentChannel::SUBSCRIBED)
    }

    /// Whether an inbound WhatsApp message in the last 24 hours opened the window.
    pub fn in_session_window(&self, now: DateTime<Utc>) -> bool {
        self.last_inbound_whatsapp
            .is_some_and(|at| at > now - Duration::hours(SESSION_WINDOW_HOURS))
    }
}

type ProfileRow = (
    Option<String>,
    Json<Value>,
    Json<Map<String, Value>>,
    i32,
    f64,
    Json<Value>,
);

/// The survivor of `id` (itself when live); `None` when it no longer exists (erased).
pub async fn resolve(db: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    storage::customer360::resolve_in(db, id).await
}

/// Loads live profile `id` (already resolved); `None` when it is gone or merged.
pub async fn load_profile(db: &mut PgConnection, id: Uuid) -> Result<Option<Profile>, sqlx::Error> {
    let row: Option<ProfileRow> = sqlx::query_as(
        "SELECT display_name, identifiers, traits, orders_count, total_spent::float8, state \
         FROM customer_profile WHERE id = $1 AND merged_into IS NULL",
    )
    .bind(id)
    .fetch_optional(&mut *db)
    .await?;
    let Some((display_name, identifiers, traits, orders_count, total_spent, state)) = row else {
        return Ok(None);
    };
    let identifiers = identifiers
        .0
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            Some((
                i.get("kind")?.as_str()?.to_owned(),
                i.get("value")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    let recent_browsing: Vec<BrowsingEntry> = serde_json::from_value(
        state
            .0
            .get("recent_browsing")
            .cloned()
            .unwrap_or(Value::Null),
    )
    .unwrap_or_default();
    let last_inbound_whatsapp: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(occurred_at) FROM normalized_event WHERE profile_id = $1 \
         AND type = 'message_received' AND channel = 'whatsapp'",
    )
    .bind(id)
    .fetch_one(&mut *db)
    .await?;
    let predictions: Vec<(String, Option<String>, Json<Value>)> = sqlx::query_as(
        "SELECT task, label, details FROM predictions WHERE profile_id = $1 \
         AND task IN ('churn', 'recommend')",
    )
    .bind(id)
    .fetch_all(&mut *db)
    .await?;
    let mut churn_label = None;
    let mut recommended = Vec::new();
    for (task, label, details) in predictions {
        if task == "churn" {
            churn_label = label;
        } else {
            // A malformed stored list fills no variable rather than stopping the send.
            recommended = storage::recommendations::from_details(&details.0)
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.name)
                .collect();
        }
    }
    Ok(Some(Profile {
        id,
        display_name,
        traits: traits.0,
        identifiers,
        orders_count,
        total_spent,
        churn_label,
        last_inbound_whatsapp,
        recent_browsing,
        recommended,
    }))
}

/// Whether any of the profile's identifiers is on the suppression list (an erased
/// person's identifiers, stored as SHA-256 of `kind:value`).
pub async fn suppressed(db: &mut PgConnection, p: &Profile) -> Result<bool, sqlx::Error> {
    if p.identifiers.is_empty() {
        return Ok(false);
    }
    let hashes: Vec<Vec<u8>> = p
        .identifiers
        .iter()
        .map(|(k, v)| Sha256::digest(format!("{k}:{v}")).to_vec())
        .collect();
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM suppression WHERE identifier_sha256 = ANY($1))",
    )
    .bind(&hashes)
    .fetch_one(&mut *db)
    .await
}

/// Whether a frequency cap stops another message to `profile` on `channel` now: sends
/// of every automation that reached (or may have reached) the provider count.
pub async fn capped(
    db: &mut PgConnection,
    policy: &Policy,
    profile: Uuid,
    channel: SendChannel,
    now: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    if policy.cap_per_day == 0 && policy.cap_per_week == 0 {
        return Ok(None);
    }
    let statuses: Vec<&str> = SendStatus::CAPPED_STATUSES
        .iter()
        .map(|s| s.as_str())
        .collect();
    let (day, week): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE created_at > $4 - interval '1 day'), count(*) \
         FROM automation_send WHERE profile_id = $1 AND channel = $2 AND status = ANY($3) \
         AND created_at > $4 - interval '7 days'",
    )
    .bind(profile)
    .bind(channel.as_str())
    .bind(&statuses)
    .bind(now)
    .fetch_one(&mut *db)
    .await?;
    if policy.cap_per_day > 0 && day >= i64::from(policy.cap_per_day) {
        return Ok(Some(format!(
            "{day} {channel} message(s) in the last day (cap {})",
            policy.cap_per_day
        )));
    }
    if policy.cap_per_week > 0 && week >= i64::from(policy.cap_per_week) {
        return Ok(Some(format!(
            "{week} {channel} message(s) in the last week (cap {})",
            policy.cap_per_week
        )));
    }
    Ok(None)
}

/// A `normalized_event` row as triggers and waits read it: id, type, name, time,
/// properties.
pub type EventRow = (
    Uuid,
    Named<EventType>,
    Option<String>,
    DateTime<Utc>,
    Json<Map<String, Value>>,
);

/// The event fact of a row, with its id.
pub fn event_fact((id, t, name, occurred_at, props): EventRow) -> (Uuid, EventFact) {
    (
        id,
        EventFact {
            event_type: t.0,
            name,
            occurred_at,
            properties: props.0,
        },
    )
}

/// A profile's events of `m`'s type after `since` (up to `until`), matched in full.
pub async fn matching_events(
    db: &mut PgConnection,
    profile: Uuid,
    m: &EventMatch,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<(Uuid, EventFact)>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT event_id, type, name, occurred_at, properties FROM normalized_event \
             WHERE profile_id = $1 AND type = $2 AND occurred_at >= $3 AND occurred_at <= $4 \
             ORDER BY occurred_at",
    )
    .bind(profile)
    .bind(m.event_type.as_str())
    .bind(since)
    .bind(until)
    .fetch_all(&mut *db)
    .await?;
    Ok(rows
        .into_iter()
        .map(event_fact)
        .filter(|(_, e)| m.matches(e))
        .collect())
}

/// The items of a cart-like event's properties (`items`, `line_items`, `products`):
/// their names (`name`, `title`, `product_name`).
pub fn cart_items(props: &Value) -> Vec<String> {
    ["items", "line_items", "products"]
        .iter()
        .filter_map(|k| props.get(*k)?.as_array())
        .flatten()
        .filter_map(|i| {
            ["name", "title", "product_name"]
                .iter()
                .find_map(|k| i.get(*k)?.as_str())
                .map(str::to_owned)
        })
        .collect()
}

/// The value of a template variable for a profile; `context` is the trigger event's
/// properties (a checkout's cart).
pub fn value_of(v: Variable, p: &Profile, context: &Value) -> String {
    match v {
        Variable::FirstName => p
            .traits
            .get("first_name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                p.display_name
                    .as_deref()
                    .and_then(|n| n.split_whitespace().next())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "there".into()),
        Variable::LastViewedProduct => p
            .recent_browsing
            .iter()
            .find(|b| b.event_type == EventType::ProductViewed)
            .and_then(|b| b.name.clone())
            .unwrap_or_default(),
        Variable::RecommendedProducts => p
            .recommended
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        Variable::CartContents => {
            let mut items = cart_items(context);
            if items.is_empty() {
                items = p
                    .recent_browsing
                    .iter()
                    .filter(|b| b.event_type == EventType::AddedToCart)
                    .filter_map(|b| b.name.clone())
                    .take(5)
                    .collect();
            }
            items.join(", ")
        }
    }
}

/// Fills `{{first_name}}` and the other placeholders of a free-form body.
pub fn fill(body: &str, p: &Profile, context: &Value) -> String {
    let mut out = body.to_owned();
    for v in Variable::ALL {
        let placeholder = format!("{{{{{}}}}}", v.as_str());
        if out.contains(&placeholder) {
            out = out.replace(&placeholder, &value_of(v, p, context));
        }
    }
    out
}

/// Renders a WhatsApp message: free-form inside the 24-hour window, the template
/// outside it. `Err` (with Twilio's code) when only a body is set and the window is
/// closed: Twilio would refuse it (63016), so it is not sent.
pub fn render_whatsapp(
    m: &WhatsappMessage,
    p: &Profile,
    to: &str,
    context: &Value,
    now: DateTime<Utc>,
) -> Result<RenderedMessage, (String, String)> {
    let open = p.in_session_window(now);
    let mut r = RenderedMessage {
        channel: SendChannel::Whatsapp,
        to: format!("whatsapp:{to}"),
        body: None,
        content_sid: None,
        content_variables: BTreeMap::new(),
        in_session_window: open,
        payload: None,
    };
    match (&m.body, &m.content_sid) {
        (Some(body), _) if open => r.body = Some(fill(body, p, context)),
        (_, Some(sid)) => {
            r.content_sid = Some(sid.clone());
            r.content_variables = m
                .content_variables
                .iter()
                .map(|(k, v)| (k.clone(), value_of(*v, p, context)))
                .collect();
        }
        _ => {
            return Err((
                "63016".into(),
                "outside the 24-hour window and no template (content_sid) to send instead".into(),
            ));
        }
    }
    Ok(r)
}

/// The JSON an outbound webhook carries: the profile summary and the trigger.
pub fn webhook_payload(
    automation: (Uuid, &str),
    run: (Uuid, &str, DateTime<Utc>),
    p: &Profile,
    context: &Value,
) -> Value {
    json!({
        "type": "automation.triggered",
        "automation": {"id": automation.0, "name": automation.1},
        "run": {"id": run.0, "occurrence": run.1, "triggered_at": run.2, "context": context},
        "profile": {
            "id": p.id,
            "display_name": p.display_name,
            "identifiers": p.identifiers.iter()
                .map(|(k, v)| json!({"kind": k, "value": v})).collect::<Vec<_>>(),
            "orders_count": p.orders_count,
            "total_spent": p.total_spent,
            "churn_label": p.churn_label,
            "recommended_products": p.recommended.iter().take(3).collect::<Vec<_>>(),
        },
    })
}

/// What one action would (or will) do.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionPlan {
    /// Which action of the automation.
    pub index: usize,
    /// Its channel.
    pub channel: SendChannel,
    /// `Queued`: go ahead (a list change: `Applied`); otherwise the guardrail's status.
    pub status: SendStatus,
    /// Why it is stopped, in words; for a body outside the window, Twilio's code.
    pub detail: Option<String>,
    /// The error code recorded with a refusal decided here (`63016`).
    pub error_code: Option<String>,
    /// What will be sent.
    pub rendered: Option<RenderedMessage>,
}

/// The verdict on a run that is due.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Due in quiet hours and the automation holds: try again at `until`.
    Hold {
        /// When quiet hours end.
        until: DateTime<Utc>,
    },
    /// The run ends with `outcome`; `actions` are what to do (empty unless `Acted`).
    Finish {
        /// How it ends.
        outcome: RunOutcome,
        /// Why, in words.
        detail: Option<String>,
        /// The live profile it acts on (the survivor of a merge).
        profile: Option<Uuid>,
        /// Per action.
        actions: Vec<ActionPlan>,
    },
}

fn finish(outcome: RunOutcome, detail: impl Into<String>) -> Verdict {
    Verdict::Finish {
        outcome,
        detail: Some(detail.into()),
        profile: None,
        actions: Vec::new(),
    }
}

/// A run as [`judge`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInput<'a> {
    /// The automation.
    pub automation_id: Uuid,
    /// Its definition.
    pub spec: &'a AutomationSpec,
    /// The run's id (the webhook payload names it).
    pub run_id: Uuid,
    /// The profile the trigger was for.
    pub profile_id: Uuid,
    /// The trigger occurrence.
    pub occurrence: &'a str,
    /// When the trigger happened (the wait's event is looked for after it).
    pub triggered_at: DateTime<Utc>,
    /// The trigger's context (event properties).
    pub context: &'a Value,
}

/// Judges a due run now: profile still there, the wait's event, conditions, control
/// group, then per action consent, suppression, caps and (with `quiet_hours`) quiet
/// hours, and the rendering. Reads only; the caller records (and, for real runs, holds
/// the profile's advisory lock so two runs cannot both pass a cap).
pub async fn judge(
    db: &mut PgConnection,
    policy: &Policy,
    run: &RunInput<'_>,
    now: DateTime<Utc>,
    quiet_hours: bool,
) -> Result<Verdict, sqlx::Error> {
    let Some(id) = resolve(db, run.profile_id).await? else {
        return Ok(finish(
            RunOutcome::Suppressed,
            "the profile no longer exists (erased)",
        ));
    };
    let Some(p) = load_profile(db, id).await? else {
        return Ok(finish(
            RunOutcome::Suppressed,
            "the profile no longer exists (erased)",
        ));
    };
    if let Some(Wait::UntilEvent { event, .. }) = &run.spec.wait
        && !matching_events(db, id, event, run.triggered_at, now)
            .await?
            .is_empty()
    {
        return Ok(finish(
            RunOutcome::Exited,
            format!("the profile did `{}` during the wait", event.event_type),
        ));
    }
    if let Some(rule) = &run.spec.conditions {
        let scope = EventScope {
            types: rule.event_types(),
            lookback_days: rule.lookback_days(),
        };
        let holds = match facts::load(db, id, &scope, now).await? {
            Some(f) => rule.evaluate(&f, now),
            None => false,
        };
        if !holds {
            return Ok(finish(
                RunOutcome::ConditionsNotMet,
                "the conditions did not hold",
            ));
        }
    }
    if suppressed(db, &p).await? {
        return Ok(finish(
            RunOutcome::Suppressed,
            "an identifier of the profile is suppressed (erased person)",
        ));
    }
    if in_control_group(run.automation_id, id, run.spec.guardrails.control_percent) {
        return Ok(Verdict::Finish {
            outcome: RunOutcome::HeldOut,
            detail: Some(format!(
                "in the {}% control group",
                run.spec.guardrails.control_percent
            )),
            profile: Some(id),
            actions: Vec::new(),
        });
    }
    let mut actions = Vec::with_capacity(run.spec.actions.len());
    for (index, action) in run.spec.actions.iter().enumerate() {
        let plan = |channel, status, detail: Option<String>, rendered| ActionPlan {
            index,
            channel,
            status,
            detail,
            error_code: None,
            rendered,
        };
        let a = match action {
            Action::Whatsapp(m) => {
                let ch = SendChannel::Whatsapp;
                if !p.consents(ConsentChannel::Whatsapp) {
                    plan(
                        ch,
                        SendStatus::NoConsent,
                        Some("no WhatsApp marketing consent (whatsapp_marketing)".into()),
                        None,
                    )
                } else if let Some(to) = p.phone() {
                    if let Some(why) = capped(db, policy, id, ch, now).await? {
                        plan(ch, SendStatus::Capped, Some(why), None)
                    } else if let Some(until) = match quiet_hours {
                        true => quiet_until(db, policy, now).await?,
                        false => None,
                    } {
                        match run.spec.guardrails.quiet_hours {
                            QuietHours::Hold => return Ok(Verdict::Hold { until }),
                            QuietHours::Skip => plan(
                                ch,
                                SendStatus::QuietHoursSkipped,
                                Some(format!("quiet hours until {until}")),
                                None,
                            ),
                        }
                    } else {
                        match render_whatsapp(m, &p, to, run.context, now) {
                            Ok(r) => plan(ch, SendStatus::Queued, None, Some(r)),
                            Err((code, why)) => ActionPlan {
                                error_code: Some(code),
                                ..plan(ch, SendStatus::Failed, Some(why), None)
                            },
                        }
                    }
                } else {
                    plan(
                        ch,
                        SendStatus::Suppressed,
                        Some("no phone number to message".into()),
                        None,
                    )
                }
            }
            Action::Webhook { url } => {
                let payload = webhook_payload(
                    (run.automation_id, &run.spec.name),
                    (run.run_id, run.occurrence, run.triggered_at),
                    &p,
                    run.context,
                );
                plan(
                    SendChannel::Webhook,
                    SendStatus::Queued,
                    None,
                    Some(RenderedMessage {
                        channel: SendChannel::Webhook,
                        to: url.clone(),
                        body: None,
                        content_sid: None,
                        content_variables: BTreeMap::new(),
                        in_session_window: false,
                        payload: Some(payload),
                    }),
                )
            }
            Action::AddToList { list } | Action::RemoveFromList { list } => plan(
                SendChannel::List,
                SendStatus::Applied,
                None,
                Some(RenderedMessage {
                    channel: SendChannel::List,
                    to: list.clone(),
                    body: Some(
                        if matches!(action, Action::AddToList { .. }) {
                            "add"
                        } else {
                            "remove"
                        }
                        .into(),
                    ),
                    content_sid: None,
                    content_variables: BTreeMap::new(),
                    in_session_window: false,
                    payload: None,
                }),
            ),
        };
        actions.push(a);
    }
    Ok(Verdict::Finish {
        outcome: RunOutcome::Acted,
        detail: None,
        profile: Some(id),
        actions,
    })
}
