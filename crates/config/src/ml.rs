//! Settings of training and scoring (ml-inference and `ctl ml`).

use serde::{Deserialize, Serialize};

/// Machine learning settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlSettings {
    /// Days after the cutoff that define churn (no order) and future LTV (spend).
    pub churn_horizon_days: u32,
    /// Hours between scheduled retrains; 0 turns the schedule off.
    pub ml_retrain_interval_hours: u32,
    /// Seed for every random choice in training, so runs are reproducible.
    pub ml_seed: u64,
    /// Profiles scored per batch.
    pub ml_batch_size: usize,
    /// How far behind the active model's main metric a candidate may be and still be
    /// activated (a share of it for LTV's MAE, where lower is better).
    pub ml_activation_tolerance: f64,
    /// By how much a new model's main metric (churn ROC-AUC; LTV MAE, as a share) must
    /// beat chance and each baseline (recency, BG/NBD, Gamma-Gamma × BG/NBD, past spend
    /// rate, a constant forecast) on its cross-fitted evaluation to serve.
    pub ml_baseline_margin: f64,
    /// Calibrated churn probability from which a buyer is in the `high` risk tier.
    pub ml_churn_tier_high: f64,
    /// Calibrated churn probability from which a buyer is in the `medium` risk tier
    /// (below it: `low`).
    pub ml_churn_tier_medium: f64,
    /// Fewest customer segments KMeans tries (k is chosen by silhouette).
    pub ml_segments_min: usize,
    /// Most customer segments KMeans tries (at most 8: one per business name).
    pub ml_segments_max: usize,
}

impl MlSettings {
    pub(crate) fn defaults() -> Self {
        Self {
            churn_horizon_days: 90,
            ml_retrain_interval_hours: 24,
            ml_seed: 42,
            ml_batch_size: 512,
            ml_activation_tolerance: 0.005,
            ml_baseline_margin: 0.005,
            ml_churn_tier_high: 0.7,
            ml_churn_tier_medium: 0.4,
            ml_segments_min: 4,
            ml_segments_max: 8,
        }
    }
}
