//! A simulated brand (`scenario::brand`) as profile histories, for tests and the
//! benchmark: person `n` becomes the profile [`profile_id`]`(seed, n)`, and each activity
//! the order or event the ingest pipeline would have stored for it. The database loader
//! ([`crate::load`]) writes the same facts with the same ids and channels, so features
//! computed from Postgres equal those computed here.

use std::collections::HashMap;

use domain::Channel;
use scenario::{Activity, ActivityKind, Brand, Person};
use uuid::Uuid;

use crate::history::{EventFact, EventKind, OrderFact, ProfileHistory, order_key};

/// The profile id of simulated person `person_id` in the brand seeded by `seed`.
pub fn profile_id(seed: u64, person_id: u32) -> Uuid {
    Uuid::from_u64_pair(0xC057_17E1 ^ seed, u64::from(person_id) + 1)
}

/// The source system an order of `channel` arrives through.
pub fn order_source(channel: Channel) -> &'static str {
    match channel {
        Channel::Pos => "pos",
        _ => "shopify",
    }
}

/// The channel of a person's non-order activity that has no obvious channel (sign-up):
/// the one they mostly buy through.
pub fn home_channel(person: &Person) -> Channel {
    if person.web_share < 0.5 {
        Channel::Pos
    } else {
        Channel::Web
    }
}

/// The channel an activity is recorded on (orders: their own channel).
pub fn channel_of(
    person: &Person,
    kind: &ActivityKind,
    order_channels: &HashMap<String, Channel>,
) -> Channel {
    match kind {
        ActivityKind::OrderPlaced { channel, .. } => *channel,
        ActivityKind::OrderCancelled { order_id } | ActivityKind::Refund { order_id, .. } => {
            order_channels
                .get(order_id)
                .copied()
                .unwrap_or(Channel::Web)
        }
        ActivityKind::ProductViewed { .. }
        | ActivityKind::AddedToCart { .. }
        | ActivityKind::CheckoutStarted
        | ActivityKind::PageViewed { .. } => Channel::Web,
        ActivityKind::WhatsAppInbound { .. } => Channel::Whatsapp,
        ActivityKind::QrScanned { .. } | ActivityKind::StoreVisit { .. } => Channel::Store,
        ActivityKind::SignedUp => home_channel(person),
    }
}

/// One person's activities (in any order) as a profile history.
pub fn history(seed: u64, person: &Person, activities: &[Activity]) -> ProfileHistory {
    let mut h = ProfileHistory {
        profile_id: profile_id(seed, person.person_id),
        ..ProfileHistory::default()
    };
    let order_channels: HashMap<String, Channel> = activities
        .iter()
        .filter_map(|a| match &a.kind {
            ActivityKind::OrderPlaced {
                order_id, channel, ..
            } => Some((order_id.clone(), *channel)),
            _ => None,
        })
        .collect();
    let key = |order_id: &str| {
        let channel = order_channels
            .get(order_id)
            .copied()
            .unwrap_or(Channel::Web);
        order_key(order_source(channel), order_id)
    };
    for a in activities {
        let channel = channel_of(person, &a.kind, &order_channels);
        let kind = match &a.kind {
            ActivityKind::OrderPlaced {
                order_id,
                items,
                total,
                ..
            } => {
                let mut categories: Vec<String> =
                    items.iter().filter_map(|i| i.category.clone()).collect();
                categories.sort();
                categories.dedup();
                h.orders.push(OrderFact {
                    order_key: key(order_id),
                    placed_at: a.at,
                    channel,
                    total: (*total).try_into().unwrap_or(0.0),
                    categories,
                });
                continue;
            }
            ActivityKind::OrderCancelled { order_id } => EventKind::OrderCancelled {
                order_key: key(order_id),
            },
            ActivityKind::Refund { order_id, amount } => EventKind::RefundIssued {
                order_key: key(order_id),
                amount: (*amount).try_into().unwrap_or(0.0),
            },
            ActivityKind::ProductViewed { .. } => EventKind::ProductViewed,
            ActivityKind::AddedToCart { .. } => EventKind::AddedToCart,
            ActivityKind::CheckoutStarted => EventKind::CheckoutStarted,
            ActivityKind::PageViewed { .. } => EventKind::PageViewed,
            ActivityKind::WhatsAppInbound { .. } => EventKind::MessageReceived,
            ActivityKind::QrScanned { .. } => EventKind::QrScanned,
            ActivityKind::StoreVisit { .. } => EventKind::StoreVisit,
            ActivityKind::SignedUp => EventKind::Other,
        };
        h.events.push(EventFact {
            at: a.at,
            channel,
            kind,
        });
    }
    h
}

/// Every person of `brand` as a profile history, by person id.
pub fn histories(brand: &Brand) -> Vec<ProfileHistory> {
    let mut by_person: Vec<Vec<Activity>> = vec![Vec::new(); brand.people.len()];
    for a in &brand.activities {
        by_person[a.person_id as usize].push(a.clone());
    }
    brand
        .people
        .iter()
        .zip(&by_person)
        .map(|(p, acts)| history(brand.config.seed, p, acts))
        .collect()
}
