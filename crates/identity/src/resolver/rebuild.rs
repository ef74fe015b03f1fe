//! `ctl identity rebuild`: recomputes every profile from the stored normalised events.
//!
//! One transaction, holding the fleet lock exclusively (merger replicas wait, then
//! carry on against the rebuilt graph). The events are read in canonical order and
//! resolved in memory by the same engine streaming uses, with the final set of suspect
//! identifiers known up front and every analyst constraint applied; then
//! [`delta::rebuild`] computes what changed and the resolver's one set-based write
//! writes it. Profile ids derive from the events that create them, so a rebuild of what
//! streaming produced rewrites the same profiles under the same ids, and only what
//! differs moves. Old profiles that no longer exist become tombstones of the profile
//! that now holds the event that created them (`merge_history` rule `replay`, actor
//! `ctl identity rebuild`), and every stored tombstone is settled to point there too
//! ([`crate::redirect`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use domain::{Identifier, Source};
use futures::TryStreamExt as _;
use sqlx::Row;
use uuid::Uuid;

use super::locks::fleet_exclusive;
use super::store;
use super::write::write;
use super::{ResolveError, Resolver};
use crate::delta::{self, Effects};
use crate::engine::{AbsorbedProfile, Constraints};
use crate::memory::MemoryResolver;
use crate::model::{EventKey, Observation, ProfileId};

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
    /// Existing tombstones re-pointed (at the profile now holding their creating
    /// event); none after a rebuild of what streaming produced.
    pub repointed_tombstones: usize,
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
        let mut before: HashMap<Uuid, Option<ProfileId>> = HashMap::new();
        {
            let mut rows = sqlx::query(
                "SELECT event_id, occurred_at, channel, identifiers, traits, order_data->>'order_id' AS order_id, \
                        source, profile_id, properties->($1::text) AS link_only \
                 FROM normalized_event ORDER BY occurred_at, event_id",
            )
            .bind(domain::LINK_ONLY_PROPERTY)
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
                let order = match (
                    r.get::<Option<&str>, _>("order_id"),
                    r.get::<&str, _>("source").parse::<Source>(),
                ) {
                    (Some(order_id), Ok(source)) => Some((source, order_id)),
                    _ => None,
                };
                let key = EventKey {
                    occurred_at: r.get("occurred_at"),
                    event_id,
                };
                let link_only: Option<sqlx::types::Json<serde_json::Value>> = r.get("link_only");
                observations.push(Observation::from_parts(
                    key,
                    identifiers.0,
                    order,
                    channel,
                    &traits.0,
                    domain::link_only_of(link_only.as_ref().map(|j| &j.0)),
                ));
                before.insert(event_id, r.get("profile_id"));
            }
        }
        let events = observations.len();
        let memory = MemoryResolver::rebuild(
            self.engine.clone(),
            Constraints::new(constraints),
            observations,
        );
        let suspects = memory.suspects().len();
        let resolve_time = started.elapsed();

        // Pass 2: facts, identifier sightings and orders of the new profiles.
        let write_started = Instant::now();
        let mut effects = Effects::default();
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
                let Some(&p) = memory.assignment().get(&ev.event_id) else {
                    continue;
                };
                let usable = self.engine.policy.usable(&Observation::of(&ev).identifiers);
                effects.event(&ev, &usable, p, &memory.graph);
            }
        }

        // What every old live profile held: old profiles that no longer exist go to the
        // profile holding their creating event, with this snapshot in the merge history.
        let old_live: Vec<(ProfileId, Vec<String>, Vec<String>)> = sqlx::query_as(
            "SELECT id, name_keys, \
                    ARRAY(SELECT kind || ':' || value FROM profile_identifier pi WHERE pi.profile_id = p.id) \
             FROM customer_profile p WHERE merged_into IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let held: HashMap<ProfileId, AbsorbedProfile> = old_live
            .into_iter()
            .map(|(id, names, identifiers)| {
                let identifiers = identifiers
                    .iter()
                    .filter_map(|s| {
                        let (k, v) = s.split_once(':')?;
                        Some(Identifier {
                            kind: k.parse().ok()?,
                            value: v.to_owned(),
                        })
                    })
                    .collect();
                let snapshot = AbsorbedProfile {
                    profile_id: id,
                    identifiers,
                    names,
                };
                (id, snapshot)
            })
            .collect();

        // Every stored tombstone, to settle where each points.
        let stored: HashMap<ProfileId, ProfileId> = sqlx::query_as::<_, (ProfileId, ProfileId)>(
            "SELECT id, merged_into FROM customer_profile WHERE merged_into IS NOT NULL",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();

        let delta = delta::rebuild(
            effects,
            memory,
            &before,
            &held,
            &stored,
            "ctl identity rebuild",
        );
        let written = write(&mut tx, &delta, self.debounce).await?;
        tx.commit().await?;

        // Documents: rewrite what changed, drop what retired.
        let mut refresh: Vec<ProfileId> = delta.predictions.clone();
        refresh.extend(delta.removed());
        refresh.extend(delta.repoint.iter().map(|(_, into)| *into));
        refresh.sort();
        refresh.dedup();
        for chunk in refresh.chunks(1_000) {
            if let Err(e) = self.cache.refresh_many(chunk).await {
                tracing::warn!(error = %e, "refreshing Customer 360 documents after the rebuild failed");
                break;
            }
        }
        Ok(RebuildReport {
            events,
            profiles: delta.profiles.len(),
            moved_events: delta.assignment.len(),
            retired_profiles: delta.tombstones.len(),
            repointed_tombstones: delta.repoint.len(),
            reviews: written.reviews,
            suspects,
            resolve_time,
            write_time: write_started.elapsed(),
        })
    }
}
