//! Existing people for a benchmark: a database of a given size before the load starts.
//!
//! Person `i` is one identify event (e-mail, phone, user id) a year ago. Each chunk of
//! people is stored by the normalizer's own writer ([`identity::seed::store_events`])
//! and resolved by [`Resolver::resolve_disjoint`]: the rebuild's code over just those
//! events, written by the resolver's one set-based write. Storing the next chunk runs
//! beside resolving the previous one. No two people share an identifier, so the rows
//! are the ones streaming or `ctl identity rebuild` makes for the same events
//! (`tests/seed.rs` compares all three), at a few hundred thousand rows a second
//! instead of a forward step per batch.
//!
//! Afterwards the outboxes those writes fill (a prediction request and a profile change
//! per new person) are emptied, as if the services had published them long ago: a
//! seeded database is one the fleet has caught up with, not a backlog the benchmark
//! would then measure. Customer 360 documents are not built (a cache: the first read
//! builds one). Then `VACUUM ANALYZE`, so the planner and the visibility map see the
//! tables as a long-lived database's are.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::{Channel, EventType, Identifier, IdentifierKind, NormalizedEvent, Source};
use identity::resolver::Resolver;
use identity::resolver::disjoint::Disjoint;
use sqlx::PgPool;
use uuid::Uuid;

/// People stored and resolved per chunk.
pub const CHUNK: usize = 25_000;

/// What [`seed_people`] did and how long each part took.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    /// Events stored (one per person).
    pub events: usize,
    /// Live profiles made.
    pub profiles: usize,
    /// Wall time of storing and resolving (overlapping).
    pub load: Duration,
    /// Wall time of emptying the outboxes and `VACUUM ANALYZE`.
    pub vacuum: Duration,
}

/// The identify event of existing person `i`, occurring at `at`.
pub fn existing_person(i: u64, at: DateTime<Utc>) -> anyhow::Result<NormalizedEvent> {
    let id = |kind, value: String| {
        Identifier::parse(kind, &value, "IN").with_context(|| format!("seed identifier {value}"))
    };
    Ok(NormalizedEvent {
        event_id: Uuid::now_v7(),
        occurred_at: at,
        received_at: at,
        source: Source::Segment,
        integration_id: None,
        channel: Channel::Web,
        event_type: EventType::Identify,
        name: None,
        identifiers: vec![
            id(IdentifierKind::Email, format!("existing{i}@mail.example"))?,
            id(IdentifierKind::Phone, phone(5_000_000 + i))?,
            id(IdentifierKind::CustomerId, format!("segment:existing-{i}"))?,
        ],
        traits: serde_json::Map::new(),
        properties: serde_json::Map::new(),
        order: None,
    })
}

/// A distinct Indian mobile number per `n` (below 89,999,999).
pub fn phone(n: u64) -> String {
    format!("+9197{:08}", 10_000_000 + n % 89_999_999)
}

/// The events of people `first..first + count`, a second apart from `base` on.
pub fn existing_people(
    first: u64,
    count: usize,
    base: DateTime<Utc>,
) -> anyhow::Result<Vec<NormalizedEvent>> {
    (first..first + count as u64)
        .map(|i| existing_person(i, base + chrono::Duration::seconds(i as i64)))
        .collect()
}

/// Stores and resolves `events` (people who share nothing with what is stored), in
/// chunks of `chunk` events, storing one chunk while the previous one is resolved.
/// Returns (events stored, profiles made).
pub async fn store_resolved(
    db: &PgPool,
    resolver: &Resolver,
    events: &[NormalizedEvent],
    chunk: usize,
) -> anyhow::Result<(usize, usize)> {
    let mut stored = 0;
    let mut profiles = 0;
    let mut previous: Option<Vec<Uuid>> = None;
    for chunk in events.chunks(chunk.max(1)) {
        let store = async { anyhow::Ok(identity::seed::store_events(db, chunk).await?) };
        let (new, made) = tokio::try_join!(store, resolve(resolver, previous.as_deref()))?;
        stored += new;
        profiles += made;
        previous = Some(chunk.iter().map(|e| e.event_id).collect());
    }
    profiles += resolve(resolver, previous.as_deref()).await?;
    Ok((stored, profiles))
}

async fn resolve(resolver: &Resolver, ids: Option<&[Uuid]>) -> Result<usize, anyhow::Error> {
    let Some(ids) = ids else {
        return Ok(0);
    };
    match resolver.resolve_disjoint(ids).await? {
        Disjoint::Resolved { profiles, .. } => Ok(profiles),
        Disjoint::Overlaps(n) => {
            anyhow::bail!("{n} identifiers of the seeded people are already in the database")
        }
    }
}

/// Empties the outboxes the seed's writes filled (see the module doc).
pub async fn settle_outboxes(db: &PgPool) -> anyhow::Result<()> {
    for table in ["identity_prediction_outbox", "profile_change_outbox"] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(db)
            .await?;
    }
    Ok(())
}

/// Puts `count` resolved people in place (see the module doc), their events a year
/// ago, one second apart.
pub async fn seed_people(db: &PgPool, resolver: &Resolver, count: usize) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let base = Utc::now() - chrono::Duration::days(365);
    let mut seeded = Seeded::default();
    // Generated a chunk pair at a time, so a million people never sit in memory at once.
    let mut next = 0usize;
    while next < count {
        let n = (count - next).min(CHUNK * 8);
        let events = existing_people(next as u64, n, base)?;
        let (events, profiles) = store_resolved(db, resolver, &events, CHUNK).await?;
        seeded.events += events;
        seeded.profiles += profiles;
        next += n;
    }
    seeded.load = started.elapsed();
    let started = Instant::now();
    settle_outboxes(db).await?;
    sqlx::query("VACUUM ANALYZE").execute(db).await?;
    seeded.vacuum = started.elapsed();
    Ok(seeded)
}
