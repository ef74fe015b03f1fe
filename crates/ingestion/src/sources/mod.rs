//! One module per source behind one trait, registered in one place.
//!
//! A [`Connector`] is everything ConstIntel knows about one system that sends customer
//! events: its name, how people call it, how its deliveries reach ingest and prove
//! where they come from, what identifies a delivery (the deduplication key), how a
//! delivery becomes a raw event, how a raw event maps to the normalised shape, and a
//! harmless test event. [`of`] is the registry; everything per source elsewhere is
//! derived from it: ingest's routes (one generic handler for every [`SignedWebhook`]),
//! the normalizer's dispatch ([`crate::normalize`]), the integration kinds `ctl` and the
//! api-gateway accept, their webhook URLs, secrets and authentication texts, the
//! dashboard's integration page (through the API), and the endpoint table of
//! docs/ingestion.md ([`endpoint_table`], checked by a test).
//!
//! Shape: each source is a unit struct implementing [`Connector`] (and [`SignedWebhook`]
//! when it is one), reached as a `&'static dyn Connector`. The names stay the closed
//! enum [`domain::Source`], which Postgres, the streams and the wasm dashboard share;
//! [`of`] is an exhaustive match over it, so a name without a module does not compile,
//! and [`all`] walks the names. Trait objects rather than an enum of sources: every
//! per-source decision sits in the source's own file, and callers cannot grow a `match`
//! over sources again; the per-event cost is one indirect call. Segment's tracking API
//! and POS bills keep their own handlers (batches authenticated by a write key or a
//! bearer token), but take their URLs, texts and normalisation from here too.

pub mod admission;
pub mod csv_rows;
pub mod edge;
pub(crate) mod mapping;
pub mod pos;
pub mod segment;
pub mod shopify;
pub mod twilio;
pub mod woocommerce;

use chrono::{DateTime, Utc};
use domain::{IdentifierKind, NormalizedEvent, OrderWrite, Product, Source};
use serde_json::Value;
use uuid::Uuid;

use crate::raw_event::{NewRawEvent, RawRecord};
pub use edge::{Refusal, WebhookRequest};

/// The connector of `source`: the registry.
pub fn of(source: Source) -> &'static dyn Connector {
    match source {
        Source::Shopify => &shopify::Shopify,
        Source::Woocommerce => &woocommerce::WooCommerce,
        Source::Twilio => &twilio::Twilio,
        Source::Segment => &segment::Segment,
        Source::Pos => &pos::Pos,
        Source::Csv => &csv_rows::CsvRows,
    }
}

/// Every connector, in the stable order of [`Source::ALL`].
pub fn all() -> impl Iterator<Item = &'static dyn Connector> {
    Source::ALL.into_iter().map(of)
}

/// The connector named `kind` (`shopify`, `pos`, ...), if there is one.
pub fn by_kind(kind: &str) -> Option<&'static dyn Connector> {
    kind.parse().ok().map(of)
}

/// What a source is, as data: the part of a [`Connector`] that is the same for every
/// integration of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Description {
    /// Its name in Postgres, on the streams and in the API.
    pub source: Source,
    /// How people call it (`Twilio WhatsApp`).
    pub label: &'static str,
    /// What the integration's secret is at the source.
    pub credential: Credential,
    /// How a delivery authenticates with the secret, for people configuring the source.
    pub authentication: &'static str,
    /// What to paste as the secret when the platform brings its own (Shopify's signing
    /// secret, Twilio's auth token); `None` when ConstIntel generates it.
    pub own_secret_hint: Option<&'static str>,
}

/// Everything ConstIntel knows about one source.
pub trait Connector: Send + Sync {
    /// What it is (name, label, credential, authentication text).
    fn description(&self) -> &'static Description;

    /// Its name in Postgres, on the streams and in the API.
    fn source(&self) -> Source {
        self.description().source
    }

