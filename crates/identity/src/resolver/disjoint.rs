//! Resolving stored events of people who share nothing with what is already resolved,
//! in bulk: what seeds a large database (the pipeline benchmark's 1,000,000 existing
//! profiles) in minutes instead of the hours a forward step per batch would take.
//!
//! [`Resolver::resolve_disjoint`] resolves a set of stored, unresolved events by the
//! rebuild's code — the events in canonical order through [`MemoryResolver::rebuild`],
//! their effects and [`delta::rebuild`] — and writes the delta with the resolver's one
//! write, in one transaction under the fleet lock. Because none of the events'
//! identifiers (order references included) has been seen before, the rest of the graph
//! cannot affect them nor they it, so the rows written are the ones `ctl identity
//! rebuild`, or streaming the same events, would write for them (checked by
//! `bench/support`'s tests). Events that do touch a known identifier are refused as a
//! whole ([`Disjoint::Overlaps`]), nothing written. Unlike a rebuild, the write queues
//! prediction requests and profile changes as streaming does, and Customer 360
//! documents are not built (they are a cache, built on first read).

use std::collections::HashMap;

use domain::{Identifier, NormalizedEvent};
use uuid::Uuid;

use super::locks::fleet_exclusive;
use super::store::{self, split};
use super::write::write;
use super::{ResolveError, Resolver};
use crate::delta::{self, Effects, Rewrite};
use crate::engine::Constraints;
use crate::memory::MemoryResolver;
use crate::model::Observation;

/// What [`Resolver::resolve_disjoint`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disjoint {
    /// The events were resolved.
    Resolved {
        /// Events attached to a profile.
        events: usize,
        /// Live profiles they made.
        profiles: usize,
    },
    /// This many of the events' identifiers were already known: nothing was written
    /// (resolve such events with [`Resolver::resolve`]).
    Overlaps(i64),
}

impl Resolver {
    /// Resolves the stored, unresolved events `event_ids`, whose identifiers no resolved
    /// event carries, in one set-based write (see the module doc). Ids that are missing
    /// or already resolved are skipped.
    pub async fn resolve_disjoint(&self, event_ids: &[Uuid]) -> Result<Disjoint, ResolveError> {
        let mut tx = self.db.begin().await?;
        fleet_exclusive(&mut tx).await?;
        let sql = format!(
            "SELECT {} FROM normalized_event WHERE event_id = ANY($1) AND resolved_at IS NULL \
             ORDER BY occurred_at, event_id",
            store::EVENT_COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(event_ids)
            .fetch_all(&mut *tx)
            .await?;
        let events: Vec<NormalizedEvent> = rows.iter().filter_map(store::event_of).collect();
        let observations: Vec<Observation> = events.iter().map(Observation::of).collect();

        let mut carried: Vec<&Identifier> =
            observations.iter().flat_map(|o| &o.identifiers).collect();
        carried.sort();
        carried.dedup();
        let (kinds, values) = split(carried);
        let known: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM identity_identifier i \
             JOIN unnest($1::text[], $2::text[]) AS u(kind, value) \
               ON i.kind = u.kind AND i.value = u.value",
        )
        .bind(&kinds)
        .bind(&values)
        .fetch_one(&mut *tx)
        .await?;
        if known > 0 {
            tx.rollback().await?;
            return Ok(Disjoint::Overlaps(known));
        }

        let constraints = store::all_constraints(&mut tx).await?;
        let memory = MemoryResolver::rebuild(
            self.engine.clone(),
            Constraints::new(constraints),
            observations,
        );
        let mut effects = Effects::default();
        for ev in &events {
            let Some(&p) = memory.assignment().get(&ev.event_id) else {
                continue;
            };
            let usable = self.engine.policy.usable(&Observation::of(ev).identifiers);
            effects.event(ev, &usable, p, &memory.graph);
        }
        // Nothing was attached before, no profile is retired, no tombstone re-pointed.
        let mut delta = delta::rebuild(
            effects,
            memory,
            &HashMap::new(),
            &HashMap::new(),
            &HashMap::new(),
            &self.actor,
        );
        // Only these events' rows: nothing else is rewritten.
        delta.rewrite = Rewrite::Nothing;
        write(&mut tx, &delta, self.debounce).await?;
        tx.commit().await?;
        Ok(Disjoint::Resolved {
            events: delta.assignment.len(),
            profiles: delta.profiles.len(),
        })
    }
}
