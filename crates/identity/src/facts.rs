//! The Customer 360 facts a profile accumulates from its events, kept incrementally by
//! the merger so a Customer 360 read never scans events.
//!
//! Every operation is commutative: [`ProfileFacts::observe`] in any order and
//! [`ProfileFacts::absorb`] of two profiles give the same facts as observing all their
//! events together (up to floating-point rounding of the decayed category weights). So
//! incremental updates, merges, replays and rebuilds agree. Order aggregates (count,
//! spend, last order) are not here: the merger recomputes them from the `orders` table,
//! where refunds and cancellations already live, so they are exact.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use domain::profile::{BrowsingEntry, DecayedWeight, MessageDirection, MessageEntry, ProfileState};
use domain::{Channel, EventType, NormalizedEvent};
use serde_json::{Map, Value};

/// Recent browsing entries kept per profile.
pub const RECENT_BROWSING: usize = 20;

/// Recent messages kept per profile.
pub const RECENT_MESSAGES: usize = 20;

/// Category weight of one product view.
const VIEW_WEIGHT: f64 = 1.0;
/// Category weight of one add-to-cart.
const CART_WEIGHT: f64 = 2.0;
/// Category weight of one unit bought.
const PURCHASE_WEIGHT: f64 = 3.0;

/// What a profile's events add up to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileFacts {
    /// Browsing, category weights, trait times, event count (`customer_profile.state`).
    pub state: ProfileState,
    /// Latest value of each trait.
    pub traits: Map<String, Value>,
    /// First activity.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest activity.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Channels used.
    pub channels: BTreeSet<Channel>,
}

