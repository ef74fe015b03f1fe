//! Region replay: resolving events that arrived late, or that made an identifier
//! suspect, so the outcome is what canonical (time) order gives. One replay per
//! resolver step takes all of its late events together.
//!
//! The region is every live profile the event could affect, closed under "one of the
//! region's events carries a non-suspect identifier held by another profile, or
//! refused by another profile's event, or named in an analyst's constraint". Its
//! events plus the new one are re-applied in canonical order from nothing
//! ([`Engine::replay`](crate::engine::Engine::replay)); the region's profiles are then
//! rewritten. Profile ids are derived from creating events, so profiles that come out
//! the same keep their ids; a profile that no longer exists becomes a tombstone of the
//! profile that received most of its events, and every profile that now joins several
//! old ones gets a `replay` merge-history row with their snapshots.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use domain::{Identifier, NormalizedEvent};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::locks::{identifier_lock, profile_lock, try_lock_all};
use super::store::{self, ProfileWrite, Sighting};
use super::{ResolveReport, Resolver};
use crate::engine::{AbsorbedProfile, Graph, MergeRecord, PartnerSet, ProfileNode};
use crate::facts::ProfileFacts;
use crate::model::{EventKey, Observation, ProfileId, order_ref};
use crate::rules::MergeRule;

/// How a region rewrite records the merges it makes.
pub(crate) struct History {
    /// The rule written to `merge_history`.
    pub rule: MergeRule,
    /// The actor written to `merge_history`.
    pub actor: String,
}

impl History {
    pub(crate) fn replay() -> Self {
        Self {
            rule: MergeRule::Replay,
            actor: "identity-merger".to_owned(),
        }
    }
}

/// The closed region of an event.
#[derive(Debug, PartialEq)]
pub(crate) struct Region {
    profiles: BTreeSet<ProfileId>,
    /// Every event of the region with its current profile.
    events: Vec<(ProfileId, NormalizedEvent)>,
}

impl Region {
    fn lock_keys(&self, policy: &crate::policy::Policy, extra: &[Identifier]) -> BTreeSet<i64> {
        let mut keys: BTreeSet<i64> = self.profiles.iter().map(|p| profile_lock(*p)).collect();
        for (_, ev) in &self.events {
            keys.extend(
                policy
                    .usable(&Observation::of(ev).identifiers)
                    .iter()
                    .map(identifier_lock),
            );
        }
        keys.extend(extra.iter().map(identifier_lock));
        keys
    }
}

impl Resolver {
    /// Computes the closed region of `seed` and try-locks everything it needs beyond
    /// `keys` (which grows by what was needed). `None` when a lock was busy or the region
    /// grew meanwhile: the caller rolls back and starts again with `keys` taken up front.
    pub(crate) async fn lock_region(
        &self,
        conn: &mut PgConnection,
        seed: &[Identifier],
        newly: &[Identifier],
        keys: &mut BTreeSet<i64>,
    ) -> Result<Option<Region>, sqlx::Error> {
        let region = self.closure(conn, seed, newly).await?;
        let needed = region.lock_keys(&self.engine.policy, seed);
        let missing: BTreeSet<i64> = needed.difference(keys).copied().collect();
        keys.extend(needed);
        if !try_lock_all(conn, &missing).await? {
            return Ok(None);
        }
        // Under the locks the region must not have grown since it was read.
        let again = self.closure(conn, seed, newly).await?;
        if again.profiles != region.profiles || again.events.len() != region.events.len() {
            keys.extend(again.lock_keys(&self.engine.policy, seed));
            return Ok(None);
        }
        Ok(Some(region))
    }

    /// The closed region of an event carrying `seed` (plus what `newly` suspect
    /// identifiers linked).
    async fn closure(
        &self,
        conn: &mut PgConnection,
        seed: &[Identifier],
        newly: &[Identifier],
    ) -> Result<Region, sqlx::Error> {
        let policy = &self.engine.policy;
        let mut profiles: BTreeSet<ProfileId> = BTreeSet::new();
        let mut events: Vec<(ProfileId, NormalizedEvent)> = Vec::new();
        let mut seen: BTreeSet<Identifier> = BTreeSet::new();
        let mut frontier: Vec<Identifier> = seed.iter().chain(newly.iter()).cloned().collect();
        loop {
            frontier.retain(|i| seen.insert(i.clone()));
            if frontier.is_empty() {
                break;
            }
            let states = store::identifier_states(conn, &frontier).await?;
            let linking: Vec<Identifier> = frontier
                .drain(..)
                .filter(|id| {
                    newly.contains(id)
                        || !(policy.guards.suspect && states.get(id).is_some_and(|s| s.0.suspect))
                })
                .collect();
            let mut found: BTreeSet<ProfileId> =
                store::owners(conn, &linking).await?.into_values().collect();
            found.extend(store::refusing_profiles(conn, &linking).await?);
            for c in store::constraints_touching(conn, &linking).await? {
                frontier.extend(c.left.into_iter().chain(c.right));
            }
            let new: Vec<ProfileId> = found
                .into_iter()
                .filter(|p| !profiles.contains(p))
                .collect();
            if new.is_empty() {
                continue;
            }
            profiles.extend(new.iter().copied());
            let rows = sqlx::query(&format!(
                "SELECT profile_id, {} FROM normalized_event WHERE profile_id = ANY($1)",
                store::EVENT_COLUMNS
            ))
            .bind(&new)
            .fetch_all(&mut *conn)
            .await?;
            for r in rows {
                if let Some(e) = store::event_of(&r) {
                    frontier.extend(policy.usable(&Observation::of(&e).identifiers));
                    events.push((r.get("profile_id"), e));
                }
            }
        }
        events.sort_by_key(|(_, e)| EventKey::of(e));
        Ok(Region { profiles, events })
    }

