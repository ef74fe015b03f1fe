//! The building blocks every source mapping uses: starting a normalised event,
//! collecting identifiers (dropping the ones that do not parse, with their reason),
//! reading ids, money, quantities and timestamps that arrive as strings or numbers, and
//! finishing an event that carries a full order.
//!
//! Sources import this module; it imports no source, so there is no cycle between the
//! mappings and the dispatcher ([`crate::normalize`]).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use domain::{
    Channel, EventType, Identifier, IdentifierKind, NormalizedEvent, Order, OrderState, OrderWrite,
    Product, Refund,
};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::{Dropped, MapError, Normalized};
use crate::raw_event::RawRecord;

/// Starts a normalised event of `raw` with no identifiers, traits or properties.
pub(crate) fn event_of(
    raw: &RawRecord<'_>,
    channel: Channel,
    event_type: EventType,
    name: Option<String>,
    occurred_at: Option<DateTime<Utc>>,
) -> NormalizedEvent {
    NormalizedEvent {
        event_id: raw.id,
        occurred_at: occurred_at.or(raw.occurred_at).unwrap_or(raw.received_at),
        received_at: raw.received_at,
        source: raw.source,
        integration_id: raw.integration_id,
        channel,
        event_type,
        name,
        identifiers: Vec::new(),
        traits: Map::new(),
        properties: Map::new(),
        order: None,
    }
}

/// Collects identifiers, normalising each and recording the ones that do not parse.
pub(crate) struct Identifiers<'r> {
    region: &'r str,
    pub(crate) found: Vec<Identifier>,
    pub(crate) dropped: Vec<Dropped>,
}

