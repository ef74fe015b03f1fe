//! Gradient-boosted trees through LightGBM (`lightgbm3`): training, prediction,
//! per-feature contributions and the model text that goes into the registry.
//!
//! LightGBM's `Booster` is a handle to C++ state and is neither `Send` nor `Sync` in
//! Rust's eyes, yet the scorer keeps one model for the life of the service and uses it
//! from blocking worker threads. [`GbmModel`] wraps it in this module, the one place
//! this workspace allows `unsafe` (the other use is [`cap_threads`]' FFI call): LightGBM guards a booster with its own internal lock (predictions
//! take a shared lock, training and single-row fast paths an exclusive one), so moving
//! and sharing the handle across threads is sound as long as nothing mutates it through
//! `&self` — and the wrapper exposes no `&mut` access.
//!
//! Reproducibility: parameters always carry the seed, `deterministic = true` and
//! `force_col_wise = true`, so the same data, seed and thread count give the same model
//! text. LightGBM's OpenMP threads use every core unless `num_threads` says otherwise.

use lightgbm3::{Booster, Dataset};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Training or prediction through LightGBM failed.
#[derive(Debug, thiserror::Error)]
#[error("LightGBM: {0}")]
pub struct GbmError(String);

impl GbmError {
    /// An error with this message (for checks of a model made outside this module).
    pub(crate) fn new(message: impl Into<String>) -> Self {
        GbmError(message.into())
    }
}

impl From<lightgbm3::Error> for GbmError {
    fn from(e: lightgbm3::Error) -> Self {
        GbmError(e.to_string())
    }
}

/// What the trees learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Probability of a yes/no outcome (log loss).
    Binary,
    /// A number (squared error).
    Regression,
    /// The median of a number (absolute error).
    Median,
}

/// Training sets smaller than this are trained on one thread (see
/// [`GbmParams::sized_for`]).
pub const PARALLEL_FROM_ROWS: usize = 20_000;

/// Hyper-parameters of one training run (the LightGBM names, so the same JSON trains
/// the Python reference in `bench/ml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbmParams {
    /// What to learn.
    pub objective: Objective,
    /// Boosting rounds.
    pub num_iterations: u32,
    /// Shrinkage per round.
    pub learning_rate: f64,
    /// Maximum leaves per tree.
    pub num_leaves: u32,
    /// Maximum depth of a tree. Bounded because the cost of explaining a prediction
    /// (TreeSHAP, [`GbmModel::contributions`]) grows with the square of the depth, and
    /// every churn score is explained.
    pub max_depth: u32,
    /// Minimum rows per leaf.
    pub min_data_in_leaf: u32,
    /// Share of features tried per tree.
    pub feature_fraction: f64,
    /// Share of rows sampled per bagging round.
    pub bagging_fraction: f64,
    /// Rounds between re-sampling rows (0 turns bagging off).
    pub bagging_freq: u32,
    /// L2 regularisation of leaf values.
    pub lambda_l2: f64,
    /// Seed of every random choice in LightGBM.
    pub seed: u64,
    /// Threads (0: LightGBM's default, every core).
    pub num_threads: u32,
    /// Rounds without improvement on the validation rows after which training stops
    /// (0: no early stopping; `num_iterations` is then the number of rounds).
    #[serde(default)]
    pub early_stopping_rounds: u32,
}

impl GbmParams {
    /// The defaults ConstIntel trains churn and LTV with.
    pub fn new(objective: Objective, seed: u64) -> Self {
        Self {
            objective,
            num_iterations: 100,
            learning_rate: 0.1,
            num_leaves: 31,
            max_depth: 6,
            min_data_in_leaf: 20,
            feature_fraction: 0.9,
            bagging_fraction: 0.8,
            bagging_freq: 1,
            lambda_l2: 1.0,
            seed,
            num_threads: 0,
            early_stopping_rounds: 0,
        }
    }