    /// How people call it (`Twilio WhatsApp`).
    fn label(&self) -> &'static str {
        self.description().label
    }

    /// What the integration's secret is at the source.
    fn credential(&self) -> Credential {
        self.description().credential
    }

    /// How a delivery authenticates with the secret, for people configuring the source.
    fn authentication(&self) -> &'static str {
        self.description().authentication
    }

    /// What to paste as the secret when the platform brings its own; `None` when
    /// ConstIntel generates it.
    fn own_secret_hint(&self) -> Option<&'static str> {
        self.description().own_secret_hint
    }

    /// The signed-webhook side, when the source delivers signed webhooks to
    /// `/webhooks/{kind}/{integration}`: ingest serves those with one generic handler.
    fn webhook(&self) -> Option<&dyn SignedWebhook> {
        None
    }

    /// The URL a brand configures at the source for `integration`, under ingest's
    /// public base URL; `None` when the source does not deliver to ingest (CSV).
    fn webhook_url(&self, public_base_url: &str, integration: Uuid) -> Option<String> {
        let route = self.webhook()?.routes().first()?;
        Some(route_url(
            public_base_url,
            self.source(),
            route,
            integration,
        ))
    }

    /// Its endpoints, with how each authenticates and what deduplicates a delivery
    /// (docs/ingestion.md's endpoint table).
    fn endpoints(&self) -> Vec<EndpointDoc> {
        let Some(hook) = self.webhook() else {
            return Vec::new();
        };
        hook.routes()
            .iter()
            .map(|r| EndpointDoc {
                endpoint: format!("POST {}", webhook_path(self.source(), r)),
                authentication: self.authentication(),
                dedupe_key: r.dedupe_key,
            })
            .collect()
    }

    /// Step-by-step setup on the platform's side, for an integration whose URL is
    /// `webhook_url`.
    fn setup_steps(&self, webhook_url: &str) -> Vec<String>;

    /// Maps one of its raw events to the normalised shape.
    fn normalize(&self, raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError>;

    /// The kind and body of a delivery it could really make, about the test customer
    /// `customer` (the event's only identifier, namespaced by the source), keyed `key`,
    /// marked `constintel_test`; see [`test_event`].
    fn test_delivery(&self, customer: &str, key: &str, now: DateTime<Utc>)
    -> (&'static str, Value);
}

/// The synthetic event "send test event" stores for an integration of `source`: a
/// delivery the source could really make, about the test customer
/// `constintel-test-<integration>` (so every test of one integration lands on one
/// clearly named test profile), keyed `test:<uuid>`, with the `x-constintel-test`
/// header.
pub fn test_event(source: Source, integration: Uuid) -> NewRawEvent {
    let key = format!("test:{}", Uuid::now_v7());
    let customer = format!("constintel-test-{integration}");
    let now = Utc::now();
    let (kind, body) = of(source).test_delivery(&customer, &key, now);
    let mut event = NewRawEvent::new(Some(integration), source, key, kind, body);
    event.occurred_at = Some(now);
    event
        .headers
        .insert("x-constintel-test".into(), Value::String("true".into()));
    event
}

/// What an integration's secret is at the source; decides the generated secret's prefix
/// (`ci_seg_…` write keys, `ci_pos_…` bearer tokens, `ci_whs_…` otherwise), so a leaked
/// key is recognisable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The HMAC key the platform signs deliveries with.
    SigningSecret,
    /// The account auth token the platform signs requests with (Twilio).
    AuthToken,
    /// A write key the sender presents (Segment-compatible SDKs).
    WriteKey,
    /// A bearer token the sender presents.
    BearerToken,
    /// Unused at the source: data comes in through the API with a user's credentials.
    None,
}

impl Credential {
    /// What people call it (`ctl integration add` prints it before the secret).
    pub fn name(self) -> &'static str {
        match self {
            Credential::SigningSecret => "signing secret",
            Credential::AuthToken => "auth token",
            Credential::WriteKey => "write key",
            Credential::BearerToken => "bearer token",
            Credential::None => "secret",
        }
    }

    /// The prefix of a generated secret.
    pub fn prefix(self) -> &'static str {
        match self {
            Credential::WriteKey => "ci_seg_",
            Credential::BearerToken => "ci_pos_",
            _ => "ci_whs_",
        }
    }
}

