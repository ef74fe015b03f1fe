//! Training and evaluation of churn, LTV and segments from profile histories. Pure: no
//! database, so `ctl ml train`, `ctl ml eval`, ml-inference and the benchmark all run
//! exactly this code on histories they loaded their own way.
//!
//! One procedure, [`evaluate_and_fit`], serves the registry and `ctl ml eval` alike:
//!
//! - **Rows.** With `c` the cutoff (for a live brand: now − H, the latest point whose
//!   horizon has fully happened), every customer who bought before `c` gives a row of
//!   features as of `c` labelled by what they did in `[c, c + H)`. Where history allows,
//!   earlier cutoffs `c − kΔ` ([`rolling_cutoffs`]) add more rows per customer: more to
//!   learn from on small data.
//! - **Fitting** ([`ChurnModel::fit`], [`LtvModel::fit`]): BG/NBD and Gamma-Gamma on the
//!   training customers, whose outputs join the features; 20 % of the training
//!   customers are a validation fold for early stopping and for calibrating the churn
//!   probability and for choosing the LTV head (expected or median spend) by MAE;
//!   LightGBM's capacity follows the number of rows ([`GbmParams::adapted`]).
//! - **Evaluation by cross-fitting** ([`crate::crossfit`]): customers are split into k
//!   folds; each fold is scored by a model fitted on the other folds only (all of a
//!   customer's rows, at every cutoff, stay on one side), so every customer is scored
//!   by a model that never saw them. The model, recency alone and BG/NBD (Gamma-Gamma ×
//!   BG/NBD for spend) are measured on the same customers, with bootstrap intervals.
//! - **The served model** is then fitted the same way on every customer; the
//!   cross-fitted figures estimate how it does on customers it has not seen.
//!
//! Population: churn and LTV rows are profiles with at least one order before the
//! cutoff — "churn" means nothing for someone who never bought. Everyone is still
//! scored for segments (see [`crate::scoring`]).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::MlError;
use crate::btyd::{Btyd, DERIVED_NAMES};
use crate::calibration::{CalibrationChoice, Calibrator, ReliabilityBin, reliability};
use crate::crossfit::{self, Interval};
use crate::features::{self, FEATURE_NAMES, Features, N_FEATURES, Outcome};
use crate::gbm::{GbmModel, GbmParams, Objective};
use crate::history::ProfileHistory;
use crate::metrics::{
    ClassificationMetrics, RegressionMetrics, average_precision, best_f1_threshold, brier, roc_auc,
};
use crate::segments::{self, SegmentMetrics, SegmentModel};
use crate::stack::{self, Choice, LR_L2, Logistic, Stack};

/// Share of training customers held back for early stopping and calibration.
const VALIDATION_SHARE: f64 = 0.2;
/// Fewest buyers at the cutoff worth training churn and LTV on.
pub const MIN_BUYERS: usize = 60;
/// Fewest customers of each churn outcome worth training on.
pub const MIN_PER_CLASS: usize = 10;
/// Earlier cutoffs added for more training rows, at most.
const MAX_EXTRA_WINDOWS: usize = 3;
/// Reliability curve bins.
const RELIABILITY_BINS: usize = 10;
/// Bootstrap resamples for the intervals.
const BOOTSTRAP: usize = 200;

/// Number of model inputs: the features, then the BTYD outputs.
pub const N_INPUTS: usize = N_FEATURES + DERIVED_NAMES.len();

/// Names of the model inputs, in column order.
pub fn input_names() -> Vec<&'static str> {
    FEATURE_NAMES.iter().copied().chain(DERIVED_NAMES).collect()
}

/// Features and outcomes of the buyers among some profiles, at one or more cutoffs.
#[derive(Debug, Clone, Default)]
pub struct LabelledRows {
    /// The profiles, one per row.
    pub profile_ids: Vec<Uuid>,
    /// Their features as of the row's cutoff.
    pub features: Vec<Features>,
    /// What they did in the horizon after it.
    pub outcomes: Vec<Outcome>,
    /// Which cutoff: 0 for the main one, k for the k-th earlier one.
    pub window: Vec<u8>,
}

impl LabelledRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Churn labels (1 = no order in the horizon).
    pub fn churned(&self) -> Vec<bool> {
        self.outcomes.iter().map(Outcome::churned).collect()
    }

    /// Spend in the horizon.
    pub fn spend(&self) -> Vec<f64> {
        self.outcomes.iter().map(|o| o.spend).collect()
    }

    /// The rows whose index satisfies `keep`.
    pub fn select(&self, keep: impl Fn(usize) -> bool) -> Self {
        let mut out = Self::default();
        for i in (0..self.len()).filter(|i| keep(*i)) {
            out.profile_ids.push(self.profile_ids[i]);
            out.features.push(self.features[i]);
            out.outcomes.push(self.outcomes[i]);
            out.window.push(self.window[i]);
        }
        out
    }

    /// The rows at the main cutoff.
    pub fn main_window(&self) -> Self {
        self.select(|i| self.window[i] == 0)
    }

    fn append(&mut self, mut other: Self) {
        self.profile_ids.append(&mut other.profile_ids);
        self.features.append(&mut other.features);
        self.outcomes.append(&mut other.outcomes);
        self.window.append(&mut other.window);
    }
}

