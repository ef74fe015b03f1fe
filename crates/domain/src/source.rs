//! Where events come from (`Source`) and through which touchpoint the customer acted
//! (`Channel`). Both travel as lower-case strings in JSON, stream entries and Postgres.

use serde::{Deserialize, Serialize};

names! {
    /// The system that delivered an event to ingest. Naming a new source is one line
    /// here (its module registers in `ingestion::sources`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum Source("source") {
        /// Shopify webhooks.
        Shopify = "shopify",
        /// WooCommerce webhooks.
        Woocommerce = "woocommerce",
        /// Twilio WhatsApp inbound messages and status callbacks.
        Twilio = "twilio",
        /// Segment-compatible tracking API (any Segment or RudderStack SDK).
        Segment = "segment",
        /// Point-of-sale bills.
        Pos = "pos",
        /// CSV bulk imports.
        Csv = "csv",
    }
}

/// A string that names no known value of a closed set (source, channel, event type,
/// status, ...): the error of every `FromStr` the `names!` macro writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownName {
    /// What was being parsed ("source", "channel", "event type", ...).
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
}

names! {
    /// The touchpoint through which the customer acted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum Channel("channel") {
        /// Web shop or app.
        Web = "web",
        /// In-store point of sale.
        Pos = "pos",
        /// WhatsApp conversations.
        Whatsapp = "whatsapp",
        /// Physical store presence (QR scans, visits).
        Store = "store",
        /// Bulk historical imports.
        Import = "import",
        /// A brand's own systems calling the API.
        Api = "api",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "openapi")]
    #[test]
    fn the_openapi_schema_lists_the_wire_names() {
        use utoipa::PartialSchema as _;
        let schema = serde_json::to_value(Source::schema()).unwrap();
        let listed: Vec<&str> = schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let names: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(listed, names);
    }

    #[test]
    fn names_round_trip() {
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>().unwrap(), c);
        }
        assert!("fax".parse::<Channel>().is_err());
    }
}
