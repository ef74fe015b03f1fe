//! What one write of the resolver changes, as plain data: the [`Delta`].
//!
//! The resolver changes Postgres in three situations — a *forward step* (a batch of
//! events applied in order on the neighbourhood it loaded), a *region replay* (late
//! events, an identifier turning suspect, an analyst's decision) and a *rebuild* (every
//! event). Each computes its delta here, by pure code from the engine's outcomes and
//! the graph they leave, and hands it to the one set-based write
//! (`resolver::store::write`). So a change to how rows are written (bigger batches,
//! `COPY`, fewer round trips) is made once, in that function, and a change to what a
//! situation writes is made here, where it can be tested without a database.
//!
//! A delta lists, for one transaction: the profile rows to create, merged-away
//! profiles to tombstone, live profiles to rewrite whole, events' profiles, the
//! identifier index (holdings), what the merger learned of identifiers (latest event,
//! partners, suspect, shared), refused links, merge history, review items, orders'
//! profiles and the prediction requests to queue — plus which of the derived tables a
//! replay or rebuild rewrites from scratch first ([`Rewrite`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::{Identifier, NormalizedEvent, Source};
use uuid::Uuid;

use crate::engine::{
    AbsorbedProfile, Absorptions, Graph, IdentifierNode, MergeRecord, Outcome, ProfileNode,
    ReviewRecord,
};
use crate::facts::ProfileFacts;
use crate::memory::MemoryResolver;
use crate::model::{EventKey, ProfileId, ProfileIds};
use crate::redirect::{self, Retirement};
use crate::rules::{MergeRule, PartnerSet, Withheld};

/// An identifier's entry in the identifier index, aggregated over its sightings on
/// its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// The profile holding it.
    pub profile: ProfileId,
    /// Source of the first sighting.
    pub source: Source,
    /// First sighting.
    pub first_seen: DateTime<Utc>,
    /// Latest sighting.
    pub last_seen: DateTime<Utc>,
    /// Sightings counted.
    pub count: i64,
}

/// What the merger writes about one identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierState {
    /// The latest event carrying it.
    pub last_key: EventKey,
    /// Its partners (the suspect rule's evidence).
    pub partners: PartnerSet,
    /// Suspect (sticky: a write never clears it).
    pub suspect: bool,
    /// Shared (as recomputed: a replay may clear it).
    pub shared: bool,
}

impl IdentifierState {
    /// The state of a graph node; `None` for an identifier no event has carried.
    pub fn of(node: &IdentifierNode, partners: PartnerSet) -> Option<Self> {
        Some(Self {
            last_key: node.last_key?,
            partners,
            suspect: node.suspect,
            shared: node.shared,
        })
    }
}

/// A live profile, written whole.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    /// The profile.
    pub id: ProfileId,
    /// What the graph knows of it.
    pub node: ProfileNode,
    /// Its Customer 360 facts.
    pub facts: ProfileFacts,
}

/// An event carrying an identifier its profile does not hold (what replay regions
/// follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLink {
    /// The identifier.
    pub identifier: Identifier,
    /// The event.
    pub event_id: Uuid,
    /// Why its profile does not hold it.
    pub reason: Withheld,
}

/// An order and the profile holding its order reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderOwner {
    /// The order's source.
    pub source: Source,
    /// The order id within the source.
    pub order_id: String,
    /// The profile it belongs to.
    pub profile: ProfileId,
}

/// Derived rows a delta replaces wholesale before writing its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Nothing: a forward step only adds and updates.
    Nothing,
    /// A replayed region: the identifier-index rows of its old profiles and of the
    /// identifiers that just turned suspect, and the refused links of its events. The
    /// index rows are not deleted wholesale: rows no holding names go, the holdings
    /// replace the rest, and a row equal to its holding is not written.
    Region {
        /// The region's profiles before the replay.
        profiles: Vec<ProfileId>,
        /// Identifiers that turned suspect.
        suspects: Vec<Identifier>,
        /// Every event of the region.
        events: Vec<Uuid>,
    },
    /// Everything the resolver derives (a rebuild): the identifier index, identifier
    /// states and refused links.
    Everything,
}

