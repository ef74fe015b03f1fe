//! The identity engine: graph machinery that applies the rules to an in-memory
//! identity graph. Every rule deciding "same person or not" lives in
//! [`rules`](crate::rules); this module only keeps the graph they are asked about.
//!
//! [`Graph`] holds who owns each identifier, what each live profile holds, which
//! identifiers are suspect or shared, and the analysts' constraints. [`Engine::apply`]
//! takes one event (in canonical order), asks [`rules::decide`](crate::rules::decide),
//! changes the graph and reports an [`Outcome`] the caller persists. The streaming
//! resolver loads the part of the graph an event touches from Postgres; `ctl identity
//! rebuild` and the tests hold the whole graph in memory. Both run this same code.
//!
//! Order independence. The profiles are defined as what canonical-order processing
//! gives, with identifiers that are shared by many people (the
//! [suspect rule](crate::rules::suspect), a property of the whole event set) never
//! linking anything. An event that arrives after a later event already touched its
//! identifiers or profiles is not applied on top: the caller replays the affected
//! region in canonical order ([`Engine::replay`]), and when an identifier turns suspect
//! the region it linked is replayed without it. So one replica, three replicas and a
//! rebuild agree.

use std::collections::{BTreeSet, HashMap};

use domain::Identifier;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{EventKey, Observation, ProfileId, ProfileIds};
use crate::rules::names::{MAX_NAMES, remember_name, remember_names};
use crate::rules::{
    Candidate, Class, DecisionInput, MergeRule, Policy, ReviewReason, Separations, Target,
    Withheld, decide,
};

/// What the graph knows of one identifier.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentifierNode {
    /// The live profile that holds it.
    pub owner: Option<ProfileId>,
    /// Shared by many people (learned from the whole event set): links nothing.
    pub suspect: bool,
    /// Seen joining different people (learned in canonical order from conflicts):
    /// links nothing from then on.
    pub shared: bool,
    /// The latest event (canonical order) that carried it.
    pub last_key: Option<EventKey>,
}

/// What the graph knows of one live profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileNode {
    /// Its first event.
    pub first_key: EventKey,
    /// Its latest event.
    pub last_key: EventKey,
    /// Identifiers it holds.
    pub identifiers: BTreeSet<Identifier>,
    /// First-name keys of its person.
    pub names: BTreeSet<String>,
}

/// Kinds of analyst constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintRule {
    /// The two sides are one person (manual merge, approved review item).
    MustLink,
    /// The two sides are different people (unmerge, rejected review item).
    CannotLink,
}

impl ConstraintRule {
    /// The name stored in Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintRule::MustLink => "must_link",
            ConstraintRule::CannotLink => "cannot_link",
        }
    }
}

/// An analyst's decision about two sets of identifiers. Stored as identifiers, not
/// profile ids, so it survives replays and rebuilds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// Id of the stored constraint.
    pub id: Uuid,
    /// Same person or different people.
    pub rule: ConstraintRule,
    /// One side.
    pub left: BTreeSet<Identifier>,
    /// The other side.
    pub right: BTreeSet<Identifier>,
}

/// The constraints in force.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    list: Vec<Constraint>,
}

impl Constraints {
    /// Builds the set.
    pub fn new(list: Vec<Constraint>) -> Self {
        Self { list }
    }

    /// Adds one.
    pub fn push(&mut self, c: Constraint) {
        if !self.list.iter().any(|x| x.id == c.id) {
            self.list.push(c);
        }
    }

    /// Every constraint.
    pub fn iter(&self) -> impl Iterator<Item = &Constraint> {
        self.list.iter()
    }

    /// Whether any constraint mentions `identifier`.
    pub fn mentions(&self, identifier: &Identifier) -> bool {
        self.list
            .iter()
            .any(|c| c.left.contains(identifier) || c.right.contains(identifier))
    }
}

impl Separations for Constraints {
    fn separated(&self, a: &[&Identifier], b: &[&Identifier]) -> bool {
        let any_in = |side: &BTreeSet<Identifier>, ids: &[&Identifier]| {
            ids.iter().any(|i| side.contains(*i))
        };
        self.list.iter().any(|c| {
            c.rule == ConstraintRule::CannotLink
                && ((any_in(&c.left, a) && any_in(&c.right, b))
                    || (any_in(&c.right, a) && any_in(&c.left, b)))
        })
    }
}