/// Row-major matrix of feature vectors (the features alone, without BTYD outputs).
pub fn matrix(features: &[Features]) -> Vec<f32> {
    let mut x = Vec::with_capacity(features.len() * N_FEATURES);
    for f in features {
        x.extend(f.to_vec());
    }
    x
}

/// Row-major matrix of model inputs: each profile's features, then what `btyd` says
/// of them.
pub fn inputs(features: &[Features], btyd: &Btyd) -> Vec<f32> {
    let mut x = Vec::with_capacity(features.len() * N_INPUTS);
    for (f, d) in features.iter().zip(btyd.derived(features)) {
        x.extend(f.to_vec());
        x.extend(d.iter().map(|v| *v as f32));
    }
    x
}

/// Runs `f` over `items` on every core, keeping order.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(256);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Features as of `cutoff` and outcomes over the horizon after it, for every profile
/// that had ordered before `cutoff` (all in window 0).
pub fn labelled_rows(
    histories: &[ProfileHistory],
    cutoff: DateTime<Utc>,
    horizon_days: u32,
) -> LabelledRows {
    rows_at(histories, cutoff, horizon_days, 0)
}

fn rows_at(
    histories: &[ProfileHistory],
    cutoff: DateTime<Utc>,
    horizon_days: u32,
    window: u8,
) -> LabelledRows {
    let rows = par_map(histories, |h| {
        let f = features::compute(h, cutoff);
        f.has_ordered()
            .then(|| (h.profile_id, f, features::outcome(h, cutoff, horizon_days)))
    });
    let mut out = LabelledRows::default();
    for (id, f, o) in rows.into_iter().flatten() {
        out.profile_ids.push(id);
        out.features.push(f);
        out.outcomes.push(o);
        out.window.push(window);
    }
    out
}

/// The earlier cutoffs that add training rows: every Δ = max(H/3, 30 days) before
/// `cutoff`, at most `MAX_EXTRA_WINDOWS` of them, each leaving at least Δ of history
/// after `data_start` (a cutoff with almost no history teaches nothing about the
/// customers scored at `cutoff`).
pub fn rolling_cutoffs(
    cutoff: DateTime<Utc>,
    horizon_days: u32,
    data_start: Option<DateTime<Utc>>,
) -> Vec<DateTime<Utc>> {
    let Some(start) = data_start else {
        return Vec::new();
    };
    let step = Duration::days(i64::from((horizon_days / 3).max(30)));
    (1..=MAX_EXTRA_WINDOWS as i32)
        .map(|k| cutoff - step * k)
        .take_while(|c| *c - step >= start)
        .collect()
}

/// Rows at `cutoff` (window 0) and at each of `earlier` (windows 1, 2, ...).
pub fn rolling_rows(
    histories: &[ProfileHistory],
    cutoff: DateTime<Utc>,
    earlier: &[DateTime<Utc>],
    horizon_days: u32,
) -> LabelledRows {
    let mut rows = rows_at(histories, cutoff, horizon_days, 0);
    for (k, c) in earlier.iter().enumerate() {
        rows.append(rows_at(histories, *c, horizon_days, k as u8 + 1));
    }
    rows
}

/// Features of every profile as of `as_of` (for segments and scoring).
pub fn features_as_of(histories: &[ProfileHistory], as_of: DateTime<Utc>) -> Vec<(Uuid, Features)> {
    par_map(histories, |h| (h.profile_id, features::compute(h, as_of)))
}

/// A seeded, stable split of profiles: `true` for about `share` of them.
pub(crate) fn in_share(profile_id: Uuid, seed: u64, share: f64) -> bool {
    (crossfit::hash(profile_id, seed) as f64 / u64::MAX as f64) < share
}

/// Training rows split by customer into those fitted on and the validation fold
/// (main-cutoff rows only: the fold stands for the customers the model will score).
fn split_validation(rows: &LabelledRows, seed: u64) -> (LabelledRows, LabelledRows) {
    let valid = |i: usize| in_share(rows.profile_ids[i], seed ^ 0x0A11_DA7E, VALIDATION_SHARE);
    (
        rows.select(|i| !valid(i)),
        rows.select(|i| valid(i) && rows.window[i] == 0),
    )
}