impl ProfileFacts {
    /// Adds one event.
    pub fn observe(&mut self, ev: &NormalizedEvent) {
        let at = ev.occurred_at;
        self.state.events_count += 1;
        self.first_seen_at = Some(self.first_seen_at.map_or(at, |t| t.min(at)));
        self.last_seen_at = Some(self.last_seen_at.map_or(at, |t| t.max(at)));
        self.channels.insert(ev.channel);
        for (k, v) in &ev.traits {
            self.set_trait(k, v.clone(), at);
        }
        let props = &ev.properties;
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| props.get(*k).and_then(Value::as_str).map(str::to_owned))
        };
        match ev.event_type {
            EventType::ProductViewed
            | EventType::AddedToCart
            | EventType::CheckoutStarted
            | EventType::PageViewed => {
                let category = text(&["category"]);
                self.push_browsing(BrowsingEntry {
                    event_type: ev.event_type,
                    occurred_at: at,
                    sku: text(&["sku", "product_id"]),
                    name: text(&["name", "product_name", "title"]).or_else(|| ev.name.clone()),
                    category: category.clone(),
                    url: text(&["url", "path"]),
                });
                let weight = match ev.event_type {
                    EventType::ProductViewed => VIEW_WEIGHT,
                    EventType::AddedToCart => CART_WEIGHT,
                    _ => 0.0,
                };
                if let Some(c) = category.filter(|_| weight > 0.0) {
                    self.add_weight(&c, weight, at);
                }
            }
            EventType::OrderPlaced => {
                if let Some(order) = &ev.order {
                    for item in &order.items {
                        if let Some(c) = &item.category {
                            let units = f64::from(item.qty.max(1));
                            self.add_weight(c, PURCHASE_WEIGHT * units, at);
                        }
                    }
                }
            }
            EventType::MessageReceived | EventType::MessageSent | EventType::MessageStatus => {
                let inbound = ev.event_type == EventType::MessageReceived;
                let status = if inbound {
                    Some("received".to_owned())
                } else {
                    text(&["status"]).or_else(|| {
                        (ev.event_type == EventType::MessageSent).then(|| "sent".to_owned())
                    })
                };
                self.push_message(MessageEntry {
                    message_sid: text(&["message_sid"]),
                    direction: if inbound {
                        MessageDirection::Inbound
                    } else {
                        MessageDirection::Outbound
                    },
                    channel: ev.channel,
                    at,
                    status_at: status.as_ref().map(|_| at),
                    status,
                    body: text(&["body"]),
                    error_code: text(&["error_code"]),
                });
            }
            _ => {}
        }
    }

    /// Adds another profile's facts (a merge).
    pub fn absorb(&mut self, other: ProfileFacts) {
        self.state.events_count += other.state.events_count;
        self.first_seen_at = min_opt(self.first_seen_at, other.first_seen_at);
        self.last_seen_at = max_opt(self.last_seen_at, other.last_seen_at);
        self.channels.extend(other.channels);
        for (k, v) in other.traits {
            if let Some(at) = other.state.trait_times.get(&k).copied() {
                self.set_trait(&k, v, at);
            } else {
                self.traits.entry(k).or_insert(v);
            }
        }
        for entry in other.state.recent_browsing {
            self.push_browsing(entry);
        }
        for entry in other.state.recent_messages {
            self.push_message(entry);
        }
        for (c, w) in other.state.category_weights {
            self.add_weight(&c, w.weight, w.as_of);
        }
    }

    fn set_trait(&mut self, key: &str, value: Value, at: DateTime<Utc>) {
        if value.is_null() {
            return;
        }
        let newer = match self.state.trait_times.get(key) {
            None => true,
            Some(t) if at > *t => true,
            // Same instant: the larger JSON text wins, so ties break the same way in
            // any order.
            Some(t) if at == *t => self.traits.get(key).is_none_or(|old| {
                let (new_text, old_text) = (value.to_string(), old.to_string());
                new_text > old_text
            }),
            Some(_) => false,
        };
        if newer {
            self.traits.insert(key.to_owned(), value);
            self.state.trait_times.insert(key.to_owned(), at);
        }
    }

    fn push_browsing(&mut self, entry: BrowsingEntry) {
        let list = &mut self.state.recent_browsing;
        list.push(entry);
        list.sort_by(|a, b| browsing_order(b).cmp(&browsing_order(a)));
        list.dedup();
        list.truncate(RECENT_BROWSING);
    }

    /// Adds a message, combined with the entry of the same message if one is kept.
    fn push_message(&mut self, entry: MessageEntry) {
        let list = &mut self.state.recent_messages;
        match list.iter().position(|e| e.same_message(&entry)) {
            Some(i) => {
                let kept = list.remove(i);
                list.push(kept.combine(entry));
            }
            None => list.push(entry),
        }
        list.sort_by(|a, b| (b.at, &b.message_sid, &b.body).cmp(&(a.at, &a.message_sid, &a.body)));
        list.dedup();
        list.truncate(RECENT_MESSAGES);
    }

    fn add_weight(&mut self, category: &str, weight: f64, at: DateTime<Utc>) {
        match self.state.category_weights.get_mut(category) {
            Some(w) => w.add(weight, at),
            None => {
                self.state
                    .category_weights
                    .insert(category.to_owned(), DecayedWeight { weight, as_of: at });
            }
        }
    }

    /// The person's display name from the traits (`first_name last_name` or the
    /// Segment spec's `firstName lastName`, else `name`).
    pub fn display_name(&self) -> Option<String> {
        let text = |k: &str| {
            self.traits
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        // `firstName`/`lastName` are the Segment spec's traits, kept as sent.
        let first = text("first_name").or_else(|| text("firstName"));
        let last = text("last_name").or_else(|| text("lastName"));
        match (first, last) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(f), None) => Some(f.to_owned()),
            _ => text("name").map(str::to_owned),
        }
    }
}

