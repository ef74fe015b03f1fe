//! Where retired profile ids point (tombstones), as a function of the final event set.
//!
//! Every profile id is derived from the event that created it
//! ([`ProfileIds`]), and which profile holds an event is the same whatever the
//! arrival order. So a retired id has one canonical destination: **the live profile
//! that now holds the event that created it**. Every write keeps every tombstone
//! pointing there, directly (never at another tombstone):
//!
//! - a merge points the absorbed profile at its survivor, and every tombstone that
//!   pointed at the absorbed profile at the survivor too (their creating events went
//!   with the absorbed profile's events);
//! - a region replay or a rebuild points each old profile that no longer exists at the
//!   holder of its creating event ([`retire`]) and re-points every existing tombstone
//!   whose creating event changed profile ([`Retirement::repoint`]);
//! - a profile a replay creates again (an unmerge) is live again: its tombstone row is
//!   revived.
//!
//! Hence streaming with any arrival order and any number of replicas, and `ctl identity
//! rebuild`, agree on where every retired id leads. Which ids exist as tombstones does
//! depend on the order (a replay can create a profile that canonical order never
//! creates, and a region replay does not store profiles created and absorbed within
//! it); those that exist agree. [`Redirects`] is the same table in memory, for the
//! in-memory resolver and for settling a stored table ([`settle`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use crate::model::{ProfileId, ProfileIds};

/// What a region replay or a rebuild does to tombstones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retirement {
    /// Old live profiles that no longer exist, each with where it now points.
    pub tombstones: Vec<(ProfileId, ProfileId)>,
    /// Ids whose creating event changed profile, with the live profile that now holds
    /// it. Those that are tombstones are re-pointed; the others (most events never
    /// created a profile, or the profile was never stored) are ignored by the write.
    pub repoint: Vec<(ProfileId, ProfileId)>,
}

/// The retirement of a region replay (or a rebuild): `ids` names the profile each event
/// creates (the engine's), `old_live` were the live profiles before it, `new_live` are those after, and `moved` gives `(event, before, after)`
/// for events that had a profile before (unchanged ones may be included).
///
/// An old profile that no longer exists points at the holder of the event that created
/// it. If that event is not among `moved` (a profile stored before its creating event
/// was known, which no resolver of this version does), it falls back to the profile
/// that received most of its events (ties: the smaller id); a profile none of whose
/// events moved (it has none left: all erased) is left alone.
pub fn retire(
    ids: ProfileIds,
    old_live: &BTreeSet<ProfileId>,
    new_live: &BTreeSet<ProfileId>,
    moved: impl IntoIterator<Item = (Uuid, ProfileId, ProfileId)>,
) -> Retirement {
    let mut creators: BTreeMap<ProfileId, ProfileId> = BTreeMap::new();
    let mut counts: HashMap<ProfileId, BTreeMap<ProfileId, usize>> = HashMap::new();
    for (event, before, after) in moved {
        if before == after {
            continue;
        }
        *counts.entry(before).or_default().entry(after).or_default() += 1;
        let created = ids.profile_id(event);
        if created != after {
            creators.insert(created, after);
        }
    }
    let tombstones = old_live
        .iter()
        .filter(|p| !new_live.contains(*p))
        .filter_map(|p| {
            let into = creators.get(p).copied().or_else(|| {
                counts
                    .get(p)?
                    .iter()
                    .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
                    .map(|(id, _)| *id)
            })?;
            Some((*p, into))
        })
        .collect();
    let repoint = creators
        .into_iter()
        .filter(|(p, _)| !old_live.contains(p) && !new_live.contains(p))
        .collect();
    Retirement {
        tombstones,
        repoint,
    }
}

