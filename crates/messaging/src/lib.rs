//! Outbound messaging: Twilio's Messages API for WhatsApp ([`twilio`]) and signed
//! outbound webhooks ([`webhook`]). Both classify a failed call the same way
//! ([`SendError`]): transient (retry with backoff), permanent (record, never retry) or
//! ambiguous (the request may have been acted on: never resent blindly). [`fake`] is a
//! local fake of the Messages API for tests, the benchmark and the demo fleet.
//!
//! # Assumptions, running, testing
//!
//! No state and no database: a call in, a classified answer out. Tests: `cargo nextest
//! run -p messaging` (signatures) and the automations service's tests against the
//! Twilio fake in `test-support` (auth, form fields, 429/5xx, the 24-hour rule).

pub mod fake;
pub mod twilio;
pub mod webhook;

use std::time::Duration;

/// Why a provider call did not succeed, classified for retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Not accepted, and may be tried again (429, 5xx, connection refused).
    #[error("transient failure ({code}): {message}")]
    Transient {
        /// The provider's error code or the HTTP status.
        code: String,
        /// What the provider said.
        message: String,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Refused for good (a 4xx such as an invalid number or outside the window).
    #[error("refused ({code}): {message}")]
    Permanent {
        /// The provider's error code (Twilio's, e.g. `21211`) or the HTTP status.
        code: String,
        /// What the provider said.
        message: String,
    },
    /// The request went out and no answer came back (a timeout): it may have been
    /// acted on.
    #[error("no answer: {0}")]
    Ambiguous(String),
}

/// Classifies a transport error: a connection that never opened is transient (nothing
/// was sent); anything later is ambiguous.
pub(crate) fn transport_error(e: &reqwest::Error) -> SendError {
    if e.is_connect() || e.is_builder() {
        SendError::Transient {
            code: "connect".into(),
            message: e.to_string(),
            retry_after: None,
        }
    } else {
        SendError::Ambiguous(e.to_string())
    }
}

/// The `Retry-After` header in seconds, when present.
pub(crate) fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
