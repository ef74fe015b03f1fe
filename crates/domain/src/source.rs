//! Where events come from (`Source`) and through which touchpoint the customer acted
//! (`Channel`). Both travel as lower-case strings in JSON, stream entries and Postgres.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Declares [`Source`] from one list: each line is a source's doc, variant and name, so
/// naming a new source is one line (its module registers in `ingestion::sources`).
macro_rules! sources {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)+) => {
        /// The system that delivered an event to ingest.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum Source {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)+
        }

        impl Source {
            /// Every source, in a stable order.
            pub const ALL: [Source; [$($name),+].len()] = [$(Source::$variant),+];

            /// The lower-case name used in JSON, stream entries and Postgres.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Source::$variant => $name,)+
                }
            }
        }
    };
}

sources! {
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

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no known source or channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownName {
    /// What was being parsed ("source", "channel", "event type", ...).
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
}

impl FromStr for Source {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|src| src.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "source",
                value: s.to_owned(),
            })
    }
}

/// The touchpoint through which the customer acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Web shop or app.
    Web,
    /// In-store point of sale.
    Pos,
    /// WhatsApp conversations.
    Whatsapp,
    /// Physical store presence (QR scans, visits).
    Store,
    /// Bulk historical imports.
    Import,
    /// A brand's own systems calling the API.
    Api,
}

impl Channel {
    /// Every channel, in a stable order.
    pub const ALL: [Channel; 6] = [
        Channel::Web,
        Channel::Pos,
        Channel::Whatsapp,
        Channel::Store,
        Channel::Import,
        Channel::Api,
    ];

    /// The lower-case name used in JSON and Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Pos => "pos",
            Channel::Whatsapp => "whatsapp",
            Channel::Store => "store",
            Channel::Import => "import",
            Channel::Api => "api",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "channel",
                value: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
