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

use domain::{Identifier, NormalizedEvent};
use sqlx::{PgConnection, Row};

use super::locks::{identifier_lock, profile_lock, try_lock_all};
use super::store;
use super::write::write;
use super::{ResolveReport, Resolver};
use crate::delta::{self, RegionReplay};
use crate::engine::{Graph, ProfileNode};
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
    /// Every event of the region with its current profile.
    events: Vec<(ProfileId, NormalizedEvent)>,
}

impl Region {
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
    /// identifiers linked), by the closure rule of [`crate::region`], answered from
    /// Postgres one frontier at a time.
    async fn closure(
        &self,
        conn: &mut PgConnection,
        seed: &[Identifier],
        newly: &[Identifier],
    ) -> Result<Region, sqlx::Error> {
        let policy = &self.engine.policy;
        let mut walk = RegionWalk::new(policy, seed, newly);
        let mut events: Vec<(ProfileId, NormalizedEvent)> = Vec::new();
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
            let rows = sqlx::query(&format!(
                "SELECT profile_id, {} FROM normalized_event WHERE profile_id = ANY($1)",
                store::EVENT_COLUMNS
            ))
            .bind(&new)
            .fetch_all(&mut *conn)
            .await?;
            for r in rows {
                if let Some(e) = store::event_of(&r) {
                    walk.follow(policy.usable(&Observation::of(&e).identifiers));
                    events.push((r.get("profile_id"), e));
                }
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
            .map(|(p, e)| (Some(*p), e))
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
        let old: HashMap<ProfileId, ProfileNode> = store::profiles(conn, &old_profiles)
            .await?
            .into_iter()
            .map(|p| (p.id, p.node))
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

        let delta = delta::region(RegionReplay {
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
            changed: delta.changed().collect(),
            removed: delta.removed().collect(),
            ..ResolveReport::default()
        })
    }
}
