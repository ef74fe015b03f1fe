//! The identity-merger service: one true profile per person.
//!
//! Runs, until shutdown, in one process:
//! - a consumer of `events.normalized` (group `identity-merger`) handing each batch to
//!   the [`Resolver`], which attaches events to profiles, merges, raises review items
//!   and keeps Customer 360 facts fresh; under a backlog the consumer's ordering window
//!   (one for the group, shared by every replica) hands over two reads merged in time
//!   order, so fewer events arrive late;
//! - the refresher rewriting the Customer 360 documents of what each batch changed,
//!   while the next batch is resolved;
//! - a consumer of `profiles.merge_requests` (same group) applying analysts' decisions
//!   (approve/reject review items, manual merges, unmerges, GDPR erasure), so every
//!   profile write goes through this service;
//! - the outbox relay publishing debounced `predictions.requests`;
//! - the relay publishing `profiles.changes` (profiles created, updated, merged away,
//!   erased), queued in the transaction of each change;
//! - the ops endpoints (`/healthz`, `/readyz`, `/metrics`).
//!
//! Any number of replicas may run in the group: they serialise on the identifiers and
//! profiles they touch (see `identity::resolver::locks`) and produce the same profiles
//! as one replica.
//!
//! # Assumptions, running, testing
//!
//! Assumes a migrated Postgres and Redis, and the normalizer publishing
//! `events.normalized`. Run: `just run identity-merger` (port 9103). Tests: `cargo nextest
//! run -p identity-merger` (the service on port 0 fed the scenario generator's events, with
//! replicas, late events and analysts' requests; the resolver's own tests are in
//! `crates/identity`). Benchmark: `bench/identity/run.sh` (events/s through 1 and 3
//! replicas).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use domain::{MergeRequest, NormalizedEvent};
use identity::resolver::Resolver;
use identity::resolver::outbox::PredictionOutbox;
use service_kit::ServiceContext;
use streams::{ConsumerOptions, Delivery, Handler, HandlerError, OutboxOptions, Topic};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The consumer group of every merger replica.
pub const GROUP: &str = "identity-merger";

/// Hands batches of normalised events to the resolver.
pub struct EventHandler {
    resolver: Resolver,
    /// The profiles each committed batch changed, for the refresher task.
    refresh: mpsc::UnboundedSender<Vec<Uuid>>,
}

/// Rewrites the Customer 360 documents of the profiles the event batches changed, off
/// the merger's critical path: the next batch is read and resolved while the documents
/// of the last one are built (six reads and a Redis pipeline each). One task, in commit
/// order, so a document is never written back older than one written before it; what
/// queued up meanwhile is refreshed at once (each profile once). Returns when every
/// sender is gone and the queue is empty. Failures are only logged
/// ([`Resolver::refresh`]).
async fn refresher(resolver: Resolver, mut queue: mpsc::UnboundedReceiver<Vec<Uuid>>) {
    while let Some(first) = queue.recv().await {
        let mut ids: BTreeSet<Uuid> = first.into_iter().collect();
        while let Ok(more) = queue.try_recv() {
            ids.extend(more);
        }
        let ids: Vec<Uuid> = ids.into_iter().collect();
        resolver.refresh(&ids).await;
    }
}

#[async_trait::async_trait]
impl Handler for EventHandler {
    type Payload = NormalizedEvent;

    async fn handle(&self, batch: &[Delivery<NormalizedEvent>]) -> Vec<Result<(), HandlerError>> {
        let events = batch.iter().map(|d| &d.envelope.payload);
        match self.resolver.resolve_deferred(events).await {
            Ok(report) => {
                let changed = report.stale_documents();
                if !changed.is_empty() {
                    // The refresher outlives every handler; a send can only fail while
                    // the process is going down, when documents expire on their own.
                    let _ = self.refresh.send(changed);
                }
                metrics::counter!("identity_events_resolved_total")
                    .increment(report.resolved as u64);
                metrics::counter!("identity_events_redelivered_total")
                    .increment(report.already_resolved as u64);
                metrics::counter!("identity_events_stored_total").increment(report.stored as u64);
                metrics::counter!("identity_events_suppressed_total")
                    .increment(report.suppressed as u64);
                metrics::counter!("identity_merges_total").increment(report.merges as u64);
                metrics::counter!("identity_review_items_total").increment(report.reviews as u64);
                metrics::counter!("identity_replays_total").increment(report.replays as u64);
                metrics::counter!("identity_replayed_region_events_total")
                    .increment(report.replayed_events as u64);
                metrics::counter!("identity_late_events_in_place_total")
                    .increment(report.settled as u64);
                for (cause, n) in &report.replayed_because {
                    metrics::counter!("identity_replayed_events_total", "cause" => cause.as_str())
                        .increment(*n as u64);
                }
                if report.settled > 0 || !report.replayed_because.is_empty() {
                    let causes: Vec<String> = report
                        .replayed_because
                        .iter()
                        .map(|(c, n)| format!("{}={n}", c.as_str()))
                        .collect();
                    tracing::info!(
                        events = batch.len(),
                        late_in_place = report.settled,
                        replays = report.replays,
                        replayed_region_events = report.replayed_events,
                        replayed = %causes.join(" "),
                        "late events resolved"
                    );
                }
                batch.iter().map(|_| Ok(())).collect()
            }
            Err(e) => {
                // Nothing of the failed step was committed; earlier steps were, and their
                // events are skipped as resolved when the batch (or the runner's halves
                // of it, when the error is the data's) comes back.
                tracing::warn!(error = %e, events = batch.len(), "resolving a batch failed");
                batch
                    .iter()
                    .map(|_| Err(service_kit::handler_error(&e)))
                    .collect()
            }
        }
    }