/// The identity graph (or the part of it an operation touches).
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Identifier states.
    pub identifiers: HashMap<Identifier, IdentifierNode>,
    /// Live profiles.
    pub profiles: HashMap<ProfileId, ProfileNode>,
    /// Analysts' constraints.
    pub constraints: Constraints,
}

/// What an absorbed profile held when it was merged away: enough to undo the merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbsorbedProfile {
    /// The absorbed profile (now a tombstone).
    pub profile_id: ProfileId,
    /// The identifiers it held.
    pub identifiers: Vec<Identifier>,
    /// Its first-name keys.
    pub names: Vec<String>,
}

impl AbsorbedProfile {
    /// The snapshot of a live profile.
    pub fn of(profile_id: ProfileId, node: &ProfileNode) -> Self {
        Self {
            profile_id,
            identifiers: node.identifiers.iter().cloned().collect(),
            names: node.names.iter().cloned().collect(),
        }
    }
}

/// Where merged-away profiles went: follows chains of merges to the live survivor.
#[derive(Debug, Clone, Default)]
pub struct Absorptions {
    into: HashMap<ProfileId, ProfileId>,
}

impl Absorptions {
    /// Notes that `merge` absorbed its profiles into its survivor.
    pub fn record(&mut self, merge: &MergeRecord) {
        for a in &merge.absorbed {
            self.into.insert(a.profile_id, merge.survivor);
        }
    }

    /// The profile `p` ended up in (itself if it was never absorbed).
    pub fn final_of(&self, mut p: ProfileId) -> ProfileId {
        // Bounded: a chain never revisits a profile, so it is at most as long as the map.
        for _ in 0..=self.into.len() {
            match self.into.get(&p) {
                Some(next) => p = *next,
                None => break,
            }
        }
        p
    }
}

/// One merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRecord {
    /// The profile that survives (the oldest).
    pub survivor: ProfileId,
    /// The identifiers the survivor held before the merge.
    pub survivor_identifiers: Vec<Identifier>,
    /// What each absorbed profile held.
    pub absorbed: Vec<AbsorbedProfile>,
    /// The rule that merged them, as `merge_history.rule` records it.
    pub rule: MergeRule,
    /// The identifiers that linked them.
    pub matched: Vec<Identifier>,
    /// The event that triggered it.
    pub trigger_event_id: Option<Uuid>,
}

/// A review item raised by an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRecord {
    /// The main reason.
    pub reason: ReviewReason,
    /// The event's profile first, then the others.
    pub profiles: Vec<ProfileId>,
    /// Each other profile's reason.
    pub reasons: Vec<(ProfileId, ReviewReason)>,
    /// The event that raised it.
    pub trigger_event_id: Uuid,
    /// The event's identifiers (the evidence).
    pub identifiers: Vec<Identifier>,
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The event.
    pub event_id: Uuid,
    /// The profile it now belongs to.
    pub profile_id: ProfileId,
    /// Whether that profile was created by this event.
    pub created: bool,
    /// Merges performed (the event's own, then any analyst must-links it completed).
    pub merges: Vec<MergeRecord>,
    /// Identifiers the profile gained.
    pub added: Vec<Identifier>,
    /// Identifiers of the event its profile does not hold, and why.
    pub withheld: Vec<(Identifier, Withheld)>,
    /// A review item, when raised.
    pub review: Option<ReviewRecord>,
    /// Live profiles the decision read but the event did not join (it was refused
    /// against them). Their `last_key` now counts this event, because an earlier event
    /// changing them could change this decision: an event arriving later but in time
    /// before it must replay, not apply in place. Writers rewrite them.
    pub consulted: Vec<ProfileId>,
}

/// What a witness of a late event must show ([`Engine::settled_late`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The event's linking identifiers (usable, not suspect), all held by one live
    /// profile: the witness carried every one.
    pub linking: Vec<Identifier>,
    /// The first-name key the event states (with the name guard on): the witness stated
    /// the same key.
    pub name: Option<String>,
}

