//! Settings of the automations engine (the automations service and the api-gateway's
//! dry runs): the brand's time zone and quiet hours, frequency caps, the WhatsApp
//! sender and the outbound webhook secret. Twilio's account and API base are the
//! api-gateway's (`TWILIO_*`).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Automations settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutomationSettings {
    /// The brand's IANA time zone (`Asia/Kolkata`): schedules and quiet hours are in it.
    pub brand_time_zone: String,
    /// Start of quiet hours, `HH:MM` brand time; empty (with the end) turns them off.
    pub quiet_hours_start: String,
    /// End of quiet hours, `HH:MM` brand time (may be before the start: overnight).
    pub quiet_hours_end: String,
    /// Most automated messages per person per channel per rolling day, across every
    /// automation; 0 = no daily cap.
    pub frequency_cap_per_day: u32,
    /// Most automated messages per person per channel per rolling week; 0 = none.
    pub frequency_cap_per_week: u32,
    /// The WhatsApp sender, `whatsapp:+E164` (Twilio `From`); unused when a Messaging
    /// Service is set.
    pub twilio_whatsapp_from: String,
    /// A Twilio Messaging Service SID (`MG…`) to send from instead of `From`.
    pub twilio_messaging_service_sid: String,
    /// The `StatusCallback` URL Twilio reports delivery to: ingest's Twilio status
    /// webhook (`{PUBLIC_BASE_URL}/webhooks/twilio/{integration}/status`). Empty: derived
    /// from the first Twilio integration and `PUBLIC_BASE_URL`.
    pub twilio_status_callback_url: String,
    /// Secret that signs outbound automation webhooks (`X-ConstIntel-Signature`).
    #[serde(default, deserialize_with = "crate::optional_secret", skip_serializing)]
    pub automation_webhook_secret: Option<SecretString>,
    /// Milliseconds between the engine's passes over due runs, retries and triggers.
    pub automation_tick_ms: u64,
    /// Seconds a provider call may take before it counts as failed.
    pub automation_provider_timeout_secs: u64,
    /// Provider calls per send before a transient failure becomes permanent.
    pub automation_max_attempts: u32,
}

impl AutomationSettings {
    pub(crate) fn defaults() -> Self {
        Self {
            brand_time_zone: "UTC".into(),
            quiet_hours_start: "21:00".into(),
            quiet_hours_end: "09:00".into(),
            frequency_cap_per_day: 1,
            frequency_cap_per_week: 3,
            twilio_whatsapp_from: String::new(),
            twilio_messaging_service_sid: String::new(),
            twilio_status_callback_url: String::new(),
            automation_webhook_secret: None,
            automation_tick_ms: 250,
            automation_provider_timeout_secs: 10,
            automation_max_attempts: 5,
        }
    }
}
