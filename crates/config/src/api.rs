//! Settings of the api-gateway: authentication, the dashboard, the OpenAPI viewer, live
//! feeds, and CRM credentials.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// API gateway settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiSettings {
    /// E-mail of the admin created at start-up when no user exists yet.
    pub admin_email: String,
    /// Password of that admin. Empty means no bootstrap admin is created.
    #[serde(default, deserialize_with = "crate::optional_secret", skip_serializing)]
    pub admin_password: Option<SecretString>,
    /// Hours a dashboard session lives.
    pub session_ttl_hours: u32,
    /// Folder with the built dashboard (index.html, pkg/).
    pub dashboard_dir: String,
    /// Allowed CORS origins, comma separated; empty allows none but the same origin.
    pub cors_origins: String,
    /// Login attempts allowed per client address per minute.
    pub login_attempts_per_minute: u32,
    /// Login attempts allowed per account (e-mail) per hour, from any address.
    pub login_attempts_per_account_per_hour: u32,
    /// Set the `Secure` flag on session cookies, so browsers send them over HTTPS only.
    /// Turn off only for plain-HTTP local use.
    pub cookie_secure: bool,
    /// `max-age` of the `Strict-Transport-Security` header sent on requests that came
    /// over HTTPS (a trusted proxy's `X-Forwarded-Proto`); 0 sends none.
    pub hsts_max_age_secs: u64,
    /// Folder holding the OpenAPI viewer's assets (the npm package `swagger-ui-dist`),
    /// served at `/api/docs/`.
    pub openapi_viewer_dir: String,
    /// Milliseconds between updates of the server-sent-event feeds (streams, imports).
    pub live_interval_ms: u64,
    /// Milliseconds between checks that a live feed's session or token is still valid;
    /// a feed whose credential was revoked, expired or lost its role ends.
    pub live_session_check_ms: u64,
    /// Milliseconds a verified session or API token is trusted without asking Postgres
    /// again (0 checks every request). Changes made through this gateway apply at once;
    /// a revocation made elsewhere (another gateway, `ctl`) within this time.
    pub auth_cache_ms: u64,
    /// Twilio account SID for outbound WhatsApp.
    pub twilio_account_sid: String,
    /// Twilio auth token for outbound WhatsApp.
    #[serde(default, deserialize_with = "crate::optional_secret", skip_serializing)]
    pub twilio_auth_token: Option<SecretString>,
    /// Base URL of the Twilio API (tests point it at a mock server).
    pub twilio_api_base: String,
    /// HubSpot private-app token for CRM sync.
    #[serde(default, deserialize_with = "crate::optional_secret", skip_serializing)]
    pub hubspot_token: Option<SecretString>,
    /// Base URL of the HubSpot API.
    pub hubspot_api_base: String,
}

impl ApiSettings {
    pub(crate) fn defaults() -> Self {
        Self {
            admin_email: "admin@constintel.local".into(),
            admin_password: None,
            session_ttl_hours: 12,
            dashboard_dir: "dashboard/dist".into(),
            cors_origins: String::new(),
            login_attempts_per_minute: 10,
            login_attempts_per_account_per_hour: 20,
            cookie_secure: true,
            hsts_max_age_secs: 31_536_000,
            openapi_viewer_dir: ".data/swagger-ui/node_modules/swagger-ui-dist".into(),
            live_interval_ms: 1000,
            live_session_check_ms: 5000,
            auth_cache_ms: 5000,
            twilio_account_sid: String::new(),
            twilio_auth_token: None,
            twilio_api_base: "https://api.twilio.com".into(),
            hubspot_token: None,
            hubspot_api_base: "https://api.hubapi.com".into(),
        }
    }
}
