//! The automations engine: triggers → runs (waits kept in Postgres) → judgement →
//! exactly-once sends, retries, and delivery outcomes.
//!
//! - **Triggers.** Events and churn labels are found for each profile of a
//!   `profiles.changes` batch ([`on_profile_changes`], after the merger or ml-inference
//!   committed); audience entries are read from `audience_membership_change` past each
//!   automation's cursor; schedules fire once per brand-local day. Each occurrence
//!   inserts one `automation_run` row, unique per (automation, profile, occurrence), so
//!   redeliveries, replays and replicas start nothing twice.
//! - **Waits** are the run's `wake_at`; a pass claims due runs with a lease (`FOR UPDATE
//!   SKIP LOCKED`), so a crashed replica's runs are picked up when its lease ends.
//! - **Sends.** Under the profile's advisory lock (so two runs cannot both pass a cap)
//!   the run is judged (`journeys::plan::judge`) and one `automation_send` row per
//!   action is written, status `sending`, in the same transaction that finishes the run.
//!   Only then is the provider called, and its answer recorded. A send left `sending`
//!   (the process died between the call and the record) is never resent blindly:
//!   WhatsApp ones become `unknown` (Twilio has no idempotency key) and adopt the
//!   MessageSid of a status callback to that phone that no send claims, if one comes;
//!   webhooks are retried with the same `X-ConstIntel-Id`, which receivers dedupe on.
//! - **Retries.** 429, 5xx and refused connections are retried with exponential
//!   backoff (honouring `Retry-After`) up to `AUTOMATION_MAX_ATTEMPTS`; other 4xx are
//!   recorded with the provider's error code and not retried.
//! - **Outcomes.** Twilio's status callbacks arrive through ingest as `message_status`
//!   events; each pass moves open sends forward (queued → sent → delivered → read, or
//!   failed with the error code) from them, never backwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::api::{AutomationView, RenderedMessage};
use domain::automation::{Action, RunOutcome, SendChannel, SendStatus, Trigger, Wait};
use futures::StreamExt as _;
use journeys::plan::{self, ActionPlan, Policy, RunInput, Verdict};
use journeys::store;
use messaging::SendError;
use messaging::twilio::{Outbound, TwilioClient};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

/// Advisory-lock namespace of a profile's sends ("AUTO").
const PROFILE_LOCK: i32 = 0x4155_544f;
/// Runs claimed per pass.
const CLAIM_BATCH: i64 = 128;
/// Runs acted on at once.
const CONCURRENCY: usize = 32;
/// How long a claimed run is held before another replica may take it over.
const LEASE_SECS: f64 = 120.0;
/// Longest backoff between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Everything a pass needs.
pub struct Engine {
    db: PgPool,
    policy: Policy,
    twilio: Option<TwilioClient>,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    status_callback: Mutex<(Option<Instant>, Option<String>)>,
    configured_callback: Option<String>,
    public_base_url: String,
    webhook_secret: Option<SecretString>,
    http: reqwest::Client,
    timeout: Duration,
    max_attempts: i32,
    /// Woken when a trigger inserts a run that is due now.
    pub due: Notify,
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl Engine {
    /// Builds the engine from the settings.
    pub fn new(db: PgPool, settings: &config::Settings) -> anyhow::Result<Self> {
        let a = &settings.automations;
        let policy = Policy::from_settings(a).map_err(anyhow::Error::msg)?;
        let timeout = Duration::from_secs(a.automation_provider_timeout_secs.max(1));
        let api = &settings.api;
        let twilio = match (&api.twilio_auth_token, api.twilio_account_sid.trim()) {
            (Some(token), sid) if !sid.is_empty() => Some(TwilioClient::new(
                &api.twilio_api_base,
                sid,
                token.clone(),
                timeout,
            )?),
            _ => None,
        };
        Ok(Self {
            db,
            policy,
            twilio,
            from: non_empty(&a.twilio_whatsapp_from),
            messaging_service_sid: non_empty(&a.twilio_messaging_service_sid),
            status_callback: Mutex::new((None, None)),
            configured_callback: non_empty(&a.twilio_status_callback_url),
            public_base_url: settings.ingest.public_base_url.clone(),
            webhook_secret: a.automation_webhook_secret.clone(),
            http: reqwest::Client::builder().timeout(timeout).build()?,
            timeout,
            max_attempts: i32::try_from(a.automation_max_attempts.max(1)).unwrap_or(5),
            due: Notify::new(),
        })
    }

    /// The policy (brand time zone, quiet hours, caps).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The StatusCallback URL: the setting, or ingest's status webhook of the first
    /// Twilio integration (looked up at most once a minute).
    async fn status_callback(&self) -> Option<String> {
        if let Some(url) = &self.configured_callback {
            return Some(url.clone());
        }
        let mut cached = self.status_callback.lock().await;
        if cached
            .0
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
        {
            return cached.1.clone();
        }
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM integrations WHERE kind = 'twilio' AND enabled \
             ORDER BY created_at, id LIMIT 1",
        )
        .fetch_optional(&self.db)
        .await
        .ok()
        .flatten();
        let url = id.map(|id| {
            format!(
                "{}/webhooks/twilio/{id}/status",
                self.public_base_url.trim_end_matches('/')
            )
        });
        *cached = (Some(Instant::now()), url.clone());
        url
    }
}

