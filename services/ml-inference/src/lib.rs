//! The ml-inference service: keeps every profile's predictions current.
//!
//! - **Online scoring.** Consumes `predictions.requests` (payload
//!   [`domain::PredictionRequest`], published by the identity merger when a profile's
//!   facts change) in batches through the shared stream runner: de-duplicates the batch,
//!   computes features as of now, writes them to the feature store, scores with the
//!   active models, upserts `predictions` and refreshes each profile's Customer 360
//!   cache. A batch is all-or-nothing: a failure fails every entry, by its class
//!   (`service_kit::handler_error`): an outage is held and retried uncounted, anything
//!   else makes the stream runner hand the batch back in halves until the failing
//!   profile's request is alone. Scoring is idempotent (features and predictions are
//!   upserts), so a redelivered entry only re-scores the profile.
//! - **Model reloads.** Before each batch the scorer compares the registry's active
//!   version ids with those it holds (one indexed query) and reloads on any change —
//!   after a training run, `ctl ml activate` or a rollback.
//! - **Scheduled retraining.** Every `ML_RETRAIN_INTERVAL_HOURS` (and once at start-up
//!   when no model is active) it trains and registers churn, LTV and segments, then
//!   re-scores every profile. A session advisory lock makes one replica train at a
//!   time; the others skip that round.
//! - **Profile changes.** New predictions queue a `predicted` change in the same
//!   transaction; this service's relay publishes them on `profiles.changes`.
//!
//! Health and metrics on `ML_INFERENCE_BIND` (`/healthz`, `/readyz`, `/metrics`).
//!
//! # Assumptions, running, testing
//!
//! Assumes a migrated Postgres and Redis, and the identity merger publishing
//! `predictions.requests`; with no active model it trains one first (which needs enough
//! order history). Run: `just run ml-inference` (port 9104). Tests: `cargo nextest run -p
//! ml-inference` (the service on port 0 scoring a simulated brand; the models' own tests
//! are in `crates/ml`). Benchmark: `bench/ml/run.sh` (training time and scoring
//! throughput).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use domain::PredictionRequest;
use ml::pipeline::{self, CacheUpdate};
use ml::{ActiveModels, registry};
use service_kit::ServiceContext;
use storage::customer360::Customer360Cache;
use streams::{ConsumerOptions, Delivery, Handler, HandlerError, Topic};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use uuid::Uuid;

/// The consumer group of this service on `predictions.requests`.
pub const GROUP: &str = "ml-inference";

/// Pause between passes of the `profiles.changes` relay when its outbox is empty.
pub const PROFILE_CHANGES_PASS: Duration = Duration::from_millis(200);

/// Advisory lock key that lets one replica train at a time.
pub const TRAINING_LOCK: i64 = 0x004D_4C54_5241_494E;

/// Runs the service on `listener` until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener) -> anyhow::Result<()> {
    let scorer = Arc::new(Scorer::new(&ctx));
    let consumer = tokio::spawn(streams::run_consumer(
        ctx.streams(),
        Topic::PredictionsRequests,
        ConsumerOptions::from_settings(&ctx.settings, GROUP),
        Arc::clone(&scorer),
        ctx.shutdown.clone(),
    ));
    let schedule = tokio::spawn(retrain_schedule(ctx.clone(), Arc::clone(&scorer)));
    let changes = tokio::spawn(service_kit::profile_changes::run_relay(
        ctx.streams(),
        ctx.db.clone(),
        GROUP,
        PROFILE_CHANGES_PASS,
        ctx.shutdown.clone(),
    ));
    let router = service_kit::ops_router(ctx.readiness());
    let served = ctx.serve(listener, router).await;
    ctx.shutdown.cancel();
    consumer.await.context("consumer task")??;
    schedule.await.context("retrain task")?;
    changes.await.context("profile-change relay task")??;
    served
}

/// Scores profiles with the registry's active models, reloading them when they change.
pub struct Scorer {
    ctx: ServiceContext,
    cache: Customer360Cache,
    models: Mutex<Arc<ActiveModels>>,
}

impl Scorer {
    /// A scorer with no models loaded yet (they load on first use).
    pub fn new(ctx: &ServiceContext) -> Self {
        let cache = Customer360Cache::new(
            ctx.db.clone(),
            ctx.redis.clone(),
            ctx.settings.stream_prefix.clone(),
            Duration::from_secs(ctx.settings.identity.customer360_cache_ttl_secs),
        );
        Self {
            ctx: ctx.clone(),
            cache,
            models: Mutex::new(Arc::new(ActiveModels::default())),
        }
    }