/// Refuses data too small or too one-sided to learn churn from.
pub fn ensure_learnable(rows: &LabelledRows) -> Result<(), MlError> {
    let main = rows.main_window();
    let churned = main.churned().iter().filter(|c| **c).count();
    let stayed = main.len() - churned;
    if main.len() < MIN_BUYERS || churned < MIN_PER_CLASS || stayed < MIN_PER_CLASS {
        return Err(MlError::NotEnoughData(format!(
            "{} customers with a full horizon of history ({churned} churned, {stayed} bought \
             again); at least {MIN_BUYERS}, with {MIN_PER_CLASS} of each, are needed",
            main.len()
        )));
    }
    Ok(())
}

fn as_labels(churned: &[bool]) -> Vec<f32> {
    churned.iter().map(|c| f32::from(u8::from(*c))).collect()
}

/// A trained churn classifier: BTYD inputs, LightGBM, the calibration of its
/// probability and the F1-best decision threshold (on calibrated probabilities).
#[derive(Debug)]
pub struct ChurnModel {
    /// BG/NBD and Gamma-Gamma, fitted on the training customers.
    pub btyd: Btyd,
    /// The LightGBM binary model.
    pub model: GbmModel,
    /// Calibration of its probability, fitted on the validation fold.
    pub calibrator: Calibrator,
    /// Calibrated probability at or above which a profile is called likely to churn.
    pub threshold: f64,
    /// Hyper-parameters it was trained with.
    pub params: GbmParams,
    /// Calibration of the recency baseline's score on the same validation fold.
    pub recency_calibrator: Calibrator,
    /// Calibration of the BG/NBD baseline's score, when BG/NBD is fitted.
    pub bgnbd_calibrator: Option<Calibrator>,
    /// The logistic regression or blend that serves in place of LightGBM alone, when
    /// one ranked the validation fold better ([`crate::stack`]).
    pub stack: Option<Stack>,
    /// The candidates' validation ROC-AUCs and the choice (absent when the validation
    /// fold could not decide).
    pub choice: Option<Choice>,
    /// The calibration methods' cross-fitted validation Brier scores.
    pub calibration: Option<CalibrationChoice>,
}

/// The logistic regression's inputs of each profile ([`stack::lr_inputs`]).
pub fn lr_rows(btyd: &Btyd, features: &[Features]) -> Vec<[f64; 8]> {
    features
        .iter()
        .zip(btyd.derived(features))
        .map(|(f, d)| stack::lr_inputs(f, &d))
        .collect()
}

/// The recency baseline as a score in [0, 1): `r / (r + H)`, increasing with the days
/// since the last order `r` (any increasing map ranks the same; this one makes Platt
/// scaling a logistic regression on log-recency).
pub fn recency_score(f: &Features, horizon_days: u32) -> f64 {
    let r = f64::from(f.recency_days).max(0.0);
    r / (r + f64::from(horizon_days))
}

/// The BG/NBD baseline as a churn score: `exp(−E[purchases in the horizon])`, which
/// ranks customers by BG/NBD's expected purchases (the usual way to rank with it) on a
/// probability-like scale. `NaN` when BG/NBD is not fitted.
pub fn bgnbd_score(btyd: &Btyd, features: &[Features]) -> Vec<f64> {
    btyd.derived(features)
        .iter()
        .map(|d| (-d[2]).exp())
        .collect()
}

impl ChurnModel {
    /// Fits on `rows` (see the module doc).
    pub fn fit(rows: &LabelledRows, horizon_days: u32, seed: u64) -> Result<Self, MlError> {
        ensure_learnable(rows)?;
        let (fit, valid) = split_validation(rows, seed);
        let btyd = Btyd::fit(&fit.main_window().features, horizon_days);
        let params = GbmParams::adapted(Objective::Binary, seed, fit.len());
        let x = inputs(&fit.features, &btyd);
        let vx = inputs(&valid.features, &btyd);
        let model = GbmModel::train_with_validation(
            (&x, &as_labels(&fit.churned())),
            (&vx, &as_labels(&valid.churned())),
            N_INPUTS,
            &params,
        )?;
        let raw = model.predict(&vx)?;
        let labels = valid.churned();
        let both = labels.iter().any(|c| *c) && labels.iter().any(|c| !*c);
        // The purchase-history logistic regression, on the same rows as LightGBM.
        let logistic = Logistic::fit(&lr_rows(&btyd, &fit.features), &fit.churned(), LR_L2).ok();
        let (stack, choice, scores) = match logistic {
            Some(lr) if both && valid.len() >= stack::MIN_CHOICE_ROWS => {
                let (s, c, scores) = stack::choose(
                    lr,
                    &raw,
                    &lr_rows(&btyd, &valid.features),
                    &valid.profile_ids,
                    &labels,
                    seed,
                );
                (s, Some(c), scores)
            }
            _ => (None, None, raw),
        };
        let (calibrator, calibration) = if both {
            let (c, choice, _) = Calibrator::choose(&scores, &labels, &valid.profile_ids, seed);
            (c, Some(choice))
        } else {
            (Calibrator::Identity, None)
        };
        let threshold = if valid.is_empty() {
            0.5
        } else {
            best_f1_threshold(&calibrator.apply_all(&scores), &labels).0
        };
        let recency: Vec<f64> = valid
            .features
            .iter()
            .map(|f| recency_score(f, horizon_days))
            .collect();
        let recency_calibrator =
            Calibrator::fit(&recency, &valid.churned()).unwrap_or(Calibrator::Identity);
        let bgnbd_calibrator = btyd
            .bgnbd
            .map(|_| Calibrator::fit(&bgnbd_score(&btyd, &valid.features), &valid.churned()))
            .transpose()
            .ok()
            .flatten();
        Ok(Self {
            btyd,
            model,
            calibrator,
            threshold,
            params,
            recency_calibrator,
            bgnbd_calibrator,
            stack,
            choice,
            calibration,
        })
    }