/// Inserts a run unless this occurrence already has one; true when inserted.
#[allow(clippy::too_many_arguments)]
async fn insert_run(
    db: &mut PgConnection,
    a: &AutomationView,
    profile: Uuid,
    occurrence: &str,
    triggered_at: DateTime<Utc>,
    context: &Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let wake_at = match &a.spec.wait {
        None => now,
        Some(Wait::Delay { seconds }) => triggered_at + secs(*seconds),
        Some(Wait::UntilEvent {
            timeout_seconds, ..
        }) => triggered_at + secs(*timeout_seconds),
    };
    let done = sqlx::query(
        "INSERT INTO automation_run (id, automation_id, profile_id, occurrence, status, \
         triggered_at, wake_at, context) VALUES ($1, $2, $3, $4, 'waiting', $5, $6, $7) \
         ON CONFLICT (automation_id, profile_id, occurrence) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(a.id)
    .bind(profile)
    .bind(occurrence)
    .bind(triggered_at)
    .bind(wake_at)
    .bind(Json(context))
    .execute(&mut *db)
    .await?;
    if done.rows_affected() > 0 {
        metrics::counter!("automation_runs_started_total").increment(1);
    }
    Ok(done.rows_affected() > 0)
}

fn secs(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

/// Starts the runs that changed profiles trigger: matching events resolved to them
/// since the automation was enabled, and churn labels that became the wanted one.
pub async fn on_profile_changes(engine: &Engine, profiles: &[Uuid]) -> Result<usize, sqlx::Error> {
    let automations = store::enabled(&engine.db).await.map_err(|e| match e {
        store::AutomationError::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    })?;
    let relevant: Vec<&AutomationView> = automations
        .iter()
        .filter(|a| {
            matches!(
                a.spec.trigger,
                Trigger::Event { .. } | Trigger::ChurnLabelBecame { .. }
            )
        })
        .collect();
    if relevant.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let mut started = 0;
    let mut conn = engine.db.acquire().await?;
    for profile in profiles {
        for a in &relevant {
            let since = a.enabled_at.unwrap_or(now);
            match &a.spec.trigger {
                Trigger::Event { event } => {
                    let rows: Vec<plan::EventRow> = sqlx::query_as(
                        "SELECT event_id, type, name, occurred_at, properties FROM normalized_event \
                         WHERE profile_id = $1 AND type = $2 AND resolved_at >= $3 \
                         AND occurred_at > $4 - interval '7 days'",
                    )
                    .bind(profile)
                    .bind(event.event_type.as_str())
                    .bind(since)
                    .bind(now)
                    .fetch_all(&mut *conn)
                    .await?;
                    for (id, fact) in rows.into_iter().map(plan::event_fact) {
                        let occurred_at = fact.occurred_at;
                        if !event.matches(&fact) {
                            continue;
                        }
                        let context = Value::Object(fact.properties);
                        if insert_run(
                            &mut conn,
                            a,
                            *profile,
                            &format!("event:{id}"),
                            occurred_at,
                            &context,
                            now,
                        )
                        .await?
                        {
                            started += 1;
                        }
                    }
                }
                Trigger::ChurnLabelBecame { label } => {
                    let want = label.as_str();
                    let row: Option<(Option<String>, DateTime<Utc>)> = sqlx::query_as(
                        "SELECT label, scored_at FROM predictions WHERE profile_id = $1 \
                         AND task = 'churn'",
                    )
                    .bind(profile)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some((Some(now_label), scored_at)) = row else {
                        continue;
                    };
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    let before: Option<String> = sqlx::query_scalar(
                        "SELECT label FROM automation_label_seen WHERE automation_id = $1 \
                         AND profile_id = $2 FOR UPDATE",
                    )
                    .bind(a.id)
                    .bind(profile)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if before.as_deref() != Some(now_label.as_str()) {
                        sqlx::query(
                            "INSERT INTO automation_label_seen (automation_id, profile_id, label) \
                             VALUES ($1, $2, $3) ON CONFLICT (automation_id, profile_id) \
                             DO UPDATE SET label = EXCLUDED.label",
                        )
                        .bind(a.id)
                        .bind(profile)
                        .bind(&now_label)
                        .execute(&mut *tx)
                        .await?;
                        if now_label == want
                            && insert_run(
                                &mut tx,
                                a,
                                *profile,
                                &format!("churn:{want}:{}", scored_at.to_rfc3339()),
                                scored_at.max(since),
                                &Value::Null,
                                now,
                            )
                            .await?
                        {
                            started += 1;
                        }
                    }
                    tx.commit().await?;
                }
                _ => {}
            }
        }
    }
    if started > 0 {
        engine.due.notify_one();
    }
    Ok(started)
}

/// Starts runs for audience entries recorded past each audience-entered automation's
/// cursor, and for schedules whose local time has come today.
pub async fn poll_triggers(engine: &Engine) -> Result<usize, sqlx::Error> {
    let ids: Vec<(Uuid, Json<domain::automation::AutomationSpec>)> = sqlx::query_as(
        "SELECT id, spec FROM automations WHERE enabled \
         AND spec -> 'trigger' ->> 'kind' IN ('audience_entered', 'schedule')",
    )
    .fetch_all(&engine.db)
    .await?;
    let now = Utc::now();
    let mut started = 0;
    for (id, _) in ids {
        let mut tx = engine.db.begin().await?;
        // One replica per automation at a time; the others skip it this pass.
        let row: Option<(i64, Option<chrono::NaiveDate>)> = sqlx::query_as(
            "SELECT change_cursor, scheduled_on FROM automations WHERE id = $1 AND enabled \
             FOR UPDATE SKIP LOCKED",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((cursor, scheduled_on)) = row else {
            continue;
        };
        let a = match store::get(&engine.db, id).await {
            Ok(a) => a,
            Err(_) => continue,
        };
        match &a.spec.trigger {
            Trigger::AudienceEntered { audience_id } => {
                let entries: Vec<(i64, Uuid, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT id, profile_id, at FROM audience_membership_change \
                     WHERE audience_id = $1 AND id > $2 AND change = 'entered' \
                     ORDER BY id LIMIT 1000",
                )
                .bind(audience_id)
                .bind(cursor)
                .fetch_all(&mut *tx)
                .await?;
                let Some(last) = entries.last().map(|e| e.0) else {
                    continue;
                };
                for (change, profile, at) in &entries {
                    if insert_run(
                        &mut tx,
                        &a,
                        *profile,
                        &format!("entered:{change}"),
                        *at,
                        &Value::Null,
                        now,
                    )
                    .await?
                    {
                        started += 1;
                    }
                }
                sqlx::query("UPDATE automations SET change_cursor = $2 WHERE id = $1")
                    .bind(id)
                    .bind(last)
                    .execute(&mut *tx)
                    .await?;
            }
            Trigger::Schedule { audience_id, at } => {
                let Some(minute) = domain::automation::parse_time_of_day(at) else {
                    continue;
                };
                let (today, now_minute) =
                    plan::local_time(&mut tx, &engine.policy.time_zone, now).await?;
                if now_minute < minute || scheduled_on.is_some_and(|d| d >= today) {
                    continue;
                }
                let members: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT profile_id FROM audience_membership WHERE audience_id = $1 AND current",
                )
                .bind(audience_id)
                .fetch_all(&mut *tx)
                .await?;
                let occurrence = format!("schedule:{today}");
                for profile in members {
                    if insert_run(&mut tx, &a, profile, &occurrence, now, &Value::Null, now).await?
                    {
                        started += 1;
                    }
                }
                sqlx::query("UPDATE automations SET scheduled_on = $2 WHERE id = $1")
                    .bind(id)
                    .bind(today)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {}
        }
        tx.commit().await?;
    }
    Ok(started)
}

type ClaimedRun = (Uuid, Uuid, Uuid, String, DateTime<Utc>, Json<Value>);

/// Claims due runs (and runs whose lease ran out) and acts on them; returns how many.
pub async fn process_due(engine: &Engine) -> Result<usize, sqlx::Error> {
    let claimed: Vec<ClaimedRun> = sqlx::query_as(
        "UPDATE automation_run SET status = 'processing', \
         lease_until = now() + make_interval(secs => $2) \
         WHERE id IN (SELECT id FROM automation_run \
             WHERE (status = 'waiting' AND wake_at <= now()) \
                OR (status = 'processing' AND lease_until < now()) \
             ORDER BY wake_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, automation_id, profile_id, occurrence, triggered_at, context",
    )
    .bind(CLAIM_BATCH)
    .bind(LEASE_SECS)
    .fetch_all(&engine.db)
    .await?;
    let n = claimed.len();
    futures::stream::iter(claimed)
        .for_each_concurrent(CONCURRENCY, |run| async move {
            let id = run.0;
            if let Err(e) = act(engine, run).await {
                tracing::warn!(run = %id, error = %e, "acting on a run failed; it is retried when its lease ends");
            }
        })
        .await;
    Ok(n)
}

/// A send written as an intent, to be made after the commit.
struct Intent {
    id: Uuid,
    channel: SendChannel,
    rendered: RenderedMessage,
}

async fn act(engine: &Engine, run: ClaimedRun) -> Result<(), sqlx::Error> {
    let (run_id, automation_id, profile_id, occurrence, triggered_at, context) = run;
    let a = match store::get(&engine.db, automation_id).await {
        Ok(a) => a,
        // Deleted: its runs went with it.
        Err(store::AutomationError::NotFound(_)) => return Ok(()),
        Err(store::AutomationError::Database(e)) => return Err(e),
        Err(e) => return Err(sqlx::Error::Protocol(e.to_string())),
    };
    if !a.enabled {
        return finish(
            &engine.db,
            run_id,
            RunOutcome::Cancelled,
            Some("the automation was disabled"),
        )
        .await;
    }
    let now = Utc::now();
    // Per-automation send rate: over the limit, wait for the next free slot.
    if let Some(limit) = a.spec.guardrails.max_sends_per_minute {
        let recent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM automation_send WHERE automation_id = $1 \
             AND channel <> 'list' AND created_at > now() - interval '1 minute' \
             AND status = ANY($2)",
        )
        .bind(automation_id)
        .bind(capped_statuses())
        .fetch_one(&engine.db)
        .await?;
        if recent >= i64::from(limit) {
            let slot = chrono::Duration::milliseconds(60_000 / i64::from(limit.max(1)));
            return reschedule(&engine.db, run_id, now + slot, "send-rate limit").await;
        }
    }
    let mut tx = engine.db.begin().await?;
    let lock_on = plan::resolve(&mut tx, profile_id)
        .await?
        .unwrap_or(profile_id);
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(PROFILE_LOCK)
        .bind(lock_on)
        .execute(&mut *tx)
        .await?;
    let input = RunInput {
        automation_id,
        spec: &a.spec,
        run_id,
        profile_id,
        occurrence: &occurrence,
        triggered_at,
        context: &context.0,
    };
    let verdict = plan::judge(&mut tx, &engine.policy, &input, now, true).await?;
    let (outcome, detail, survivor, actions) = match verdict {
        Verdict::Hold { until } => {
            tx.rollback().await?;
            return reschedule(&engine.db, run_id, until, "quiet hours").await;
        }
        Verdict::Finish {
            outcome,
            detail,
            profile,
            actions,
        } => (outcome, detail, profile.unwrap_or(profile_id), actions),
    };
    let mut intents = Vec::new();
    for plan in actions {
        if let Some(intent) = record_action(&mut tx, &a, run_id, survivor, plan).await? {
            intents.push(intent);
        }
    }
    sqlx::query(
        "UPDATE automation_run SET status = 'done', outcome = $2, detail = $3, \
         finished_at = now(), lease_until = NULL WHERE id = $1",
    )
    .bind(run_id)
    .bind(outcome.as_str())
    .bind(&detail)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::counter!("automation_runs_finished_total", "outcome" => outcome.as_str()).increment(1);
    for intent in intents {
        call(engine, intent, 1).await?;
    }
    Ok(())
}

fn capped_statuses() -> Vec<&'static str> {
    SendStatus::CAPPED_STATUSES
        .iter()
        .map(|s| s.as_str())
        .collect()
}

async fn finish(
    db: &PgPool,
    run: Uuid,
    outcome: RunOutcome,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE automation_run SET status = 'done', outcome = $2, detail = $3, \
         finished_at = now(), lease_until = NULL WHERE id = $1",
    )
    .bind(run)
    .bind(outcome.as_str())
    .bind(detail)
    .execute(db)
    .await?;
    Ok(())
}

