//! The automations service: acts on what ConstIntel knows of each profile. It keeps
//! audience membership live and runs automations (trigger → wait → conditions →
//! WhatsApp / webhook / list actions, with guardrails; see [`engine`] and
//! docs/automations.md).
//!
//! Runs, until shutdown, in one process:
//! - a consumer of `profiles.changes` (group `automations`) that re-judges each changed
//!   profile against every audience with the in-memory evaluator
//!   (`audiences::store::evaluate_profile`): a profile enters or leaves within a stream
//!   hop of the change that caused it (an event, a merge, an erasure, a prediction);
//! - a full recompute of every audience every `AUDIENCE_RECOMPUTE_INTERVAL_SECS` (and
//!   at start-up), the safety net under live updates: it catches lost or trimmed
//!   entries, rebuilds, and behaviour windows that elapse without any change (an
//!   abandoned checkout's hour passing). One replica recomputes at a time (advisory
//!   lock); the others skip that round;
//! - the automations engine ([`engine`]): the same `profiles.changes` batches start
//!   event and churn-label runs; a pass every `AUTOMATION_TICK_MS` (or as soon as a
//!   run is due) starts audience-entry and schedule runs, acts on due runs, retries
//!   failed sends and applies Twilio status callbacks;
//! - the ops endpoints (`/healthz`, `/readyz`, `/metrics`).
//!
//! Replicas share the consumer group, so more replicas share the live load. A profile's
//! evaluations are serialised by an advisory lock and each membership flip is recorded
//! once, so redeliveries and concurrent replicas change nothing twice.
//!
//! # Assumptions, running, testing
//!
//! Assumes a migrated Postgres and Redis, and the identity merger and ml-inference
//! publishing `profiles.changes`; Twilio's API at `TWILIO_API_BASE` (`ctl fake-twilio`
//! serves a local fake for development). Run: `just run automations` (port 9105).
//! Tests: `cargo nextest run -p automations` (the service on port 0: live entry and
//! exit from published changes, the periodic recompute, ops endpoints and SIGTERM; the
//! automations engine against the Twilio fake). Benchmark: `bench/automations`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use audiences::store::{self, Change};
use domain::ProfileChange;
use service_kit::{CancellationToken, ServiceContext};
use sqlx::PgPool;
use streams::{ConsumerOptions, Delivery, Handler, HandlerError, Topic};
use tokio::net::TcpListener;
use uuid::Uuid;

/// The consumer group of every automations replica.
pub const GROUP: &str = "automations";

pub mod engine;

/// Advisory lock (two-key form) that lets one replica recompute at a time.
const RECOMPUTE_LOCK: (i32, i32) = (0x4155_4449, 1);

/// Re-judges the profiles of each batch of `profiles.changes` against every audience.
pub struct ChangeHandler {
    db: PgPool,
    engine: Arc<engine::Engine>,
}

#[async_trait::async_trait]
impl Handler for ChangeHandler {
    type Payload = ProfileChange;

    async fn handle(&self, batch: &[Delivery<ProfileChange>]) -> Vec<Result<(), HandlerError>> {
        // A profile changed several times in one batch is judged once, as of now.
        let profiles: BTreeSet<Uuid> = batch
            .iter()
            .map(|d| d.envelope.payload.profile_id)
            .collect();
        let mut failed: BTreeMap<Uuid, audiences::AudienceError> = BTreeMap::new();
        for id in &profiles {
            match store::evaluate_profile(&self.db, *id, chrono::Utc::now()).await {
                Ok(changes) => {
                    metrics::counter!("audience_profiles_evaluated_total").increment(1);
                    for c in changes {
                        let change = match c.change {
                            Change::Entered => "entered",
                            Change::Exited => "exited",
                        };
                        metrics::counter!("audience_membership_changes_total", "change" => change, "cause" => "live")
                            .increment(1);
                    }
                }
                Err(e) => {
                    tracing::warn!(profile_id = %id, error = %e, "evaluating a profile's audiences failed; it will be redelivered");
                    failed.insert(*id, e);
                }
            }
        }
        // Then the runs the changes trigger (events, churn labels), once per occurrence
        // however often a profile is redelivered.
        let live: Vec<Uuid> = profiles
            .iter()
            .filter(|p| !failed.contains_key(*p))
            .copied()
            .collect();
        let triggers = engine::on_profile_changes(&self.engine, &live).await;
        if let Err(e) = &triggers {
            tracing::warn!(error = %e, "starting triggered runs failed; the batch will be redelivered");
        }
        batch
            .iter()
            .map(|d| {
                if let Err(e) = &triggers {
                    return Err(service_kit::handler_error(e));
                }
                // Classified like every consumer's errors: an outage is held, not counted.
                match failed.get(&d.envelope.payload.profile_id) {
                    Some(e) => Err(service_kit::handler_error(e)),
                    None => Ok(()),
                }
            })
            .collect()
    }
}

