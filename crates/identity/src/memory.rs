//! Identity resolution with the whole graph in memory.
//!
//! Two uses. [`MemoryResolver::rebuild`] resolves a complete event set in canonical
//! order, with the final suspect set known up front — what `ctl identity rebuild`
//! computes before writing it to Postgres. [`MemoryResolver::ingest`] takes events
//! one at a time in any arrival order, exactly as the streaming resolver does (apply
//! when in order, otherwise replay the affected region; replay when an identifier
//! turns suspect), so property tests can check that arrival order never changes the
//! result without a database — the profiles and where retired profile ids point (the
//! tombstones the streaming resolver would store, kept by [`crate::redirect`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use domain::Identifier;
use uuid::Uuid;

use crate::engine::{Constraints, Engine, Graph, MergeRecord, Outcome, ReviewRecord, Unsettled};
use crate::model::{EventKey, Observation, ProfileId};
use crate::redirect::{self, Redirects};
use crate::region::RegionWalk;
use crate::rules::{PartnerSet, Withheld, observe_partners};

/// Everything known, in memory.
#[derive(Debug, Clone)]
pub struct MemoryResolver {
    engine: Engine,
    /// The graph.
    pub graph: Graph,
    partners: HashMap<Identifier, PartnerSet>,
    events: HashMap<Uuid, Observation>,
    assignment: HashMap<Uuid, ProfileId>,
    members: HashMap<ProfileId, BTreeSet<EventKey>>,
    /// Events carrying an identifier their profile does not hold, and why.
    refused: HashMap<Identifier, BTreeMap<Uuid, Withheld>>,
    /// Every merge performed, in order.
    pub merges: Vec<MergeRecord>,
    /// Every review item raised (replays may raise one again for the same event).
    pub reviews: Vec<ReviewRecord>,
    /// Regions replayed because an event arrived late or an identifier turned suspect.
    pub replays: usize,
    /// Events re-applied by those replays (the region's events plus the late one).
    pub replayed_events: usize,
    /// Late events applied in place: settled and witnessed (see [`Engine::settled_late`]).
    pub settled: usize,
    /// Late events replayed, by why they could not be applied in place.
    pub unsettled: BTreeMap<Unsettled, usize>,
    /// Whether late events may be applied in place (on unless [`Self::replaying_every_late_event`]).
    settling: bool,
    /// Retired profile ids and where they point, as the streaming resolver stores them.
    redirects: Redirects,
}

impl MemoryResolver {
    /// An empty resolver.
    pub fn new(engine: Engine, constraints: Constraints) -> Self {
        Self {
            engine,
            graph: Graph {
                constraints,
                ..Graph::default()
            },
            partners: HashMap::new(),
            events: HashMap::new(),
            assignment: HashMap::new(),
            members: HashMap::new(),
            refused: HashMap::new(),
            merges: Vec::new(),
            reviews: Vec::new(),
            replays: 0,
            replayed_events: 0,
            settled: 0,
            unsettled: BTreeMap::new(),
            settling: true,
            redirects: Redirects::default(),
        }
    }

    /// The engine it applies (its policy and profile ids).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The same resolver replaying the region of every late event, as before late events
    /// could be applied in place: what the property tests and the lateness benchmark
    /// compare the in-place path with.
    pub fn replaying_every_late_event(mut self) -> Self {
        self.settling = false;
        self
    }

    /// Resolves a complete event set in canonical order.
    pub fn rebuild(engine: Engine, constraints: Constraints, mut events: Vec<Observation>) -> Self {
        let mut me = Self::new(engine, constraints);
        events.sort_by_key(|o| o.key);
        events.dedup_by_key(|o| o.key);
        if me.engine.policy.guards.suspect {
            for obs in &events {
                let usable = me.engine.policy.usable(&obs.identifiers);
                for id in observe_partners(&me.engine.policy, &mut me.partners, &usable) {
                    me.graph.identifiers.entry(id).or_default().suspect = true;
                }
            }
        }
        for obs in events {
            let outcome = me.engine.apply(&mut me.graph, &obs);
            me.forward(&obs, outcome);
            me.events.insert(obs.key.event_id, obs);
        }
        me
    }

