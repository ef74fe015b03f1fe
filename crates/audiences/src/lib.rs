//! Audiences: saved, named rules over profiles, and their members.
//!
//! The rule itself (`domain::audience::Rule`) is pure data with its validation and the
//! in-memory evaluator. This crate is its Postgres side:
//!
//! - [`sql`] compiles a rule into one parametrised query over `customer_profile` (every
//!   value a bound parameter), for previews and full recomputes;
//! - [`facts`] loads what the in-memory evaluator needs for one profile, for live
//!   updates (the property test `tests/agreement.rs` holds both evaluations equal);
//! - [`store`] keeps the `audiences` rows (no reference cycles), previews a rule,
//!   recomputes an audience's membership in one statement, re-evaluates one profile
//!   against every audience, and pages through members. Every entry and exit is written
//!   to `audience_membership_change` with its cause.
//!
//! # Assumptions, running, testing
//!
//! Assumes the schema of `migrations/` (`audiences`, `audience_membership`,
//! `audience_membership_change`). Tests: `cargo nextest run -p audiences` against the
//! real Postgres (each test in a database of its own).

pub mod facts;
pub mod sql;
pub mod store;

pub use store::{AudienceError, MembershipChange};
