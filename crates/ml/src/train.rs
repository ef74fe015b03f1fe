//! Training and evaluation of churn, LTV and segments from profile histories. Pure: no
//! database, so `ctl ml train`, `ctl ml eval`, ml-inference and the benchmark all run
//! exactly this code on histories they loaded their own way.
//!
//! Time split (registry training, [`train_all`]): with `T` the end of the data and `H`
//! the horizon, training rows are the features of every buyer as of `T − 2H` labelled
//! by what they did in `[T − 2H, T − H)`; test rows are features as of `T − H` labelled
//! by `[T − H, T)`. The model is judged on a later period than it learnt from, as it
//! will be used. The churn decision threshold is the F1-best one on a validation slice
//! (15% of training profiles, chosen by a seeded hash), never on the test rows.
//!
//! Customer split ([`evaluate_holdout`], for `ctl ml eval`): one cutoff, profiles split
//! into training and held-out sets by a seeded hash.
//!
//! Population: churn and LTV rows are profiles with at least one order before the
//! cutoff — "churn" means nothing for someone who never bought. Everyone is still
//! scored (see [`crate::scoring`]).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::MlError;
use crate::features::{self, Features, N_FEATURES, Outcome};
use crate::gbm::{GbmModel, GbmParams, Objective};
use crate::history::ProfileHistory;
use crate::metrics::{
    ClassificationMetrics, RegressionMetrics, average_precision, best_f1_threshold, roc_auc,
};
use crate::segments::{self, SegmentMetrics, SegmentModel};

/// Share of training profiles held back to choose the churn threshold.
const VALIDATION_SHARE: f64 = 0.15;
/// Fewest labelled rows worth training on.
const MIN_ROWS: usize = 50;

/// Features and outcomes of the buyers among some profiles, at one cutoff.
#[derive(Debug, Clone, Default)]
pub struct LabelledRows {
    /// The profiles, one per row.
    pub profile_ids: Vec<Uuid>,
    /// Their features as of the cutoff.
    pub features: Vec<Features>,
    /// What they did in the horizon after it.
    pub outcomes: Vec<Outcome>,
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

    /// The feature matrix, row-major.
    pub fn matrix(&self) -> Vec<f32> {
        matrix(&self.features)
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
    fn select(&self, keep: impl Fn(usize) -> bool) -> Self {
        let mut out = Self::default();
        for i in (0..self.len()).filter(|i| keep(*i)) {
            out.profile_ids.push(self.profile_ids[i]);
            out.features.push(self.features[i]);
            out.outcomes.push(self.outcomes[i]);
        }
        out
    }
}

/// Row-major matrix of feature vectors.
pub fn matrix(features: &[Features]) -> Vec<f32> {
    let mut x = Vec::with_capacity(features.len() * N_FEATURES);
    for f in features {
        x.extend(f.to_vec());
    }
    x
}

/// Runs `f` over `items` on every core, keeping order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
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
/// that had ordered before `cutoff`.
pub fn labelled_rows(
    histories: &[ProfileHistory],
    cutoff: DateTime<Utc>,
    horizon_days: u32,
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
    }
    out
}

/// Features of every profile as of `as_of` (for segments and scoring).
pub fn features_as_of(histories: &[ProfileHistory], as_of: DateTime<Utc>) -> Vec<(Uuid, Features)> {
    par_map(histories, |h| (h.profile_id, features::compute(h, as_of)))
}

/// A seeded, stable split of profiles: `true` for about `share` of them.
fn in_share(profile_id: Uuid, seed: u64, share: f64) -> bool {
    let (hi, lo) = profile_id.as_u64_pair();
    let mut z = hi ^ lo.rotate_left(17) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z as f64 / u64::MAX as f64) < share
}

/// A trained churn classifier and its decision threshold.
#[derive(Debug)]
pub struct ChurnModel {
    /// The LightGBM binary model.
    pub model: GbmModel,
    /// Probability at or above which a profile is called likely to churn.
    pub threshold: f64,
}