/// Why a late event cannot be applied in place ([`Engine::settled_late`]) and replays
/// its region. Ordered: when several apply, the first is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unsettled {
    /// Its linking identifiers belong to more than one live profile (it merges them, or
    /// is refused by one of them).
    Merging,
    /// It carries an identifier no live profile holds (it would add it to its profile).
    Fresh,
    /// It links through a shared identifier or an order reference.
    Shared,
    /// It carries a link-only identifier.
    LinkOnly,
    /// It states a first name, and the name guard is on.
    Named,
    /// An analyst's constraint names an identifier of its profile.
    Constrained,
    /// Settled in the graph, but no witness is stored: no earlier event of its profile
    /// carried all its linking identifiers and was refused nothing.
    Unwitnessed,
}

impl Unsettled {
    /// Every reason, in order.
    pub const ALL: [Unsettled; 7] = [
        Unsettled::Merging,
        Unsettled::Fresh,
        Unsettled::Shared,
        Unsettled::LinkOnly,
        Unsettled::Named,
        Unsettled::Constrained,
        Unsettled::Unwitnessed,
    ];

    /// The name the merger's metrics and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Unsettled::Merging => "merging",
            Unsettled::Fresh => "fresh",
            Unsettled::Shared => "shared",
            Unsettled::LinkOnly => "link_only",
            Unsettled::Named => "named",
            Unsettled::Constrained => "constrained",
            Unsettled::Unwitnessed => "unwitnessed",
        }
    }
}

/// Applies the decision rule to a graph.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Thresholds, limits and guards.
    pub policy: Policy,
    /// How the profiles it creates are named: the cut-over stored in the database
    /// ([`ProfileIds`]).
    pub ids: ProfileIds,
}

impl Engine {
    /// An engine with `policy`, naming new profiles by `ids` (what the database stores:
    /// [`load_profile_ids`](crate::resolver::load_profile_ids); without a database,
    /// [`ProfileIds::TIME_ORDERED`], as a database created empty has).
    pub fn new(policy: Policy, ids: ProfileIds) -> Self {
        Self { policy, ids }
    }

    /// Whether applying `obs` now gives what canonical order gives: nothing it
    /// touches (its non-suspect identifiers and their profiles) has seen a later event.
    pub fn in_order(&self, graph: &Graph, obs: &Observation) -> bool {
        self.policy.usable(&obs.identifiers).iter().all(|id| {
            let Some(node) = graph.identifiers.get(id) else {
                return true;
            };
            if self.suspect(node) {
                return true;
            }
            node.last_key.is_none_or(|k| k < obs.key)
                && node
                    .owner
                    .and_then(|p| graph.profiles.get(&p))
                    .is_none_or(|p| p.last_key < obs.key)
        })
    }

