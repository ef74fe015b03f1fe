//! The destinations service: keeps HubSpot, Salesforce and any REST endpoint in sync
//! with Customer 360 (docs/destinations.md).
//!
//! Runs, until shutdown, in one process:
//! - a consumer of `profiles.changes` (group `destinations`) that only queues each
//!   changed profile for the destinations that may care (one `INSERT` per batch: it
//!   never waits on a remote, so no destination can hold up the pipeline);
//! - a poll of audience entries and exits for destinations limited to an audience;
//! - one worker per enabled destination ([`worker`]), reloaded when the destination
//!   changes, each with its own queue (`destination_queue`, leased with `FOR UPDATE
//!   SKIP LOCKED`), pacing and backoff, so one destination down or slow delays nothing
//!   else;
//! - the ops endpoints (`/healthz`, `/readyz`, `/metrics`).
//!
//! Only what changed is sent: per destination and profile, the hash of the record the
//! remote last accepted is kept (`destination_state`). Transient failures (timeouts,
//! 5xx, 429) are retried with exponential backoff and jitter for
//! `DESTINATION_RETRY_WINDOW_SECS` (a `Retry-After` wins if longer); permanent ones
//! (other 4xx, per-record errors) go to the destination's dead letters with the
//! remote's text, replayable with `ctl destination replay`.
//!
//! # Assumptions, running, testing
//!
//! Assumes a migrated Postgres and Redis, `INTEGRATION_SECRETS_KEY` (credentials are
//! sealed with it), and the identity merger and ml-inference publishing
//! `profiles.changes`. Run: `just run destinations` (port 9106). Tests: `cargo nextest
//! run -p destinations` (real local fakes of HubSpot, Salesforce and a REST endpoint
//! from `test-support`). Benchmark: `bench/destinations`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use domain::ProfileChange;
use service_kit::{CancellationToken, ServiceContext};
use sqlx::PgPool;
use storage::secrets::SecretsKey;
use streams::{ConsumerOptions, Delivery, Handler, HandlerError, Topic};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub mod connector;
pub mod http;
pub mod mapping;
pub mod model;
pub mod store;
pub mod worker;

pub use model::Destination;
pub use store::RetryPolicy;

/// The consumer group of every destinations replica.
pub const GROUP: &str = "destinations";

/// How often the service looks for new, changed or removed destinations and for
/// audience entries and exits.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// A destination operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The input was refused (unknown field, missing credential, bad URL ...).
    #[error("{0}")]
    Invalid(String),
    /// No such destination.
    #[error("no destination {0}")]
    NotFound(Uuid),
    /// The name is taken.
    #[error("{0}")]
    Conflict(String),
    /// Postgres failed.
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    /// Sealed credentials could not be opened (another key, corrupt).
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The retry policy from the settings.
pub fn retry_policy(settings: &config::Settings) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(settings.destination_retry_base_ms.max(1)),
        max: Duration::from_secs(settings.destination_retry_max_secs.max(1)),
        window: Duration::from_secs(settings.destination_retry_window_secs),
    }
}

/// The connector of `dest`, its requests logged to `db`.
pub fn connector_for(
    db: &PgPool,
    dest: &Destination,
    settings: &config::Settings,
) -> Result<Box<dyn connector::Connector>, DestinationError> {
    let http = http::Http::new(
        db.clone(),
        dest.id,
        dest.requests_per_second(),
        dest.rate_window(),
        dest.timeout(),
    )?;
    connector::build(dest, http, &settings.api.hubspot_api_base)
}

/// Checks a destination's endpoint and credentials (`ctl destination test`, the API):
/// `Ok(message)` when the remote accepted them, `Err(message)` with its answer if not.
pub async fn test_connection(
    db: &PgPool,
    key: &SecretsKey,
    settings: &config::Settings,
    id: Uuid,
) -> Result<Result<String, String>, DestinationError> {
    let dest = store::load(db, key, id).await?;
    let conn = connector_for(db, &dest, settings)?;
    Ok(conn.test().await.map_err(|e| e.to_string()))
}

