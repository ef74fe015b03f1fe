//! Churn candidates beside LightGBM, and the choice between them.
//!
//! On small or purchase-only data (a transaction log with recency, frequency, age and
//! spend) a boosted tree ensemble can lose to a smooth model of the same few signals:
//! on the CDNOW sample LightGBM ranked churn worse than BG/NBD. So
//! [`ChurnModel`](crate::train::ChurnModel) fits three candidates and keeps the one that ranks its validation
//! fold best — customers none of the candidates trained on, never the evaluated ones:
//!
//! - **LightGBM** alone;
//! - **logistic regression** ([`Logistic`], L2-penalised, Newton's method) on the
//!   log-transformed purchase history and BG/NBD's P(alive) and expected purchases
//!   ([`lr_inputs`]), fitted on the same training rows as LightGBM;
//! - **a stacked blend**: a logistic regression over the two candidates' log-odds,
//!   fitted on the validation fold. Its validation ROC-AUC comes from cross-fitting
//!   inside the fold ([`INNER_FOLDS`] folds), so it is not judged on the rows it was
//!   fitted on;
//! - **the mean** of the two candidates' log-odds: nothing fitted, so nothing to
//!   overfit on a small validation fold (the calibration that follows sets its scale).
//!
//! A [`Stack`] is what serves: `σ(w_gbm · logit(LightGBM) + w_lr · logit(logistic) + b)`,
//! which covers all three (LightGBM alone: no stack; the logistic alone: `w_gbm = 0`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::MlError;
use crate::crossfit;
use crate::features::Features;
use crate::metrics::roc_auc;

/// Folds of the cross-fitting inside a validation fold (stacking and calibration
/// choices).
pub const INNER_FOLDS: usize = 5;

/// Fewest validation customers on which the candidates are compared: below, a
/// validation ROC-AUC's standard error (over 0.03) swamps their differences, and
/// LightGBM serves alone.
pub const MIN_CHOICE_ROWS: usize = 300;

/// Log-odds are kept inside this distance of 0 and 1.
const EPSILON: f64 = 1e-4;

/// The log-odds of a probability (clamped away from 0 and 1).
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(EPSILON, 1.0 - EPSILON);
    (p / (1.0 - p)).ln()
}

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Names of the logistic regression's inputs, in [`lr_inputs`] order.
pub const LR_INPUT_NAMES: [&str; 8] = [
    "ln_recency_days",
    "ln_frequency",
    "ln_first_order_days",
    "ln_monetary_avg",
    "ln_orders_180d",
    "recency_over_age",
    "bgnbd_logit_p_alive",
    "ln_bgnbd_expected_purchases",
];

/// The logistic regression's inputs for one buyer: `ln(1 + x)` of recency, frequency,
/// age and average order value, orders in the last 180 days, recency over age, and
/// BG/NBD's P(alive) (log-odds) and expected purchases (log) from `derived` (the
/// [`crate::btyd::DERIVED_NAMES`] values). Missing values become 0 (the mean after
/// standardisation is not known here; 0 is a neutral log).
pub fn lr_inputs(f: &Features, derived: &[f64; 5]) -> [f64; 8] {
    let ln1p = |v: f32| {
        let v = f64::from(v);
        if v.is_finite() {
            v.max(0.0).ln_1p()
        } else {
            0.0
        }
    };
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let age = f64::from(f.first_order_days).max(1.0);
    [
        ln1p(f.recency_days),
        ln1p(f.frequency),
        ln1p(f.first_order_days),
        ln1p(f.monetary_avg),
        ln1p(f.orders_180d),
        finite(f64::from(f.recency_days) / age).clamp(0.0, 1.0),
        finite(logit(derived[0])),
        finite((derived[2].max(0.0) + 1e-3).ln()),
    ]
}

/// An L2-penalised logistic regression on standardised inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// Mean of each input over the training rows.
    pub mean: Vec<f64>,
    /// Standard deviation of each input (1 where it is 0).
    pub scale: Vec<f64>,
    /// Weight of each standardised input.
    pub weights: Vec<f64>,
    /// Intercept.
    pub bias: f64,
}

