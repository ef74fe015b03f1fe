//! Resolving events of people who share nothing with what is already resolved, in
//! bulk: what seeds a large database (the pipeline benchmark's 1,000,000 existing
//! profiles) in minutes instead of the hours a forward step per batch would take.
//!
//! Both entry points resolve a set of events by the rebuild's code — the events in
//! canonical order through [`MemoryResolver::rebuild`], their effects and
//! [`delta::rebuild`] — and write the delta with the resolver's one write, in one
//! transaction under the fleet lock. Because none of the events' identifiers (order
//! references included) has been seen before, the rest of the graph cannot affect them
//! nor they it, so the rows written are the ones `ctl identity rebuild`, or streaming the
//! same events, would write for them (checked by `bench/support`'s tests). Events that
//! do touch a known identifier are refused as a whole ([`Disjoint::Overlaps`]), nothing
//! written. Unlike a rebuild, the write queues prediction requests and profile changes
//! as streaming does, and Customer 360 documents are not built (they are a cache, built
//! on first read).
//!
//! - [`Resolver::resolve_disjoint`] resolves events the normalizer's writer already
//!   stored (each event row is then written twice: stored, then attributed).
//! - [`Resolver::seed_disjoint`] stores and resolves new events in the same transaction,
//!   each event row inserted once with its profile (by the normalizer's writer,
//!   `storage::normalized::insert_attached`). As a superuser it also skips the
//!   identifier index's per-row foreign-key check (a key-share lock, with its WAL, on the
//!   profile row for every identifier): the profiles it references are inserted by the
//!   same transaction, which checks them in one set-based query before committing
//!   instead.

use std::collections::HashMap;

use domain::{Identifier, NormalizedEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use super::locks::fleet_exclusive;
use super::store::{self, split};
use super::write::write;
use super::{ResolveError, Resolver};
use crate::delta::{self, Delta, Effects, Rewrite};
use crate::engine::{Constraint, Constraints};
use crate::memory::MemoryResolver;
use crate::model::Observation;

/// What [`Resolver::resolve_disjoint`] or [`Resolver::seed_disjoint`] did.
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
    /// This many of the events given to [`Resolver::seed_disjoint`] are already stored:
    /// nothing was written.
    Stored(i64),
}

/// Why [`Resolver::seed_disjoint`] refused its events.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// An event carries an order: orders are stored by the normalizer's writer
    /// (`identity::seed::store_events`), then resolved with
    /// [`Resolver::resolve_disjoint`].
    #[error("event {0} carries an order: store it with the normalizer's writer instead")]
    CarriesOrder(Uuid),
    /// Identifier-index rows or tombstones would reference profiles that have no row
    /// (checked when the per-row foreign-key checks were skipped); nothing was written.
    #[error("{0} referenced profiles have no row")]
    Dangling(i64),
    /// The resolver failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

impl From<sqlx::Error> for SeedError {
    fn from(e: sqlx::Error) -> Self {
        Self::Resolve(ResolveError::Database(e))
    }
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

        let known = known_identifiers(&mut tx, &observations).await?;
        if known > 0 {
            tx.rollback().await?;
            return Ok(Disjoint::Overlaps(known));
        }

