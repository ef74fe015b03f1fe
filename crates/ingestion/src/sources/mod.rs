//! One module per source: what ingest accepts from it (topics, deduplication keys,
//! limits) and how its payloads map to normalised events. Keeping both sides together
//! means the edge never accepts what the normalizer cannot map.

pub mod csv_rows;
pub mod pos;
pub mod segment;
pub mod shopify;
pub mod twilio;
pub mod woocommerce;