impl Logistic {
    /// Fits `y` on the rows of `x` by Newton's method (iteratively reweighted least
    /// squares) minimising the log loss plus `l2 / 2 · |w|²` (the intercept is not
    /// penalised).
    // Dense matrix algebra reads clearest with indices.
    #[allow(clippy::needless_range_loop)]
    pub fn fit<const D: usize>(x: &[[f64; D]], y: &[bool], l2: f64) -> Result<Self, MlError> {
        let n = x.len();
        if n == 0 || n != y.len() {
            return Err(MlError::Invalid(format!(
                "logistic regression: {n} rows for {} labels",
                y.len()
            )));
        }
        let positives = y.iter().filter(|v| **v).count();
        if positives == 0 || positives == n {
            return Err(MlError::NotEnoughData(
                "logistic regression needs both outcomes".into(),
            ));
        }
        let mut mean = vec![0.0; D];
        for row in x {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v / n as f64;
            }
        }
        let mut scale = vec![0.0; D];
        for row in x {
            for j in 0..D {
                scale[j] += (row[j] - mean[j]).powi(2) / n as f64;
            }
        }
        for s in &mut scale {
            *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
        }
        let z: Vec<[f64; D]> = x
            .iter()
            .map(|row| std::array::from_fn(|j| (row[j] - mean[j]) / scale[j]))
            .collect();
        // Parameters: D weights then the intercept.
        let rate = positives as f64 / n as f64;
        let mut beta = vec![0.0; D + 1];
        beta[D] = (rate / (1.0 - rate)).ln();
        for _ in 0..50 {
            let mut grad = vec![0.0; D + 1];
            let mut hess = vec![vec![0.0; D + 1]; D + 1];
            for (row, label) in z.iter().zip(y) {
                let eta = beta[D] + (0..D).map(|j| beta[j] * row[j]).sum::<f64>();
                let p = sigmoid(eta);
                let r = p - f64::from(u8::from(*label));
                let w = (p * (1.0 - p)).max(1e-9);
                let xi = |j: usize| if j == D { 1.0 } else { row[j] };
                for a in 0..=D {
                    grad[a] += r * xi(a);
                    for b in 0..=a {
                        hess[a][b] += w * xi(a) * xi(b);
                    }
                }
            }
            for a in 0..D {
                grad[a] += l2 * beta[a];
                hess[a][a] += l2;
            }
            for a in 0..=D {
                for b in a + 1..=D {
                    hess[a][b] = hess[b][a];
                }
            }
            let step = solve(hess, grad)
                .ok_or_else(|| MlError::Invalid("logistic regression: singular Hessian".into()))?;
            let mut moved = 0.0f64;
            for (b, s) in beta.iter_mut().zip(&step) {
                *b -= s;
                moved = moved.max(s.abs());
            }
            if moved < 1e-8 {
                break;
            }
        }
        if beta.iter().any(|b| !b.is_finite()) {
            return Err(MlError::Invalid(
                "logistic regression did not converge".into(),
            ));
        }
        let bias = beta[D];
        beta.truncate(D);
        Ok(Self {
            mean,
            scale,
            weights: beta,
            bias,
        })
    }

    /// The log-odds of one row.
    pub fn log_odds(&self, row: &[f64]) -> f64 {
        self.bias
            + row
                .iter()
                .zip(&self.mean)
                .zip(&self.scale)
                .zip(&self.weights)
                .map(|(((v, m), s), w)| w * (v - m) / s)
                .sum::<f64>()
    }

    /// Each input's contribution to the log-odds of one row (relative to the training
    /// mean, where every contribution is 0).
    pub fn contributions(&self, row: &[f64]) -> Vec<f64> {
        row.iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((v, m), s), w)| w * (v - m) / s)
            .collect()
    }

    /// The probability of one row.
    pub fn probability(&self, row: &[f64]) -> f64 {
        sigmoid(self.log_odds(row))
    }
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting (small systems).
#[allow(clippy::needless_range_loop)] // dense matrix algebra reads clearest with indices
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|i, j| a[*i][col].abs().total_cmp(&a[*j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// The penalty of the purchase-history logistic regression: light, the inputs are few
/// and standardised.
pub const LR_L2: f64 = 1.0;
/// The penalty of the blend (two inputs fitted on a validation fold).
const BLEND_L2: f64 = 1.0;

/// Which candidate serves churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidate {
    /// LightGBM alone.
    Lightgbm,
    /// The purchase-history logistic regression alone.
    Logistic,
    /// The stacked blend of both.
    Blend,
    /// The mean of both log-odds.
    Mean,
}

/// How the churn score is put together from LightGBM and the logistic regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    /// The chosen candidate.
    pub candidate: Candidate,
    /// The purchase-history logistic regression.
    pub logistic: Logistic,
    /// Weight on LightGBM's log-odds.
    pub gbm_weight: f64,
    /// Weight on the logistic regression's log-odds.
    pub lr_weight: f64,
    /// Intercept.
    pub bias: f64,
}

