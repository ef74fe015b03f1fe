//! The ML jobs as the fleet runs them, over Postgres and Redis: train every model and
//! register it, and score profiles (features → feature store → predictions → cache
//! invalidation). `ctl ml` and ml-inference call these; the maths lives in
//! [`crate::train`] and [`crate::scoring`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use config::ml::MlSettings;
use redis::aio::ConnectionManager;
use serde_json::json;
use sqlx::PgPool;
use storage::customer360::Customer360Cache;
use uuid::Uuid;

use crate::MlError;
use crate::features::{self, FEATURE_NAMES, FEATURE_SET_VERSION};
use crate::history::ProfileHistory;
use crate::registry::{self, Decision, NewModelVersion, Task};
use crate::scoring::ActiveModels;
use crate::store;
use crate::train::{self, TrainOptions, TrainedModels};

/// Profiles read per query when loading everyone.
const PAGE: i64 = 2_000;

/// Histories of every live profile, up to `until` when given.
pub async fn load_all_histories(
    db: &PgPool,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<ProfileHistory>, MlError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let ids = store::live_profiles(db, after, PAGE).await?;
        let Some(last) = ids.last().copied() else {
            break;
        };
        out.extend(store::load_histories(db, &ids, until).await?);
        after = Some(last);
    }
    Ok(out)
}

/// One model registered by a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredModel {
    /// Task.
    pub task: Task,
    /// Its new registry id.
    pub version_id: Uuid,
    /// Whether it became active.
    pub decision: Decision,
    /// Its metrics.
    pub metrics: serde_json::Value,
}

/// What [`train_and_register`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingRun {
    /// Profiles read.
    pub profiles: usize,
    /// The models, churn, LTV and segments in that order.
    pub models: Vec<RegisteredModel>,
}

/// The registry rows of a training run's three models.
pub fn model_versions(
    trained: &TrainedModels,
    opts: &TrainOptions,
) -> Result<Vec<NewModelVersion>, MlError> {
    let window_end = Some(opts.as_of);
    let split = json!({
        "horizon_days": opts.horizon_days,
        "train_cutoff": trained.train_cutoff,
        "test_cutoff": trained.test_cutoff,
        "features": FEATURE_NAMES,
    });
    let with = |mut base: serde_json::Value, extra: serde_json::Value| {
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        base
    };
    let rows = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    Ok(vec![
        NewModelVersion {
            task: Task::Churn,
            algorithm: "lightgbm".into(),
            params: with(
                json!({"lightgbm": trained.churn_params.to_lightgbm()}),
                split.clone(),
            ),
            feature_set_version: FEATURE_SET_VERSION,
            data_window_start: trained.data_start,
            data_window_end: window_end,
            train_rows: rows(
                trained.churn_report.train_rows + trained.churn_report.validation_rows,
            ),
            test_rows: rows(trained.test_rows),
            metrics: serde_json::to_value(&trained.churn_report)?,
            artefact: trained.churn.model.to_text()?,
        },
        NewModelVersion {
            task: Task::Ltv,
            algorithm: "lightgbm".into(),
            params: with(json!({"lightgbm": trained.ltv_params.to_lightgbm()}), split),
            feature_set_version: FEATURE_SET_VERSION,
            data_window_start: trained.data_start,
            data_window_end: window_end,
            train_rows: rows(trained.ltv_report.train_rows),
            test_rows: rows(trained.test_rows),
            metrics: serde_json::to_value(&trained.ltv_report)?,
            artefact: trained.ltv.to_text()?,
        },
        NewModelVersion {
            task: Task::Segment,
            algorithm: "kmeans".into(),
            params: json!({
                "k_min": opts.segments_min,
                "k_max": opts.segments_max,
                "seed": opts.seed,
                "inputs": ["recency_days", "frequency", "monetary_total"],
                "transform": "ln(1+x), standardised",
                "as_of": opts.as_of,
            }),
            feature_set_version: FEATURE_SET_VERSION,
            data_window_start: trained.data_start,
            data_window_end: window_end,
            train_rows: rows(trained.segment_metrics.rows),
            test_rows: 0,
            metrics: serde_json::to_value(&trained.segment_metrics)?,
            artefact: trained.segments.to_artefact(),
        },
    ])
}

