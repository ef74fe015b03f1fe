//! What every connector shares: one HTTP client per destination, paced so the
//! destination's rate is never exceeded, pausing when the remote says its window is
//! spent, classifying failures (transient: timeouts, connection errors, 408, 429, 5xx;
//! permanent: other 4xx) and writing each request to the delivery log as a summary —
//! method, path, record count, status and the remote's error text, never a header,
//! credential or record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{self, Delivery};

/// A request to a destination failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later: a timeout, a dropped connection, 408, 429 or 5xx.
    #[error("{message}")]
    Transient {
        /// What went wrong (the remote's error text when it sent one).
        message: String,
        /// How long the remote asked to wait (`Retry-After`, rate-limit headers).
        retry_after: Option<Duration>,
    },
    /// Will fail the same way until something changes: 4xx other than 408/429, a
    /// malformed answer.
    #[error("{message}")]
    Permanent {
        /// The remote's error text.
        message: String,
    },
}

impl SendError {
    /// A permanent error with `message`.
    pub fn permanent(message: impl Into<String>) -> Self {
        SendError::Permanent {
            message: message.into(),
        }
    }
}

/// Cuts `text` to at most `max` characters (on a character boundary), marking the cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

/// Keeps a destination inside its rate limit as the remote counts it:
/// - request starts are spaced at least `interval` apart (the configured rate);
/// - at most `limit` requests reach the remote in any `window`: a request may start
///   only `window` after the request `limit` places before it has been answered (its
///   arrival at the remote lies between its start and its answer), so neither network
///   jitter nor requests in flight at once can push the remote's count over;
/// - [`Pacer::pause`] holds every request while the remote says its window is spent.
///
/// Several requests may be in flight at once; the pacer alone decides when each starts.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    window: Duration,
    limit: usize,
    state: std::sync::Mutex<PacerState>,
    answered: tokio::sync::Notify,
}

#[derive(Debug)]
struct PacerState {
    next: Instant,
    /// Sequence number of the next request.
    issued: u64,
    /// When each of the last `limit` requests was answered (`None`: in flight), oldest
    /// first, with its sequence number.
    recent: std::collections::VecDeque<(u64, Option<Instant>)>,
}

/// A request's place in its [`Pacer`]; dropping it marks the request answered.
#[derive(Debug)]
pub struct Slot<'a> {
    pacer: &'a Pacer,
    seq: u64,
    /// When the request was allowed to start.
    pub at: Instant,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        {
            let mut s = self.pacer.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = s.recent.iter_mut().find(|(seq, _)| *seq == self.seq) {
                entry.1 = Some(now);
            }
        }
        self.pacer.answered.notify_waiters();
    }
}

impl Pacer {
    /// A pacer for `per_second` requests a second (`None`: unpaced), counted by the
    /// remote over `window` (HubSpot: 10 s; else 1 s).
    pub fn new(per_second: Option<f64>, window: Duration) -> Self {
        let rate = per_second.filter(|r| r.is_finite() && *r >= 0.01);
        let interval = rate
            .map(|r| Duration::from_secs_f64(1.0 / r))
            .unwrap_or_default();
        let limit = rate.map_or(0, |r| ((r * window.as_secs_f64()).floor() as usize).max(1));
        Self {
            interval,
            window,
            limit,
            state: std::sync::Mutex::new(PacerState {
                next: Instant::now(),
                issued: 0,
                recent: std::collections::VecDeque::new(),
            }),
            answered: tokio::sync::Notify::new(),
        }
    }

    /// Waits for this request's slot; hold the [`Slot`] until the answer has arrived.
    pub async fn wait(&self) -> Slot<'_> {
        let (seq, at) = loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let mut at = s.next.max(now);
                let mut blocked = false;
                if self.limit > 0 && s.recent.len() >= self.limit {
                    // The request `limit` places back must have been answered a
                    // window ago.
                    match s.recent[s.recent.len() - self.limit].1 {
                        Some(done) => at = at.max(done + self.window),
                        None => blocked = true,
                    }
                }
                if !blocked {
                    let seq = s.issued;
                    s.issued += 1;
                    s.next = at + self.interval;
                    s.recent.push_back((seq, None));
                    while s.recent.len() > self.limit.max(1) {
                        s.recent.pop_front();
                    }
                    break (seq, at);
                }
            }
            answered.await;
        };
        let slot = Slot {
            pacer: self,
            seq,
            at,
        };
        tokio::time::sleep_until(at.into()).await;
        slot
    }

    /// Holds every request until `wait` from now.
    pub fn pause(&self, wait: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.next = s.next.max(Instant::now() + wait);
    }
}

/// A response as connectors read it.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The seconds of a `Retry-After` header (the delay form; a date is read as 60 s).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Some(
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
            .unwrap_or(Duration::from_secs(60)),
    )
}

/// How long HubSpot's policy headers say to hold off: the rest of the window when
/// `X-HubSpot-RateLimit-Remaining` is 0 (`X-HubSpot-RateLimit-Interval-Milliseconds`).
fn hubspot_window(headers: &HeaderMap) -> Option<Duration> {
    let num = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match num("x-hubspot-ratelimit-remaining") {
        Some(0) => Some(Duration::from_millis(
            num("x-hubspot-ratelimit-interval-milliseconds").unwrap_or(10_000),
        )),
        _ => None,
    }
}

