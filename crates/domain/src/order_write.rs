//! What one normalised event changes in the order and product tables, besides its own
//! `normalized_event` row: the order as the event reports it ([`OrderWrite`]), refunds
//! keyed by the source's refund id, and the products it mentions.
//!
//! These are the input of the one writer of those tables (`storage::normalized`), which
//! the normalizer and every seed of normalised events use; the source mappings in
//! `ingestion` produce them. Pure data, so both sides share them without depending on
//! each other.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::{Channel, OrderItem, OrderStatus};

/// The largest amount (order total, line price, refund, product price) every money
/// column holds: `NUMERIC(14, 2)` keeps 12 digits before the point. Ingest refuses
/// larger amounts, so an accepted order can always be stored.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0x107A_3FFF, 0x5AF3, 0, false, 2);

/// Whether `amount`, rounded to cents as the columns store it, fits them
/// (|amount| ≤ [`MAX_AMOUNT`]).
pub fn amount_fits(amount: Decimal) -> bool {
    amount.abs().round_dp(2) <= MAX_AMOUNT
}

/// A product seen in an order, cart, view or catalogue update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    /// Stock keeping unit (or the source's namespaced product id when it has none).
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Category, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Unit price, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    /// Currency of `price`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

impl Product {
    /// The product of each order line, priced in `currency` (`None`: the source did not
    /// say which currency the lines are in).
    pub fn of_items(items: &[OrderItem], currency: Option<&str>) -> Vec<Product> {
        items
            .iter()
            .map(|i| Product {
                sku: i.sku.clone(),
                name: i.name.clone(),
                category: i.category.clone(),
                price: Some(i.price),
                currency: currency.map(str::to_owned),
            })
            .collect()
    }
}

/// One refund of an order, keyed by the source's refund id so a refund reported twice
/// (by its own webhook and inside the updated order) counts once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refund {
    /// The source's refund id.
    pub refund_id: String,
    /// Amount refunded (positive).
    pub amount: Decimal,
}

/// The full state of an order as one event reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderState {
    /// Status as of this report.
    pub status: OrderStatus,
    /// Channel it was placed through.
    pub channel: Channel,
    /// Store, for in-store orders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// ISO currency.
    pub currency: String,
    /// Order total.
    pub total: Decimal,
    /// Order lines.
    pub items: Vec<OrderItem>,
    /// The source's version of the order (its last-modified time): a report older than
    /// the stored one is not applied, so out-of-order deliveries converge.
    pub version: DateTime<Utc>,
}

/// What an event changes in `orders`, `order_items` and `order_refunds`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderWrite {
    /// The source's order id (the key with the source).
    pub external_order_id: String,
    /// The full order, when the event carries it (refund webhooks do not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<OrderState>,
    /// Refunds the event reports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Refund>,
    /// The order was deleted at the source: mark it cancelled whatever its version.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_amount_limit_is_what_numeric_14_2_holds() {
        assert_eq!(MAX_AMOUNT.to_string(), "999999999999.99");
        assert!(amount_fits(MAX_AMOUNT) && amount_fits(-MAX_AMOUNT));
        assert!(!amount_fits(Decimal::new(999_999_999_999_999, 0)));
        // Rounds up past the limit when stored with two decimals.
        assert!(!amount_fits(Decimal::new(999_999_999_999_995, 3)));
        assert!(amount_fits(Decimal::new(999_999_999_999_994, 3)));
        assert!(!amount_fits(Decimal::MAX));
    }
}