/// Everything one write changes. Profile ids in it are final (merged-away profiles
/// already followed to their survivors).
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Derived rows rewritten from scratch first.
    pub rewrite: Rewrite,
    /// Profile rows that must exist before tombstones point at them (every profile
    /// created, even one absorbed at once).
    pub created: Vec<ProfileId>,
    /// Profiles merged away: `(absorbed, survivor)`. The write also re-points every
    /// tombstone that pointed at an absorbed profile (no pointer targets a tombstone).
    pub tombstones: Vec<(ProfileId, ProfileId)>,
    /// Existing tombstones to re-point, `(tombstone, live profile)`: those whose
    /// creating event changed profile (see [`crate::redirect`]). Ids that are not
    /// tombstones are ignored by the write.
    pub repoint: Vec<(ProfileId, ProfileId)>,
    /// Live profiles, rewritten whole; their order aggregates are recomputed.
    pub profiles: Vec<ProfileRow>,
    /// Events and the profile each belongs to.
    pub assignment: Vec<(Uuid, ProfileId)>,
    /// The identifier index, sorted by identifier.
    pub holdings: Vec<(Identifier, Holding)>,
    /// What the merger learned of identifiers, sorted by identifier.
    pub identifiers: Vec<(Identifier, IdentifierState)>,
    /// Refused links (suspect identifiers are never recorded: they link nothing).
    pub refused: Vec<RefusedLink>,
    /// Merge history rows.
    pub merges: Vec<MergeRecord>,
    /// Who made the merges (`merge_history.actor`).
    pub actor: String,
    /// Review items, each over at least two distinct profiles.
    pub reviews: Vec<ReviewRecord>,
    /// Orders and their profiles.
    pub orders: Vec<OrderOwner>,
    /// Profiles whose predictions are due again.
    pub predictions: Vec<ProfileId>,
}

impl Delta {
    /// The live profiles it rewrites.
    pub fn changed(&self) -> impl Iterator<Item = ProfileId> + '_ {
        self.profiles.iter().map(|p| p.id)
    }

    /// The profiles it turns into tombstones.
    pub fn removed(&self) -> impl Iterator<Item = ProfileId> + '_ {
        self.tombstones.iter().map(|(p, _)| *p)
    }

    /// Leaves out the live profiles that come out exactly as `before` holds them (node
    /// and facts as stored): a region replay recomputes every profile of its region,
    /// and most come out unchanged. Such a profile's row is not rewritten, it asks for
    /// no new prediction and no `profiles.changes` entry, and its Customer 360 document
    /// is not rebuilt. A profile that gained or lost an event, an identifier, a name or
    /// a fact differs and stays.
    pub fn without_unchanged(&mut self, before: &HashMap<ProfileId, (ProfileNode, ProfileFacts)>) {
        let same: HashSet<ProfileId> = self
            .profiles
            .iter()
            .filter(|r| {
                before
                    .get(&r.id)
                    .is_some_and(|(node, facts)| *node == r.node && *facts == r.facts)
            })
            .map(|r| r.id)
            .collect();
        if same.is_empty() {
            return;
        }
        self.profiles.retain(|r| !same.contains(&r.id));
        self.created.retain(|p| !same.contains(p));
        self.predictions.retain(|p| !same.contains(p));
    }
}

/// What events add to their profiles, accumulated one event at a time: Customer 360
/// facts, identifier sightings and orders' owners. Shared by all three situations.
#[derive(Debug, Default)]
pub struct Effects {
    facts: HashMap<ProfileId, ProfileFacts>,
    holdings: HashMap<Identifier, Holding>,
    orders: Vec<OrderOwner>,
}

impl Effects {
    /// Starts from facts already known (a forward step's loaded profiles).
    pub fn with_facts(facts: HashMap<ProfileId, ProfileFacts>) -> Self {
        Self {
            facts,
            ..Self::default()
        }
    }

    /// Records that `event` (whose usable identifiers are `usable`) belongs to
    /// `profile` in `graph` as it stands: the event's facts, a sighting of each of its
    /// identifiers the profile holds, and its order, owned by whoever holds the order
    /// reference (the profile itself unless a guard kept the reference elsewhere).
    pub fn event(
        &mut self,
        event: &NormalizedEvent,
        usable: &[Identifier],
        profile: ProfileId,
        graph: &Graph,
    ) {
        self.facts.entry(profile).or_default().observe(event);
        let owner = |id: &Identifier| graph.identifiers.get(id).and_then(|n| n.owner);
        for id in usable {
            if owner(id) == Some(profile) {
                self.sight(id, profile, event.source, event.occurred_at);
            }
        }
        if let Some(order) = &event.order {
            let reference = Identifier::order_reference(event.source, &order.order_id);
            self.orders.push(OrderOwner {
                source: event.source,
                order_id: order.order_id.clone(),
                profile: owner(&reference).unwrap_or(profile),
            });
        }
    }

    /// Moves `absorbed`'s facts into `survivor`'s (a merge within a forward step).
    fn merge(&mut self, absorbed: ProfileId, survivor: ProfileId) {
        let facts = self.facts.remove(&absorbed).unwrap_or_default();
        self.facts.entry(survivor).or_default().absorb(facts);
    }

    /// Counts one sighting: the latest sighting's profile holds it, the earliest gives
    /// the source.
    fn sight(&mut self, id: &Identifier, profile: ProfileId, source: Source, at: DateTime<Utc>) {
        let Some(h) = self.holdings.get_mut(id) else {
            let first = Holding {
                profile,
                source,
                first_seen: at,
                last_seen: at,
                count: 1,
            };
            self.holdings.insert(id.clone(), first);
            return;
        };
        h.profile = profile;
        if at < h.first_seen {
            h.first_seen = at;
            h.source = source;
        }
        h.last_seen = h.last_seen.max(at);
        h.count += 1;
    }