/// Sort key of a browsing entry: time, then content, so the kept set is the same in
/// any order.
fn browsing_order(
    e: &BrowsingEntry,
) -> (
    DateTime<Utc>,
    &'static str,
    Option<&str>,
    Option<&str>,
    Option<&str>,
) {
    (
        e.occurred_at,
        e.event_type.as_str(),
        e.sku.as_deref(),
        e.name.as_deref(),
        e.url.as_deref(),
    )
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

fn max_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use domain::{Order, OrderItem, OrderStatus, Source};
    use rust_decimal::Decimal;
    use serde_json::json;
    use uuid::Uuid;

    fn event(n: i64, t: EventType, props: Value, traits: Value) -> NormalizedEvent {
        let at = Utc.timestamp_opt(1_750_000_000 + n * 86_400, 0).unwrap();
        NormalizedEvent {
            event_id: Uuid::from_u128(n as u128),
            occurred_at: at,
            received_at: at,
            source: Source::Segment,
            integration_id: None,
            channel: if n % 2 == 0 {
                Channel::Web
            } else {
                Channel::Pos
            },
            event_type: t,
            name: None,
            identifiers: vec![],
            traits: traits.as_object().cloned().unwrap_or_default(),
            properties: props.as_object().cloned().unwrap_or_default(),
            order: (t == EventType::OrderPlaced).then(|| Order {
                order_id: format!("o{n}"),
                total: Decimal::new(100, 0),
                currency: "INR".into(),
                status: OrderStatus::Paid,
                store: None,
                items: vec![OrderItem {
                    sku: "SH-1".into(),
                    name: "Shoe".into(),
                    category: Some("Shoes".into()),
                    qty: 2,
                    price: Decimal::new(50, 0),
                }],
            }),
        }
    }

    fn events() -> Vec<NormalizedEvent> {
        vec![
            event(
                0,
                EventType::ProductViewed,
                json!({"sku": "AP-1", "name": "Kurta", "category": "Apparel"}),
                json!({"first_name": "Asha"}),
            ),
            event(
                1,
                EventType::OrderPlaced,
                json!({}),
                json!({"last_name": "Rao", "city": "Pune"}),
            ),
            event(
                2,
                EventType::AddedToCart,
                json!({"sku": "AP-2", "category": "Apparel"}),
                json!({"city": "Mumbai"}),
            ),
            event(
                3,
                EventType::PageViewed,
                json!({"path": "/sale"}),
                json!({}),
            ),
            event(
                4,
                EventType::MessageReceived,
                json!({"body": "hi"}),
                json!({}),
            ),
        ]
    }

    #[test]
    fn facts_accumulate() {
        let mut f = ProfileFacts::default();
        for e in events() {
            f.observe(&e);
        }
        assert_eq!(f.state.events_count, 5);
        assert_eq!(f.channels, [Channel::Web, Channel::Pos].into());
        assert_eq!(f.traits["city"], "Mumbai", "the latest value wins");
        assert_eq!(f.display_name().as_deref(), Some("Asha Rao"));
        assert_eq!(f.state.recent_browsing.len(), 3);
        assert_eq!(
            f.state.recent_browsing[0].url.as_deref(),
            Some("/sale"),
            "newest first"
        );
        let affinity = f.state.category_affinity(f.last_seen_at.unwrap());
        assert!(affinity["Shoes"] > affinity["Apparel"], "{affinity:?}");
        assert!((affinity.values().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn order_and_merges_do_not_matter() {
        let all = events();
        let mut forward = ProfileFacts::default();
        all.iter().for_each(|e| forward.observe(e));
        let mut backward = ProfileFacts::default();
        all.iter().rev().for_each(|e| backward.observe(e));
        let (mut a, mut b) = (ProfileFacts::default(), ProfileFacts::default());
        for (i, e) in all.iter().enumerate() {
            if i % 2 == 0 {
                a.observe(e)
            } else {
                b.observe(e)
            }
        }
        b.absorb(a);
        for other in [&backward, &b] {
            assert_eq!(other.traits, forward.traits);
            assert_eq!(other.state.recent_browsing, forward.state.recent_browsing);
            assert_eq!(other.state.events_count, forward.state.events_count);
            assert_eq!(other.channels, forward.channels);
            let t = forward.last_seen_at.unwrap();
            for (c, w) in &forward.state.category_weights {
                assert!((other.state.category_weights[c].at(t) - w.at(t)).abs() < 1e-9);
            }
        }
    }

    /// The WhatsApp consent of a reply at day `n`, recorded as the normalizer does.
    fn reply(n: i64, body: &str) -> NormalizedEvent {
        let mut e = event(
            n,
            EventType::MessageReceived,
            json!({"body": body}),
            json!({}),
        );
        let status =
            domain::consent::keyword(body).unwrap_or(domain::consent::ConsentStatus::Subscribed);
        domain::consent::record(
            &mut e.traits,
            domain::consent::ConsentChannel::Whatsapp,
            status,
            "whatsapp_keyword",
            e.occurred_at,
        );
        e
    }

    #[test]
    fn the_latest_consent_wins_in_any_arrival_order() {
        let opt_in = reply(1, "hi");
        let stop = reply(2, "STOP");
        for order in [[&opt_in, &stop], [&stop, &opt_in]] {
            let mut f = ProfileFacts::default();
            order.iter().for_each(|e| f.observe(e));
            assert_eq!(f.traits["whatsapp_marketing"], "unsubscribed");
            assert_eq!(
                f.traits["whatsapp_marketing_updated_at"],
                stop.traits["whatsapp_marketing_updated_at"]
            );
        }
        // Opting back in later wins over the STOP, again in either order.
        let start = reply(3, "start");
        for order in [[&stop, &start], [&start, &stop]] {
            let mut f = ProfileFacts::default();
            order.iter().for_each(|e| f.observe(e));
            assert_eq!(f.traits["whatsapp_marketing"], "subscribed");
        }
        // At the very same instant, the opt-out wins.
        let mut same = reply(2, "hello");
        same.event_id = Uuid::from_u128(99);
        for order in [[&stop, &same], [&same, &stop]] {
            let mut f = ProfileFacts::default();
            order.iter().for_each(|e| f.observe(e));
            assert_eq!(f.traits["whatsapp_marketing"], "unsubscribed");
        }
    }

    fn status(n: i64, sid: &str, status: &str) -> NormalizedEvent {
        let mut e = event(
            n,
            EventType::MessageStatus,
            json!({"message_sid": sid, "status": status}),
            json!({}),
        );
        e.channel = Channel::Whatsapp;
        e
    }

    #[test]
    fn messages_keep_their_furthest_status_in_any_order() {
        let mut sent = event(
            1,
            EventType::MessageSent,
            json!({"message_sid": "SM1", "body": "Your cart misses you"}),
            json!({}),
        );
        sent.channel = Channel::Whatsapp;
        let all = [
            sent,
            status(2, "SM1", "queued"),
            status(3, "SM1", "delivered"),
            status(4, "SM1", "read"),
            status(5, "SM2", "failed"),
            reply(6, "thanks!"),
        ];
        let mut forward = ProfileFacts::default();
        all.iter().for_each(|e| forward.observe(e));
        let mut backward = ProfileFacts::default();
        all.iter().rev().for_each(|e| backward.observe(e));
        let (mut a, mut b) = (ProfileFacts::default(), ProfileFacts::default());
        for (i, e) in all.iter().enumerate() {
            if i % 2 == 0 {
                a.observe(e)
            } else {
                b.observe(e)
            }
        }
        a.absorb(b);
        for other in [&backward, &a] {
            assert_eq!(other.state.recent_messages, forward.state.recent_messages);
        }
        let m = &forward.state.recent_messages;
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0].direction, MessageDirection::Inbound, "newest first");
        assert_eq!(m[0].status.as_deref(), Some("received"));
        assert_eq!(m[1].message_sid.as_deref(), Some("SM2"));
        assert_eq!(m[1].status.as_deref(), Some("failed"));
        assert_eq!(m[2].status.as_deref(), Some("read"));
        assert_eq!(m[2].body.as_deref(), Some("Your cart misses you"));
        assert_eq!(m[2].at, all[0].occurred_at, "first seen when sent");
        assert!(forward.channels.contains(&Channel::Whatsapp));
    }

    #[test]
    fn browsing_is_bounded() {
        let mut f = ProfileFacts::default();
        for n in 0..50 {
            f.observe(&event(
                n,
                EventType::PageViewed,
                json!({"path": format!("/p{n}")}),
                json!({}),
            ));
        }
        assert_eq!(f.state.recent_browsing.len(), RECENT_BROWSING);
        assert_eq!(f.state.recent_browsing[0].url.as_deref(), Some("/p49"));
    }
}
