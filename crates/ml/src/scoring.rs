//! Scoring with the active models: churn probability with its strongest reasons, the
//! predicted spend over the horizon, and the segment.
//!
//! Who gets what: every profile gets a segment (those who never ordered are
//! "Prospects"); churn and LTV are only predicted for profiles with at least one order,
//! the population those models were trained on — a churn probability for someone who
//! never bought would be a number without a meaning.
//!
//! Churn reasons are LightGBM's per-feature contributions (SHAP values in log-odds):
//! the three with the largest magnitude, positive meaning "pushes towards churn".
//! Features that do not move the score (a model too small to use them) are no reason.

use domain::api::ModelStatus;
use serde_json::json;
use uuid::Uuid;

use crate::MlError;
use crate::features::{FEATURE_NAMES, Features, N_FEATURES};
use crate::gbm::GbmModel;
use crate::registry::{ModelVersion, Task};
use crate::segments::SegmentModel;
use crate::train::matrix;

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
    /// Churn band (`high`, `medium`, `low`) or segment name.
    pub label: Option<String>,
    /// Task-specific details (churn reasons, horizon, centroid distances).
    pub details: serde_json::Value,
}

/// The active churn model.
#[derive(Debug)]
pub struct ActiveChurn {
    /// Its registry id.
    pub version_id: Uuid,
    /// The classifier.
    pub model: GbmModel,
    /// Its decision threshold.
    pub threshold: f64,
}

/// The active LTV model.
#[derive(Debug)]
pub struct ActiveLtv {
    /// Its registry id.
    pub version_id: Uuid,
    /// The regression.
    pub model: GbmModel,
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

/// The models currently active in the registry, ready to score.
#[derive(Debug, Default)]
pub struct ActiveModels {
    /// Churn, if one is active.
    pub churn: Option<ActiveChurn>,
    /// LTV, if one is active.
    pub ltv: Option<ActiveLtv>,
    /// Segments, if active.
    pub segments: Option<ActiveSegments>,
}

impl ActiveModels {
    /// Builds the scorers from registry rows (the active ones; others are ignored).
    pub fn from_versions(versions: &[ModelVersion]) -> Result<Self, MlError> {
        let mut models = ActiveModels::default();
        for v in versions.iter().filter(|v| v.status == ModelStatus::Active) {
            let artefact = |e: &dyn std::fmt::Display| {
                MlError::Artefact(format!("model version {}: {e}", v.id))
            };
            match v.task {
                Task::Churn => {
                    let model = GbmModel::from_text(&v.artefact).map_err(|e| artefact(&e))?;
                    let threshold = v.metrics["threshold"].as_f64().unwrap_or(0.5);
                    models.churn = Some(ActiveChurn {
                        version_id: v.id,
                        model,
                        threshold,
                    });
                }
                Task::Ltv => {
                    let model = GbmModel::from_text(&v.artefact).map_err(|e| artefact(&e))?;
                    let horizon_days = v.params["horizon_days"].as_u64().unwrap_or(90) as u32;
                    models.ltv = Some(ActiveLtv {
                        version_id: v.id,
                        model,
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
                Task::Recommend => {}
            }
        }
        for m in [
            models.churn.as_ref().map(|c| &c.model),
            models.ltv.as_ref().map(|l| &l.model),
        ]
        .into_iter()
        .flatten()
        {
            if m.n_features() != N_FEATURES {
                return Err(MlError::Artefact(format!(
                    "model expects {} features, this build computes {N_FEATURES}",
                    m.n_features()
                )));
            }
        }
        Ok(models)
    }

    /// The ids of the active versions (churn, LTV, segments): a change means reload.
    pub fn version_ids(&self) -> [Option<Uuid>; 3] {
        [
            self.churn.as_ref().map(|m| m.version_id),
            self.ltv.as_ref().map(|m| m.version_id),
            self.segments.as_ref().map(|m| m.version_id),
        ]
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
        let x = matrix(&buyers.iter().map(|(_, f)| *f).collect::<Vec<_>>());

        if let (Some(churn), false) = (&self.churn, buyers.is_empty()) {
            let p = churn.model.predict(&x)?;
            let contrib = churn.model.contributions(&x)?;
            for (i, (id, f)) in buyers.iter().enumerate() {
                let row = &contrib[i * (N_FEATURES + 1)..i * (N_FEATURES + 1) + N_FEATURES];
                let band = if p[i] >= churn.threshold {
                    "high"
                } else if p[i] >= churn.threshold / 2.0 {
                    "medium"
                } else {
                    "low"
                };
                out.push(Prediction {
                    profile_id: *id,
                    task: Task::Churn,
                    model_version_id: churn.version_id,
                    score: Some(p[i]),
                    label: Some(band.to_owned()),
                    details: json!({"threshold": churn.threshold, "top_reasons": top_reasons(f, row)}),
                });
            }
        }
        if let (Some(ltv), false) = (&self.ltv, buyers.is_empty()) {
            let spend = ltv.model.predict(&x)?;
            for (i, (id, _)) in buyers.iter().enumerate() {
                out.push(Prediction {
                    profile_id: *id,
                    task: Task::Ltv,
                    model_version_id: ltv.version_id,
                    score: Some(spend[i].max(0.0)),
                    label: None,
                    details: json!({"horizon_days": ltv.horizon_days}),
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

/// The strongest contributions of one row, largest magnitude first.
fn top_reasons(f: &Features, contributions: &[f64]) -> serde_json::Value {
    let values = f.to_vec();
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
        .map(|i| json!({"feature": FEATURE_NAMES[i], "value": finite(values[i]), "contribution": contributions[i]}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_largest_contributions() {
        let f = Features {
            recency_days: 200.0,
            frequency: 2.0,
            ..Features::default()
        };
        let mut c = vec![0.0; N_FEATURES];
        c[0] = 1.5; // recency pushes towards churn
        c[1] = -0.7; // frequency away from it
        c[5] = 0.2;
        let r = top_reasons(&f, &c);
        assert_eq!(r[0]["feature"], "recency_days");
        assert_eq!(r[0]["value"], 200.0);
        assert_eq!(r[1]["feature"], "frequency");
        assert_eq!(r[1]["contribution"], -0.7);
        assert_eq!(r[2]["feature"], FEATURE_NAMES[5]);
        assert_eq!(r.as_array().unwrap().len(), TOP_REASONS);
        // A model without splits explains nothing: no reasons rather than zeros.
        let none = top_reasons(&f, &vec![0.0; N_FEATURES]);
        assert!(none.as_array().unwrap().is_empty());
        c[1] = 0.0;
        c[5] = 0.0;
        assert_eq!(top_reasons(&f, &c).as_array().unwrap().len(), 1);
    }
}
