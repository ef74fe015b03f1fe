//! Scoring with the active models: churn probability with its risk tier and strongest
//! reasons, the predicted spend over the horizon, and the segment.
//!
//! Who gets what: every profile gets a segment (those who never ordered are
//! "Prospects"); churn and LTV are only predicted for profiles with at least one order,
//! the population those models were trained on — a churn probability for someone who
//! never bought would be a number without a meaning.
//!
//! What serves a task is whatever the registry activated: LightGBM over the features and
//! the BTYD outputs, or — when LightGBM did not beat it — the best baseline itself
//! (churn: recency or BG/NBD, calibrated into a probability; LTV: BG/NBD ×
//! Gamma-Gamma).
//! Artefacts are JSON ([`ChurnArtefact`], [`LtvArtefact`]) holding the fitted BTYD
//! parameters, the LightGBM model text and the calibration.
//!
//! Risk tiers are cut-offs on the *calibrated* probability ([`RiskTiers`], configurable),
//! so they mean the same at every brand: "high" is at least `ML_CHURN_TIER_HIGH` likely
//! to churn, whatever the brand's base rate.
//!
//! Churn reasons (LightGBM only) are per-input contributions (SHAP values in log-odds):
//! the three with the largest magnitude, positive meaning "pushes towards churn".
//! Inputs that do not move the score (a model too small to use them) are no reason.

use chrono::{DateTime, Utc};
use domain::api::ModelStatus;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::MlError;
use crate::btyd::Btyd;
use crate::calibration::Calibrator;
use crate::features::{FEATURE_SET_VERSION, Features};
use crate::gbm::GbmModel;
use crate::recs::{Activity, Recommender};
use crate::registry::{ModelVersion, Task};
use crate::segments::SegmentModel;
use crate::stack::{LR_INPUT_NAMES, Stack};
use crate::train::{
    LtvHead, N_INPUTS, bgnbd_score, head_spend, input_names, inputs, lr_rows, recency_score,
};

/// Churn reasons reported per profile.
const TOP_REASONS: usize = 3;

/// One prediction, as stored in `predictions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The profile.
    pub profile_id: Uuid,
    /// Which task.
    pub task: Task,
    /// The model version that made it.
    pub model_version_id: Uuid,
    /// Churn probability or predicted spend.
    pub score: Option<f64>,
    /// Churn tier (`high`, `medium`, `low`) or segment name.
    pub label: Option<String>,
    /// Task-specific details (churn reasons, horizon, centroid distances).
    pub details: serde_json::Value,
}

/// Cut-offs of calibrated churn probability that define the risk tiers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RiskTiers {
    /// From this probability up: `high`.
    pub high: f64,
    /// From this probability up (below `high`): `medium`; below: `low`.
    pub medium: f64,
}

impl Default for RiskTiers {
    fn default() -> Self {
        Self {
            high: 0.7,
            medium: 0.4,
        }
    }
}

impl RiskTiers {
    /// The tier of a calibrated churn probability.
    pub fn tier(&self, probability: f64) -> &'static str {
        if probability >= self.high {
            "high"
        } else if probability >= self.medium {
            "medium"
        } else {
            "low"
        }
    }
}

/// What a churn version's artefact holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChurnArtefact {
    /// LightGBM over features and BTYD outputs, with its calibration.
    Lightgbm {
        /// BTYD models whose outputs are inputs.
        btyd: Btyd,
        /// Calibration of LightGBM's probability.
        calibrator: Calibrator,
        /// F1-best threshold on the calibrated probability.
        threshold: f64,
        /// LightGBM model text.
        model: String,
        /// The logistic regression or blend serving in place of LightGBM alone
        /// (absent: LightGBM alone; older artefacts have none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stack: Option<Stack>,
    },
    /// The BG/NBD baseline: its expected purchases in the horizon, as a calibrated
    /// probability of none ([`crate::train::bgnbd_score`]).
    Bgnbd {
        /// The fitted models.
        btyd: Btyd,
        /// Calibration of the score.
        calibrator: Calibrator,
    },
    /// The recency baseline: days since the last order, as a calibrated probability
    /// ([`crate::train::recency_score`]).
    Recency {
        /// Calibration of the score.
        calibrator: Calibrator,
        /// The horizon the score is scaled by.
        horizon_days: u32,
    },
}

