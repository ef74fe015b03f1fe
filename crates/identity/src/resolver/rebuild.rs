//! `ctl identity rebuild`: recomputes every profile from the stored normalised events.
//!
//! One transaction, holding the fleet lock exclusively (merger replicas wait, then
//! carry on against the rebuilt graph). The events are read in canonical order and
//! resolved in memory by the same engine streaming uses, with the final set of suspect
//! identifiers known up front and every analyst constraint applied; then the graph is
//! written back set-based. Profile ids derive from the events that create them, so a
//! rebuild of what streaming produced rewrites the same profiles under the same ids,
//! and only what differs moves. Old profiles that no longer exist become tombstones of
//! the profile that received most of their events (`merge_history` rule `rebuild`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use domain::{Identifier, Source};
use futures::TryStreamExt as _;
use sqlx::Row;
use uuid::Uuid;

use super::locks::fleet_exclusive;
use super::store::{self, IdentifierWrite, ProfileWrite};
use super::{ResolveError, Resolver};
use crate::engine::{AbsorbedProfile, Constraints, MergeRecord};
use crate::facts::ProfileFacts;
use crate::memory::MemoryResolver;
use crate::model::{EventKey, Observation, ProfileId, order_ref};
use crate::rules::MergeRule;

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// Events resolved.
    pub events: usize,
    /// Live profiles after the rebuild.
    pub profiles: usize,
    /// Events whose profile changed.
    pub moved_events: usize,
    /// Old live profiles that became tombstones.
    pub retired_profiles: usize,
    /// Review items raised (new ones; items already in the queue are kept).
    pub reviews: usize,
    /// Identifiers found to be shared by many people.
    pub suspects: usize,
    /// Time spent reading and resolving.
    pub resolve_time: Duration,
    /// Time spent writing.
    pub write_time: Duration,
}

