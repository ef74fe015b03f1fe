//! The ml-inference service: keeps every profile's predictions current.
//!
//! - **Online scoring.** Consumes `predictions.requests` (payload
//!   [`domain::PredictionRequest`], published by the identity merger when a profile's
//!   facts change) in batches of up to `ML_BATCH_SIZE` entries through the shared stream
//!   runner: de-duplicates the batch, reads the facts of all its profiles with one query
//!   per source, computes features as of now, scores with the active models, and in one
//!   transaction writes the predictions that changed materially
//!   (`ML_PREDICTION_TOLERANCE`), their features and their `profiles.changes` entries;
//!   then rebuilds the Customer 360 documents of those profiles in one go. A batch is
//!   all-or-nothing: a failure fails every entry, by its class
//!   (`service_kit::handler_error`): an outage is held and retried uncounted, anything
//!   else makes the stream runner hand the batch back in halves until the failing
//!   profile's request is alone. Scoring is idempotent, so a redelivered entry only
//!   re-scores the profile; the profiles of a failed batch are scored again with the next
//!   batch with every write forced, so a cache write that failed after the commit is
//!   made good.
//! - **Backlog deferral.** Before scoring a batch it waits while `events.raw` or
//!   `events.normalized` holds more than `ML_DEFER_BACKLOG` entries (read with `XINFO
//!   GROUPS`, every [`DEFER_POLL`]), at most until its oldest request is
//!   `ML_DEFER_MAX_MS` old: a burst's scoring yields Postgres and the cores to the
//!   normalizer and the merger, its requests coalesce into full batches, and every
//!   request is still scored within that bound (plus the scoring itself).
//! - **Threads.** LightGBM is capped at `ML_LIGHTGBM_THREADS` threads in this process
//!   (`ml::gbm::cap_threads`).
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

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use domain::PredictionRequest;
use ml::pipeline::{self, CacheUpdate};
use ml::store::Rewrite;
use ml::{ActiveModels, registry};
use service_kit::ServiceContext;
use storage::customer360::Customer360Cache;
use streams::{ConsumerOptions, Delivery, Handler, HandlerError, StreamError, Topic};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use uuid::Uuid;

/// The consumer group of this service on `predictions.requests`.
pub const GROUP: &str = "ml-inference";

/// Pause between passes of the `profiles.changes` relay when its outbox is empty.
pub const PROFILE_CHANGES_PASS: Duration = Duration::from_millis(200);

/// Advisory lock key that lets one replica train at a time.
pub const TRAINING_LOCK: i64 = 0x004D_4C54_5241_494E;

/// How often a batch waiting for the pipeline's backlog looks at it again.
pub const DEFER_POLL: Duration = Duration::from_millis(250);

/// The streams whose backlog defers online scoring: the normalizer's and the merger's.
pub const WATCHED: [Topic; 2] = [Topic::EventsRaw, Topic::EventsNormalized];