/// What an LTV version's artefact holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LtvArtefact {
    /// LightGBM regression over features and BTYD outputs.
    Lightgbm {
        /// BTYD models whose outputs are inputs.
        btyd: Btyd,
        /// LightGBM model text of the serving head.
        model: String,
        /// Which head it is (versions stored before heads were chosen: the mean).
        #[serde(default)]
        head: LtvHead,
    },
    /// BG/NBD expected purchases × Gamma-Gamma expected order value.
    BgnbdGammaGamma {
        /// The fitted models.
        btyd: Btyd,
    },
}

/// How the active churn version scores.
#[derive(Debug)]
pub enum ChurnScorer {
    /// LightGBM, calibrated.
    Gbm {
        /// BTYD models whose outputs are inputs.
        btyd: Btyd,
        /// The classifier.
        model: GbmModel,
        /// Its calibration.
        calibrator: Calibrator,
        /// The logistic regression or blend over it, if one was chosen.
        stack: Option<Stack>,
    },
    /// The BG/NBD baseline.
    Bgnbd {
        /// The fitted models.
        btyd: Btyd,
        /// Calibration of its score.
        calibrator: Calibrator,
    },
    /// The recency baseline.
    Recency {
        /// Calibration of its score.
        calibrator: Calibrator,
        /// The horizon the score is scaled by.
        horizon_days: u32,
    },
}

/// The active churn model.
#[derive(Debug)]
pub struct ActiveChurn {
    /// Its registry id.
    pub version_id: Uuid,
    /// What scores.
    pub scorer: ChurnScorer,
    /// Its decision threshold (reported; tiers use [`RiskTiers`]).
    pub threshold: f64,
}

/// How the active LTV version scores.
#[derive(Debug)]
pub enum LtvScorer {
    /// LightGBM regression.
    Gbm {
        /// BTYD models whose outputs are inputs.
        btyd: Btyd,
        /// The regression.
        model: GbmModel,
        /// Which forecast it makes.
        head: LtvHead,
    },
    /// BG/NBD × Gamma-Gamma.
    BgnbdGammaGamma {
        /// The fitted models.
        btyd: Btyd,
    },
}

/// The active LTV model.
#[derive(Debug)]
pub struct ActiveLtv {
    /// Its registry id.
    pub version_id: Uuid,
    /// What scores.
    pub scorer: LtvScorer,
    /// Days of spend it predicts.
    pub horizon_days: u32,
}

/// The active segmentation.
#[derive(Debug)]
pub struct ActiveSegments {
    /// Its registry id.
    pub version_id: Uuid,
    /// Scaler, centroids and names.
    pub model: SegmentModel,
}

/// The active recommender, its HNSW index built.
#[derive(Debug)]
pub struct ActiveRecommender {
    /// Its registry id.
    pub version_id: Uuid,
    /// Vectors, statistics, blend weights and catalogue.
    pub model: Recommender,
}

/// Products recommended per profile.
pub const RECOMMENDATIONS: usize = 10;

/// Profiles whose recommendations are ranked together: the re-ranker is one LightGBM
/// call per batch, whose fixed cost a single profile's rows do not pay for.
pub const RECOMMEND_BATCH: usize = 256;

/// The models currently active in the registry, ready to score.
#[derive(Debug, Default)]
pub struct ActiveModels {
    /// Churn, if one is active.
    pub churn: Option<ActiveChurn>,
    /// LTV, if one is active.
    pub ltv: Option<ActiveLtv>,
    /// Segments, if active.
    pub segments: Option<ActiveSegments>,
    /// Recommendations, if active.
    pub recommend: Option<ActiveRecommender>,
    /// Churn risk tiers.
    pub tiers: RiskTiers,
}

fn gbm(text: &str) -> Result<GbmModel, String> {
    let model = GbmModel::from_text(text).map_err(|e| e.to_string())?;
    if model.n_features() != N_INPUTS {
        return Err(format!(
            "model expects {} inputs, this build computes {N_INPUTS}",
            model.n_features()
        ));
    }
    Ok(model)
}

