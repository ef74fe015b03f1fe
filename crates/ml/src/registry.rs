//! The model registry (`model_version`): every training run's models with their
//! parameters, data window, metrics and artefact, and which one per task is active.
//!
//! Activation rule: a new version becomes active when there is no active version, or
//! when its main metric (churn ROC-AUC, LTV R², segment silhouette) is at least the
//! active one's minus `ML_ACTIVATION_TOLERANCE`; otherwise it stays a candidate. The
//! replaced version is `retired`, so `ctl ml activate --rollback TASK` can bring back
//! the most recently retired one. Registration and activation serialise per task on a
//! transaction-scoped advisory lock, and a unique index allows one active row per task,
//! so two trainers finishing together cannot both win.

use chrono::{DateTime, Utc};
use domain::api::ModelStatus;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::MlError;

/// What a model predicts: the API's [`domain::api::ModelTask`] (one definition for the
/// registry, the API and the dashboard), named `Task` in this crate. Its `main_metric`
/// decides activation.
pub use domain::api::ModelTask as Task;

/// A model version to register.
#[derive(Debug, Clone, PartialEq)]
pub struct NewModelVersion {
    /// Task.
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
    /// Id.
    pub id: Uuid,
    /// Task.
    pub task: Task,
    /// Algorithm.
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
    /// Metrics.
    pub metrics: serde_json::Value,
    /// The artefact.
    pub artefact: String,
    /// Candidate, active, retired or rejected.
    pub status: ModelStatus,
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The new version is active; `replaced` was active before.
    Activated {
        /// The previously active version, now retired.
        replaced: Option<Uuid>,
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

/// The activation rule: activate unless an active model's main metric beats the new
/// one's by more than `tolerance` (a missing new metric never beats a present one).
pub fn should_activate(
    new_metric: Option<f64>,
    active_metric: Option<f64>,
    tolerance: f64,
) -> bool {
    match (new_metric, active_metric) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(new), Some(active)) => new >= active - tolerance,
    }
}

const COLUMNS: &str = "id, task, algorithm, params, feature_set_version, data_window_start, data_window_end, \
                       train_rows, test_rows, metrics, artefact, status, created_at, activated_at";

type Row = (
    Uuid,
    String,
    String,
    serde_json::Value,
    i32,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    i32,
    i32,
    serde_json::Value,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn from_row(r: Row) -> Result<ModelVersion, MlError> {
    Ok(ModelVersion {
        id: r.0,
        task: r.1.parse()?,
        algorithm: r.2,
        params: r.3,
        feature_set_version: r.4,
        data_window_start: r.5,
        data_window_end: r.6,
        train_rows: r.7,
        test_rows: r.8,
        metrics: r.9,
        artefact: r.10,
        status: r.11.parse()?,
        created_at: r.12,
        activated_at: r.13,
    })
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

/// Stores `new` and activates it if the rule allows (see the module doc).
pub async fn register(
    db: &PgPool,
    new: &NewModelVersion,
    tolerance: f64,
) -> Result<(Uuid, Decision), MlError> {
    let mut tx = db.begin().await?;
    lock_task(&mut tx, new.task).await?;
    let active = active_in(&mut tx, new.task).await?;
    let new_metric = main_metric(new.task, &new.metrics);
    let active_metric = active.as_ref().and_then(|(_, m)| main_metric(new.task, m));
    let activate = should_activate(new_metric, active_metric, tolerance);
    let id = Uuid::now_v7();
    if activate {
        sqlx::query(
            "UPDATE model_version SET status = 'retired' WHERE task = $1 AND status = 'active'",
        )
        .bind(new.task.as_str())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO model_version (id, task, algorithm, params, feature_set_version, data_window_start, \
           data_window_end, train_rows, test_rows, metrics, artefact, status, activated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, CASE WHEN $12 = 'active' THEN now() END)",
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
    .bind(if activate { "active" } else { "candidate" })
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let decision = match (activate, active) {
        (true, active) => Decision::Activated {
            replaced: active.map(|(id, _)| id),
        },
        (false, Some((active, _))) => Decision::Candidate {
            active,
            active_metric: active_metric.unwrap_or(f64::NAN),
            new_metric: new_metric.unwrap_or(f64::NAN),
        },
        (false, None) => unreachable!("should_activate is true without an active version"),
    };
    Ok((id, decision))
}

/// Makes version `id` active for its task, retiring the active one (manual activation
/// and rollback). Returns the task and the replaced version.
pub async fn activate(db: &PgPool, id: Uuid) -> Result<(Task, Option<Uuid>), MlError> {
    let mut tx = db.begin().await?;
    let task: Option<String> = sqlx::query_scalar("SELECT task FROM model_version WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let task: Task = task
        .ok_or_else(|| MlError::NotFound(format!("model version {id}")))?
        .parse()?;
    lock_task(&mut tx, task).await?;
    let active = active_in(&mut tx, task).await?.map(|(a, _)| a);
    if active == Some(id) {
        return Ok((task, None));
    }
    sqlx::query(
        "UPDATE model_version SET status = 'retired' WHERE task = $1 AND status = 'active'",
    )
    .bind(task.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE model_version SET status = 'active', activated_at = now() WHERE id = $1")
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
        "SELECT {COLUMNS} FROM model_version WHERE status = 'active' ORDER BY task"
    ))
    .fetch_all(db)
    .await?;
    rows.into_iter().map(from_row).collect()
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

/// The most recent versions (of one task, or all), newest first.
pub async fn list(
    db: &PgPool,
    task: Option<Task>,
    limit: i64,
) -> Result<Vec<ModelVersion>, MlError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM model_version WHERE ($1::text IS NULL OR task = $1) \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    ))
    .bind(task.map(Task::as_str))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// One version by id.
pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<ModelVersion>, MlError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM model_version WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.map(from_row).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_rule() {
        assert!(
            should_activate(Some(0.7), None, 0.005),
            "first model always wins"
        );
        assert!(should_activate(None, None, 0.005));
        assert!(
            should_activate(Some(0.80), Some(0.80), 0.005),
            "equal is good enough"
        );
        assert!(
            should_activate(Some(0.797), Some(0.80), 0.005),
            "within tolerance"
        );
        assert!(
            !should_activate(Some(0.79), Some(0.80), 0.005),
            "worse beyond tolerance"
        );
        assert!(
            !should_activate(None, Some(0.80), 0.005),
            "no metric never replaces one"
        );
        for t in Task::ALL {
            assert_eq!(t.as_str().parse::<Task>().unwrap(), t);
        }
        assert!("forecast".parse::<Task>().is_err());
    }
}
