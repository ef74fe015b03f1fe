//! The model registry (`/models`): what each version predicts, how it scored, and
//! which one serves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

names! {
    /// What a model predicts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum ModelTask("model task") {
        /// Churn probability.
        Churn = "churn",
        /// Predicted lifetime value.
        Ltv = "ltv",
        /// Customer segment.
        Segment = "segment",
        /// Product recommendations.
        Recommend = "recommend",
    }
}

impl ModelTask {
    /// The metric (a key of a version's `metrics`) that decides which version of the
    /// task serves; higher is better except where [`ModelTask::lower_is_better`] says
    /// otherwise.
    pub fn main_metric(self) -> &'static str {
        match self {
            ModelTask::Churn => "roc_auc",
            ModelTask::Ltv => "mae",
            ModelTask::Segment => "silhouette",
            ModelTask::Recommend => "recall_at_10",
        }
    }

    /// Whether a lower main metric is the better one (an error, such as LTV's mean
    /// absolute error); margins on such a metric are relative.
    pub fn lower_is_better(self) -> bool {
        matches!(self, ModelTask::Ltv)
    }

    /// The main metric of a model no better than chance, if the task has one: a
    /// version must beat it to serve. (LTV's chance is data-dependent: a constant
    /// forecast, recorded as a baseline.)
    pub fn chance_level(self) -> Option<f64> {
        match self {
            ModelTask::Churn => Some(0.5),
            ModelTask::Ltv | ModelTask::Segment | ModelTask::Recommend => None,
        }
    }

    /// How people call the main metric.
    pub fn main_metric_label(self) -> &'static str {
        match self {
            ModelTask::Churn => "ROC-AUC",
            ModelTask::Ltv => "MAE",
            ModelTask::Segment => "silhouette",
            ModelTask::Recommend => "recall@10",
        }
    }
}

names! {
    /// Registry status of a model version.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum ModelStatus("model status") {
        /// Trained, not (yet) serving.
        Candidate = "candidate",
        /// Serving its task.
        Active = "active",
        /// Served before, replaced.
        Retired = "retired",
        /// Worse than the active model; never served.
        Rejected = "rejected",
    }
}

/// `GET /models` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct ModelQuery {
    /// Only models of this task.
    #[serde(default)]
    pub task: Option<ModelTask>,
    /// Only models in this status.
    #[serde(default)]
    pub status: Option<ModelStatus>,
    /// Cursor from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page (1–200, default 50).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    pub limit: Option<u32>,
}

/// A model version of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelVersionView {
    /// Model version id.
    pub id: Uuid,
    /// What the model predicts.
    pub task: ModelTask,
    /// Algorithm (`lightgbm`, `kmeans`, `item2vec`, ...).
    pub algorithm: String,
    /// Training parameters.
    pub params: serde_json::Value,
    /// Feature-set version it was trained on.
    pub feature_set_version: i32,
    /// Start of the training data window.
    #[serde(default)]
    pub data_window_start: Option<DateTime<Utc>>,
    /// End of the training data window.
    #[serde(default)]
    pub data_window_end: Option<DateTime<Utc>>,
    /// Training rows.
    pub train_rows: i32,
    /// Test rows.
    pub test_rows: i32,
    /// Evaluation metrics (accuracy, roc_auc, rmse, silhouette, recall_at_10, ...).
    pub metrics: serde_json::Value,
    /// Registry status.
    pub status: ModelStatus,
    /// Why it has that status: what it beat or failed to beat (chance, the baselines,
    /// the active version), too little data, or a manual activation.
    #[serde(default)]
    pub status_reason: Option<String>,
    /// When it was trained and registered.
    pub created_at: DateTime<Utc>,
    /// Made active.
    #[serde(default)]
    pub activated_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ModelTask::ALL {
            assert_eq!(t.as_str().parse::<ModelTask>().unwrap(), t);
        }
        for s in ModelStatus::ALL {
            assert_eq!(s.as_str().parse::<ModelStatus>().unwrap(), s);
        }
    }
}

/// `GET /profiles/{id}/recommendations` and `GET /products/{sku}/similar` parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct RecommendationQuery {
    /// How many products (1–10, default 10).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 10))]
    pub k: Option<u32>,
}

/// The products recommended to a profile by the active `recommend` model, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileRecommendations {
    /// The live profile (a merged-away id resolves to its survivor).
    pub profile_id: Uuid,
    /// The model version that scored it; `None` when it was never scored.
    pub model_version_id: Option<Uuid>,
    /// When it was scored.
    pub scored_at: Option<DateTime<Utc>>,
    /// The products, best first, each with its reason.
    pub items: Vec<crate::profile::Recommendation>,
}

/// A product similar to another, by the active `recommend` model's item vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SimilarProduct {
    /// Product SKU.
    pub sku: String,
    /// Product name (the SKU when the catalogue has none).
    pub name: String,
    /// Product category, when known.
    pub category: Option<String>,
    /// Cosine similarity of the two products' vectors (−1 to 1).
    pub similarity: f64,
}

/// `GET /products/{sku}/similar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SimilarProducts {
    /// The product asked about.
    pub sku: String,
    /// The active model version whose vectors answered.
    pub model_version_id: Uuid,
    /// Most similar first.
    pub items: Vec<SimilarProduct>,
}
