//! The `automations` rows, their runs and sends, and results.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::api::{
    AutomationResults, AutomationRunView, AutomationSendView, AutomationView, Conversions,
    FunnelStep, RenderedMessage,
};
use domain::automation::{AutomationSpec, SpecError};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

/// Why an automation operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
    /// The definition is invalid (where and why).
    #[error("invalid automation: {0}")]
    Spec(#[from] SpecError),
    /// A referenced audience does not exist, or a request is out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// No automation has this id.
    #[error("no automation {0}")]
    NotFound(Uuid),
    /// Another automation already has this name.
    #[error("an automation named {0:?} already exists")]
    NameTaken(String),
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

const COLUMNS: &str = "id, enabled, enabled_at, spec, version, created_by, created_at, updated_at";

type Row = (
    Uuid,
    bool,
    Option<DateTime<Utc>>,
    Json<AutomationSpec>,
    i64,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn view(r: Row) -> AutomationView {
    let (id, enabled, enabled_at, spec, version, created_by, created_at, updated_at) = r;
    AutomationView {
        id,
        enabled,
        enabled_at,
        spec: spec.0,
        version,
        created_by,
        created_at,
        updated_at,
    }
}

fn name_taken(e: sqlx::Error, name: &str) -> AutomationError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            AutomationError::NameTaken(name.to_owned())
        }
        _ => AutomationError::Database(e),
    }
}

async fn checked(db: &PgPool, spec: &AutomationSpec) -> Result<(), AutomationError> {
    spec.validate()?;
    let wanted = spec.referenced_audiences();
    if wanted.is_empty() {
        return Ok(());
    }
    let found: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM audiences WHERE id = ANY($1)")
        .bind(&wanted)
        .fetch_all(db)
        .await?;
    if let Some(missing) = wanted.iter().find(|w| !found.contains(w)) {
        return Err(AutomationError::Invalid(format!("no audience {missing}")));
    }
    Ok(())
}

/// Creates an automation, disabled.
pub async fn create(
    db: &PgPool,
    spec: &AutomationSpec,
    actor: &str,
) -> Result<AutomationView, AutomationError> {
    checked(db, spec).await?;
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO automations (id, name, spec, created_by) VALUES ($1, $2, $3, $4) \
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(&spec.name)
    .bind(Json(spec))
    .bind(actor)
    .fetch_one(db)
    .await
    .map_err(|e| name_taken(e, &spec.name))?;
    Ok(view(row))
}

/// Changes an automation's definition (runs already started keep going under the new
/// one: each step reads the definition when it runs).
pub async fn update(
    db: &PgPool,
    id: Uuid,
    spec: &AutomationSpec,
) -> Result<AutomationView, AutomationError> {
    checked(db, spec).await?;
    let row: Option<Row> = sqlx::query_as(&format!(
        "UPDATE automations SET name = $2, spec = $3, version = version + 1, updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&spec.name)
    .bind(Json(spec))
    .fetch_optional(db)
    .await
    .map_err(|e| name_taken(e, &spec.name))?;
    row.map(view).ok_or(AutomationError::NotFound(id))
}

/// One automation.
pub async fn get(db: &PgPool, id: Uuid) -> Result<AutomationView, AutomationError> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM automations WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?;
    row.map(view).ok_or(AutomationError::NotFound(id))
}

/// Every enabled automation.
pub async fn enabled(db: &PgPool) -> Result<Vec<AutomationView>, AutomationError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM automations WHERE enabled ORDER BY id"
    ))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(view).collect())
}

/// A page of automations by id (creation order), after `after`.
pub async fn page(
    db: &PgPool,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AutomationView>, AutomationError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM automations WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(view).collect())
}

/// Deletes an automation with its runs and sends.
pub async fn delete(db: &PgPool, id: Uuid) -> Result<(), AutomationError> {
    let done = sqlx::query("DELETE FROM automations WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(AutomationError::NotFound(id));
    }
    Ok(())
}

