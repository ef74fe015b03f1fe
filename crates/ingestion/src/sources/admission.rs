//! What ingest admits: the checks that make its 2xx a promise. Every raw event a
//! source builds passes [`admit`] before it is handed to the group commit, so what is
//! answered 2xx can be stored, read back by the normalizer and written to its tables;
//! what cannot is refused here with a 4xx naming the field, and nothing of it is
//! stored.
//!
//! The limits are the ones downstream has (docs/ingestion.md, "Validation"):
//!
//! - no U+0000 in any string or key (Postgres text and JSONB cannot hold it);
//! - JSON nested at most [`MAX_JSON_DEPTH`] levels (the streams' JSON reader stops at
//!   128, and a body travels a few levels deep inside an envelope);
//! - a deduplication key of at most [`MAX_KEY_BYTES`] bytes (it is a unique-index key);
//! - every time within 1900-01-01 to 9999-12-31 (`mapping::in_time_window`);
//! - the source's own mapping succeeds — the normalizer runs the same code later;
//! - what the mapping produces fits its columns: amounts within
//!   [`domain::MAX_AMOUNT`], refunds not negative, order ids, SKUs, refund ids, stores
//!   and currencies at most [`MAX_ID_CHARS`] characters (index keys).

use domain::{Order, OrderWrite, Product, amount_fits};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::mapping::in_time_window;
use super::{Normalized, Refusal};
use crate::normalize;
use crate::raw_event::NewRawEvent;

/// Deepest JSON nesting a body may have.
pub const MAX_JSON_DEPTH: usize = 64;
/// Longest deduplication key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest order id, SKU, refund id, store or currency, in characters.
pub const MAX_ID_CHARS: usize = 256;

/// Identifier parsing never refuses an event (a value that does not parse is dropped and
/// counted), so the region the check maps with does not change its verdict.
const CHECK_REGION: &str = "IN";

