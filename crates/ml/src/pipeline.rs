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
use crate::calibration::Calibrator;
use crate::features::{self, FEATURE_SET_VERSION};
use crate::history::ProfileHistory;
use crate::recs::item2vec::Item2VecParams;
use crate::recs::{Catalogue, Corpus, Recommender, RecsParams, offline};
use crate::registry::{self, ActivationPolicy, Decision, NewModelVersion, Task};
use crate::scoring::{ActiveModels, ChurnArtefact, LtvArtefact, RiskTiers};
use crate::store::{self, Rewrite};
use crate::train::{self, LtvHead, TrainOptions, TrainedModels, input_names};

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
    /// What the model predicts.
    pub task: Task,
    /// Its new registry id.
    pub version_id: Uuid,
    /// Its algorithm (`lightgbm`, or a baseline offered in its place).
    pub algorithm: String,
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
    /// The models in registration order: churn, its fallback if LightGBM was rejected,
    /// LTV, its fallback, segments, recommendations.
    pub models: Vec<RegisteredModel>,
}

/// A version to register and, should the gate reject it, the baseline offered in its
/// place.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// The trained model.
    pub primary: NewModelVersion,
    /// The baseline that serves if the trained model does not beat it.
    pub fallback: Option<NewModelVersion>,
}

fn merged(mut base: serde_json::Value, extra: &serde_json::Value) -> serde_json::Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