    /// The chosen candidate's probability for each profile, before calibration
    /// (LightGBM's own, or the logistic regression's, or their blend's).
    pub fn uncalibrated(&self, features: &[Features]) -> Result<Vec<f64>, MlError> {
        let gbm = self.model.predict(&inputs(features, &self.btyd))?;
        Ok(match &self.stack {
            Some(s) => s.apply(&gbm, &lr_rows(&self.btyd, features)),
            None => gbm,
        })
    }
}

/// Which of an LTV model's forecasts serves: the one with the lower mean absolute
/// error on the validation fold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LtvHead {
    /// The expected spend (BG/NBD × Gamma-Gamma plus LightGBM's residual): adds up
    /// across customers to the spend a group is expected to bring.
    #[default]
    Mean,
    /// The median spend (LightGBM, absolute error): the typical customer's spend, zero
    /// for most where most customers buy nothing in the horizon; the least absolute
    /// error per customer, but it does not add up across customers.
    Median,
}

impl LtvHead {
    /// The head's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            LtvHead::Mean => "mean",
            LtvHead::Median => "median",
        }
    }
}

/// The LTV heads' mean absolute errors on the validation fold, and the one chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadChoice {
    /// The expected spend's validation MAE.
    pub mean_mae: f64,
    /// The median forecast's validation MAE.
    pub median_mae: f64,
    /// The head that serves.
    pub head: LtvHead,
}

/// A trained spend regression with its BTYD inputs: an expected-spend head and a
/// median head, one of which serves.
#[derive(Debug)]
pub struct LtvModel {
    /// BG/NBD and Gamma-Gamma, fitted on the training customers.
    pub btyd: Btyd,
    /// The LightGBM regression of the expected spend's residual.
    pub model: GbmModel,
    /// Hyper-parameters it was trained with.
    pub params: GbmParams,
    /// A median forecast of the spend (LightGBM, absolute error).
    pub median: GbmModel,
    /// Which head serves, chosen on the validation fold by MAE.
    pub choice: HeadChoice,
    /// The median spend of the training rows: a constant forecast, LTV's chance level.
    pub constant: f64,
}

impl LtvModel {
    /// Fits on `rows` (see the module doc). The mean head learns the *residual* of the
    /// BG/NBD × Gamma-Gamma forecast: boosting starts from the baseline, so on a
    /// validation fold it can only stay level with it or improve on it (early stopping
    /// picks the rounds), where trees fitted from scratch on heavy-tailed spend lose to
    /// it on real logs. The median head learns the spend with an absolute-error
    /// objective. The head with the lower MAE on the validation fold serves.
    pub fn fit(rows: &LabelledRows, horizon_days: u32, seed: u64) -> Result<Self, MlError> {
        ensure_learnable(rows)?;
        let (fit, valid) = split_validation(rows, seed);
        let btyd = Btyd::fit(&fit.main_window().features, horizon_days);
        let params = GbmParams::adapted(Objective::Regression, seed, fit.len());
        let residual = |r: &LabelledRows| -> Vec<f32> {
            r.spend()
                .iter()
                .zip(btyd_spend(&btyd, &r.features))
                .map(|(s, base)| (s - base) as f32)
                .collect()
        };
        let model = GbmModel::train_with_validation(
            (&inputs(&fit.features, &btyd), &residual(&fit)),
            (&inputs(&valid.features, &btyd), &residual(&valid)),
            N_INPUTS,
            &params,
        )?;
        let spend =
            |r: &LabelledRows| -> Vec<f32> { r.spend().iter().map(|s| *s as f32).collect() };
        let median = GbmModel::train_with_validation(
            (&inputs(&fit.features, &btyd), &spend(&fit)),
            (&inputs(&valid.features, &btyd), &spend(&valid)),
            N_INPUTS,
            &GbmParams::adapted(Objective::Median, seed, fit.len()),
        )?;
        let actual = valid.spend();
        let mean_mae = mae(
            &head_spend(&btyd, &model, LtvHead::Mean, &valid.features)?,
            &actual,
        );
        let median_mae = mae(
            &head_spend(&btyd, &median, LtvHead::Median, &valid.features)?,
            &actual,
        );
        // Ties (and an empty fold, NaN) go to the expected spend, which adds up.
        let head = if median_mae < mean_mae {
            LtvHead::Median
        } else {
            LtvHead::Mean
        };
        Ok(Self {
            btyd,
            model,
            params,
            median,
            choice: HeadChoice {
                mean_mae,
                median_mae,
                head,
            },
            constant: median_of(&fit.spend()),
        })
    }