async fn reschedule(
    db: &PgPool,
    run: Uuid,
    at: DateTime<Utc>,
    why: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE automation_run SET status = 'waiting', wake_at = $2, lease_until = NULL, \
         detail = $3 WHERE id = $1",
    )
    .bind(run)
    .bind(at)
    .bind(format!("held: {why} until {at}"))
    .execute(db)
    .await?;
    Ok(())
}

/// Writes one action's send row; a list change is applied in the same transaction.
/// Returns the intent to send after the commit. An action that already has a row
/// (an earlier attempt of this run) is left alone: the sweeps handle it.
async fn record_action(
    tx: &mut PgConnection,
    a: &AutomationView,
    run: Uuid,
    profile: Uuid,
    plan: ActionPlan,
) -> Result<Option<Intent>, sqlx::Error> {
    let id = Uuid::now_v7();
    let go = plan.status == SendStatus::Queued;
    let status = if go { SendStatus::Sending } else { plan.status };
    let inserted = sqlx::query(
        "INSERT INTO automation_send (id, run_id, automation_id, profile_id, action_index, \
         channel, status, error_code, error_message, attempts, rendered) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (run_id, action_index) DO NOTHING",
    )
    .bind(id)
    .bind(run)
    .bind(a.id)
    .bind(profile)
    .bind(i32::try_from(plan.index).unwrap_or(i32::MAX))
    .bind(plan.channel.as_str())
    .bind(status.as_str())
    .bind(&plan.error_code)
    .bind(&plan.detail)
    .bind(i32::from(go))
    .bind(plan.rendered.as_ref().map(Json))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(None);
    }
    metrics::counter!("automation_sends_total", "channel" => plan.channel.as_str(), "status" => status.as_str())
        .increment(1);
    if plan.channel == SendChannel::List {
        if let Some(Action::AddToList { list } | Action::RemoveFromList { list }) =
            a.spec.actions.get(plan.index)
        {
            let sql = if matches!(a.spec.actions[plan.index], Action::AddToList { .. }) {
                "INSERT INTO profile_list_member (list, profile_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM profile_list_member WHERE list = $1 AND profile_id = $2"
            };
            sqlx::query(sql)
                .bind(list)
                .bind(profile)
                .execute(&mut *tx)
                .await?;
        }
        return Ok(None);
    }
    Ok(match (go, plan.rendered) {
        (true, Some(rendered)) => Some(Intent {
            id,
            channel: plan.channel,
            rendered,
        }),
        _ => None,
    })
}