/// The registry rows of a training run: churn and LTV (each with its baseline
/// fallback) and segments.
pub fn model_versions(trained: &TrainedModels, opts: &TrainOptions) -> Result<Vec<Offer>, MlError> {
    let rows = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let version =
        |task, algorithm: &str, params, train_rows, test_rows, metrics, artefact| NewModelVersion {
            task,
            algorithm: algorithm.into(),
            params,
            feature_set_version: FEATURE_SET_VERSION,
            data_window_start: trained.data_start,
            data_window_end: Some(opts.as_of),
            train_rows,
            test_rows,
            metrics,
            artefact,
        };
    let mut offers = Vec::new();
    match &trained.predictive {
        Ok(ev) => {
            let split = json!({
                "horizon_days": opts.horizon_days,
                "cutoff": ev.summary.cutoff,
                "rolling_cutoffs": ev.summary.rolling_cutoffs,
                "evaluation": format!("cross-fitted over {} customer folds", ev.summary.churn.folds),
                "inputs": input_names(),
            });
            let btyd = serde_json::to_value(ev.churn_model.btyd)?;
            let churn_artefact = ChurnArtefact::Lightgbm {
                btyd: ev.churn_model.btyd,
                calibrator: ev.churn_model.calibrator.clone(),
                threshold: ev.churn_model.threshold,
                model: ev.churn_model.model.to_text()?,
                stack: ev.churn_model.stack.clone(),
            };
            // The best baseline by cross-fitted ROC-AUC serves if LightGBM does not beat it.
            let recency = &ev.summary.churn.baselines.recency;
            let (name, ranked, artefact) = match &ev.summary.churn.baselines.bgnbd {
                Some(b)
                    if b.roc_auc > recency.roc_auc && ev.churn_model.bgnbd_calibrator.is_some() =>
                {
                    (
                        "bgnbd",
                        b,
                        ChurnArtefact::Bgnbd {
                            btyd: ev.churn_model.btyd,
                            calibrator: ev
                                .churn_model
                                .bgnbd_calibrator
                                .clone()
                                .unwrap_or(Calibrator::Identity),
                        },
                    )
                }
                _ => (
                    "recency",
                    recency,
                    ChurnArtefact::Recency {
                        calibrator: ev.churn_model.recency_calibrator.clone(),
                        horizon_days: opts.horizon_days,
                    },
                ),
            };
            let churn_fallback = Some(version(
                Task::Churn,
                name,
                merged(json!({"btyd": btyd}), &split),
                rows(ev.summary.customers),
                rows(ev.summary.customers),
                json!({
                    "roc_auc": ranked.roc_auc,
                    "roc_auc_ci": ranked.roc_auc_ci,
                    "pr_auc": ranked.pr_auc,
                    "brier": ranked.brier,
                    "positive_rate": ev.summary.churn.metrics.positive_rate,
                    "rows": ev.summary.customers,
                    "in_place_of": "lightgbm",
                }),
                serde_json::to_string(&artefact)?,
            ));
            offers.push(Offer {
                primary: version(
                    Task::Churn,
                    "lightgbm",
                    merged(
                        json!({"lightgbm": ev.churn_model.params.to_lightgbm(), "btyd": btyd,
                               "calibration": ev.churn_model.calibrator,
                               "stack": ev.churn_model.stack}),
                        &split,
                    ),
                    rows(ev.summary.churn.train_rows),
                    rows(ev.summary.customers),
                    serde_json::to_value(&ev.summary.churn)?,
                    serde_json::to_string(&churn_artefact)?,
                ),
                fallback: churn_fallback,
            });
            let ltv_btyd = serde_json::to_value(ev.ltv_model.btyd)?;
            let ltv_fallback = ev
                .summary
                .ltv
                .baselines
                .bgnbd_gamma_gamma
                .as_ref()
                .map(|b| {
                    version(
                        Task::Ltv,
                        "bgnbd_gamma_gamma",
                        merged(json!({"btyd": ltv_btyd, "head": LtvHead::Mean}), &split),
                        rows(ev.summary.customers),
                        rows(ev.summary.customers),
                        // Gated like the model: against a constant forecast.
                        merged(
                            serde_json::to_value(b).unwrap_or_default(),
                            &json!({"baselines": {"constant": ev.summary.ltv.baselines.constant},
                                    "in_place_of": "lightgbm"}),
                        ),
                        serde_json::to_string(&LtvArtefact::BgnbdGammaGamma {
                            btyd: ev.ltv_model.btyd,
                        })
                        .unwrap_or_default(),
                    )
                });
            offers.push(Offer {
                primary: version(
                    Task::Ltv,
                    "lightgbm",
                    merged(
                        json!({"lightgbm": ev.ltv_model.params.to_lightgbm(), "btyd": ltv_btyd,
                               "head": ev.ltv_model.choice.head,
                               "head_choice": ev.ltv_model.choice}),
                        &split,
                    ),
                    rows(ev.summary.ltv.train_rows),
                    rows(ev.summary.customers),
                    serde_json::to_value(&ev.summary.ltv)?,
                    serde_json::to_string(&LtvArtefact::Lightgbm {
                        btyd: ev.ltv_model.btyd,
                        model: ev.ltv_model.served().to_text()?,
                        head: ev.ltv_model.choice.head,
                    })?,
                ),
                fallback: ltv_fallback,
            });
        }
        Err(e) => {
            // Recorded so the Models page and the API can say why nothing serves.
            let why = match e {
                MlError::NotEnoughData(m) => m.clone(),
                other => other.to_string(),
            };
            for task in [Task::Churn, Task::Ltv] {
                offers.push(Offer {
                    primary: version(
                        task,
                        "lightgbm",
                        json!({"horizon_days": opts.horizon_days}),
                        0,
                        0,
                        json!({"not_enough_data": why}),
                        String::new(),
                    ),
                    fallback: None,
                });
            }
        }
    }
    offers.push(Offer {
        primary: version(
            Task::Segment,
            "kmeans",
            json!({
                "k_min": opts.segments_min,
                "k_max": opts.segments_max,
                "seed": opts.seed,
                "inputs": ["recency_days", "frequency", "monetary_total"],
                "transform": "ln(1+x), standardised",
                "as_of": opts.as_of,
            }),
            rows(trained.segment_metrics.rows),
            0,
            serde_json::to_value(&trained.segment_metrics)?,
            trained.segments.to_artefact(),
        ),
        fallback: None,
    });
    Ok(offers)
}

/// The activation policy of these settings.
pub fn policy(settings: &MlSettings) -> ActivationPolicy {
    ActivationPolicy {
        tolerance: settings.ml_activation_tolerance,
        baseline_margin: settings.ml_baseline_margin,
    }
}

/// The churn risk tiers of these settings.
pub fn tiers(settings: &MlSettings) -> RiskTiers {
    RiskTiers {
        high: settings.ml_churn_tier_high,
        medium: settings.ml_churn_tier_medium,
    }
}