impl ActiveModels {
    /// Builds the scorers from registry rows (the active ones; others are ignored).
    /// Churn and LTV versions trained on another feature set cannot be scored by this
    /// build and are skipped (with a warning): the next training run replaces them.
    pub fn from_versions(versions: &[ModelVersion], tiers: RiskTiers) -> Result<Self, MlError> {
        let mut models = ActiveModels {
            tiers,
            ..ActiveModels::default()
        };
        for v in versions.iter().filter(|v| v.status == ModelStatus::Active) {
            let artefact = |e: &dyn std::fmt::Display| {
                MlError::Artefact(format!("model version {}: {e}", v.id))
            };
            if matches!(v.task, Task::Churn | Task::Ltv)
                && v.feature_set_version != FEATURE_SET_VERSION
            {
                tracing::warn!(
                    version = %v.id, task = %v.task, feature_set = v.feature_set_version,
                    "active model was trained on another feature set; not serving it until retrained"
                );
                continue;
            }
            match v.task {
                Task::Churn => {
                    let scorer =
                        match serde_json::from_str(&v.artefact).map_err(|e| artefact(&e))? {
                            ChurnArtefact::Lightgbm {
                                btyd,
                                calibrator,
                                threshold: _,
                                model,
                                stack,
                            } => ChurnScorer::Gbm {
                                btyd,
                                model: gbm(&model).map_err(|e| artefact(&e))?,
                                calibrator,
                                stack,
                            },
                            ChurnArtefact::Bgnbd { btyd, calibrator } => {
                                ChurnScorer::Bgnbd { btyd, calibrator }
                            }
                            ChurnArtefact::Recency {
                                calibrator,
                                horizon_days,
                            } => ChurnScorer::Recency {
                                calibrator,
                                horizon_days,
                            },
                        };
                    models.churn = Some(ActiveChurn {
                        version_id: v.id,
                        scorer,
                        threshold: v.metrics["threshold"].as_f64().unwrap_or(0.5),
                    });
                }
                Task::Ltv => {
                    let scorer =
                        match serde_json::from_str(&v.artefact).map_err(|e| artefact(&e))? {
                            LtvArtefact::Lightgbm { btyd, model, head } => LtvScorer::Gbm {
                                btyd,
                                model: gbm(&model).map_err(|e| artefact(&e))?,
                                head,
                            },
                            LtvArtefact::BgnbdGammaGamma { btyd } => {
                                LtvScorer::BgnbdGammaGamma { btyd }
                            }
                        };
                    let horizon_days = v.params["horizon_days"].as_u64().unwrap_or(90) as u32;
                    models.ltv = Some(ActiveLtv {
                        version_id: v.id,
                        scorer,
                        horizon_days,
                    });
                }
                Task::Segment => {
                    let model =
                        SegmentModel::from_artefact(&v.artefact).map_err(|e| artefact(&e))?;
                    models.segments = Some(ActiveSegments {
                        version_id: v.id,
                        model,
                    });
                }
                Task::Recommend => {
                    let mut model: Recommender =
                        serde_json::from_str(&v.artefact).map_err(|e| artefact(&e))?;
                    model.build_index();
                    models.recommend = Some(ActiveRecommender {
                        version_id: v.id,
                        model,
                    });
                }
            }
        }
        Ok(models)
    }

    /// The ids of the active versions (churn, LTV, segments, recommendations): a change
    /// means reload.
    pub fn version_ids(&self) -> [Option<Uuid>; 4] {
        [
            self.churn.as_ref().map(|m| m.version_id),
            self.ltv.as_ref().map(|m| m.version_id),
            self.segments.as_ref().map(|m| m.version_id),
            self.recommend.as_ref().map(|m| m.version_id),
        ]
    }

    /// A `recommend` prediction per profile with any activity: the top
    /// [`RECOMMENDATIONS`] products with name, category, score, source and reason in
    /// `details.recommendations`. Empty without an active recommender. CPU-bound.
    pub fn recommend(
        &self,
        activities: &[(Uuid, Activity)],
        as_of: DateTime<Utc>,
    ) -> Vec<Prediction> {
        let Some(active) = &self.recommend else {
            return Vec::new();
        };
        let m = &active.model;
        let lists = activities.chunks(RECOMMEND_BATCH).flat_map(|batch| {
            let batch: Vec<&Activity> = batch.iter().map(|(_, a)| a).collect();
            m.recommend_many(&batch, as_of, RECOMMENDATIONS)
        });
        activities
            .iter()
            .zip(lists)
            .map(|((profile_id, _), recommended)| {
                let items: Vec<serde_json::Value> = recommended
                    .into_iter()
                    .map(|r| {
                        json!({
                            "sku": m.catalogue.skus[r.item as usize],
                            "name": m.catalogue.names[r.item as usize],
                            "category": m.catalogue.category_of(r.item),
                            "score": r.score,
                            "source": r.source,
                            "reason": r.reason,
                        })
                    })
                    .collect();
                Prediction {
                    profile_id: *profile_id,
                    task: Task::Recommend,
                    model_version_id: active.version_id,
                    score: None,
                    label: None,
                    details: json!({"model": "item2vec_blend", "recommendations": items}),
                }
            })
            .collect()
    }

