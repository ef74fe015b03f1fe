//! Dry runs: who an automation would reach now and what each would get. Nothing is
//! sent or recorded; the judgement is [`crate::plan::judge`]'s, as the engine's.

use chrono::{Duration, Utc};
use domain::api::{DryRun, DryRunAction, DryRunItem};
use domain::automation::{
    AutomationSpec, QuietHours, RunOutcome, SendChannel, SendStatus, Trigger,
};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::plan::{self, Policy, RunInput, Verdict};
use crate::store::AutomationError;

/// Most profiles a dry run judges.
pub const MAX_DRY_RUN: u32 = 100;

/// Profiles the trigger reaches now: audience members, profiles with the event or the
/// churn label in the last day. Returns how many and the first `limit` of them.
async fn candidates(
    db: &PgPool,
    spec: &AutomationSpec,
    limit: i64,
) -> Result<(i64, Vec<Uuid>), sqlx::Error> {
    let since = Utc::now() - Duration::days(1);
    let (count_sql, list_sql) = match &spec.trigger {
        Trigger::AudienceEntered { .. } | Trigger::Schedule { .. } => (
            "SELECT count(*) FROM audience_membership WHERE audience_id = $1 AND current",
            "SELECT profile_id FROM audience_membership WHERE audience_id = $1 AND current \
             ORDER BY profile_id LIMIT $2",
        ),
        Trigger::Event { .. } => (
            "SELECT count(DISTINCT profile_id) FROM normalized_event WHERE type = $1 \
             AND ($2::text IS NULL OR name = $2) AND occurred_at > $3 AND profile_id IS NOT NULL",
            "SELECT DISTINCT profile_id FROM normalized_event WHERE type = $1 \
             AND ($2::text IS NULL OR name = $2) AND occurred_at > $3 AND profile_id IS NOT NULL \
             ORDER BY profile_id LIMIT $4",
        ),
        Trigger::ChurnLabelBecame { .. } => (
            "SELECT count(*) FROM predictions WHERE task = 'churn' AND label = $1",
            "SELECT profile_id FROM predictions WHERE task = 'churn' AND label = $1 \
             ORDER BY profile_id LIMIT $2",
        ),
    };
    Ok(match &spec.trigger {
        Trigger::AudienceEntered { audience_id } | Trigger::Schedule { audience_id, .. } => (
            sqlx::query_scalar(count_sql)
                .bind(audience_id)
                .fetch_one(db)
                .await?,
            sqlx::query_scalar(list_sql)
                .bind(audience_id)
                .bind(limit)
                .fetch_all(db)
                .await?,
        ),
        Trigger::Event { event } => (
            sqlx::query_scalar(count_sql)
                .bind(event.event_type.as_str())
                .bind(&event.name)
                .bind(since)
                .fetch_one(db)
                .await?,
            sqlx::query_scalar(list_sql)
                .bind(event.event_type.as_str())
                .bind(&event.name)
                .bind(since)
                .bind(limit)
                .fetch_all(db)
                .await?,
        ),
        Trigger::ChurnLabelBecame { label } => {
            let label = serde_json::to_value(label)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            (
                sqlx::query_scalar(count_sql)
                    .bind(&label)
                    .fetch_one(db)
                    .await?,
                sqlx::query_scalar(list_sql)
                    .bind(&label)
                    .bind(limit)
                    .fetch_all(db)
                    .await?,
            )
        }
    })
}

/// Judges up to `limit` candidates (or only `profile`) as if their wait were over now.
pub async fn dry_run(
    db: &PgPool,
    policy: &Policy,
    automation_id: Uuid,
    spec: &AutomationSpec,
    profile: Option<Uuid>,
    limit: u32,
) -> Result<DryRun, AutomationError> {
    spec.validate()?;
    if limit == 0 || limit > MAX_DRY_RUN {
        return Err(AutomationError::Invalid(format!(
            "limit must be 1–{MAX_DRY_RUN}"
        )));
    }
    let (count, ids) = match profile {
        Some(p) => (1, vec![p]),
        None => candidates(db, spec, i64::from(limit)).await?,
    };
    let now = Utc::now();
    let mut conn = db.acquire().await?;
    let quiet = plan::quiet_until(&mut conn, policy, now).await?;
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        let input = RunInput {
            automation_id,
            spec,
            run_id: Uuid::nil(),
            profile_id: id,
            occurrence: "dry-run",
            // The wait is taken as over: its event is looked for from now on (none).
            triggered_at: now,
            context: &Value::Null,
        };
        // Quiet hours are reported on each message instead of holding the whole run,
        // so the preview still shows what would be sent.
        let verdict = plan::judge(&mut conn, policy, &input, now, false).await?;
        let display_name: Option<String> =
            sqlx::query_scalar("SELECT display_name FROM customer_profile WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .flatten();
        let (outcome, actions) = match verdict {
            Verdict::Hold { .. } => (RunOutcome::Acted, Vec::new()),
            // Not acting (held out, exited, conditions, erased): no actions; the
            // outcome says why.
            Verdict::Finish {
                outcome, actions, ..
            } => (
                outcome,
                actions
                    .into_iter()
                    .map(|a| {
                        let mut d = DryRunAction {
                            channel: a.channel,
                            status: a.status,
                            detail: a.detail,
                            rendered: a.rendered,
                        };
                        if let (Some(until), SendChannel::Whatsapp, SendStatus::Queued) =
                            (quiet, d.channel, d.status)
                        {
                            match spec.guardrails.quiet_hours {
                                QuietHours::Hold => {
                                    d.detail = Some(format!("held for quiet hours until {until}"));
                                }
                                QuietHours::Skip => {
                                    d.status = SendStatus::QuietHoursSkipped;
                                    d.detail = Some(format!("quiet hours until {until}"));
                                }
                            }
                        }
                        d
                    })
                    .collect(),
            ),
        };
        items.push(DryRunItem {
            profile_id: id,
            display_name,
            outcome,
            actions,
        });
    }
    Ok(DryRun {
        candidates: count,
        items,
    })
}