fn backoff(attempt: i32, hint: Option<Duration>) -> Duration {
    let exp = Duration::from_millis(500u64.saturating_mul(1u64 << attempt.clamp(0, 16)));
    hint.unwrap_or(exp)
        .max(exp.min(MAX_BACKOFF))
        .min(MAX_BACKOFF)
}

/// Makes the provider call of a recorded intent (attempt `attempt`) and records the
/// answer. The kill switch is read again first.
async fn call(engine: &Engine, intent: Intent, attempt: i32) -> Result<(), sqlx::Error> {
    let enabled: Option<bool> = sqlx::query_scalar(
        "SELECT a.enabled FROM automation_send s JOIN automations a ON a.id = s.automation_id \
         WHERE s.id = $1",
    )
    .bind(intent.id)
    .fetch_optional(&engine.db)
    .await?;
    if enabled != Some(true) {
        return record(
            &engine.db,
            intent.id,
            SendStatus::Failed,
            None,
            Some(("killed", "the automation was disabled before the call")),
            None,
        )
        .await;
    }
    let started = Instant::now();
    let answer: Result<Option<String>, SendError> = match intent.channel {
        SendChannel::Whatsapp => send_whatsapp(engine, &intent.rendered).await.map(Some),
        SendChannel::Webhook => send_webhook(engine, intent.id, &intent.rendered)
            .await
            .map(|_| None),
        SendChannel::List => Ok(None),
    };
    metrics::histogram!("automation_provider_call_seconds", "channel" => intent.channel.as_str())
        .record(started.elapsed().as_secs_f64());
    match answer {
        Ok(sid) => {
            record(
                &engine.db,
                intent.id,
                SendStatus::Queued,
                sid.as_deref(),
                None,
                None,
            )
            .await
        }
        Err(SendError::Permanent { code, message }) => {
            record(
                &engine.db,
                intent.id,
                SendStatus::Failed,
                None,
                Some((code.as_str(), message.as_str())),
                None,
            )
            .await
        }
        Err(SendError::Transient {
            code,
            message,
            retry_after,
        }) => {
            if attempt >= engine.max_attempts {
                record(
                    &engine.db,
                    intent.id,
                    SendStatus::Failed,
                    None,
                    Some((
                        code.as_str(),
                        format!("{message} (after {attempt} attempts)").as_str(),
                    )),
                    None,
                )
                .await
            } else {
                let wait = backoff(attempt, retry_after);
                record(
                    &engine.db,
                    intent.id,
                    SendStatus::Retrying,
                    None,
                    Some((code.as_str(), message.as_str())),
                    Some(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()),
                )
                .await
            }
        }
        Err(SendError::Ambiguous(message)) => {
            // The request may have been acted on. A webhook is retried with the same
            // id (receivers dedupe); a WhatsApp message is not resent.
            let (status, next) = match intent.channel {
                SendChannel::Webhook if attempt < engine.max_attempts => (
                    SendStatus::Retrying,
                    Some(
                        Utc::now()
                            + chrono::Duration::from_std(backoff(attempt, None))
                                .unwrap_or_default(),
                    ),
                ),
                _ => (SendStatus::Unknown, None),
            };
            record(
                &engine.db,
                intent.id,
                status,
                None,
                Some(("no_answer", message.as_str())),
                next,
            )
            .await
        }
    }
}

