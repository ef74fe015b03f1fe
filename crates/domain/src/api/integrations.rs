//! Configured sources (`/integrations`): their settings, secrets (shown to admins
//! only, never in `Debug` output), delivery log and test events.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::source::Source;

/// A configured source, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationView {
    /// Integration id.
    pub id: Uuid,
    /// Source kind.
    pub kind: Source,
    /// Name, unique per kind.
    pub name: String,
    /// Disabled integrations refuse deliveries.
    pub enabled: bool,
    /// Where the source must send its deliveries (absent for CSV, which uploads
    /// through `POST /imports`).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// How deliveries authenticate with the secret.
    pub authentication: String,
    /// Last four characters of the secret, to tell secrets apart.
    pub secret_hint: String,
    /// Kind-specific settings.
    pub settings: serde_json::Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Last accepted delivery.
    #[serde(default)]
    pub last_delivery_at: Option<DateTime<Utc>>,
}

/// `POST /integrations`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateIntegrationRequest {
    /// Source kind.
    pub kind: Source,
    /// Name, unique per kind.
    pub name: String,
    /// The secret the source already has (Shopify's signing secret, Twilio's auth
    /// token); absent generates one.
    #[serde(default)]
    pub secret: Option<String>,
}

impl fmt::Debug for CreateIntegrationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateIntegrationRequest")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// `PATCH /integrations/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateIntegrationRequest {
    /// Enable or disable.
    pub enabled: bool,
}

/// An integration with its secret: the answer of create, rotate and reveal (admins).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationSecret {
    /// The integration.
    pub integration: IntegrationView,
    /// Its secret (signing secret, auth token, write key or bearer token).
    pub secret: String,
}

impl fmt::Debug for IntegrationSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationSecret")
            .field("integration", &self.integration)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// One delivery attempt of an integration (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryLogEntry {
    /// Log entry id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Endpoint that received it.
    pub endpoint: String,
    /// HTTP status answered.
    pub status: i16,
    /// Time to answer, in milliseconds.
    pub latency_ms: f32,
    /// Why it was refused, when it was.
    #[serde(default)]
    pub error: Option<String>,
    /// The raw event stored, when one was.
    #[serde(default)]
    pub raw_event_id: Option<Uuid>,
}

/// Answer of `POST /integrations/{id}/test-event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestEventAccepted {
    /// The stored raw event (its payload carries `"constintel_test": true`).
    pub raw_event_id: Uuid,
    /// Its source event id (`test:<uuid>`).
    pub source_event_id: String,
}
