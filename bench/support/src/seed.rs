//! Existing people for a benchmark: a database of a given size before the load starts.
//!
//! Person `i` is one identify event (e-mail, phone, user id) a year ago. Each chunk of
//! people is stored and resolved in one transaction by [`Resolver::seed_disjoint`]: the
//! rebuild's code over just those events in memory, each event row inserted once already
//! attached, the rest written by the resolver's one set-based write (as a superuser
//! without the identifier index's per-row foreign-key checks, checked in one query
//! instead). No two people share an identifier, so the rows are the ones streaming or
//! `ctl identity rebuild` makes for the same events (`tests/seed.rs` compares all
//! three), and a chunk that touches a known identifier is refused whole.
//!
//! Afterwards the outboxes those writes fill (a prediction request and a profile change
//! per new person) are emptied, as if the services had published them long ago: a
//! seeded database is one the fleet has caught up with, not a backlog the benchmark
//! would then measure. Customer 360 documents are not built (a cache: the first read
//! builds one). Then `VACUUM ANALYZE`, so the planner and the visibility map see the
//! tables as a long-lived database's are, and (unless asked not to) a `CHECKPOINT`: a
//! bulk load leaves the shared buffers full of dirty pages and a checkpoint due or
//! under way, whose writes would otherwise compete with the load measured next — a
//! brand's database is checkpointed on its steady schedule, not right after a million
//! rows arrived at once.

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
    /// Wall time of the `CHECKPOINT` after it (`None`: not asked for).
    pub checkpoint: Option<Duration>,
}

/// A year ago, to the second (Postgres keeps microseconds: a time it would round is
/// not the time resolving in memory sees).
pub fn a_year_ago() -> DateTime<Utc> {
    let at = Utc::now() - chrono::Duration::days(365);
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
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
/// transactions of `chunk` events. Returns (events stored, profiles made).
pub async fn store_resolved(
    resolver: &Resolver,
    events: &[NormalizedEvent],
    chunk: usize,
) -> anyhow::Result<(usize, usize)> {
    let mut stored = 0;
    let mut profiles = 0;
    for chunk in events.chunks(chunk.max(1)) {
        match resolver.seed_disjoint(chunk).await? {
            Disjoint::Resolved {
                events,
                profiles: made,
            } => {
                stored += events;
                profiles += made;
            }
            Disjoint::Overlaps(n) => {
                anyhow::bail!("{n} identifiers of the seeded people are already in the database")
            }
            Disjoint::Stored(n) => {
                anyhow::bail!("{n} events of the seeded people are already stored")
            }
        }
    }
    Ok((stored, profiles))
}

/// Empties the outboxes the seed's writes filled (see the module doc).
pub async fn settle_outboxes(db: &PgPool) -> anyhow::Result<()> {
    for table in ["identity_prediction_outbox", "profile_change_outbox"] {
        sqlx::query(&format!("TRUNCATE {table}"))
            .execute(db)
            .await?;
    }
    Ok(())
}

/// Whether [`seed_people`] ends with a `CHECKPOINT` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// `VACUUM ANALYZE`, then `CHECKPOINT`: the steady state of a long-lived database.
    Checkpoint,
    /// `VACUUM ANALYZE` only: the load meets whatever writing the seed left behind.
    VacuumOnly,
}

/// Puts `count` resolved people in place (see the module doc), their events a year
/// ago, one second apart.
pub async fn seed_people(
    db: &PgPool,
    resolver: &Resolver,
    count: usize,
    settle: Settle,
) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let base = a_year_ago();
    let mut seeded = Seeded::default();
    // Generated a few chunks at a time, so a million people never sit in memory at once.
    let mut next = 0usize;
    while next < count {
        let n = (count - next).min(CHUNK * 8);
        let events = existing_people(next as u64, n, base)?;
        let (events, profiles) = store_resolved(resolver, &events, CHUNK).await?;
        seeded.events += events;
        seeded.profiles += profiles;
        next += n;
    }
    seeded.load = started.elapsed();
    let started = Instant::now();
    settle_outboxes(db).await?;
    sqlx::query("VACUUM ANALYZE").execute(db).await?;
    seeded.vacuum = started.elapsed();
    if settle == Settle::Checkpoint {
        let started = Instant::now();
        sqlx::query("CHECKPOINT").execute(db).await?;
        seeded.checkpoint = Some(started.elapsed());
    }
    Ok(seeded)
}
