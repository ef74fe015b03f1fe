//! Rows of CSV imports as raw events, and their mapping to normalised events.
//!
//! The importer ([`crate::csv`]) turns each customer row, and each group of consecutive
//! order rows sharing an order id, into one self-contained raw event: the mapped fields
//! under their canonical names (customer ids already namespaced, the default currency
//! already applied). This module defines those bodies and maps them: customers to
//! `identify`, orders to `order_placed` (or `order_cancelled`) on the import channel.
//!
//! Body of a customer row: `{"import_id", "line", "record": {"email", "phone",
//! "customer_id", "loyalty_id", "first_name", "last_name", "name", "city", "country",
//! "created_at", "whatsapp_consent", "email_consent", "sms_consent"}}`. Body of an order: `{"import_id", "lines": [..], "order": {"order_id",
//! "placed_at", "total", "currency", "status", "store", "email", "phone", "customer_id",
//! "loyalty_id", "first_name", "last_name"}, "items": [{"sku", "name", "category", "qty",
//! "price"}]}`. Every value is a string, as read from the file.

use chrono::{DateTime, Utc};
use domain::consent::{ConsentChannel, ConsentStatus};
use domain::{
    Channel, EventType, Identifier, IdentifierKind, OrderItem, OrderState, OrderStatus, Source,
};
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Map, Value, json};

use super::mapping::{
    Identifiers, copy_fields, decimal, event_of, lines_total, parse_decimal, required, s, text,
    time, with_order, without_order,
};
use super::{Connector, Credential, Description, EndpointDoc, MapError, Normalized};
use crate::raw_event::RawRecord;

/// The CSV import connector: files come in through the api-gateway's upload or
/// `ctl import csv` ([`crate::csv`]), not to ingest.
pub struct CsvRows;

const DESCRIPTION: Description = Description {
    source: Source::Csv,
    label: "CSV import",
    credential: Credential::None,
    authentication: "Upload through POST /api/v1/imports with a session or API token",
    own_secret_hint: None,
};

impl Connector for CsvRows {
    fn description(&self) -> &'static Description {
        &DESCRIPTION
    }

    fn endpoints(&self) -> Vec<EndpointDoc> {
        vec![EndpointDoc {
            endpoint: "POST /api/v1/imports` (api-gateway) or `ctl import csv".into(),
            authentication: "a session or API token of an analyst",
            dedupe_key: "`<file SHA-256>:<line>` (of the order's first line for orders)",
        }]
    }

    fn setup_steps(&self, _webhook_url: &str) -> Vec<String> {
        vec!["Upload files on the CSV upload page.".into()]
    }

    fn normalize(&self, raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
        normalize(raw, region)
    }

    fn test_delivery(
        &self,
        customer: &str,
        _key: &str,
        _now: DateTime<Utc>,
    ) -> (&'static str, Value) {
        (
            KIND_CUSTOMERS,
            json!({"record": {"customer_id": format!("csv:{customer}"),
                              "first_name": "ConstIntel", "last_name": "Test"},
                   "constintel_test": true}),
        )
    }
}

/// Kind of a customer row.
pub const KIND_CUSTOMERS: &str = "customers";
/// Kind of an order (one or more order-line rows).
pub const KIND_ORDERS: &str = "orders";

/// The consent columns of a customer row and the channel each records.
pub const CONSENT_FIELDS: [(&str, ConsentChannel); 3] = [
    ("whatsapp_consent", ConsentChannel::Whatsapp),
    ("email_consent", ConsentChannel::Email),
    ("sms_consent", ConsentChannel::Sms),
];

/// Checks the identifiers of a customer record (at least one must parse) and its
/// consent cells (each must be a consent word). Returns the reason a row is refused.
pub fn check_customer(record: &Map<String, Value>, region: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut usable = 0;
    for (field, kind) in [
        ("email", IdentifierKind::Email),
        ("phone", IdentifierKind::Phone),
        ("customer_id", IdentifierKind::CustomerId),
        ("loyalty_id", IdentifierKind::LoyaltyId),
    ] {
        let Some(raw) = record
            .get(field)
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty())
        else {
            continue;
        };
        match Identifier::parse(kind, raw, region) {
            Ok(_) => usable += 1,
            Err(e) => problems.push(e.to_string()),
        }
    }
    for (field, _) in CONSENT_FIELDS {
        if let Some(v) = record.get(field).and_then(Value::as_str)
            && ConsentStatus::from_word(v).is_none()
        {
            return Err(format!(
                "`{field}` {v:?} is not a consent value (yes/no, subscribed/unsubscribed, \
                 true/false, opted_in/opted_out)"
            ));
        }
    }
    if usable > 0 {
        return Ok(());
    }
    if problems.is_empty() {
        Err("no identifier: the row has no email, phone, customer id or loyalty id".into())
    } else {
        Err(format!("no usable identifier: {}", problems.join("; ")))
    }
}