    /// The active models, reloaded if the registry's active versions differ from those
    /// held.
    pub async fn current_models(&self) -> anyhow::Result<Arc<ActiveModels>> {
        let mut held = self.models.lock().await;
        let active = registry::active_ids(&self.ctx.db).await?;
        let find = |task| active.iter().find(|(t, _)| *t == task).map(|(_, id)| *id);
        let wanted = [
            find(ml::Task::Churn),
            find(ml::Task::Ltv),
            find(ml::Task::Segment),
            find(ml::Task::Recommend),
        ];
        if wanted != held.version_ids() {
            let loaded = pipeline::load_active(&self.ctx.db, &self.ctx.settings.ml).await?;
            tracing::info!(churn = ?wanted[0], ltv = ?wanted[1], segment = ?wanted[2], recommend = ?wanted[3], "active models loaded");
            *held = Arc::new(loaded);
        }
        Ok(Arc::clone(&held))
    }

    /// Scores `ids` now and refreshes their Customer 360 documents. Returns how many
    /// live profiles were scored.
    pub async fn score(&self, ids: &[Uuid]) -> anyhow::Result<usize> {
        let models = self.current_models().await?;
        let mut redis = self.ctx.redis.clone();
        let started = Instant::now();
        let n = pipeline::score_profiles(
            &self.ctx.db,
            &mut redis,
            &self.ctx.settings.stream_prefix,
            &models,
            ids,
            Utc::now(),
            CacheUpdate::Refresh(&self.cache),
        )
        .await?;
        metrics::counter!("ml_profiles_scored_total").increment(n as u64);
        metrics::histogram!("ml_score_batch_seconds").record(started.elapsed().as_secs_f64());
        Ok(n)
    }

    /// Trains and registers every model, reloads, and re-scores every profile — unless
    /// another replica holds the training lock. Returns whether it trained.
    pub async fn retrain_and_rescore(&self) -> anyhow::Result<bool> {
        let mut lock_conn = self.ctx.db.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(TRAINING_LOCK)
            .fetch_one(&mut *lock_conn)
            .await?;
        if !locked {
            tracing::info!("another replica is training; skipping this round");
            return Ok(false);
        }
        let result = async {
            let started = Instant::now();
            let run = pipeline::train_and_register(&self.ctx.db, &self.ctx.settings.ml, Utc::now())
                .await?;
            tracing::info!(
                profiles = run.profiles,
                secs = started.elapsed().as_secs_f64(),
                "training run finished"
            );
            let models = self.current_models().await?;
            let mut redis = self.ctx.redis.clone();
            let n = pipeline::score_all(
                &self.ctx.db,
                &mut redis,
                &self.ctx.settings.stream_prefix,
                &models,
                self.ctx.settings.ml.ml_batch_size,
                Utc::now(),
            )
            .await?;
            metrics::counter!("ml_profiles_scored_total").increment(n as u64);
            tracing::info!(profiles = n, "re-scored every profile");
            anyhow::Ok(())
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(TRAINING_LOCK)
            .execute(&mut *lock_conn)
            .await?;
        result.map(|()| true)
    }
}

#[async_trait::async_trait]
impl Handler for Scorer {
    type Payload = PredictionRequest;

    async fn handle(&self, batch: &[Delivery<PredictionRequest>]) -> Vec<Result<(), HandlerError>> {
        let mut ids: Vec<Uuid> = batch
            .iter()
            .map(|d| d.envelope.payload.profile_id)
            .collect();
        ids.sort();
        ids.dedup();
        match self.score(&ids).await {
            Ok(n) => {
                for d in batch {
                    tracing::debug!(profile_id = %d.envelope.payload.profile_id, request_id = %d.envelope.id, "profile scored");
                }
                tracing::debug!(requests = batch.len(), profiles = n, "scored");
                batch.iter().map(|_| Ok(())).collect()
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "scoring a batch failed");
                batch
                    .iter()
                    .map(|_| Err(service_kit::handler_error(e.as_ref())))
                    .collect()
            }
        }
    }
}

/// Retrains every `ML_RETRAIN_INTERVAL_HOURS` (never when 0), and once soon after
/// start-up when a task has no model this build can serve and nothing was trained in
/// the last hour.
async fn retrain_schedule(ctx: ServiceContext, scorer: Arc<Scorer>) {
    let hours = ctx.settings.ml.ml_retrain_interval_hours;
    let interval = (hours > 0).then(|| Duration::from_secs(u64::from(hours) * 3600));
    // Soon after start when something cannot be served (no model yet, or one from an
    // older feature set) and nothing was trained lately — not on every restart of a
    // brand whose history is too thin to train on.
    let no_models = matches!(
        registry::training_due(&ctx.db, ml::FEATURE_SET_VERSION, chrono::Duration::hours(1)).await,
        Ok(true)
    );
    let mut next = if no_models && interval.is_some() {
        Duration::from_secs(5)
    } else {
        match interval {
            Some(i) => i,
            None => return,
        }
    };
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = tokio::time::sleep(next) => {}
        }
        match scorer.retrain_and_rescore().await {
            Ok(_) => {}
            // Too little data is normal on a young fleet; the next round tries again.
            Err(e) if matches!(e.downcast_ref(), Some(ml::MlError::NotEnoughData(_))) => {
                tracing::info!(reason = format!("{e:#}"), "scheduled training skipped");
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "scheduled training failed"),
        }
        match interval {
            Some(i) => next = i,
            None => return,
        }
    }
}