    /// For a late event (see [`Engine::in_order`]) that may be applied in place instead
    /// of replaying its region: what its witness must show ([`Settled`]), when the graph
    /// alone allows it — the event links only through identifiers one live profile holds
    /// (its *linking identifiers*: usable, not suspect), none shared, none an order
    /// reference, no analyst's constraint names anything that profile holds, it carries
    /// no link-only identifier, and a first name it states (with the name guard on) is
    /// one that profile remembers, with fewer than [`MAX_NAMES`] names. Besides those it
    /// may carry identifiers no event ever carried (no state, or no owner, no latest
    /// event, not shared) that have no [`Class`] (order references, cookies, devices)
    /// and no constraint names: it adds them to its profile, now as in canonical order,
    /// and no decision in between can have read them — the rule reads what a profile
    /// holds only by class (limits, the weak-identifier guard) and through constraints.
    /// A merge's snapshot of what its profiles held (`merge_history`) may then lack
    /// them, a record of what that write saw.
    ///
    /// The caller must still find a *witness* (see `docs/identity.md`, "Late events
    /// applied in place"): a stored event earlier in canonical order that carried every
    /// linking identifier, stated the same first name (if the late event states one) and
    /// was refused nothing. Its existence proves that, in canonical order, one profile
    /// held all of them when the late event occurred (an event refused nothing leaves
    /// every identifier it links by on its profile, and only merges move identifiers, all
    /// of a profile's together) and remembered that name (the witness's own name was
    /// remembered: a profile taking an event fits its name, and with fewer than
    /// [`MAX_NAMES`] names today its lineage always had room and never dropped one), so
    /// the event attaches to that profile's lineage, adds nothing, merges nothing and
    /// raises nothing: the graph changes only by keys that no later decision reads, and
    /// every later event decides as before.
    ///
    /// When it may not, the error says why (the first of [`Unsettled`]'s reasons, in
    /// their order, that applies): what the merger counts per step.
    pub fn settled_late(&self, graph: &Graph, obs: &Observation) -> Result<Settled, Unsettled> {
        let mut holder: Option<ProfileId> = None;
        let mut linking = Vec::new();
        let mut why: Vec<Unsettled> = Vec::new();
        for id in self.policy.usable(&obs.identifiers) {
            let known = graph.identifiers.get(&id);
            if known.is_some_and(|n| self.suspect(n)) {
                continue;
            }
            let Some((node, owner)) = known.and_then(|n| Some((n, n.owner?))) else {
                // Never carried by any event, of no class (no rule reads it in what a
                // profile holds) and named by no constraint: the event adds it, now as
                // in canonical order, and no decision in between could have seen it.
                let unseen = known.is_none_or(|n| n.last_key.is_none() && !n.shared);
                if !unseen || Class::of(&id).is_some() || graph.constraints.mentions(&id) {
                    why.push(Unsettled::Fresh);
                }
                continue;
            };
            if node.shared || id.is_order_reference() {
                why.push(Unsettled::Shared);
            }
            if holder.is_some_and(|h| h != owner) {
                why.push(Unsettled::Merging);
            }
            holder = Some(owner);
            linking.push(id);
        }
        if !obs.link_only.is_empty() {
            why.push(Unsettled::LinkOnly);
        }
        let Some(profile) = holder.and_then(|h| graph.profiles.get(&h)) else {
            return Err(why.into_iter().min().unwrap_or(Unsettled::Fresh));
        };
        // A stated first name: its profile must remember it, with room for more (so no
        // name was ever dropped on its lineage), and the witness must state it too.
        let name = obs.name.as_ref().filter(|_| self.policy.guards.names);
        if name.is_some_and(|n| !profile.names.contains(n) || profile.names.len() >= MAX_NAMES) {
            why.push(Unsettled::Named);
        }
        if profile
            .identifiers
            .iter()
            .any(|id| graph.constraints.mentions(id))
        {
            why.push(Unsettled::Constrained);
        }
        match why.into_iter().min() {
            Some(w) => Err(w),
            None => Ok(Settled {
                linking,
                name: name.cloned(),
            }),
        }
    }

    fn suspect(&self, node: &IdentifierNode) -> bool {
        self.policy.guards.suspect && node.suspect
    }