impl Stack {
    /// The weights on LightGBM's and the logistic regression's log-odds in the served
    /// score (for the reasons: each part's contributions scaled by its weight).
    pub fn weights(&self) -> (f64, f64) {
        match self.candidate {
            Candidate::Lightgbm => (1.0, 0.0),
            Candidate::Logistic => (0.0, 1.0),
            Candidate::Blend | Candidate::Mean => (self.gbm_weight, self.lr_weight),
        }
    }

    /// The combined probability of each row from LightGBM's probability and the
    /// logistic regression's inputs.
    pub fn apply(&self, gbm: &[f64], lr_rows: &[[f64; 8]]) -> Vec<f64> {
        gbm.iter()
            .zip(lr_rows)
            .map(|(g, row)| {
                let lr = self.logistic.log_odds(row);
                match self.candidate {
                    Candidate::Lightgbm => *g,
                    Candidate::Logistic => sigmoid(lr),
                    Candidate::Blend | Candidate::Mean => {
                        sigmoid(self.gbm_weight * logit(*g) + self.lr_weight * lr + self.bias)
                    }
                }
            })
            .collect()
    }
}

/// Validation ROC-AUC of each candidate, and the one chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// LightGBM's validation ROC-AUC.
    pub lightgbm_auc: f64,
    /// The logistic regression's.
    pub logistic_auc: f64,
    /// The blend's, cross-fitted inside the validation fold.
    pub blend_auc: f64,
    /// The mean log-odds'.
    #[serde(default)]
    pub mean_auc: f64,
    /// The chosen candidate.
    pub chosen: Candidate,
}

