//! The ingestion library: everything more than one binary needs to take events in.
//!
//! - [`signing`]: Shopify, WooCommerce and Twilio signatures, both ways.
//! - [`raw`]: the durable raw-event store with group commit, and publishing to
//!   `events.raw` after the commit.
//! - [`outbox`]: the `events.raw` outbox over `customer_raw_event.published_at`, for the
//!   streams runtime's relay.
//! - [`connection_log`]: the batched per-integration delivery log.
//! - [`sources`]: per source, what the edge accepts and how payloads map to normalised
//!   events; [`normalize`] dispatches over them.
//! - [`csv`]: the streaming CSV importer behind `ctl import csv` and the upload API.
//!
//! The ingest service is the HTTP edge over this crate; the normalizer consumes
//! `events.raw` and writes what [`normalize`] returns.

pub mod connection_log;
pub mod csv;
pub mod normalize;
pub mod outbox;
pub mod raw;
pub mod signing;
pub mod sources;

/// The URL a brand configures for an integration of `kind` (`ctl integration add`
/// prints it; the dashboard shows it): ingest's public base URL plus the kind's path.
/// Segment-compatible SDKs take the base of the tracking API (`…/v1`).
pub fn webhook_url(public_base_url: &str, kind: &str, integration: uuid::Uuid) -> String {
    let base = public_base_url.trim_end_matches('/');
    match kind {
        "shopify" => format!("{base}/webhooks/shopify/{integration}"),
        "woocommerce" => format!("{base}/webhooks/woocommerce/{integration}"),
        "twilio" => format!("{base}/webhooks/twilio/{integration}"),
        "pos" => format!("{base}/pos/{integration}/bills"),
        "segment" => format!("{base}/v1"),
        _ => base.to_owned(),
    }
}