async fn record(
    db: &PgPool,
    id: Uuid,
    status: SendStatus,
    provider_id: Option<&str>,
    error: Option<(&str, &str)>,
    next_attempt_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE automation_send SET status = $2, provider_id = COALESCE($3, provider_id), \
         error_code = $4, error_message = $5, next_attempt_at = $6, updated_at = now(), \
         accepted_at = CASE WHEN $2 = 'queued' THEN now() ELSE accepted_at END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(provider_id)
    .bind(error.map(|e| e.0))
    .bind(error.map(|e| e.1))
    .bind(next_attempt_at)
    .execute(db)
    .await?;
    metrics::counter!("automation_send_outcomes_total", "status" => status.as_str()).increment(1);
    Ok(())
}

async fn send_whatsapp(engine: &Engine, r: &RenderedMessage) -> Result<String, SendError> {
    let Some(twilio) = &engine.twilio else {
        return Err(SendError::Permanent {
            code: "not_configured".into(),
            message: "Twilio is not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)".into(),
        });
    };
    if engine.from.is_none() && engine.messaging_service_sid.is_none() {
        return Err(SendError::Permanent {
            code: "not_configured".into(),
            message: "no sender: set TWILIO_WHATSAPP_FROM or TWILIO_MESSAGING_SERVICE_SID".into(),
        });
    }
    let m = Outbound {
        to: r.to.clone(),
        from: engine
            .messaging_service_sid
            .is_none()
            .then(|| engine.from.clone())
            .flatten(),
        messaging_service_sid: engine.messaging_service_sid.clone(),
        body: r.body.clone(),
        content_sid: r.content_sid.clone(),
        content_variables: (!r.content_variables.is_empty())
            .then(|| serde_json::to_string(&r.content_variables).unwrap_or_default()),
        status_callback: engine.status_callback().await,
    };
    twilio.send(&m).await.map(|a| a.sid)
}