    /// Takes one event in arrival order, as the streaming resolver does.
    pub fn ingest(&mut self, obs: Observation) {
        if self.events.contains_key(&obs.key.event_id) {
            return; // redelivery
        }
        let usable = self.engine.policy.usable(&obs.identifiers);
        let mut newly = Vec::new();
        if self.engine.policy.guards.suspect {
            newly = observe_partners(&self.engine.policy, &mut self.partners, &usable);
        }
        let in_place = newly.is_empty()
            && (self.engine.in_order(&self.graph, &obs)
                || (self.settling && {
                    let settled = self.witnessed(&obs);
                    match settled {
                        Ok(()) => self.settled += 1,
                        Err(why) => *self.unsettled.entry(why).or_default() += 1,
                    }
                    settled.is_ok()
                }));
        if in_place {
            let outcome = self.engine.apply(&mut self.graph, &obs);
            self.forward(&obs, outcome);
            self.events.insert(obs.key.event_id, obs);
            return;
        }
        // Seed: what the event touches, and whatever the new suspects linked.
        let mut seed_ids: Vec<Identifier> = usable.clone();
        for id in &newly {
            self.graph
                .identifiers
                .entry(id.clone())
                .or_default()
                .suspect = true;
        }
        seed_ids.extend(newly.iter().cloned());
        let region = self.closure(&seed_ids, &newly);
        let mut events: Vec<Observation> = region
            .iter()
            .flat_map(|p| self.members.get(p).into_iter().flatten())
            .map(|k| self.events[&k.event_id].clone())
            .collect();
        events.push(obs.clone());
        self.events.insert(obs.key.event_id, obs);
        self.replay(&region, events);
    }

    /// Whether a late event may be applied in place: [`Engine::settled_late`] allows it
    /// and an earlier event of the profile holding its linking identifiers carried them
    /// all, stated the same first name (if it states one) and was refused nothing (the
    /// witness); otherwise why not.
    fn witnessed(&self, obs: &Observation) -> Result<(), Unsettled> {
        let settled = self.engine.settled_late(&self.graph, obs)?;
        let linking = &settled.linking;
        let Some(holder) = self.graph.identifiers[&linking[0]].owner else {
            return Err(Unsettled::Fresh);
        };
        let refused = |e: &Observation| {
            e.identifiers.iter().any(|id| {
                self.refused
                    .get(id)
                    .is_some_and(|m| m.contains_key(&e.key.event_id))
            })
        };
        self.members
            .get(&holder)
            .into_iter()
            .flat_map(|keys| keys.range(..obs.key))
            .map(|k| &self.events[&k.event_id])
            .any(|e| {
                linking.iter().all(|id| e.identifiers.contains(id))
                    && (settled.name.is_none() || e.name == settled.name)
                    && !refused(e)
            })
            .then_some(())
            .ok_or(Unsettled::Unwitnessed)
    }

    /// The live profiles whose events must be replayed together with an event
    /// carrying `seed` (plus the owners of `also`, identifiers that just turned
    /// suspect), by the closure rule of [`crate::region`], answered from memory.
    fn closure(&self, seed: &[Identifier], also: &[Identifier]) -> BTreeSet<ProfileId> {
        let mut walk = RegionWalk::new(&self.engine.policy, seed, also);
        loop {
            let batch = walk.next_batch();
            if batch.is_empty() {
                break;
            }
            let mut found: Vec<ProfileId> = Vec::new();
            for id in &batch {
                let node = self.graph.identifiers.get(id);
                if !walk.links(id, node.is_some_and(|n| n.suspect)) {
                    continue;
                }
                found.extend(node.and_then(|n| n.owner));
                let refusing = self.refused.get(id).into_iter().flat_map(|m| m.keys());
                found.extend(refusing.filter_map(|e| self.assignment.get(e)).copied());
                // Analysts' must-links pull the other side in.
                for c in self.graph.constraints.iter() {
                    if c.left.contains(id) || c.right.contains(id) {
                        walk.follow(c.left.iter().chain(c.right.iter()).cloned());
                    }
                }
            }
            for p in walk.add_profiles(found) {
                for k in self.members.get(&p).into_iter().flatten() {
                    walk.follow(self.events[&k.event_id].identifiers.iter().cloned());
                }
                if let Some(node) = self.graph.profiles.get(&p) {
                    walk.follow(node.identifiers.iter().cloned());
                }
            }
        }
        walk.into_profiles()
    }

