//! Waiting until the pipeline has drained: every stored raw event normalised and
//! attached to a profile, nothing left to publish, and no stream entry waiting in any
//! consumer group of the event topics.
//!
//! The answer comes from both sides: Postgres says what is done (rows), Redis what is
//! still moving (lag and pending per group). Events that a consumer gave up on sit in a
//! dead-letter stream; they count as settled (the summary reports them) so a poisoned
//! event cannot make the wait endless.
//!
//! A failed or hanging read (Redis or Postgres restarting) is retried every second, on
//! a new Redis connection, until the timeout.
//!
//! When nothing moves for a while although work remains, stream entries were lost (a
//! Redis wipe or restart): the wait re-drives the unfinished events from Postgres
//! ([`crate::republish`]) and carries on, at most a few times.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::PgPool;
use streams::{Streams, Topic, TopicStats};

/// The event topics whose groups must be empty for the pipeline to be drained
/// (`predictions.requests` is left out: it only flows once models exist).
pub const EVENT_TOPICS: [Topic; 3] = [
    Topic::EventsRaw,
    Topic::EventsNormalized,
    Topic::MergeRequests,
];

/// The pipeline at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Raw events stored.
    pub raw: i64,
    /// Raw events not yet published on `events.raw`.
    pub unpublished: i64,
    /// Normalised events stored.
    pub normalized: i64,
    /// Raw events without a stored normalised event yet (the merger stores it when it
    /// attaches the event).
    pub missing: i64,
    /// Stored normalised events not yet attached to a profile by the merger (rows
    /// stored by seeds; the fleet's rows are stored attached).
    pub unresolved: i64,
    /// Statistics of the event topics.
    pub topics: Vec<TopicStats>,
}

impl Snapshot {
    fn dlq(&self, topic: Topic) -> i64 {
        self.topics
            .iter()
            .find(|t| t.topic == topic.name())
            .map_or(0, |t| i64::try_from(t.dlq_length).unwrap_or(i64::MAX))
    }

    /// Entries delivered-but-unacknowledged or not yet delivered, over every group.
    pub fn in_flight(&self) -> u64 {
        in_flight(&self.topics)
    }

    /// Dead letters of the event topics.
    pub fn dead_letters(&self) -> u64 {
        self.topics.iter().map(|t| t.dlq_length).sum()
    }

    /// Whether everything stored has gone all the way through (or to a dead letter).
    pub fn drained(&self) -> bool {
        // A dead letter of either stage leaves its raw event without a stored row.
        self.unpublished == 0
            && self.missing + self.unresolved
                <= self.dlq(Topic::EventsRaw) + self.dlq(Topic::EventsNormalized)
            && self.in_flight() == 0
    }

    fn progress(&self) -> (i64, i64, i64, i64, u64) {
        (
            self.raw,
            self.normalized,
            self.unresolved,
            self.unpublished,
            self.in_flight(),
        )
    }
}

/// What Postgres says is done: (raw, unpublished, normalized, missing, unresolved).
type Counts = (i64, i64, i64, i64, i64);

/// Counts the stored events at each stage. Scans the event tables (about a second for
/// 400,000 events), so [`wait`] only asks when no stream entry is in flight — the
/// pipeline may be drained, or entries were lost — and [`open_counts`] otherwise.
async fn counts(db: &PgPool) -> anyhow::Result<Counts> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM customer_raw_event), \
                (SELECT count(*) FROM raw_event_outbox_events), \
                (SELECT count(*) FROM normalized_event), \
                (SELECT count(*) FROM customer_raw_event r WHERE NOT EXISTS \
                    (SELECT 1 FROM normalized_event n WHERE n.event_id = r.id)), \
                (SELECT count(*) FROM normalized_event WHERE resolved_at IS NULL)",
    )
    .fetch_one(db)
    .await
    .context("counting events")
}

