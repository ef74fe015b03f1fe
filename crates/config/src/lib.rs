//! Typed settings for every ConstIntel binary.
//!
//! One loader for the whole fleet: `.env` in the working directory is read if present
//! (it never overrides a variable already set), then every setting comes from an
//! environment variable of the same name in upper case (`DATABASE_URL`,
//! `STREAM_PREFIX`, ...). `env.template` at the repository root lists each one with its
//! default and meaning. Secrets are [`SecretString`]s: their `Debug` prints
//! `[REDACTED]`, and connection strings are [`ConnectionUrl`]s, which print without
//! their password, so settings can be logged whole.
//!
//! Settings that belong to one subsystem live in their own module and are flattened
//! into [`Settings`], so they are still plain top-level variables.
//!
//! # Assumptions, running, testing
//!
//! Needs nothing but the process environment (and `.env` in the working directory); it
//! does no I/O beyond reading them. Tests: `cargo nextest run -p constintel-config` (unit
//! tests, no services needed); `crates/test-support/tests/env_template.rs` checks that
//! `env.template` lists every setting. No benchmark: settings load once per process.

use figment::Figment;
use figment::providers::{Env, Serialized};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

pub mod api;
pub mod automations;
mod connection_url;
pub mod identity;
pub mod ingest;
pub mod ml;

pub use connection_url::{ConnectionUrl, REDACTED, redact_url_password};
pub use secrecy::ExposeSecret;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, one line per event, service name first.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A setting was missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings: {0}")]
pub struct SettingsError(#[from] Box<figment::Error>);

/// Every setting of the fleet. Each binary reads the parts it needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Postgres connection string (prints without its password).
    pub database_url: ConnectionUrl,
    /// Connections per service pool.
    pub database_max_connections: u32,
    /// Longest a statement of a service may run, in milliseconds (Postgres
    /// `statement_timeout` on every connection of a service's pool; 0: no limit).
    /// Migrations are exempt.
    pub database_statement_timeout_ms: u64,
    /// Longest a statement of a service waits for a lock, in milliseconds (Postgres
    /// `lock_timeout`; 0: no limit). Migrations are exempt.
    pub database_lock_timeout_ms: u64,
    /// Redis connection string (prints without its password).
    pub redis_url: ConnectionUrl,
    /// Prefix of every Redis key and stream this fleet uses (tests use a random one).
    pub stream_prefix: String,
    /// Approximate cap on each stream's length (`XADD MAXLEN ~`).
    pub stream_maxlen: usize,
    /// Approximate cap on each dead-letter stream's length (`XADD MAXLEN ~`); trimming
    /// drops the oldest dead letters, with a warning and
    /// `streams_dead_letters_trimmed_total`.
    pub stream_dlq_maxlen: usize,
    /// Deliveries after which a failing stream entry goes to `<topic>.dlq`.
    pub stream_max_deliveries: u32,
    /// Entries read per `XREADGROUP`.
    pub stream_batch_size: usize,
    /// Milliseconds an entry may stay pending on a silent consumer before another
    /// consumer claims it.
    pub stream_claim_idle_ms: u64,
    /// Region for phone numbers written without a country code (ISO 3166 alpha-2).
    pub default_phone_region: String,
    /// Proxies (addresses or CIDR blocks, comma separated) whose `X-Forwarded-For` names
    /// the client, for per-client limits; empty: the TCP peer is the client.
    pub trusted_proxies: String,
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// Longest an HTTP request to ingest or the api-gateway may take until its response
    /// starts, in seconds (408 after that).
    pub http_request_timeout_secs: u64,
    /// Longest an HTTP connection may take to send a request's headers, in seconds —
    /// a new connection or a kept-alive one between requests; it is closed after that.
    pub http_idle_timeout_secs: u64,
    /// Seconds a service may take to stop after SIGTERM/SIGINT (finishing in-flight
    /// requests and batches) before the process exits anyway.
    pub shutdown_deadline_secs: u64,
    /// Bind address of the api-gateway (REST API and dashboard).
    pub api_gateway_bind: SocketAddr,
    /// Bind address of ingest (webhooks, tracking API).
    pub ingest_bind: SocketAddr,
    /// Bind address of the normalizer's health and metrics port.
    pub normalizer_bind: SocketAddr,
    /// Bind address of the identity-merger's health and metrics port.
    pub identity_merger_bind: SocketAddr,
    /// Bind address of ml-inference's health and metrics port.
    pub ml_inference_bind: SocketAddr,
    /// Bind address of the automations service's health and metrics port.
    pub automations_bind: SocketAddr,
    /// Bind address of the destinations service's health and metrics port.
    pub destinations_bind: SocketAddr,
    /// First wait before a destination batch that failed transiently (timeout, 5xx,
    /// 429) is tried again, in milliseconds; it doubles per attempt, with jitter.
    pub destination_retry_base_ms: u64,
    /// Longest wait between two attempts of a failing destination batch, in seconds.
    pub destination_retry_max_secs: u64,
    /// How long a profile keeps being retried against a failing destination before it
    /// goes to that destination's dead letters, in seconds.
    pub destination_retry_window_secs: u64,
    /// Seconds between full recomputes of every audience (the safety net under live
    /// membership updates; also what admits members whose behaviour window elapsed).
    pub audience_recompute_interval_secs: u64,
    /// Key integration secrets are sealed with at rest: 32 random bytes, base64.
    /// Required by ingest, the api-gateway and `ctl` commands that touch integrations.
    #[serde(default, deserialize_with = "optional_secret")]
    pub integration_secrets_key: Option<SecretString>,
    /// Subsystem settings.
    #[serde(flatten)]
    pub ingest: ingest::IngestSettings,
    /// Identity resolution settings.
    #[serde(flatten)]
    pub identity: identity::IdentitySettings,
    /// Machine learning settings.
    #[serde(flatten)]
    pub ml: ml::MlSettings,
    /// API gateway, authentication and CRM settings.
    #[serde(flatten)]
    pub api: api::ApiSettings,
    /// Automations settings (time zone, quiet hours, caps, senders).
    #[serde(flatten)]
    pub automations: automations::AutomationSettings,
}