    /// Applies one event. The graph must hold every identifier of the event that is
    /// known, and every live profile owning one of them (with all it holds).
    pub fn apply(&self, graph: &mut Graph, obs: &Observation) -> Outcome {
        let usable = self.policy.usable(&obs.identifiers);
        let mut suspects = Vec::new();
        let mut owned: Vec<(ProfileId, &Identifier)> = Vec::new();
        let mut fresh: Vec<&Identifier> = Vec::new();
        for id in &usable {
            let node = graph.identifiers.entry(id.clone()).or_default();
            if self.suspect(node) {
                suspects.push((id.clone(), Withheld::Suspect));
                continue;
            }
            if node.shared {
                suspects.push((id.clone(), Withheld::Shared));
                continue;
            }
            match node.owner {
                Some(p) if graph.profiles.contains_key(&p) => owned.push((p, id)),
                Some(p) => {
                    // A dangling owner means the caller loaded too little; resolving as
                    // if unowned would silently split a person, so stop loudly in tests.
                    debug_assert!(false, "identifier {id} owned by unloaded profile {p}");
                    fresh.push(id);
                }
                None => fresh.push(id),
            }
        }
        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        for (p, id) in &owned {
            if let Some(c) = candidates.iter_mut().find(|c| c.profile == *p) {
                c.matched.push(id);
                continue;
            }
            let node = &graph.profiles[p];
            candidates.push(Candidate {
                profile: *p,
                first_key: node.first_key,
                matched: vec![id],
                holds: &node.identifiers,
                names: &node.names,
            });
        }
        let decision = decide(
            &self.policy,
            &DecisionInput {
                event_name: obs.name.as_deref(),
                candidates,
                fresh,
                link_only: &obs.link_only,
                separations: &graph.constraints,
            },
        );

        for id in &decision.shared {
            graph.identifiers.entry(id.clone()).or_default().shared = true;
        }
        let mut merges = Vec::new();
        let (target, created) = match decision.target {
            Target::New => {
                let id = self.ids.profile_id(obs.key.event_id);
                graph.profiles.insert(
                    id,
                    ProfileNode {
                        first_key: obs.key,
                        last_key: obs.key,
                        identifiers: BTreeSet::new(),
                        names: BTreeSet::new(),
                    },
                );
                (id, true)
            }
            Target::Existing(survivor) => {
                if let Some(rule) = decision.rule {
                    merges.push(merge_into(
                        graph,
                        survivor,
                        &decision.absorb,
                        rule,
                        decision.matched.clone(),
                        Some(obs.key.event_id),
                    ));
                }
                (survivor, false)
            }
        };
        for id in &decision.add {
            let node = graph.identifiers.entry(id.clone()).or_default();
            node.owner = Some(target);
        }
        {
            let profile = graph.profiles.get_mut(&target).expect("target exists");
            profile.identifiers.extend(decision.add.iter().cloned());
            if let Some(name) = &obs.name {
                remember_name(&mut profile.names, name);
            }
            profile.last_key = profile.last_key.max(obs.key);
            profile.first_key = profile.first_key.min(obs.key);
        }
        for id in &usable {
            let node = graph.identifiers.entry(id.clone()).or_default();
            node.last_key = Some(node.last_key.map_or(obs.key, |k| k.max(obs.key)));
        }
        merges.extend(self.complete_must_links(graph, target, Some(obs.key.event_id)));
        let mut absorbed = Absorptions::default();
        merges.iter().for_each(|m| absorbed.record(m));
        let profile_id = absorbed.final_of(target);

        let mut consulted: Vec<ProfileId> = owned
            .iter()
            .map(|(p, _)| absorbed.final_of(*p))
            .filter(|p| *p != profile_id)
            .collect();
        consulted.sort();
        consulted.dedup();
        consulted.retain(|p| match graph.profiles.get_mut(p) {
            Some(node) => {
                node.last_key = node.last_key.max(obs.key);
                true
            }
            None => false,
        });
        let mut withheld = decision.withheld;
        withheld.extend(suspects);
        withheld.sort();
        let review = decision.review.map(|r| {
            let mut profiles = vec![profile_id];
            profiles.extend(r.others.iter().map(|o| o.0).filter(|p| *p != profile_id));
            ReviewRecord {
                reason: r.reason,
                profiles,
                reasons: r.others,
                trigger_event_id: obs.key.event_id,
                identifiers: usable.clone(),
            }
        });
        Outcome {
            event_id: obs.key.event_id,
            profile_id,
            created,
            merges,
            added: decision.add,
            withheld,
            review,
            consulted,
        }
    }

    /// Merges, into `profile`, every live profile an analyst's must-link ties to it.
    /// The older profile survives. Returns the merges (possibly none).
    pub fn complete_must_links(
        &self,
        graph: &mut Graph,
        profile: ProfileId,
        trigger: Option<Uuid>,
    ) -> Vec<MergeRecord> {
        let mut merges = Vec::new();
        let mut current = profile;
        while let Some(node) = graph.profiles.get(&current) {
            let mut partner = None;
            for c in graph.constraints.iter() {
                if c.rule != ConstraintRule::MustLink {
                    continue;
                }
                let here_left = c.left.iter().any(|i| node.identifiers.contains(i));
                let here_right = c.right.iter().any(|i| node.identifiers.contains(i));
                let other_side = match (here_left, here_right) {
                    (true, false) => &c.right,
                    (false, true) => &c.left,
                    _ => continue,
                };
                partner = other_side
                    .iter()
                    .filter_map(|i| graph.identifiers.get(i).and_then(|n| n.owner))
                    .find(|p| *p != current && graph.profiles.contains_key(p));
                if partner.is_some() {
                    break;
                }
            }
            let Some(other) = partner else { break };
            let (survivor, absorbed) = older_first(graph, current, other);
            merges.push(merge_into(
                graph,
                survivor,
                &[absorbed],
                MergeRule::Manual,
                Vec::new(),
                trigger,
            ));
            current = survivor;
        }
        merges
    }

