//! The closure rule of a replay region, in one place for both resolvers: the Postgres
//! one ([`crate::resolver`], which answers each lookup with a query) and the in-memory
//! one ([`crate::memory`], which answers from its maps).
//!
//! A region is every live profile an event could affect, closed under "one of the
//! region's events carries a linking identifier held by another profile, or refused by
//! another profile's event, or named in an analyst's constraint". An identifier links
//! unless it is junk, or suspect while the suspect guard is on — except one that has
//! just turned suspect, which still reaches the profiles it used to join (they are
//! replayed without it). [`RegionWalk`] keeps that rule and the walk's bookkeeping;
//! the caller only looks things up. Pure: no I/O.

use std::collections::BTreeSet;

use domain::Identifier;

use crate::model::ProfileId;
use crate::rules::Policy;

/// A region being closed: the identifiers still to follow and the profiles found.
///
/// The caller loops: take [`RegionWalk::next_batch`] (empty once the region is
/// closed), keep the identifiers that [`RegionWalk::links`], look up who holds or
/// refused them and which constraints name them, [`RegionWalk::follow`] the
/// constraints' identifiers, and hand the profiles found to [`RegionWalk::add_profiles`],
/// following the identifiers of each profile it returns as new.
#[derive(Debug)]
pub struct RegionWalk<'a> {
    policy: &'a Policy,
    newly_suspect: &'a [Identifier],
    seen: BTreeSet<Identifier>,
    frontier: Vec<Identifier>,
    profiles: BTreeSet<ProfileId>,
}

impl<'a> RegionWalk<'a> {
    /// The walk from an event carrying `seed`, plus the identifiers it just made
    /// suspect (`newly_suspect`), which link whatever they linked before.
    pub fn new(policy: &'a Policy, seed: &[Identifier], newly_suspect: &'a [Identifier]) -> Self {
        Self {
            policy,
            newly_suspect,
            seen: BTreeSet::new(),
            frontier: seed.iter().chain(newly_suspect).cloned().collect(),
            profiles: BTreeSet::new(),
        }
    }

    /// The identifiers to look up next: followed since the last batch, never looked up
    /// before, not junk. Empty once the region is closed.
    pub fn next_batch(&mut self) -> Vec<Identifier> {
        let (policy, seen) = (self.policy, &mut self.seen);
        std::mem::take(&mut self.frontier)
            .into_iter()
            .filter(|id| !policy.is_junk(id) && seen.insert(id.clone()))
            .collect()
    }

    /// Whether `id`, suspect or not, links the profiles that hold or refused it.
    pub fn links(&self, id: &Identifier, suspect: bool) -> bool {
        !(suspect && self.policy.guards.suspect) || self.newly_suspect.contains(id)
    }

    /// Identifiers to follow: those of a constraint a linking identifier is named in, or
    /// of a profile new to the region.
    pub fn follow(&mut self, ids: impl IntoIterator<Item = Identifier>) {
        self.frontier.extend(ids);
    }

    /// Adds `found` to the region; returns the profiles new to it, whose identifiers the
    /// caller then follows.
    pub fn add_profiles(&mut self, found: impl IntoIterator<Item = ProfileId>) -> Vec<ProfileId> {
        let found: BTreeSet<ProfileId> = found.into_iter().collect();
        found
            .into_iter()
            .filter(|p| self.profiles.insert(*p))
            .collect()
    }

    /// The profiles of the region.
    pub fn into_profiles(self) -> BTreeSet<ProfileId> {
        self.profiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::IdentifierKind::{CookieId, Email, Phone};
    use uuid::Uuid;

    fn id(kind: domain::IdentifierKind, v: &str) -> Identifier {
        Identifier::parse(kind, v, "IN").unwrap()
    }

    fn pid(n: u128) -> ProfileId {
        Uuid::from_u128(n)
    }

    #[test]
    fn each_identifier_is_looked_up_once_and_junk_never() {
        let policy = Policy::default();
        let a = id(Email, "asha@mail.in");
        let junk = id(Email, "test@test.com");
        let mut walk = RegionWalk::new(&policy, &[a.clone(), junk, a.clone()], &[]);
        assert_eq!(walk.next_batch(), vec![a.clone()]);
        walk.follow([a]);
        assert!(
            walk.next_batch().is_empty(),
            "closed: nothing new to look up"
        );
    }

    #[test]
    fn a_suspect_identifier_links_only_while_it_is_newly_suspect() {
        let policy = Policy::default();
        let counter = id(Phone, "+919800000000");
        let cookie = id(CookieId, "c1");
        let newly = [counter.clone()];
        let walk = RegionWalk::new(&policy, std::slice::from_ref(&cookie), &newly);
        assert!(
            walk.links(&counter, true),
            "it still reaches what it joined"
        );
        assert!(!walk.links(&id(Phone, "+919811111111"), true));
        assert!(walk.links(&cookie, false));
        let unguarded = Policy {
            guards: crate::rules::Guards {
                suspect: false,
                ..crate::rules::Guards::ALL
            },
            ..Policy::default()
        };
        let walk = RegionWalk::new(&unguarded, &[], &[]);
        assert!(
            walk.links(&counter, true),
            "without the guard suspects link"
        );
    }

    #[test]
    fn profiles_are_new_once() {
        let policy = Policy::default();
        let mut walk = RegionWalk::new(&policy, &[], &[]);
        assert_eq!(
            walk.add_profiles([pid(2), pid(1), pid(2)]),
            vec![pid(1), pid(2)]
        );
        assert_eq!(walk.add_profiles([pid(1), pid(3)]), vec![pid(3)]);
        assert_eq!(walk.into_profiles(), [pid(1), pid(2), pid(3)].into());
    }
}
