//! Late events applied in place, without a region replay.
//!
//! A late event whose linking identifiers one profile holds ([`Engine::settled_late`])
//! is applied in place when a *witness* is stored: an event earlier in canonical order,
//! on that profile, that carried every one of those identifiers and was refused nothing
//! (no `identity_refused_link` row). Then canonical order would have attached the late
//! event to the same profile, adding nothing and merging nothing, and every later
//! decision stays as it is (the argument is on [`Engine::settled_late`] and in
//! `docs/identity.md`, "Late events applied in place"). The in-memory resolver applies
//! the same rule ([`crate::memory::MemoryResolver`]), and its property tests compare it
//! with canonical order on shuffled histories.
//!
//! One query per step that has such candidates, none otherwise: a step of in-order
//! events costs nothing more.

use std::collections::HashSet;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine::{Engine, Graph};
use crate::model::Observation;

/// The events of `candidates` that are late in `graph` and may be applied in place:
/// settled in the graph, with a witness stored. Events in order are not asked about.
pub(crate) async fn witnessed<'a>(
    conn: &mut PgConnection,
    engine: &Engine,
    graph: &Graph,
    candidates: impl IntoIterator<Item = &'a Observation>,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let mut events = Vec::new();
    let mut holders = Vec::new();
    let mut times = Vec::new();
    let mut linking = Vec::new();
    for obs in candidates {
        if engine.in_order(graph, obs) {
            continue;
        }
        let Some(ids) = engine.settled_late(graph, obs) else {
            continue;
        };
        let Some(holder) = graph.identifiers.get(&ids[0]).and_then(|n| n.owner) else {
            continue;
        };
        events.push(obs.key.event_id);
        holders.push(holder);
        times.push(obs.key.occurred_at);
        linking.push(serde_json::to_string(&ids).expect("identifiers serialise"));
    }
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    // Newest earlier events first: the profile's keyset index walks back from the late
    // event's time and usually meets the witness at once (the previous event of the
    // same cookie or e-mail).
    let found: Vec<Uuid> = sqlx::query_scalar(
        "SELECT c.event_id FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[]) \
             AS c(event_id, profile_id, occurred_at, linking) \
         WHERE EXISTS ( \
             SELECT 1 FROM normalized_event x \
             WHERE x.profile_id = c.profile_id AND x.occurred_at <= c.occurred_at \
               AND (x.occurred_at, x.event_id) < (c.occurred_at, c.event_id) \
               AND x.identifiers @> c.linking::jsonb \
               AND NOT EXISTS (SELECT 1 FROM identity_refused_link r WHERE r.event_id = x.event_id))",
    )
    .bind(&events)
    .bind(&holders)
    .bind(&times)
    .bind(&linking)
    .fetch_all(conn)
    .await?;
    Ok(found.into_iter().collect())
}