/// Trains churn, LTV and segments on every live profile's history up to `as_of` and
/// registers them (each activated or kept as a candidate by the registry's rule).
pub async fn train_and_register(
    db: &PgPool,
    settings: &MlSettings,
    as_of: DateTime<Utc>,
) -> Result<TrainingRun, MlError> {
    let histories = load_all_histories(db, Some(as_of)).await?;
    let profiles = histories.len();
    let opts = TrainOptions {
        as_of,
        horizon_days: settings.churn_horizon_days,
        seed: settings.ml_seed,
        segments_min: settings.ml_segments_min,
        segments_max: settings.ml_segments_max,
    };
    let versions = tokio::task::spawn_blocking(move || {
        let trained = train::train_all(&histories, &opts)?;
        model_versions(&trained, &opts)
    })
    .await
    .map_err(|e| MlError::Task(e.to_string()))??;
    let mut models = Vec::new();
    for v in &versions {
        let (version_id, decision) =
            registry::register(db, v, settings.ml_activation_tolerance).await?;
        tracing::info!(task = %v.task, %version_id, ?decision, metrics = %v.metrics, "model registered");
        models.push(RegisteredModel {
            task: v.task,
            version_id,
            decision,
            metrics: v.metrics.clone(),
        });
    }
    Ok(TrainingRun { profiles, models })
}

/// What to do with the Customer 360 documents of re-scored profiles.
#[derive(Clone, Copy)]
pub enum CacheUpdate<'a> {
    /// Rebuild and re-cache each document now (online scoring: the next read is fast
    /// and already shows the new predictions).
    Refresh(&'a Customer360Cache),
    /// Drop the cached documents; readers rebuild them on demand (bulk re-scoring,
    /// where rebuilding every document eagerly would cost more than it saves).
    Invalidate,
}

/// Scores `ids` (resolved to live profiles) with `models` as of `as_of`: writes their
/// features and predictions, then updates their Customer 360 cache. Returns the number
/// of live profiles scored.
pub async fn score_profiles(
    db: &PgPool,
    redis: &mut ConnectionManager,
    prefix: &str,
    models: &Arc<ActiveModels>,
    ids: &[Uuid],
    as_of: DateTime<Utc>,
    cache: CacheUpdate<'_>,
) -> Result<usize, MlError> {
    let live = store::resolve_live(db, ids).await?;
    if live.is_empty() {
        return Ok(0);
    }
    let histories = store::load_histories(db, &live, Some(as_of)).await?;
    let scorer = Arc::clone(models);
    let (rows, predictions) = tokio::task::spawn_blocking(move || {
        let rows: Vec<_> = histories
            .iter()
            .map(|h| (h.profile_id, features::compute(h, as_of)))
            .collect();
        let predictions = scorer.score(&rows)?;
        Ok::<_, MlError>((rows, predictions))
    })
    .await
    .map_err(|e| MlError::Task(e.to_string()))??;
    store::save_features(db, redis, prefix, &rows, as_of).await?;
    store::save_predictions(db, &predictions).await?;
    match cache {
        CacheUpdate::Refresh(c360) => {
            for id in &live {
                c360.refresh(*id)
                    .await
                    .map_err(|e| MlError::Cache(e.to_string()))?;
            }
        }
        CacheUpdate::Invalidate => store::invalidate_customer360(redis, prefix, &live).await?,
    }
    Ok(live.len())
}

/// Scores every live profile in batches of `batch_size`, invalidating their cached
/// Customer 360 documents. Returns how many.
pub async fn score_all(
    db: &PgPool,
    redis: &mut ConnectionManager,
    prefix: &str,
    models: &Arc<ActiveModels>,
    batch_size: usize,
    as_of: DateTime<Utc>,
) -> Result<usize, MlError> {
    let mut after = None;
    let mut scored = 0;
    loop {
        let ids = store::live_profiles(db, after, batch_size.max(1) as i64).await?;
        let Some(last) = ids.last().copied() else {
            break;
        };
        scored += score_profiles(
            db,
            redis,
            prefix,
            models,
            &ids,
            as_of,
            CacheUpdate::Invalidate,
        )
        .await?;
        after = Some(last);
    }
    Ok(scored)
}

/// Loads the active models from the registry.
pub async fn load_active(db: &PgPool) -> Result<ActiveModels, MlError> {
    ActiveModels::from_versions(&registry::active(db).await?)
}
