//! Identity resolution: which events belong to the same person.
//!
//! The crate has a pure core and an I/O edge, kept apart:
//!
//! - pure: [`model`] (canonical order, deterministic profile ids, name keys),
//!   [`blocklist`] (junk values), [`policy`] (thresholds, limits, guards), [`rules`]
//!   (the decision for one event: attach, create, merge or review), [`engine`] (applies
//!   decisions to an identity graph, replays regions, learns shared identifiers),
//!   [`memory`] (the whole graph in memory: rebuild and arrival-order simulation),
//!   [`facts`] (the Customer 360 facts a profile accumulates), [`quality`] (pairwise
//!   precision and recall against a ground truth);
//! - I/O: [`resolver`] (applies the engine to Postgres under advisory locks, writes
//!   merge history, review items, the Customer 360 cache and prediction requests),
//!   [`requests`] (analysts' decisions: approve, reject, merge, unmerge, erase),
//!   [`rebuild`] (recompute every profile from the stored events).
//!
//! See `docs/identity.md` for the rules in prose and the measured quality.

pub mod blocklist;
pub mod engine;
pub mod facts;
pub mod memory;
pub mod model;
pub mod policy;
pub mod quality;
pub mod resolver;
pub mod rules;
pub mod seed;

pub use engine::{Engine, Graph, Outcome};
pub use model::{EventKey, Observation, ProfileId};
pub use policy::{Guards, Policy};
