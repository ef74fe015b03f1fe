//! The decision for one event: given what its identifiers match right now, attach the
//! event to a profile, create one, merge several, or raise a review item (the rules
//! are stated in prose in the [module doc](super)).
//!
//! Pure and total. The caller (the engine) looks up which live profile owns each
//! identifier, drops junk and suspect identifiers, and applies the [`Decision`].
//!
//! How the rule reads an event. Each matched profile and the event's fresh identifiers
//! are *items*, sorted as the match priority says. The first item seeds a group, and
//! each further item joins it unless a guard objects (`Group::objection` holds every
//! guard); then the joined profiles give the target, the fresh identifiers go to it
//! within the limits, and every objection except "separated" becomes a review item.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use domain::Identifier;
/// Why profiles merged and why a link needs an analyst: wire types, defined once in
/// `domain` (`merge_history.rule`, `manual_merge_queue.reason`).
pub use domain::api::{MergeRule, ReviewReason};
use serde::{Deserialize, Serialize};

use super::names::{name_fits, names_compatible};
use super::policy::{Class, Policy};
use crate::model::{EventKey, ProfileId};

/// Match priority at or below which a link is weak (device, cookie).
pub const WEAK_PRIORITY: u8 = 2;

/// A live profile one of the event's identifiers belongs to.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The profile.
    pub profile: ProfileId,
    /// Canonical key of its first event (older profiles survive merges).
    pub first_key: EventKey,
    /// The event's identifiers this profile owns.
    pub matched: Vec<&'a Identifier>,
    /// Every identifier the profile owns.
    pub holds: &'a BTreeSet<Identifier>,
    /// First-name keys of its person.
    pub names: &'a BTreeSet<String>,
}

impl Candidate<'_> {
    /// The priority of its best matching identifier.
    pub fn priority(&self) -> u8 {
        self.matched
            .iter()
            .map(|i| i.kind.priority())
            .max()
            .unwrap_or(0)
    }
}

/// Analysts' "these are different people" decisions, asked by the rule.
pub trait Separations {
    /// Whether identifiers in `a` and in `b` must never share a profile.
    fn separated(&self, a: &[&Identifier], b: &[&Identifier]) -> bool;
}

/// No separations.
pub struct NoSeparations;

impl Separations for NoSeparations {
    fn separated(&self, _: &[&Identifier], _: &[&Identifier]) -> bool {
        false
    }
}

/// What the rule is asked about one event.
pub struct DecisionInput<'a> {
    /// The first name the event states, if any.
    pub event_name: Option<&'a str>,
    /// Live profiles owning the event's (non-suspect) identifiers.
    pub candidates: Vec<Candidate<'a>>,
    /// The event's identifiers nobody owns yet (non-junk, non-suspect).
    pub fresh: Vec<&'a Identifier>,
    /// The event's identifiers it only links through (sorted): an alias's previous id
    /// in each form it may have had. Owned, they link like any other; fresh, they are
    /// withheld, never given to a profile.
    pub link_only: &'a [Identifier],
    /// Analysts' separations.
    pub separations: &'a dyn Separations,
}

/// Where the event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An existing profile (the survivor, when merging).
    Existing(ProfileId),
    /// A new profile, created from this event.
    New,
}

/// The merge rule a join made through a link of match `priority` is recorded under: the
/// weakest link of a merge names it.
fn rule_for_link(priority: u8) -> MergeRule {
    match priority {
        p if p >= 4 => MergeRule::StrongIdentifier,
        3 => MergeRule::MediumIdentifier,
        _ => MergeRule::WeakIdentifier,
    }
}

/// Why one of the event's identifiers does not end up on the event's profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withheld {
    /// It belongs to another profile the event could not join.
    OwnedElsewhere,
    /// Adding it would exceed the profile's limit for its class.
    Limit,
    /// An analyst separated it from this profile.
    Separated,
    /// It is shared by many people and links nothing.
    Suspect,
    /// It was seen joining different people (a family computer, a family phone) and
    /// links nothing any more.
    Shared,
    /// The event only links through it (an alias's previous id) and nobody holds it.
    LinkOnly,
}

/// A review item the decision raises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewProposal {
    /// The main reason.
    pub reason: ReviewReason,
    /// The profiles to review besides the event's own, each with its reason.
    pub others: Vec<(ProfileId, ReviewReason)>,
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The profile the event attaches to.
    pub target: Target,
    /// Profiles merged into the target (only with an existing target).
    pub absorb: Vec<ProfileId>,
    /// The rule behind the merge, when there is one.
    pub rule: Option<MergeRule>,
    /// The event's identifiers that linked the merged profiles.
    pub matched: Vec<Identifier>,
    /// Fresh identifiers the target takes.
    pub add: Vec<Identifier>,
    /// Identifiers that stay where they are (or unowned), and why.
    pub withheld: Vec<(Identifier, Withheld)>,
    /// A review item to raise.
    pub review: Option<ReviewProposal>,
    /// Identifiers this event shows to be used by different people: the device or
    /// cookie of a shared-weak-identifier conflict, or the identifier through which a
    /// profile matched an event that names a different person. From now on they link
    /// nothing.
    pub shared: Vec<Identifier>,
}

/// One side of a join: an existing profile or the event's fresh identifiers.
struct Item<'a> {
    candidate: Option<usize>,
    priority: u8,
    first_key: Option<EventKey>,
    ids: Vec<&'a Identifier>,
    names: Vec<&'a str>,
    name_fits_event: bool,
}

/// Objections to joining an item to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Objection {
    Separated,
    /// A review item; `different_person` when the evidence says the item is someone
    /// else (so the identifiers tying it in are shared).
    Review {
        reason: ReviewReason,
        different_person: bool,
    },
}

