//! Region replay: resolving events that arrived late, or that made an identifier
//! suspect, so the outcome is what canonical (time) order gives. One replay per
//! resolver step takes all of its late events together.
//!
//! The region is every live profile the event could affect, closed under "one of the
//! region's events carries a linking identifier held by another profile, or refused by
//! another profile's event, or named in an analyst's constraint" ([`crate::region`],
//! the rule both resolvers share). Its
//! events plus the new one are re-applied in canonical order from nothing
//! ([`Engine::replay`](crate::engine::Engine::replay)); the region's profiles are then
//! rewritten ([`delta::region`](crate::delta::region), written by the resolver's one
//! write). Profile ids are derived from creating events, so profiles that come out the
//! same keep their ids; a profile that no longer exists becomes a tombstone of the
//! profile that now holds the event that created it, every stored tombstone whose
//! creating event moved is re-pointed there ([`crate::redirect`]), and every profile
//! that now joins several old ones gets a `replay` merge-history row with their
//! snapshots.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use domain::{Identifier, NormalizedEvent};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::locks::{identifier_lock, profile_lock, try_lock_all};
use super::store;
use super::write::write;
use super::{ResolveReport, Resolver};
use crate::delta::{self, RegionReplay};
use crate::engine::{Graph, ProfileNode};
use crate::facts::ProfileFacts;
use crate::model::{EventKey, Observation, ProfileId};
use crate::region::RegionWalk;
use crate::rules::{MergeRule, PartnerSet};

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
    /// Every event of the region with its current profile. Shared, so the walk repeated
    /// under the locks takes the events it already read without copying them.
    events: Vec<(ProfileId, Arc<NormalizedEvent>)>,
}

impl Region {
    /// Whether `other` has the same profiles and the same events on the same profiles.
    fn same_as(&self, other: &Region) -> bool {
        self.profiles == other.profiles
            && self.events.len() == other.events.len()
            && self
                .events
                .iter()
                .zip(&other.events)
                .all(|((p, e), (q, f))| p == q && e.event_id == f.event_id)
    }

    fn lock_keys(&self, policy: &crate::rules::Policy, extra: &[Identifier]) -> BTreeSet<i64> {
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
        let region = self.closure(conn, seed, newly, None).await?;
        let needed = region.lock_keys(&self.engine.policy, seed);
        let missing: BTreeSet<i64> = needed.difference(keys).copied().collect();
        keys.extend(needed);
        if !try_lock_all(conn, &missing).await? {
            return Ok(None);
        }
        // Under the locks the region must not have changed since it was read. The walk
        // is repeated, but the events already read are not read again: only their ids
        // are listed, and only events it did not know are fetched whole.
        let again = self.closure(conn, seed, newly, Some(&region)).await?;
        if !again.same_as(&region) {
            keys.extend(again.lock_keys(&self.engine.policy, seed));
            return Ok(None);
        }
        Ok(Some(region))
    }

    /// The closed region of an event carrying `seed` (plus what `newly` suspect
    /// identifiers linked), by the closure rule of [`crate::region`], answered from
    /// Postgres one frontier at a time. With `known` (the same region read before), an
    /// event still on the profile it had there is taken from it instead of read again.
    async fn closure(
        &self,
        conn: &mut PgConnection,
        seed: &[Identifier],
        newly: &[Identifier],
        known: Option<&Region>,
    ) -> Result<Region, sqlx::Error> {
        let policy = &self.engine.policy;
        let mut walk = RegionWalk::new(policy, seed, newly);
        let mut events: Vec<(ProfileId, Arc<NormalizedEvent>)> = Vec::new();
        let known: HashMap<Uuid, (ProfileId, &Arc<NormalizedEvent>)> = known
            .map(|r| {
                r.events
                    .iter()
                    .map(|(p, e)| (e.event_id, (*p, e)))
                    .collect()
            })
            .unwrap_or_default();
        loop {
            let frontier = walk.next_batch();
            if frontier.is_empty() {
                break;
            }
            let states = store::identifier_states(conn, &frontier).await?;
            let linking: Vec<Identifier> = frontier
                .into_iter()
                .filter(|id| walk.links(id, states.get(id).is_some_and(|s| s.0.suspect)))
                .collect();
            let mut found: BTreeSet<ProfileId> =
                store::owners(conn, &linking).await?.into_values().collect();
            found.extend(store::refusing_profiles(conn, &linking).await?);
            for c in store::constraints_touching(conn, &linking).await? {
                walk.follow(c.left.into_iter().chain(c.right));
            }
            let new = walk.add_profiles(found);
            if new.is_empty() {
                continue;
            }
            for (p, e) in region_events(conn, &new, &known).await? {
                walk.follow(policy.usable(&Observation::of(&e).identifiers));
                events.push((p, e));
            }
        }
        events.sort_by_key(|(_, e)| EventKey::of(e));
        Ok(Region {
            profiles: walk.into_profiles(),
            events,
        })
    }