/// A source that delivers signed webhooks. Ingest's one handler runs, cheapest first:
/// integration of this kind (404) and enabled (403), body limit (413), then
/// [`is_ping`](SignedWebhook::is_ping) without a signature (200, nothing stored),
/// [`verify`](SignedWebhook::verify) (401), [`raw_event`](SignedWebhook::raw_event)
/// (400), the group commit, and [`answer`](SignedWebhook::answer).
pub trait SignedWebhook: Send + Sync {
    /// The routes under `/webhooks/{kind}/{integration}`; the first is the URL people
    /// configure.
    fn routes(&self) -> &'static [WebhookRoute];

    /// The header that carries the signature.
    fn signature_header(&self) -> &'static str;

    /// Checks the signature with the integration's secret, in constant time.
    fn verify(&self, secret: &str, request: &WebhookRequest<'_>) -> Result<(), Refusal>;

    /// A delivery that only proves the URL works (WooCommerce's save-time ping): it is
    /// answered 200 and nothing is stored. Checked before the signature when there is
    /// none, and again after it.
    fn is_ping(&self, _request: &WebhookRequest<'_>) -> bool {
        false
    }

    /// The raw event of a verified delivery to `route`, keyed by its deduplication key.
    fn raw_event(
        &self,
        integration: Uuid,
        route: &WebhookRoute,
        request: &WebhookRequest<'_>,
    ) -> Result<NewRawEvent, Refusal>;

    /// The body of the 2xx once the delivery is stored.
    fn answer(&self) -> WebhookAnswer {
        WebhookAnswer::Stored
    }
}

/// One route of a signed webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookRoute {
    /// The path after `/webhooks/{kind}/{integration}` (`""`, `"/status"`).
    pub suffix: &'static str,
    /// The raw event kind of deliveries to this route; `""` when a header names it.
    pub kind: &'static str,
    /// What arrives there, for people configuring the source.
    pub purpose: &'static str,
    /// What deduplicates a delivery (docs).
    pub dedupe_key: &'static str,
}

/// The body of a signed webhook's 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAnswer {
    /// `{"id": <raw event id>, "duplicate": <bool>}`.
    Stored,
    /// A fixed XML document (Twilio expects TwiML).
    Xml(&'static str),
}

/// What ingest's signed-webhook handler does with a delivery to `source`'s route ending
/// in `suffix`, without the HTTP server: the signature check (when `secret` is given)
/// and the raw event it would store. For tools and tests that hold a delivery (the
/// demo's self-check, the snapshot and normalizer tests), so they go through exactly
/// the edge's code.
pub fn webhook_raw_event(
    source: Source,
    suffix: &str,
    integration: Uuid,
    secret: Option<&str>,
    request: &WebhookRequest<'_>,
) -> Result<NewRawEvent, Refusal> {
    let no_route = || {
        Refusal::invalid(
            "no_route",
            format!("{source} has no webhook route `{suffix}`"),
        )
    };
    let hook = of(source).webhook().ok_or_else(no_route)?;
    let route = hook
        .routes()
        .iter()
        .find(|r| r.suffix == suffix)
        .ok_or_else(no_route)?;
    if let Some(secret) = secret {
        hook.verify(secret, request)?;
    }
    admitted_raw_event(hook, integration, route, request)
}

/// The raw event of a verified delivery, checked by [`admission::admit`]: what ingest's
/// signed-webhook handler stores.
pub fn admitted_raw_event(
    hook: &dyn SignedWebhook,
    integration: Uuid,
    route: &WebhookRoute,
    request: &WebhookRequest<'_>,
) -> Result<NewRawEvent, Refusal> {
    let event = hook.raw_event(integration, route, request)?;
    admission::admit(&event, "invalid_webhook")?;
    Ok(event)
}

/// The path of a signed-webhook route, with `{integration}` in place of the id.
pub fn webhook_path(source: Source, route: &WebhookRoute) -> String {
    format!("/webhooks/{source}/{{integration}}{}", route.suffix)
}

/// The public URL of a signed-webhook route for `integration`.
pub fn route_url(
    public_base_url: &str,
    source: Source,
    route: &WebhookRoute,
    integration: Uuid,
) -> String {
    format!(
        "{}/webhooks/{source}/{integration}{}",
        public_base_url.trim_end_matches('/'),
        route.suffix
    )
}