/// The identifiers, classes and names gathered so far.
#[derive(Default)]
struct Group<'a> {
    ids: Vec<&'a Identifier>,
    classes: BTreeMap<Class, BTreeSet<&'a str>>,
    /// The event's name and the names of the profiles joined so far.
    names: BTreeSet<&'a str>,
    /// The names of the profiles joined so far.
    profile_names: BTreeSet<&'a str>,
    /// How many existing profiles joined so far.
    profiles: usize,
    best_priority: u8,
}

impl<'a> Group<'a> {
    fn take(&mut self, item: &Item<'a>) {
        for id in &item.ids {
            self.ids.push(id);
            if let Some(class) = Class::of(id) {
                self.classes.entry(class).or_default().insert(&id.value);
            }
        }
        self.names.extend(item.names.iter().copied());
        if item.candidate.is_some() {
            self.profile_names.extend(item.names.iter().copied());
            self.profiles += 1;
        }
        self.best_priority = self.best_priority.max(item.priority);
    }

    fn objection(
        &self,
        policy: &Policy,
        input: &DecisionInput<'_>,
        item: &Item<'a>,
    ) -> Option<Objection> {
        if !self.ids.is_empty() && input.separations.separated(&self.ids, &item.ids) {
            return Some(Objection::Separated);
        }
        let guards = policy.guards;
        if guards.names
            && !self.names.is_empty()
            && !item.names.is_empty()
            && !item
                .names
                .iter()
                .any(|a| self.names.iter().any(|b| names_compatible(a, b)))
        {
            return Some(Objection::Review {
                reason: ReviewReason::NameConflict,
                different_person: true,
            });
        }
        let link = self.best_priority.min(item.priority);
        let item_classes = classes(&item.ids);
        if guards.weak_conflict && link <= WEAK_PRIORITY {
            let clash = item_classes.iter().any(|(class, values)| {
                self.classes
                    .get(class)
                    .is_some_and(|g| !g.is_empty() && g != values)
            });
            // The same first name on both sides says it is one person with another
            // e-mail on their own device: fresh identifiers join, and a merge of two
            // profiles still needs review but the device is not shared.
            let compatible = |a: &BTreeSet<&str>, b: &[&str]| {
                b.iter().any(|x| a.iter().any(|y| names_compatible(x, y)))
            };
            let same_person = guards.names
                && !item.names.is_empty()
                && match item.candidate {
                    None => compatible(&self.profile_names, &item.names),
                    Some(_) => compatible(&self.names, &item.names),
                };
            // Two existing profiles never merge through a device; fresh identifiers (or
            // a profile meeting only the event's fresh identifiers) join one person.
            let merge_of_profiles = item.candidate.is_some() && self.profiles > 0;
            if clash && (merge_of_profiles || !same_person) {
                return Some(Objection::Review {
                    reason: ReviewReason::SharedWeakIdentifier,
                    different_person: !same_person,
                });
            }
        }
        // Limits decide for existing profiles; fresh identifiers are only withheld.
        if guards.limits && item.candidate.is_some() {
            // Only a join that puts two sides' identifiers of one class together can
            // break a limit; a profile already over it (an analyst merged it) still
            // takes its own events.
            let over = item_classes.iter().any(|(class, values)| {
                let limit = policy.limits.of(class).unwrap_or(u32::MAX) as usize;
                let held = self.classes.get(class).map_or(0, BTreeSet::len);
                held > 0 && held + values.len() > limit
            });
            if over {
                return Some(Objection::Review {
                    reason: ReviewReason::LimitExceeded,
                    different_person: false,
                });
            }
        }
        None
    }
}

fn classes<'a>(ids: &[&'a Identifier]) -> BTreeMap<Class, BTreeSet<&'a str>> {
    let mut out: BTreeMap<Class, BTreeSet<&'a str>> = BTreeMap::new();
    for id in ids {
        if let Some(class) = Class::of(id) {
            out.entry(class).or_default().insert(&id.value);
        }
    }
    out
}

/// Decides what to do with one event. See the module documentation for the rule.
pub fn decide(policy: &Policy, input: &DecisionInput<'_>) -> Decision {
    if input.link_only.is_empty() {
        return decide_linking(policy, input);
    }
    // Link-only identifiers nobody holds say nothing about the event's person: they
    // are set aside before the rule reads the event (see `DecisionInput::link_only`).
    let (fresh, unheld): (Vec<&Identifier>, Vec<&Identifier>) = input
        .fresh
        .iter()
        .partition(|id| input.link_only.binary_search(id).is_err());
    let mut decision = decide_linking(
        policy,
        &DecisionInput {
            event_name: input.event_name,
            candidates: input.candidates.clone(),
            fresh,
            link_only: input.link_only,
            separations: input.separations,
        },
    );
    decision.withheld.extend(
        unheld
            .into_iter()
            .map(|id| (id.clone(), Withheld::LinkOnly)),
    );
    decision.withheld.sort();
    decision
}