/// Checks `event` against every limit downstream has and returns what the normalizer
/// will make of it. A mapping failure is refused with `code` (the source's own code for
/// a malformed delivery: `invalid_webhook`, `invalid_message`, `invalid_bill`, ...);
/// the limits have codes of their own (`nul_character`, `too_deep`, `key_too_long`,
/// `out_of_range`).
pub fn admit(event: &NewRawEvent, code: &'static str) -> Result<Normalized, Refusal> {
    let key = &event.source_event_id;
    if key.trim().is_empty() {
        return Err(Refusal::invalid(
            code,
            "the delivery has no deduplication key",
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Refusal::invalid(
            "key_too_long",
            format!(
                "the deduplication key is {} bytes; at most {MAX_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    if key.contains('\0') || event.kind.contains('\0') || map_has_nul(&event.headers) {
        return Err(nul());
    }
    if has_nul(&event.body) {
        return Err(nul());
    }
    let depth = depth(&event.body);
    if depth > MAX_JSON_DEPTH {
        return Err(Refusal::invalid(
            "too_deep",
            format!("the body nests {depth} levels deep; at most {MAX_JSON_DEPTH}"),
        ));
    }
    for (what, t) in [
        ("the receipt time", Some(event.received_at)),
        ("the event time", event.occurred_at),
    ] {
        if t.is_some_and(|t| !in_time_window(t)) {
            return Err(out_of_range(format!("{what} is outside 1900–9999")));
        }
    }
    let normalized = normalize::normalize(&event.record(), CHECK_REGION)
        .map_err(|e| Refusal::invalid(code, e.into_reason()))?;
    check_normalized(&normalized)?;
    Ok(normalized)
}

/// The 400 of a string holding U+0000.
fn nul() -> Refusal {
    Refusal::invalid(
        "nul_character",
        "the delivery contains a U+0000 character, which cannot be stored",
    )
}

fn out_of_range(message: String) -> Refusal {
    Refusal::invalid("out_of_range", message)
}

/// Whether any string or key below `v` holds U+0000.
pub fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => map_has_nul(o),
        _ => false,
    }
}

fn map_has_nul(o: &Map<String, Value>) -> bool {
    o.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
}

/// `text` as Postgres can store it: U+0000 replaced by U+FFFD. For texts ConstIntel
/// writes about a delivery (error reasons, file names), never for the delivery itself,
/// which is refused instead.
pub fn storable_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Nesting depth: a scalar is 0, an empty or flat object or array 1.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// What the mapping produced fits the tables it is written to.
fn check_normalized(n: &Normalized) -> Result<(), Refusal> {
    if let Some(ev) = &n.event {
        if !in_time_window(ev.occurred_at) {
            return Err(out_of_range(format!(
                "the event time {} is outside 1900–9999",
                ev.occurred_at
            )));
        }
        if let Some(order) = &ev.order {
            check_order(order)?;
        }
    }
    if let Some(write) = &n.order {
        check_order_write(write)?;
    }
    for p in &n.products {
        check_product(p)?;
    }
    Ok(())
}

fn check_id(what: &str, value: &str) -> Result<(), Refusal> {
    let chars = value.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(out_of_range(format!(
            "{what} is {chars} characters long; at most {MAX_ID_CHARS}"
        )));
    }
    Ok(())
}

fn check_amount(what: &str, amount: Decimal) -> Result<(), Refusal> {
    if amount_fits(amount) {
        Ok(())
    } else {
        Err(out_of_range(format!(
            "{what} {amount} is beyond ±{}",
            domain::MAX_AMOUNT
        )))
    }
}

fn check_order(order: &Order) -> Result<(), Refusal> {
    check_id("the order id", &order.order_id)?;
    check_id("the currency", &order.currency)?;
    if let Some(store) = &order.store {
        check_id("the store", store)?;
    }
    check_amount("the order total", order.total)?;
    check_lines(&order.items)
}

fn check_lines(items: &[domain::OrderItem]) -> Result<(), Refusal> {
    for item in items {
        check_id("a line's SKU", &item.sku)?;
        check_amount("a line's price", item.price)?;
    }
    Ok(())
}

fn check_order_write(write: &OrderWrite) -> Result<(), Refusal> {
    check_id("the order id", &write.external_order_id)?;
    if let Some(state) = &write.state {
        for (what, t) in [
            ("the order's time", state.placed_at),
            ("the order's version", state.version),
        ] {
            if !in_time_window(t) {
                return Err(out_of_range(format!("{what} {t} is outside 1900–9999")));
            }
        }
        check_id("the currency", &state.currency)?;
        if let Some(store) = &state.store {
            check_id("the store", store)?;
        }
        check_amount("the order total", state.total)?;
        check_lines(&state.items)?;
    }
    for refund in &write.refunds {
        check_id("the refund id", &refund.refund_id)?;
        check_amount("the refund", refund.amount)?;
        if refund.amount.is_sign_negative() && !refund.amount.is_zero() {
            return Err(out_of_range(format!(
                "the refund {} is negative",
                refund.amount
            )));
        }
    }
    Ok(())
}

fn check_product(p: &Product) -> Result<(), Refusal> {
    check_id("a product's SKU", &p.sku)?;
    if let Some(price) = p.price {
        check_amount("a product's price", price)?;
    }
    if let Some(currency) = &p.currency {
        check_id("a product's currency", currency)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::Source;
    use serde_json::json;
    use uuid::Uuid;

    fn bill(total: &str) -> NewRawEvent {
        NewRawEvent::new(
            Some(Uuid::nil()),
            Source::Pos,
            "k-1",
            "bill",
            json!({"store": "S1", "bill_no": "1", "billed_at": "2026-01-01T10:00:00Z",
                   "currency": "INR", "lines": [{"sku": "A", "price": "10", "qty": 1}],
                   "totals": {"total": total}}),
        )
    }

    fn code(r: Result<Normalized, Refusal>) -> &'static str {
        match r {
            Err(Refusal::Invalid { code, .. }) => code,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_storable_event_is_admitted_with_its_mapping() {
        let n = admit(&bill("10"), "invalid_bill").unwrap();
        assert!(n.order.is_some());
    }

    #[test]
    fn amounts_beyond_the_columns_are_refused() {
        assert_eq!(
            code(admit(&bill("1000000000000000"), "invalid_bill")),
            "out_of_range"
        );
        assert_eq!(code(admit(&bill("1e40"), "invalid_bill")), "invalid_bill");
        assert!(admit(&bill("999999999999999.99"), "invalid_bill").is_ok());
    }

    #[test]
    fn nul_depth_keys_and_times_are_refused() {
        let mut ev = bill("10");
        ev.body["note"] = json!("a\u{0}b");
        assert_eq!(code(admit(&ev, "invalid_bill")), "nul_character");

        let mut ev = bill("10");
        let mut deep = json!(1);
        for _ in 0..=MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        ev.body["deep"] = deep;
        assert_eq!(code(admit(&ev, "invalid_bill")), "too_deep");

        let mut ev = bill("10");
        ev.source_event_id = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(code(admit(&ev, "invalid_bill")), "key_too_long");

        let mut ev = bill("10");
        ev.body["billed_at"] = json!("0200-01-01T00:00:00Z");
        assert_eq!(code(admit(&ev, "invalid_bill")), "invalid_bill");

        let mut ev = bill("10");
        ev.body["lines"][0]["sku"] = json!("S".repeat(MAX_ID_CHARS + 1));
        assert_eq!(code(admit(&ev, "invalid_bill")), "out_of_range");
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": 2}]})), 3);
    }
}