    /// Replays the region with the new event and writes the result.
    pub(crate) async fn rewrite_region(
        &self,
        conn: &mut PgConnection,
        new_events: &[&NormalizedEvent],
        region: Region,
        mut partners: HashMap<Identifier, PartnerSet>,
        newly: &[Identifier],
        history: &History,
    ) -> Result<ResolveReport, sqlx::Error> {
        let policy = &self.engine.policy;
        let mut all: Vec<&NormalizedEvent> = region.events.iter().map(|(_, e)| e).collect();
        all.extend(new_events.iter().copied());
        all.sort_by_key(|e| EventKey::of(e));
        let observations: Vec<Observation> = all.iter().map(|e| Observation::of(e)).collect();
        let mut all_ids: BTreeSet<Identifier> = BTreeSet::new();
        for o in &observations {
            all_ids.extend(policy.usable(&o.identifiers));
        }
        let all_ids: Vec<Identifier> = all_ids.into_iter().collect();

        // The region's graph: its profiles, the identifiers its events carry.
        let old_profiles: Vec<ProfileId> = region.profiles.iter().copied().collect();
        let loaded = store::profiles(conn, &old_profiles).await?;
        let old_nodes: HashMap<ProfileId, ProfileNode> =
            loaded.into_iter().map(|p| (p.id, p.node)).collect();
        let states = store::identifier_states(conn, &all_ids).await?;
        let owners = store::owners(conn, &all_ids).await?;
        let mut graph = Graph::default();
        for id in &all_ids {
            let (mut node, set) = states.get(id).cloned().unwrap_or_default();
            node.owner = owners.get(id).copied();
            if newly.contains(id) {
                node.suspect = true;
            }
            graph.identifiers.insert(id.clone(), node);
            partners.entry(id.clone()).or_insert(set);
        }
        for (id, node) in &old_nodes {
            graph.profiles.insert(*id, node.clone());
        }
        for c in store::constraints_touching(conn, &all_ids).await? {
            graph.constraints.push(c);
        }
        let outcomes = self
            .engine
            .replay(&mut graph, &region.profiles, observations.clone());

        // Where every event ended up.
        let mut absorbed_into: HashMap<ProfileId, ProfileId> = HashMap::new();
        for o in &outcomes {
            for m in &o.merges {
                for a in &m.absorbed {
                    absorbed_into.insert(a.profile_id, m.survivor);
                }
            }
        }
        let final_of = |mut p: ProfileId| {
            for _ in 0..=absorbed_into.len() {
                match absorbed_into.get(&p) {
                    Some(next) => p = *next,
                    None => break,
                }
            }
            p
        };
        let assignment: Vec<(Uuid, ProfileId)> = outcomes
            .iter()
            .map(|o| (o.event_id, final_of(o.profile_id)))
            .collect();
        let profile_of: HashMap<Uuid, ProfileId> = assignment.iter().copied().collect();
        for e in new_events {
            if let Some(profile_id) = profile_of.get(&e.event_id) {
                tracing::debug!(event_id = %e.event_id, %profile_id, "event resolved by a region replay");
            }
        }
        let new_profiles: BTreeSet<ProfileId> = assignment.iter().map(|(_, p)| *p).collect();
        let mut facts: HashMap<ProfileId, ProfileFacts> = HashMap::new();
        for e in &all {
            facts.entry(profile_of[&e.event_id]).or_default().observe(e);
        }

        // Old profiles that no longer exist go to the profile with most of their events.
        let mut moved: BTreeMap<ProfileId, BTreeMap<ProfileId, usize>> = BTreeMap::new();
        for (old, e) in &region.events {
            *moved
                .entry(*old)
                .or_default()
                .entry(profile_of[&e.event_id])
                .or_default() += 1;
        }
        let tombstones: Vec<(ProfileId, ProfileId)> = region
            .profiles
            .iter()
            .filter(|p| !new_profiles.contains(p))
            .filter_map(|p| {
                let targets = moved.get(p)?;
                let (into, _) = targets
                    .iter()
                    .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))?;
                Some((*p, *into))
            })
            .collect();

        let new_list: Vec<ProfileId> = new_profiles.iter().copied().collect();
        sqlx::query(
            "INSERT INTO customer_profile (id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING",
        )
        .bind(&new_list)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM profile_identifier WHERE profile_id = ANY($1)")
            .bind(&old_profiles)
            .execute(&mut *conn)
            .await?;
        let (kinds, values) = store::split(newly);
        sqlx::query(
            "DELETE FROM profile_identifier pi USING unnest($1::text[], $2::text[]) AS u(kind, value) \
             WHERE pi.kind = u.kind AND pi.value = u.value",
        )
        .bind(&kinds)
        .bind(&values)
        .execute(&mut *conn)
        .await?;
        store::tombstone(conn, &tombstones).await?;
        let empty = ProfileFacts::default();
        let writes: Vec<ProfileWrite<'_>> = new_list
            .iter()
            .filter_map(|p| {
                Some(ProfileWrite {
                    id: *p,
                    node: graph.profiles.get(p)?,
                    facts: facts.get(p).unwrap_or(&empty),
                })
            })
            .collect();
        store::upsert_profiles(conn, &writes).await?;
        store::assign_events(conn, &assignment).await?;

        let mut sightings = Vec::new();
        let mut orders = Vec::new();
        for e in &all {
            let p = profile_of[&e.event_id];
            for id in policy.usable(&Observation::of(e).identifiers) {
                if graph.identifiers.get(&id).and_then(|n| n.owner) == Some(p) {
                    sightings.push((id, p, e.source, e.occurred_at));
                }
            }
            if let Some(order) = &e.order {
                let owner = graph
                    .identifiers
                    .get(&order_ref(e.source, &order.order_id))
                    .and_then(|n| n.owner)
                    .unwrap_or(p);
                orders.push((e.source, order.order_id.clone(), owner));
            }
        }
        let sightings: Vec<Sighting<'_>> = sightings
            .iter()
            .map(|(id, p, source, at)| Sighting {
                identifier: id,
                profile: *p,
                source: *source,
                at: *at,
            })
            .collect();
        store::upsert_holdings(conn, &sightings).await?;
        let identifier_states: BTreeMap<Identifier, store::IdentifierWrite> = all_ids
            .iter()
            .filter_map(|id| {
                let node = graph.identifiers.get(id)?;
                Some((
                    id.clone(),
                    store::IdentifierWrite::of(
                        node,
                        partners.get(id).cloned().unwrap_or_default(),
                    )?,
                ))
            })
            .collect();
        store::upsert_identifier_states(conn, &identifier_states).await?;

        let event_ids: Vec<Uuid> = all.iter().map(|e| e.event_id).collect();
        sqlx::query("DELETE FROM identity_refused_link WHERE event_id = ANY($1)")
            .bind(&event_ids)
            .execute(&mut *conn)
            .await?;
        let refused: Vec<(Identifier, Uuid, crate::rules::Withheld)> = outcomes
            .iter()
            .flat_map(|o| {
                o.withheld
                    .iter()
                    .map(move |(id, why)| (id.clone(), o.event_id, *why))
            })
            .collect();
        store::insert_refused(conn, &refused).await?;

        // History: every resulting profile that joins old profiles other than itself.
        let mut merges = Vec::new();
        for n in &new_list {
            let absorbed: Vec<AbsorbedProfile> = tombstones
                .iter()
                .filter(|(_, into)| into == n)
                .filter_map(|(old, _)| {
                    let node = old_nodes.get(old)?;
                    Some(AbsorbedProfile {
                        profile_id: *old,
                        identifiers: node.identifiers.iter().cloned().collect(),
                        names: node.names.iter().cloned().collect(),
                    })
                })
                .collect();
            if absorbed.is_empty() {
                continue;
            }
            merges.push(MergeRecord {
                survivor: *n,
                survivor_identifiers: old_nodes
                    .get(n)
                    .map(|x| x.identifiers.iter().cloned().collect())
                    .unwrap_or_default(),
                absorbed,
                rule: history.rule,
                matched: Vec::new(),
                trigger_event_id: new_events.first().map(|e| e.event_id),
            });
        }
        let merge_ids = store::insert_merges(conn, &merges, &history.actor).await?;
        let reviews: Vec<_> = outcomes.iter().filter_map(|o| o.review.clone()).collect();
        let raised = store::insert_reviews(conn, &reviews, &final_of).await?;
        let orders: Vec<_> = orders
            .into_iter()
            .map(|(s, o, p)| (s, o, final_of(p)))
            .collect();
        store::attribute_orders(conn, &orders).await?;
        store::refresh_order_aggregates(conn, &new_list).await?;
        store::queue_predictions(conn, &new_list, self.debounce).await?;

        if !newly.is_empty() {
            tracing::info!(
                suspects = newly.len(),
                "identifiers learned to be shared; their region was replayed"
            );
        }
        Ok(ResolveReport {
            resolved: new_events.len(),
            merge_ids,
            merges: merges.len(),
            reviews: raised,
            replays: 1,
            changed: new_profiles,
            removed: tombstones.iter().map(|(p, _)| *p).collect(),
            ..ResolveReport::default()
        })
    }
}