fn decide_linking(policy: &Policy, input: &DecisionInput<'_>) -> Decision {
    let event_name = if policy.guards.names {
        input.event_name
    } else {
        None
    };
    let mut items: Vec<Item<'_>> = input
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let names: Vec<&str> = if policy.guards.names {
                c.names.iter().map(String::as_str).collect()
            } else {
                Vec::new()
            };
            Item {
                candidate: Some(i),
                priority: c.priority(),
                first_key: Some(c.first_key),
                ids: c.holds.iter().collect(),
                name_fits_event: fits(event_name, &names),
                names,
            }
        })
        .collect();
    if !input.fresh.is_empty() {
        items.push(Item {
            candidate: None,
            priority: input
                .fresh
                .iter()
                .map(|i| i.kind.priority())
                .max()
                .unwrap_or(0),
            first_key: None,
            ids: input.fresh.clone(),
            names: event_name.into_iter().collect(),
            name_fits_event: true,
        });
    }
    items.sort_by_key(|item| {
        (
            !item.name_fits_event,
            Reverse(item.priority),
            item.candidate.is_none(),
            item.first_key,
            item.candidate.map(|i| input.candidates[i].profile),
        )
    });

    let mut group = Group::default();
    group.names.extend(event_name);
    let mut joined: Vec<(usize, u8)> = Vec::new(); // (candidate, link priority)
    let mut fresh_joined = false;
    let mut fresh_separated = false;
    let mut objections: Vec<(ProfileId, ReviewReason)> = Vec::new();
    let mut shared: Vec<Identifier> = Vec::new();
    for item in &items {
        let link = if group.ids.is_empty() && joined.is_empty() && !fresh_joined {
            item.priority
        } else {
            group.best_priority.min(item.priority)
        };
        match group.objection(policy, input, item) {
            None => {
                group.take(item);
                match item.candidate {
                    Some(i) => joined.push((i, link)),
                    None => fresh_joined = true,
                }
            }
            Some(objection) => match (item.candidate, objection) {
                (
                    Some(i),
                    Objection::Review {
                        reason,
                        different_person,
                    },
                ) => {
                    let c = &input.candidates[i];
                    objections.push((c.profile, reason));
                    // The identifiers that tied this profile to an event of someone else.
                    let someone_else = match reason {
                        ReviewReason::SharedWeakIdentifier => different_person,
                        ReviewReason::NameConflict => event_name.is_some() && !item.name_fits_event,
                        _ => false,
                    };
                    if someone_else {
                        shared.extend(c.matched.iter().map(|id| (*id).clone()));
                    }
                }
                (Some(_), Objection::Separated) => {}
                (None, _) => fresh_separated = true,
            },
        }
    }

    let max_auto = policy.max_auto_merge.max(1) as usize;
    let too_many = joined.len() > max_auto;
    let (target, absorb, rule) = if joined.is_empty() {
        (Target::New, Vec::new(), None)
    } else if too_many {
        let best = input.candidates[joined[0].0].profile;
        for &(i, _) in &joined[1..] {
            objections.push((input.candidates[i].profile, ReviewReason::TooManyProfiles));
        }
        (Target::Existing(best), Vec::new(), None)
    } else {
        let survivor_idx = joined
            .iter()
            .map(|&(i, _)| i)
            .min_by_key(|&i| (input.candidates[i].first_key, input.candidates[i].profile))
            .expect("joined is not empty");
        let survivor = input.candidates[survivor_idx].profile;
        let absorb: Vec<ProfileId> = joined
            .iter()
            .filter(|&&(i, _)| i != survivor_idx)
            .map(|&(i, _)| input.candidates[i].profile)
            .collect();
        let rule = (!absorb.is_empty())
            .then(|| rule_for_link(joined.iter().map(|&(_, link)| link).min().unwrap_or(0)));
        (Target::Existing(survivor), absorb, rule)
    };

    // The identifiers the event's profile ends up holding, per class, for the limits.
    let members: Vec<usize> = match target {
        Target::New => Vec::new(),
        Target::Existing(_) if too_many => vec![joined[0].0],
        Target::Existing(_) => joined.iter().map(|&(i, _)| i).collect(),
    };
    let mut held: BTreeMap<Class, BTreeSet<&str>> = BTreeMap::new();
    for &i in &members {
        for id in input.candidates[i].holds {
            if let Some(class) = Class::of(id) {
                held.entry(class).or_default().insert(&id.value);
            }
        }
    }
    let mut add = Vec::new();
    let mut withheld = Vec::new();
    for id in &input.fresh {
        if !fresh_joined {
            let why = if fresh_separated {
                Withheld::Separated
            } else {
                Withheld::OwnedElsewhere
            };
            withheld.push(((*id).clone(), why));
            continue;
        }
        if let Some(class) = Class::of(id) {
            let limit = policy.limits.of(&class).unwrap_or(u32::MAX) as usize;
            let values = held.entry(class).or_default();
            if policy.guards.limits && values.len() >= limit {
                withheld.push(((*id).clone(), Withheld::Limit));
                continue;
            }
            values.insert(&id.value);
        }
        add.push((*id).clone());
    }
    let member_profiles: BTreeSet<ProfileId> = members
        .iter()
        .map(|&i| input.candidates[i].profile)
        .collect();
    let mut matched = Vec::new();
    for c in &input.candidates {
        if member_profiles.contains(&c.profile) {
            if !absorb.is_empty() {
                matched.extend(c.matched.iter().map(|i| (*i).clone()));
            }
        } else {
            withheld.extend(
                c.matched
                    .iter()
                    .map(|i| ((*i).clone(), Withheld::OwnedElsewhere)),
            );
        }
    }
    matched.sort();
    withheld.sort();
    shared.sort();
    shared.dedup();

    let review = (!objections.is_empty()).then(|| {
        let reason = if too_many {
            ReviewReason::TooManyProfiles
        } else {
            objections[0].1
        };
        ReviewProposal {
            reason,
            others: objections,
        }
    });
    Decision {
        target,
        absorb,
        rule,
        matched,
        add,
        withheld,
        review,
        shared,
    }
}