    /// Whether no model is active at all.
    pub fn is_empty(&self) -> bool {
        self.version_ids().iter().all(Option::is_none)
    }

    /// Predictions for every profile in `rows` with every active model (see the module
    /// doc for who gets what). CPU-bound: call it from a blocking thread.
    pub fn score(&self, rows: &[(Uuid, Features)]) -> Result<Vec<Prediction>, MlError> {
        let mut out = Vec::new();
        let buyers: Vec<&(Uuid, Features)> = rows.iter().filter(|(_, f)| f.has_ordered()).collect();
        let features: Vec<Features> = buyers.iter().map(|(_, f)| *f).collect();

        if let (Some(churn), false) = (&self.churn, buyers.is_empty()) {
            let (p, reasons, model) = match &churn.scorer {
                ChurnScorer::Gbm {
                    btyd,
                    model,
                    calibrator,
                    stack,
                } => {
                    let x = inputs(&features, btyd);
                    let gbm = model.predict(&x)?;
                    let contrib = model.contributions(&x)?;
                    let lr = lr_rows(btyd, &features);
                    let p = calibrator.apply_all(&match stack {
                        Some(s) => s.apply(&gbm, &lr),
                        None => gbm,
                    });
                    let names = input_names();
                    let reasons: Vec<serde_json::Value> = (0..features.len())
                        .map(|i| {
                            let tree = &contrib[i * (N_INPUTS + 1)..i * (N_INPUTS + 1) + N_INPUTS];
                            let values = x[i * N_INPUTS..(i + 1) * N_INPUTS].iter().copied();
                            match stack {
                                None => top_reasons(&names, values, tree.iter().copied()),
                                // Each part's log-odds contributions, weighted as the
                                // stack weighs its log-odds.
                                Some(s) => {
                                    let (wg, wl) = s.weights();
                                    let lr_part = s.logistic.contributions(&lr[i]);
                                    top_reasons(
                                        &names
                                            .iter()
                                            .copied()
                                            .chain(LR_INPUT_NAMES)
                                            .collect::<Vec<_>>(),
                                        values.chain(lr[i].iter().map(|v| *v as f32)),
                                        tree.iter()
                                            .map(|c| c * wg)
                                            .chain(lr_part.iter().map(|c| c * wl)),
                                    )
                                }
                            }
                        })
                        .collect();
                    (p, reasons, "lightgbm")
                }
                ChurnScorer::Bgnbd { btyd, calibrator } => (
                    calibrator.apply_all(&bgnbd_score(btyd, &features)),
                    vec![json!([]); features.len()],
                    "bgnbd",
                ),
                ChurnScorer::Recency {
                    calibrator,
                    horizon_days,
                } => (
                    features
                        .iter()
                        .map(|f| calibrator.apply(recency_score(f, *horizon_days)))
                        .collect(),
                    vec![json!([]); features.len()],
                    "recency",
                ),
            };
            for (i, (id, _)) in buyers.iter().enumerate() {
                out.push(Prediction {
                    profile_id: *id,
                    task: Task::Churn,
                    model_version_id: churn.version_id,
                    score: Some(p[i]),
                    label: Some(self.tiers.tier(p[i]).to_owned()),
                    details: json!({
                        "model": model,
                        "tiers": self.tiers,
                        "threshold": churn.threshold,
                        "top_reasons": reasons[i],
                    }),
                });
            }
        }
        if let (Some(ltv), false) = (&self.ltv, buyers.is_empty()) {
            let (spend, model, head) = match &ltv.scorer {
                LtvScorer::Gbm { btyd, model, head } => (
                    head_spend(btyd, model, *head, &features)?,
                    "lightgbm",
                    *head,
                ),
                LtvScorer::BgnbdGammaGamma { btyd } => (
                    btyd.derived(&features).iter().map(|d| d[4]).collect(),
                    "bgnbd_gamma_gamma",
                    LtvHead::Mean,
                ),
            };
            for (i, (id, _)) in buyers.iter().enumerate() {
                let value = spend[i];
                out.push(Prediction {
                    profile_id: *id,
                    task: Task::Ltv,
                    model_version_id: ltv.version_id,
                    score: value.is_finite().then_some(value.max(0.0)),
                    label: None,
                    details: json!({"model": model, "head": head, "horizon_days": ltv.horizon_days}),
                });
            }
        }
        if let Some(seg) = &self.segments {
            for (id, f) in rows {
                let (cluster, name) = seg.model.assign(f);
                out.push(Prediction {
                    profile_id: *id,
                    task: Task::Segment,
                    model_version_id: seg.version_id,
                    score: None,
                    label: Some(name.to_owned()),
                    details: json!({
                        "cluster": cluster,
                        "recency_days": finite(f.recency_days),
                        "frequency": f.frequency,
                        "monetary": f.monetary_total,
                    }),
                });
            }
        }
        Ok(out)
    }
}