async fn send_webhook(engine: &Engine, id: Uuid, r: &RenderedMessage) -> Result<u16, SendError> {
    let Some(secret) = &engine.webhook_secret else {
        return Err(SendError::Permanent {
            code: "not_configured".into(),
            message: "AUTOMATION_WEBHOOK_SECRET is not set".into(),
        });
    };
    let mut payload = r.payload.clone().unwrap_or(Value::Null);
    if let Value::Object(m) = &mut payload {
        m.insert("id".into(), Value::String(id.to_string()));
    }
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    messaging::webhook::post(
        &engine.http,
        &r.to,
        secret.expose_secret().as_bytes(),
        &id.to_string(),
        Utc::now().timestamp(),
        body,
        engine.timeout,
    )
    .await
}

/// Retries sends whose backoff is over, and settles sends left `sending` by a process
/// that stopped between the provider call and the record.
pub async fn sweep_sends(engine: &Engine) -> Result<usize, sqlx::Error> {
    // Left `sending` for longer than a call can take: the answer was lost.
    let stale_after = (engine.timeout * 2 + Duration::from_secs(5)).as_secs_f64();
    sqlx::query(
        "UPDATE automation_send SET status = CASE WHEN channel = 'webhook' THEN 'retrying' \
         ELSE 'unknown' END, next_attempt_at = now(), error_code = 'no_answer', \
         error_message = 'the process stopped between the provider call and recording its answer', \
         updated_at = now() \
         WHERE status = 'sending' AND updated_at < now() - make_interval(secs => $1)",
    )
    .bind(stale_after)
    .execute(&engine.db)
    .await?;
    let due: Vec<(Uuid, String, i32, Json<RenderedMessage>)> = sqlx::query_as(
        "UPDATE automation_send SET status = 'sending', attempts = attempts + 1, \
         updated_at = now(), next_attempt_at = NULL \
         WHERE id IN (SELECT id FROM automation_send WHERE status = 'retrying' \
             AND next_attempt_at <= now() AND rendered IS NOT NULL \
             ORDER BY next_attempt_at LIMIT 64 FOR UPDATE SKIP LOCKED) \
         RETURNING id, channel, attempts, rendered",
    )
    .fetch_all(&engine.db)
    .await?;
    let n = due.len();
    for (id, channel, attempts, rendered) in due {
        let Ok(channel) = channel.parse() else {
            continue;
        };
        call(
            engine,
            Intent {
                id,
                channel,
                rendered: rendered.0,
            },
            attempts,
        )
        .await?;
    }
    Ok(n)
}