/// The tombstone pointers a rebuild must change so that every stored tombstone points
/// at its canonical destination. `ids` names the profile each event creates (the
/// engine's); `stored` is the stored table (tombstone → pointer, as
/// read: possibly chained, from before this rule); `assignment` every event with its
/// rebuilt profile; `new_live` the rebuilt live profiles; `retired` the old live
/// profiles the rebuild retires (written as tombstones, not repeated here).
///
/// A tombstone whose creating event is stored goes to that event's profile; one whose
/// creating event is gone follows its old chain, each step to its new destination. Tombstones that
/// come back to life are left to the write that revives them.
pub fn settle(
    ids: ProfileIds,
    stored: &HashMap<ProfileId, ProfileId>,
    assignment: impl IntoIterator<Item = (Uuid, ProfileId)>,
    new_live: &BTreeSet<ProfileId>,
    retired: &[(ProfileId, ProfileId)],
) -> Vec<(ProfileId, ProfileId)> {
    if stored.is_empty() {
        return Vec::new(); // spares hashing every event id
    }
    let mut canonical: HashMap<ProfileId, ProfileId> = HashMap::new();
    for (event, profile) in assignment {
        let created = ids.profile_id(event);
        if stored.contains_key(&created) {
            canonical.insert(created, profile);
        }
    }
    let retired: HashMap<ProfileId, ProfileId> = retired.iter().copied().collect();
    // Where `start` leads now: each step of its chain at its new destination.
    let destination = |start: ProfileId| {
        let mut at = start;
        for _ in 0..=stored.len() {
            if new_live.contains(&at) {
                return Some(at);
            }
            if let Some(into) = retired.get(&at).or_else(|| canonical.get(&at)) {
                return Some(*into);
            }
            at = *stored.get(&at)?;
        }
        None // a corrupt cycle: left as it is
    };
    let mut changes: Vec<(ProfileId, ProfileId)> = stored
        .iter()
        .filter(|(id, _)| !new_live.contains(*id))
        .filter_map(|(id, pointer)| {
            let to = destination(*id)?;
            (to != *pointer).then_some((*id, to))
        })
        .collect();
    changes.sort();
    changes
}

/// A tombstone table in memory, kept flat (no pointer targets a tombstone) by the same
/// operations the Postgres write performs.
#[derive(Debug, Clone, Default)]
pub struct Redirects {
    to: HashMap<ProfileId, ProfileId>,
    from: HashMap<ProfileId, HashSet<ProfileId>>,
}

impl Redirects {
    /// Turns `id` into a tombstone of the live profile `into`, and re-points every
    /// tombstone that pointed at `id`.
    pub fn retire(&mut self, id: ProfileId, into: ProfileId) {
        debug_assert_ne!(id, into);
        self.set(id, into);
        for source in self.from.remove(&id).unwrap_or_default() {
            self.set(source, into);
        }
    }

    /// Points the tombstone `id` at `into`; an id that is not a tombstone is ignored.
    pub fn repoint(&mut self, id: ProfileId, into: ProfileId) {
        if self.to.contains_key(&id) {
            self.set(id, into);
        }
    }

    /// `id` is live (again): it is no tombstone.
    pub fn revive(&mut self, id: ProfileId) {
        if let Some(old) = self.to.remove(&id)
            && let Some(set) = self.from.get_mut(&old)
        {
            set.remove(&id);
        }
    }

    /// Applies what a region replay did: `new_live` exist, the retirement's tombstones
    /// and re-pointings are made.
    pub fn apply(&mut self, new_live: &BTreeSet<ProfileId>, retirement: &Retirement) {
        for p in new_live {
            self.revive(*p);
        }
        for (id, into) in &retirement.tombstones {
            self.retire(*id, *into);
        }
        for (id, into) in &retirement.repoint {
            self.repoint(*id, *into);
        }
    }

    /// Where the tombstone `id` points.
    pub fn get(&self, id: &ProfileId) -> Option<ProfileId> {
        self.to.get(id).copied()
    }

    /// Every tombstone with where it points, sorted.
    pub fn map(&self) -> BTreeMap<ProfileId, ProfileId> {
        self.to.iter().map(|(a, b)| (*a, *b)).collect()
    }

