//! The ingestion library: everything more than one binary needs to take events in.
//!
//! - [`sources`]: one module per source behind the [`sources::Connector`] trait,
//!   registered in one place: what ingest accepts from each source, how a delivery
//!   authenticates and is deduplicated, how its raw events map to normalised events.
//!   Routes, integration kinds, webhook URLs and docs tables derive from it.
//! - [`normalize`]: the dispatcher from a raw event to the normalised shape.
//! - [`raw_event`]: the raw event row, its `events.raw` payload and the mappings' view.
//! - [`raw`]: the durable raw-event store with group commit, and publishing to
//!   `events.raw` after the commit.
//! - [`outbox`]: the `events.raw` outbox (`raw_event_outbox_batch`, `raw_event_outbox`),
//!   for the streams runtime's relay.
//! - [`connection_log`]: the batched per-integration delivery log.
//! - [`integrations`]: creating integrations and rotating their secrets, per the
//!   registry.
//! - [`signing`]: Shopify, WooCommerce and Twilio signatures, both ways.
//! - [`csv`]: the streaming CSV importer behind `ctl import csv` and the upload API.
//!
//! The ingest service is the HTTP edge over this crate; the normalizer consumes
//! `events.raw` and writes what [`normalize`] returns through `storage::normalized`.
//!
//! # Assumptions, running, testing
//!
//! The mappings ([`sources`], [`normalize`]) are pure. The raw-event store, outbox,
//! connection log, integrations and CSV importer assume a migrated Postgres and, for
//! publishing, Redis through `streams`. Tests: `cargo nextest run -p ingestion` (unit,
//! property and snapshot tests of every mapping; `tests/` import CSVs into a database of
//! their own and check docs/ingestion.md's endpoint table against the registry).
//! Benchmark: `bench/ingest/run.sh` (signed events stored per second and the CSV
//! importer's memory, against this machine's Redis and Postgres ceilings).

pub mod connection_log;
pub mod csv;
pub mod integrations;
pub mod normalize;
pub mod outbox;
pub mod raw;
pub mod raw_event;
pub mod signing;
pub mod sources;
