//! The kinds of source (`/sources`, from the source registry) and configured sources
//! (`/integrations`): their settings, secrets (shown to admins only, never in `Debug`
//! output), delivery log and test events.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::source::Source;

/// A kind of source an integration can be, as the source registry describes it (the
/// dashboard's "add integration" form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceKindView {
    /// Source kind.
    pub kind: Source,
    /// How people call it (`Twilio WhatsApp`).
    pub label: String,
    /// Whether its deliveries come to ingest (a webhook URL); false for CSV files,
    /// uploaded through `POST /imports`.
    pub receives_deliveries: bool,
    /// What the secret is at the source (`signing secret`, `write key`, ...).
    pub secret_name: String,
    /// How deliveries authenticate with the secret.
    pub authentication: String,
    /// What to paste as the secret when the platform brings its own.
    #[serde(default)]
    pub own_secret_hint: Option<String>,
}

/// A configured source, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationView {
    /// Integration id.
    pub id: Uuid,
    /// Source kind.
    pub kind: Source,
    /// How people call the kind (`Twilio WhatsApp`).
    pub label: String,
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
    /// Step-by-step setup on the platform's side, with this integration's URL.
    pub setup_steps: Vec<String>,
    /// Last four characters of the secret, to tell secrets apart.
    pub secret_hint: String,
    /// Kind-specific settings.
    pub settings: serde_json::Value,
    /// When the integration was created.
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
    /// Name, unique per kind (not blank).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, pattern = r"\S"))]
    pub name: String,
    /// The secret the source already has (Shopify's signing secret, Twilio's auth
    /// token), at least 8 characters besides surrounding spaces; absent generates one.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 8, pattern = r"\S[\s\S]{6,}\S")
    )]
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
    /// When the delivery arrived.
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
