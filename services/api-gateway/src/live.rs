//! Live feeds (server-sent events) end when the caller may no longer see them.
//!
//! The guard checks a request once, when it arrives; a feed can stay open for hours.
//! [`LiveFeed::wrap`] keeps it honest: every `LIVE_SESSION_CHECK_MS` it asks Postgres
//! whether the credential the feed was opened with still authenticates the same
//! caller with the route's role (a logout, revoked token, disabled or demoted user
//! fails that), and it ends the feed at the session's expiry. The feed also ends at
//! shutdown, so the server can drain. A Postgres outage does not end feeds: revoking
//! needs Postgres too.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use futures::{Stream, StreamExt as _};
use service_kit::ApiError;

use crate::auth::{Credential, Principal};
use crate::state::AppState;

/// What a live feed does next.
enum Step<T> {
    Item(Option<T>),
    Check,
    Expired,
    Shutdown,
}

/// The caller of a live feed and the credential to re-check.
pub struct LiveFeed {
    principal: Principal,
    credential: Credential,
}

impl<S: Send + Sync> FromRequestParts<S> for LiveFeed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let crate::auth::Caller(principal) =
            crate::auth::Caller::from_request_parts(parts, state).await?;
        let credential = Credential::from_request_parts(parts, state).await?;
        Ok(Self {
            principal,
            credential,
        })
    }
}

impl LiveFeed {
    /// `feed`, ended as soon as its caller's credential stops being valid, its session
    /// expires, or the gateway shuts down.
    pub fn wrap<T: Send + 'static>(
        self,
        app: AppState,
        feed: impl Stream<Item = T> + Send + 'static,
    ) -> impl Stream<Item = T> + Send + 'static {
        let every = Duration::from_millis(app.settings.api.live_session_check_ms.max(100));
        async_stream::stream! {
            let mut feed = std::pin::pin!(feed);
            let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let until_expiry = self.principal.expires_at.map(|at| {
                (at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO)
            });
            let expired = async {
                match until_expiry {
                    Some(left) => tokio::time::sleep(left).await,
                    None => std::future::pending().await,
                }
            };
            let mut expired = std::pin::pin!(expired);
            loop {
                // `yield` cannot sit inside `select!`: pick the step, then act on it.
                let step = tokio::select! {
                    item = feed.next() => Step::Item(item),
                    _ = check.tick() => Step::Check,
                    () = &mut expired => Step::Expired,
                    () = app.shutdown.cancelled() => Step::Shutdown,
                };
                match step {
                    Step::Item(Some(item)) => yield item,
                    Step::Item(None) | Step::Shutdown => break,
                    Step::Check => match self.credential.still_valid(&app, &self.principal).await {
                        Some(true) => {}
                        Some(false) => {
                            tracing::info!(caller = %self.principal.actor(), "live feed ended: the credential is no longer valid");
                            break;
                        }
                        None => tracing::warn!("could not re-check a live feed's credential; keeping it open"),
                    },
                    Step::Expired => {
                        tracing::info!(caller = %self.principal.actor(), "live feed ended: the session expired");
                        break;
                    }
                }
            }
        }
    }
}
