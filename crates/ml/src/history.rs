//! What a profile did, in the shape feature maths reads: its orders and its events,
//! each with a time. Every source of history — Postgres ([`crate::store`]), a simulated
//! brand (`synthetic`, feature `synthetic`) or a brand's transaction log ([`crate::eval`]) — is
//! turned into [`ProfileHistory`] first, so features are computed by one code path no
//! matter where the facts came from, for training and for scoring alike.

use chrono::{DateTime, Utc};
use domain::Channel;
use uuid::Uuid;

/// Everything known about one profile, in any order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfileHistory {
    /// The profile.
    pub profile_id: Uuid,
    /// Its orders (as first placed; cancellations and refunds are events).
    pub orders: Vec<OrderFact>,
    /// Its other events: browsing, cart, messages, store visits, cancellations, refunds.
    pub events: Vec<EventFact>,
}

/// One order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderFact {
    /// Key matching the order's cancellation and refund events (`source:order id`).
    pub order_key: String,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// Where it was placed.
    pub channel: Channel,
    /// Order total (money as `f64` is fine here: features are statistics, not ledgers).
    pub total: f64,
    /// Categories of its lines.
    pub categories: Vec<String>,
}

/// One event other than an order.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFact {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Through which touchpoint.
    pub channel: Channel,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of event feature maths distinguishes.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// Product page view.
    ProductViewed,
    /// Product put into the cart.
    AddedToCart,
    /// Checkout started.
    CheckoutStarted,
    /// Any other page or screen view.
    PageViewed,
    /// The customer wrote to the brand (WhatsApp).
    MessageReceived,
    /// QR code scanned in a store.
    QrScanned,
    /// Seen in a store.
    StoreVisit,
    /// An order was cancelled.
    OrderCancelled {
        /// The cancelled order's key (see [`OrderFact::order_key`]).
        order_key: String,
    },
    /// Money was refunded.
    RefundIssued {
        /// The refunded order's key.
        order_key: String,
        /// Amount refunded.
        amount: f64,
    },
    /// Anything else the customer did (sign-up, identify, custom events): counts as
    /// activity only.
    Other,
}

/// The key joining an order to its cancellation and refund events.
pub fn order_key(source: &str, order_id: &str) -> String {
    format!("{source}:{order_id}")
}
