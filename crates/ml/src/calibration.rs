//! Turning scores into probabilities that mean what they say ("37 %" churns 37 % of
//! the time), and measuring whether they do.
//!
//! A [`Calibrator`] is fitted on a validation fold the model never trained on:
//! isotonic regression (pool-adjacent-violators) when the fold is large enough to
//! estimate a free-form monotone curve, Platt scaling (a logistic fit on the score's
//! log-odds) when it is not. Either keeps the ranking (ROC-AUC) of the model's scores
//! up to ties. [`reliability`] bins predictions to compare predicted and observed
//! rates — the reliability curve on the Models page.

use serde::{Deserialize, Serialize};

use crate::MlError;
use crate::optimise::minimise;

/// Validation rows from which isotonic regression is preferred to Platt scaling.
pub const ISOTONIC_FROM_ROWS: usize = 5_000;

/// Probabilities are kept inside this distance of 0 and 1: an outcome is never
/// certain, and a log-odds must stay finite.
const EPSILON: f64 = 1e-4;

/// A way of fitting a calibrator to scores and labels.
type FitFn = fn(&[f64], &[bool]) -> Result<Calibrator, MlError>;

/// A monotone map from a score to a probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Calibrator {
    /// Scores are already probabilities.
    Identity,
    /// `σ(a · logit(score) + b)`.
    Platt {
        /// Slope on the score's log-odds.
        a: f64,
        /// Intercept added to the scaled log-odds.
        b: f64,
    },
    /// A non-decreasing step curve through `(score, probability)` knots, interpolated
    /// linearly between knots and flat beyond them.
    Isotonic {
        /// Scores, increasing.
        x: Vec<f64>,
        /// Probabilities, non-decreasing.
        y: Vec<f64>,
    },
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(EPSILON, 1.0 - EPSILON);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Calibrator {
    /// Fits a calibrator of `scores` (probabilities from a model) to `labels`: isotonic
    /// from [`ISOTONIC_FROM_ROWS`] rows, Platt below.
    pub fn fit(scores: &[f64], labels: &[bool]) -> Result<Self, MlError> {
        if scores.len() != labels.len() || scores.is_empty() {
            return Err(MlError::Invalid(format!(
                "calibration: {} scores for {} labels",
                scores.len(),
                labels.len()
            )));
        }
        let positives = labels.iter().filter(|y| **y).count();
        if positives == 0 || positives == labels.len() {
            return Err(MlError::NotEnoughData(
                "calibration needs both outcomes in the validation fold".into(),
            ));
        }
        if scores.len() >= ISOTONIC_FROM_ROWS {
            Ok(Self::isotonic(scores, labels))
        } else {
            Self::platt(scores, labels)
        }
    }

    /// Platt scaling: the logistic regression of the label on the score's log-odds.
    pub fn platt(scores: &[f64], labels: &[bool]) -> Result<Self, MlError> {
        let z: Vec<f64> = scores.iter().map(|s| logit(*s)).collect();
        let neg_ll = |v: &[f64]| {
            z.iter()
                .zip(labels)
                .map(|(z, y)| {
                    let p = sigmoid(v[0] * z + v[1]).clamp(1e-12, 1.0 - 1e-12);
                    if *y { -p.ln() } else { -(1.0 - p).ln() }
                })
                .sum::<f64>()
        };
        let v = minimise("Platt scaling", &[1.0, 0.0], 0.5, neg_ll)?;
        Ok(Self::Platt { a: v[0], b: v[1] })
    }

    /// Isotonic regression by pool-adjacent-violators: sorted by score, neighbouring
    /// blocks whose observed rates decrease are merged until the rates never do.
    pub fn isotonic(scores: &[f64], labels: &[bool]) -> Self {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        // Blocks of (sum of labels, count, lowest score, highest score).
        let mut blocks: Vec<(f64, f64, f64, f64)> = Vec::new();
        for i in order {
            let (s, y) = (scores[i], f64::from(u8::from(labels[i])));
            match blocks.last_mut() {
                // Equal scores must get one value.
                Some(last) if last.3 == s => {
                    last.0 += y;
                    last.1 += 1.0;
                }
                _ => blocks.push((y, 1.0, s, s)),
            }
            while blocks.len() >= 2 {
                let n = blocks.len();
                let (prev, last) = (blocks[n - 2], blocks[n - 1]);
                if prev.0 / prev.1 < last.0 / last.1 {
                    break;
                }
                blocks[n - 2] = (prev.0 + last.0, prev.1 + last.1, prev.2, last.3);
                blocks.pop();
            }
        }
        // A knot at each end of each block keeps its value flat across it.
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (sum, n, lo, hi) in blocks {
            let p = (sum / n).clamp(EPSILON, 1.0 - EPSILON);
            x.push(lo);
            y.push(p);
            if hi > lo {
                x.push(hi);
                y.push(p);
            }
        }
        Self::Isotonic { x, y }
    }

    /// Chooses the calibration of `scores` (probabilities, out of sample) on a
    /// validation fold: none, Platt scaling or isotonic regression (from
    /// [`ISOTONIC_FROM_ROWS`] rows), whichever has the
    /// lowest Brier score cross-fitted over the fold (customers `ids` split into
    /// [`crate::stack::INNER_FOLDS`] folds, each scored by a calibrator fitted on the
    /// others), then fitted on the whole fold. A calibrator is used only when it beats
    /// the probabilities as they are by more than one standard error of the paired
    /// per-customer difference: on a small fold, a calibrator that only seems better
    /// adds noise to a model that is already calibrated. Also returns the chosen
    /// method's cross-fitted probabilities (the scores themselves for none).
    pub fn choose(
        scores: &[f64],
        labels: &[bool],
        ids: &[uuid::Uuid],
        seed: u64,
    ) -> (Self, CalibrationChoice, Vec<f64>) {
        let k = crate::stack::INNER_FOLDS;
        let folds: Vec<usize> = ids
            .iter()
            .map(|id| crate::crossfit::fold_of(*id, seed ^ 0xCA11, k))
            .collect();
        let methods: [FitFn; 2] = [|s, y| Self::platt(s, y), |s, y| Ok(Self::isotonic(s, y))];
        let squared = |p: &[f64]| -> Vec<f64> {
            p.iter()
                .zip(labels)
                .map(|(p, y)| (p - f64::from(u8::from(*y))).powi(2))
                .collect()
        };
        let none = squared(scores);
        let mut briers = [crate::metrics::brier(scores, labels), 0.0, 0.0];
        let mut outs = [scores.to_vec(), Vec::new(), Vec::new()];
        let mut clear_win = [true, false, false];
        // Isotonic regression only on folds large enough for a free-form curve: on
        // small ones its steps tie scores and cost ranking (ROC-AUC).
        let isotonic_ok = scores.len() >= ISOTONIC_FROM_ROWS;
        for (m, fit) in methods.iter().enumerate() {
            if m == 1 && !isotonic_ok {
                briers[2] = f64::INFINITY;
                continue;
            }
            let mut out = vec![f64::NAN; scores.len()];
            for fold in 0..k {
                let (s, y): (Vec<f64>, Vec<bool>) = (0..scores.len())
                    .filter(|i| folds[*i] != fold)
                    .map(|i| (scores[i], labels[i]))
                    .unzip();
                let both = y.iter().any(|v| *v) && y.iter().any(|v| !*v);
                let c = if both { fit(&s, &y).ok() } else { None };
                for i in (0..scores.len()).filter(|i| folds[*i] == fold) {
                    out[i] = c.as_ref().map_or(f64::NAN, |c| c.apply(scores[i]));
                }
            }
            briers[m + 1] = if out.iter().all(|v| v.is_finite()) {
                crate::metrics::brier(&out, labels)
            } else {
                f64::INFINITY
            };
            if briers[m + 1].is_finite() && scores.len() > 1 {
                let diff: Vec<f64> = none.iter().zip(squared(&out)).map(|(a, b)| a - b).collect();
                let n = diff.len() as f64;
                let mean = diff.iter().sum::<f64>() / n;
                let sd = (diff.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
                clear_win[m + 1] = mean > sd / n.sqrt();
            }
            outs[m + 1] = out;
        }
        let best = (0..3)
            .filter(|m| clear_win[*m])
            .min_by(|a, b| briers[*a].total_cmp(&briers[*b]))
            .unwrap_or(0);
        let fitted = match best {
            1 => Self::platt(scores, labels).ok(),
            2 if isotonic_ok => {
                Self::fit_checked(scores, labels).then(|| Self::isotonic(scores, labels))
            }
            _ => None,
        };
        let chosen = fitted.unwrap_or(Self::Identity);
        let out = match chosen {
            Self::Identity => std::mem::take(&mut outs[0]),
            _ => std::mem::take(&mut outs[best]),
        };
        // The logistic recalibration of the scores on the whole fold: slope 1 and
        // intercept 0 when they are calibrated already.
        let (slope, intercept) = match Self::platt(scores, labels) {
            Ok(Self::Platt { a, b }) => (Some(a), Some(b)),
            _ => (None, None),
        };
        let choice = CalibrationChoice {
            brier_none: briers[0],
            brier_platt: briers[1],
            brier_isotonic: briers[2],
            method: chosen.method().into(),
            rows: scores.len(),
            slope,
            intercept,
        };
        (chosen, choice, out)
    }

    fn fit_checked(scores: &[f64], labels: &[bool]) -> bool {
        !scores.is_empty() && labels.iter().any(|v| *v) && labels.iter().any(|v| !*v)
    }

    /// The method's name (`identity`, `platt`, `isotonic`).
    pub fn method(&self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Platt { .. } => "platt",
            Self::Isotonic { .. } => "isotonic",
        }
    }

    /// The calibrated probability of a score.
    pub fn apply(&self, score: f64) -> f64 {
        match self {
            Self::Identity => score,
            Self::Platt { a, b } => sigmoid(a * logit(score) + b),
            Self::Isotonic { x, y } => {
                let i = x.partition_point(|k| *k <= score);
                if i == 0 {
                    y[0]
                } else if i == x.len() {
                    y[x.len() - 1]
                } else {
                    let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
                    y0 + (y1 - y0) * (score - x0) / (x1 - x0)
                }
            }
        }
    }

    /// Calibrated probabilities of many scores.
    pub fn apply_all(&self, scores: &[f64]) -> Vec<f64> {
        scores.iter().map(|s| self.apply(*s)).collect()
    }
}