/// The counts that only read what is still open — raw events not yet published (the
/// narrow outbox tables, through `raw_event_outbox_events`) and normalised events stored
/// but not yet attached (the partial index `normalized_event_unresolved`) — so they cost
/// the same whatever the size of the history: (unpublished, unresolved).
async fn open_counts(db: &PgPool) -> anyhow::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM raw_event_outbox_events), \
                (SELECT count(*) FROM normalized_event WHERE resolved_at IS NULL)",
    )
    .fetch_one(db)
    .await
    .context("counting open events")
}

/// Entries delivered-but-unacknowledged or not yet delivered, over every group.
fn in_flight(topics: &[TopicStats]) -> u64 {
    topics
        .iter()
        .flat_map(|t| &t.groups)
        .map(|g| g.pending + g.lag.unwrap_or(0))
        .sum()
}

/// Reads the event topics' statistics (cheap: a few Redis calls).
async fn topics(streams: &Streams) -> anyhow::Result<Vec<TopicStats>> {
    let mut topics = Vec::new();
    for topic in EVENT_TOPICS {
        topics.push(
            streams
                .topic_stats(topic)
                .await
                .with_context(|| format!("reading {topic}"))?,
        );
    }
    Ok(topics)
}

fn snapshot_of(counts: Counts, topics: Vec<TopicStats>) -> Snapshot {
    let (raw, unpublished, normalized, missing, unresolved) = counts;
    Snapshot {
        raw,
        unpublished,
        normalized,
        missing,
        unresolved,
        topics,
    }
}

/// Seconds between counts of the open events in Postgres while stream entries are
/// still in flight.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// How long to wait, and when to re-drive.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// Re-drive from Postgres after nothing moved for this long.
    pub stall: Duration,
    /// At most this many re-drives.
    pub max_republish: u32,
    /// Redis, to connect again when the connection stops answering (a restarted Redis
    /// can leave it hanging).
    pub redis_url: String,
}

/// How long one read of the pipeline's state may take before the connection is
/// given up and opened again.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The drained pipeline and how many re-drives it took.
#[derive(Debug, Clone)]
pub struct Drained {
    /// The final state.
    pub snapshot: Snapshot,
    /// Re-drives from Postgres.
    pub republished: u32,
    /// How long the wait took.
    pub waited: Duration,
}