    /// Merges `profiles` by hand (analyst decision): the oldest survives, guards do not
    /// apply. Returns the merge, or `None` when fewer than two are live.
    pub fn merge_manually(
        &self,
        graph: &mut Graph,
        profiles: &[ProfileId],
        rule: MergeRule,
    ) -> Option<MergeRecord> {
        let mut live: Vec<ProfileId> = profiles
            .iter()
            .copied()
            .filter(|p| graph.profiles.contains_key(p))
            .collect();
        live.sort_by_key(|p| (graph.profiles[p].first_key, *p));
        live.dedup();
        if live.len() < 2 {
            return None;
        }
        let survivor = live[0];
        Some(merge_into(
            graph,
            survivor,
            &live[1..],
            rule,
            Vec::new(),
            None,
        ))
    }

    /// Replays `events` (the complete event set of a closed region: every event of the
    /// region's profiles, plus any new one) in canonical order. First removes the
    /// region's profiles and clears ownership of every identifier they held or the
    /// events carry, so the replay starts from nothing. Returns one outcome per event,
    /// in canonical order.
    pub fn replay(
        &self,
        graph: &mut Graph,
        region: &BTreeSet<ProfileId>,
        mut events: Vec<Observation>,
    ) -> Vec<Outcome> {
        events.sort_by_key(|o| o.key);
        events.dedup_by_key(|o| o.key);
        for p in region {
            if let Some(node) = graph.profiles.remove(p) {
                for id in node.identifiers {
                    if let Some(n) = graph.identifiers.get_mut(&id) {
                        n.owner = None;
                    }
                }
            }
        }
        for obs in &events {
            for id in &obs.identifiers {
                if let Some(n) = graph.identifiers.get_mut(id) {
                    if n.owner
                        .is_some_and(|o| region.contains(&o) || !graph.profiles.contains_key(&o))
                    {
                        n.owner = None;
                    }
                    // Learned from these very events: the replay learns it again (or not).
                    // Not its latest event: that is the latest of every event that carried
                    // it, and a suspect or refused identifier is carried by events outside
                    // the region too, which the replay does not re-apply (the region's own
                    // events only raise it again to what it was).
                    n.shared = false;
                }
            }
        }
        events.iter().map(|obs| self.apply(graph, obs)).collect()
    }
}

fn older_first(graph: &Graph, a: ProfileId, b: ProfileId) -> (ProfileId, ProfileId) {
    let ka = (graph.profiles[&a].first_key, a);
    let kb = (graph.profiles[&b].first_key, b);
    if ka <= kb { (a, b) } else { (b, a) }
}

