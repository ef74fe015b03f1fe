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
use tokio::sync::Mutex;
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

/// Spaces requests at least `interval` apart, and holds them while the remote's window
/// is spent.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    /// A pacer for `per_second` requests a second (`None`: unpaced).
    pub fn new(per_second: Option<f64>) -> Self {
        let interval = per_second
            .filter(|r| r.is_finite() && *r >= 0.01)
            .map(|r| Duration::from_secs_f64(1.0 / r))
            .unwrap_or_default();
        Self {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }

    /// Holds every request until `wait` from now.
    pub async fn pause(&self, wait: Duration) {
        let mut next = self.next.lock().await;
        *next = (*next).max(Instant::now() + wait);
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
    /// A client for `destination`, at most `per_second` requests a second, each within
    /// `timeout`.
    pub fn new(
        db: PgPool,
        destination: Uuid,
        per_second: Option<f64>,
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
            pacer: Arc::new(Pacer::new(per_second)),
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
        self.pacer.wait().await;
        let started = Instant::now();
        let result = request.send().await;
        let (reply, status) = match result {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = resp.text().await.unwrap_or_default();
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
                self.pacer.pause(w).await;
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
        let p = Pacer::new(Some(20.0));
        let t = Instant::now();
        for _ in 0..5 {
            p.wait().await;
        }
        // Five slots at 50 ms spacing: the fifth starts 200 ms after the first.
        assert!(
            t.elapsed() >= Duration::from_millis(195),
            "{:?}",
            t.elapsed()
        );
        p.pause(Duration::from_millis(300)).await;
        let t = Instant::now();
        p.wait().await;
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
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