/// Trains churn, LTV, segments and recommendations on every live profile's history up
/// to `as_of` and registers them: each goes through the registry's gate and activation
/// rule, and when the gate rejects LightGBM the BG/NBD baseline is offered in its place.
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
    let offers = tokio::task::spawn_blocking(move || {
        let trained = train::train_all(&histories, &opts)?;
        model_versions(&trained, &opts)
    })
    .await
    .map_err(|e| MlError::Task(e.to_string()))??;
    let recommend = train_recommender(db, settings, as_of).await?;
    let offers: Vec<Offer> = offers
        .into_iter()
        .chain(std::iter::once(Offer {
            primary: recommend,
            fallback: None,
        }))
        .collect();
    let mut models = Vec::new();
    for offer in &offers {
        for v in std::iter::once(&offer.primary).chain(&offer.fallback) {
            let (version_id, decision) = registry::register(db, v, policy(settings)).await?;
            tracing::info!(task = %v.task, algorithm = %v.algorithm, %version_id, ?decision, "model registered");
            let rejected = matches!(decision, Decision::Rejected { .. });
            if v.task == Task::Recommend && !rejected {
                let artefact = v.artefact.clone();
                let similar = tokio::task::spawn_blocking(move || {
                    let mut model: Recommender = serde_json::from_str(&artefact)?;
                    model.build_index();
                    Ok::<_, MlError>(model.similarity_table(SIMILAR_PRODUCTS))
                })
                .await
                .map_err(|e| MlError::Task(e.to_string()))??;
                store::save_similarity(db, version_id, &similar).await?;
            }
            models.push(RegisteredModel {
                task: v.task,
                version_id,
                algorithm: v.algorithm.clone(),
                decision,
                metrics: v.metrics.clone(),
            });
            if !rejected {
                break;
            }
        }
    }
    Ok(TrainingRun { profiles, models })
}

/// Similar products stored per product (`product_similarity`).
pub const SIMILAR_PRODUCTS: usize = 10;

/// Days after the evaluation cutoff whose purchases judge a recommender.
pub const RECS_HORIZON_DAYS: i64 = 28;

/// Trains the recommender on every live profile's order lines and product views before
/// `as_of` and measures it: trained before `as_of − RECS_HORIZON_DAYS`, judged on the
/// purchases after (its metrics name P-TopFreq and popularity as the baselines the gate
/// wants beaten), then trained again on everything for serving. The served model's
/// tuning needs a fit on everything before `as_of − RECS_HORIZON_DAYS`, which is the
/// evaluated model: it tunes on that one rather than fitting the same data twice.
pub async fn train_recommender(
    db: &PgPool,
    settings: &MlSettings,
    as_of: DateTime<Utc>,
) -> Result<NewModelVersion, MlError> {
    let mut catalogue = Catalogue::default();
    let activities =
        store::load_activities(db, None, as_of, store::Products::Add(&mut catalogue)).await?;
    let corpus = Corpus {
        catalogue,
        customers: activities.into_iter().map(|(_, a)| a).collect(),
    };
    let params = RecsParams {
        item2vec: Item2VecParams {
            seed: settings.ml_seed,
            ..Item2VecParams::default()
        },
        ..RecsParams::default()
    };
    tokio::task::spawn_blocking(move || {
        let baskets = corpus.customers.iter().map(|a| a.baskets.len()).sum::<usize>();
        let start = corpus
            .customers
            .iter()
            .filter_map(|a| a.baskets.first().map(|b| b.at))
            .min();
        let cutoff = as_of - chrono::Duration::days(RECS_HORIZON_DAYS);
        let rows = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let mut version = NewModelVersion {
            task: Task::Recommend,
            algorithm: "item2vec_blend".into(),
            params: json!({
                "recs": params,
                "horizon_days": RECS_HORIZON_DAYS,
                "evaluation": format!("trained before {cutoff}, judged on the {RECS_HORIZON_DAYS} days after"),
            }),
            feature_set_version: FEATURE_SET_VERSION,
            data_window_start: start,
            data_window_end: Some(as_of),
            train_rows: rows(baskets),
            test_rows: 0,
            metrics: json!({}),
            artefact: String::new(),
        };
        let evaluated = match offline::evaluate_keeping(&corpus, cutoff, RECS_HORIZON_DAYS, &params) {
            Ok((ev, evaluated)) => {
                version.metrics = ev.registry_metrics();
                version.test_rows = rows(ev.customers);
                evaluated
            }
            Err(MlError::NotEnoughData(why)) => {
                version.metrics = json!({"not_enough_data": why});
                return Ok(version);
            }
            Err(e) => return Err(e),
        };
        let (trained, _) = Recommender::train_after(&corpus, as_of, &params, Some(evaluated));
        let model = trained.model;
        version.params["weights"] = json!(model.weights);
        version.artefact = serde_json::to_string(&model)?;
        Ok(version)
    })
    .await
    .map_err(|e| MlError::Task(e.to_string()))?
}