#[derive(Serialize)]
struct Defaults {
    database_url: &'static str,
    database_max_connections: u32,
    database_statement_timeout_ms: u64,
    database_lock_timeout_ms: u64,
    redis_url: &'static str,
    stream_prefix: &'static str,
    stream_maxlen: usize,
    stream_dlq_maxlen: usize,
    stream_max_deliveries: u32,
    stream_batch_size: usize,
    stream_claim_idle_ms: u64,
    default_phone_region: &'static str,
    log_format: LogFormat,
    http_request_timeout_secs: u64,
    http_idle_timeout_secs: u64,
    shutdown_deadline_secs: u64,
    api_gateway_bind: &'static str,
    ingest_bind: &'static str,
    normalizer_bind: &'static str,
    identity_merger_bind: &'static str,
    ml_inference_bind: &'static str,
    automations_bind: &'static str,
    destinations_bind: &'static str,
    destination_retry_base_ms: u64,
    destination_retry_max_secs: u64,
    destination_retry_window_secs: u64,
    audience_recompute_interval_secs: u64,
    trusted_proxies: &'static str,
}

const DEFAULTS: Defaults = Defaults {
    database_url: "postgres://postgres@127.0.0.1:5432/constintel",
    database_max_connections: 10,
    database_statement_timeout_ms: 30_000,
    database_lock_timeout_ms: 5_000,
    redis_url: "redis://127.0.0.1:6379",
    stream_prefix: "",
    stream_maxlen: 1_000_000,
    stream_dlq_maxlen: 100_000,
    stream_max_deliveries: 5,
    stream_batch_size: 256,
    stream_claim_idle_ms: 30_000,
    default_phone_region: "IN",
    log_format: LogFormat::Pretty,
    http_request_timeout_secs: 60,
    http_idle_timeout_secs: 60,
    shutdown_deadline_secs: 30,
    api_gateway_bind: "127.0.0.1:8080",
    ingest_bind: "127.0.0.1:8081",
    normalizer_bind: "127.0.0.1:9102",
    identity_merger_bind: "127.0.0.1:9103",
    ml_inference_bind: "127.0.0.1:9104",
    automations_bind: "127.0.0.1:9105",
    destinations_bind: "127.0.0.1:9106",
    destination_retry_base_ms: 1_000,
    destination_retry_max_secs: 600,
    destination_retry_window_secs: 12 * 3600,
    audience_recompute_interval_secs: 300,
    trusted_proxies: "",
};