/// The HTTP side of one destination.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    pacer: Arc<Pacer>,
    db: PgPool,
    destination: Uuid,
}

impl Http {
    /// A client for `destination`, at most `per_second` requests a second (counted by the
    /// remote over `window`), each within `timeout`.
    pub fn new(
        db: PgPool,
        destination: Uuid,
        per_second: Option<f64>,
        window: Duration,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!(
                "ConstIntel-Destinations/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            client,
            pacer: Arc::new(Pacer::new(per_second, window)),
            db,
            destination,
        })
    }

    /// The client, for building requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request` in its slot and logs it as `operation` over `records` records
    /// (`summary`: method and path, no query string or secrets). Any HTTP status comes
    /// back as a [`Reply`] for the connector to read; a timeout or a connection error is
    /// a [`SendError::Transient`].
    pub async fn send(
        &self,
        operation: &'static str,
        records: usize,
        summary: String,
        request: RequestBuilder,
    ) -> Result<Reply, SendError> {
        let slot = self.pacer.wait().await;
        let started = Instant::now();
        let result = request.send().await;
        let (reply, status) = match result {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = resp.text().await.unwrap_or_default();
                drop(slot);
                (
                    Ok(Reply {
                        status,
                        headers,
                        body,
                    }),
                    Some(status),
                )
            }
            Err(e) => {
                drop(slot);
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                (
                    Err(SendError::Transient {
                        message: format!("{what}: {}", without_url(&e)),
                        retry_after: None,
                    }),
                    None,
                )
            }
        };
        if let Ok(r) = &reply {
            let wait = if r.status == StatusCode::TOO_MANY_REQUESTS {
                retry_after(&r.headers)
                    .or_else(|| hubspot_window(&r.headers))
                    .or(Some(Duration::from_secs(1)))
            } else {
                hubspot_window(&r.headers)
            };
            if let Some(w) = wait {
                self.pacer.pause(w);
            }
        }
        let outcome = match (&reply, status) {
            (Err(_), _) => "transient",
            (Ok(_), Some(s)) if s == StatusCode::MULTI_STATUS => "partial",
            (Ok(_), Some(s)) if s.is_success() => "ok",
            (Ok(_), Some(s)) if is_transient(s) => "transient",
            _ => "permanent",
        };
        let response = match &reply {
            Ok(r) if r.status.is_success() && r.status != StatusCode::MULTI_STATUS => {
                format!("{}", r.status)
            }
            Ok(r) => format!("{}: {}", r.status, shorten(&r.body, 500)),
            Err(e) => e.to_string(),
        };
        let delivery = Delivery {
            operation,
            records,
            status: status.map(|s| s.as_u16()),
            outcome,
            request: summary,
            response,
            duration: started.elapsed(),
        };
        metrics::counter!("destination_requests_total", "operation" => operation, "outcome" => outcome)
            .increment(1);
        if let Err(e) = store::record_delivery(&self.db, self.destination, &delivery).await {
            tracing::warn!(error = %e, "writing the delivery log failed");
        }
        if outcome == "ok" || outcome == "partial" {
            let _ = store::mark_success(&self.db, self.destination).await;
        }
        reply
    }
}

/// Whether a status is worth retrying.
pub fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// The error of a non-2xx reply: transient or permanent by status, with the remote's
/// text and its `Retry-After`.
pub fn failure(reply: &Reply) -> SendError {
    let message = format!("{}: {}", reply.status, shorten(&reply.body, 1000));
    if is_transient(reply.status) {
        SendError::Transient {
            message,
            retry_after: retry_after(&reply.headers).or_else(|| hubspot_window(&reply.headers)),
        }
    } else {
        SendError::Permanent { message }
    }
}

/// A reqwest error's text without the URL (query strings may carry ids).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pacer_spaces_requests_and_pauses() {
        let p = Pacer::new(Some(20.0), Duration::from_secs(1));
        let mut starts = Vec::new();
        for _ in 0..5 {
            starts.push(p.wait().await.at);
        }
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(50), "{starts:?}");
        }
        let before = Instant::now();
        p.pause(Duration::from_millis(300));
        let next = p.wait().await.at;
        assert!(next >= before + Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_request_waits_a_window_after_the_answer_limit_places_back() {
        // Two a second: the third request waits until a second after the first was
        // answered, and cannot even be scheduled while the first is in flight.
        let p = Pacer::new(Some(2.0), Duration::from_secs(1));
        let first = p.wait().await;
        let second = p.wait().await;
        {
            let third = p.wait();
            tokio::pin!(third);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(third.as_mut().poll(&mut cx).is_pending());
        }
        let before_answer = Instant::now();
        drop(first);
        drop(second);
        let third = p.wait().await;
        assert!(third.at >= before_answer + Duration::from_secs(1));
    }

    #[test]
    fn retry_after_and_hubspot_windows() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("x-hubspot-ratelimit-remaining", "0".parse().unwrap());
        h.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            "10000".parse().unwrap(),
        );
        assert_eq!(hubspot_window(&h), Some(Duration::from_secs(10)));
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