fn fits(event_name: Option<&str>, names: &[&str]) -> bool {
    event_name.is_none_or(|e| name_fits(names.iter().copied(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Guards;
    use chrono::{TimeZone, Utc};
    use domain::IdentifierKind::{self, *};
    use uuid::Uuid;

    fn id(kind: IdentifierKind, v: &str) -> Identifier {
        let raw = match kind {
            CustomerId | PosCustomer if !v.contains(':') => format!("shop:{v}"),
            _ => v.to_owned(),
        };
        Identifier::parse(kind, &raw, "IN").unwrap()
    }

    /// A profile in a test world: id, age (smaller is older), identifiers, names.
    struct P {
        id: ProfileId,
        age: i64,
        holds: BTreeSet<Identifier>,
        names: BTreeSet<String>,
    }

    fn p(n: u128, age: i64, holds: &[Identifier], names: &[&str]) -> P {
        P {
            id: Uuid::from_u128(n),
            age,
            holds: holds.iter().cloned().collect(),
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn key(age: i64) -> EventKey {
        EventKey {
            occurred_at: Utc.timestamp_opt(1_700_000_000 + age, 0).unwrap(),
            event_id: Uuid::from_u128(age as u128),
        }
    }

    /// Decides for an event carrying `event` in a world of `profiles`.
    fn run(policy: &Policy, profiles: &[P], event: &[Identifier], name: Option<&str>) -> Decision {
        run_sep(policy, profiles, event, name, &NoSeparations)
    }

    fn run_sep(
        policy: &Policy,
        profiles: &[P],
        event: &[Identifier],
        name: Option<&str>,
        sep: &dyn Separations,
    ) -> Decision {
        run_full(policy, profiles, event, name, sep, &[])
    }

    fn run_full(
        policy: &Policy,
        profiles: &[P],
        event: &[Identifier],
        name: Option<&str>,
        sep: &dyn Separations,
        link_only: &[Identifier],
    ) -> Decision {
        let mut candidates = Vec::new();
        let mut fresh = Vec::new();
        for ev_id in event {
            match profiles.iter().find(|p| p.holds.contains(ev_id)) {
                Some(owner) => {
                    if let Some(c) = candidates
                        .iter_mut()
                        .find(|c: &&mut Candidate<'_>| c.profile == owner.id)
                    {
                        c.matched.push(ev_id);
                    } else {
                        candidates.push(Candidate {
                            profile: owner.id,
                            first_key: key(owner.age),
                            matched: vec![ev_id],
                            holds: &owner.holds,
                            names: &owner.names,
                        });
                    }
                }
                None => fresh.push(ev_id),
            }
        }
        decide(
            policy,
            &DecisionInput {
                event_name: name,
                candidates,
                fresh,
                link_only,
                separations: sep,
            },
        )
    }

    /// An alias event `previousId` → `userId` from a server library (no anonymousId):
    /// the previous id in both its forms, link-only, and the user id.
    fn alias(prev: &str, user: &str) -> (Vec<Identifier>, Vec<Identifier>) {
        let mut link_only = vec![
            id(CookieId, prev),
            id(CustomerId, &format!("segment:{prev}")),
        ];
        link_only.sort();
        let mut event = link_only.clone();
        event.push(id(CustomerId, &format!("segment:{user}")));
        event.sort();
        (event, link_only)
    }

    #[test]
    fn an_alias_joins_the_anonymous_visitor_to_the_signed_up_user() {
        let anonymous = p(1, 1, &[id(CookieId, "anon-1")], &[]);
        let user = p(
            2,
            2,
            &[id(CustomerId, "segment:u-1"), id(Email, "a@x.in")],
            &["asha"],
        );
        let (event, link_only) = alias("anon-1", "u-1");
        let d = run_full(
            &policy(),
            &[anonymous, user],
            &event,
            None,
            &NoSeparations,
            &link_only,
        );
        assert_eq!(
            d.target,
            Target::Existing(pid(1)),
            "the older profile survives"
        );
        assert_eq!(d.absorb, vec![pid(2)]);
        assert_eq!(d.rule, Some(MergeRule::WeakIdentifier));
        // The previous id's other form is nobody's: withheld, never added.
        assert!(d.add.is_empty(), "{:?}", d.add);
        assert_eq!(
            d.withheld,
            vec![(id(CustomerId, "segment:anon-1"), Withheld::LinkOnly)]
        );
    }

    #[test]
    fn an_alias_of_a_visitor_not_seen_yet_gives_the_user_nothing_of_it() {
        let (event, link_only) = alias("anon-2", "u-2");
        let d = run_full(&policy(), &[], &event, None, &NoSeparations, &link_only);
        assert_eq!(d.target, Target::New);
        assert_eq!(d.add, vec![id(CustomerId, "segment:u-2")]);
        assert_eq!(d.withheld.len(), 2);
        assert!(d.withheld.iter().all(|(_, why)| *why == Withheld::LinkOnly));
    }

    #[test]
    fn an_alias_is_held_to_the_same_guards_as_any_link() {
        // The anonymous profile belongs to someone with another e-mail: a cookie does
        // not merge two people with different e-mails, alias or not.
        let anonymous = p(1, 1, &[id(CookieId, "anon-3"), id(Email, "b@x.in")], &[]);
        let user = p(
            2,
            2,
            &[id(CustomerId, "segment:u-3"), id(Email, "a@x.in")],
            &[],
        );
        let (event, link_only) = alias("anon-3", "u-3");
        let d = run_full(
            &policy(),
            &[anonymous, user],
            &event,
            None,
            &NoSeparations,
            &link_only,
        );
        assert!(d.absorb.is_empty());
        assert_eq!(
            d.review.map(|r| r.reason),
            Some(ReviewReason::SharedWeakIdentifier)
        );

        // An earlier user id: two customer ids of one source exceed the limit of one.
        let old = p(1, 1, &[id(CustomerId, "segment:old")], &[]);
        let new = p(2, 2, &[id(CustomerId, "segment:new")], &[]);
        let (event, link_only) = alias("old", "new");
        let d = run_full(
            &policy(),
            &[old, new],
            &event,
            None,
            &NoSeparations,
            &link_only,
        );
        assert!(d.absorb.is_empty());
        assert_eq!(
            d.review.map(|r| r.reason),
            Some(ReviewReason::LimitExceeded)
        );
    }

    fn policy() -> Policy {
        Policy::default()
    }

    fn pid(n: u128) -> ProfileId {
        Uuid::from_u128(n)
    }

    #[test]
    fn nothing_matches_creates_a_profile_with_every_identifier() {
        let e = [id(Email, "a@x.in"), id(CookieId, "c1")];
        let d = run(&policy(), &[], &e, Some("asha"));
        assert_eq!(d.target, Target::New);
        assert_eq!(d.add, e.to_vec());
        assert!(d.absorb.is_empty() && d.review.is_none() && d.withheld.is_empty());
    }

    #[test]
    fn an_event_without_identifiers_creates_an_anonymous_profile() {
        let d = run(&policy(), &[], &[], None);
        assert_eq!(d.target, Target::New);
        assert!(d.add.is_empty());
    }

    #[test]
    fn one_match_attaches_and_adds_new_identifiers() {
        let world = [p(1, 1, &[id(Email, "a@x.in")], &["asha"])];
        let e = [id(Email, "a@x.in"), id(Phone, "+919812345678")];
        let d = run(&policy(), &world, &e, Some("asha"));
        assert_eq!(d.target, Target::Existing(pid(1)));
        assert_eq!(d.add, vec![id(Phone, "+919812345678")]);
        assert!(d.absorb.is_empty() && d.rule.is_none() && d.review.is_none());
    }

    #[test]
    fn two_profiles_merge_into_the_oldest() {
        let world = [
            p(1, 5, &[id(Email, "a@x.in")], &[]),
            p(2, 3, &[id(Phone, "+919812345678")], &[]),
        ];
        let e = [id(Email, "a@x.in"), id(Phone, "+919812345678")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.target, Target::Existing(pid(2)), "profile 2 is older");
        assert_eq!(d.absorb, vec![pid(1)]);
        assert_eq!(d.rule, Some(MergeRule::StrongIdentifier));
        assert_eq!(d.matched.len(), 2);
        assert!(d.review.is_none());
    }

    fn four_profiles() -> (Vec<P>, Vec<Identifier>) {
        let world = vec![
            p(1, 1, &[id(Email, "a@x.in")], &[]),
            p(2, 2, &[id(Phone, "+919812345678")], &[]),
            p(3, 3, &[id(CustomerId, "shop:7")], &[]),
            p(4, 4, &[id(LoyaltyId, "L-9")], &[]),
        ];
        let e = vec![
            id(Email, "a@x.in"),
            id(Phone, "+919812345678"),
            id(CustomerId, "shop:7"),
            id(LoyaltyId, "L-9"),
        ];
        (world, e)
    }

    #[test]
    fn three_profiles_is_the_automatic_boundary() {
        let (world, e) = four_profiles();
        let d = run(&policy(), &world[..3], &e[..3], None);
        assert_eq!(d.target, Target::Existing(pid(1)));
        assert_eq!(d.absorb, vec![pid(2), pid(3)]);
        assert!(d.review.is_none());
    }

    #[test]
    fn four_profiles_raise_a_review_and_attach_to_the_best_match() {
        let (world, e) = four_profiles();
        let d = run(&policy(), &world, &e, None);
        assert!(d.absorb.is_empty(), "nothing merges");
        // Three strong matches tie on priority: the oldest is the best match.
        assert_eq!(d.target, Target::Existing(pid(1)));
        let review = d.review.unwrap();
        assert_eq!(review.reason, ReviewReason::TooManyProfiles);
        let others: BTreeSet<ProfileId> = review.others.iter().map(|o| o.0).collect();
        assert_eq!(others, [pid(2), pid(3), pid(4)].into());
        assert_eq!(d.withheld.len(), 3, "the others keep their identifiers");
    }

    #[test]
    fn the_best_priority_match_wins_when_too_many() {
        // The oldest profile matches only through a cookie: the e-mail match is best.
        let world = vec![
            p(1, 1, &[id(CookieId, "c1")], &[]),
            p(2, 2, &[id(DeviceId, "d1")], &[]),
            p(3, 3, &[id(LoyaltyId, "L-1")], &[]),
            p(4, 4, &[id(Email, "a@x.in")], &[]),
        ];
        let e: Vec<Identifier> = world.iter().flat_map(|p| p.holds.iter().cloned()).collect();
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.target, Target::Existing(pid(4)));
        assert_eq!(d.review.unwrap().reason, ReviewReason::TooManyProfiles);
    }

    #[test]
    fn max_auto_merge_is_configurable() {
        let (world, e) = four_profiles();
        let mut policy = policy();
        policy.max_auto_merge = 4;
        let d = run(&policy, &world, &e, None);
        assert_eq!(d.absorb.len(), 3);
        policy.max_auto_merge = 1;
        let d = run(&policy, &world[..2], &e[..2], None);
        assert!(d.absorb.is_empty());
        assert_eq!(d.review.unwrap().reason, ReviewReason::TooManyProfiles);
    }

    #[test]
    fn a_device_never_joins_two_people_with_different_emails() {
        let world = [
            p(1, 1, &[id(Email, "a@x.in"), id(DeviceId, "d1")], &[]),
            p(2, 2, &[id(Email, "b@x.in")], &[]),
        ];
        let e = [id(Email, "b@x.in"), id(DeviceId, "d1")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.target, Target::Existing(pid(2)), "the e-mail decides");
        assert!(d.absorb.is_empty());
        let review = d.review.unwrap();
        assert_eq!(review.reason, ReviewReason::SharedWeakIdentifier);
        assert_eq!(
            review.others,
            vec![(pid(1), ReviewReason::SharedWeakIdentifier)]
        );
        assert_eq!(
            d.withheld,
            vec![(id(DeviceId, "d1"), Withheld::OwnedElsewhere)]
        );
    }

    #[test]
    fn a_device_with_a_fresh_conflicting_email_starts_a_new_profile() {
        let world = [p(1, 1, &[id(Email, "a@x.in"), id(CookieId, "c1")], &[])];
        let e = [id(Email, "b@x.in"), id(CookieId, "c1")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.target, Target::New);
        assert_eq!(d.add, vec![id(Email, "b@x.in")]);
        assert_eq!(d.review.unwrap().reason, ReviewReason::SharedWeakIdentifier);
    }

    #[test]
    fn a_second_email_on_ones_own_device_joins_when_the_names_agree() {
        let world = [p(
            1,
            1,
            &[id(Email, "a@x.in"), id(CookieId, "c1")],
            &["asha"],
        )];
        let e = [id(Email, "b@x.in"), id(CookieId, "c1")];
        let d = run(&policy(), &world, &e, Some("Asha").map(|_| "asha"));
        assert_eq!(d.target, Target::Existing(pid(1)));
        assert_eq!(d.add, vec![id(Email, "b@x.in")]);
        assert!(d.review.is_none() && d.shared.is_empty());
        // Another name, or none, is someone else on that device.
        for name in [Some("ravi"), None] {
            let d = run(&policy(), &world, &e, name);
            assert_eq!(d.target, Target::New, "{name:?}");
            assert_eq!(d.shared, vec![id(CookieId, "c1")], "{name:?}");
        }
        // Two existing profiles of one name still only meet in a review item, and the
        // device stays usable.
        let world = [
            p(1, 1, &[id(Email, "a@x.in"), id(CookieId, "c1")], &["asha"]),
            p(2, 2, &[id(Email, "b@x.in")], &["asha"]),
        ];
        let d = run(&policy(), &world, &e, Some("asha"));
        assert!(d.absorb.is_empty());
        assert_eq!(d.review.unwrap().reason, ReviewReason::SharedWeakIdentifier);
        assert!(d.shared.is_empty());
    }

    #[test]
    fn a_device_joins_an_anonymous_profile_to_a_known_one() {
        // Browsing before signing up: the cookie profile has no strong identifier.
        let world = [
            p(1, 1, &[id(CookieId, "c1")], &[]),
            p(2, 2, &[id(Email, "a@x.in")], &[]),
        ];
        let e = [id(Email, "a@x.in"), id(CookieId, "c1")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.target, Target::Existing(pid(1)));
        assert_eq!(d.absorb, vec![pid(2)]);
        assert_eq!(d.rule, Some(MergeRule::WeakIdentifier));
        // And a fresh e-mail on an anonymous profile just attaches.
        let d = run(&policy(), &world[..1], &e, None);
        assert_eq!(d.target, Target::Existing(pid(1)));
        assert_eq!(d.add, vec![id(Email, "a@x.in")]);
    }

    #[test]
    fn a_weak_link_between_different_kinds_is_no_conflict() {
        let world = [
            p(1, 1, &[id(Email, "a@x.in"), id(DeviceId, "d1")], &[]),
            p(2, 2, &[id(Phone, "+919812345678")], &[]),
        ];
        let e = [id(Phone, "+919812345678"), id(DeviceId, "d1")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.absorb, vec![pid(2)]);
        assert!(d.review.is_none());
    }

    #[test]
    fn a_weak_link_between_different_loyalty_ids_is_a_conflict() {
        let world = [
            p(1, 1, &[id(LoyaltyId, "L-1"), id(DeviceId, "d1")], &[]),
            p(2, 2, &[id(LoyaltyId, "L-2")], &[]),
        ];
        let e = [id(LoyaltyId, "L-2"), id(DeviceId, "d1")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.review.unwrap().reason, ReviewReason::SharedWeakIdentifier);
    }

    #[test]
    fn strong_links_may_join_different_emails() {
        // One person, two e-mails, linked by a phone.
        let world = [
            p(
                1,
                1,
                &[id(Email, "a@x.in"), id(Phone, "+919812345678")],
                &[],
            ),
            p(2, 2, &[id(Email, "b@x.in")], &[]),
        ];
        let e = [id(Email, "b@x.in"), id(Phone, "+919812345678")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.absorb, vec![pid(2)]);
        assert!(d.review.is_none());
    }

    #[test]
    fn a_merge_over_the_email_limit_needs_review() {
        let world = [
            p(
                1,
                1,
                &[
                    id(Email, "a@x.in"),
                    id(Email, "b@x.in"),
                    id(Phone, "+919812345678"),
                ],
                &[],
            ),
            p(2, 2, &[id(Email, "c@x.in"), id(Email, "d@x.in")], &[]),
        ];
        let e = [id(Email, "c@x.in"), id(Phone, "+919812345678")];
        let d = run(&policy(), &world, &e, None);
        assert!(d.absorb.is_empty());
        assert_eq!(d.review.unwrap().reason, ReviewReason::LimitExceeded);
        let mut relaxed = policy();
        relaxed.limits.emails = 4;
        assert_eq!(run(&relaxed, &world, &e, None).absorb, vec![pid(2)]);
    }

    #[test]
    fn each_limit_applies() {
        use crate::rules::Limits;
        type SetLimit = fn(&mut Limits, u32);
        let cases: [(IdentifierKind, &str, &str, SetLimit); 4] = [
            (Email, "a@x.in", "b@x.in", |l, n| l.emails = n),
            (Phone, "+919812345678", "+919812345679", |l, n| l.phones = n),
            (LoyaltyId, "L-1", "L-2", |l, n| l.loyalty_ids = n),
            (CustomerId, "shop:1", "shop:2", |l, n| {
                l.customer_ids_per_source = n
            }),
        ];
        for (kind, a, b, set) in cases {
            // The event links the two profiles through a customer id of another source
            // and the second profile's own identifier: only the limit can object.
            let world = [
                p(1, 1, &[id(kind, a), id(CustomerId, "link:1")], &[]),
                p(2, 2, &[id(kind, b)], &[]),
            ];
            let e = [id(CustomerId, "link:1"), id(kind, b)];
            let mut strict = policy();
            set(&mut strict.limits, 1);
            let d = run(&strict, &world, &e, None);
            assert!(d.absorb.is_empty(), "{kind}");
            assert_eq!(
                d.review.unwrap().reason,
                ReviewReason::LimitExceeded,
                "{kind}"
            );
            let mut roomy = policy();
            set(&mut roomy.limits, 2);
            assert_eq!(run(&roomy, &world, &e, None).absorb, vec![pid(2)], "{kind}");
        }
    }

    #[test]
    fn a_profile_over_a_limit_still_takes_its_events() {
        // An analyst merged two loyalty members; their bills still attach.
        let world = [p(
            1,
            1,
            &[
                id(LoyaltyId, "L-1"),
                id(LoyaltyId, "L-2"),
                id(Phone, "+919812345678"),
            ],
            &[],
        )];
        let e = [id(LoyaltyId, "L-1"), id(Phone, "+919812345678")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.target, Target::Existing(pid(1)));
        assert!(d.review.is_none());
    }

    #[test]
    fn customer_id_limits_are_per_source() {
        let world = [
            p(
                1,
                1,
                &[id(CustomerId, "shopify:1"), id(Email, "a@x.in")],
                &[],
            ),
            p(2, 2, &[id(CustomerId, "segment:u1")], &[]),
        ];
        let e = [id(CustomerId, "segment:u1"), id(Email, "a@x.in")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.absorb, vec![pid(2)]);
    }

    #[test]
    fn fresh_identifiers_beyond_a_limit_are_withheld() {
        let world = [p(
            1,
            1,
            &[
                id(Email, "a@x.in"),
                id(Email, "b@x.in"),
                id(Email, "c@x.in"),
            ],
            &[],
        )];
        let e = [id(Email, "a@x.in"), id(Email, "d@x.in"), id(CookieId, "c9")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.target, Target::Existing(pid(1)));
        assert_eq!(d.add, vec![id(CookieId, "c9")]);
        assert_eq!(d.withheld, vec![(id(Email, "d@x.in"), Withheld::Limit)]);
        assert!(d.review.is_none(), "withholding is not a merge");
    }

    #[test]
    fn a_family_phone_does_not_merge_people_with_different_names() {
        // The mother's profile holds the family phone; her son checks out with his own
        // e-mail and the family phone.
        let world = [p(
            1,
            1,
            &[id(Phone, "+919812345678"), id(Email, "m@x.in")],
            &["priya"],
        )];
        let e = [id(Email, "son@x.in"), id(Phone, "+919812345678")];
        let d = run(&policy(), &world, &e, Some("rahul"));
        assert_eq!(d.target, Target::New);
        assert_eq!(d.add, vec![id(Email, "son@x.in")]);
        assert_eq!(d.review.unwrap().reason, ReviewReason::NameConflict);
        assert_eq!(
            d.shared,
            vec![id(Phone, "+919812345678")],
            "the family phone is shared"
        );
        // His own profile, when it exists, gets the event.
        let world = [
            p(
                1,
                1,
                &[id(Phone, "+919812345678"), id(Email, "m@x.in")],
                &["priya"],
            ),
            p(2, 2, &[id(Email, "son@x.in")], &["rahul"]),
        ];
        let d = run(&policy(), &world, &e, Some("rahul"));
        assert_eq!(d.target, Target::Existing(pid(2)));
        assert!(d.absorb.is_empty());
        // The same person under a shortened name merges.
        let world = [
            p(1, 1, &[id(Phone, "+919812345678")], &["rajesh"]),
            p(2, 2, &[id(Email, "r@x.in")], &["raj"]),
        ];
        let e = [id(Email, "r@x.in"), id(Phone, "+919812345678")];
        assert_eq!(run(&policy(), &world, &e, Some("raj")).absorb, vec![pid(2)]);
        // With the guard off the family merges.
        let off = policy().with_guards(Guards {
            names: false,
            ..Guards::ALL
        });
        let world = [
            p(1, 1, &[id(Phone, "+919812345678")], &["priya"]),
            p(2, 2, &[id(Email, "son@x.in")], &["rahul"]),
        ];
        let e = [id(Email, "son@x.in"), id(Phone, "+919812345678")];
        assert_eq!(run(&off, &world, &e, Some("rahul")).absorb, vec![pid(2)]);
    }

    #[test]
    fn a_profile_whose_name_fits_comes_before_a_stronger_one_that_clashes() {
        // Rahul's bill carries the family phone (his mother's profile, older, strong)
        // and his own loyalty card: his own profile gets the event.
        let world = [
            p(1, 1, &[id(Phone, "+919812345678")], &["priya"]),
            p(2, 2, &[id(LoyaltyId, "L-7")], &["rahul"]),
        ];
        let e = [id(Phone, "+919812345678"), id(LoyaltyId, "L-7")];
        let d = run(&policy(), &world, &e, Some("rahul"));
        assert_eq!(d.target, Target::Existing(pid(2)));
        assert!(d.absorb.is_empty());
        let review = d.review.unwrap();
        assert_eq!(review.reason, ReviewReason::NameConflict);
        assert_eq!(review.others, vec![(pid(1), ReviewReason::NameConflict)]);
        assert_eq!(d.shared, vec![id(Phone, "+919812345678")]);
    }

    #[test]
    fn each_guard_switches_off_alone() {
        // Shared weak identifier off: the device merges two e-mails.
        let world = [
            p(1, 1, &[id(Email, "a@x.in"), id(DeviceId, "d1")], &[]),
            p(2, 2, &[id(Email, "b@x.in")], &[]),
        ];
        let e = [id(Email, "b@x.in"), id(DeviceId, "d1")];
        let off = policy().with_guards(Guards {
            weak_conflict: false,
            ..Guards::ALL
        });
        let d = run(&off, &world, &e, None);
        assert_eq!(d.absorb, vec![pid(2)]);
        assert_eq!(d.rule, Some(MergeRule::WeakIdentifier));
        assert!(d.review.is_none() && d.shared.is_empty());

        // Limits off: a merge past the e-mail limit happens, and fresh e-mails join.
        let world = [
            p(
                1,
                1,
                &[
                    id(Email, "a@x.in"),
                    id(Email, "b@x.in"),
                    id(Phone, "+919812345678"),
                ],
                &[],
            ),
            p(2, 2, &[id(Email, "c@x.in"), id(Email, "d@x.in")], &[]),
        ];
        let e = [
            id(Email, "c@x.in"),
            id(Phone, "+919812345678"),
            id(Email, "e@x.in"),
        ];
        let off = policy().with_guards(Guards {
            limits: false,
            ..Guards::ALL
        });
        let d = run(&off, &world, &e, None);
        assert_eq!(d.absorb, vec![pid(2)]);
        assert_eq!(d.add, vec![id(Email, "e@x.in")]);
        assert!(d.review.is_none() && d.withheld.is_empty());
    }

    #[test]
    fn an_event_naming_nobody_joins_named_profiles_only_if_they_agree() {
        let world = [
            p(1, 1, &[id(Phone, "+919812345678")], &["priya"]),
            p(2, 2, &[id(LoyaltyId, "L-7")], &["rahul"]),
        ];
        let e = [id(Phone, "+919812345678"), id(LoyaltyId, "L-7")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(
            d.target,
            Target::Existing(pid(1)),
            "the phone is the best match"
        );
        assert_eq!(d.review.unwrap().reason, ReviewReason::NameConflict);
    }

    #[test]
    fn separated_identifiers_never_join_and_raise_no_review() {
        struct Apart(Identifier, Identifier);
        impl Separations for Apart {
            fn separated(&self, a: &[&Identifier], b: &[&Identifier]) -> bool {
                let has = |s: &[&Identifier], x: &Identifier| s.contains(&x);
                (has(a, &self.0) && has(b, &self.1)) || (has(a, &self.1) && has(b, &self.0))
            }
        }
        let world = [
            p(1, 1, &[id(Email, "a@x.in")], &[]),
            p(2, 2, &[id(Phone, "+919812345678")], &[]),
        ];
        let e = [id(Email, "a@x.in"), id(Phone, "+919812345678")];
        let sep = Apart(id(Email, "a@x.in"), id(Phone, "+919812345678"));
        let d = run_sep(&policy(), &world, &e, None, &sep);
        assert_eq!(d.target, Target::Existing(pid(1)));
        assert!(d.absorb.is_empty() && d.review.is_none());
        assert_eq!(
            d.withheld,
            vec![(id(Phone, "+919812345678"), Withheld::OwnedElsewhere)]
        );
    }

    #[test]
    fn guards_off_merges_everything_that_shares_an_identifier() {
        let world = [
            p(1, 1, &[id(Email, "a@x.in"), id(DeviceId, "d1")], &["priya"]),
            p(2, 2, &[id(Email, "b@x.in")], &["rahul"]),
        ];
        let e = [id(Email, "b@x.in"), id(DeviceId, "d1")];
        let d = run(
            &policy().with_guards(Guards::NONE),
            &world,
            &e,
            Some("rahul"),
        );
        assert_eq!(d.absorb, vec![pid(2)]);
        assert_eq!(d.target, Target::Existing(pid(1)));
    }

    #[test]
    fn priorities_order_the_items() {
        // Medium beats weak: the loyalty profile is the best match for a bill.
        let world = [
            p(1, 1, &[id(CookieId, "c1"), id(Email, "a@x.in")], &[]),
            p(2, 2, &[id(LoyaltyId, "L-1"), id(Email, "b@x.in")], &[]),
        ];
        let e = [id(CookieId, "c1"), id(LoyaltyId, "L-1")];
        let d = run(&policy(), &world, &e, None);
        assert_eq!(d.target, Target::Existing(pid(2)));
        assert_eq!(d.review.unwrap().reason, ReviewReason::SharedWeakIdentifier);
    }
}