/// Waits until the pipeline has drained (two polls in a row say so).
pub async fn wait(db: &PgPool, streams: &Streams, opts: &DrainOptions) -> anyhow::Result<Drained> {
    let started = Instant::now();
    let mut last_move = Instant::now();
    let mut last_progress = None;
    let mut last_print = Instant::now();
    let mut republished = 0;
    let mut confirmed = false;
    let mut counted: Option<(Instant, Counts)> = None;
    let mut reconnected: Option<Streams> = None;
    loop {
        // Redis every second. Postgres: the full counts when nothing is in flight (the
        // pipeline may be drained, or entries were lost); while entries move, only the
        // open events every COUNT_EVERY, whose cost does not grow with the history, so
        // the wait does not compete with the merger for Postgres (the full counts,
        // `missing`'s anti-join above all, took about a second every 5 s).
        // Redis or Postgres going away (restarted, failed over) is waited out like any
        // other stall, on a new Redis connection once one failed.
        let current = reconnected.as_ref().unwrap_or(streams);
        let read = async {
            let topics = topics(current).await?;
            let counts = match counted {
                Some((at, c)) if in_flight(&topics) > 0 && at.elapsed() < COUNT_EVERY => c,
                Some((_, (raw, _, normalized, missing, _))) if in_flight(&topics) > 0 => {
                    let (unpublished, unresolved) = open_counts(db).await?;
                    let c = (raw, unpublished, normalized, missing, unresolved);
                    counted = Some((Instant::now(), c));
                    c
                }
                _ => {
                    let c = counts(db).await?;
                    counted = Some((Instant::now(), c));
                    c
                }
            };
            anyhow::Ok((topics, counts))
        };
        let read = tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {READ_TIMEOUT:?}")));
        let (topics, counts) = match read {
            Ok(read) => read,
            Err(e) => {
                anyhow::ensure!(
                    started.elapsed() < opts.timeout,
                    "the pipeline did not drain within {:?}: {e:#}",
                    opts.timeout
                );
                eprintln!("demo: draining — {e:#}; connecting to Redis again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let fresh = Streams::connect(&opts.redis_url, streams.prefix(), streams.maxlen());
                if let Ok(Ok(fresh)) = tokio::time::timeout(READ_TIMEOUT, fresh).await {
                    reconnected = Some(fresh);
                }
                continue;
            }
        };
        let snap = snapshot_of(counts, topics);
        if snap.drained() {
            if confirmed {
                return Ok(Drained {
                    snapshot: snap,
                    republished,
                    waited: started.elapsed(),
                });
            }
            confirmed = true;
        } else {
            confirmed = false;
        }
        if last_progress != Some(snap.progress()) {
            last_progress = Some(snap.progress());
            last_move = Instant::now();
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "demo: draining ({} s) — {} waiting for the merger, {} unpublished, {} stream \
                 entries in flight, {} dead letters",
                started.elapsed().as_secs(),
                snap.unresolved,
                snap.unpublished,
                snap.in_flight(),
                snap.dead_letters()
            );
        }
        if !snap.drained() && last_move.elapsed() >= opts.stall {
            anyhow::ensure!(
                republished < opts.max_republish,
                "the pipeline stopped moving with work left ({} raw events without a \
                 normalised event, {} not attached to a profile) even after {republished} \
                 re-drives; is every service running? (`ctl streams`, the services' logs)",
                snap.missing,
                snap.unresolved
            );
            let done = crate::republish::republish(db, None).await?;
            republished += 1;
            eprintln!(
                "demo: nothing moved for {:?} with work left: stream entries were lost \
                 (Redis wiped or restarted?); re-driving {} raw events from Postgres",
                opts.stall, done.raw_events
            );
            last_move = Instant::now();
        }
        anyhow::ensure!(
            started.elapsed() < opts.timeout,
            "the pipeline did not drain within {:?}: {} raw events without a normalised \
             event, {} not attached to a profile, {} stream entries in flight",
            opts.timeout,
            snap.missing,
            snap.unresolved,
            snap.in_flight()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use test_support::TestEnv;
    use test_support::servers::PrivateRedis;

    use super::*;

    /// Regression: the cheap counts asked for a column the raw outbox migration had
    /// dropped, so every poll while entries moved failed and was retried.
    #[tokio::test]
    async fn the_open_counts_agree_with_the_full_counts() {
        let env = TestEnv::new().await;
        let (_, unpublished, _, _, unresolved) = counts(&env.db).await.unwrap();
        assert_eq!(
            open_counts(&env.db).await.unwrap(),
            (unpublished, unresolved)
        );
    }

    /// Regression: the wait gave up with "broken pipe" when Redis restarted under it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wait_rides_out_a_redis_restart() {
        let env = TestEnv::new().await;
        let mut redis = PrivateRedis::start().await;
        let streams = Streams::connect(&redis.url(), env.prefix(), 1_000)
            .await
            .unwrap();
        redis.kill();
        let opts = DrainOptions {
            timeout: Duration::from_secs(60),
            stall: Duration::from_secs(60),
            max_republish: 0,
            redis_url: redis.url(),
        };
        let restart = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            redis.start_again().await;
            redis
        });
        let drained = wait(&env.db, &streams, &opts).await;
        let _redis = restart.await.unwrap();
        let drained = drained.expect("the wait outlasts Redis being away");
        assert_eq!(drained.snapshot.raw, 0);
        assert!(
            drained.waited >= Duration::from_millis(1_500),
            "it waited for Redis to come back: {:?}",
            drained.waited
        );
    }
}