/// Chooses between LightGBM (validation probabilities `gbm`), the logistic regression
/// `logistic` and their blend on a validation fold (`ids`, `labels`, logistic inputs
/// `lr_rows`). Returns the stack to serve (`None`: LightGBM alone), the choice, and the
/// chosen candidate's validation scores — out of sample for all three, so calibration
/// and the threshold can be fitted on them.
pub fn choose(
    logistic: Logistic,
    gbm: &[f64],
    lr_rows: &[[f64; 8]],
    ids: &[Uuid],
    labels: &[bool],
    seed: u64,
) -> (Option<Stack>, Choice, Vec<f64>) {
    let lr: Vec<f64> = lr_rows.iter().map(|r| logistic.log_odds(r)).collect();
    let pair: Vec<[f64; 2]> = gbm.iter().zip(&lr).map(|(g, l)| [logit(*g), *l]).collect();
    // The blend scored out of fold inside the validation fold.
    let folds: Vec<usize> = ids
        .iter()
        .map(|id| crossfit::fold_of(*id, seed ^ 0x5_7AC4, INNER_FOLDS))
        .collect();
    let mut blend_oof = vec![f64::NAN; pair.len()];
    for fold in 0..INNER_FOLDS {
        let (train_x, train_y): (Vec<[f64; 2]>, Vec<bool>) = (0..pair.len())
            .filter(|i| folds[*i] != fold)
            .map(|i| (pair[i], labels[i]))
            .unzip();
        if let Ok(m) = Logistic::fit(&train_x, &train_y, BLEND_L2) {
            for i in (0..pair.len()).filter(|i| folds[*i] == fold) {
                blend_oof[i] = m.probability(&pair[i]);
            }
        }
    }
    let lr_p: Vec<f64> = lr.iter().map(|l| sigmoid(*l)).collect();
    let auc = |s: &[f64]| {
        if s.iter().all(|v| v.is_finite()) {
            roc_auc(s, labels)
        } else {
            f64::NAN
        }
    };
    let mean: Vec<f64> = pair.iter().map(|[g, l]| sigmoid(0.5 * (g + l))).collect();
    let (a_gbm, a_lr, a_blend, a_mean) = (auc(gbm), auc(&lr_p), auc(&blend_oof), auc(&mean));
    let blend = Logistic::fit(&pair, labels, BLEND_L2).ok();
    // Ties go to the simpler serving path (LightGBM, whose reasons are its own).
    let mut chosen = (Candidate::Lightgbm, a_gbm);
    if a_lr > chosen.1 || !chosen.1.is_finite() {
        chosen = (Candidate::Logistic, a_lr);
    }
    if a_mean > chosen.1 {
        chosen = (Candidate::Mean, a_mean);
    }
    if blend.is_some() && a_blend > chosen.1 {
        chosen = (Candidate::Blend, a_blend);
    }
    let choice = Choice {
        lightgbm_auc: a_gbm,
        logistic_auc: a_lr,
        blend_auc: a_blend,
        mean_auc: a_mean,
        chosen: chosen.0,
    };
    let (gbm_weight, lr_weight, bias) = blend.as_ref().map_or((0.0, 1.0, 0.0), |b| {
        // Undo the blend's standardisation: one log-odds over the two raw ones.
        let (w0, w1) = (b.weights[0] / b.scale[0], b.weights[1] / b.scale[1]);
        (w0, w1, b.bias - w0 * b.mean[0] - w1 * b.mean[1])
    });
    let (stack, scores) = match chosen.0 {
        Candidate::Lightgbm => (None, gbm.to_vec()),
        Candidate::Logistic => (
            Some(Stack {
                candidate: Candidate::Logistic,
                logistic,
                gbm_weight: 0.0,
                lr_weight: 1.0,
                bias: 0.0,
            }),
            lr_p,
        ),
        Candidate::Blend => (
            Some(Stack {
                candidate: Candidate::Blend,
                logistic,
                gbm_weight,
                lr_weight,
                bias,
            }),
            blend_oof,
        ),
        Candidate::Mean => (
            Some(Stack {
                candidate: Candidate::Mean,
                logistic,
                gbm_weight: 0.5,
                lr_weight: 0.5,
                bias: 0.0,
            }),
            mean,
        ),
    };
    (stack, choice, scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn logistic_regression_recovers_known_weights() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (x, y): (Vec<[f64; 2]>, Vec<bool>) = (0..20_000)
            .map(|_| {
                let row = [rng.random::<f64>() * 4.0 - 2.0, rng.random::<f64>() * 2.0];
                let p = sigmoid(1.5 * row[0] - 2.0 * row[1] + 0.5);
                (row, rng.random::<f64>() < p)
            })
            .unzip();
        let m = Logistic::fit(&x, &y, 1e-6).unwrap();
        // Back on the raw scale.
        let w0 = m.weights[0] / m.scale[0];
        let w1 = m.weights[1] / m.scale[1];
        let b = m.bias - w0 * m.mean[0] - w1 * m.mean[1];
        assert!((w0 - 1.5).abs() < 0.1, "{w0}");
        assert!((w1 + 2.0).abs() < 0.15, "{w1}");
        assert!((b - 0.5).abs() < 0.15, "{b}");
        assert!(Logistic::fit(&x, &vec![true; x.len()], 1.0).is_err());
    }

    #[test]
    fn choice_prefers_the_candidate_that_ranks_the_validation_fold_better() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let n = 2_000;
        let ids: Vec<Uuid> = (0..n as u128).map(|i| Uuid::from_u128(i + 1)).collect();
        let signal: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 4.0 - 2.0).collect();
        let labels: Vec<bool> = signal
            .iter()
            .map(|s| rng.random::<f64>() < sigmoid(2.0 * s))
            .collect();
        // The logistic regression sees the signal; "LightGBM" is noise.
        let rows: Vec<[f64; 8]> = signal
            .iter()
            .map(|s| [*s, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            .collect();
        let logistic = Logistic::fit(&rows, &labels, LR_L2).unwrap();
        let noise: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
        let (stack, choice, scores) = choose(logistic, &noise, &rows, &ids, &labels, 1);
        assert!(
            choice.logistic_auc > 0.8 && choice.lightgbm_auc < 0.6,
            "{choice:?}"
        );
        assert_ne!(choice.chosen, Candidate::Lightgbm, "{choice:?}");
        let stack = stack.unwrap();
        assert!(roc_auc(&stack.apply(&noise, &rows), &labels) > 0.8);
        assert_eq!(scores.len(), n);
        // The other way round LightGBM (the signal as a probability) keeps serving alone
        // or in a blend that leans on it.
        let gbm: Vec<f64> = signal.iter().map(|s| sigmoid(2.0 * s)).collect();
        let flat: Vec<[f64; 8]> = (0..n)
            .map(|_| [rng.random::<f64>(), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            .collect();
        let weak = Logistic::fit(&flat, &labels, LR_L2).unwrap();
        let (_, choice, _) = choose(weak, &gbm, &flat, &ids, &labels, 1);
        assert_ne!(choice.chosen, Candidate::Logistic, "{choice:?}");
    }
}