    fn set(&mut self, id: ProfileId, into: ProfileId) {
        if let Some(old) = self.to.insert(id, into)
            && let Some(set) = self.from.get_mut(&old)
        {
            set.remove(&id);
        }
        self.from.entry(into).or_default().insert(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event `n`: received at millisecond `n` (a UUIDv7, as ingest mints).
    fn id(n: u128) -> Uuid {
        uuid::Builder::from_unix_timestamp_millis(n as u64, &[0; 10]).into_uuid()
    }

    /// The tests' scheme: events from millisecond 3 on create time-ordered ids.
    const IDS: ProfileIds = ProfileIds::from_millis(3);

    /// The profile id event `n` creates.
    fn created(n: u128) -> ProfileId {
        IDS.profile_id(id(n))
    }

    #[test]
    fn a_retired_profile_points_at_the_holder_of_its_creating_event() {
        let (p1, p2) = (created(1), created(2));
        let other = id(900);
        let old_live: BTreeSet<ProfileId> = [p2].into();
        let new_live: BTreeSet<ProfileId> = [p1, other].into();
        // Profile 2 had events 2, 3, 4; most went to `other`, its creating event to p1.
        let moved = [(id(2), p2, p1), (id(3), p2, other), (id(4), p2, other)];
        let r = retire(IDS, &old_live, &new_live, moved);
        assert_eq!(r.tombstones, vec![(p2, p1)]);
        // Events 3 and 4 may have created profiles that are tombstones now.
        let mut expected = vec![(created(3), other), (created(4), other)];
        expected.sort();
        assert_eq!(r.repoint, expected);
    }

    #[test]
    fn without_its_creating_event_a_retired_profile_goes_where_most_events_went() {
        let new_live: BTreeSet<ProfileId> = [id(10), id(11), id(1)].into();
        let old_live: BTreeSet<ProfileId> = [id(1), id(2), id(3), id(4)].into();
        let moved = [
            (id(100), id(1), id(1)), // stayed: not a move
            (id(101), id(2), id(10)),
            (id(102), id(2), id(11)),
            (id(103), id(2), id(11)),
            (id(104), id(3), id(11)),
            (id(105), id(3), id(10)), // a tie: the smaller id
        ];
        let r = retire(IDS, &old_live, &new_live, moved);
        assert_eq!(r.tombstones, vec![(id(2), id(11)), (id(3), id(10))]);
        // Profile 4 had no events left: left alone. Profile 1 still exists.
        assert_eq!(r.repoint.len(), 5, "every moved event's id is a candidate");
    }

    #[test]
    fn the_table_stays_flat_and_revives() {
        let mut t = Redirects::default();
        let [a, b, c, d] = [1, 2, 3, 4].map(id);
        t.retire(a, b);
        t.retire(b, c);
        assert_eq!(
            t.map(),
            BTreeMap::from([(a, c), (b, c)]),
            "a no longer points at b"
        );
        t.repoint(d, a); // d is no tombstone: nothing
        assert_eq!(t.get(&d), None);
        t.revive(b);
        t.repoint(a, b);
        assert_eq!(t.map(), BTreeMap::from([(a, b)]));
        t.retire(b, c);
        assert_eq!(t.map(), BTreeMap::from([(a, c), (b, c)]));
        t.apply(
            &[b].into(),
            &Retirement {
                tombstones: vec![(c, d)],
                repoint: vec![(a, b)],
            },
        );
        assert_eq!(t.map(), BTreeMap::from([(a, b), (c, d)]));
    }

    #[test]
    fn settling_a_stored_table_points_every_tombstone_at_its_creating_event() {
        let (p1, p2, p3, p4) = (created(1), created(2), created(3), created(4));
        let gone = id(77); // a tombstone whose creating event is no longer stored
        let stored: HashMap<ProfileId, ProfileId> = [
            (p2, p1),   // canonical already
            (p3, p2),   // chained: event 3 is in p4 now
            (gone, p3), // follows its chain
        ]
        .into();
        let new_live: BTreeSet<ProfileId> = [p1, p4].into();
        let assignment = [(id(1), p1), (id(2), p1), (id(3), p4), (id(4), p4)];
        let changes = settle(IDS, &stored, assignment, &new_live, &[]);
        let mut expected = vec![(p3, p4), (gone, p4)];
        expected.sort();
        assert_eq!(changes, expected);
        // A retired live profile at the end of a chain: the chain ends where it went.
        let stored: HashMap<ProfileId, ProfileId> = [(gone, p3)].into();
        let changes = settle(IDS, &stored, Vec::new(), &[p1].into(), &[(p3, p1)]);
        assert_eq!(changes, vec![(gone, p1)]);
    }
}
