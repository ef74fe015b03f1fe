//! The normalizer service: consumes `events.raw` (consumer group `normalizer`), maps
//! every source and kind to the normalised event (see `ingestion::normalize`), writes
//! `orders`, `order_items`, `order_refunds` and `products` through their one writer
//! (`storage::normalized`), and publishes each event on `events.normalized` (envelope
//! id = raw event id). The event's own `normalized_event` row is stored by the identity
//! merger, already attached to its profile, so the wide row is written once. Raw events
//! it cannot map go to `events.raw.dlq` with the reason.
//!
//! It runs `NORMALIZER_CONSUMERS` (default 1) consumers of the group in one process, so
//! one batch can be written while another waits on Postgres; each reads its next batch while
//! handling the current one (the runner's read-ahead).
//!
//! Its port serves only `/healthz`, `/readyz` and `/metrics`.
//!
//! # Assumptions, running, testing
//!
//! Assumes a migrated Postgres and Redis, and ingest publishing `events.raw`. Run: `just
//! run normalizer` (port 9102). Tests: `cargo nextest run -p normalizer` (the service on
//! port 0 mapping every fixture end to end; the mappings' own snapshot tests are in
//! `crates/ingestion`). Its throughput is part of the end-to-end figures of
//! `bench/ingest` and `ctl demo` (docs/demo.md).

mod handler;

use std::sync::Arc;

use service_kit::ServiceContext;
use streams::{ConsumerOptions, Topic};
use tokio::net::TcpListener;

pub use handler::RawEventHandler;

/// The consumer group of the normalizer on `events.raw`.
pub const GROUP: &str = "normalizer";

/// Runs the service on `listener` until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener) -> anyhow::Result<()> {
    let streams = ctx.streams();
    let handler = Arc::new(RawEventHandler {
        db: ctx.db.clone(),
        streams: streams.clone(),
        region: Arc::from(ctx.settings.default_phone_region.as_str()),
    });
    // Several consumers in the group, like replicas: batches are written concurrently.
    // The writer locks orders and products in key order, so they cannot deadlock on
    // each other, and every write is idempotent.
    let consumers: Vec<_> = (0..ctx.settings.ingest.normalizer_consumers.max(1))
        .map(|_| {
            tokio::spawn(streams::run_consumer(
                streams.clone(),
                Topic::EventsRaw,
                ConsumerOptions::from_settings(&ctx.settings, GROUP),
                handler.clone(),
                ctx.shutdown.clone(),
            ))
        })
        .collect();
    let router = service_kit::ops_router(ctx.readiness());
    let served = ctx.serve(listener, router).await;
    ctx.shutdown.cancel();
    for consumer in consumers {
        match consumer.await {
            Ok(result) => result?,
            Err(e) => anyhow::bail!("an events.raw consumer panicked: {e}"),
        }
    }
    served
}