    /// The holdings, sorted, with profiles followed through `absorbed`.
    fn holdings(&mut self, absorbed: &Absorptions) -> Vec<(Identifier, Holding)> {
        let mut rows: Vec<(Identifier, Holding)> = self
            .holdings
            .drain()
            .map(|(id, mut h)| {
                h.profile = absorbed.final_of(h.profile);
                (id, h)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    /// The orders, with profiles followed through `absorbed`.
    fn orders(&mut self, absorbed: &Absorptions) -> Vec<OrderOwner> {
        self.orders
            .drain(..)
            .map(|mut o| {
                o.profile = absorbed.final_of(o.profile);
                o
            })
            .collect()
    }

    /// The rows of `profiles` (each with its node, as `node` gives it) with their facts.
    fn rows(
        &mut self,
        profiles: impl IntoIterator<Item = ProfileId>,
        mut node: impl FnMut(ProfileId) -> Option<ProfileNode>,
    ) -> Vec<ProfileRow> {
        profiles
            .into_iter()
            .filter_map(|id| {
                Some(ProfileRow {
                    id,
                    node: node(id)?,
                    facts: self.facts.remove(&id).unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// The states of `ids` in `graph`, with their partners, sorted by identifier.
fn identifier_states<'a>(
    ids: impl IntoIterator<Item = &'a Identifier>,
    graph: &Graph,
    partners: impl Fn(&Identifier) -> Option<&'a PartnerSet>,
) -> Vec<(Identifier, IdentifierState)> {
    let mut rows: Vec<(Identifier, IdentifierState)> = ids
        .into_iter()
        .filter_map(|id| {
            let node = graph.identifiers.get(id)?;
            let state = IdentifierState::of(node, partners(id).cloned().unwrap_or_default())?;
            Some((id.clone(), state))
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// The refused links of outcomes (suspect identifiers link nothing and are left out).
fn refused_links<'a>(
    withheld: impl IntoIterator<Item = (Uuid, &'a Identifier, Withheld)>,
) -> Vec<RefusedLink> {
    withheld
        .into_iter()
        .filter(|(_, _, why)| *why != Withheld::Suspect)
        .map(|(event_id, identifier, reason)| RefusedLink {
            identifier: identifier.clone(),
            event_id,
            reason,
        })
        .collect()
}

/// Review items with their profiles followed through `absorbed`; an item whose
/// profiles were merged meanwhile (a later event of the batch joined them) is dropped.
fn final_reviews<'a>(
    reviews: impl IntoIterator<Item = &'a ReviewRecord>,
    absorbed: &Absorptions,
) -> Vec<ReviewRecord> {
    reviews
        .into_iter()
        .filter_map(|r| {
            let profiles: Vec<ProfileId> =
                r.profiles.iter().map(|p| absorbed.final_of(*p)).collect();
            let distinct: BTreeSet<ProfileId> = profiles.iter().copied().collect();
            (distinct.len() >= 2).then(|| ReviewRecord {
                profiles,
                reasons: r
                    .reasons
                    .iter()
                    .map(|(p, why)| (absorbed.final_of(*p), *why))
                    .collect(),
                ..r.clone()
            })
        })
        .collect()
}

/// A forward step: events applied one at a time, in canonical order, on the
/// neighbourhood of the graph the step loaded. Record each outcome right after
/// applying it (sightings read the graph as that event left it), then
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct Step {
    effects: Effects,
    absorbed: Absorptions,
    created: BTreeSet<ProfileId>,
    tombstones: Vec<ProfileId>,
    merges: Vec<MergeRecord>,
    assignment: Vec<(Uuid, ProfileId)>,
    refused: Vec<RefusedLink>,
    reviews: Vec<ReviewRecord>,
    touched: BTreeSet<ProfileId>,
    identifiers: BTreeSet<Identifier>,
}

impl Step {
    /// A step over profiles whose facts are `facts` (as loaded).
    pub fn new(facts: HashMap<ProfileId, ProfileFacts>) -> Self {
        Self {
            effects: Effects::with_facts(facts),
            absorbed: Absorptions::default(),
            created: BTreeSet::new(),
            tombstones: Vec::new(),
            merges: Vec::new(),
            assignment: Vec::new(),
            refused: Vec::new(),
            reviews: Vec::new(),
            touched: BTreeSet::new(),
            identifiers: BTreeSet::new(),
        }
    }

    /// Records what applying `event` (usable identifiers `usable`) did.
    pub fn record(
        &mut self,
        event: &NormalizedEvent,
        usable: &[Identifier],
        outcome: &Outcome,
        graph: &Graph,
    ) {
        for m in &outcome.merges {
            for a in &m.absorbed {
                self.tombstones.push(a.profile_id);
                self.effects.merge(a.profile_id, m.survivor);
            }
            self.absorbed.record(m);
            self.merges.push(m.clone());
        }
        if outcome.created {
            self.created.insert(outcome.profile_id);
        }
        self.effects.event(event, usable, outcome.profile_id, graph);
        self.assignment.push((event.event_id, outcome.profile_id));
        self.touched.insert(outcome.profile_id);
        self.touched.extend(outcome.consulted.iter().copied());
        self.identifiers.extend(usable.iter().cloned());
        self.refused.extend(refused_links(
            outcome
                .withheld
                .iter()
                .map(|(id, why)| (event.event_id, id, *why)),
        ));
        if let Some(r) = &outcome.review {
            self.reviews.push(r.clone());
        }
    }

    /// Events recorded so far.
    pub fn events(&self) -> usize {
        self.assignment.len()
    }

    /// The delta of the step: `graph` as the last event left it, the partner sets the
    /// step learned, and who the merges are recorded as made by.
    pub fn finish(
        mut self,
        graph: &Graph,
        partners: &HashMap<Identifier, PartnerSet>,
        actor: &str,
    ) -> Delta {
        let absorbed = &self.absorbed;
        let live: BTreeSet<ProfileId> = self
            .touched
            .iter()
            .chain(self.merges.iter().map(|m| &m.survivor))
            .map(|p| absorbed.final_of(*p))
            .filter(|p| graph.profiles.contains_key(p))
            .collect();
        let profiles = self
            .effects
            .rows(live.iter().copied(), |p| graph.profiles.get(&p).cloned());
        Delta {
            rewrite: Rewrite::Nothing,
            created: self.created.iter().copied().collect(),
            tombstones: self
                .tombstones
                .iter()
                .map(|a| (*a, absorbed.final_of(*a)))
                .collect(),
            repoint: Vec::new(),
            profiles,
            assignment: self
                .assignment
                .iter()
                .map(|(e, p)| (*e, absorbed.final_of(*p)))
                .collect(),
            holdings: self.effects.holdings(absorbed),
            identifiers: identifier_states(&self.identifiers, graph, |id| partners.get(id)),
            refused: self.refused,
            merges: self.merges,
            actor: actor.to_owned(),
            reviews: final_reviews(&self.reviews, absorbed),
            orders: self.effects.orders(absorbed),
            predictions: live.into_iter().collect(),
        }
    }
}

/// The merge history of retired profiles: one row per profile that received any,
/// with what each held (`held`: the snapshots of the old live profiles) so the merge
/// can be undone.
pub fn retirement_history(
    tombstones: &[(ProfileId, ProfileId)],
    held: &HashMap<ProfileId, AbsorbedProfile>,
    rule: MergeRule,
    trigger: Option<Uuid>,
) -> Vec<MergeRecord> {
    let mut by_survivor: BTreeMap<ProfileId, Vec<AbsorbedProfile>> = BTreeMap::new();
    for (old, into) in tombstones {
        if let Some(snapshot) = held.get(old) {
            by_survivor.entry(*into).or_default().push(snapshot.clone());
        }
    }
    by_survivor
        .into_iter()
        .map(|(survivor, absorbed)| MergeRecord {
            survivor,
            survivor_identifiers: held
                .get(&survivor)
                .map(|s| s.identifiers.clone())
                .unwrap_or_default(),
            absorbed,
            rule,
            matched: Vec::new(),
            trigger_event_id: trigger,
        })
        .collect()
}

/// A replayed region, as [`region`] needs it.
pub struct RegionReplay<'a> {
    /// How the engine names the profiles events create (retired ids point at the holder
    /// of their creating event).
    pub ids: ProfileIds,
    /// The region's live profiles before the replay, with what they held.
    pub old: &'a HashMap<ProfileId, ProfileNode>,
    /// The region's profiles before the replay (also those not loaded as live).
    pub old_profiles: &'a BTreeSet<ProfileId>,
    /// Every event of the region and the new ones, in canonical order, each with its
    /// profile before the replay (`None` for new events) and its usable identifiers.
    pub events: &'a [(Option<ProfileId>, &'a NormalizedEvent, Vec<Identifier>)],
    /// The engine's outcome per event, in the same order.
    pub outcomes: &'a [Outcome],
    /// The graph as the replay left it.
    pub graph: Graph,
    /// Partner sets of the region's identifiers.
    pub partners: &'a HashMap<Identifier, PartnerSet>,
    /// Identifiers that turned suspect (their index rows go).
    pub suspects: &'a [Identifier],
    /// The merge rule of the history rows (`replay`, or an analyst's).
    pub rule: MergeRule,
    /// Who the history rows are recorded as made by.
    pub actor: &'a str,
    /// The event that caused the replay, if one did.
    pub trigger: Option<Uuid>,
}

/// The delta of a region replay: the region's profiles rewritten from its events,
/// retired profiles tombstoned into the profile now holding their creating event, and
/// stored tombstones whose creating event moved re-pointed ([`redirect::retire`]).
pub fn region(replay: RegionReplay<'_>) -> Delta {
    let RegionReplay {
        ids,
        old,
        old_profiles,
        events,
        outcomes,
        mut graph,
        partners,
        suspects,
        rule,
        actor,
        trigger,
    } = replay;
    let mut absorbed = Absorptions::default();
    for m in outcomes.iter().flat_map(|o| &o.merges) {
        absorbed.record(m);
    }
    let mut effects = Effects::default();
    let mut assignment = Vec::with_capacity(events.len());
    let mut moved = Vec::new();
    for ((before, event, usable), outcome) in events.iter().zip(outcomes) {
        debug_assert_eq!(event.event_id, outcome.event_id);
        let p = absorbed.final_of(outcome.profile_id);
        effects.event(event, usable, p, &graph);
        assignment.push((event.event_id, p));
        moved.extend(before.map(|b| (event.event_id, b, p)));
    }
    let new_live: BTreeSet<ProfileId> = assignment.iter().map(|(_, p)| *p).collect();
    let Retirement {
        tombstones,
        repoint,
    } = redirect::retire(ids, old_profiles, &new_live, moved);
    let snapshots: HashMap<ProfileId, AbsorbedProfile> = old
        .iter()
        .map(|(id, node)| (*id, AbsorbedProfile::of(*id, node)))
        .collect();
    let merges = retirement_history(&tombstones, &snapshots, rule, trigger);
    let mut ids: BTreeSet<&Identifier> = BTreeSet::new();
    for (_, _, usable) in events {
        ids.extend(usable);
    }
    let identifiers = identifier_states(ids, &graph, |id| partners.get(id));
    let profiles = effects.rows(new_live.iter().copied(), |p| graph.profiles.remove(&p));
    Delta {
        rewrite: Rewrite::Region {
            profiles: old_profiles.iter().copied().collect(),
            suspects: suspects.to_vec(),
            events: events.iter().map(|(_, e, _)| e.event_id).collect(),
        },
        created: new_live.iter().copied().collect(),
        tombstones,
        repoint,
        profiles,
        assignment,
        holdings: effects.holdings(&absorbed),
        identifiers,
        refused: refused_links(outcomes.iter().flat_map(|o| {
            o.withheld
                .iter()
                .map(move |(id, why)| (o.event_id, id, *why))
        })),
        merges,
        actor: actor.to_owned(),
        reviews: final_reviews(outcomes.iter().filter_map(|o| o.review.as_ref()), &absorbed),
        orders: effects.orders(&absorbed),
        predictions: new_live.into_iter().collect(),
    }
}

/// The delta of a rebuild: `effects` recorded every stored event with its rebuilt
/// profile (read back in canonical order), `memory` resolved them all, `before` gives
/// each event's profile before the rebuild, `held` what every old live profile held
/// and `stored` every stored tombstone with its pointer. Only events whose profile
/// changed are reassigned, and only their profiles ask for new predictions; every
/// tombstone ends pointing at the profile holding its creating event
/// ([`redirect::settle`]).
pub fn rebuild(
    mut effects: Effects,
    mut memory: MemoryResolver,
    before: &HashMap<Uuid, Option<ProfileId>>,
    held: &HashMap<ProfileId, AbsorbedProfile>,
    stored: &HashMap<ProfileId, ProfileId>,
    actor: &str,
) -> Delta {
    let new_live: BTreeSet<ProfileId> = memory.graph.profiles.keys().copied().collect();
    let mut assignment = Vec::new();
    let mut moved = Vec::new();
    for (event, new) in memory.assignment() {
        match before.get(event).copied().flatten() {
            Some(old) if old == *new => {}
            Some(old) => {
                moved.push((*event, old, *new));
                assignment.push((*event, *new));
            }
            None => assignment.push((*event, *new)),
        }
    }
    let old_live: BTreeSet<ProfileId> = held.keys().copied().collect();
    let ids = memory.engine().ids;
    let tombstones = redirect::retire(ids, &old_live, &new_live, moved).tombstones;
    let repoint = redirect::settle(
        ids,
        stored,
        memory.assignment().iter().map(|(e, p)| (*e, *p)),
        &new_live,
        &tombstones,
    );
    let merges = retirement_history(&tombstones, held, MergeRule::Replay, None);
    let identifiers = identifier_states(memory.graph.identifiers.keys(), &memory.graph, |id| {
        memory.partners().get(id)
    });
    let refused = refused_links(
        memory
            .refused()
            .iter()
            .flat_map(|(id, events)| events.iter().map(move |(e, why)| (*e, id, *why))),
    );
    let none = Absorptions::default();
    let reviews = final_reviews(&memory.reviews, &none);
    let predictions: BTreeSet<ProfileId> = assignment.iter().map(|(_, p)| *p).collect();
    let profiles = effects.rows(new_live.iter().copied(), |p| {
        memory.graph.profiles.remove(&p)
    });
    Delta {
        rewrite: Rewrite::Everything,
        created: new_live.into_iter().collect(),
        tombstones,
        repoint,
        profiles,
        assignment,
        holdings: effects.holdings(&none),
        identifiers,
        refused,
        merges,
        actor: actor.to_owned(),
        reviews,
        orders: effects.orders(&none),
        predictions: predictions.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::model::Observation;
    use crate::rules::Policy;
    use chrono::TimeZone;
    use domain::{Channel, EventType, IdentifierKind, Order, OrderStatus};

    /// The tests' profile ids: time-ordered, as a database created empty has.
    const IDS: ProfileIds = ProfileIds::TIME_ORDERED;

    fn event(n: u32, ids: &[Identifier], order: Option<&str>) -> NormalizedEvent {
        let at = Utc
            .timestamp_opt(1_700_000_000 + i64::from(n) * 60, 0)
            .unwrap();
        NormalizedEvent {
            // Received (a UUIDv7, as ingest mints) when it occurred.
            event_id: uuid::Builder::from_unix_timestamp_millis(
                at.timestamp_millis() as u64,
                &[n as u8; 10],
            )
            .into_uuid(),
            occurred_at: at,
            received_at: at,
            source: Source::Shopify,
            integration_id: None,
            channel: Channel::Web,
            event_type: if order.is_some() {
                EventType::OrderPlaced
            } else {
                EventType::PageViewed
            },
            name: None,
            identifiers: ids.to_vec(),
            traits: Default::default(),
            properties: Default::default(),
            order: order.map(|id| Order {
                order_id: id.to_owned(),
                status: OrderStatus::Placed,
                currency: "INR".into(),
                total: Default::default(),
                items: Vec::new(),
                store: None,
            }),
        }
    }

    fn email(v: &str) -> Identifier {
        Identifier::parse(IdentifierKind::Email, v, "IN").unwrap()
    }

    fn phone(v: &str) -> Identifier {
        Identifier::parse(IdentifierKind::Phone, v, "IN").unwrap()
    }

    /// Applies `events` as one forward step and returns its delta.
    fn forward(events: &[NormalizedEvent]) -> Delta {
        let engine = Engine::new(Policy::default(), IDS);
        let mut graph = Graph::default();
        let mut step = Step::new(HashMap::new());
        for e in events {
            let obs = Observation::of(e);
            let usable = engine.policy.usable(&obs.identifiers);
            let outcome = engine.apply(&mut graph, &obs);
            step.record(e, &usable, &outcome, &graph);
        }
        step.finish(&graph, &HashMap::new(), "identity-merger")
    }

    #[test]
    fn profiles_that_come_out_as_stored_are_left_out() {
        let a = email("asha@mail.in");
        let p = phone("+919812345678");
        let events = [
            event(1, std::slice::from_ref(&a), None),
            event(2, std::slice::from_ref(&p), None),
        ];
        let mut d = forward(&events);
        let first = IDS.profile_id(events[0].event_id);
        let second = IDS.profile_id(events[1].event_id);
        assert_eq!(d.changed().collect::<BTreeSet<_>>(), [first, second].into());
        let row = |id: ProfileId| d.profiles.iter().find(|r| r.id == id).unwrap().clone();
        // As stored: the first exactly; the second with one event fewer.
        let mut stale = row(second);
        stale.facts.state.events_count -= 1;
        let before: HashMap<ProfileId, (ProfileNode, ProfileFacts)> = [
            (first, (row(first).node, row(first).facts)),
            (second, (stale.node, stale.facts)),
        ]
        .into();
        d.without_unchanged(&before);
        assert_eq!(d.changed().collect::<Vec<_>>(), vec![second]);
        assert_eq!(d.created, vec![second]);
        assert_eq!(d.predictions, vec![second]);
        assert_eq!(
            d.holdings.len(),
            2,
            "the identifier index is the write's to diff"
        );

        // A profile that was not stored live (new, or a tombstone coming back) stays.
        let mut d = forward(&events);
        d.without_unchanged(&HashMap::new());
        assert_eq!(d.changed().count(), 2);
    }

    #[test]
    fn a_forward_step_follows_merges_to_the_survivor() {
        let a = email("asha@mail.in");
        let p = phone("+919812345678");
        let events = [
            event(1, std::slice::from_ref(&a), None),
            event(2, std::slice::from_ref(&p), Some("1001")),
            event(3, &[a.clone(), p.clone()], None),
        ];
        let d = forward(&events);
        let first = IDS.profile_id(events[0].event_id);
        let second = IDS.profile_id(events[1].event_id);
        assert_eq!(d.rewrite, Rewrite::Nothing);
        assert_eq!(d.created, {
            let mut v = vec![first, second];
            v.sort();
            v
        });
        assert_eq!(d.tombstones, vec![(second, first)]);
        assert_eq!(d.changed().collect::<Vec<_>>(), vec![first]);
        assert_eq!(d.predictions, vec![first]);
        assert!(
            d.assignment.iter().all(|(_, p)| *p == first),
            "every event ends on the survivor"
        );
        assert_eq!(d.profiles[0].facts.state.events_count, 3, "facts merged");
        assert_eq!(d.orders.len(), 1);
        assert_eq!(d.orders[0].profile, first, "the order follows its profile");
        assert!(d.holdings.iter().all(|(_, h)| h.profile == first));
        let phone_holding = d.holdings.iter().find(|(id, _)| *id == p).unwrap().1;
        assert_eq!(phone_holding.count, 2, "sighted by both of its events");
        assert_eq!(phone_holding.first_seen, events[1].occurred_at);
        assert_eq!(phone_holding.last_seen, events[2].occurred_at);
        assert_eq!(d.merges.len(), 1);
        assert_eq!(d.actor, "identity-merger");
        assert!(d.holdings.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert!(d.identifiers.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    }

    #[test]
    fn a_review_over_profiles_merged_later_in_the_step_is_dropped() {
        let r = ReviewRecord {
            reason: crate::rules::ReviewReason::NameConflict,
            profiles: vec![Uuid::from_u128(1), Uuid::from_u128(2)],
            reasons: vec![(Uuid::from_u128(2), crate::rules::ReviewReason::NameConflict)],
            trigger_event_id: Uuid::from_u128(9),
            identifiers: Vec::new(),
        };
        let mut absorbed = Absorptions::default();
        assert_eq!(final_reviews([&r], &absorbed), vec![r.clone()]);
        absorbed.record(&MergeRecord {
            survivor: Uuid::from_u128(1),
            survivor_identifiers: Vec::new(),
            absorbed: vec![AbsorbedProfile {
                profile_id: Uuid::from_u128(2),
                identifiers: Vec::new(),
                names: Vec::new(),
            }],
            rule: MergeRule::StrongIdentifier,
            matched: Vec::new(),
            trigger_event_id: None,
        });
        assert!(final_reviews([&r], &absorbed).is_empty());
    }

    #[test]
    fn retired_profiles_are_recorded_with_what_they_held() {
        let id = Uuid::from_u128;
        let got = vec![(id(2), id(11)), (id(3), id(10))];
        let held: HashMap<ProfileId, AbsorbedProfile> = [2, 3, 10]
            .map(|n| {
                (
                    id(n),
                    AbsorbedProfile {
                        profile_id: id(n),
                        identifiers: vec![email(&format!("p{n}@mail.in"))],
                        names: Vec::new(),
                    },
                )
            })
            .into();
        let history = retirement_history(&got, &held, MergeRule::Replay, Some(id(99)));
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].survivor, id(10));
        assert_eq!(history[0].absorbed[0].profile_id, id(3));
        assert_eq!(
            history[0].survivor_identifiers,
            vec![email("p10@mail.in")],
            "what the survivor held before"
        );
        assert_eq!(history[1].survivor, id(11));
        assert!(history[1].survivor_identifiers.is_empty(), "new profile");
        assert!(history.iter().all(|m| m.trigger_event_id == Some(id(99))));
    }

    #[test]
    fn a_region_replay_rewrites_its_region_and_retires_what_no_longer_exists() {
        // Streaming saw event 2 (e-mail + phone) before event 1 (e-mail): profile of 2
        // existed; the replay in time order names the profile after event 1.
        let engine = Engine::new(Policy::default(), IDS);
        let a = email("asha@mail.in");
        let p = phone("+919812345678");
        let e1 = event(1, std::slice::from_ref(&a), None);
        let e2 = event(2, &[a.clone(), p.clone()], Some("7"));
        let mut graph = Graph::default();
        let early = engine.apply(&mut graph, &Observation::of(&e2));
        let old: HashMap<ProfileId, ProfileNode> = graph.profiles.clone();
        let old_profiles: BTreeSet<ProfileId> = [early.profile_id].into();
        let observations = vec![Observation::of(&e1), Observation::of(&e2)];
        let outcomes = engine.replay(&mut graph, &old_profiles, observations.clone());
        let events: Vec<(Option<ProfileId>, &NormalizedEvent, Vec<Identifier>)> = vec![
            (
                None,
                &e1,
                engine.policy.usable(&observations[0].identifiers),
            ),
            (
                Some(early.profile_id),
                &e2,
                engine.policy.usable(&observations[1].identifiers),
            ),
        ];
        let d = region(RegionReplay {
            ids: IDS,
            old: &old,
            old_profiles: &old_profiles,
            events: &events,
            outcomes: &outcomes,
            graph,
            partners: &HashMap::new(),
            suspects: &[],
            rule: MergeRule::Replay,
            actor: "identity-merger",
            trigger: Some(e1.event_id),
        });
        let now = IDS.profile_id(e1.event_id);
        assert_eq!(
            d.rewrite,
            Rewrite::Region {
                profiles: vec![early.profile_id],
                suspects: Vec::new(),
                events: vec![e1.event_id, e2.event_id],
            }
        );
        assert_eq!(
            d.tombstones,
            vec![(early.profile_id, now)],
            "into the holder of its creating event"
        );
        assert!(d.repoint.is_empty(), "no older tombstone: {:?}", d.repoint);
        assert_eq!(d.changed().collect::<Vec<_>>(), vec![now]);
        assert_eq!(d.merges.len(), 1);
        assert_eq!(d.merges[0].rule, MergeRule::Replay);
        assert_eq!(d.merges[0].absorbed[0].profile_id, early.profile_id);
        assert_eq!(
            d.merges[0].absorbed[0].identifiers.len(),
            3,
            "the snapshot of what it held (e-mail, phone, order reference)"
        );
        assert_eq!(d.orders[0].profile, now);
        assert_eq!(d.profiles[0].facts.state.events_count, 2);
        assert!(d.assignment.iter().all(|(_, p)| *p == now));
    }

    #[test]
    fn a_rebuild_reassigns_only_what_moved_and_retires_what_is_gone() {
        let engine = Engine::new(Policy::default(), IDS);
        let a = email("asha@mail.in");
        let p = phone("+919812345678");
        let cookie = Identifier::parse(IdentifierKind::CookieId, "ck-1", "IN").unwrap();
        let events = [
            event(1, std::slice::from_ref(&a), None),
            event(2, std::slice::from_ref(&p), None),
            event(3, &[a.clone(), p.clone()], Some("9")),
            event(4, std::slice::from_ref(&cookie), None),
        ];
        let first = IDS.profile_id(events[0].event_id);
        let second = IDS.profile_id(events[1].event_id);
        // Before: the third event sat with the phone's profile, the fourth was new.
        let before: HashMap<Uuid, Option<ProfileId>> = [
            (events[0].event_id, Some(first)),
            (events[1].event_id, Some(second)),
            (events[2].event_id, Some(second)),
            (events[3].event_id, None),
        ]
        .into();
        let held: HashMap<ProfileId, AbsorbedProfile> =
            [(first, vec![a.clone()]), (second, vec![p.clone()])]
                .map(|(id, identifiers)| {
                    (
                        id,
                        AbsorbedProfile {
                            profile_id: id,
                            identifiers,
                            names: Vec::new(),
                        },
                    )
                })
                .into();
        let memory = MemoryResolver::rebuild(
            engine.clone(),
            Default::default(),
            events.iter().map(Observation::of).collect(),
        );
        let mut effects = Effects::default();
        for e in &events {
            let usable = engine.policy.usable(&Observation::of(e).identifiers);
            effects.event(e, &usable, memory.assignment()[&e.event_id], &memory.graph);
        }
        let cookie_profile = IDS.profile_id(events[3].event_id);
        // A tombstone left by an earlier arrival order, pointing at the phone's profile:
        // its creating event (the third) is in the first profile now.
        let early = IDS.profile_id(events[2].event_id);
        let stored: HashMap<ProfileId, ProfileId> = [(early, second)].into();
        let d = rebuild(
            effects,
            memory,
            &before,
            &held,
            &stored,
            "ctl identity rebuild",
        );
        assert_eq!(d.repoint, vec![(early, first)]);
        assert_eq!(d.rewrite, Rewrite::Everything);
        let mut moved: Vec<Uuid> = d.assignment.iter().map(|(e, _)| *e).collect();
        moved.sort();
        assert_eq!(
            moved,
            vec![events[1].event_id, events[2].event_id, events[3].event_id],
            "the first event stays where it was"
        );
        assert_eq!(d.tombstones, vec![(second, first)]);
        assert_eq!(d.merges.len(), 1);
        assert_eq!(d.merges[0].survivor_identifiers, vec![a.clone()]);
        assert_eq!(d.merges[0].absorbed[0].identifiers, vec![p.clone()]);
        assert_eq!(d.actor, "ctl identity rebuild");
        let mut predictions = vec![first, cookie_profile];
        predictions.sort();
        assert_eq!(
            d.predictions, predictions,
            "only profiles whose events moved"
        );
        assert_eq!(d.profiles.len(), 2);
        let survivor = d.profiles.iter().find(|r| r.id == first).unwrap();
        assert_eq!(survivor.facts.state.events_count, 3);
        assert_eq!(d.orders[0].profile, first);
        assert!(
            d.holdings
                .iter()
                .any(|(id, h)| *id == p && h.profile == first)
        );
    }
}
