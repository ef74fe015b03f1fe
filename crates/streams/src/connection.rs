//! How every Redis connection of the fleet is opened and re-opened.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The longest wait between two attempts to reconnect after Redis went away.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// How long one attempt to connect may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The reconnect policy of a managed connection: after a drop it tries again within
/// [`RECONNECT_MAX_DELAY`], so the fleet is back within a couple of seconds of Redis.
///
/// redis-rs's defaults multiply the delay by 100 between attempts (capped at 60 s, plus
/// up to as much again in jitter): a Redis that was away for 5 s left every service
/// waiting about two minutes before its next attempt. The delays here are 1 s, then
/// 2 s for each further attempt.
pub fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_factor(2)
        .set_max_delay(RECONNECT_MAX_DELAY.as_millis() as u64)
        .set_number_of_retries(5)
        .set_connection_timeout(CONNECT_TIMEOUT)
}

/// Opens a managed connection (it reconnects by itself after a drop) with the fleet's
/// reconnect policy ([`connection_config`]).
pub async fn managed_connection(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(client, connection_config()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_fails_within_the_retry_budget() {
        // A port nothing listens on: every attempt is refused at once, so the whole
        // retry budget (1 + 2 + 2 + 2 + 2 s at most, before jitter) bounds the wait.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let started = std::time::Instant::now();
        assert!(managed_connection(client).await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gave up only after {:?}",
            started.elapsed()
        );
    }
}