/// How the churn model did on the test rows, beside the recency-only baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnReport {
    /// The model's metrics.
    #[serde(flatten)]
    pub metrics: ClassificationMetrics,
    /// ROC-AUC of ranking by days since the last order alone.
    pub baseline_recency_roc_auc: f64,
    /// Average precision of that ranking.
    pub baseline_recency_pr_auc: f64,
    /// Rows the model was fitted on.
    pub train_rows: usize,
    /// Rows the threshold was chosen on.
    pub validation_rows: usize,
}

/// How the LTV model did on the test rows, beside the past-spend-rate baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LtvReport {
    /// The model's metrics.
    #[serde(flatten)]
    pub metrics: RegressionMetrics,
    /// The naive baseline's metrics on the same rows.
    pub baseline_past_spend_rate: RegressionMetrics,
    /// Rows the model was fitted on.
    pub train_rows: usize,
}

fn ensure_rows(what: &str, rows: &LabelledRows) -> Result<(), MlError> {
    if rows.len() < MIN_ROWS {
        return Err(MlError::NotEnoughData(format!(
            "{what}: {} buyers, at least {MIN_ROWS} needed",
            rows.len()
        )));
    }
    Ok(())
}

/// Trains the churn classifier on `train` and measures it on `test`.
pub fn train_churn(
    train: &LabelledRows,
    test: &LabelledRows,
    params: &GbmParams,
) -> Result<(ChurnModel, ChurnReport), MlError> {
    ensure_rows("churn training rows", train)?;
    ensure_rows("churn test rows", test)?;
    let validation = |i: usize| in_share(train.profile_ids[i], params.seed, VALIDATION_SHARE);
    let fit = train.select(|i| !validation(i));
    let valid = train.select(validation);
    let labels = |rows: &LabelledRows| -> Vec<f32> {
        rows.churned()
            .into_iter()
            .map(|c| f32::from(u8::from(c)))
            .collect()
    };
    let model = GbmModel::train(&fit.matrix(), &labels(&fit), N_FEATURES, params)?;
    let threshold = if valid.is_empty() {
        0.5
    } else {
        best_f1_threshold(&model.predict(&valid.matrix())?, &valid.churned()).0
    };
    let p = model.predict(&test.matrix())?;
    let churned = test.churned();
    let recency: Vec<f64> = test
        .features
        .iter()
        .map(|f| f64::from(f.recency_days))
        .collect();
    let report = ChurnReport {
        metrics: ClassificationMetrics::measure(&p, &churned, threshold),
        baseline_recency_roc_auc: roc_auc(&recency, &churned),
        baseline_recency_pr_auc: average_precision(&recency, &churned),
        train_rows: fit.len(),
        validation_rows: valid.len(),
    };
    Ok((ChurnModel { model, threshold }, report))
}