impl<'r> Identifiers<'r> {
    pub(crate) fn new(region: &'r str) -> Self {
        Self {
            region,
            found: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// Adds `raw` as `kind`. Absent and blank values are not identifiers and are skipped
    /// silently; anything else that fails to parse is dropped with its reason.
    pub(crate) fn add(&mut self, kind: IdentifierKind, raw: Option<&str>) {
        let Some(raw) = raw.filter(|v| !v.trim().is_empty()) else {
            return;
        };
        match Identifier::parse(kind, raw, self.region) {
            Ok(id) => self.found.push(id),
            Err(e) => self.dropped.push(Dropped {
                kind,
                reason: reason_code(&e),
            }),
        }
    }

    /// Adds a source-namespaced customer id (`shopify:123`).
    pub(crate) fn add_customer_id(&mut self, namespace: &str, id: Option<&str>) {
        if let Some(id) = id.filter(|v| !v.trim().is_empty()) {
            self.add(
                IdentifierKind::CustomerId,
                Some(&format!("{namespace}:{}", id.trim())),
            );
        }
    }

    /// Moves the identifiers into `event` and returns the dropped ones.
    pub(crate) fn finish(self, event: &mut NormalizedEvent) -> Vec<Dropped> {
        event.identifiers = self.found;
        self.dropped
    }
}

/// The stable reason code of an identifier error, used as a metric label.
pub(crate) fn reason_code(e: &domain::IdentifierError) -> &'static str {
    use domain::IdentifierError as E;
    match e {
        E::Empty(_) => "empty",
        E::InvalidEmail(_) => "invalid_email",
        E::InvalidPhone(_) => "invalid_phone",
        E::TooLong(_) => "too_long",
        E::MissingNamespace(_) => "missing_namespace",
    }
}

/// The value at `path` (object keys) below `v`.
pub(crate) fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

/// A string or number at `path` as text (ids arrive as either); null and blank are
/// absent.
pub(crate) fn text(v: &Value, path: &[&str]) -> Option<String> {
    match at(v, path)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Money or a quantity written as a string or a number.
pub(crate) fn decimal(v: &Value, path: &[&str]) -> Option<Decimal> {
    match at(v, path)? {
        Value::String(s) => parse_decimal(s),
        Value::Number(n) => parse_decimal(&n.to_string()),
        _ => None,
    }
}

/// Parses money such as `1,234.50`, `499`, `1.5e2`.
pub(crate) fn parse_decimal(s: &str) -> Option<Decimal> {
    let s = s.trim().replace(',', "");
    if s.is_empty() {
        return None;
    }
    s.parse::<Decimal>()
        .ok()
        .or_else(|| Decimal::from_scientific(&s).ok())
}

/// A whole number written as a string or a number (`2`, `"2"`, `2.0`).
pub(crate) fn integer(v: &Value, path: &[&str]) -> Option<i64> {
    match at(v, path)? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The earliest time a source may report: older times are typing or clock errors.
pub const EARLIEST_TIME: DateTime<Utc> = match NaiveDate::from_ymd_opt(1900, 1, 1) {
    Some(d) => match d.and_hms_opt(0, 0, 0) {
        Some(t) => t.and_utc(),
        None => DateTime::<Utc>::MIN_UTC,
    },
    None => DateTime::<Utc>::MIN_UTC,
};

/// The latest time a source may report (Postgres and every consumer handle it).
pub const LATEST_TIME: DateTime<Utc> = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(d) => match d.and_hms_opt(23, 59, 59) {
        Some(t) => t.and_utc(),
        None => DateTime::<Utc>::MAX_UTC,
    },
    None => DateTime::<Utc>::MAX_UTC,
};

/// Whether `t` lies in the window every time must lie in ([`EARLIEST_TIME`] to
/// [`LATEST_TIME`]).
pub fn in_time_window(t: DateTime<Utc>) -> bool {
    (EARLIEST_TIME..=LATEST_TIME).contains(&t)
}

/// A timestamp at `path`: RFC 3339, or a zone-less date-time or date read as UTC
/// (WooCommerce's `*_gmt` fields, CSV exports), or Unix seconds. A time outside
/// [`in_time_window`] is not a time: it reads as absent, and a required one is refused.
pub(crate) fn time(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    match at(v, path)? {
        Value::String(s) => parse_time(s),
        Value::Number(n) => n
            .as_i64()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .filter(|t| in_time_window(*t)),
        _ => None,
    }
}

/// Parses the timestamp forms [`time`] accepts, within [`in_time_window`].
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    parse_any_time(s).filter(|t| in_time_window(*t))
}

fn parse_any_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%:z", "%Y-%m-%d %H:%M:%S %z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Copies the string/number/bool values at the given keys of `from` into `to` under new
/// names, skipping absent ones.
pub(crate) fn copy_fields(to: &mut Map<String, Value>, from: &Value, fields: &[(&str, &str)]) {
    for (key, as_name) in fields {
        if let Some(v) = from.get(*key).filter(|v| !v.is_null()) {
            if v.as_str().is_some_and(|s| s.trim().is_empty()) {
                continue;
            }
            to.insert((*as_name).to_owned(), v.clone());
        }
    }
}

/// A string value for JSON maps.
pub(crate) fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

/// The sum of the lines' `price × qty`, saturating instead of overflowing: an absurd
/// total is then refused by the range check ([`crate::sources::admission`]) rather
/// than panicking here.
pub(crate) fn lines_total(items: &[domain::OrderItem]) -> Decimal {
    items.iter().fold(Decimal::ZERO, |sum, i| {
        sum.saturating_add(i.price.saturating_mul(Decimal::from(i.qty)))
    })
}

/// The sum of `amounts`, saturating instead of overflowing (see [`lines_total`]).
pub(crate) fn saturating_sum(amounts: impl IntoIterator<Item = Decimal>) -> Decimal {
    amounts
        .into_iter()
        .fold(Decimal::ZERO, |sum, a| sum.saturating_add(a))
}

/// Quantity as the `i32` order lines store; out-of-range quantities are malformed.
pub(crate) fn quantity(v: &Value, path: &[&str]) -> Result<i32, MapError> {
    let q = integer(v, path).unwrap_or(1);
    i32::try_from(q).map_err(|_| MapError::Malformed(format!("quantity {q} out of range")))
}

/// A required field, or a malformed-payload error naming it.
pub(crate) fn required<T>(v: Option<T>, what: &str) -> Result<T, MapError> {
    v.ok_or_else(|| MapError::Malformed(format!("missing or invalid `{what}`")))
}

/// Finishes the mapping of an event that reports order `order_id` in full (`state`,
/// with the refunds the report includes): the event carries the order, `orders` gets
/// its state and refunds, and its lines' products are upserted.
pub(crate) fn with_order(
    mut event: NormalizedEvent,
    ids: Identifiers<'_>,
    order_id: String,
    state: OrderState,
    refunds: Vec<Refund>,
) -> Normalized {
    let products = Product::of_items(&state.items, Some(&state.currency));
    event.order = Some(Order {
        order_id: order_id.clone(),
        total: state.total,
        currency: state.currency.clone(),
        status: state.status,
        store: state.store.clone(),
        items: state.items.clone(),
    });
    let dropped = ids.finish(&mut event);
    Normalized {
        event: Some(event),
        dropped,
        order: Some(OrderWrite {
            external_order_id: order_id,
            state: Some(state),
            refunds,
            deleted: false,
        }),
        products,
    }
}

/// Finishes the mapping of an event without an order: its identifiers, and the
/// products it mentions.
pub(crate) fn without_order(
    mut event: NormalizedEvent,
    ids: Identifiers<'_>,
    products: Vec<Product>,
) -> Normalized {
    let dropped = ids.finish(&mut event);
    Normalized {
        event: Some(event),
        dropped,
        order: None,
        products,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readers_accept_both_shapes() {
        let v = json!({"a": {"id": 123, "s": " x ", "blank": "", "price": "1,299.50", "n": 2.0}});
        assert_eq!(text(&v, &["a", "id"]).as_deref(), Some("123"));
        assert_eq!(text(&v, &["a", "s"]).as_deref(), Some("x"));
        assert_eq!(text(&v, &["a", "blank"]), None);
        assert_eq!(decimal(&v, &["a", "price"]), Some(Decimal::new(129950, 2)));
        assert_eq!(integer(&v, &["a", "n"]), Some(2));
        assert_eq!(text(&v, &["a", "missing"]), None);
    }

    #[test]
    fn times_in_every_form() {
        let want = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        for s in [
            "2026-03-04T05:06:07Z",
            "2026-03-04T10:36:07+05:30",
            "2026-03-04T05:06:07",
            "2026-03-04 05:06:07",
        ] {
            assert_eq!(parse_time(s), Some(want), "{s}");
        }
        assert_eq!(
            parse_time("2026-03-04").unwrap().to_rfc3339(),
            "2026-03-04T00:00:00+00:00"
        );
        assert_eq!(parse_time("yesterday"), None);
        // Outside the window: not a time.
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time("+200000-01-01T00:00:00Z"), None);
        for secs in [-300_000_000_000_i64, 8_200_000_000_000, i64::MIN, i64::MAX] {
            assert_eq!(time(&json!({"t": secs}), &["t"]), None, "{secs}");
        }
        assert!(time(&json!({"t": 1_700_000_000}), &["t"]).is_some());
    }

    #[test]
    fn money_sums_saturate() {
        let huge = domain::OrderItem {
            sku: "X".into(),
            name: "X".into(),
            category: None,
            qty: i32::MAX,
            price: Decimal::MAX,
        };
        assert_eq!(lines_total(&[huge.clone(), huge]), Decimal::MAX);
        assert_eq!(saturating_sum([Decimal::MAX, Decimal::MAX]), Decimal::MAX);
    }

    #[test]
    fn bad_identifiers_are_dropped_with_a_reason() {
        let mut ids = Identifiers::new("IN");
        ids.add(IdentifierKind::Email, Some("A@B.com"));
        ids.add(IdentifierKind::Email, Some("not-an-email"));
        ids.add(IdentifierKind::Phone, Some("12"));
        ids.add(IdentifierKind::Phone, Some("   "));
        ids.add(IdentifierKind::Phone, None);
        ids.add_customer_id("shopify", Some("77"));
        assert_eq!(ids.found.len(), 2);
        assert_eq!(
            ids.dropped,
            vec![
                Dropped {
                    kind: IdentifierKind::Email,
                    reason: "invalid_email"
                },
                Dropped {
                    kind: IdentifierKind::Phone,
                    reason: "invalid_phone"
                }
            ]
        );
    }
}