    fn replay(&mut self, region: &BTreeSet<ProfileId>, mut events: Vec<Observation>) {
        self.replays += 1;
        self.replayed_events += events.len();
        events.sort_by_key(|o| o.key);
        events.dedup_by_key(|o| o.key);
        let mut before: Vec<(Uuid, ProfileId)> = Vec::new();
        for p in region {
            for k in self.members.remove(p).unwrap_or_default() {
                before.push((k.event_id, *p));
                self.assignment.remove(&k.event_id);
                if let Some(obs) = self.events.get(&k.event_id) {
                    for id in &obs.identifiers {
                        if let Some(set) = self.refused.get_mut(id) {
                            set.remove(&k.event_id);
                        }
                    }
                }
            }
        }
        let keys: Vec<Observation> = events.clone();
        let outcomes = self.engine.replay(&mut self.graph, region, events);
        for (obs, outcome) in keys.iter().zip(outcomes) {
            debug_assert_eq!(obs.key.event_id, outcome.event_id);
            self.record(obs, outcome);
        }
        // As the Postgres write of a region replay: what no longer exists is retired,
        // tombstones whose creating event moved are re-pointed; profiles created and
        // absorbed within the replay are never stored, so they leave no tombstone.
        let new_live: BTreeSet<ProfileId> = keys
            .iter()
            .filter_map(|o| self.assignment.get(&o.key.event_id))
            .copied()
            .collect();
        let moved = before
            .iter()
            .filter_map(|(e, b)| Some((*e, *b, *self.assignment.get(e)?)));
        let retirement = redirect::retire(self.engine.ids, region, &new_live, moved);
        self.redirects.apply(&new_live, &retirement);
    }

    /// Records an event applied in order: its merges leave tombstones.
    fn forward(&mut self, obs: &Observation, outcome: Outcome) {
        for m in &outcome.merges {
            for a in &m.absorbed {
                self.redirects.retire(a.profile_id, m.survivor);
            }
        }
        self.record(obs, outcome);
    }

    fn record(&mut self, obs: &Observation, outcome: Outcome) {
        for m in &outcome.merges {
            let mut moved = BTreeSet::new();
            for a in &m.absorbed {
                moved.extend(self.members.remove(&a.profile_id).unwrap_or_default());
            }
            for k in &moved {
                self.assignment.insert(k.event_id, m.survivor);
            }
            self.members.entry(m.survivor).or_default().extend(moved);
        }
        self.merges.extend(outcome.merges.iter().cloned());
        self.assignment.insert(obs.key.event_id, outcome.profile_id);
        self.members
            .entry(outcome.profile_id)
            .or_default()
            .insert(obs.key);
        for (id, why) in &outcome.withheld {
            if *why != Withheld::Suspect {
                self.refused
                    .entry(id.clone())
                    .or_default()
                    .insert(obs.key.event_id, *why);
            }
        }
        if let Some(r) = outcome.review {
            self.reviews.push(r);
        }
    }

    /// The profile each event belongs to.
    pub fn assignment(&self) -> &HashMap<Uuid, ProfileId> {
        &self.assignment
    }

    /// Every retired profile id with the live profile it points at, sorted.
    pub fn redirects(&self) -> BTreeMap<ProfileId, ProfileId> {
        self.redirects.map()
    }

    /// The partition of events into profiles, as sorted sets of event ids (comparable
    /// between runs whatever the profile ids).
    pub fn partition(&self) -> BTreeSet<BTreeSet<Uuid>> {
        partition_of(self.assignment.iter().map(|(e, p)| (*e, *p)))
    }

    /// Identifiers currently suspect.
    pub fn suspects(&self) -> BTreeSet<Identifier> {
        self.graph
            .identifiers
            .iter()
            .filter(|(_, n)| n.suspect)
            .map(|(i, _)| i.clone())
            .collect()
    }

    /// The partner sets learned so far.
    pub fn partners(&self) -> &HashMap<Identifier, PartnerSet> {
        &self.partners
    }

    /// Events carrying an identifier their profile does not hold, and why.
    pub fn refused(&self) -> &HashMap<Identifier, BTreeMap<Uuid, Withheld>> {
        &self.refused
    }
}