    /// Parameters sized for `rows` training rows: small data gets fewer, larger leaves
    /// and stronger regularisation (a 31-leaf tree on 2,000 rows memorises noise),
    /// large data the full capacity; rounds are chosen by early stopping on a
    /// validation fold (up to 2,000 at a learning rate of 0.03).
    pub fn adapted(objective: Objective, seed: u64, rows: usize) -> Self {
        let r = rows as f64;
        Self {
            num_iterations: 2_000,
            learning_rate: 0.03,
            // 4 leaves at 1,000 rows, 31 from 25,000.
            num_leaves: ((r / 800.0) as u32).clamp(4, 31),
            min_data_in_leaf: ((r / 100.0) as u32).clamp(10, 100),
            lambda_l2: if rows < 20_000 { 10.0 } else { 1.0 },
            feature_fraction: 0.8,
            early_stopping_rounds: 100,
            ..Self::new(objective, seed)
        }
        .sized_for(rows)
    }

    /// These parameters with a thread count suited to `rows` training rows: one thread
    /// below [`PARALLEL_FROM_ROWS`], where OpenMP's start-up and spinning cost more than
    /// they save (and are ruinous on a machine whose cores are busy), otherwise every
    /// core.
    pub fn sized_for(mut self, rows: usize) -> Self {
        self.num_threads = if rows < PARALLEL_FROM_ROWS { 1 } else { 0 };
        self
    }

    /// The parameter object LightGBM is trained with.
    pub fn to_lightgbm(&self) -> Value {
        let mut params = json!({
            "objective": match self.objective {
                Objective::Binary => "binary",
                Objective::Regression => "regression",
                Objective::Median => "regression_l1",
            },
            "num_iterations": self.num_iterations,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "num_threads": self.num_threads,
            "metric": match self.objective {
                Objective::Binary => "binary_logloss",
                Objective::Regression => "l2",
                Objective::Median => "l1",
            },
            "deterministic": true,
            "force_col_wise": true,
            "verbosity": -1,
        });
        // lightgbm3 stops at the first round without improvement when the key is 0.
        if self.early_stopping_rounds > 0 {
            params["early_stopping_rounds"] = json!(self.early_stopping_rounds);
        }
        params
    }
}

/// Caps the threads every later LightGBM call of this process may use (training,
/// prediction, explanations) at `threads`; 0 lifts the cap (every core). A process-wide
/// setting (`LGBM_SetMaxThreads`): ml-inference sets it once at start-up from
/// `ML_LIGHTGBM_THREADS`, since OpenMP's worker threads spin on a busy machine and a
/// per-call `num_threads` cannot reach the explanations (`predict_contrib` takes no
/// parameters).
pub fn cap_threads(threads: u32) -> Result<(), GbmError> {
    let n = if threads == 0 {
        -1
    } else {
        i32::try_from(threads).unwrap_or(i32::MAX)
    };
    // SAFETY: `LGBM_SetMaxThreads` only stores an integer in LightGBM's global
    // configuration (read at the start of each parallel region); it takes no pointers.
    #[allow(unsafe_code)]
    let status = unsafe { lightgbm3_sys::LGBM_SetMaxThreads(n) };
    if status == 0 {
        Ok(())
    } else {
        Err(GbmError(format!("LGBM_SetMaxThreads({n}) failed")))
    }
}

/// A trained LightGBM model, safe to share between threads.
pub struct GbmModel {
    booster: SharedBooster,
    n_features: usize,
}

/// The booster handle, declared thread-safe (see the module doc).
struct SharedBooster(Booster);

// SAFETY: a LightGBM booster is a heap object owned by this value alone; LightGBM
// serialises access to it with its own internal reader/writer lock, and `GbmModel`
// only ever calls `&self` prediction and serialisation methods after training, so
// moving it to another thread or using it from several at once cannot race.
#[allow(unsafe_code)]
unsafe impl Send for SharedBooster {}
// SAFETY: as above — every method reachable through `&GbmModel` is a read guarded by
// LightGBM's internal lock.
#[allow(unsafe_code)]
unsafe impl Sync for SharedBooster {}