/// Queues the profiles of each batch of `profiles.changes` for the destinations.
pub struct ChangeHandler {
    db: PgPool,
}

#[async_trait::async_trait]
impl Handler for ChangeHandler {
    type Payload = ProfileChange;

    async fn handle(&self, batch: &[Delivery<ProfileChange>]) -> Vec<Result<(), HandlerError>> {
        let mut ids: Vec<Uuid> = batch
            .iter()
            .map(|d| d.envelope.payload.profile_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        match store::enqueue_changes(&self.db, &ids).await {
            Ok(n) => {
                metrics::counter!("destination_profiles_queued_total").increment(n);
                batch.iter().map(|_| Ok(())).collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "queueing profile changes for destinations failed; they will be redelivered");
                batch
                    .iter()
                    .map(|_| Err(service_kit::handler_error(&e)))
                    .collect()
            }
        }
    }
}

struct Running {
    version: i64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Keeps one worker per enabled destination, restarting one whose settings changed,
/// and polls audience entries and exits, until `shutdown`.
pub async fn supervise(
    db: PgPool,
    key: SecretsKey,
    settings: config::Settings,
    shutdown: CancellationToken,
) {
    let policy = retry_policy(&settings);
    let mut running: HashMap<Uuid, Running> = HashMap::new();
    loop {
        if let Err(e) = store::poll_memberships(&db).await {
            tracing::warn!(error = %e, "reading audience entries and exits failed");
        }
        match store::enabled_versions(&db).await {
            Ok(wanted) => {
                let wanted: HashMap<Uuid, i64> = wanted.into_iter().collect();
                running.retain(|id, r| {
                    let keep = wanted.get(id) == Some(&r.version) && !r.task.is_finished();
                    if !keep {
                        r.stop.cancel();
                    }
                    keep
                });
                for (id, version) in wanted {
                    if running.contains_key(&id) {
                        continue;
                    }
                    match start_worker(&db, &key, &settings, id, policy, &shutdown).await {
                        Ok((stop, task)) => {
                            running.insert(
                                id,
                                Running {
                                    version,
                                    stop,
                                    task,
                                },
                            );
                        }
                        Err(e) => {
                            tracing::warn!(destination = %id, error = %e, "cannot start the destination's worker");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading destinations failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
        }
    }
    for (_, r) in running {
        r.stop.cancel();
        let _ = r.task.await;
    }
}

async fn start_worker(
    db: &PgPool,
    key: &SecretsKey,
    settings: &config::Settings,
    id: Uuid,
    policy: RetryPolicy,
    shutdown: &CancellationToken,
) -> Result<(CancellationToken, JoinHandle<()>), DestinationError> {
    let dest = store::load(db, key, id).await?;
    let conn = connector_for(db, &dest, settings)?;
    let stop = shutdown.child_token();
    let task = tokio::spawn(worker::run(db.clone(), dest, conn, policy, stop.clone()));
    Ok((stop, task))
}

/// Runs the service on `listener` until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener) -> anyhow::Result<()> {
    let key = service_kit::secrets_key(&ctx.settings)?;
    // Consumer names are distinct per replica (host, process, and a counter within it).
    let consumer = tokio::spawn(streams::run_consumer(
        ctx.streams(),
        Topic::ProfileChanges,
        ConsumerOptions::from_settings(&ctx.settings, GROUP),
        Arc::new(ChangeHandler { db: ctx.db.clone() }),
        ctx.shutdown.clone(),
    ));
    let workers = tokio::spawn(supervise(
        ctx.db.clone(),
        key,
        ctx.settings.clone(),
        ctx.shutdown.clone(),
    ));
    let router = service_kit::ops_router(ctx.readiness());
    let served = ctx.serve(listener, router).await;
    ctx.shutdown.cancel();
    consumer.await.context("consumer task")??;
    workers.await.context("destination workers")?;
    served
}
