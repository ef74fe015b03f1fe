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

/// Digits of every money column (`NUMERIC(20, 2)`: 18 before the point, 2 after). A
/// storage test checks each money column against it.
pub const MONEY_PRECISION: u32 = 20;
/// Decimal places of every money column.
pub const MONEY_SCALE: u32 = 2;

/// The largest single amount (order total, line price, refund, product price) ingest
/// admits: 999,999,999,999,999.99, three digits short of what a money column holds, so a
/// thousand orders of the largest amount still add up without saturating. Larger amounts
/// are refused at the edge, so an accepted order can always be stored.
pub const MAX_AMOUNT: Decimal =
    Decimal::from_parts(0x5D89_FFFF, 0x0163_4578, 0, false, MONEY_SCALE);

/// The largest sum a money column holds (999,999,999,999,999,999.99, all of
/// `NUMERIC(20, 2)`): sums of amounts — a profile's total spent, an order's refunded
/// total — saturate at ±`MAX_TOTAL` instead of overflowing.
pub const MAX_TOTAL: Decimal = Decimal::from_parts(0x630F_FFFF, 0x6BC7_5E2D, 5, false, MONEY_SCALE);

/// Whether `amount`, rounded to cents as the columns store it, is within what ingest
/// admits (|amount| ≤ [`MAX_AMOUNT`]).
pub fn amount_fits(amount: Decimal) -> bool {
    amount.abs().round_dp(MONEY_SCALE) <= MAX_AMOUNT
}

/// `amount` clamped to ±[`MAX_TOTAL`]: how a sum is stored when it would not fit.
pub fn saturate_total(amount: Decimal) -> Decimal {
    amount.clamp(-MAX_TOTAL, MAX_TOTAL)
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
    fn the_limits_fit_numeric_20_2() {
        assert_eq!(MAX_AMOUNT.to_string(), "999999999999999.99");
        assert_eq!(MAX_TOTAL.to_string(), "999999999999999999.99");
        // MAX_TOTAL is all of NUMERIC(MONEY_PRECISION, MONEY_SCALE).
        let digits = MAX_TOTAL
            .to_string()
            .chars()
            .filter(char::is_ascii_digit)
            .count();
        assert_eq!(digits, MONEY_PRECISION as usize);
        assert_eq!(MAX_TOTAL.scale(), MONEY_SCALE);
        assert!(amount_fits(MAX_AMOUNT) && amount_fits(-MAX_AMOUNT));
        assert!(amount_fits(Decimal::new(999_999_999_999_999, 0)));
        assert!(!amount_fits(Decimal::new(1_000_000_000_000_000, 0)));
        // Rounds up past the limit when stored with two decimals.
        assert!(!amount_fits(Decimal::new(999_999_999_999_999_995, 3)));
        assert!(amount_fits(Decimal::new(999_999_999_999_999_994, 3)));
        assert!(!amount_fits(Decimal::MAX));
        assert_eq!(saturate_total(Decimal::MAX), MAX_TOTAL);
        assert_eq!(saturate_total(Decimal::MIN), -MAX_TOTAL);
        assert_eq!(
            saturate_total(MAX_AMOUNT * Decimal::from(1000)),
            MAX_AMOUNT * Decimal::from(1000)
        );
    }
}
