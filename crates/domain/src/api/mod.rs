//! Request and response payloads of the REST API under `/api/v1`.
//!
//! The api-gateway serialises these and the Leptos dashboard deserialises them, so both
//! sides compile against one definition and cannot drift. With the `openapi` feature
//! every type also derives `utoipa::ToSchema` (query structs `utoipa::IntoParams`), which
//! is how the gateway's OpenAPI document describes them; the dashboard builds without
//! that feature and gets plain serde types. `docs/api.md` lists the routes.
//!
//! One file per resource, named like the gateway's `handlers/*.rs` that serve it
//! ([`common`] holds what every resource shares); everything is re-exported here, so
//! callers write `domain::api::Page`, `domain::api::ReviewItem`, ...
//!
//! Conventions every endpoint follows:
//! - every unbounded list is a [`Page`]: keyset pagination with an opaque `cursor`
//!   (pass `next_cursor` back as `cursor`; `None` means the last page was reached);
//! - errors are [`ApiErrorBody`] with a stable `code`;
//! - actions applied asynchronously by the identity merger answer 202 with [`Accepted`];
//! - names (roles, statuses, rules, kinds, tasks) are enums that travel as snake_case
//!   strings, so the document lists their values and a typo is a 400, not an empty list;
//! - timestamps are RFC 3339 in UTC, money is a JSON number in the row's currency.

pub mod audiences;
pub mod auth;
pub mod automations;
pub mod common;
pub mod destinations;
pub mod imports;
pub mod integrations;
pub mod merges;
pub mod models;
pub mod overview;
pub mod profiles;
pub mod streams;
pub mod users;

pub use audiences::*;
pub use auth::*;
pub use automations::*;
pub use common::*;
pub use destinations::*;
pub use imports::*;
pub use integrations::*;
pub use merges::*;
pub use models::*;
pub use overview::*;
pub use profiles::*;
pub use streams::*;
pub use users::*;
