//! The model registry (`model_version`): every training run's models with their
//! parameters, data window, metrics and artefact, and which one per task is active.
//!
//! Activation rule, in two steps ([`judge`], then [`should_activate`]):
//!
//! 1. **The gate.** A version must beat chance (churn: the lower end of its ROC-AUC
//!    interval above 0.5) and every baseline recorded in its metrics
//!    (`metrics.baselines.<name>.<main metric>`: recency and BG/NBD for churn;
//!    BG/NBD × Gamma-Gamma, the past spend rate and a constant forecast — LTV's
//!    chance — for LTV; whatever a future task lists) by `ML_BASELINE_MARGIN` on its
//!    main metric (for LTV's MAE, where lower is better, by that share of theirs). A version that fails, or was
//!    trained on too little data, is `rejected` and never serves; the training run
//!    then offers the best baseline instead (see [`crate::pipeline`]).
//! 2. **The active version.** A version that passed becomes active when there is no
//!    active version, or when its main metric (churn ROC-AUC, LTV MAE, segment
//!    silhouette) is within `ML_ACTIVATION_TOLERANCE` of the active one's (relative
//!    for the MAE);
//!    otherwise it stays a candidate. The replaced version is `retired`, so
//!    `ctl ml activate --rollback TASK` can bring back the most recently retired one.
//!
//! Every version records why it has its status (`status_reason`), which the API and the
//! Models page show. Registration and activation serialise per task on a
//! transaction-scoped advisory lock, and a unique index allows one active row per task,
//! so two trainers finishing together cannot both win.

use chrono::{DateTime, Utc};
use domain::api::ModelStatus;
use sqlx::{PgPool, Postgres, Transaction};
use storage::models::{COLUMNS, ModelVersionRow};
use uuid::Uuid;

use crate::MlError;

/// What a model predicts: the API's [`domain::api::ModelTask`] (one definition for the
/// registry, the API and the dashboard), named `Task` in this crate. Its `main_metric`
/// decides activation.
pub use domain::api::ModelTask as Task;

/// A model version to register.
#[derive(Debug, Clone, PartialEq)]
pub struct NewModelVersion {
    /// What the model predicts.
    pub task: Task,
    /// Algorithm, e.g. `lightgbm` or `kmeans`.
    pub algorithm: String,
    /// Hyper-parameters and training settings.
    pub params: serde_json::Value,
    /// Feature set the model reads.
    pub feature_set_version: i32,
    /// Earliest fact used.
    pub data_window_start: Option<DateTime<Utc>>,
    /// End of the data used.
    pub data_window_end: Option<DateTime<Utc>>,
    /// Training rows.
    pub train_rows: i32,
    /// Test rows.
    pub test_rows: i32,
    /// Metrics (must contain the task's main metric to compete for activation).
    pub metrics: serde_json::Value,
    /// LightGBM model text, or segment centroids JSON.
    pub artefact: String,
}

/// A stored model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    /// `model_version.id`.
    pub id: Uuid,
    /// What the model predicts.
    pub task: Task,
    /// Algorithm: `lightgbm`, `kmeans`, or the baseline offered in a rejected model's place.
    pub algorithm: String,
    /// Hyper-parameters and training settings.
    pub params: serde_json::Value,
    /// Feature set version.
    pub feature_set_version: i32,
    /// Earliest fact used.
    pub data_window_start: Option<DateTime<Utc>>,
    /// End of the data used.
    pub data_window_end: Option<DateTime<Utc>>,
    /// Training rows.
    pub train_rows: i32,
    /// Test rows.
    pub test_rows: i32,
    /// Evaluation metrics, the task's main metric and the baselines' included.
    pub metrics: serde_json::Value,
    /// LightGBM model text, or segment centroids JSON: what scoring loads.
    pub artefact: String,
    /// Candidate, active, retired or rejected.
    pub status: ModelStatus,
    /// Why it has that status.
    pub status_reason: Option<String>,
    /// When registered.
    pub created_at: DateTime<Utc>,
    /// When last activated.
    pub activated_at: Option<DateTime<Utc>>,
}