/// What to do with the Customer 360 documents of profiles whose predictions changed.
#[derive(Clone, Copy)]
pub enum CacheUpdate<'a> {
    /// Rebuild and re-cache their documents now, all in one go (online scoring: the next
    /// read is fast and already shows the new predictions).
    Refresh(&'a Customer360Cache),
    /// Drop the cached documents; readers rebuild them on demand (bulk re-scoring,
    /// where rebuilding every document eagerly would cost more than it saves).
    Invalidate,
}

/// What [`score_profiles`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scored {
    /// Live profiles scored.
    pub profiles: usize,
    /// Those whose predictions were written (ascending); the others' stored predictions
    /// still hold (see [`store::save_scores`]).
    pub changed: Vec<Uuid>,
}

/// Scores `ids` (resolved to live profiles) with `models` as of `as_of`, with a fixed
/// number of statements whatever the batch's size: one read per source of facts (orders,
/// events, and for recommendations order lines and product views) for the whole batch,
/// one transaction writing the predictions that changed materially (`rewrite`), their
/// features and their `profiles.changes` entries, then the Customer 360 update of the
/// changed profiles only.
#[allow(clippy::too_many_arguments)]
pub async fn score_profiles(
    db: &PgPool,
    redis: &mut ConnectionManager,
    prefix: &str,
    models: &Arc<ActiveModels>,
    ids: &[Uuid],
    as_of: DateTime<Utc>,
    cache: CacheUpdate<'_>,
    rewrite: Rewrite<'_>,
) -> Result<Scored, MlError> {
    let live = store::resolve_live(db, ids).await?;
    if live.is_empty() {
        return Ok(Scored::default());
    }
    let histories = store::load_histories(db, &live, Some(as_of)).await?;
    let activities = match &models.recommend {
        Some(r) => {
            let known = store::Products::Known(&r.model.catalogue);
            store::load_activities(db, Some(&live), as_of, known).await?
        }
        None => Vec::new(),
    };
    let scorer = Arc::clone(models);
    let (rows, predictions) = tokio::task::spawn_blocking(move || {
        let rows: Vec<_> = histories
            .iter()
            .map(|h| (h.profile_id, features::compute(h, as_of)))
            .collect();
        let mut predictions = scorer.score(&rows)?;
        predictions.extend(scorer.recommend(&activities, as_of));
        Ok::<_, MlError>((rows, predictions))
    })
    .await
    .map_err(|e| MlError::Task(e.to_string()))??;
    let changed =
        store::save_scores(db, redis, prefix, &rows, &predictions, as_of, rewrite).await?;
    if !changed.is_empty() {
        match cache {
            CacheUpdate::Refresh(c360) => {
                c360.refresh_many(&changed)
                    .await
                    .map_err(|e| MlError::Cache(e.to_string()))?;
            }
            CacheUpdate::Invalidate => {
                store::invalidate_customer360(redis, prefix, &changed).await?;
            }
        }
    }
    Ok(Scored {
        profiles: live.len(),
        changed,
    })
}

/// Scores every live profile in batches of `batch_size`, writing every prediction and
/// invalidating their cached Customer 360 documents. Returns how many.
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
            Rewrite::ALL,
        )
        .await?
        .profiles;
        after = Some(last);
    }
    Ok(scored)
}

/// Loads the active models from the registry, with the settings' risk tiers.
pub async fn load_active(db: &PgPool, settings: &MlSettings) -> Result<ActiveModels, MlError> {
    ActiveModels::from_versions(&registry::active(db).await?, tiers(settings))
}
