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
    /// Profiles scored per batch: bulk re-scoring's page, and the most
    /// `predictions.requests` entries online scoring reads and scores at once (a burst's
    /// requests coalesce into batches this large; at low rates batches stay as small as
    /// what arrived).
    pub ml_batch_size: usize,
    /// Relative change of a score (churn probability, LTV) below which a re-score keeps
    /// the stored prediction: no `predictions` write, no `profiles.changes` entry, no
    /// Customer 360 rebuild. Labels, models and scoreless details are compared exactly.
    /// 0 writes every change.
    pub ml_prediction_tolerance: f64,
    /// Entries waiting in `events.raw` or `events.normalized` (undelivered plus pending,
    /// of their deepest consumer group) above which online scoring waits for the
    /// pipeline to drain before it scores; 0 never waits.
    pub ml_defer_backlog: u64,
    /// Longest a prediction request waits because of such a backlog, in milliseconds
    /// (counted from its publication); it is scored then whatever the backlog. Kept below
    /// half of `STREAM_CLAIM_IDLE_MS`, so a waiting batch is never claimed by a replica.
    pub ml_defer_max_ms: u64,
    /// Most threads LightGBM uses in ml-inference (online scoring and its scheduled
    /// retraining); 0: every core. One is fastest per CPU second on a busy machine.
    pub ml_lightgbm_threads: u32,
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
            ml_prediction_tolerance: 0.001,
            ml_defer_backlog: 2_000,
            ml_defer_max_ms: 10_000,
            ml_lightgbm_threads: 1,
            ml_activation_tolerance: 0.005,
            ml_baseline_margin: 0.005,
            ml_churn_tier_high: 0.7,
            ml_churn_tier_medium: 0.4,
            ml_segments_min: 4,
            ml_segments_max: 8,
        }
    }
}