impl ModelVersion {
    /// The value of the task's main metric, if recorded and finite.
    pub fn main_metric(&self) -> Option<f64> {
        main_metric(self.task, &self.metrics)
    }
}

fn main_metric(task: Task, metrics: &serde_json::Value) -> Option<f64> {
    metrics[task.main_metric()]
        .as_f64()
        .filter(|v| v.is_finite())
}

/// What registration decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The new version is active; `replaced` was active before.
    Activated {
        /// The previously active version, now retired.
        replaced: Option<Uuid>,
    },
    /// The new version failed the gate (no better than chance or a baseline, or too
    /// little data) and will never serve.
    Rejected {
        /// Why, in words.
        reason: String,
    },
    /// The new version stays a candidate: the active one is better by more than the
    /// tolerance.
    Candidate {
        /// The active version.
        active: Uuid,
        /// Its main metric.
        active_metric: f64,
        /// The new version's main metric (`NaN` if missing).
        new_metric: f64,
    },
}

/// What the activation gate needs to know.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationPolicy {
    /// How far below the active version's main metric a new one may be and still
    /// replace it.
    pub tolerance: f64,
    /// By how much a new version's main metric must beat chance and each baseline.
    pub baseline_margin: f64,
}

/// The gate (step 1 of the module doc): `Ok` with a summary of what the version beat,
/// or `Err` with why it may not serve.
pub fn judge(task: Task, metrics: &serde_json::Value, margin: f64) -> Result<String, String> {
    if let Some(why) = metrics["not_enough_data"].as_str() {
        return Err(format!("not enough data: {why}"));
    }
    let name = task.main_metric_label();
    let Some(value) = main_metric(task, metrics) else {
        return Err(format!("no {name} was measured"));
    };
    let mut beaten = Vec::new();
    if let Some(chance) = task.chance_level() {
        // With an interval, its lower end must clear chance: a lucky estimate is not
        // evidence of skill.
        let low = metrics[format!("{}_ci", task.main_metric())]["low"]
            .as_f64()
            .unwrap_or(value);
        if low <= chance || value < chance + margin {
            return Err(format!(
                "{name} {value:.3} (interval from {low:.3}) is no better than chance ({chance})"
            ));
        }
    }
    if let Some(baselines) = metrics["baselines"].as_object() {
        for (baseline, m) in baselines {
            let Some(theirs) = m[task.main_metric()].as_f64().filter(|v| v.is_finite()) else {
                continue;
            };
            let label = baseline.replace('_', " ");
            if !beats(task, value, theirs, margin) {
                let margin = if task.lower_is_better() {
                    format!("{:.1} %", margin * 100.0)
                } else {
                    margin.to_string()
                };
                return Err(format!(
                    "{name} {value:.3} does not beat {label} ({theirs:.3}) by the margin of {margin}"
                ));
            }
            beaten.push(format!("{label} {theirs:.3}"));
        }
    }
    Ok(if beaten.is_empty() {
        format!("{name} {value:.3}")
    } else {
        format!("{name} {value:.3} beats {}", beaten.join(" and "))
    })
}

/// Whether `value` of `task`'s main metric beats `reference` by `margin`: by at least
/// `margin` where higher is better, by at least the share `margin` of `reference` where
/// lower is better (an error in currency has no absolute scale). A negative margin is a
/// tolerance.
pub fn beats(task: Task, value: f64, reference: f64, margin: f64) -> bool {
    if task.lower_is_better() {
        value <= reference * (1.0 - margin)
    } else {
        value >= reference + margin
    }
}

/// The activation rule: activate unless an active model's main metric beats the new
/// one's by more than `tolerance` (relative where lower is better; a missing new metric
/// never beats a present one).
pub fn should_activate(
    task: Task,
    new_metric: Option<f64>,
    active_metric: Option<f64>,
    tolerance: f64,
) -> bool {
    match (new_metric, active_metric) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(new), Some(active)) => beats(task, new, active, -tolerance),
    }
}