/// Groups `(event, profile)` pairs into the partition of events (profile ids dropped).
pub fn partition_of(
    pairs: impl IntoIterator<Item = (Uuid, ProfileId)>,
) -> BTreeSet<BTreeSet<Uuid>> {
    let mut by_profile: BTreeMap<ProfileId, BTreeSet<Uuid>> = BTreeMap::new();
    for (e, p) in pairs {
        by_profile.entry(p).or_default().insert(e);
    }
    by_profile.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProfileIds;
    use crate::rules::{Guards, Policy};
    use chrono::{TimeZone, Utc};
    use domain::IdentifierKind::{self, *};
    use proptest::prelude::*;

    fn id(kind: IdentifierKind, v: &str) -> Identifier {
        Identifier::parse(kind, v, "IN").unwrap()
    }

    /// Ingest's time of the tests' events: not the order they occurred in.
    const RECEIVED: u64 = 1_765_000_000_000;

    /// Event `n`'s id: a UUIDv7 as ingest mints, received in an order unrelated to
    /// when the event occurred.
    fn event_id(n: u32) -> Uuid {
        let ms = RECEIVED + u64::from(n) * 37 % 101;
        let mut bits = [0u8; 10];
        bits[..4].copy_from_slice(&n.to_be_bytes());
        uuid::Builder::from_unix_timestamp_millis(ms, &bits).into_uuid()
    }

    /// The tests' profile ids: hashed for events received before the middle of the
    /// tests' times, time-ordered after, so every property holds across a cut-over.
    const IDS: ProfileIds = ProfileIds::from_millis(RECEIVED as i64 + 50);

    fn obs(n: u32, ids: Vec<Identifier>, name: Option<&str>) -> Observation {
        Observation {
            key: EventKey {
                occurred_at: Utc
                    .timestamp_opt(1_700_000_000 + i64::from(n) * 60, 0)
                    .unwrap(),
                event_id: event_id(n),
            },
            identifiers: ids,
            name: name.map(str::to_owned),
            link_only: Vec::new(),
        }
    }

    /// A pool of identifiers events draw from: few enough that events collide.
    fn pool(kind_ix: u8, n: u8) -> Identifier {
        match kind_ix % 7 {
            0 => id(Email, &format!("p{n}@mail.in")),
            1 => id(Phone, &format!("+9198100{:05}", u32::from(n) * 7 + 11)),
            2 => id(LoyaltyId, &format!("L-{n}")),
            3 => id(DeviceId, &format!("dev-{n}")),
            4 => id(CookieId, &format!("ck-{n}")),
            5 => id(CustomerId, &format!("shop:{n}")),
            _ => Identifier::order_reference(domain::Source::Shopify, &format!("{n}")),
        }
    }

    fn events_strategy(
        max_events: usize,
        pool_size: u8,
    ) -> impl Strategy<Value = Vec<Observation>> {
        events_with_names(max_events, pool_size, 6, &["asha", "ravi", "meena"])
    }

    /// Events drawing identifiers of the first `kinds` kinds of [`pool`] (7: order
    /// references too) and first names from `names`.
    fn events_with_names(
        max_events: usize,
        pool_size: u8,
        kinds: u8,
        names: &[&'static str],
    ) -> impl Strategy<Value = Vec<Observation>> {
        prop::collection::vec(
            (
                prop::collection::vec((0..kinds, 0..pool_size), 1..4),
                prop::option::of(prop::sample::select(names.to_vec())),
            ),
            1..max_events,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(n, (ids, name))| {
                    obs(
                        n as u32,
                        ids.into_iter().map(|(k, v)| pool(k, v)).collect(),
                        name,
                    )
                })
                .collect()
        })
    }

    fn engine(guards: Guards) -> Engine {
        Engine::new(Policy::default().with_guards(guards), IDS)
    }

    fn canonical(engine: &Engine, events: &[Observation]) -> MemoryResolver {
        MemoryResolver::rebuild(engine.clone(), Constraints::default(), events.to_vec())
    }

    fn streamed(engine: &Engine, events: &[Observation], order: &[usize]) -> MemoryResolver {
        let mut m = MemoryResolver::new(engine.clone(), Constraints::default());
        for &i in order {
            m.ingest(events[i].clone());
        }
        m
    }

    /// An event refused against a profile read that profile's state (here its name):
    /// a later-arriving event that changes the profile earlier in time must replay the
    /// refused event's decision too, not apply in place. Found by the arrival-order
    /// property test: the device stayed "shared" and the last event split off.
    #[test]
    fn an_event_refused_against_a_profile_is_replayed_when_that_profile_changes_before_it() {
        let device = || id(DeviceId, "dev-5");
        let first = obs(9, vec![device(), id(LoyaltyId, "L-4")], None);
        let named = obs(16, vec![id(LoyaltyId, "L-4")], Some("meena"));
        let other_card = obs(19, vec![id(LoyaltyId, "L-0"), device()], Some("meena"));
        let device_only = obs(24, vec![device()], None);
        let events = vec![
            first.clone(),
            named.clone(),
            other_card.clone(),
            device_only.clone(),
        ];
        let engine = engine(Guards::ALL);
        let expected = canonical(&engine, &events);
        assert_eq!(expected.partition().len(), 2, "{:?}", expected.partition());
        let mut m = MemoryResolver::new(engine, Constraints::default());
        for o in [other_card, first, device_only, named] {
            m.ingest(o);
        }
        assert_eq!(m.partition(), expected.partition());
    }

    /// A late event whose cookie its profile already held, through an earlier event
    /// refused nothing, is applied in place; one that came before anything its profile
    /// knew (it creates the profile in canonical order) is replayed.
    #[test]
    fn a_late_event_with_a_witness_is_applied_in_place_and_one_without_is_replayed() {
        let cookie = || id(CookieId, "ck-1");
        let first = obs(1, vec![id(Email, "asha@mail.in"), cookie()], None);
        let late = obs(2, vec![cookie()], None);
        let later = obs(3, vec![cookie()], None);
        let events = vec![first.clone(), late.clone(), later.clone()];
        let engine = engine(Guards::ALL);
        let expected = canonical(&engine, &events);

        let mut m = MemoryResolver::new(engine.clone(), Constraints::default());
        for o in [first.clone(), later.clone(), late.clone()] {
            m.ingest(o);
        }
        assert_eq!(
            (m.settled, m.replays),
            (1, 0),
            "the first event witnesses it"
        );
        assert_eq!(m.assignment(), expected.assignment());

        // Without a witness: nothing its profile holds is earlier than the late event
        // (in time order it joins the first event's profile, not the later one's).
        let mut m = MemoryResolver::new(engine, Constraints::default());
        for o in [later, late, first] {
            m.ingest(o);
        }
        assert_eq!((m.settled, m.replays), (0, 2));
        assert_eq!(m.assignment(), expected.assignment());
    }

    /// A named late event is applied in place when an earlier event of its profile that
    /// carried its identifiers stated the same name; a witness stating no name does not
    /// do (the late event replays).
    #[test]
    fn a_named_late_event_needs_a_witness_stating_its_name() {
        let (email, cookie) = (|| id(Email, "asha@mail.in"), || id(CookieId, "ck-2"));
        let engine = engine(Guards::ALL);
        for (witness_name, expected_counts) in [(Some("asha"), (1, 0)), (None, (0, 1))] {
            let events = vec![
                obs(1, vec![email(), id(CookieId, "ck-1")], Some("asha")),
                obs(2, vec![email(), cookie()], witness_name),
                obs(3, vec![cookie()], Some("asha")),
                obs(4, vec![cookie()], None),
            ];
            let expected = canonical(&engine, &events);
            let mut m = MemoryResolver::new(engine.clone(), Constraints::default());
            for i in [0, 1, 3, 2] {
                m.ingest(events[i].clone());
            }
            assert_eq!((m.settled, m.replays), expected_counts, "{witness_name:?}");
            assert_eq!(m.assignment(), expected.assignment());
            assert_eq!(stored_state(&m), stored_state(&expected));
        }
    }

    /// What the streaming resolver stores of a memory resolver's state: profiles,
    /// identifier states, refused links, events' profiles, where retired ids point.
    type StoredState = (
        BTreeMap<ProfileId, crate::engine::ProfileNode>,
        BTreeMap<Identifier, crate::engine::IdentifierNode>,
        BTreeMap<Identifier, BTreeMap<Uuid, Withheld>>,
        BTreeMap<Uuid, ProfileId>,
        BTreeMap<ProfileId, ProfileId>,
    );

    /// The [`StoredState`] of `m`.
    fn stored_state(m: &MemoryResolver) -> StoredState {
        (
            m.graph
                .profiles
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            m.graph
                .identifiers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            m.refused
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            m.assignment.iter().map(|(k, v)| (*k, *v)).collect(),
            m.redirects(),
        )
    }

    /// A seeded shuffle of `0..n` (the property tests' arrival orders).
    fn shuffled(n: usize, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = seed;
        for i in (1..order.len()).rev() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (rng >> 33) as usize % (i + 1));
        }
        order
    }

    /// Every retired id points at a live profile: the one holding the event that created
    /// it. Returns the redirects.
    fn canonical_redirects(
        m: &MemoryResolver,
        events: &[Observation],
    ) -> Result<BTreeMap<ProfileId, ProfileId>, TestCaseError> {
        let creators: HashMap<ProfileId, Uuid> = events
            .iter()
            .map(|o| (m.engine().ids.profile_id(o.key.event_id), o.key.event_id))
            .collect();
        let redirects = m.redirects();
        for (retired, to) in &redirects {
            prop_assert!(
                m.graph.profiles.contains_key(to),
                "{retired} -> {to}: not live"
            );
            prop_assert!(!m.graph.profiles.contains_key(retired), "{retired} is live");
            let creator = creators.get(retired);
            prop_assert!(creator.is_some(), "{retired} was created by no event");
            prop_assert_eq!(
                m.assignment().get(creator.unwrap()),
                Some(to),
                "{} points where its creating event is not",
                retired
            );
        }
        Ok(redirects)
    }

    /// `events` streamed in a shuffled order (every guard on) with late events applied in
    /// place leave the [`StoredState`] that replaying every late event leaves, and the
    /// events' profiles of canonical order.
    fn in_place_leaves_what_replays_leave(
        events: &[Observation],
        seed: u64,
    ) -> Result<(), TestCaseError> {
        let engine = engine(Guards::ALL);
        let order = shuffled(events.len(), seed);
        let mut replayed = MemoryResolver::new(engine.clone(), Constraints::default())
            .replaying_every_late_event();
        for &i in &order {
            replayed.ingest(events[i].clone());
        }
        let settled = streamed(&engine, events, &order);
        prop_assert_eq!(replayed.settled, 0);
        prop_assert_eq!(stored_state(&settled), stored_state(&replayed));
        let expected = canonical(&engine, events);
        prop_assert_eq!(settled.assignment(), expected.assignment());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever order events arrive in, every retired profile id points at the live
        /// profile holding the event that created it, so an id both runs retired points
        /// at the same profile in both — in canonical order, sorted streaming and
        /// shuffled streaming alike (every guard on: suspects and refusals split
        /// profiles and move events between replays).
        #[test]
        fn arrival_order_never_changes_where_retired_ids_point(
            events in events_strategy(40, 6),
            seed in any::<u64>(),
        ) {
            let engine = engine(Guards::ALL);
            let expected = canonical(&engine, &events);
            let sorted = streamed(&engine, &events, &(0..events.len()).collect::<Vec<_>>());
            let got = streamed(&engine, &events, &shuffled(events.len(), seed));
            prop_assert_eq!(got.assignment(), expected.assignment());
            let runs = [
                canonical_redirects(&expected, &events)?,
                canonical_redirects(&sorted, &events)?,
                canonical_redirects(&got, &events)?,
            ];
            for a in &runs {
                for b in &runs {
                    for (retired, to) in a {
                        if let Some(there) = b.get(retired) {
                            prop_assert_eq!(there, to, "{} points elsewhere", retired);
                        }
                    }
                }
            }
        }

        /// Whatever order events arrive in, streaming equals canonical rebuild, with every
        /// guard on (review items included): late events replay their region.
        #[test]
        fn arrival_order_never_changes_the_profiles(
            events in events_strategy(40, 6),
            seed in any::<u64>(),
        ) {
            let engine = engine(Guards::ALL);
            let order = shuffled(events.len(), seed);
            let expected = canonical(&engine, &events);
            let got = streamed(&engine, &events, &order);
            prop_assert_eq!(got.partition(), expected.partition());
            prop_assert_eq!(got.assignment(), expected.assignment(), "profile ids agree too");
        }

        /// Applying late events in place (when settled and witnessed) leaves exactly the
        /// state that replaying each one's region leaves — profiles, identifier states,
        /// refused links, events' profiles and where retired ids point — and both equal
        /// canonical order; every guard on.
        #[test]
        fn late_events_applied_in_place_leave_what_their_replay_leaves(
            events in events_strategy(40, 6),
            seed in any::<u64>(),
        ) {
            in_place_leaves_what_replays_leave(&events, seed)?;
        }

        /// Named late events and late events bringing never-seen identifiers of no class
        /// (order references, cookies, devices) too: applied in place only when their
        /// profile remembers the name (with room for more) and the witness stated it,
        /// they leave what their replay leaves. Names here agree leniently
        /// (`raj`/`rajesh`, one typo in `rajesh`/`rajesg`) or not at all, a profile can
        /// fill all its name slots, and order references join the identifier pool.
        #[test]
        fn named_late_events_applied_in_place_leave_what_their_replay_leaves(
            events in events_with_names(
                40,
                4,
                7,
                &["asha", "raj", "rajesh", "rajesg", "ravi", "meena", "priya"],
            ),
            seed in any::<u64>(),
        ) {
            in_place_leaves_what_replays_leave(&events, seed)?;
        }

        /// Merging is order-independent where no review item is raised: without guards the
        /// profiles are the connected components of shared identifiers, whatever the
        /// processing order (checked by processing in canonical and reversed time).
        #[test]
        fn merging_is_order_independent_without_review_items(events in events_strategy(40, 8)) {
            let engine = Engine::new(Policy {
                max_auto_merge: u32::MAX,
                ..Policy::default().with_guards(Guards::NONE)
            }, IDS);
            let forward = canonical(&engine, &events);
            prop_assume!(forward.reviews.is_empty());
            let mut reversed = events.clone();
            let n = reversed.len() as i64;
            for (i, o) in reversed.iter_mut().enumerate() {
                o.key.occurred_at = Utc.timestamp_opt(1_800_000_000 + (n - i as i64) * 60, 0).unwrap();
            }
            let backward = canonical(&engine, &reversed);
            prop_assert_eq!(forward.partition(), backward.partition());
            // And it is the connected components of shared identifiers.
            prop_assert_eq!(forward.partition(), components(&events));
        }
    }

    /// Connected components of events sharing an identifier (union-find).
    fn components(events: &[Observation]) -> BTreeSet<BTreeSet<Uuid>> {
        let mut parent: Vec<usize> = (0..events.len()).collect();
        fn find(p: &mut Vec<usize>, x: usize) -> usize {
            if p[x] != x {
                let r = find(p, p[x]);
                p[x] = r;
            }
            p[x]
        }
        let mut first: HashMap<&Identifier, usize> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            for id in &e.identifiers {
                if let Some(&j) = first.get(id) {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                } else {
                    first.insert(id, i);
                }
            }
        }
        partition_of((0..events.len()).map(|i| {
            let root = find(&mut parent, i);
            (events[i].key.event_id, Uuid::from_u128(root as u128))
        }))
    }

    #[test]
    fn a_counter_phone_turning_suspect_splits_what_it_joined() {
        let engine = engine(Guards::ALL);
        let counter = id(Phone, "+918040001234");
        let threshold = engine.policy.partner_threshold(LoyaltyId) as u32;
        let events: Vec<Observation> = (0..=threshold)
            .map(|n| {
                obs(
                    n,
                    vec![counter.clone(), id(LoyaltyId, &format!("L-{n}"))],
                    None,
                )
            })
            .collect();
        let mut m = MemoryResolver::new(engine.clone(), Constraints::default());
        for (n, e) in events.iter().enumerate() {
            m.ingest(e.clone());
            if (n as u32) < threshold {
                assert_eq!(
                    m.partition().len(),
                    1,
                    "before it is known, the phone links"
                );
            }
        }
        assert_eq!(
            m.partition().len(),
            events.len(),
            "once suspect, every bill stands alone"
        );
        assert!(m.suspects().contains(&counter));
        assert_eq!(m.partition(), canonical(&engine, &events).partition());
    }
}
