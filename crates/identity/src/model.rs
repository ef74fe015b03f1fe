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

/// How profile ids derive from the events that create them (see `docs/identity.md`,
/// "Profile ids"). Every id is a pure function of the creating event's id and of the
/// *cut-over* stored in the database (`profile_id_scheme`, set once by its migration):
///
/// - an event whose id carries the time ingest received it (a UUIDv7, as ingest mints
///   every event id) at or after the cut-over creates a **time-ordered** id
///   ([`time_ordered_profile_id`]): the event id's 48-bit millisecond timestamp, then
///   74 bits of SHA-256 of the event id. New profiles' entries so go to the right edge
///   of every index keyed by profile instead of a random leaf page of each;
/// - any other event (received before the cut-over, or with an id that carries no time)
///   creates the **hashed** id ([`hashed_profile_id`]) every profile had before.
///
/// So streaming, any number of replicas, unmerges and `ctl identity rebuild` give the
/// same ids whatever the arrival order, and a rebuild restores the ids of profiles
/// created before the cut-over. Every engine carries the scheme it was given
/// ([`Engine`](crate::Engine)); the resolver reads it from the database
/// ([`load_profile_ids`](crate::resolver::load_profile_ids)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileIds {
    /// Unix milliseconds from which event ids' times get time-ordered ids
    /// (`i64::MIN`: always; `i64::MAX`: never).
    time_ordered_from_ms: i64,
}

impl ProfileIds {
    /// Time-ordered ids for every time-carrying event id: the scheme of a database
    /// created empty (cut-over minus infinity), and of resolution without a database.
    pub const TIME_ORDERED: Self = Self {
        time_ordered_from_ms: i64::MIN,
    };

    /// Hashed ids for every event (cut-over plus infinity): what every profile had
    /// before the cut-over existed.
    pub const HASHED: Self = Self {
        time_ordered_from_ms: i64::MAX,
    };

    /// Time-ordered ids for event ids whose time is at or after `ms` Unix milliseconds.
    pub const fn from_millis(ms: i64) -> Self {
        Self {
            time_ordered_from_ms: ms,
        }
    }

    /// The cut-over in Unix milliseconds (`i64::MIN`: always time-ordered, `i64::MAX`:
    /// never).
    pub const fn cut_over_ms(&self) -> i64 {
        self.time_ordered_from_ms
    }

    /// The id of the profile event `event_id` creates.
    pub fn profile_id(&self, event_id: Uuid) -> ProfileId {
        match event_time_ms(event_id) {
            Some(ms) if i64::try_from(ms).is_ok_and(|ms| ms >= self.time_ordered_from_ms) => {
                time_ordered(event_id, ms)
            }
            _ => hashed_profile_id(event_id),
        }
    }
}

/// When ingest received an event, as its id says: the Unix milliseconds of a UUIDv7
/// (`None` for ids of any other version, which carry no time).
pub fn event_time_ms(event_id: Uuid) -> Option<u64> {
    if event_id.get_version_num() != 7 || event_id.get_variant() != uuid::Variant::RFC4122 {
        return None;
    }
    let b = event_id.as_bytes();
    Some(
        b[..6]
            .iter()
            .fold(0u64, |ms, byte| (ms << 8) | u64::from(*byte)),
    )
}

fn digest_of(event_id: Uuid) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"constintel/profile/")
        .chain_update(event_id.as_bytes())
        .finalize()
        .into()
}

/// The hashed id of the profile an event creates: SHA-256 of the event id, shaped as a
/// random (version 4) UUID. The id of profiles created before the cut-over (see
/// [`ProfileIds`]).
pub fn hashed_profile_id(event_id: Uuid) -> ProfileId {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest_of(event_id)[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The time-ordered id of the profile an event creates, for an event id that carries
/// its time (a UUIDv7; `None` otherwise): a UUIDv7 of the event id's millisecond
/// timestamp whose other 74 bits are the first of SHA-256 of the event id (the same
/// digest as [`hashed_profile_id`]). Two events of the same millisecond give the same
/// id only if those 74 bits of their digests collide: among n events of one
/// millisecond about n²/2⁷⁵, nothing a brand will meet. A time-ordered id (version 7)
/// never equals a hashed one (version 4).
pub fn time_ordered_profile_id(event_id: Uuid) -> Option<ProfileId> {
    event_time_ms(event_id).map(|ms| time_ordered(event_id, ms))
}

fn time_ordered(event_id: Uuid, ms: u64) -> ProfileId {
    let digest = digest_of(event_id);
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(ms, &bits).into_uuid()
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
    storage::advisory_key(&[
        identifier.kind.to_string().as_bytes(),
        b":",
        identifier.value.as_bytes(),
    ])
}

/// SHA-256 of `kind:value`, the form the suppression list stores.
pub fn suppression_hash(identifier: &Identifier) -> Vec<u8> {
    Sha256::digest(format!("{}:{}", identifier.kind, identifier.value)).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_ids_are_deterministic_and_distinct() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(hashed_profile_id(a), hashed_profile_id(a));
        assert_ne!(hashed_profile_id(a), hashed_profile_id(b));
        assert_ne!(hashed_profile_id(a), a);
        assert_eq!(hashed_profile_id(a).get_version_num(), 4);
        // The derivation every profile created before the cut-over keeps.
        assert_eq!(
            hashed_profile_id(Uuid::from_u128(1)).to_string(),
            "4d87a671-1191-4923-93c0-fa57225bcad9"
        );
    }

    #[test]
    fn time_ordered_ids_follow_the_event_time() {
        let at =
            |ms: u64, n: u8| uuid::Builder::from_unix_timestamp_millis(ms, &[n; 10]).into_uuid();
        let (early, late) = (at(1_765_000_000_000, 1), at(1_765_000_000_001, 2));
        let ids = ProfileIds::TIME_ORDERED;
        let p = ids.profile_id(early);
        assert_eq!(p.get_version_num(), 7);
        assert_eq!(event_time_ms(p), Some(1_765_000_000_000));
        assert_eq!(p, ids.profile_id(early));
        assert_ne!(p, early);
        assert!(ids.profile_id(early) < ids.profile_id(late));
        // Same millisecond, different events: different ids (the digest's bits).
        assert_ne!(p, ids.profile_id(at(1_765_000_000_000, 3)));
    }

    #[test]
    fn the_cut_over_decides_the_derivation() {
        let at = |ms: u64| uuid::Builder::from_unix_timestamp_millis(ms, &[7; 10]).into_uuid();
        let ids = ProfileIds::from_millis(1_765_000_000_000);
        assert_eq!(
            ids.profile_id(at(1_764_999_999_999)),
            hashed_profile_id(at(1_764_999_999_999))
        );
        let on = at(1_765_000_000_000);
        assert_eq!(Some(ids.profile_id(on)), time_ordered_profile_id(on));
        assert_eq!(ProfileIds::HASHED.profile_id(on), hashed_profile_id(on));
        // Ids that carry no time are hashed whatever the cut-over.
        let random = Uuid::new_v4();
        assert_eq!(
            ProfileIds::TIME_ORDERED.profile_id(random),
            hashed_profile_id(random)
        );
        assert_eq!(event_time_ms(Uuid::from_u128(1)), None);
    }
}