/// Runs the service on `listener` until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener) -> anyhow::Result<()> {
    let engine = Arc::new(engine::Engine::new(ctx.db.clone(), &ctx.settings)?);
    engine
        .policy()
        .check(&ctx.db)
        .await
        .map_err(anyhow::Error::msg)?;
    // Consumer names are distinct per replica (host, process, and a counter within it).
    let opts = ConsumerOptions::from_settings(&ctx.settings, GROUP);
    let consumer = tokio::spawn(streams::run_consumer(
        ctx.streams(),
        Topic::ProfileChanges,
        opts,
        Arc::new(ChangeHandler {
            db: ctx.db.clone(),
            engine: engine.clone(),
        }),
        ctx.shutdown.clone(),
    ));
    let interval = Duration::from_secs(ctx.settings.audience_recompute_interval_secs.max(1));
    let schedule = tokio::spawn(recompute_schedule(
        ctx.db.clone(),
        interval,
        ctx.shutdown.clone(),
    ));
    let engine_task = tokio::spawn(engine::run(
        engine,
        Duration::from_millis(ctx.settings.automations.automation_tick_ms.max(10)),
        ctx.shutdown.clone(),
    ));
    let router = service_kit::ops_router(ctx.readiness());
    let served = ctx.serve(listener, router).await;
    ctx.shutdown.cancel();
    consumer.await.context("consumer task")??;
    schedule.await.context("recompute task")?;
    engine_task.await.context("automations engine task")?;
    served
}

/// Recomputes every audience at start-up and then every `interval`, until shutdown.
pub async fn recompute_schedule(db: PgPool, interval: Duration, shutdown: CancellationToken) {
    loop {
        match recompute_if_free(&db).await {
            Ok(Some(n)) => tracing::info!(audiences = n, "audiences recomputed"),
            Ok(None) => tracing::debug!("another replica is recomputing audiences"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "recomputing audiences failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Recomputes every audience unless another replica holds the recompute lock; returns
/// how many were recomputed (`None`: another replica is at it).
pub async fn recompute_if_free(db: &PgPool) -> anyhow::Result<Option<usize>> {
    let mut conn = db.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(RECOMPUTE_LOCK.0)
        .bind(RECOMPUTE_LOCK.1)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(None);
    }
    let started = Instant::now();
    let result = store::recompute_all(db, chrono::Utc::now()).await;
    // The lock is the session's: release it on the connection that took it.
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(RECOMPUTE_LOCK.0)
        .bind(RECOMPUTE_LOCK.1)
        .execute(&mut *conn)
        .await?;
    let done = result?;
    metrics::histogram!("audience_recompute_seconds").record(started.elapsed().as_secs_f64());
    for (_, r) in &done {
        metrics::counter!("audience_membership_changes_total", "change" => "entered", "cause" => "recompute")
            .increment(r.entered.max(0) as u64);
        metrics::counter!("audience_membership_changes_total", "change" => "exited", "cause" => "recompute")
            .increment(r.exited.max(0) as u64);
    }
    Ok(Some(done.len()))
}