/// The kill switch. Enabling starts from now: only trigger occurrences after it start
/// runs (audience entries after the latest recorded change, events resolved after it).
/// Disabling cancels every waiting run at once; a run being acted on checks the switch
/// again before each provider call.
pub async fn set_enabled(
    db: &PgPool,
    id: Uuid,
    on: bool,
) -> Result<AutomationView, AutomationError> {
    let mut tx = db.begin().await?;
    let row: Option<Row> = if on {
        sqlx::query_as(&format!(
            "UPDATE automations SET enabled = TRUE, updated_at = now(), \
             enabled_at = CASE WHEN enabled THEN enabled_at ELSE now() END, \
             change_cursor = CASE WHEN enabled THEN change_cursor ELSE \
                 (SELECT COALESCE(max(id), 0) FROM audience_membership_change) END \
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    } else {
        let row = sqlx::query_as(&format!(
            "UPDATE automations SET enabled = FALSE, updated_at = now() WHERE id = $1 \
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE automation_run SET status = 'done', outcome = 'cancelled', \
             finished_at = now(), detail = 'the automation was disabled' \
             WHERE automation_id = $1 AND status = 'waiting'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        row
    };
    let row = row.ok_or(AutomationError::NotFound(id))?;
    tx.commit().await?;
    Ok(view(row))
}

type RunRow = (
    Uuid,
    Uuid,
    Uuid,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// A page of an automation's runs, newest first (by id, which is time-ordered).
pub async fn runs(
    db: &PgPool,
    automation: Uuid,
    profile: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AutomationRunView>, AutomationError> {
    let rows: Vec<RunRow> = sqlx::query_as(
        "SELECT id, automation_id, profile_id, occurrence, status, outcome, triggered_at, \
         wake_at, finished_at, detail FROM automation_run \
         WHERE automation_id = $1 AND ($2::uuid IS NULL OR profile_id = $2) \
         AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(automation)
    .bind(profile)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(AutomationRunView {
                id: r.0,
                automation_id: r.1,
                profile_id: r.2,
                occurrence: r.3,
                status: r.4.parse().map_err(invalid_row)?,
                outcome: r.5.map(|o| o.parse()).transpose().map_err(invalid_row)?,
                triggered_at: r.6,
                wake_at: r.7,
                finished_at: r.8,
                detail: r.9,
            })
        })
        .collect()
}

fn invalid_row(e: domain::source::UnknownName) -> AutomationError {
    AutomationError::Database(sqlx::Error::Decode(Box::new(e)))
}

type SendRow = (
    Uuid,
    Uuid,
    Uuid,
    Uuid,
    i32,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i32,
    Option<Json<RenderedMessage>>,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// A page of sends, newest first: of one automation, or of one profile across all
/// (`automation` none), optionally one profile's only.
pub async fn sends(
    db: &PgPool,
    automation: Option<Uuid>,
    profile: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AutomationSendView>, AutomationError> {
    let rows: Vec<SendRow> = sqlx::query_as(
        "SELECT id, run_id, automation_id, profile_id, action_index, channel, status, \
         provider_id, error_code, error_message, attempts, rendered, created_at, updated_at \
         FROM automation_send WHERE ($1::uuid IS NULL OR automation_id = $1) \
         AND ($2::uuid IS NULL OR profile_id = $2) AND ($3::uuid IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(automation)
    .bind(profile)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(AutomationSendView {
                id: r.0,
                run_id: r.1,
                automation_id: r.2,
                profile_id: r.3,
                action_index: r.4,
                channel: r.5.parse().map_err(invalid_row)?,
                status: r.6.parse().map_err(invalid_row)?,
                provider_id: r.7,
                error_code: r.8,
                error_message: r.9,
                attempts: r.10,
                rendered: r.11.map(|j| j.0),
                created_at: r.12,
                updated_at: r.13,
            })
        })
        .collect()
}

fn rate(n: i64, of: i64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// An automation's results: runs and sends counted, the funnel, conversions vs. the
/// control group within its conversion window.
pub async fn results(db: &PgPool, id: Uuid) -> Result<AutomationResults, AutomationError> {
    let a = get(db, id).await?;
    let window = a.spec.guardrails.conversion_window_hours;
    let counts = |sql: &'static str| {
        let db = db.clone();
        async move {
            let rows: Vec<(String, i64)> = sqlx::query_as(sql).bind(id).fetch_all(&db).await?;
            Ok::<BTreeMap<String, i64>, sqlx::Error>(rows.into_iter().collect())
        }
    };
    let runs_by_status = counts(
        "SELECT status, count(*) FROM automation_run WHERE automation_id = $1 GROUP BY status",
    )
    .await?;
    let runs_by_outcome = counts(
        "SELECT outcome, count(*) FROM automation_run WHERE automation_id = $1 \
         AND outcome IS NOT NULL GROUP BY outcome",
    )
    .await?;
    let sends_by_status = counts(
        "SELECT status, count(*) FROM automation_send WHERE automation_id = $1 GROUP BY status",
    )
    .await?;
    let get_s = |k: &str| sends_by_status.get(k).copied().unwrap_or(0);
    let read = get_s("read");
    let delivered = read + get_s("delivered");
    let sent = delivered + get_s("sent") + get_s("queued");
    let triggered: i64 = runs_by_status.values().sum();
    let acted = runs_by_outcome.get("acted").copied().unwrap_or(0);
    // Treated: profiles with a message the provider accepted; reference time = the
    // first acceptance. Control: held-out runs; reference time = the decision.
    let (treated, treated_converted, control, control_converted): (i64, i64, i64, i64) =
        sqlx::query_as(
            "WITH treated AS ( \
                 SELECT profile_id, min(accepted_at) AS at FROM automation_send \
                 WHERE automation_id = $1 AND accepted_at IS NOT NULL AND channel <> 'list' \
                 GROUP BY profile_id), \
             control AS ( \
                 SELECT profile_id, min(finished_at) AS at FROM automation_run \
                 WHERE automation_id = $1 AND outcome = 'held_out' GROUP BY profile_id), \
             conv AS ( \
                 SELECT 't' AS grp, t.profile_id, EXISTS (SELECT 1 FROM orders o \
                     WHERE o.profile_id = t.profile_id AND o.placed_at >= t.at \
                     AND o.placed_at < t.at + make_interval(hours => $2)) AS converted \
                 FROM treated t \
                 UNION ALL \
                 SELECT 'c', c.profile_id, EXISTS (SELECT 1 FROM orders o \
                     WHERE o.profile_id = c.profile_id AND o.placed_at >= c.at \
                     AND o.placed_at < c.at + make_interval(hours => $2)) \
                 FROM control c) \
             SELECT count(*) FILTER (WHERE grp = 't'), \
                    count(*) FILTER (WHERE grp = 't' AND converted), \
                    count(*) FILTER (WHERE grp = 'c'), \
                    count(*) FILTER (WHERE grp = 'c' AND converted) FROM conv",
        )
        .bind(id)
        .bind(i32::try_from(window).unwrap_or(i32::MAX))
        .fetch_one(db)
        .await?;
    let treated_rate = rate(treated_converted, treated);
    let control_rate = rate(control_converted, control);
    let funnel = [
        ("triggered", triggered),
        ("acted", acted),
        ("sent", sent),
        ("delivered", delivered),
        ("read", read),
        ("converted", treated_converted),
    ]
    .into_iter()
    .map(|(step, count)| FunnelStep {
        step: step.into(),
        count,
    })
    .collect();
    Ok(AutomationResults {
        automation_id: id,
        runs_by_status,
        runs_by_outcome,
        sends_by_status,
        funnel,
        conversions: Conversions {
            window_hours: window,
            treated,
            treated_converted,
            treated_rate,
            control,
            control_converted,
            control_rate,
            uplift_points: match (treated_rate, control_rate) {
                (Some(t), Some(c)) => Some((t - c) * 100.0),
                _ => None,
            },
        },
    })
}