/// A full `model_version` row: what the API shows ([`storage::models`]) and the artefact.
#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    version: ModelVersionRow,
    artefact: String,
}

fn from_row(r: Row) -> ModelVersion {
    let v = r.version;
    ModelVersion {
        id: v.id,
        task: v.task.0,
        algorithm: v.algorithm,
        params: v.params.0,
        feature_set_version: v.feature_set_version,
        data_window_start: v.data_window_start,
        data_window_end: v.data_window_end,
        train_rows: v.train_rows,
        test_rows: v.test_rows,
        metrics: v.metrics.0,
        artefact: r.artefact,
        status: v.status.0,
        status_reason: v.status_reason,
        created_at: v.created_at,
        activated_at: v.activated_at,
    }
}

async fn lock_task(tx: &mut Transaction<'_, Postgres>, task: Task) -> Result<(), MlError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('model_version:' || $1))")
        .bind(task.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn active_in(
    tx: &mut Transaction<'_, Postgres>,
    task: Task,
) -> Result<Option<(Uuid, serde_json::Value)>, MlError> {
    Ok(sqlx::query_as(
        "SELECT id, metrics FROM model_version WHERE task = $1 AND status = 'active'",
    )
    .bind(task.as_str())
    .fetch_optional(&mut **tx)
    .await?)
}

/// Stores `new` and activates it if the gate and the rule allow (see the module doc).
pub async fn register(
    db: &PgPool,
    new: &NewModelVersion,
    policy: ActivationPolicy,
) -> Result<(Uuid, Decision), MlError> {
    let mut tx = db.begin().await?;
    lock_task(&mut tx, new.task).await?;
    let active = active_in(&mut tx, new.task).await?;
    let new_metric = main_metric(new.task, &new.metrics);
    let active_metric = active.as_ref().and_then(|(_, m)| main_metric(new.task, m));
    let id = Uuid::now_v7();
    let name = new.task.main_metric_label();
    let (decision, reason) = match judge(new.task, &new.metrics, policy.baseline_margin) {
        Err(reason) => (
            Decision::Rejected {
                reason: reason.clone(),
            },
            reason,
        ),
        Ok(beaten) if should_activate(new.task, new_metric, active_metric, policy.tolerance) => {
            let replaced = active.as_ref().map(|(id, _)| *id);
            let reason = match (replaced, active_metric) {
                (Some(old), Some(m)) => format!("{beaten}; replaces {old} ({name} {m:.3})"),
                (Some(old), None) => format!("{beaten}; replaces {old}"),
                (None, _) => beaten,
            };
            (Decision::Activated { replaced }, reason)
        }
        Ok(beaten) => {
            let (active_id, active_metric) = (
                active
                    .as_ref()
                    .map(|(id, _)| *id)
                    .expect("should_activate is true without an active version"),
                active_metric.unwrap_or(f64::NAN),
            );
            let reason = format!(
                "{beaten}, but the active version {active_id} has {name} {active_metric:.3} \
                 (more than {} better)",
                policy.tolerance
            );
            (
                Decision::Candidate {
                    active: active_id,
                    active_metric,
                    new_metric: new_metric.unwrap_or(f64::NAN),
                },
                reason,
            )
        }
    };
    let status = match decision {
        Decision::Activated { .. } => {
            sqlx::query(
                "UPDATE model_version SET status = 'retired', status_reason = $2 \
                 WHERE task = $1 AND status = 'active'",
            )
            .bind(new.task.as_str())
            .bind(format!("replaced by {id}"))
            .execute(&mut *tx)
            .await?;
            "active"
        }
        Decision::Candidate { .. } => "candidate",
        Decision::Rejected { .. } => "rejected",
    };
    sqlx::query(
        "INSERT INTO model_version (id, task, algorithm, params, feature_set_version, data_window_start, \
           data_window_end, train_rows, test_rows, metrics, artefact, status, status_reason, activated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, CASE WHEN $12 = 'active' THEN now() END)",
    )
    .bind(id)
    .bind(new.task.as_str())
    .bind(&new.algorithm)
    .bind(&new.params)
    .bind(new.feature_set_version)
    .bind(new.data_window_start)
    .bind(new.data_window_end)
    .bind(new.train_rows)
    .bind(new.test_rows)
    .bind(&new.metrics)
    .bind(&new.artefact)
    .bind(status)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((id, decision))
}

/// Makes version `id` active for its task, retiring the active one (manual activation
/// and rollback). Returns the task and the replaced version. A rejected version (no
/// better than chance or a baseline, or no model at all) cannot be activated.
pub async fn activate(db: &PgPool, id: Uuid) -> Result<(Task, Option<Uuid>), MlError> {
    let mut tx = db.begin().await?;
    let row: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT task, status, status_reason FROM model_version WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (task, status, reason) =
        row.ok_or_else(|| MlError::NotFound(format!("model version {id}")))?;
    if status == "rejected" {
        return Err(MlError::Invalid(format!(
            "model version {id} was rejected and cannot serve: {}",
            reason.unwrap_or_default()
        )));
    }
    let task: Task = task.parse()?;
    lock_task(&mut tx, task).await?;
    let active = active_in(&mut tx, task).await?.map(|(a, _)| a);
    if active == Some(id) {
        return Ok((task, None));
    }
    sqlx::query(
        "UPDATE model_version SET status = 'retired', status_reason = $2 \
         WHERE task = $1 AND status = 'active'",
    )
    .bind(task.as_str())
    .bind(format!("replaced by hand with {id}"))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE model_version SET status = 'active', activated_at = now(), \
         status_reason = 'activated by hand' WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((task, active))
}

/// Re-activates the most recently retired version of `task` (the one active before the
/// current one). Returns its id.
pub async fn rollback(db: &PgPool, task: Task) -> Result<Uuid, MlError> {
    let previous: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM model_version WHERE task = $1 AND status = 'retired' AND activated_at IS NOT NULL \
         ORDER BY activated_at DESC LIMIT 1",
    )
    .bind(task.as_str())
    .fetch_optional(db)
    .await?;
    let previous = previous
        .ok_or_else(|| MlError::NotFound(format!("no earlier {task} model to roll back to")))?;
    activate(db, previous).await?;
    Ok(previous)
}

/// The active version of every task that has one.
pub async fn active(db: &PgPool) -> Result<Vec<ModelVersion>, MlError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, artefact FROM model_version WHERE status = 'active' ORDER BY task"
    ))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// The ids of the active versions, by task (cheap: polled to notice a change).
