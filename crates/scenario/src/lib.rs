//! Deterministic simulators of a believable brand, for tests, benchmarks and the demo.
//!
//! Everything here is pure: given the same configuration (and seed) it returns the same
//! people, products and activities, byte for byte, and it never touches a database,
//! the network or the clock. Callers turn the output into whatever they need — rows in
//! Postgres, webhook payloads, normalised events, a feature matrix.
//!
//! - [`brand`]: the catalogue, stores, people (with a ground-truth behaviour archetype)
//!   and their time-ordered activities: orders, cancellations, refunds, browsing, cart,
//!   WhatsApp messages, QR scans and store visits.
//! - [`identity`]: who each person is to the brand's systems (e-mails, phones,
//!   cookies, devices, loyalty cards, households, counter phones, junk) and the
//!   normalised events their activities become, with the truth of who did what.
//!
//! # Assumptions, running, testing
//!
//! Pure and deterministic: no services, no clock, no randomness but the seed. Tests:
//! `cargo nextest run -p scenario`. It drives the identity quality evaluation, the ML
//! tests and `ctl demo`, and the identity and ML benchmarks (`bench/identity`,
//! `bench/ml`) generate their load with it.

pub mod brand;
pub mod identity;

pub use brand::{
    Activity, ActivityKind, Archetype, Brand, BrandConfig, Person, Product, Store, generate,
};