impl std::fmt::Debug for GbmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GbmModel")
            .field("n_features", &self.n_features)
            .finish()
    }
}

/// LightGBM's dataset of `x` (row-major, `n_features` columns) labelled `y`, checked to
/// hold one row per label.
fn dataset(x: &[f32], y: &[f32], n_features: usize) -> Result<Dataset, GbmError> {
    if y.is_empty() || x.len() != y.len() * n_features {
        return Err(GbmError(format!(
            "{} values do not make {} rows of {n_features} features",
            x.len(),
            y.len()
        )));
    }
    Ok(Dataset::from_slice(x, y, n_features as i32, true)?)
}

impl GbmModel {
    /// Trains on `x` (row-major, `n_features` columns, `NaN` = missing) against `y`.
    pub fn train(
        x: &[f32],
        y: &[f32],
        n_features: usize,
        params: &GbmParams,
    ) -> Result<Self, GbmError> {
        let booster = Booster::train(dataset(x, y, n_features)?, &params.to_lightgbm())?;
        Ok(Self {
            booster: SharedBooster(booster),
            n_features,
        })
    }

    /// Trains on `x` against `y` with a custom objective: each round, `gradients` is
    /// given the current raw scores and the labels and fills the gradient and hessian of
    /// the loss at each row (LightGBM's objective is then `none`, so the model predicts
    /// raw scores). `params.objective` only names the metric, which is off.
    pub fn train_custom(
        x: &[f32],
        y: &[f32],
        n_features: usize,
        params: &GbmParams,
        gradients: impl FnMut(&[f64], &[f32], &mut [f32], &mut [f32]),
    ) -> Result<Self, GbmError> {
        let mut lightgbm = params.to_lightgbm();
        lightgbm["metric"] = json!("none");
        let booster =
            Booster::train_with_custom_objective(dataset(x, y, n_features)?, &lightgbm, gradients)?;
        Ok(Self {
            booster: SharedBooster(booster),
            n_features,
        })
    }

    /// Trains on `x`/`y`, stopping when the loss on the validation rows `vx`/`vy` has
    /// not improved for `params.early_stopping_rounds` rounds (the rounds since the best
    /// are rolled back).
    pub fn train_with_validation(
        (x, y): (&[f32], &[f32]),
        (vx, vy): (&[f32], &[f32]),
        n_features: usize,
        params: &GbmParams,
    ) -> Result<Self, GbmError> {
        if y.is_empty() || x.len() != y.len() * n_features || vx.len() != vy.len() * n_features {
            return Err(GbmError(format!(
                "{} and {} values do not make {} and {} rows of {n_features} features",
                x.len(),
                vx.len(),
                y.len(),
                vy.len()
            )));
        }
        if vy.is_empty() {
            return Self::train(x, y, n_features, params);
        }
        let dataset = Dataset::from_slice(x, y, n_features as i32, true)?;
        let valid =
            Dataset::from_slice_with_reference(vx, vy, n_features as i32, true, Some(&dataset))?;
        let booster = Booster::train_with_valid(dataset, Some(valid), &params.to_lightgbm())?;
        Ok(Self {
            booster: SharedBooster(booster),
            n_features,
        })
    }

    /// Boosting rounds in the model (after early stopping).
    pub fn rounds(&self) -> usize {
        usize::try_from(self.booster.0.num_iterations()).unwrap_or(0)
    }

    /// Loads a model from its text (as saved by [`GbmModel::to_text`]).
    pub fn from_text(text: &str) -> Result<Self, GbmError> {
        let booster = Booster::from_string(text)?;
        let n_features = usize::try_from(booster.num_features())
            .map_err(|_| GbmError("negative feature count".into()))?;
        Ok(Self {
            booster: SharedBooster(booster),
            n_features,
        })
    }

