//! Abuse limits: requests per second per client address and per integration, each a
//! GCRA token bucket (`governor`) holding one second's worth of burst. Over a limit,
//! ingest answers 429 with `Retry-After` and stores nothing; every platform and SDK
//! ingest serves retries a 429.
//!
//! - **Per client** (`INGEST_RATE_PER_CLIENT`): checked first, before anything is
//!   parsed, on every delivery route. The client is the TCP peer, or behind the proxies
//!   in `TRUSTED_PROXIES` the address they forwarded (`service_kit::client_ip`).
//! - **Per integration** (`INGEST_RATE_PER_INTEGRATION`): checked once the delivery has
//!   authenticated (signature, write key or token), so nobody can spend another
//!   brand's budget by posting unsigned requests to its URL.
//!
//! State is per ingest process; with N replicas the fleet allows N times the rate.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use service_kit::{ApiError, PeerAddr, TrustedProxies};
use uuid::Uuid;

use crate::App;

/// Keys kept before idle ones are forgotten (a key whose bucket is full again is the
/// same as a new one).
const MAX_KEYS: usize = 100_000;

/// The limiters of one ingest process.
pub(crate) struct RateLimits {
    per_client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_integration: Option<DefaultKeyedRateLimiter<Uuid>>,
    proxies: TrustedProxies,
}

fn limiter<K: Hash + Eq + Clone>(per_second: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

fn check<K: Hash + Eq + Clone>(
    limiter: Option<&DefaultKeyedRateLimiter<K>>,
    key: &K,
    what: &str,
) -> Result<(), ApiError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    if limiter.len() > MAX_KEYS {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|not_until| {
        metrics::counter!("ingest_rate_limited_total", "per" => what.to_owned()).increment(1);
        let wait = not_until.wait_time_from(limiter.clock().now());
        ApiError::too_many_requests(
            format!("too many requests for this {what}; retry later"),
            wait,
        )
    })
}

impl RateLimits {
    /// Limits of `per_client` and `per_integration` requests per second (0: none).
    pub(crate) fn new(per_client: u32, per_integration: u32, proxies: TrustedProxies) -> Self {
        Self {
            per_client: limiter(per_client),
            per_integration: limiter(per_integration),
            proxies,
        }
    }

    /// Takes one request of `integration`'s budget, or answers 429.
    pub(crate) fn integration(&self, integration: Uuid) -> Result<(), ApiError> {
        check(self.per_integration.as_ref(), &integration, "integration")
    }

    fn client(&self, client: IpAddr) -> Result<(), ApiError> {
        check(self.per_client.as_ref(), &client, "client")
    }
}

/// Middleware on the delivery routes: one request of the client's budget, or 429.
pub(crate) async fn per_client(
    State(app): State<App>,
    PeerAddr(peer): PeerAddr,
    request: Request,
    next: Next,
) -> Response {
    let client = app.limits.proxies.client_ip(peer, request.headers());
    match app.limits.client(client) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            metrics::counter!("ingest_requests_total", "endpoint" => "rate_limited", "status" => "429")
                .increment(1);
            e.into_response()
        }
    }
}