    /// The serving head's LightGBM model.
    pub fn served(&self) -> &GbmModel {
        match self.choice.head {
            LtvHead::Mean => &self.model,
            LtvHead::Median => &self.median,
        }
    }

    /// The median forecast of each profile's spend in the horizon (never negative).
    pub fn predict_median(&self, features: &[Features]) -> Result<Vec<f64>, MlError> {
        head_spend(&self.btyd, &self.median, LtvHead::Median, features)
    }

    /// The expected spend of each profile in the horizon (never negative).
    pub fn predict_mean(&self, features: &[Features]) -> Result<Vec<f64>, MlError> {
        head_spend(&self.btyd, &self.model, LtvHead::Mean, features)
    }

    /// The serving head's forecast of each profile's spend in the horizon.
    pub fn predict(&self, features: &[Features]) -> Result<Vec<f64>, MlError> {
        head_spend(&self.btyd, self.served(), self.choice.head, features)
    }
}

/// Mean absolute error (`NaN` when empty).
fn mae(predicted: &[f64], actual: &[f64]) -> f64 {
    predicted
        .iter()
        .zip(actual)
        .map(|(p, a)| (p - a).abs())
        .sum::<f64>()
        / actual.len() as f64
}

/// The median of `values` (0 when empty).
fn median_of(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// BG/NBD × Gamma-Gamma expected spend of each profile (0 where it is not fitted: the
/// residual model then learns the spend itself).
pub fn btyd_spend(btyd: &Btyd, features: &[Features]) -> Vec<f64> {
    btyd.derived(features)
        .iter()
        .map(|d| if d[4].is_finite() { d[4] } else { 0.0 })
        .collect()
}

/// Spend predicted by an LTV head's LightGBM model (never negative): for the mean head
/// the model's residual over BG/NBD × Gamma-Gamma, for the median head the spend itself.
pub fn head_spend(
    btyd: &Btyd,
    model: &GbmModel,
    head: LtvHead,
    features: &[Features],
) -> Result<Vec<f64>, MlError> {
    let raw = model.predict(&inputs(features, btyd))?;
    Ok(match head {
        LtvHead::Mean => raw
            .into_iter()
            .zip(btyd_spend(btyd, features))
            .map(|(r, base)| (base + r).max(0.0))
            .collect(),
        LtvHead::Median => raw.into_iter().map(|v| v.max(0.0)).collect(),
    })
}

/// A ranking metric with its bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// Area under the ROC curve (0.5 is chance).
    pub roc_auc: f64,
    /// 95 % bootstrap interval of the ROC-AUC.
    pub roc_auc_ci: Interval,
    /// Average precision.
    pub pr_auc: f64,
    /// Brier score, for scores that are probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brier: Option<f64>,
}

/// The churn baselines, on the same customers as the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnBaselines {
    /// Ranking by days since the last order.
    pub recency: Ranked,
    /// BG/NBD's probability of no purchase in the horizon (fitted on the same
    /// training folds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgnbd: Option<Ranked>,
}

/// How the churn model did on cross-fitted customers, beside its baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnReport {
    /// The model's metrics (probabilities calibrated on out-of-fold scores, cross-fitted;
    /// threshold metrics at the threshold each fold's model chose on its own
    /// validation fold).
    #[serde(flatten)]
    pub metrics: ClassificationMetrics,
    /// 95 % bootstrap interval of the ROC-AUC.
    pub roc_auc_ci: Interval,
    /// Brier score of the chosen candidate's probability before calibration.
    pub brier_uncalibrated: f64,
    /// Predicted against observed churn rate by bins of calibrated probability.
    pub reliability: Vec<ReliabilityBin>,
    /// Recency-only ROC-AUC (kept at the top level for older readers).
    pub baseline_recency_roc_auc: f64,
    /// Recency-only average precision.
    pub baseline_recency_pr_auc: f64,
    /// Every baseline on the same customers.
    pub baselines: ChurnBaselines,
    /// Customer folds of the cross-fitting.
    pub folds: usize,
    /// Training rows of the served model (every cutoff).
    pub train_rows: usize,
    /// Boosting rounds of the served model (after early stopping).
    pub rounds: usize,
    /// The served model's candidates (LightGBM, logistic regression, blend) by
    /// validation ROC-AUC, and the one chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Choice>,
    /// The calibration methods by Brier score, cross-fitted over every customer's
    /// out-of-fold score, with the calibration slope and intercept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationChoice>,
}