    /// Replays the region with the new events and writes the result.
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
        let mut events: Vec<(Option<ProfileId>, &NormalizedEvent, Vec<Identifier>)> = region
            .events
            .iter()
            .map(|(p, e)| (Some(*p), &**e))
            .chain(new_events.iter().map(|e| (None, *e)))
            .map(|(p, e)| (p, e, policy.usable(&Observation::of(e).identifiers)))
            .collect();
        events.sort_by_key(|(_, e, _)| EventKey::of(e));
        events.dedup_by_key(|(_, e, _)| e.event_id);
        let observations: Vec<Observation> =
            events.iter().map(|(_, e, _)| Observation::of(e)).collect();
        let all_ids: Vec<Identifier> = events
            .iter()
            .flat_map(|(_, _, usable)| usable.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();

        // The region's graph: its profiles, the identifiers its events carry.
        let old_profiles: Vec<ProfileId> = region.profiles.iter().copied().collect();
        let stored: HashMap<ProfileId, (ProfileNode, ProfileFacts)> =
            store::profiles(conn, &old_profiles)
                .await?
                .into_iter()
                .map(|p| (p.id, (p.node, p.facts)))
                .collect();
        let old: HashMap<ProfileId, ProfileNode> = stored
            .iter()
            .map(|(id, (node, _))| (*id, node.clone()))
            .collect();
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
        for (id, node) in &old {
            graph.profiles.insert(*id, node.clone());
        }
        for c in store::constraints_touching(conn, &all_ids).await? {
            graph.constraints.push(c);
        }
        let outcomes = self
            .engine
            .replay(&mut graph, &region.profiles, observations);
        for o in outcomes
            .iter()
            .filter(|o| new_events.iter().any(|e| e.event_id == o.event_id))
        {
            tracing::debug!(event_id = %o.event_id, profile_id = %o.profile_id, "event resolved by a region replay");
        }

        let mut delta = delta::region(RegionReplay {
            ids: self.engine.ids,
            old: &old,
            old_profiles: &region.profiles,
            events: &events,
            outcomes: &outcomes,
            graph,
            partners: &partners,
            suspects: newly,
            rule: history.rule,
            actor: &history.actor,
            trigger: new_events.first().map(|e| e.event_id),
        });
        delta.without_unchanged(&stored);
        let written = write(conn, &delta, self.debounce).await?;
        if !newly.is_empty() {
            tracing::info!(
                suspects = newly.len(),
                "identifiers learned to be shared; their region was replayed"
            );
        }
        Ok(ResolveReport {
            resolved: new_events.len(),
            merge_ids: written.merge_ids,
            merges: delta.merges.len(),
            reviews: written.reviews,
            replays: 1,
            replayed_events: events.len(),
            changed: delta.changed().collect(),
            removed: delta.removed().collect(),
            ..ResolveReport::default()
        })
    }
}

/// The events of `profiles`, each with its profile. Events found in `known` on the same
/// profile are taken from there; only the others are read whole (the walk under the
/// locks lists the region's events by id and reads nothing it already has).
async fn region_events(
    conn: &mut PgConnection,
    profiles: &[ProfileId],
    known: &HashMap<Uuid, (ProfileId, &Arc<NormalizedEvent>)>,
) -> Result<Vec<(ProfileId, Arc<NormalizedEvent>)>, sqlx::Error> {
    let mut out = Vec::new();
    let unknown: Vec<Uuid> = if known.is_empty() {
        Vec::new()
    } else {
        let listed: Vec<(Uuid, ProfileId)> = sqlx::query_as(
            "SELECT event_id, profile_id FROM normalized_event WHERE profile_id = ANY($1)",
        )
        .bind(profiles)
        .fetch_all(&mut *conn)
        .await?;
        let mut unknown = Vec::new();
        for (id, p) in listed {
            match known.get(&id) {
                Some((q, e)) if *q == p => out.push((p, Arc::clone(e))),
                _ => unknown.push(id),
            }
        }
        if unknown.is_empty() {
            return Ok(out);
        }
        unknown
    };
    let rows = if known.is_empty() {
        sqlx::query(&format!(
            "SELECT profile_id, {} FROM normalized_event WHERE profile_id = ANY($1)",
            store::EVENT_COLUMNS
        ))
        .bind(profiles)
        .fetch_all(&mut *conn)
        .await?
    } else {
        sqlx::query(&format!(
            "SELECT profile_id, {} FROM normalized_event WHERE event_id = ANY($1) AND profile_id = ANY($2)",
            store::EVENT_COLUMNS
        ))
        .bind(&unknown)
        .bind(profiles)
        .fetch_all(&mut *conn)
        .await?
    };
    for r in rows {
        if let Some(e) = store::event_of(&r) {
            out.push((r.get("profile_id"), Arc::new(e)));
        }
    }
    Ok(out)
}
