//! Point-of-sale bills: the documented JSON bill, its validation at the edge and its
//! mapping to an `order_placed` event on the POS channel.
//!
//! A request to `POST /pos/{integration}/bills` carries one bill, an array of bills, or
//! `{"bills": [...]}`, authorised by the integration's bearer token. A bill:
//!
//! ```json
//! {
//!   "store": "BLR-01", "bill_no": "B-1001", "billed_at": "2026-11-20T18:42:10+05:30",
//!   "currency": "INR",
//!   "customer": {"phone": "98450 12345", "email": "asha@example.com",
//!                "loyalty_id": "LOY-88812", "code": "C-1043", "name": "Asha Rao"},
//!   "lines": [{"sku": "TEE-BLK-M", "name": "Black tee M", "category": "Apparel",
//!              "qty": 2, "price": "799.00"}],
//!   "totals": {"subtotal": "1598.00", "discount": "100.00", "tax": "74.90", "total": "1572.90"},
//!   "payment": "upi", "cashier": "S-07"
//! }
//! ```
//!
//! `store`, `bill_no`, `billed_at`, `currency`, `lines` and `totals.total` are required;
//! every `customer` field is optional. The bill is keyed by integration, store and bill
//! number, so a till that resends a bill stores it once. The store customer code becomes
//! the `pos_customer` identifier `store:code`.

use chrono::{DateTime, Utc};
use domain::{Channel, EventType, IdentifierKind, OrderItem, OrderState, OrderStatus, Source};
use http::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

use super::edge::bearer_token;
use super::mapping::{
    Identifiers, copy_fields, decimal, event_of, quantity, required, s, text, time, with_order,
};
use super::{
    Connector, Credential, Description, EndpointDoc, MapError, Normalized, Refusal, admission,
};
use crate::raw_event::{NewRawEvent, RawRecord};
use crate::signing::secret_matches;

/// The point-of-sale connector.
pub struct Pos;

/// Ingest's route for bills.
pub const BILLS_ROUTE: &str = "/pos/{integration}/bills";

/// The largest number of bills in one request.
pub const MAX_BILLS: usize = 1000;

const DESCRIPTION: Description = Description {
    source: Source::Pos,
    label: "Point of sale",
    credential: Credential::BearerToken,
    authentication: "Authorization: Bearer <secret>",
    own_secret_hint: None,
};

impl Connector for Pos {
    fn description(&self) -> &'static Description {
        &DESCRIPTION
    }

    fn webhook_url(&self, public_base_url: &str, integration: Uuid) -> Option<String> {
        Some(format!(
            "{}{}",
            public_base_url.trim_end_matches('/'),
            BILLS_ROUTE.replace("{integration}", &integration.to_string())
        ))
    }

    fn endpoints(&self) -> Vec<EndpointDoc> {
        vec![EndpointDoc {
            endpoint: format!("POST {BILLS_ROUTE}"),
            authentication: self.authentication(),
            dedupe_key: "`integration:store:bill_no`",
        }]
    }

    fn setup_steps(&self, webhook_url: &str) -> Vec<String> {
        vec![
            format!("POST each bill as JSON to {webhook_url}."),
            "Send the header Authorization: Bearer <secret>.".into(),
            "Include the store, bill number, time, lines and any phone, e-mail or loyalty id on the bill.".into(),
        ]
    }

    fn normalize(&self, raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
        normalize(raw, region)
    }

    fn test_delivery(
        &self,
        customer: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> (&'static str, Value) {
        (
            "bill",
            json!({"store": "CONSTINTEL-TEST", "bill_no": key, "billed_at": now,
                   "currency": "INR", "customer": {"code": customer},
                   "lines": [{"sku": "CONSTINTEL-TEST", "name": "ConstIntel test item",
                              "qty": 1, "price": "0.00"}],
                   "totals": {"total": "0.00"}, "constintel_test": true}),
        )
    }
}

/// Checks the request's bearer token against the integration's secret, in constant
/// time.
pub fn verify_token(secret: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = bearer_token(headers).ok_or_else(|| {
        Refusal::unauthorized("missing_token", "Authorization: Bearer <token> is required")
    })?;
    if secret_matches(secret, token) {
        Ok(())
    } else {
        Err(Refusal::unauthorized(
            "bad_token",
            "the bearer token is not this integration's",
        ))
    }
}

/// Splits a request body into bills.
fn bills_of(body: Value) -> Result<Vec<Value>, String> {
    match body {
        Value::Array(bills) => Ok(bills),
        Value::Object(mut obj) => match obj.remove("bills") {
            Some(Value::Array(bills)) => Ok(bills),
            Some(_) => Err("`bills` must be an array".into()),
            None => Ok(vec![Value::Object(obj)]),
        },
        _ => Err("the body must be a bill, an array of bills or {\"bills\": [...]}".into()),
    }
}