/// The LTV baselines, on the same customers as the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LtvBaselines {
    /// BG/NBD expected purchases × Gamma-Gamma expected order value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgnbd_gamma_gamma: Option<RegressionMetrics>,
    /// Past spend rate carried over the horizon.
    pub past_spend_rate: RegressionMetrics,
    /// The training folds' median spend for everyone: a forecast without skill, the
    /// chance level of the MAE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<RegressionMetrics>,
}

/// How the LTV model did on cross-fitted customers, beside its baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LtvReport {
    /// The served forecast's metrics (each fold's model serving the head it chose on
    /// its own validation fold).
    #[serde(flatten)]
    pub metrics: RegressionMetrics,
    /// The head the served model (fitted on every customer) serves.
    #[serde(default)]
    pub head: LtvHead,
    /// The served model's heads by validation MAE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_choice: Option<HeadChoice>,
    /// The expected-spend head on the same customers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<RegressionMetrics>,
    /// The past-spend-rate baseline (kept at the top level for older readers).
    pub baseline_past_spend_rate: RegressionMetrics,
    /// Every baseline on the same customers.
    pub baselines: LtvBaselines,
    /// The median head on the same customers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<RegressionMetrics>,
    /// Customer folds of the cross-fitting.
    pub folds: usize,
    /// Training rows of the served model (every cutoff).
    pub train_rows: usize,
    /// Boosting rounds of the served model (after early stopping).
    pub rounds: usize,
}

/// Out-of-fold scores of one customer at the main cutoff.
#[derive(Debug, Clone, Copy)]
struct OutOfFold {
    churn: f64,
    churn_uncalibrated: f64,
    churn_threshold: f64,
    recency: f64,
    bgnbd_raw: f64,
    bgnbd: f64,
    spend: f64,
    spend_mean: f64,
    spend_median: f64,
    constant: f64,
    bgnbd_gg_spend: f64,
}

/// What [`evaluate_and_fit`] produced: the figures and the models to serve.
#[derive(Debug)]
pub struct Evaluated {
    /// The cross-fitted figures.
    pub summary: EvaluationSummary,
    /// The churn model fitted on every customer (what would serve).
    pub churn_model: ChurnModel,
    /// The LTV model fitted on every customer.
    pub ltv_model: LtvModel,
}

/// How churn and LTV did on cross-fitted customers, beside their baselines: what
/// `ctl ml eval --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationSummary {
    /// The cutoff of the main rows.
    pub cutoff: DateTime<Utc>,
    /// The earlier cutoffs that added training rows.
    pub rolling_cutoffs: Vec<DateTime<Utc>>,
    /// Horizon of the labels.
    pub horizon_days: u32,
    /// Customers scored.
    pub customers: usize,
    /// Churn: the model and its baselines on the held-out customers.
    pub churn: ChurnReport,
    /// Lifetime value: the model and its baselines on the held-out customers.
    pub ltv: LtvReport,
    /// BG/NBD and Gamma-Gamma fitted on every customer at the cutoff.
    pub btyd: Btyd,
}

/// Folds used for `n` customers: 5, or 3 from 50,000 (where each fold is large and
/// training time matters more than the variance of the estimate).
pub fn folds_for(n: usize) -> usize {
    if n >= 50_000 { 3 } else { 5 }
}