fn finite(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}

/// The strongest contributions of one row of inputs (named `names`), largest
/// magnitude first.
fn top_reasons(
    names: &[&str],
    values: impl Iterator<Item = f32>,
    contributions: impl Iterator<Item = f64>,
) -> serde_json::Value {
    let values: Vec<f32> = values.collect();
    let contributions: Vec<f64> = contributions.collect();
    let mut idx: Vec<usize> = (0..contributions.len()).collect();
    idx.sort_by(|&a, &b| {
        contributions[b]
            .abs()
            .total_cmp(&contributions[a].abs())
            .then(a.cmp(&b))
    });
    idx.into_iter()
        .filter(|&i| contributions[i] != 0.0)
        .take(TOP_REASONS)
        .map(|i| json!({"feature": names[i], "value": finite(values[i]), "contribution": contributions[i]}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ltv_artefact_says_which_head_it_serves() {
        let btyd = Btyd::default();
        let stored = serde_json::json!({"kind": "lightgbm", "btyd": btyd, "model": "tree"});
        // Stored before heads were chosen: the expected spend.
        match serde_json::from_value(stored).unwrap() {
            LtvArtefact::Lightgbm { head, .. } => assert_eq!(head, LtvHead::Mean),
            other => panic!("{other:?}"),
        }
        let median = LtvArtefact::Lightgbm {
            btyd,
            model: "tree".into(),
            head: LtvHead::Median,
        };
        let text = serde_json::to_string(&median).unwrap();
        assert!(text.contains(r#""head":"median""#), "{text}");
        assert_eq!(serde_json::from_str::<LtvArtefact>(&text).unwrap(), median);
    }

    #[test]
    fn reasons_are_the_largest_contributions() {
        let mut x = vec![0.0_f32; N_INPUTS];
        x[0] = 200.0;
        x[1] = 2.0;
        let mut c = vec![0.0; N_INPUTS];
        c[0] = 1.5; // recency pushes towards churn
        c[1] = -0.7; // frequency away from it
        c[N_INPUTS - 1] = 0.2; // a BTYD output
        let names = input_names();
        let reasons =
            |x: &[f32], c: &[f64]| top_reasons(&names, x.iter().copied(), c.iter().copied());
        let r = reasons(&x, &c);
        assert_eq!(r[0]["feature"], "recency_days");
        assert_eq!(r[0]["value"], 200.0);
        assert_eq!(r[1]["feature"], "frequency");
        assert_eq!(r[1]["contribution"], -0.7);
        assert_eq!(r[2]["feature"], "bgnbd_gg_expected_spend");
        assert_eq!(r.as_array().unwrap().len(), TOP_REASONS);
        // A model without splits explains nothing: no reasons rather than zeros.
        let none = reasons(&x, &vec![0.0; N_INPUTS]);
        assert!(none.as_array().unwrap().is_empty());
        c[1] = 0.0;
        c[N_INPUTS - 1] = 0.0;
        assert_eq!(reasons(&x, &c).as_array().unwrap().len(), 1);
    }

    #[test]
    fn tiers_follow_the_calibrated_probability() {
        let t = RiskTiers::default();
        assert_eq!(
            (t.tier(0.95), t.tier(0.7), t.tier(0.5), t.tier(0.39)),
            ("high", "high", "medium", "low")
        );
    }
}