/// Builds the raw events of a request's bills, each keyed by integration, store and
/// bill number. All-or-nothing: one invalid bill refuses the request (400
/// `invalid_bill`, or the code of the limit it breaks) with its index and reason.
pub fn raw_events(integration_id: Uuid, body: Value) -> Result<Vec<NewRawEvent>, Refusal> {
    let invalid = |m: String| Refusal::invalid("invalid_bill", m);
    let bills = bills_of(body).map_err(invalid)?;
    if bills.is_empty() {
        return Err(invalid("no bills".into()));
    }
    if bills.len() > MAX_BILLS {
        return Err(invalid(format!(
            "{} bills in one request; at most {MAX_BILLS}",
            bills.len()
        )));
    }
    let many = bills.len() > 1;
    bills
        .into_iter()
        .enumerate()
        .map(|(i, bill)| {
            let at = |r: Refusal| {
                if many {
                    r.at(&format!("bills[{i}]"))
                } else {
                    r
                }
            };
            if !bill.is_object() {
                return Err(at(invalid("a bill must be a JSON object".into())));
            }
            let store = text(&bill, &["store"]).unwrap_or_default();
            let bill_no = text(&bill, &["bill_no"]).unwrap_or_default();
            let key = format!("{integration_id}:{store}:{bill_no}");
            let mut ev = NewRawEvent::new(Some(integration_id), Source::Pos, key, "bill", bill);
            ev.occurred_at = time(&ev.body, &["billed_at"]);
            // The mapping itself is the validator: the same rules at the edge and in
            // the normalizer, plus the limits of what can be stored.
            admission::admit(&ev, "invalid_bill").map_err(at)?;
            Ok(ev)
        })
        .collect()
}

/// Maps a POS bill.
fn normalize(raw: &RawRecord<'_>, region: &str) -> Result<Normalized, MapError> {
    let bill = raw.body;
    let store = required(text(bill, &["store"]), "store")?;
    let bill_no = required(text(bill, &["bill_no"]), "bill_no")?;
    let billed_at = required(time(bill, &["billed_at"]), "billed_at")?;
    let currency = required(text(bill, &["currency"]), "currency")?.to_uppercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(MapError::Malformed(format!(
            "`currency` {currency} is not an ISO 4217 code"
        )));
    }
    let total = required(decimal(bill, &["totals", "total"]), "totals.total")?;
    let lines = bill
        .get("lines")
        .and_then(Value::as_array)
        .ok_or_else(|| MapError::Malformed("missing or invalid `lines`".into()))?;
    let items = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let sku = text(line, &["sku"])
                .ok_or_else(|| MapError::Malformed(format!("lines[{i}] has no `sku`")))?;
            let price = decimal(line, &["price"])
                .ok_or_else(|| MapError::Malformed(format!("lines[{i}] has no valid `price`")))?;
            Ok(OrderItem {
                name: text(line, &["name"]).unwrap_or_else(|| sku.clone()),
                sku,
                category: text(line, &["category"]),
                qty: quantity(line, &["qty"])?,
                price,
            })
        })
        .collect::<Result<Vec<_>, MapError>>()?;
    let order_id = format!("{store}:{bill_no}");

    let mut ev = event_of(
        raw,
        Channel::Pos,
        EventType::OrderPlaced,
        Some("bill".into()),
        Some(billed_at),
    );
    let mut ids = Identifiers::new(region);
    if let Some(customer) = bill.get("customer").filter(|c| c.is_object()) {
        ids.add(IdentifierKind::Phone, text(customer, &["phone"]).as_deref());
        ids.add(IdentifierKind::Email, text(customer, &["email"]).as_deref());
        ids.add(
            IdentifierKind::LoyaltyId,
            text(customer, &["loyalty_id"]).as_deref(),
        );
        if let Some(code) = text(customer, &["code"]) {
            ids.add(
                IdentifierKind::PosCustomer,
                Some(&format!("{store}:{code}")),
            );
        }
        copy_fields(&mut ev.traits, customer, &[("name", "name")]);
    }
    let p = &mut ev.properties;
    p.insert("store".into(), s(store.clone()));
    p.insert("bill_no".into(), s(bill_no));
    copy_fields(
        p,
        bill,
        &[
            ("payment", "payment"),
            ("cashier", "cashier"),
            ("terminal", "terminal"),
        ],
    );
    if let Some(totals) = bill.get("totals").filter(|t| t.is_object()) {
        copy_fields(
            p,
            totals,
            &[
                ("subtotal", "subtotal"),
                ("discount", "discount"),
                ("tax", "tax"),
            ],
        );
    }
    Ok(with_order(
        ev,
        ids,
        order_id,
        OrderState {
            status: OrderStatus::Paid,
            channel: Channel::Pos,
            store: Some(store),
            placed_at: billed_at,
            currency,
            total,
            items,
            version: billed_at,
        },
        Vec::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invalid_bills_are_named() {
        let good = json!({"store": "S1", "bill_no": "1", "billed_at": "2026-01-01T10:00:00Z",
            "currency": "INR", "lines": [], "totals": {"total": "10"}});
        let bad = json!({"store": "S1", "bill_no": "2", "billed_at": "nope",
            "currency": "INR", "lines": [], "totals": {"total": "10"}});
        let err = raw_events(Uuid::nil(), json!({"bills": [good.clone(), bad]})).unwrap_err();
        assert_eq!(
            err,
            Refusal::invalid("invalid_bill", "bills[1]: missing or invalid `billed_at`")
        );
        let events = raw_events(Uuid::nil(), json!([good])).unwrap();
        assert_eq!(events[0].source_event_id, format!("{}:S1:1", Uuid::nil()));
    }
}