/// Cross-fits churn and LTV at `cutoff` (see the module doc), measures them and their
/// baselines on every customer who bought before it, then fits the models to serve on
/// all of them.
pub fn evaluate_and_fit(
    histories: &[ProfileHistory],
    cutoff: DateTime<Utc>,
    horizon_days: u32,
    seed: u64,
) -> Result<Evaluated, MlError> {
    let earlier = rolling_cutoffs(cutoff, horizon_days, data_start(histories));
    let rows = rolling_rows(histories, cutoff, &earlier, horizon_days);
    ensure_learnable(&rows)?;
    let main = rows.main_window();
    let k = folds_for(main.len());

    let oof = crossfit::cross_fit(
        &rows,
        k,
        seed,
        |train| {
            Ok((
                ChurnModel::fit(train, horizon_days, seed)?,
                LtvModel::fit(train, horizon_days, seed)?,
            ))
        },
        |(churn, ltv), test| {
            let raw = churn.uncalibrated(&test.features)?;
            let spend_mean = ltv.predict_mean(&test.features)?;
            let spend_median = ltv.predict_median(&test.features)?;
            let spend = match ltv.choice.head {
                LtvHead::Mean => &spend_mean,
                LtvHead::Median => &spend_median,
            };
            let bgnbd = bgnbd_score(&churn.btyd, &test.features);
            let gg = ltv.btyd.derived(&test.features);
            Ok((0..test.len())
                .map(|i| OutOfFold {
                    churn: churn.calibrator.apply(raw[i]),
                    churn_uncalibrated: raw[i],
                    churn_threshold: churn.threshold,
                    recency: churn
                        .recency_calibrator
                        .apply(recency_score(&test.features[i], horizon_days)),
                    bgnbd_raw: bgnbd[i],
                    bgnbd: churn
                        .bgnbd_calibrator
                        .as_ref()
                        .map_or(f64::NAN, |c| c.apply(bgnbd[i])),
                    spend: spend[i],
                    spend_mean: spend_mean[i],
                    spend_median: spend_median[i],
                    constant: ltv.constant,
                    bgnbd_gg_spend: gg[i][4],
                })
                .collect())
        },
    )?;

    let churned = main.churned();
    let spend = main.spend();
    let raw: Vec<f64> = oof.iter().map(|o| o.churn_uncalibrated).collect();
    // The served model's calibration is fitted on every customer's out-of-fold score
    // (a model that never saw them), not on its own validation fold: five times the
    // rows, so isotonic regression becomes possible from 5,000 customers. `p` is the
    // chosen calibration's cross-fitted probability (none: the scores as they are).
    let (calibrator, calibration, p) = Calibrator::choose(&raw, &churned, &main.profile_ids, seed);
    // Rankings from the raw scores (calibration may tie them); Brier from the
    // calibrated ones.
    let recency: Vec<f64> = main
        .features
        .iter()
        .map(|f| f64::from(f.recency_days))
        .collect();
    let recency_p: Vec<f64> = oof.iter().map(|o| o.recency).collect();
    let bgnbd: Vec<f64> = oof.iter().map(|o| o.bgnbd_raw).collect();
    let bgnbd_p: Vec<f64> = oof.iter().map(|o| o.bgnbd).collect();
    let has_bgnbd = bgnbd.iter().chain(&bgnbd_p).all(|v| v.is_finite());

    // Threshold metrics: each customer judged at their own fold model's threshold.
    let mut metrics = ClassificationMetrics::measure(&p, &churned, 0.5);
    let decided: Vec<f64> = oof
        .iter()
        .map(|o| {
            if o.churn >= o.churn_threshold {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let at_threshold = ClassificationMetrics::measure(&decided, &churned, 0.5);
    metrics.accuracy = at_threshold.accuracy;
    metrics.precision = at_threshold.precision;
    metrics.recall = at_threshold.recall;
    metrics.f1 = at_threshold.f1;
    metrics.threshold = oof.iter().map(|o| o.churn_threshold).sum::<f64>() / oof.len() as f64;

    let intervals = crossfit::bootstrap_auc(
        &[&p, &recency, if has_bgnbd { &bgnbd } else { &p }],
        &churned,
        BOOTSTRAP,
        seed,
    );
    let recency_ranked = Ranked {
        roc_auc: roc_auc(&recency, &churned),
        roc_auc_ci: intervals[1],
        pr_auc: average_precision(&recency, &churned),
        brier: Some(brier(&recency_p, &churned)),
    };
    let bgnbd_ranked = has_bgnbd.then(|| Ranked {
        roc_auc: roc_auc(&bgnbd, &churned),
        roc_auc_ci: intervals[2],
        pr_auc: average_precision(&bgnbd, &churned),
        brier: Some(brier(&bgnbd_p, &churned)),
    });

    let mut churn_model = ChurnModel::fit(&rows, horizon_days, seed)?;
    churn_model.threshold = best_f1_threshold(&p, &churned).0;
    churn_model.calibrator = calibrator;
    churn_model.calibration = Some(calibration);
    let ltv_model = LtvModel::fit(&rows, horizon_days, seed)?;

    let churn = ChurnReport {
        roc_auc_ci: intervals[0],
        brier_uncalibrated: brier(&raw, &churned),
        reliability: reliability(&p, &churned, RELIABILITY_BINS),
        baseline_recency_roc_auc: recency_ranked.roc_auc,
        baseline_recency_pr_auc: recency_ranked.pr_auc,
        baselines: ChurnBaselines {
            recency: recency_ranked,
            bgnbd: bgnbd_ranked,
        },
        folds: k,
        train_rows: rows.len(),
        rounds: churn_model.model.rounds(),
        candidates: churn_model.choice.clone(),
        calibration: churn_model.calibration.clone(),
        metrics,
    };

    let predicted: Vec<f64> = oof.iter().map(|o| o.spend).collect();
    let gg: Vec<f64> = oof.iter().map(|o| o.bgnbd_gg_spend).collect();
    let past: Vec<f64> = main
        .features
        .iter()
        .map(|f| features::past_spend_rate_forecast(f, horizon_days))
        .collect();
    let past_spend_rate = RegressionMetrics::measure(&past, &spend);
    let measured = |f: fn(&OutOfFold) -> f64| {
        RegressionMetrics::measure(&oof.iter().map(f).collect::<Vec<_>>(), &spend)
    };
    let ltv = LtvReport {
        metrics: RegressionMetrics::measure(&predicted, &spend),
        head: ltv_model.choice.head,
        head_choice: Some(ltv_model.choice),
        mean: Some(measured(|o| o.spend_mean)),
        baseline_past_spend_rate: past_spend_rate.clone(),
        baselines: LtvBaselines {
            bgnbd_gamma_gamma: gg
                .iter()
                .all(|v| v.is_finite())
                .then(|| RegressionMetrics::measure(&gg, &spend)),
            past_spend_rate,
            constant: Some(measured(|o| o.constant)),
        },
        median: Some(measured(|o| o.spend_median)),
        folds: k,
        train_rows: rows.len(),
        rounds: ltv_model.served().rounds(),
    };

    Ok(Evaluated {
        summary: EvaluationSummary {
            cutoff,
            rolling_cutoffs: earlier,
            horizon_days,
            customers: main.len(),
            churn,
            ltv,
            btyd: churn_model.btyd,
        },
        churn_model,
        ltv_model,
    })
}

/// What a training run is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// The end of the data ("now" for a live brand).
    pub as_of: DateTime<Utc>,
    /// Churn and LTV horizon in days.
    pub horizon_days: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Fewest segments tried.
    pub segments_min: usize,
    /// Most segments tried.
    pub segments_max: usize,
}

/// Everything one training run produced.
#[derive(Debug)]
pub struct TrainedModels {
    /// Churn and LTV, evaluated and fitted; or why there is too little data.
    pub predictive: Result<Evaluated, MlError>,
    /// The KMeans segments (centroids and business names).
    pub segments: SegmentModel,
    /// Segment quality.
    pub segment_metrics: SegmentMetrics,
    /// Earliest fact in the data.
    pub data_start: Option<DateTime<Utc>>,
}

/// The earliest fact in `histories`.
pub fn data_start(histories: &[ProfileHistory]) -> Option<DateTime<Utc>> {
    histories
        .iter()
        .flat_map(|h| {
            h.orders
                .iter()
                .map(|o| o.placed_at)
                .chain(h.events.iter().map(|e| e.at))
        })
        .min()
}

/// Trains churn, LTV and segments on `histories` up to `opts.as_of` (see the module
/// doc). Churn and LTV may be refused for lack of data while segments still train.
pub fn train_all(
    histories: &[ProfileHistory],
    opts: &TrainOptions,
) -> Result<TrainedModels, MlError> {
    let cutoff = opts.as_of - Duration::days(i64::from(opts.horizon_days));
    // Too little data for churn and LTV is an outcome to record; anything else fails.
    let predictive = match evaluate_and_fit(histories, cutoff, opts.horizon_days, opts.seed) {
        Err(e) if !matches!(e, MlError::NotEnoughData(_)) => return Err(e),
        other => other,
    };
    let now: Vec<Features> = features_as_of(histories, opts.as_of)
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    let (segments, segment_metrics) =
        segments::train(&now, opts.segments_min, opts.segments_max, opts.seed)?;
    Ok(TrainedModels {
        predictive,
        segments,
        segment_metrics,
        data_start: data_start(histories),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn split_is_stable_and_roughly_the_share() {
        let ids: Vec<Uuid> = (0..10_000u128).map(Uuid::from_u128).collect();
        let picked = ids.iter().filter(|id| in_share(**id, 42, 0.15)).count();
        assert!((1_300..1_700).contains(&picked), "{picked}");
        let again = ids.iter().filter(|id| in_share(**id, 42, 0.15)).count();
        assert_eq!(picked, again);
        let other_seed = ids
            .iter()
            .filter(|id| in_share(**id, 43, 0.15) != in_share(**id, 42, 0.15))
            .count();
        assert!(other_seed > 1_000, "another seed picks other profiles");
    }

    #[test]
    fn par_map_keeps_order() {
        let items: Vec<u32> = (0..10_000).collect();
        assert_eq!(
            par_map(&items, |x| x * 2),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn rolling_cutoffs_leave_history_before_them() {
        let day = |d: i64| Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(d);
        // Horizon 90: a step of 30 days; data from day 0, cutoff day 100.
        assert_eq!(
            rolling_cutoffs(day(100), 90, Some(day(0))),
            [day(70), day(40)]
        );
        // Long history: at most three.
        assert_eq!(rolling_cutoffs(day(1_000), 273, Some(day(0))).len(), 3);
        assert!(rolling_cutoffs(day(100), 90, None).is_empty());
        assert!(rolling_cutoffs(day(50), 90, Some(day(0))).is_empty());
    }
}