/// One row of the endpoint table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointDoc {
    /// Method and path (`POST /pos/{integration}/bills`).
    pub endpoint: String,
    /// How a delivery authenticates.
    pub authentication: &'static str,
    /// What deduplicates a delivery (`source_event_id`).
    pub dedupe_key: &'static str,
}

/// The Markdown endpoint table of docs/ingestion.md, rendered from the registry.
pub fn endpoint_table() -> String {
    let mut out = String::from(
        "| source | endpoint | authentication | dedupe key (`source_event_id`) |\n\
         |---|---|---|---|\n",
    );
    // Prose cells may name placeholders (`<secret>`), which Markdown would take for tags.
    let cell = |s: &str| s.replace('<', "&lt;").replace('>', "&gt;");
    for c in all() {
        for e in c.endpoints() {
            out.push_str(&format!(
                "| {} | `{}` | {} | {} |\n",
                c.label(),
                e.endpoint,
                cell(e.authentication),
                e.dedupe_key
            ));
        }
    }
    out
}

/// Why a raw event cannot be mapped. Permanent: retrying gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The source or kind is not one the normalizer knows.
    #[error("unsupported {0}")]
    Unsupported(String),
    /// The payload lacks something the mapping needs.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl MapError {
    /// The reason alone, as the edge reports it when it validates with the mapping.
    pub fn into_reason(self) -> String {
        match self {
            MapError::Malformed(m) | MapError::Unsupported(m) => m,
        }
    }
}

/// An identifier value that was dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dropped {
    /// The kind it was read as.
    pub kind: IdentifierKind,
    /// Stable reason code (`invalid_email`, `invalid_phone`, `too_long`, ...).
    pub reason: &'static str,
}

/// The result of mapping one raw event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Normalized {
    /// The normalised event; `None` for catalogue-only updates (a WooCommerce product
    /// webhook), which only touch `products`.
    pub event: Option<NormalizedEvent>,
    /// Identifier values dropped, with reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<Dropped>,
    /// What to write to `orders`, `order_items` and `order_refunds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderWrite>,
    /// Products to upsert.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<Product>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_has_one_connector_per_source() {
        for source in Source::ALL {
            assert_eq!(of(source).source(), source);
            assert_eq!(by_kind(source.as_str()).map(|c| c.source()), Some(source));
        }
        assert_eq!(all().count(), Source::ALL.len());
        assert!(by_kind("fax").is_none());
    }

    #[test]
    fn every_source_with_a_url_has_endpoints_and_setup_steps() {
        let id = Uuid::nil();
        for c in all() {
            let url = c.webhook_url("https://in.example/", id);
            if let Some(url) = &url {
                assert!(url.starts_with("https://in.example/"), "{url}");
                let steps = c.setup_steps(url);
                assert!(steps.len() >= 3, "{}", c.source());
                assert!(
                    steps.iter().any(|s| s.contains(url.as_str())),
                    "{}",
                    c.source()
                );
                // Every further route of a signed webhook is named in the steps too.
                for route in c.webhook().map_or(&[][..], |h| h.routes()) {
                    let route_url = route_url("https://in.example/", c.source(), route, id);
                    assert!(
                        steps.iter().any(|s| s.contains(&route_url)),
                        "{}: {route_url}",
                        c.source()
                    );
                }
            }
            assert!(!c.endpoints().is_empty(), "{}", c.source());
            assert!(!c.label().is_empty() && !c.authentication().is_empty());
        }
    }

    /// Every test event is one the source's own mapping accepts and maps to an event,
    /// so a test exercises the real pipeline instead of dead-lettering.
    #[test]
    fn test_events_normalise_for_every_source() {
        for c in all() {
            let ev = test_event(c.source(), Uuid::nil());
            assert_eq!(ev.source, c.source());
            assert!(ev.source_event_id.starts_with("test:"));
            let out = crate::normalize::normalize(&ev.record(), "IN")
                .unwrap_or_else(|e| panic!("{}: {e}", c.source()));
            assert!(out.event.is_some(), "{} maps to an event", c.source());
        }
    }
}
