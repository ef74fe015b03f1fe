//! Stores normalised events (and the orders they carry) the way the normalizer does, so
//! `ctl identity eval`, the benchmarks and the tests can drive the real resolver without
//! the ingest pipeline in front of it.
//!
//! Rows are written by the normalizer's own writer (`storage::normalized`), from what
//! each event says: a placed order's state at the event's time, a refund keyed by the
//! event id, a cancellation as final (see `EventWrite::of_event`). Writes are
//! idempotent, so storing an event twice changes nothing. Within one call,
//! cancellations are written after every placement, so an order placed and cancelled in
//! the same call ends cancelled whatever the order of the events.

use std::collections::HashMap;

use domain::{EventType, NormalizedEvent};
use sqlx::PgPool;
use storage::normalized::{self, EventWrite};
use uuid::Uuid;

/// Events written per transaction.
const CHUNK: usize = 2_000;

/// Stores `events` and their orders. Returns how many events were new.
pub async fn store_events(db: &PgPool, events: &[NormalizedEvent]) -> Result<usize, sqlx::Error> {
    let mut new = 0;
    for chunk in in_write_order(events).chunks(CHUNK) {
        let mut writes: Vec<EventWrite> = chunk
            .iter()
            .map(|&e| EventWrite::of_event(e.clone()))
            .collect();
        new += normalized::write_batch(db, &mut writes).await?;
    }
    Ok(new)
}

/// Stores what the normalizer stores for `events` before publishing them: their
/// orders and products, not the events' rows (the resolver stores each one, attached,
/// when it resolves the published event). Returns the events as the normalizer
/// publishes them, in the given order: a refund's order status is the stored order's.
pub async fn store_effects(
    db: &PgPool,
    events: &[NormalizedEvent],
) -> Result<Vec<NormalizedEvent>, sqlx::Error> {
    let mut written: HashMap<Uuid, NormalizedEvent> = HashMap::new();
    for chunk in in_write_order(events).chunks(CHUNK) {
        let mut writes: Vec<EventWrite> = chunk
            .iter()
            .map(|&e| EventWrite::of_event(e.clone()))
            .collect();
        normalized::write_batch_leaving_events(db, &mut writes).await?;
        written.extend(
            writes
                .into_iter()
                .filter_map(|w| Some((w.event_id, w.event?))),
        );
    }
    Ok(events
        .iter()
        .map(|e| written.remove(&e.event_id).unwrap_or_else(|| e.clone()))
        .collect())
}

/// Cancellations after every placement (see the module doc).
fn in_write_order(events: &[NormalizedEvent]) -> Vec<&NormalizedEvent> {
    let (placements, cancellations): (Vec<&NormalizedEvent>, Vec<&NormalizedEvent>) = events
        .iter()
        .partition(|e| e.event_type != EventType::OrderCancelled);
    placements.into_iter().chain(cancellations).collect()
}