impl Settings {
    /// Loads `.env` (if present) and then the environment.
    pub fn load() -> Result<Self, SettingsError> {
        // A missing .env is normal; a malformed one is reported by the variables it
        // failed to set, so the error is ignored here on purpose.
        let _ = dotenvy::dotenv();
        Self::from_figment(Figment::new().merge(Env::raw()))
    }

    /// Builds settings from the defaults overlaid with `overrides` only (no process
    /// environment): tests use this to run many fleets side by side.
    pub fn from_pairs<'a>(
        overrides: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<Self, SettingsError> {
        let mut fig = Figment::new();
        for (k, v) in overrides {
            // Parsed like environment values, so "8" is a number and "true" a bool.
            let value: figment::value::Value = v.parse().unwrap_or_else(|never| match never {});
            fig = fig.merge((k.to_ascii_lowercase(), value));
        }
        Self::from_figment(fig)
    }

    fn from_figment(overlay: Figment) -> Result<Self, SettingsError> {
        Figment::new()
            .merge(Serialized::defaults(DEFAULTS))
            .merge(Serialized::defaults(ingest::IngestSettings::defaults()))
            .merge(Serialized::defaults(identity::IdentitySettings::defaults()))
            .merge(Serialized::defaults(ml::MlSettings::defaults()))
            .merge(Serialized::defaults(api::ApiSettings::defaults()))
            .merge(Serialized::defaults(
                automations::AutomationSettings::defaults(),
            ))
            .merge(overlay)
            .extract()
            .map_err(|e| SettingsError(Box::new(e)))
    }

    /// The Postgres URL with any password replaced by `***`, for logs.
    pub fn database_url_redacted(&self) -> String {
        self.database_url.redacted()
    }
}

/// Deserialises an optional secret, treating an empty string as absent.
pub(crate) fn optional_secret<'de, D>(de: D) -> Result<Option<SecretString>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Option<String> = Option::deserialize(de)?;
    Ok(raw.filter(|s| !s.is_empty()).map(SecretString::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_brief() {
        let s = Settings::from_pairs([]).unwrap();
        assert_eq!(
            s.database_url.as_str(),
            "postgres://postgres@127.0.0.1:5432/constintel"
        );
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.api_gateway_bind.port(), 8080);
        assert_eq!(s.ingest_bind.port(), 8081);
        assert_eq!(s.normalizer_bind.port(), 9102);
        assert_eq!(s.identity_merger_bind.port(), 9103);
        assert_eq!(s.ml_inference_bind.port(), 9104);
        assert_eq!(s.stream_max_deliveries, 5);
        assert_eq!(s.default_phone_region, "IN");
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert_eq!(
            (s.database_statement_timeout_ms, s.database_lock_timeout_ms),
            (30_000, 5_000)
        );
        assert_eq!(
            (
                s.http_request_timeout_secs,
                s.http_idle_timeout_secs,
                s.shutdown_deadline_secs
            ),
            (60, 60, 30)
        );
    }

    #[test]
    fn overrides_and_bad_values() {
        let s = Settings::from_pairs([
            ("STREAM_PREFIX", "t1:".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ])
        .unwrap();
        assert_eq!(s.stream_prefix, "t1:");
        assert_eq!(s.log_format, LogFormat::Json);
        let err = Settings::from_pairs([("INGEST_BIND", "not-an-address".to_owned())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest_bind"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::from_pairs([
            ("ADMIN_PASSWORD", "hunter2-secret".to_owned()),
            (
                "DATABASE_URL",
                "postgres://app:pg-hunter2@db:5432/constintel".to_owned(),
            ),
            ("REDIS_URL", "redis://:redis-hunter2@cache:6379".to_owned()),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        for secret in ["hunter2-secret", "pg-hunter2", "redis-hunter2"] {
            assert!(!shown.contains(secret), "{secret} printed in {shown}");
        }
        assert!(shown.contains("postgres://app:***@db:5432/constintel"));
        assert_eq!(
            s.database_url.as_str(),
            "postgres://app:pg-hunter2@db:5432/constintel"
        );
        assert_eq!(
            s.database_url_redacted(),
            "postgres://app:***@db:5432/constintel"
        );
    }
}
