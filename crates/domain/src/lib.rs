//! Pure ConstIntel types and rules shared by every service and the dashboard.
//!
//! Nothing in this crate does I/O: it holds the vocabulary of the product (sources,
//! channels, event types, identifiers, normalised events, orders) and the parsers that
//! turn untrusted values into those types. It compiles to `wasm32-unknown-unknown` so the
//! Leptos dashboard reuses the same types for API payloads (build it with
//! `default-features = false` there to leave phone metadata out of the bundle).
//!
//! # Assumptions, running, testing
//!
//! No I/O and no services: only values in, values out. Features: `phone` (default, phone
//! numbers through libphonenumber) and `openapi` (the payloads' utoipa schemas, on for host
//! builds through the workspace). Tests: `cargo nextest run -p domain` (unit and property
//! tests); the dashboard's wasm32 build (`just build-dashboard`) proves it still compiles
//! without `phone`. No benchmark of its own: parsing costs show up in `bench/ingest`.

#[macro_use]
mod names;

pub mod api;
pub mod audience;
pub mod automation;
pub mod consent;
pub mod event;
pub mod identifier;
pub mod order_write;
pub mod profile;
pub mod source;

pub use event::{
    EventType, LINK_ONLY_PROPERTY, NormalizedEvent, Order, OrderItem, OrderStatus, link_only_of,
};
pub use identifier::{Identifier, IdentifierError, IdentifierKind, Strength};
pub use order_write::{
    MAX_AMOUNT, MAX_TOTAL, MONEY_PRECISION, MONEY_SCALE, OrderState, OrderWrite, Product, Refund,
    amount_fits, saturate_total,
};
pub use profile::{Customer360, MergeRequest, PredictionRequest, ProfileChange, ProfileChangeKind};
pub use source::{Channel, Source};
