//! The small vocabulary every identity rule speaks: the canonical order of events
//! ([`EventKey`]), deterministic profile ids, the part of an event identity
//! resolution looks at ([`Observation`]), order references, and the stable keys of
//! identifiers (lock keys, partner keys, suppression hashes).
//!
//! Profiles are a function of the events (and analysts' decisions): resolution
//! processes events in canonical order `(occurred_at, event_id)` and names each
//! profile after the event that created it. Streaming, any number of replicas and
//! `ctl identity rebuild` therefore arrive at the same profiles with the same ids.

use chrono::{DateTime, Utc};
use domain::{Channel, Identifier, NormalizedEvent, Source};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::rules::names::person_name;

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
    /// The person's first name as the event states it, normalised (see
    /// [`name_key`](crate::rules::names::name_key)).
    pub name: Option<String>,
    /// Identifiers of `identifiers` the event only links through, never gives to its
    /// profile (`domain::LINK_ONLY_PROPERTY`: an alias's previous id), sorted.
    pub link_only: Vec<Identifier>,
}

impl Observation {
    /// The observation of a normalised event: its identifiers plus, for order events,
    /// the order reference (see [`Identifier::order_reference`]).
    pub fn of(event: &NormalizedEvent) -> Self {
        Self::from_parts(
            EventKey::of(event),
            event.identifiers.clone(),
            event
                .order
                .as_ref()
                .map(|o| (event.source, o.order_id.as_str())),
            event.channel,
            &event.traits,
            event.link_only(),
        )
    }

    /// The observation of an event given only the parts resolution reads (what a
    /// rebuild selects of a stored event): its identifiers, its order's source and id,
    /// the channel and traits its person's name comes from, and the identifiers it only
    /// links through.
    pub fn from_parts(
        key: EventKey,
        mut identifiers: Vec<Identifier>,
        order: Option<(Source, &str)>,
        channel: Channel,
        traits: &serde_json::Map<String, serde_json::Value>,
        mut link_only: Vec<Identifier>,
    ) -> Self {
        if let Some((source, order_id)) = order {
            identifiers.push(Identifier::order_reference(source, order_id));
        }
        identifiers.sort();
        identifiers.dedup();
        link_only.retain(|id| identifiers.binary_search(id).is_ok());
        link_only.sort();
        link_only.dedup();
        Self {
            key,
            identifiers,
            name: person_name(channel, traits),
            link_only,
        }
    }
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

    #[test]
    fn profile_ids_are_deterministic_and_distinct() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(profile_id_for(a), profile_id_for(a));
        assert_ne!(profile_id_for(a), profile_id_for(b));
        assert_ne!(profile_id_for(a), a);
        assert_eq!(profile_id_for(a).get_version_num(), 4);
    }
}