impl Resolver {
    /// Recomputes every profile from the stored events (see the module doc).
    pub async fn rebuild(&self) -> Result<RebuildReport, ResolveError> {
        let started = Instant::now();
        let mut tx = self.db.begin().await?;
        fleet_exclusive(&mut tx).await?;
        let constraints = store::all_constraints(&mut tx).await?;

        // Pass 1: what resolution needs of every event, in canonical order.
        let mut observations: Vec<Observation> = Vec::new();
        let mut old_profile: HashMap<Uuid, Option<ProfileId>> = HashMap::new();
        {
            let mut rows = sqlx::query(
                "SELECT event_id, occurred_at, channel, identifiers, traits, order_data->>'order_id' AS order_id, \
                        source, profile_id \
                 FROM normalized_event ORDER BY occurred_at, event_id",
            )
            .fetch(&mut *tx);
            while let Some(r) = rows.try_next().await? {
                let event_id: Uuid = r.get("event_id");
                let identifiers: sqlx::types::Json<Vec<Identifier>> = r.get("identifiers");
                let traits: sqlx::types::Json<serde_json::Map<String, serde_json::Value>> =
                    r.get("traits");
                let channel = r
                    .get::<&str, _>("channel")
                    .parse()
                    .unwrap_or(domain::Channel::Api);
                let mut ids = identifiers.0;
                if let (Some(order_id), Ok(source)) = (
                    r.get::<Option<&str>, _>("order_id"),
                    r.get::<&str, _>("source").parse::<Source>(),
                ) {
                    ids.push(order_ref(source, order_id));
                }
                ids.sort();
                ids.dedup();
                observations.push(Observation {
                    key: EventKey {
                        occurred_at: r.get("occurred_at"),
                        event_id,
                    },
                    identifiers: ids,
                    name: crate::model::person_name(channel, &traits.0),
                });
                old_profile.insert(event_id, r.get("profile_id"));
            }
        }
        let events = observations.len();
        let memory = MemoryResolver::rebuild(
            self.engine.clone(),
            Constraints::new(constraints),
            observations,
        );
        let assignment = memory.assignment();
        let resolve_time = started.elapsed();

        // Pass 2: facts and identifier sightings of the new profiles.
        let write_started = Instant::now();
        let mut facts: HashMap<ProfileId, ProfileFacts> = HashMap::new();
        let mut seen: HashMap<Identifier, store::Seen> = HashMap::new();
        let mut orders: Vec<(Source, String, ProfileId)> = Vec::new();
        {
            let sql = format!(
                "SELECT {} FROM normalized_event ORDER BY occurred_at, event_id",
                store::EVENT_COLUMNS
            );
            let mut rows = sqlx::query(&sql).fetch(&mut *tx);
            while let Some(r) = rows.try_next().await? {
                let Some(ev) = store::event_of(&r) else {
                    continue;
                };
                let Some(&p) = assignment.get(&ev.event_id) else {
                    continue;
                };
                facts.entry(p).or_default().observe(&ev);
                for id in self.engine.policy.usable(&Observation::of(&ev).identifiers) {
                    if memory.graph.identifiers.get(&id).and_then(|n| n.owner) == Some(p) {
                        let e = seen.entry(id).or_insert((
                            p,
                            ev.source,
                            ev.occurred_at,
                            ev.occurred_at,
                            0,
                        ));
                        e.3 = e.3.max(ev.occurred_at);
                        e.4 += 1;
                    }
                }
                if let Some(order) = &ev.order {
                    let reference = order_ref(ev.source, &order.order_id);
                    let owner = memory
                        .graph
                        .identifiers
                        .get(&reference)
                        .and_then(|n| n.owner)
                        .unwrap_or(p);
                    orders.push((ev.source, order.order_id.clone(), owner));
                }
            }
        }

        // Old live profiles that no longer exist go to the profile with most of their events.
        let old_live: Vec<(ProfileId, Vec<String>)> = sqlx::query_as(
            "SELECT id, ARRAY(SELECT kind || ':' || value FROM profile_identifier pi WHERE pi.profile_id = p.id) \
             FROM customer_profile p WHERE merged_into IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let new_live: BTreeSet<ProfileId> = memory.graph.profiles.keys().copied().collect();
        let mut moved_to: HashMap<ProfileId, BTreeMap<ProfileId, usize>> = HashMap::new();
        let mut moved_events = Vec::new();
        for (event, new) in assignment {
            match old_profile.get(event).copied().flatten() {
                Some(old) if old == *new => {}
                Some(old) => {
                    *moved_to.entry(old).or_default().entry(*new).or_default() += 1;
                    moved_events.push((*event, *new));
                }
                None => moved_events.push((*event, *new)),
            }
        }
        let mut retired: Vec<(ProfileId, ProfileId)> = Vec::new();
        let mut history: BTreeMap<ProfileId, Vec<AbsorbedProfile>> = BTreeMap::new();
        for (old, held) in &old_live {
            if new_live.contains(old) {
                continue;
            }
            let Some((into, _)) = moved_to.get(old).and_then(|m| {
                m.iter()
                    .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            }) else {
                continue; // a profile without events (all erased): leave it
            };
            retired.push((*old, *into));
            history.entry(*into).or_default().push(AbsorbedProfile {
                profile_id: *old,
                identifiers: held
                    .iter()
                    .filter_map(|s| {
                        let (k, v) = s.split_once(':')?;
                        Some(Identifier {
                            kind: k.parse().ok()?,
                            value: v.to_owned(),
                        })
                    })
                    .collect(),
                names: Vec::new(),
            });
        }

        let new_list: Vec<ProfileId> = new_live.iter().copied().collect();
        for chunk in new_list.chunks(10_000) {
            sqlx::query("INSERT INTO customer_profile (id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING")
                .bind(chunk)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM profile_identifier")
            .execute(&mut *tx)
            .await?;
        store::tombstone(&mut tx, &retired).await?;
        let empty = ProfileFacts::default();
        let writes: Vec<ProfileWrite<'_>> = new_list
            .iter()
            .map(|p| ProfileWrite {
                id: *p,
                node: &memory.graph.profiles[p],
                facts: facts.get(p).unwrap_or(&empty),
            })
            .collect();
        store::upsert_profiles(&mut tx, &writes).await?;
        store::assign_events(&mut tx, &moved_events).await?;
        let seen: Vec<(&Identifier, store::Seen)> = seen.iter().map(|(id, s)| (id, *s)).collect();
        store::upsert_seen(&mut tx, &seen).await?;
        sqlx::query("DELETE FROM identity_identifier")
            .execute(&mut *tx)
            .await?;
        let states: BTreeMap<Identifier, IdentifierWrite> = memory
            .graph
            .identifiers
            .iter()
            .filter_map(|(id, node)| {
                Some((
                    id.clone(),
                    IdentifierWrite::of(
                        node,
                        memory.partners().get(id).cloned().unwrap_or_default(),
                    )?,
                ))
            })
            .collect();
        store::upsert_identifier_states(&mut tx, &states).await?;
        sqlx::query("DELETE FROM identity_refused_link")
            .execute(&mut *tx)
            .await?;
        let refused: Vec<(Identifier, Uuid, crate::rules::Withheld)> = memory
            .refused()
            .iter()
            .flat_map(|(id, events)| events.iter().map(move |(e, why)| (id.clone(), *e, *why)))
            .collect();
        store::insert_refused(&mut tx, &refused).await?;
        let merges: Vec<MergeRecord> = history
            .into_iter()
            .map(|(survivor, absorbed)| MergeRecord {
                survivor,
                survivor_identifiers: Vec::new(),
                absorbed,
                rule: MergeRule::Replay,
                matched: Vec::new(),
                trigger_event_id: None,
            })
            .collect();
        store::insert_merges(&mut tx, &merges, "ctl identity rebuild").await?;
        let reviews = store::insert_reviews(&mut tx, &memory.reviews, &|p| p).await?;
        store::attribute_orders(&mut tx, &orders).await?;
        store::refresh_order_aggregates(&mut tx, &new_list).await?;
        let changed: BTreeSet<ProfileId> = moved_events.iter().map(|(_, p)| *p).collect();
        store::queue_predictions(
            &mut tx,
            &changed.iter().copied().collect::<Vec<_>>(),
            self.debounce,
        )
        .await?;
        tx.commit().await?;

        // Documents: rewrite what changed, drop what retired.
        let mut refresh: Vec<ProfileId> = changed.into_iter().collect();
        refresh.extend(retired.iter().map(|(p, _)| *p));
        for chunk in refresh.chunks(1_000) {
            if let Err(e) = self.cache.refresh_many(chunk).await {
                tracing::warn!(error = %e, "refreshing Customer 360 documents after the rebuild failed");
                break;
            }
        }
        Ok(RebuildReport {
            events,
            profiles: new_list.len(),
            moved_events: moved_events.len(),
            retired_profiles: retired.len(),
            reviews,
            suspects: memory.suspects().len(),
            resolve_time,
            write_time: write_started.elapsed(),
        })
    }
}
