//! Automations' Postgres side (docs/automations.md).
//!
//! - [`store`] keeps the `automations` rows (validated definitions, the kill switch),
//!   pages through runs and sends, and computes results (funnel, conversions vs. the
//!   control group);
//! - [`plan`] judges one profile for an automation: the profile's context (address,
//!   consent, 24-hour WhatsApp window, template values), the guardrails (consent,
//!   suppression, frequency caps, quiet hours in the brand time zone, control group) and
//!   the rendered message. The automations service acts on a judgement; a dry run only
//!   shows it.
//!
//! # Assumptions, running, testing
//!
//! Assumes the schema of `migrations/` (`automations`, `automation_run`,
//! `automation_send`). Time-zone arithmetic is Postgres's (its IANA database), so no
//! time-zone data ships with the binaries. Tests: `cargo nextest run -p journeys` and
//! the service's end-to-end tests (`cargo nextest run -p automations`).

pub mod dry;
pub mod plan;
pub mod store;

pub use plan::Policy;
pub use store::AutomationError;
