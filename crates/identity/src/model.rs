//! The small vocabulary every identity rule speaks: the canonical order of events
//! ([`EventKey`]), deterministic profile ids, the part of an event identity
//! resolution looks at ([`Observation`]), and the person-name key the name guard
//! compares.
//!
//! Profiles are a function of the events (and analysts' decisions): resolution
//! processes events in canonical order `(occurred_at, event_id)` and names each
//! profile after the event that created it. Streaming, any number of replicas and
//! `ctl identity rebuild` therefore arrive at the same profiles with the same ids.

use chrono::{DateTime, Utc};
use domain::{Channel, Identifier, IdentifierKind, NormalizedEvent, Source};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A profile id.
pub type ProfileId = Uuid;

/// The canonical position of an event: by time, ties broken by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventKey {
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The event id.
    pub event_id: Uuid,
}

impl EventKey {
    /// The key of an event.
    pub fn of(event: &NormalizedEvent) -> Self {
        Self {
            occurred_at: event.occurred_at,
            event_id: event.event_id,
        }
    }
}

/// The id of the profile an event creates. Derived from the event id (SHA-256, shaped
/// as a random UUID), so every run that creates a profile from the same event gives it
/// the same id, and an unmerge or rebuild restores the ids people already link to.
pub fn profile_id_for(event_id: Uuid) -> ProfileId {
    let digest = Sha256::new()
        .chain_update(b"constintel/profile/")
        .chain_update(event_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// What identity resolution needs of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Canonical position.
    pub key: EventKey,
    /// Identifiers as carried by the event (normalised; junk is removed by the engine).
    pub identifiers: Vec<Identifier>,
    /// The person's first name as the event states it, normalised (see [`name_key`]).
    pub name: Option<String>,
}

impl Observation {
    /// The observation of a normalised event: its identifiers plus, for order events,
    /// the order reference (see [`order_ref`]).
    pub fn of(event: &NormalizedEvent) -> Self {
        let mut identifiers = event.identifiers.clone();
        if let Some(order) = &event.order {
            identifiers.push(order_ref(event.source, &order.order_id));
        }
        identifiers.sort();
        identifiers.dedup();
        Self {
            key: EventKey::of(event),
            identifiers,
            name: person_name(event.channel, &event.traits),
        }
    }
}

/// Namespace of order references.
pub const ORDER_NAMESPACE: &str = "@order";

/// The order reference of an order: an internal strong identifier (a customer id in
/// the `@order` namespace, which no source can produce) that ties every event of one
/// order together, so a refund or cancellation that carries no customer identifier
/// still lands on the profile that placed the order, and `orders.profile_id` is simply
/// the owner of this reference. Order references never count towards limits, weak
/// conflicts or suspect learning, are never suppressed, and are left out of Customer
/// 360 identifier lists.
pub fn order_ref(source: Source, order_id: &str) -> Identifier {
    Identifier {
        kind: IdentifierKind::CustomerId,
        value: format!("{ORDER_NAMESPACE}:{source}:{order_id}"),
    }
}

/// Whether `identifier` is an order reference.
pub fn is_order_ref(identifier: &Identifier) -> bool {
    identifier.kind == IdentifierKind::CustomerId
        && identifier
            .value
            .strip_prefix(ORDER_NAMESPACE)
            .is_some_and(|rest| rest.starts_with(':'))
}

/// The first name an event states for its person, as a comparison key.
///
/// Read from `first_name`, else the first word of `name`. WhatsApp profile names are
/// self-chosen display names ("Mom", emoji) and never count; the normaliser stores
/// them as `whatsapp_profile_name`, and this function also ignores any name on a
/// WhatsApp event.
pub fn person_name(
    channel: Channel,
    traits: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    if channel == Channel::Whatsapp {
        return None;
    }
    let text = |k: &str| traits.get(k).and_then(|v| v.as_str());
    // `firstName` is the Segment spec's trait, which the tracking API keeps as sent.
    let raw = text("first_name")
        .or_else(|| text("firstName"))
        .or_else(|| text("name"))?;
    name_key(raw)
}

/// Normalises a first name for comparison: the first word, letters only, lower case.
/// Names shorter than two letters say nothing and give `None`.
pub fn name_key(raw: &str) -> Option<String> {
    let word = raw.split_whitespace().next()?;
    let key: String = word
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect();
    (key.chars().count() >= 2).then_some(key)
}

/// Whether two name keys may belong to one person: equal, one a prefix of the other
/// (`raj` / `rajesh`), or one typo apart in names of five letters or more.
pub fn names_compatible(a: &str, b: &str) -> bool {
    if a == b || a.starts_with(b) || b.starts_with(a) {
        return true;
    }
    let (la, lb) = (a.chars().count(), b.chars().count());
    la.min(lb) >= 5 && la.abs_diff(lb) <= 1 && edit_distance(a, b) <= 1
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A stable 64-bit key of an identifier (first 8 bytes of SHA-256 of `kind:value`):
/// the advisory-lock key of the identifier and the form partner sets store.
pub fn identifier_key(identifier: &Identifier) -> i64 {
    let digest = Sha256::digest(format!("{}:{}", identifier.kind, identifier.value));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// SHA-256 of `kind:value`, the form the suppression list stores.
pub fn suppression_hash(identifier: &Identifier) -> Vec<u8> {
    Sha256::digest(format!("{}:{}", identifier.kind, identifier.value)).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn profile_ids_are_deterministic_and_distinct() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(profile_id_for(a), profile_id_for(a));
        assert_ne!(profile_id_for(a), profile_id_for(b));
        assert_ne!(profile_id_for(a), a);
        assert_eq!(profile_id_for(a).get_version_num(), 4);
    }

    #[test]
    fn names_are_keyed_and_compared_leniently() {
        assert_eq!(name_key("  Priya  Sharma"), Some("priya".into()));
        assert_eq!(name_key("J."), None);
        assert_eq!(name_key("Ó'Brien"), Some("óbrien".into()));
        assert!(names_compatible("raj", "rajesh"));
        assert!(
            !names_compatible("priyanka", "priyanak"),
            "a transposition is two edits"
        );
        assert!(names_compatible("priyanka", "priyaka"));
        assert!(!names_compatible("priya", "rahul"));
        assert!(
            !names_compatible("anil", "amil"),
            "short names must match exactly"
        );
    }

    #[test]
    fn order_references_are_recognised() {
        let r = order_ref(Source::Shopify, "1001");
        assert_eq!(r.value, "@order:shopify:1001");
        assert!(is_order_ref(&r));
        let real = Identifier::customer_id("shopify", "1001").unwrap();
        assert!(!is_order_ref(&real));
        // No source can produce the namespace: parsing keeps `@order` but sources
        // namespace customer ids by their own name.
        assert!(!is_order_ref(
            &Identifier::customer_id("orderly", "1").unwrap()
        ));
    }

    #[test]
    fn whatsapp_names_never_count() {
        let traits = json!({"first_name": "Asha", "name": "Asha Rao"});
        let traits = traits.as_object().unwrap();
        assert_eq!(person_name(Channel::Web, traits), Some("asha".into()));
        assert_eq!(person_name(Channel::Whatsapp, traits), None);
        let only_name = json!({"name": "Ravi Kumar"});
        assert_eq!(
            person_name(Channel::Pos, only_name.as_object().unwrap()),
            Some("ravi".into())
        );
        let profile_name = json!({"whatsapp_profile_name": "Mom"});
        assert_eq!(
            person_name(Channel::Web, profile_name.as_object().unwrap()),
            None
        );
    }

    #[test]
    fn segment_spec_first_names_count() {
        // The tracking API keeps SDK traits as sent: `firstName` in the Segment spec.
        let traits = json!({"firstName": "Meera", "lastName": "S"});
        assert_eq!(
            person_name(Channel::Web, traits.as_object().unwrap()),
            Some("meera".into())
        );
    }
}