/// Trains the LTV regression on `train` and measures it on `test`.
pub fn train_ltv(
    train: &LabelledRows,
    test: &LabelledRows,
    horizon_days: u32,
    params: &GbmParams,
) -> Result<(GbmModel, LtvReport), MlError> {
    ensure_rows("LTV training rows", train)?;
    ensure_rows("LTV test rows", test)?;
    let y: Vec<f32> = train.spend().into_iter().map(|s| s as f32).collect();
    let model = GbmModel::train(&train.matrix(), &y, N_FEATURES, params)?;
    let predicted: Vec<f64> = model
        .predict(&test.matrix())?
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let actual = test.spend();
    let baseline: Vec<f64> = test
        .features
        .iter()
        .map(|f| features::past_spend_rate_forecast(f, horizon_days))
        .collect();
    let report = LtvReport {
        metrics: RegressionMetrics::measure(&predicted, &actual),
        baseline_past_spend_rate: RegressionMetrics::measure(&baseline, &actual),
        train_rows: train.len(),
    };
    Ok((model, report))
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
    /// Churn model and threshold.
    pub churn: ChurnModel,
    /// Churn evaluation.
    pub churn_report: ChurnReport,
    /// Churn hyper-parameters.
    pub churn_params: GbmParams,
    /// LTV model.
    pub ltv: GbmModel,
    /// LTV evaluation.
    pub ltv_report: LtvReport,
    /// LTV hyper-parameters.
    pub ltv_params: GbmParams,
    /// Segments.
    pub segments: SegmentModel,
    /// Segment quality.
    pub segment_metrics: SegmentMetrics,
    /// Cutoff of the training rows.
    pub train_cutoff: DateTime<Utc>,
    /// Cutoff of the test rows.
    pub test_cutoff: DateTime<Utc>,
    /// Earliest fact in the data.
    pub data_start: Option<DateTime<Utc>>,
    /// Test rows (churn and LTV share them).
    pub test_rows: usize,
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

/// Trains churn, LTV and segments on a time split of `histories` (see the module doc).
pub fn train_all(
    histories: &[ProfileHistory],
    opts: &TrainOptions,
) -> Result<TrainedModels, MlError> {
    let horizon = Duration::days(i64::from(opts.horizon_days));
    let test_cutoff = opts.as_of - horizon;
    let train_cutoff = test_cutoff - horizon;
    let train = labelled_rows(histories, train_cutoff, opts.horizon_days);
    let test = labelled_rows(histories, test_cutoff, opts.horizon_days);

    let churn_params = GbmParams::new(Objective::Binary, opts.seed).sized_for(train.len());
    let (churn, churn_report) = train_churn(&train, &test, &churn_params)?;
    let ltv_params = GbmParams::new(Objective::Regression, opts.seed).sized_for(train.len());
    let (ltv, ltv_report) = train_ltv(&train, &test, opts.horizon_days, &ltv_params)?;

    let now: Vec<Features> = features_as_of(histories, opts.as_of)
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    let (segments, segment_metrics) =
        segments::train(&now, opts.segments_min, opts.segments_max, opts.seed)?;
    Ok(TrainedModels {
        churn,
        churn_report,
        churn_params,
        ltv,
        ltv_report,
        ltv_params,
        segments,
        segment_metrics,
        train_cutoff,
        test_cutoff,
        data_start: data_start(histories),
        test_rows: test.len(),
    })
}

/// Results of [`evaluate_holdout`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutReport {
    /// The cutoff features were computed at.
    pub cutoff: DateTime<Utc>,
    /// Horizon of the labels.
    pub horizon_days: u32,
    /// Churn on the held-out profiles.
    pub churn: ChurnReport,
    /// LTV on the held-out profiles.
    pub ltv: LtvReport,
    /// Held-out profiles.
    pub test_rows: usize,
}

/// Trains churn and LTV on some profiles and measures them on the others (`test_share`
/// of the buyers), at one cutoff.
pub fn evaluate_holdout(
    histories: &[ProfileHistory],
    cutoff: DateTime<Utc>,
    horizon_days: u32,
    seed: u64,
    test_share: f64,
) -> Result<HoldoutReport, MlError> {
    let rows = labelled_rows(histories, cutoff, horizon_days);
    let held_out = |i: usize| in_share(rows.profile_ids[i], seed ^ 0x5EED, test_share);
    let train = rows.select(|i| !held_out(i));
    let test = rows.select(held_out);
    let churn_params = GbmParams::new(Objective::Binary, seed).sized_for(train.len());
    let (_, churn) = train_churn(&train, &test, &churn_params)?;
    let ltv_params = GbmParams::new(Objective::Regression, seed).sized_for(train.len());
    let (_, ltv) = train_ltv(&train, &test, horizon_days, &ltv_params)?;
    Ok(HoldoutReport {
        cutoff,
        horizon_days,
        churn,
        ltv,
        test_rows: test.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