/// Runs the service on `listener` until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener) -> anyhow::Result<()> {
    if let Err(e) = ml::gbm::cap_threads(ctx.settings.ml.ml_lightgbm_threads) {
        tracing::warn!(error = %e, "capping LightGBM's threads failed; it uses every core");
    }
    let scorer = Arc::new(Scorer::new(&ctx));
    let consumer = tokio::spawn(streams::run_consumer(
        ctx.streams(),
        Topic::PredictionsRequests,
        consumer_options(&ctx.settings),
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

/// How this service reads `predictions.requests`: the fleet's options with batches of
/// `ML_BATCH_SIZE` entries, and no read-ahead: a batch may wait for the pipeline's
/// backlog, and the requests behind it should wait unread meanwhile, to be read (and
/// coalesced) in one batch afterwards rather than held as a second batch.
pub fn consumer_options(settings: &config::Settings) -> ConsumerOptions {
    let mut opts = ConsumerOptions::from_settings(settings, GROUP);
    opts.batch_size = settings.ml.ml_batch_size.max(1);
    opts.read_ahead = false;
    opts
}

/// Longest a batch waits for the pipeline's backlog: `ML_DEFER_MAX_MS`, but never more
/// than half of the claim timeout, so no replica claims a waiting batch.
pub fn max_defer(settings: &config::Settings) -> Duration {
    Duration::from_millis(settings.ml.ml_defer_max_ms)
        .min(Duration::from_millis(settings.stream_claim_idle_ms / 2))
}

/// How long ago Redis appended the entry `entry_id` (`<ms>-<seq>`), by this host's
/// clock; zero when the id is not of that form or lies in the future.
fn entry_age(entry_id: &str, now_ms: i64) -> Duration {
    entry_id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<i64>().ok())
        .and_then(|at| u64::try_from(now_ms - at).ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}

/// Scores profiles with the registry's active models, reloading them when they change.
pub struct Scorer {
    ctx: ServiceContext,
    cache: Customer360Cache,
    models: Mutex<Arc<ActiveModels>>,
    /// Profiles of batches that failed, possibly after their commit (a Redis write of
    /// the feature store or the Customer 360 cache): scored again with the next batch
    /// with every write forced, so no cache stays stale because the retry found
    /// nothing changed.
    owed: Mutex<BTreeSet<Uuid>>,
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
            owed: Mutex::new(BTreeSet::new()),
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

    /// Scores `ids` now — with those of earlier failed batches, whose writes are
    /// forced — and refreshes the Customer 360 documents of the profiles whose
    /// predictions changed. Returns how many live profiles were scored.
    pub async fn score(&self, ids: &[Uuid]) -> anyhow::Result<usize> {
        let models = self.current_models().await?;
        let mut redis = self.ctx.redis.clone();
        let started = Instant::now();
        let mut owed = self.owed.lock().await;
        let force: Vec<Uuid> = owed.iter().copied().collect();
        let mut all: Vec<Uuid> = ids.iter().chain(&force).copied().collect();
        all.sort_unstable();
        all.dedup();
        let scored = pipeline::score_profiles(
            &self.ctx.db,
            &mut redis,
            &self.ctx.settings.stream_prefix,
            &models,
            &all,
            Utc::now(),
            CacheUpdate::Refresh(&self.cache),
            Rewrite {
                tolerance: self.ctx.settings.ml.ml_prediction_tolerance.max(0.0),
                force: &force,
            },
        )
        .await;
        let scored = match scored {
            Ok(s) => {
                owed.clear();
                s
            }
            Err(e) => {
                owed.extend(ids.iter().copied());
                return Err(e.into());
            }
        };
        drop(owed);
        metrics::counter!("ml_profiles_scored_total").increment(scored.profiles as u64);
        metrics::counter!("ml_predictions_changed_total").increment(scored.changed.len() as u64);
        metrics::histogram!("ml_score_batch_seconds").record(started.elapsed().as_secs_f64());
        Ok(scored.profiles)
    }

    /// Entries waiting in the watched streams ([`WATCHED`]): for each, undelivered
    /// (`lag`) plus pending entries of its deepest consumer group (a group whose lag
    /// Redis cannot tell counts its pending entries only); the larger of the two.
    pub async fn backlog(&self) -> Result<u64, StreamError> {
        let streams = self.ctx.streams();
        let mut deepest = 0;
        for topic in WATCHED {
            let stats = streams.topic_stats(topic).await?;
            for g in &stats.groups {
                deepest = deepest.max(g.lag.unwrap_or(0) + g.pending);
            }
        }
        Ok(deepest)
    }

    /// Waits while the watched streams hold more than `ML_DEFER_BACKLOG` entries, so a
    /// burst's scoring does not take Postgres and the cores from the normalizer and the
    /// merger — but never past [`max_defer`] after the oldest request of `batch` was
    /// published, nor past shutdown. Meanwhile further requests queue up and coalesce
    /// into the next batches. Returns how long it waited.
    pub async fn defer(&self, batch: &[Delivery<PredictionRequest>]) -> Duration {
        let threshold = self.ctx.settings.ml.ml_defer_backlog;
        let longest = max_defer(&self.ctx.settings);
        if threshold == 0 || longest.is_zero() {
            return Duration::ZERO;
        }
        let now_ms = Utc::now().timestamp_millis();
        let oldest = batch
            .iter()
            .map(|d| entry_age(&d.entry_id, now_ms))
            .max()
            .unwrap_or_default();
        let started = Instant::now();
        let deadline = started + longest.saturating_sub(oldest);
        let mut slept = false;
        loop {
            match self.backlog().await {
                Ok(n) if n > threshold => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the pipeline's backlog failed; scoring now");
                    break;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            slept = true;
            tokio::select! {
                () = self.ctx.shutdown.cancelled() => break,
                () = tokio::time::sleep(DEFER_POLL.min(deadline - now)) => {}
            }
        }
        if !slept {
            return Duration::ZERO;
        }
        let waited = started.elapsed();
        metrics::counter!("ml_score_deferrals_total").increment(1);
        metrics::histogram!("ml_score_deferred_seconds").record(waited.as_secs_f64());
        waited
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
        let waited = self.defer(batch).await;
        if !waited.is_zero() {
            tracing::debug!(
                requests = batch.len(),
                waited_ms = waited.as_millis() as u64,
                "scoring deferred by the pipeline's backlog"
            );
        }
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