/// Moves everything `absorbed` hold into `survivor` and drops them from the graph.
fn merge_into(
    graph: &mut Graph,
    survivor: ProfileId,
    absorbed: &[ProfileId],
    rule: MergeRule,
    matched: Vec<Identifier>,
    trigger: Option<Uuid>,
) -> MergeRecord {
    let survivor_identifiers: Vec<Identifier> = graph.profiles[&survivor]
        .identifiers
        .iter()
        .cloned()
        .collect();
    let mut snapshots = Vec::new();
    for a in absorbed {
        let Some(node) = graph.profiles.remove(a) else {
            continue;
        };
        for id in &node.identifiers {
            graph.identifiers.entry(id.clone()).or_default().owner = Some(survivor);
        }
        snapshots.push(AbsorbedProfile::of(*a, &node));
        let s = graph.profiles.get_mut(&survivor).expect("survivor is live");
        s.identifiers.extend(node.identifiers);
        remember_names(&mut s.names, node.names);
        s.first_key = s.first_key.min(node.first_key);
        s.last_key = s.last_key.max(node.last_key);
    }
    MergeRecord {
        survivor,
        survivor_identifiers,
        absorbed: snapshots,
        rule,
        matched,
        trigger_event_id: trigger,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::hashed_profile_id;
    use chrono::{TimeZone, Utc};
    use domain::IdentifierKind::{self, *};

    fn id(kind: IdentifierKind, v: &str) -> Identifier {
        Identifier::parse(kind, v, "IN").unwrap()
    }

    fn obs(n: i64, ids: &[Identifier], name: Option<&str>) -> Observation {
        Observation {
            key: EventKey {
                occurred_at: Utc.timestamp_opt(1_700_000_000 + n, 0).unwrap(),
                event_id: Uuid::from_u128(n as u128),
            },
            identifiers: ids.to_vec(),
            name: name.map(str::to_owned),
            link_only: Vec::new(),
        }
    }

    #[test]
    fn apply_creates_attaches_and_merges() {
        let engine = Engine::new(Policy::default(), ProfileIds::TIME_ORDERED);
        let mut g = Graph::default();
        let a = engine.apply(
            &mut g,
            &obs(1, &[id(Email, "asha@mail.in"), id(CookieId, "c1")], None),
        );
        assert!(a.created);
        assert_eq!(a.profile_id, hashed_profile_id(Uuid::from_u128(1)));
        let b = engine.apply(&mut g, &obs(2, &[id(Phone, "+919812345678")], None));
        assert!(b.created);
        let c = engine.apply(
            &mut g,
            &obs(
                3,
                &[id(Phone, "+919812345678"), id(Email, "asha@mail.in")],
                None,
            ),
        );
        assert_eq!(c.profile_id, a.profile_id, "the older profile survives");
        assert_eq!(c.merges.len(), 1);
        assert_eq!(c.merges[0].absorbed[0].profile_id, b.profile_id);
        assert_eq!(
            c.merges[0].absorbed[0].identifiers,
            vec![id(Phone, "+919812345678")]
        );
        assert_eq!(g.profiles.len(), 1);
        assert_eq!(
            g.identifiers[&id(Phone, "+919812345678")].owner,
            Some(a.profile_id)
        );
        assert_eq!(g.profiles[&a.profile_id].identifiers.len(), 3);
    }

    #[test]
    fn junk_never_links() {
        let engine = Engine::new(Policy::default(), ProfileIds::TIME_ORDERED);
        let mut g = Graph::default();
        let a = engine.apply(
            &mut g,
            &obs(1, &[id(Email, "test@test.com"), id(LoyaltyId, "L-1")], None),
        );
        let b = engine.apply(
            &mut g,
            &obs(2, &[id(Email, "test@test.com"), id(LoyaltyId, "L-2")], None),
        );
        assert_ne!(a.profile_id, b.profile_id);
        assert!(!g.identifiers.contains_key(&id(Email, "test@test.com")));
    }

    #[test]
    fn suspect_identifiers_link_nothing() {
        let engine = Engine::new(Policy::default(), ProfileIds::TIME_ORDERED);
        let mut g = Graph::default();
        let counter = id(Phone, "+918040001234");
        g.identifiers.insert(
            counter.clone(),
            IdentifierNode {
                suspect: true,
                ..Default::default()
            },
        );
        let a = engine.apply(
            &mut g,
            &obs(1, &[counter.clone(), id(LoyaltyId, "L-1")], None),
        );
        let b = engine.apply(&mut g, &obs(2, std::slice::from_ref(&counter), None));
        assert_ne!(
            a.profile_id, b.profile_id,
            "a bill with only the counter phone is nobody's"
        );
        assert_eq!(a.withheld, vec![(counter.clone(), Withheld::Suspect)]);
        assert!(g.identifiers[&counter].owner.is_none());

        // With the suspect guard off, the counter phone links like any phone.
        let engine = Engine::new(
            Policy::default().with_guards(crate::rules::Guards {
                suspect: false,
                ..crate::rules::Guards::ALL
            }),
            ProfileIds::TIME_ORDERED,
        );
        let mut g = Graph::default();
        g.identifiers.insert(
            counter.clone(),
            IdentifierNode {
                suspect: true,
                ..Default::default()
            },
        );
        let a = engine.apply(
            &mut g,
            &obs(1, &[counter.clone(), id(LoyaltyId, "L-1")], None),
        );
        let b = engine.apply(&mut g, &obs(2, std::slice::from_ref(&counter), None));
        assert_eq!(a.profile_id, b.profile_id);
    }

    #[test]
    fn shared_identifiers_link_nothing_once_learned() {
        // Rahul's checkout with his mother's phone marks the phone shared: a later bill
        // carrying only that phone stands alone.
        let engine = Engine::new(Policy::default(), ProfileIds::TIME_ORDERED);
        let mut g = Graph::default();
        let family = id(Phone, "+919812345678");
        let mother = engine.apply(
            &mut g,
            &obs(
                1,
                &[family.clone(), id(Email, "priya@mail.in")],
                Some("priya"),
            ),
        );
        let son = engine.apply(
            &mut g,
            &obs(
                2,
                &[family.clone(), id(Email, "rahul@mail.in")],
                Some("rahul"),
            ),
        );
        assert_ne!(son.profile_id, mother.profile_id);
        assert!(g.identifiers[&family].shared);
        let later = engine.apply(&mut g, &obs(3, std::slice::from_ref(&family), None));
        assert!(later.created, "the shared phone joins nobody");
        assert_eq!(later.withheld, vec![(family.clone(), Withheld::Shared)]);
    }

    #[test]
    fn must_links_merge_when_both_sides_exist() {
        let engine = Engine::new(Policy::default(), ProfileIds::TIME_ORDERED);
        let mut g = Graph::default();
        g.constraints.push(Constraint {
            id: Uuid::from_u128(9),
            rule: ConstraintRule::MustLink,
            left: [id(Email, "asha@mail.in")].into(),
            right: [id(Email, "bina@mail.in")].into(),
        });
        let a = engine.apply(&mut g, &obs(1, &[id(Email, "asha@mail.in")], None));
        let b = engine.apply(&mut g, &obs(2, &[id(Email, "bina@mail.in")], None));
        assert_eq!(b.profile_id, a.profile_id);
        assert_eq!(b.merges[0].rule, MergeRule::Manual);
        assert_eq!(g.profiles.len(), 1);
    }

    #[test]
    fn in_order_detects_late_events() {
        let engine = Engine::new(Policy::default(), ProfileIds::TIME_ORDERED);
        let mut g = Graph::default();
        engine.apply(&mut g, &obs(5, &[id(Email, "asha@mail.in")], None));
        assert!(engine.in_order(&g, &obs(6, &[id(Email, "asha@mail.in")], None)));
        assert!(!engine.in_order(&g, &obs(4, &[id(Email, "asha@mail.in")], None)));
        assert!(engine.in_order(&g, &obs(4, &[id(Email, "other@mail.in")], None)));
    }

    #[test]
    fn replay_restores_canonical_order() {
        let engine = Engine::new(Policy::default(), ProfileIds::TIME_ORDERED);
        let events = vec![
            obs(1, &[id(CookieId, "c1")], None),
            obs(2, &[id(CookieId, "c1"), id(Email, "asha@mail.in")], None),
            obs(
                3,
                &[id(Email, "asha@mail.in"), id(Phone, "+919812345678")],
                None,
            ),
        ];
        let mut canonical = Graph::default();
        let expected: Vec<ProfileId> = events
            .iter()
            .map(|o| engine.apply(&mut canonical, o))
            .map(|o| o.profile_id)
            .collect();
        // Apply 3 and 2 first, then replay the whole region with 1.
        let mut g = Graph::default();
        let o3 = engine.apply(&mut g, &events[2]);
        engine.apply(&mut g, &events[1]);
        assert!(!engine.in_order(&g, &events[0]) || g.profiles.len() == 1);
        let region: BTreeSet<ProfileId> = g.profiles.keys().copied().collect();
        let outcomes = engine.replay(&mut g, &region, events.clone());
        assert_ne!(o3.profile_id, expected[2]);
        let last = outcomes.last().unwrap().profile_id;
        assert_eq!(last, expected[0], "the cookie's event names the profile");
        assert_eq!(g.profiles.len(), 1);
        assert_eq!(g.profiles[&last], canonical.profiles[&expected[0]]);
    }
}