/// Parses an order status word of an export (`paid`, `cancelled`, `refunded`, ...).
pub fn order_status(word: Option<&str>) -> Result<OrderStatus, String> {
    Ok(
        match word.map(|w| w.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("placed") | Some("pending") | Some("open") => {
                OrderStatus::Placed
            }
            Some("paid") | Some("completed") | Some("complete") | Some("fulfilled")
            | Some("processing") => OrderStatus::Paid,
            Some("cancelled") | Some("canceled") | Some("voided") => OrderStatus::Cancelled,
            Some("refunded") => OrderStatus::Refunded,
            Some("partially_refunded") | Some("partially refunded") => {
                OrderStatus::PartiallyRefunded
            }
            Some(other) => return Err(format!("unknown order status `{other}`")),
        },
    )
}

/// Maps a CSV raw event.
fn normalize(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    match raw.kind {
        KIND_CUSTOMERS => customer(raw, region),
        KIND_ORDERS => order(raw, region),
        other => Err(MapError::Unsupported(format!("csv kind `{other}`"))),
    }
}

fn identifiers_of(ids: &mut Identifiers<'_>, record: &Value) {
    ids.add(IdentifierKind::Email, text(record, &["email"]).as_deref());
    ids.add(IdentifierKind::Phone, text(record, &["phone"]).as_deref());
    ids.add(
        IdentifierKind::CustomerId,
        text(record, &["customer_id"]).as_deref(),
    );
    ids.add(
        IdentifierKind::LoyaltyId,
        text(record, &["loyalty_id"]).as_deref(),
    );
}

fn customer(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    let record = raw
        .body
        .get("record")
        .filter(|r| r.is_object())
        .ok_or_else(|| MapError::Malformed("missing `record`".into()))?;
    let mut ev = event_of(
        raw,
        Channel::Import,
        EventType::Identify,
        Some("csv.customers".into()),
        None,
    );
    let mut ids = Identifiers::new(region);
    identifiers_of(&mut ids, record);
    copy_fields(
        &mut ev.traits,
        record,
        &[
            ("first_name", "first_name"),
            ("last_name", "last_name"),
            ("name", "name"),
            ("city", "city"),
            ("country", "country"),
        ],
    );
    for (field, channel) in CONSENT_FIELDS {
        // Checked when the row was read; the time and source (`csv`) are stamped by the
        // normalizer like every consent.
        if let Some(status) = text(record, &[field]).and_then(|v| ConsentStatus::from_word(&v)) {
            ev.traits
                .insert(channel.trait_key().into(), s(status.as_str()));
        }
    }
    if let Some(created) = time(record, &["created_at"]) {
        ev.traits
            .insert("customer_since".into(), s(created.to_rfc3339()));
    }
    import_properties(raw.body, &mut ev.properties);
    Ok(without_order(ev, ids, Vec::new()))
}

fn import_properties(body: &Value, p: &mut Map<String, Value>) {
    copy_fields(
        p,
        body,
        &[
            ("import_id", "import_id"),
            ("line", "line"),
            ("lines", "lines"),
        ],
    );
}

fn order(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    let body = raw.body;
    let o = body
        .get("order")
        .filter(|r| r.is_object())
        .ok_or_else(|| MapError::Malformed("missing `order`".into()))?;
    let order_id = required(text(o, &["order_id"]), "order_id")?;
    let placed_at = required(time(o, &["placed_at"]), "placed_at")?;
    let currency = required(text(o, &["currency"]), "currency")?.to_uppercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(MapError::Malformed(format!(
            "`currency` {currency} is not an ISO 4217 code"
        )));
    }
    let status = order_status(text(o, &["status"]).as_deref()).map_err(MapError::Malformed)?;
    let items = body
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|line| {
            let sku = required(text(line, &["sku"]), "sku")?;
            let qty_raw = text(line, &["qty"]).unwrap_or_else(|| "1".into());
            let qty = parse_decimal(&qty_raw)
                .filter(|q| q.fract().is_zero())
                .and_then(|q| q.to_i32())
                .ok_or_else(|| {
                    MapError::Malformed(format!("`qty` {qty_raw} is not a whole number"))
                })?;
            let price = required(decimal(line, &["price"]), "price")?;
            Ok(OrderItem {
                name: text(line, &["name"]).unwrap_or_else(|| sku.clone()),
                sku,
                category: text(line, &["category"]),
                qty,
                price,
            })
        })
        .collect::<Result<Vec<_>, MapError>>()?;
    let total = match decimal(o, &["total"]) {
        Some(t) => t,
        None if !items.is_empty() => lines_total(&items),
        None => return Err(MapError::Malformed("missing or invalid `total`".into())),
    };
    let event_type = if status == OrderStatus::Cancelled {
        EventType::OrderCancelled
    } else {
        EventType::OrderPlaced
    };
    let store = text(o, &["store"]);
    let mut ev = event_of(
        raw,
        Channel::Import,
        event_type,
        Some("csv.orders".into()),
        Some(placed_at),
    );
    let mut ids = Identifiers::new(region);
    identifiers_of(&mut ids, o);
    copy_fields(
        &mut ev.traits,
        o,
        &[("first_name", "first_name"), ("last_name", "last_name")],
    );
    import_properties(body, &mut ev.properties);
    Ok(with_order(
        ev,
        ids,
        order_id,
        OrderState {
            status,
            channel: Channel::Import,
            store,
            placed_at,
            currency,
            total,
            items,
            version: placed_at,
        },
        Vec::new(),
    ))
}