    /// Canonical order, `(occurred_at, event_id)`: under a backlog the group's replicas
    /// hand over reads merged in it across the fleet (`streams::window`), so an event
    /// read one batch after a later one — by this replica or another — is usually not
    /// late.
    fn order_key(&self, delivery: &Delivery<NormalizedEvent>) -> Option<streams::window::OrderKey> {
        let event = &delivery.envelope.payload;
        Some((event.occurred_at, event.event_id))
    }
}

/// Applies analysts' decisions.
pub struct RequestHandler {
    resolver: Resolver,
}

#[async_trait::async_trait]
impl Handler for RequestHandler {
    type Payload = MergeRequest;

    async fn handle(&self, batch: &[Delivery<MergeRequest>]) -> Vec<Result<(), HandlerError>> {
        let mut results = Vec::with_capacity(batch.len());
        for d in batch {
            let request = &d.envelope.payload;
            match self.resolver.apply_request(d.envelope.id, request).await {
                Ok(outcome) => {
                    metrics::counter!("identity_requests_applied_total").increment(1);
                    tracing::info!(request_id = %d.envelope.id, ?request, outcome = %outcome.detail, "merge request applied");
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(service_kit::handler_error(&e))),
            }
        }
        results
    }
}

/// Runs the service on `listener` until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener) -> anyhow::Result<()> {
    let streams = ctx.streams();
    let resolver = Resolver::new(ctx.db.clone(), ctx.redis.clone(), &ctx.settings).await?;
    // Consumer names are distinct per replica and per consumer (host, process, and a
    // counter within it), so replicas of one host, and tests running several in one
    // process, never share one.
    let mut events_opts = ConsumerOptions::from_settings(&ctx.settings, GROUP);
    events_opts.batch_size = ctx.settings.identity.identity_merger_batch_size.max(1);
    let (refresh, queue) = mpsc::unbounded_channel();
    let refreshing = tokio::spawn(refresher(resolver.clone(), queue));
    let events = tokio::spawn(streams::run_consumer(
        streams.clone(),
        Topic::EventsNormalized,
        events_opts,
        Arc::new(EventHandler {
            resolver: resolver.clone(),
            refresh,
        }),
        ctx.shutdown.clone(),
    ));
    let requests = tokio::spawn(streams::run_consumer(
        streams.clone(),
        Topic::MergeRequests,
        ConsumerOptions::from_settings(&ctx.settings, GROUP),
        Arc::new(RequestHandler { resolver }),
        ctx.shutdown.clone(),
    ));
    let debounce = Duration::from_millis(ctx.settings.identity.identity_predictions_debounce_ms);
    let pass = (debounce / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let relay = tokio::spawn(streams::run_outbox_relay_with(
        streams,
        Arc::new(PredictionOutbox::new(ctx.db.clone())),
        OutboxOptions {
            interval: pass,
            older_than: Duration::ZERO,
            batch: 500,
        },
        ctx.shutdown.clone(),
    ));
    let changes = tokio::spawn(service_kit::profile_changes::run_relay(
        ctx.streams(),
        ctx.db.clone(),
        "identity-merger",
        pass,
        ctx.shutdown.clone(),
    ));
    let router = service_kit::ops_router(ctx.readiness());
    let served = ctx.serve(listener, router).await;
    // The HTTP server returns on shutdown; the workers settle their batches and follow.
    ctx.shutdown.cancel();
    for task in [events, requests, relay, changes] {
        task.await??;
    }
    // The event consumer (and with it the queue's only sender) is gone: the refresher
    // writes what is left and returns.
    refreshing.await?;
    served
}
