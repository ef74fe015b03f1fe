//! The model registry's rows (`model_version`) as the API shows them: one row type and
//! one column list, read by the api-gateway's model endpoints and by `ml::registry`
//! (which adds the artefact). Task and status decode through [`Named`], so a name the
//! code does not know is an error, never a silently skipped row.

use chrono::{DateTime, Utc};
use domain::api::{ModelStatus, ModelTask, ModelVersionView};
use uuid::Uuid;

use crate::Named;

/// The columns [`ModelVersionRow`] reads, in its order (everything but the artefact,
/// which can be megabytes of model text).
pub const COLUMNS: &str = "id, task, algorithm, params, feature_set_version, \
     data_window_start, data_window_end, train_rows, test_rows, metrics, status, \
     status_reason, created_at, activated_at";

/// One `model_version` row without its artefact.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ModelVersionRow {
    /// `model_version.id`.
    pub id: Uuid,
    /// What the model predicts.
    pub task: Named<ModelTask>,
    /// `lightgbm`, `kmeans`, or a baseline's name.
    pub algorithm: String,
    /// Hyper-parameters and training settings (JSON).
    pub params: sqlx::types::Json<serde_json::Value>,
    /// Version of the feature set it was trained on.
    pub feature_set_version: i32,
    /// Earliest fact used for training.
    pub data_window_start: Option<DateTime<Utc>>,
    /// End of the training data.
    pub data_window_end: Option<DateTime<Utc>>,
    /// Rows it was trained on.
    pub train_rows: i32,
    /// Rows it was evaluated on.
    pub test_rows: i32,
    /// Evaluation metrics, baselines included (JSON).
    pub metrics: sqlx::types::Json<serde_json::Value>,
    /// Registry status.
    pub status: Named<ModelStatus>,
    /// Why it has that status.
    pub status_reason: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it was last made active.
    pub activated_at: Option<DateTime<Utc>>,
}

impl From<ModelVersionRow> for ModelVersionView {
    fn from(r: ModelVersionRow) -> Self {
        ModelVersionView {
            id: r.id,
            task: r.task.0,
            algorithm: r.algorithm,
            params: r.params.0,
            feature_set_version: r.feature_set_version,
            data_window_start: r.data_window_start,
            data_window_end: r.data_window_end,
            train_rows: r.train_rows,
            test_rows: r.test_rows,
            metrics: r.metrics.0,
            status: r.status.0,
            status_reason: r.status_reason,
            created_at: r.created_at,
            activated_at: r.activated_at,
        }
    }
}
