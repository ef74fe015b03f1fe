//! The normalised event: one shape for every source, published on `events.normalized`
//! and stored in `normalized_event`. Its `event_id` is the raw event's id, so the same
//! delivery keeps one id from ingest to the profile timeline.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identifier::Identifier;
use crate::source::{Channel, Source};

names! {
    /// What the customer (or the brand, for outbound messages) did.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum EventType("event type") {
        /// Looked at a product page.
        ProductViewed = "product_viewed",
        /// Put a product into the cart.
        AddedToCart = "added_to_cart",
        /// Started checkout (Shopify checkouts, Segment "Checkout Started").
        CheckoutStarted = "checkout_started",
        /// Placed (or updated/paid) an order: carries `order`.
        OrderPlaced = "order_placed",
        /// An order was cancelled or deleted.
        OrderCancelled = "order_cancelled",
        /// Money was refunded on an order.
        RefundIssued = "refund_issued",
        /// The customer wrote to the brand (WhatsApp inbound).
        MessageReceived = "message_received",
        /// The brand wrote to the customer.
        MessageSent = "message_sent",
        /// Delivery status of an outbound message (queued/sent/delivered/read/failed).
        MessageStatus = "message_status",
        /// Scanned an in-store or on-pack QR code.
        QrScanned = "qr_scanned",
        /// Was seen in a physical store.
        StoreVisit = "store_visit",
        /// Told us who they are (sign-up, profile update, CSV customer row).
        Identify = "identify",
        /// Viewed a page or app screen.
        PageViewed = "page_viewed",
        /// Anything else a brand tracks.
        Custom = "custom",
    }
}

names! {
    /// The lifecycle state of an order as last reported by its source.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum OrderStatus("order status") {
        /// Placed, not yet known to be paid.
        #[default]
        Placed = "placed",
        /// Paid (or a POS bill, which is paid at the till).
        Paid = "paid",
        /// Cancelled or deleted.
        Cancelled = "cancelled",
        /// Fully refunded.
        Refunded = "refunded",
        /// Part of the money refunded.
        PartiallyRefunded = "partially_refunded",
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderItem {
    /// Stock keeping unit (falls back to the source's product id).
    pub sku: String,
    /// Product name as sold.
    pub name: String,
    /// Product category, when the source says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Quantity sold.
    pub qty: i32,
    /// Unit price in the order's currency.
    pub price: Decimal,
}

/// The order carried by `order_placed`, `order_cancelled` and `refund_issued` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Order {
    /// The source's order id (Shopify order id, POS bill number prefixed by store).
    pub order_id: String,
    /// Order total in `currency` (for refunds: the amount refunded).
    pub total: Decimal,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Status as of this event.
    #[serde(default)]
    pub status: OrderStatus,
    /// Store or site the order was placed in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Order lines.
    #[serde(default)]
    pub items: Vec<OrderItem>,
}

/// One event in the shape every downstream consumer reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizedEvent {
    /// The raw event id (UUID v7), stable from ingest to the timeline.
    pub event_id: Uuid,
    /// When it happened, per the source (clock-skew corrected for SDKs).
    pub occurred_at: DateTime<Utc>,
    /// When ingest stored it.
    pub received_at: DateTime<Utc>,
    /// Which system delivered it.
    pub source: Source,
    /// The integration (configured source) it arrived through, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<Uuid>,
    /// The touchpoint.
    pub channel: Channel,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The source's own name for it (Shopify topic, Segment event name, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every identifier the event carries, normalised and de-duplicated.
    pub identifiers: Vec<Identifier>,
    /// Facts about the person (name, city, marketing consent, ...).
    #[serde(default)]
    pub traits: serde_json::Map<String, serde_json::Value>,
    /// Facts about the event (product, page, message body, QR code, ...).
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// The order, for order events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
}

/// The property listing the identifiers an event only links through (`[{kind, value}]`):
/// the profiles holding them join the event's profile, but no profile takes them from
/// the event. Each is in `identifiers` too. A Segment `alias` lists its `previousId` in
/// each form it may have had (the anonymous id's cookie, an earlier user id), since the
/// call does not say which; only the form someone really holds links.
pub const LINK_ONLY_PROPERTY: &str = "link_only";

impl NormalizedEvent {
    /// Sorts and de-duplicates the identifiers so equal events compare equal.
    pub fn canonicalize(&mut self) {
        self.identifiers.sort();
        self.identifiers.dedup();
    }

    /// The identifiers this event only links through ([`LINK_ONLY_PROPERTY`]).
    pub fn link_only(&self) -> Vec<Identifier> {
        link_only_of(self.properties.get(LINK_ONLY_PROPERTY))
    }
}

/// The identifiers listed in a [`LINK_ONLY_PROPERTY`] value; anything unreadable is
/// none.
pub fn link_only_of(value: Option<&serde_json::Value>) -> Vec<Identifier> {
    let mut ids: Vec<Identifier> = value
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::IdentifierKind;

    #[test]
    fn normalized_event_json_shape() {
        let mut ev = NormalizedEvent {
            event_id: Uuid::nil(),
            occurred_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
            received_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:06Z")
                .unwrap()
                .with_timezone(&Utc),
            source: Source::Shopify,
            integration_id: None,
            channel: Channel::Web,
            event_type: EventType::OrderPlaced,
            name: Some("orders/create".into()),
            identifiers: vec![
                Identifier::parse(IdentifierKind::Phone, "+919876543210", "IN").unwrap(),
                Identifier::parse(IdentifierKind::Email, "a@b.com", "IN").unwrap(),
                Identifier::parse(IdentifierKind::Email, "A@B.com", "IN").unwrap(),
            ],
            traits: Default::default(),
            properties: Default::default(),
            order: Some(Order {
                order_id: "1001".into(),
                total: Decimal::new(49950, 2),
                currency: "INR".into(),
                status: OrderStatus::Paid,
                store: None,
                items: vec![OrderItem {
                    sku: "TEE-1".into(),
                    name: "Tee".into(),
                    category: Some("Apparel".into()),
                    qty: 1,
                    price: Decimal::new(49950, 2),
                }],
            }),
        };
        ev.canonicalize();
        assert_eq!(ev.identifiers.len(), 2);
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["type"], "order_placed");
        assert_eq!(json["identifiers"][0]["kind"], "email");
        assert_eq!(json["order"]["total"], 499.5);
        let back: NormalizedEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
        }
    }

    #[test]
    fn order_statuses_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("shipped".parse::<OrderStatus>().is_err());
    }
}
