//! Late events applied in place, without a region replay.
//!
//! A late event whose linking identifiers one profile holds ([`Engine::settled_late`])
//! is applied in place when a *witness* is stored: an event earlier in canonical order,
//! on that profile, that carried every one of those identifiers, stated the same first
//! name if the late event states one, and was refused nothing (no
//! `identity_refused_link` row). Then canonical order would have attached the late
//! event to the same profile, adding nothing and merging nothing, and every later
//! decision stays as it is (the argument is on [`Engine::settled_late`] and in
//! `docs/identity.md`, "Late events applied in place"). The in-memory resolver applies
//! the same rule ([`crate::memory::MemoryResolver`]), and its property tests compare it
//! with canonical order on shuffled histories.
//!
//! One query per step that has such candidates, none otherwise: a step of in-order
//! events costs nothing more.

use std::collections::{HashMap, HashSet};

use domain::Channel;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::engine::{Engine, Graph};
use crate::model::Observation;
use crate::rules::names::person_name;

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
    let mut names: HashMap<Uuid, String> = HashMap::new();
    for obs in candidates {
        if engine.in_order(graph, obs) {
            continue;
        }
        let Ok(settled) = engine.settled_late(graph, obs) else {
            continue;
        };
        let Some(holder) = graph
            .identifiers
            .get(&settled.linking[0])
            .and_then(|n| n.owner)
        else {
            continue;
        };
        events.push(obs.key.event_id);
        holders.push(holder);
        times.push(obs.key.occurred_at);
        linking.push(serde_json::to_string(&settled.linking).expect("identifiers serialise"));
        names.extend(settled.name.map(|n| (obs.key.event_id, n)));
    }
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let named: Vec<bool> = events.iter().map(|e| names.contains_key(e)).collect();
    // Newest earlier events first: the profile's keyset index walks back from the late
    // event's time and usually meets the witness at once (the previous event of the
    // same cookie or e-mail). A named late event needs a witness stating the same first
    // name: the newest few that state one are returned with the traits a name is read
    // from, and compared here by the one definition of a name key. The planner expects
    // the identifier filter to leave about one row, so it would rather take a bitmap
    // scan of every earlier event of each profile (then sort them, and probe refused
    // links for each); bitmap scans are off for this statement, so the walk goes down the
    // keyset index in order and stops at the first witness (docs/performance.md, "The
    // ordering window": 48 against 510 ms for 1,000 candidates).
    sqlx::query("SET LOCAL enable_bitmapscan = off")
        .execute(&mut *conn)
        .await?;
    let rows = sqlx::query(
        "SELECT c.event_id, w.channel, w.names \
         FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::bool[]) \
             AS c(event_id, profile_id, occurred_at, linking, named) \
         CROSS JOIN LATERAL ( \
             SELECT x.channel, CASE WHEN c.named THEN jsonb_build_object( \
                 'first_name', x.traits->'first_name', 'firstName', x.traits->'firstName', \
                 'name', x.traits->'name') END AS names \
             FROM normalized_event x \
             WHERE x.profile_id = c.profile_id AND x.occurred_at <= c.occurred_at \
               AND (x.occurred_at, x.event_id) < (c.occurred_at, c.event_id) \
               AND x.identifiers @> c.linking::jsonb \
               AND (NOT c.named OR x.traits ?| ARRAY['first_name', 'firstName', 'name']) \
               AND NOT EXISTS (SELECT 1 FROM identity_refused_link r WHERE r.event_id = x.event_id) \
             ORDER BY x.occurred_at DESC, x.event_id DESC \
             LIMIT CASE WHEN c.named THEN 4 ELSE 1 END) w",
    )
    .bind(&events)
    .bind(&holders)
    .bind(&times)
    .bind(&linking)
    .bind(&named)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("SET LOCAL enable_bitmapscan = DEFAULT")
        .execute(&mut *conn)
        .await?;
    let mut found = HashSet::new();
    for r in rows {
        let event_id: Uuid = r.get("event_id");
        let Some(name) = names.get(&event_id) else {
            found.insert(event_id);
            continue;
        };
        let traits: Option<sqlx::types::Json<serde_json::Map<String, serde_json::Value>>> =
            r.get("names");
        let channel = r.get::<&str, _>("channel").parse::<Channel>().ok();
        let stated = match (channel, traits) {
            (Some(channel), Some(traits)) => person_name(channel, &traits.0),
            _ => None,
        };
        if stated.as_ref() == Some(name) {
            found.insert(event_id);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use domain::{EventType, Identifier, IdentifierKind, NormalizedEvent, Source};

    use super::*;
    use crate::engine::Constraints;
    use crate::memory::MemoryResolver;
    use crate::resolver::{Resolver, load_profile_ids};
    use crate::rules::Policy;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
    }

    fn event(n: u128, seconds: i64, id: Identifier) -> NormalizedEvent {
        NormalizedEvent {
            event_id: Uuid::from_u128(0xE000_0000 + n),
            occurred_at: at(seconds),
            received_at: at(seconds),
            source: Source::Segment,
            integration_id: None,
            channel: Channel::Web,
            event_type: EventType::PageViewed,
            name: None,
            identifiers: vec![id],
            traits: Default::default(),
            properties: Default::default(),
            order: None,
        }
    }

    /// The lookup walks each late event's profile newest first and stops at the first
    /// witness: it reads a few index entries per late event, not every earlier event of
    /// its profile (which the planner's own choice, a bitmap scan, reads).
    #[tokio::test]
    async fn witnesses_are_found_without_reading_every_earlier_event_of_their_profiles() {
        let env = test_support::TestEnv::new().await;
        let email = |p: u32| {
            Identifier::parse(IdentifierKind::Email, &format!("p{p}@mail.in"), "IN").unwrap()
        };
        // 200 people with 50 events each, interleaved in time, resolved in time order.
        let (people, each) = (200u32, 50u32);
        let mine: Vec<NormalizedEvent> = (0..each)
            .flat_map(|k| (0..people).map(move |p| (k, p)))
            .map(|(k, p)| {
                let n = k * people + p;
                event(u128::from(n), 10 * i64::from(n), email(p))
            })
            .collect();
        let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
            .await
            .unwrap();
        for batch in mine.chunks(1_000) {
            resolver.resolve(batch).await.unwrap();
        }
        sqlx::query("ANALYZE normalized_event")
            .execute(&env.db)
            .await
            .unwrap();

        let ids = load_profile_ids(&env.db).await.unwrap();
        let engine = Engine::new(Policy::from_settings(&env.settings.identity), ids);
        let memory = MemoryResolver::rebuild(
            engine.clone(),
            Constraints::default(),
            mine.iter().map(Observation::of).collect(),
        );
        // One late event per person, just after their 40th event.
        let late: Vec<Observation> = (0..people)
            .map(|p| {
                let n = 40 * people + p;
                Observation::of(&event(
                    1_000_000 + u128::from(p),
                    10 * i64::from(n) + 1,
                    email(p),
                ))
            })
            .collect();
        let mut tx = env.db.begin().await.unwrap();
        let found = witnessed(&mut tx, &engine, &memory.graph, &late)
            .await
            .unwrap();
        assert_eq!(found.len(), late.len(), "every late event witnessed");
        let read: i64 = sqlx::query_scalar(
            "SELECT pg_stat_get_xact_tuples_returned('normalized_event_profile_keyset'::regclass)",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert!(
            read <= 2 * i64::from(people),
            "{read} index entries read to find {people} witnesses"
        );
    }
}
