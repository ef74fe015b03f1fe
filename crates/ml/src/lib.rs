//! Machine learning for ConstIntel: features, churn and LTV with LightGBM, KMeans
//! segments, metrics, the model registry and scoring.
//!
//! Pure core, thin edges:
//! - [`history`] is the input of every model — a profile's orders and events — and
//!   [`features`] the one function that turns it into features as of a time, for
//!   training and scoring alike.
//! - [`metrics`], [`gbm`] (LightGBM), [`btyd`] (BG/NBD and Gamma-Gamma, the classic
//!   baselines), [`calibration`], [`segments`] (KMeans), [`crossfit`] and [`train`]
//!   learn and measure, with no I/O; [`scoring`] applies active models to features.
//! - [`recs`] recommends products: item2vec vectors, an HNSW index, a blend of repeat,
//!   similar and popular candidates tuned on a past window, and its offline evaluation.
//! - [`store`] (Postgres/Redis), [`registry`] (`model_version`) and [`pipeline`] (train
//!   and register, score and write) are the edges the services call.
//! - `synthetic` and `load` (feature `synthetic`, for tests and benchmarks only) turn a
//!   simulated brand into histories or database rows; [`eval`] reads a brand's own
//!   transaction log.
//!
//! # Assumptions, running, testing
//!
//! The learning modules are pure. The edges assume a migrated Postgres (features,
//! `model_version`, `predictions`, and the orders and events the normalizer and merger
//! wrote) and Redis for the Customer 360 refresh. LightGBM is linked from `lightgbm3`
//! (built with cmake). Tests: `cargo nextest run -p ml` (unit tests, the CDNOW
//! evaluation in `tests/cdnow.rs`, and `tests/pipeline.rs` loading a simulated brand into a
//! database of its own and training, registering and scoring on it; both turn on the
//! `synthetic` feature). Benchmark: `bench/ml/run.sh` (training time and scoring
//! throughput, LightGBM against Python's on the same matrices); `bench/ml/cdnow.sh` for
//! model quality on public data.

pub mod btyd;
pub mod calibration;
pub mod crossfit;
pub mod eval;
pub mod features;
pub mod gbm;
pub mod history;
#[cfg(feature = "synthetic")]
pub mod load;
pub mod metrics;
pub mod optimise;
pub mod pipeline;
pub mod recs;
pub mod registry;
pub mod scoring;
pub mod segments;
pub mod stack;
pub mod store;
#[cfg(feature = "synthetic")]
pub mod synthetic;
pub mod train;

pub use features::{FEATURE_NAMES, FEATURE_SET_VERSION, Features};
pub use history::ProfileHistory;
pub use registry::Task;
pub use scoring::{ActiveModels, RiskTiers};

/// Anything the ML subsystem can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// LightGBM refused or failed.
    #[error(transparent)]
    Gbm(#[from] gbm::GbmError),
    /// Segmentation failed.
    #[error(transparent)]
    Segments(#[from] segments::SegmentError),
    /// Too little data to train or evaluate.
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// Input was rejected (unknown task, bad CSV header, ...).
    #[error("{0}")]
    Invalid(String),
    /// A model version or other row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A stored artefact cannot be used.
    #[error("unusable model artefact: {0}")]
    Artefact(String),
    /// Postgres failed.
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// JSON (de)serialisation failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Refreshing the Customer 360 cache failed.
    #[error("Customer 360 cache: {0}")]
    Cache(String),
    /// A blocking worker thread panicked or was cancelled.
    #[error("worker thread: {0}")]
    Task(String),
}

impl From<domain::source::UnknownName> for MlError {
    fn from(e: domain::source::UnknownName) -> Self {
        MlError::Invalid(e.to_string())
    }
}
