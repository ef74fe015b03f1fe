//! Identity resolution: which events belong to the same person.
//!
//! The crate has a pure core and an I/O edge, kept apart:
//!
//! - pure: [`rules`] (every rule that decides "same person or not": junk values, match
//!   priority, the guards, limits, names, suspect identifiers, the decision for one
//!   event, and the knobs), [`model`] (canonical order, deterministic profile ids,
//!   order references), [`engine`] (graph machinery: applies decisions to an identity
//!   graph, replays regions), [`region`] (which profiles a replay takes in, for
//!   both resolvers), [`memory`] (the whole graph in memory: rebuild and
//!   arrival-order simulation), [`delta`] (what one write changes, computed from the
//!   engine's outcomes), [`redirect`] (where retired profile ids point: the holder of
//!   the event that created them), [`facts`] (the Customer 360 facts a profile accumulates),
//!   [`quality`] (pairwise precision and recall against a ground truth);
//! - I/O: [`resolver`] (applies the engine to Postgres under advisory locks and writes
//!   each computed delta in one set-based pass: forward steps, region replays,
//!   analysts' decisions and `ctl identity rebuild` alike), [`seed`] (stores events
//!   as the normalizer does, for evaluation, benchmarks and tests).
//!
//! See `docs/identity.md` for the rules in prose and the measured quality.
//!
//! # Assumptions, running, testing
//!
//! The pure modules need nothing. The resolver assumes a migrated Postgres (identifier
//! index, profiles, merge history, review queue, the predictions outbox) and Redis for the
//! Customer 360 cache, shared with every other merger replica and with `ctl identity
//! rebuild` (advisory locks make that safe). Tests: `cargo nextest run -p identity` (unit
//! and property tests; `tests/` run against the real Postgres and Redis with a database
//! and stream prefix of their own, including the quality evaluation on the scenario
//! generator). Benchmark: `bench/identity/run.sh` (events/s through 1 and 3 merger
//! replicas and rebuild time, against this machine's Postgres ceilings).

pub mod delta;
pub mod engine;
pub mod facts;
pub mod memory;
pub mod model;
pub mod quality;
pub mod redirect;
pub mod region;
pub mod resolver;
pub mod rules;
pub mod seed;

pub use engine::{Engine, Graph, Outcome};
pub use model::{EventKey, Observation, ProfileId, ProfileIds};
pub use rules::{Guards, Policy};
