//! CSV imports (`/imports`): the upload form, progress, refused rows and the progress
//! feed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Fields a customer row can map its columns to.
pub const CUSTOMER_FIELDS: [&str; 13] = [
    "email",
    "phone",
    "customer_id",
    "loyalty_id",
    "first_name",
    "last_name",
    "name",
    "city",
    "country",
    "created_at",
    "whatsapp_consent",
    "email_consent",
    "sms_consent",
];

/// The order-level fields of an order row (repeated on every line of the order).
pub const ORDER_LEVEL_FIELDS: [&str; 12] = [
    "order_id",
    "placed_at",
    "total",
    "currency",
    "status",
    "store",
    "email",
    "phone",
    "customer_id",
    "loyalty_id",
    "first_name",
    "last_name",
];

/// The line-level fields of an order row.
pub const LINE_FIELDS: [&str; 5] = ["sku", "name", "category", "qty", "price"];

/// Fields an order row can map its columns to: [`ORDER_LEVEL_FIELDS`], then
/// [`LINE_FIELDS`].
pub const ORDER_FIELDS: [&str; 17] = [
    "order_id",
    "placed_at",
    "total",
    "currency",
    "status",
    "store",
    "email",
    "phone",
    "customer_id",
    "loyalty_id",
    "first_name",
    "last_name",
    "sku",
    "name",
    "category",
    "qty",
    "price",
];

names! {
    /// What a CSV file holds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum CsvImportKind("CSV import kind") {
        /// One customer per row.
        Customers = "customers",
        /// Orders: one row per order, or one row per order line with the order's columns
        /// repeated (consecutive rows with the same order id are one order).
        Orders = "orders",
        /// Order lines: like `orders`, but every row must be a line (sku and price mapped).
        OrderLines = "order_lines",
    }
}

impl CsvImportKind {
    /// The fields a file of this kind can map its columns to.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            CsvImportKind::Customers => &CUSTOMER_FIELDS,
            CsvImportKind::Orders | CsvImportKind::OrderLines => &ORDER_FIELDS,
        }
    }
}

names! {
    /// State of an import.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum CsvImportStatus("CSV import status") {
        /// Rows are being read.
        Running = "running",
        /// Every row was read (some may have failed: see `error_rows`).
        Completed = "completed",
        /// The file could not be read to the end (see `error`).
        Failed = "failed",
    }
}

/// How a file's columns map onto import fields, as the importer uses it and
/// `csv_imports.mapping` stores it.
///
/// A field not named in `columns` is read from a column whose header, lower-cased with
/// spaces and punctuation as `_`, equals the field name (`Email`, `Order ID`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CsvMapping {
    /// Field → column header.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Currency of orders whose file has no currency column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_currency: Option<String>,
    /// Namespace of customer ids that are not namespaced already (default `csv`; use
    /// `shopify` for a Shopify export so the ids match its webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id_namespace: Option<String>,
}

/// A `field=Column` list that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not field=Column")]
pub struct BadMappingPair(pub String);

impl CsvMapping {
    /// Parses `field=Column,field2=Column 2` (the `ctl import csv --mapping` form).
    pub fn parse_pairs(spec: &str) -> Result<Self, BadMappingPair> {
        let mut mapping = CsvMapping::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, column) = pair
                .split_once('=')
                .ok_or_else(|| BadMappingPair(pair.to_owned()))?;
            mapping
                .columns
                .insert(field.trim().to_owned(), column.trim().to_owned());
        }
        Ok(mapping)
    }
}

/// `POST /imports` form (multipart/form-data). Send the text fields before `file`:
/// the file part is streamed into the importer as it arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CsvUploadForm {
    /// What the file holds.
    pub kind: CsvImportKind,
    /// JSON object mapping CSV column headers to fields (e.g.
    /// `{"Mobile": "phone", "E-mail": "email"}`); a field left unmapped is read from the
    /// column whose header, lower-cased with spaces and punctuation as `_`, is its name.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Currency of orders when the file has no currency column (ISO 4217).
    #[serde(default)]
    pub default_currency: Option<String>,
    /// Namespace of customer ids that are not namespaced already (default `csv`; use
    /// `shopify` for a Shopify export so its ids match the webhooks').
    #[serde(default)]
    pub customer_id_namespace: Option<String>,
    /// The CSV file.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Binary))]
    pub file: Vec<u8>,
}

/// Answer of `POST /imports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CsvImportAccepted {
    /// The import id (progress at `GET /imports/{id}`).
    pub import_id: Uuid,
}

/// An import and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CsvImportView {
    /// Import id.
    pub id: Uuid,
    /// What the file holds.
    pub kind: CsvImportKind,
    /// Uploaded file name.
    pub filename: String,
    /// SHA-256 of the file, once read.
    #[serde(default)]
    pub file_sha256: Option<String>,
    /// Column mapping used.
    pub mapping: CsvMapping,
    /// Running, completed or failed.
    pub status: CsvImportStatus,
    /// Rows read so far.
    pub total_rows: i64,
    /// Rows stored.
    pub imported_rows: i64,
    /// Rows already imported before (same file and row).
    pub duplicate_rows: i64,
    /// Rows refused (see the errors list).
    pub error_rows: i64,
    /// Why the import failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Who uploaded it.
    #[serde(default)]
    pub created_by: Option<String>,
    /// When the upload started.
    pub started_at: DateTime<Utc>,
    /// When the last row was read (absent while running).
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// One refused row of an import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CsvImportRowError {
    /// Line number in the file (the header is line 1).
    pub line: i64,
    /// Why it was refused.
    pub reason: String,
}

/// Server-sent event names of `GET /imports/{id}/events`: `progress` carries a
/// [`CsvImportView`] whenever it changes; `done` the final one, after which the
/// stream ends.
pub mod import_events {
    /// Event name of a progress update.
    pub const PROGRESS: &str = "progress";
    /// Event name of the final state.
    pub const DONE: &str = "done";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in CsvImportKind::ALL {
            assert_eq!(k.as_str().parse::<CsvImportKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        for s in CsvImportStatus::ALL {
            assert_eq!(s.as_str().parse::<CsvImportStatus>().unwrap(), s);
        }
        assert!("invoices".parse::<CsvImportKind>().is_err());
    }

    #[test]
    fn order_fields_are_order_level_then_line_fields() {
        let joined: Vec<&str> = ORDER_LEVEL_FIELDS
            .iter()
            .chain(&LINE_FIELDS)
            .copied()
            .collect();
        assert_eq!(joined, ORDER_FIELDS);
    }

    #[test]
    fn mapping_pairs_parse() {
        let m = CsvMapping::parse_pairs("email = E-mail, loyalty_id=Loyalty Card,").unwrap();
        assert_eq!(m.columns["email"], "E-mail");
        assert_eq!(m.columns["loyalty_id"], "Loyalty Card");
        assert_eq!(
            CsvMapping::parse_pairs("email"),
            Err(BadMappingPair("email".into()))
        );
    }
}