/// The cross-fitted validation Brier score of each calibration method, and the one
/// chosen ([`Calibrator::choose`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationChoice {
    /// Brier score of the probabilities as they are.
    pub brier_none: f64,
    /// With Platt scaling.
    pub brier_platt: f64,
    /// With isotonic regression.
    pub brier_isotonic: f64,
    /// The method chosen.
    pub method: String,
    /// Rows it was chosen on.
    #[serde(default)]
    pub rows: usize,
    /// Calibration slope: Platt scaling's `a` fitted on every row (1 when the scores
    /// are calibrated; below 1 when over-confident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slope: Option<f64>,
    /// Calibration intercept: Platt scaling's `b` (0 when calibrated in the large).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept: Option<f64>,
}

/// One bin of a reliability curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Mean predicted probability in the bin.
    pub predicted: f64,
    /// Share of positives in the bin.
    pub observed: f64,
    /// Rows in the bin.
    pub rows: usize,
}

/// The reliability curve: predictions in `bins` equal-width bins of probability, each
/// with its mean prediction and observed rate (empty bins left out).
pub fn reliability(probabilities: &[f64], labels: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    let mut acc = vec![(0.0, 0.0, 0usize); bins];
    for (p, y) in probabilities.iter().zip(labels) {
        let i = ((p * bins as f64) as usize).min(bins - 1);
        acc[i].0 += p;
        acc[i].1 += f64::from(u8::from(*y));
        acc[i].2 += 1;
    }
    acc.into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(p, y, n)| ReliabilityBin {
            predicted: p / n as f64,
            observed: y / n as f64,
            rows: n,
        })
        .collect()
}