fn lifecycle(status: &str) -> Option<SendStatus> {
    Some(match status {
        "accepted" | "scheduled" | "queued" | "sending" => SendStatus::Queued,
        "sent" => SendStatus::Sent,
        "delivered" => SendStatus::Delivered,
        "read" => SendStatus::Read,
        "failed" | "undelivered" => SendStatus::Failed,
        _ => return None,
    })
}

/// Moves open WhatsApp sends along their lifecycle from the status callbacks that
/// reached ingest (`message_status` events, by MessageSid); returns how many changed.
pub async fn apply_statuses(engine: &Engine) -> Result<usize, sqlx::Error> {
    // An `unknown` send (its answer lost) is reconciled when a status callback arrives
    // for its phone after its intent with a MessageSid no send claims: that SID is its.
    let adopted = sqlx::query(
        "UPDATE automation_send s SET provider_id = m.sid, status = 'queued', \
         accepted_at = s.created_at, updated_at = now(), error_code = NULL, \
         error_message = 'reconciled from a status callback after the answer was lost' \
         FROM (SELECT DISTINCT ON (u.id) u.id, e.properties ->> 'message_sid' AS sid \
               FROM automation_send u JOIN normalized_event e ON e.type = 'message_status' \
                 AND e.occurred_at >= u.created_at - interval '1 minute' \
                 AND e.identifiers @> jsonb_build_array(jsonb_build_object('kind', 'phone', \
                     'value', substr(u.rendered ->> 'to', 10))) \
                 AND NOT EXISTS (SELECT 1 FROM automation_send o \
                     WHERE o.provider_id = e.properties ->> 'message_sid') \
               WHERE u.status = 'unknown' AND u.provider_id IS NULL AND u.channel = 'whatsapp' \
                 AND u.updated_at > now() - interval '2 days' \
               ORDER BY u.id, e.occurred_at) m \
         WHERE s.id = m.id AND m.sid IS NOT NULL",
    )
    .execute(&engine.db)
    .await?;
    if adopted.rows_affected() > 0 {
        tracing::info!(
            sends = adopted.rows_affected(),
            "unknown sends reconciled from status callbacks"
        );
    }
    let open: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT id, provider_id, status FROM automation_send \
         WHERE channel = 'whatsapp' AND provider_id IS NOT NULL \
         AND status IN ('queued', 'sent', 'delivered') \
         AND updated_at > now() - interval '7 days' ORDER BY updated_at LIMIT 5000",
    )
    .fetch_all(&engine.db)
    .await?;
    if open.is_empty() {
        return Ok(0);
    }
    let sids: Vec<&str> = open.iter().map(|o| o.1.as_str()).collect();
    let events: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT properties ->> 'message_sid', properties ->> 'status', \
         properties ->> 'error_code', properties ->> 'error_message' FROM normalized_event \
         WHERE type = 'message_status' AND properties ->> 'message_sid' = ANY($1)",
    )
    .bind(&sids)
    .fetch_all(&engine.db)
    .await?;
    let mut best: std::collections::HashMap<&str, (SendStatus, Option<&str>, Option<&str>)> =
        std::collections::HashMap::new();
    for (sid, status, code, message) in &events {
        let Some(s) = lifecycle(status) else { continue };
        let e = best
            .entry(sid.as_str())
            .or_insert((s, code.as_deref(), message.as_deref()));
        if s.lifecycle_rank() > e.0.lifecycle_rank() {
            *e = (s, code.as_deref(), message.as_deref());
        }
    }
    let mut changed = 0;
    for (id, sid, status) in &open {
        let Some((s, code, message)) = best.get(sid.as_str()) else {
            continue;
        };
        let current = status.parse::<SendStatus>().unwrap_or(SendStatus::Queued);
        if s.lifecycle_rank() <= current.lifecycle_rank() {
            continue;
        }
        sqlx::query(
            "UPDATE automation_send SET status = $2, updated_at = now(), \
             error_code = COALESCE($3, error_code), error_message = COALESCE($4, error_message) \
             WHERE id = $1 AND status = $5",
        )
        .bind(id)
        .bind(s.as_str())
        .bind(code)
        .bind(message)
        .bind(status)
        .execute(&engine.db)
        .await?;
        metrics::counter!("automation_send_outcomes_total", "status" => s.as_str()).increment(1);
        changed += 1;
    }
    Ok(changed)
}

/// Runs passes until shutdown: triggers, due runs, retries, statuses. Woken early when
/// a trigger starts a run that is due now.
pub async fn run(engine: Arc<Engine>, tick: Duration, shutdown: service_kit::CancellationToken) {
    let mut last_slow: Option<Instant> = None;
    loop {
        let pass = async {
            poll_triggers(&engine).await?;
            // Drain: a full batch means more may be due.
            while process_due(&engine).await? == usize::try_from(CLAIM_BATCH).unwrap_or(0) {}
            sweep_sends(&engine).await?;
            if last_slow.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                apply_statuses(&engine).await?;
                last_slow = Some(Instant::now());
            }
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = pass.await {
            tracing::warn!(error = %e, "an automations pass failed; the next one retries");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = engine.due.notified() => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
}