        let constraints = store::all_constraints(&mut tx).await?;
        let delta = self.delta_of(&events, observations, constraints);
        write(&mut tx, &delta, self.debounce).await?;
        tx.commit().await?;
        Ok(Disjoint::Resolved {
            events: delta.assignment.len(),
            profiles: delta.profiles.len(),
        })
    }

    /// Stores `events` (new events of people whose identifiers no resolved event
    /// carries, without orders) and resolves them in one transaction, each event row
    /// inserted once, already attached (see the module doc). Refuses the whole set if
    /// one of its identifiers is known ([`Disjoint::Overlaps`]) or one of its events is
    /// already stored ([`Disjoint::Stored`]).
    pub async fn seed_disjoint(&self, events: &[NormalizedEvent]) -> Result<Disjoint, SeedError> {
        if let Some(e) = events.iter().find(|e| e.order.is_some()) {
            return Err(SeedError::CarriesOrder(e.event_id));
        }
        let mut events: Vec<NormalizedEvent> = events.to_vec();
        events.sort_by_key(|e| (e.occurred_at, e.event_id));
        let observations: Vec<Observation> = events.iter().map(Observation::of).collect();

        let mut tx = self.db.begin().await?;
        fleet_exclusive(&mut tx).await?;
        let known = known_identifiers(&mut tx, &observations).await?;
        if known > 0 {
            tx.rollback().await?;
            return Ok(Disjoint::Overlaps(known));
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM normalized_event WHERE event_id = ANY($1)")
                .bind(&ids)
                .fetch_one(&mut *tx)
                .await?;
        if stored > 0 {
            tx.rollback().await?;
            return Ok(Disjoint::Stored(stored));
        }
        let constraints = store::all_constraints(&mut tx).await?;
        let delta = self.delta_of(&events, observations, constraints);

        // `SET LOCAL`: this transaction only. Replica mode fires no triggers, and the
        // foreign-key checks are triggers; the schema has no others.
        let unchecked: bool = sqlx::query_scalar("SELECT current_setting('is_superuser') = 'on'")
            .fetch_one(&mut *tx)
            .await?;
        if unchecked {
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *tx)
                .await?;
        }
        let profile_of: HashMap<Uuid, Uuid> = delta.assignment.iter().copied().collect();
        for chunk in events.chunks(EVENT_CHUNK) {
            let (attached, unattached): (Vec<_>, Vec<_>) = chunk
                .iter()
                .partition(|e| profile_of.contains_key(&e.event_id));
            let attached: Vec<_> = attached
                .into_iter()
                .map(|e| (e, profile_of[&e.event_id]))
                .collect();
            storage::normalized::insert_attached(&mut tx, &attached).await?;
            storage::normalized::insert_unattached(&mut tx, &unattached).await?;
        }
        write(&mut tx, &delta, self.debounce)
            .await
            .map_err(ResolveError::from)?;
        if unchecked {
            let dangling = dangling_references(&mut tx, &delta).await?;
            if dangling > 0 {
                tx.rollback().await?;
                return Err(SeedError::Dangling(dangling));
            }
        }
        tx.commit().await?;
        Ok(Disjoint::Resolved {
            events: delta.assignment.len(),
            profiles: delta.profiles.len(),
        })
    }

    /// The delta that resolving `events` (in canonical order, `observations` theirs)
    /// from nothing makes: only these events' rows, nothing else rewritten.
    fn delta_of(
        &self,
        events: &[NormalizedEvent],
        observations: Vec<Observation>,
        constraints: Vec<Constraint>,
    ) -> Delta {
        let memory = MemoryResolver::rebuild(
            self.engine.clone(),
            Constraints::new(constraints),
            observations,
        );
        let mut effects = Effects::default();
        for ev in events {
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
        delta.rewrite = Rewrite::Nothing;
        delta
    }
}

/// Events inserted per statement.
const EVENT_CHUNK: usize = 5_000;

/// How many of the identifiers `observations` carry are already known.
async fn known_identifiers(
    conn: &mut PgConnection,
    observations: &[Observation],
) -> Result<i64, sqlx::Error> {
    let mut carried: Vec<&Identifier> = observations.iter().flat_map(|o| &o.identifiers).collect();
    carried.sort();
    carried.dedup();
    let (kinds, values) = split(carried);
    sqlx::query_scalar(
        "SELECT count(*) FROM identity_identifier i \
         JOIN unnest($1::text[], $2::text[]) AS u(kind, value) \
           ON i.kind = u.kind AND i.value = u.value",
    )
    .bind(&kinds)
    .bind(&values)
    .fetch_one(conn)
    .await
}

/// Profiles `delta` references (from identifier-index rows and tombstones) that have
/// no row, in one query: what the skipped foreign-key check of tombstones would have
/// refused, and identifier-index rows naming a missing profile (no key checks those).
async fn dangling_references(conn: &mut PgConnection, delta: &Delta) -> Result<i64, sqlx::Error> {
    let mut profiles: Vec<Uuid> = delta
        .holdings
        .iter()
        .map(|(_, h)| h.profile)
        .chain(delta.tombstones.iter().map(|(_, into)| *into))
        .chain(delta.repoint.iter().map(|(_, into)| *into))
        .collect();
    profiles.sort();
    profiles.dedup();
    sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::uuid[]) AS r(id) \
         WHERE NOT EXISTS (SELECT 1 FROM customer_profile p WHERE p.id = r.id)",
    )
    .bind(&profiles)
    .fetch_one(conn)
    .await
}