/// The largest gap between predicted and observed rates over bins holding at least
/// `min_rows` rows (a summary of the reliability curve).
pub fn max_calibration_gap(curve: &[ReliabilityBin], min_rows: usize) -> f64 {
    curve
        .iter()
        .filter(|b| b.rows >= min_rows)
        .map(|b| (b.predicted - b.observed).abs())
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{brier, roc_auc};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Scores that rank well but are badly over-confident: the true probability is
    /// `σ(0.5 · logit(s) − 0.6)` while the score says `s`.
    fn overconfident(n: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let s: f64 = rng.random();
                (s, rng.random::<f64>() < sigmoid(0.5 * logit(s) - 0.6))
            })
            .unzip()
    }

    #[test]
    fn calibration_makes_predicted_and_observed_rates_agree() {
        let (fit_s, fit_y) = overconfident(20_000, 1);
        assert!(fit_s.len() >= ISOTONIC_FROM_ROWS);
        let (s, y) = overconfident(20_000, 2);
        for calibrator in [
            Calibrator::fit(&fit_s, &fit_y).unwrap(),
            Calibrator::platt(&fit_s[..5_000], &fit_y[..5_000]).unwrap(),
        ] {
            let p = calibrator.apply_all(&s);
            let before = reliability(&s, &y, 10);
            let after = reliability(&p, &y, 10);
            assert!(max_calibration_gap(&before, 200) > 0.2, "{before:?}");
            assert!(
                max_calibration_gap(&after, 200) < 0.03,
                "{calibrator:?}: {after:?}"
            );
            assert!(brier(&p, &y) < brier(&s, &y) - 0.01);
            // Monotone: the ranking barely moves (isotonic steps create ties).
            assert!((roc_auc(&p, &y) - roc_auc(&s, &y)).abs() < 0.01);
        }
        assert!(matches!(
            Calibrator::fit(&fit_s, &fit_y).unwrap(),
            Calibrator::Isotonic { .. }
        ));
    }

    #[test]
    fn the_choice_calibrates_a_miscalibrated_score_and_leaves_a_calibrated_one() {
        let ids: Vec<uuid::Uuid> = (1..=3_000u128).map(uuid::Uuid::from_u128).collect();
        // Over-confident scores: a calibrator is chosen and lowers the Brier score on
        // customers it did not see.
        let (s, y) = overconfident(3_000, 4);
        let (c, choice, _) = Calibrator::choose(&s, &y, &ids, 7);
        assert_ne!(choice.method, "identity", "{choice:?}");
        // The recalibration slope and intercept read the miscalibration off.
        assert!((choice.slope.unwrap() - 0.5).abs() < 0.1, "{choice:?}");
        assert!((choice.intercept.unwrap() + 0.6).abs() < 0.2, "{choice:?}");
        assert!(choice.brier_platt.min(choice.brier_isotonic) < choice.brier_none - 0.01);
        let (test_s, test_y) = overconfident(20_000, 5);
        assert!(brier(&c.apply_all(&test_s), &test_y) < brier(&test_s, &test_y) - 0.01);
        // Scores that are already probabilities: whatever is chosen is no worse
        // out of fold than leaving them be.
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let (s, y): (Vec<f64>, Vec<bool>) = (0..3_000)
            .map(|_| {
                let p: f64 = rng.random();
                (p, rng.random::<f64>() < p)
            })
            .unzip();
        let (_, choice, out) = Calibrator::choose(&s, &y, &ids, 7);
        assert!((choice.slope.unwrap() - 1.0).abs() < 0.15, "{choice:?}");
        assert!(choice.intercept.unwrap().abs() < 0.15, "{choice:?}");
        assert_eq!(out.len(), s.len());
        let chosen = match choice.method.as_str() {
            "identity" => choice.brier_none,
            "platt" => choice.brier_platt,
            _ => choice.brier_isotonic,
        };
        assert!(chosen <= choice.brier_none, "{choice:?}");
        assert!(
            choice.brier_isotonic.is_infinite(),
            "no isotonic regression on a small fold: {choice:?}"
        );
    }

    #[test]
    fn isotonic_by_hand() {
        // Sorted labels 0, 1, 0, 1, 1: the violator (1, 0) pools to 0.5.
        let c = Calibrator::isotonic(
            &[0.1, 0.2, 0.3, 0.4, 0.5],
            &[false, true, false, true, true],
        );
        let values: Vec<f64> = [0.1, 0.2, 0.25, 0.3, 0.4, 0.5]
            .iter()
            .map(|s| c.apply(*s))
            .collect();
        assert_eq!(values[0], EPSILON);
        assert_eq!((values[1], values[2], values[3]), (0.5, 0.5, 0.5));
        assert_eq!(values[4], 1.0 - EPSILON);
        assert_eq!(c.apply(-1.0), EPSILON);
        assert_eq!(c.apply(2.0), 1.0 - EPSILON);
        assert!(matches!(
            Calibrator::fit(&[0.1, 0.2], &[true, true]),
            Err(MlError::NotEnoughData(_))
        ));
        assert_eq!(Calibrator::Identity.apply(0.37), 0.37);
    }

    #[test]
    fn reliability_bins() {
        let curve = reliability(&[0.05, 0.15, 0.12, 0.95], &[false, true, false, true], 10);
        assert_eq!(curve.len(), 3);
        assert_eq!(curve[1].rows, 2);
        assert!((curve[1].predicted - 0.135).abs() < 1e-12);
        assert_eq!(curve[1].observed, 0.5);
        assert_eq!(curve[2].rows, 1);
    }
}