    /// The model as LightGBM's text format (what the registry stores).
    pub fn to_text(&self) -> Result<String, GbmError> {
        Ok(self.booster.0.save_string()?)
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// One prediction per row of `x` (probabilities for binary models).
    pub fn predict(&self, x: &[f32]) -> Result<Vec<f64>, GbmError> {
        self.check(x)?;
        if x.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.booster.0.predict(x, self.n_features as i32, true)?)
    }

    /// [`GbmModel::predict`] on the calling thread alone: for small batches (a few dozen
    /// rows), where waking OpenMP's threads costs more than the rows, and stalls on a
    /// busy machine.
    pub fn predict_on_this_thread(&self, x: &[f32]) -> Result<Vec<f64>, GbmError> {
        self.check(x)?;
        if x.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .booster
            .0
            .predict_with_params(x, self.n_features as i32, true, "num_threads=1")?)
    }

    /// Per-row feature contributions (SHAP values, in raw score units): `n_features + 1`
    /// numbers per row, the last being the expected value.
    pub fn contributions(&self, x: &[f32]) -> Result<Vec<f64>, GbmError> {
        self.check(x)?;
        if x.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .booster
            .0
            .predict_contrib(x, self.n_features as i32, true)?)
    }

    fn check(&self, x: &[f32]) -> Result<(), GbmError> {
        if !x.len().is_multiple_of(self.n_features) {
            return Err(GbmError(format!(
                "{} values are not rows of {} features",
                x.len(),
                self.n_features
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// y = 1 when x0 + noise-free x1 pattern says so: learnable by a few trees.
    fn toy(n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let a = (i % 17) as f32;
            let b = (i % 5) as f32;
            x.extend([a, b]);
            y.push(if a + b > 10.0 { 1.0 } else { 0.0 });
        }
        (x, y)
    }

    #[test]
    fn trains_predicts_and_round_trips_through_text() {
        let (x, y) = toy(600);
        let params = GbmParams {
            num_iterations: 30,
            min_data_in_leaf: 5,
            num_threads: 1,
            ..GbmParams::new(Objective::Binary, 1)
        };
        let model = GbmModel::train(&x, &y, 2, &params).unwrap();
        let p = model.predict(&x).unwrap();
        assert_eq!(p.len(), 600);
        let correct = p
            .iter()
            .zip(&y)
            .filter(|(p, y)| (**p >= 0.5) == (**y == 1.0))
            .count();
        assert!(correct > 590, "{correct}/600 correct");
        let text = model.to_text().unwrap();
        let again = GbmModel::from_text(&text).unwrap();
        assert_eq!(
            again.predict(&x).unwrap(),
            p,
            "same predictions after a round trip"
        );
        // Contributions sum to the raw score: logit of the probability.
        let c = model.contributions(&x[..2]).unwrap();
        assert_eq!(c.len(), 3);
        let logit = (p[0] / (1.0 - p[0])).ln();
        assert!((c.iter().sum::<f64>() - logit).abs() < 1e-6);
        // Same seed, same model.
        let twin = GbmModel::train(&x, &y, 2, &params).unwrap();
        assert_eq!(twin.to_text().unwrap(), text);
        assert!(model.predict(&[1.0, 2.0, 3.0]).is_err());
        assert!(GbmModel::train(&x, &y[..10], 2, &params).is_err());
    }

    #[test]
    fn shared_between_threads() {
        let (x, y) = toy(400);
        let params = GbmParams {
            num_iterations: 10,
            num_threads: 1,
            ..GbmParams::new(Objective::Regression, 3)
        };
        let model = Arc::new(GbmModel::train(&x, &y, 2, &params).unwrap());
        let expected = model.predict(&x).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (m, x) = (Arc::clone(&model), x.clone());
                std::thread::spawn(move || m.predict(&x).unwrap())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), expected);
        }
    }
}