pub async fn active_ids(db: &PgPool) -> Result<Vec<(Task, Uuid)>, MlError> {
    let rows: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT task, id FROM model_version WHERE status = 'active' ORDER BY task")
            .fetch_all(db)
            .await?;
    rows.into_iter()
        .map(|(t, id)| Ok((t.parse()?, id)))
        .collect()
}

/// Whether a training run is due regardless of the schedule: some task (churn, LTV,
/// segments) has no active version this build can serve — none yet, or one trained on
/// another feature set — and no version of it was registered in the last `within`.
pub async fn training_due(
    db: &PgPool,
    feature_set_version: i32,
    within: chrono::Duration,
) -> Result<bool, MlError> {
    let servable: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT task) FROM model_version WHERE status = 'active' \
         AND task IN ('churn', 'ltv', 'segment') \
         AND (task = 'segment' OR feature_set_version = $1)",
    )
    .bind(feature_set_version)
    .fetch_one(db)
    .await?;
    if servable == 3 {
        return Ok(false);
    }
    let recent: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM model_version WHERE created_at > now() - $1::interval)",
    )
    .bind(format!("{} seconds", within.num_seconds()))
    .fetch_one(db)
    .await?;
    Ok(!recent)
}

/// The most recent versions (of one task, or all), newest first.
pub async fn list(
    db: &PgPool,
    task: Option<Task>,
    limit: i64,
) -> Result<Vec<ModelVersion>, MlError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, artefact FROM model_version WHERE ($1::text IS NULL OR task = $1) \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    ))
    .bind(task.map(Task::as_str))
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// One version by id.
pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<ModelVersion>, MlError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, artefact FROM model_version WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(from_row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_rule() {
        let churn = Task::Churn;
        assert!(
            should_activate(churn, Some(0.7), None, 0.005),
            "first model always wins"
        );
        assert!(should_activate(churn, None, None, 0.005));
        assert!(
            should_activate(churn, Some(0.80), Some(0.80), 0.005),
            "equal is good enough"
        );
        assert!(
            should_activate(churn, Some(0.797), Some(0.80), 0.005),
            "within tolerance"
        );
        assert!(
            !should_activate(churn, Some(0.79), Some(0.80), 0.005),
            "worse beyond tolerance"
        );
        assert!(
            !should_activate(churn, None, Some(0.80), 0.005),
            "no metric never replaces one"
        );
        // LTV's main metric is an error: lower wins, the tolerance is relative.
        assert!(should_activate(Task::Ltv, Some(30.1), Some(30.0), 0.005));
        assert!(!should_activate(Task::Ltv, Some(30.2), Some(30.0), 0.005));
        assert!(should_activate(Task::Ltv, Some(20.0), Some(30.0), 0.005));
        for t in Task::ALL {
            assert_eq!(t.as_str().parse::<Task>().unwrap(), t);
        }
        assert!("forecast".parse::<Task>().is_err());
    }

    #[test]
    fn the_gate_wants_chance_and_every_baseline_beaten_by_the_margin() {
        let churn = |auc: f64, low: f64, recency: f64, bgnbd: f64| {
            serde_json::json!({
                "roc_auc": auc,
                "roc_auc_ci": {"low": low, "high": auc + 0.02},
                "baselines": {"recency": {"roc_auc": recency}, "bgnbd": {"roc_auc": bgnbd}},
            })
        };
        let ok = judge(Task::Churn, &churn(0.80, 0.78, 0.72, 0.77), 0.005).unwrap();
        assert!(
            ok.contains("recency 0.720") && ok.contains("bgnbd 0.770"),
            "{ok}"
        );
        let worse = judge(Task::Churn, &churn(0.709, 0.68, 0.727, 0.77), 0.005).unwrap_err();
        assert!(worse.contains("does not beat"), "{worse}");
        let within_margin = judge(Task::Churn, &churn(0.773, 0.75, 0.72, 0.77), 0.005);
        assert!(within_margin.is_err(), "a tie with a baseline is not a win");
        let chance = judge(Task::Churn, &churn(0.53, 0.49, 0.5, 0.5), 0.005).unwrap_err();
        assert!(chance.contains("chance"), "{chance}");
        // A task whose baselines are listed differently is judged the same way; LTV's
        // main metric, the MAE, must be lower by the margin as a share.
        let ltv = |mae: f64| {
            serde_json::json!({"mae": mae, "baselines": {
                "bgnbd_gamma_gamma": {"mae": 30.0}, "constant": {"mae": 31.0}}})
        };
        assert!(
            judge(Task::Ltv, &ltv(29.9), 0.005)
                .unwrap_err()
                .contains("bgnbd gamma gamma (30.000) by the margin of 0.5 %")
        );
        let ok = judge(Task::Ltv, &ltv(25.0), 0.005).unwrap();
        assert!(ok.starts_with("MAE 25.000 beats"), "{ok}");
        // No better than a constant forecast: no skill.
        let no_skill = serde_json::json!({"mae": 31.0, "baselines": {"constant": {"mae": 31.0}}});
        assert!(judge(Task::Ltv, &no_skill, 0.005).is_err());
        let thin = serde_json::json!({"not_enough_data": "12 customers"});
        assert_eq!(
            judge(Task::Churn, &thin, 0.005).unwrap_err(),
            "not enough data: 12 customers"
        );
        // Segments have no chance level and no baseline.
        assert!(
            judge(
                Task::Segment,
                &serde_json::json!({"silhouette": 0.1}),
                0.005
            )
            .is_ok()
        );
    }
}
