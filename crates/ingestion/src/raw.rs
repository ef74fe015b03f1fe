//! The raw-event store: how a delivery becomes durable before ingest answers 2xx.
//!
//! Every accepted delivery is one row in `customer_raw_event`, unique on
//! `(source, source_event_id)`, so a redelivered webhook is stored once. Rows are written
//! by group commit: request handlers hand their events to [`RawEventStore::store`] and
//! wait; a few writer tasks each take everything queued (up to `batch_rows`, lingering a
//! moment for more when the queue is short) and write it with one
//! `INSERT … SELECT * FROM UNNEST(…) ON CONFLICT DO NOTHING RETURNING id`, then wake the
//! waiters. Many requests, one round trip, one WAL flush: that is how signed ingest keeps
//! up with a 2-core machine.
//!
//! The same statement queues the batch's new rows in `raw_event_outbox_batch`: one
//! narrow row per batch (keyed by its smallest new id, with every new id), so the wide
//! raw row is written once and never rewritten, and the outbox costs one index insert and
//! one delete per batch instead of per event. After the commit, newly stored rows go to
//! a publisher task that appends them to `events.raw` (one pipeline per batch) and then
//! deletes their batch rows. If publishing fails, or the process dies between commit and
//! publish, the batch rows stay and the outbox relay ([`crate::outbox`]) publishes them
//! later. Delivery on `events.raw` is therefore at least once; the normalizer is
//! idempotent on the raw id.
//!
//! One bad request never fails the others: when Postgres refuses a shared INSERT for
//! its data ([`is_data_error`]: a value out of range, a key too long for its index),
//! the writer commits each request of the batch alone, so only the culprit gets
//! [`StoreError::Rejected`] (ingest answers 400) and the rest are stored. The edge's
//! checks (`sources::admission`) refuse such data before it gets here; this is the
//! net under them. A failure of the database itself fails the whole batch (503).
//!
//! Shutdown: writers run until every [`RawEventStore`] handle is dropped, so requests
//! still in flight when the server drains are committed, then the publisher drains too.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use storage::fault::{self, Fault};
use streams::{Envelope, Streams, Topic};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::raw_event::{NewRawEvent, RawPayloadRef};

/// What happened to one event handed to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The id of the stored row: the new event's id, or for a duplicate the id of the row
    /// stored earlier (nil if that row vanished meanwhile).
    pub id: Uuid,
    /// True when `(source, source_event_id)` was already stored: nothing new was written.
    pub duplicate: bool,
}

/// The store did not make events durable. `Database` and `Stopped` are the store's
/// trouble (the caller answers 503 so the sender retries); `Rejected` is the events'
/// own (400: retrying sends the same data).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres failed the insert.
    #[error("storing raw events: {0}")]
    Database(#[from] sqlx::Error),
    /// Postgres refused the data of this request's events (a value out of a column's
    /// range, a key too long for its index). Only this request failed: the others
    /// group-committed with it were stored.
    #[error("the events cannot be stored: {0}")]
    Rejected(String),
    /// The writer tasks have stopped (the service is shutting down).
    #[error("the raw event writer has stopped")]
    Stopped,
}

/// The raw rows and, when some are new, the batch's one outbox row (keyed by its
/// smallest new id, listing every new id): one statement, so a stored event is always
/// queued for publishing.
const INSERT_SQL: &str = "\
WITH stored AS ( \
    INSERT INTO customer_raw_event \
        (id, integration_id, source, source_event_id, kind, received_at, occurred_at, headers, payload) \
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                         $6::timestamptz[], $7::timestamptz[], $8::jsonb[], $9::jsonb[]) \
    ON CONFLICT (source, source_event_id) DO NOTHING \
    RETURNING id, received_at), \
batch AS (SELECT array_agg(id ORDER BY id) AS ids, min(received_at) AS received_at FROM stored), \
queued AS (INSERT INTO raw_event_outbox_batch (id, received_at, event_ids) \
           SELECT ids[1], received_at, ids FROM batch WHERE ids IS NOT NULL) \
SELECT id FROM stored";

/// Writes `events` with one INSERT and reports, per event and in order, whether it was
/// new or a duplicate. Duplicates within `events` itself are stored once.
///
/// Rows are inserted in key order so two concurrent batches sharing keys cannot
/// deadlock on the unique index.
pub async fn insert_batch(
    db: &PgPool,
    events: &[NewRawEvent],
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by(|&a, &b| {
        (events[a].source.as_str(), &events[a].source_event_id)
            .cmp(&(events[b].source.as_str(), &events[b].source_event_id))
    });
    let ids: Vec<Uuid> = order.iter().map(|&i| events[i].id).collect();
    let integrations: Vec<Option<Uuid>> = order.iter().map(|&i| events[i].integration_id).collect();
    let sources: Vec<&str> = order.iter().map(|&i| events[i].source.as_str()).collect();
    let keys: Vec<&str> = order
        .iter()
        .map(|&i| events[i].source_event_id.as_str())
        .collect();
    let kinds: Vec<&str> = order.iter().map(|&i| events[i].kind.as_str()).collect();
    let received: Vec<DateTime<Utc>> = order.iter().map(|&i| events[i].received_at).collect();
    let occurred: Vec<Option<DateTime<Utc>>> =
        order.iter().map(|&i| events[i].occurred_at).collect();
    let headers: Vec<sqlx::types::Json<&serde_json::Map<String, serde_json::Value>>> = order
        .iter()
        .map(|&i| sqlx::types::Json(&events[i].headers))
        .collect();
    let bodies: Vec<&serde_json::Value> = order.iter().map(|&i| &events[i].body).collect();

    let inserted: Vec<Uuid> = sqlx::query_scalar(INSERT_SQL)
        .bind(&ids)
        .bind(&integrations)
        .bind(&sources)
        .bind(&keys)
        .bind(&kinds)
        .bind(&received)
        .bind(&occurred)
        .bind(&headers)
        .bind(&bodies)
        .fetch_all(db)
        .await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();

    let mut outcomes: Vec<StoreOutcome> = events
        .iter()
        .map(|e| StoreOutcome {
            id: e.id,
            duplicate: !inserted.contains(&e.id),
        })
        .collect();
    if outcomes.iter().any(|o| o.duplicate) {
        resolve_duplicate_ids(db, events, &mut outcomes).await?;
    }
    Ok(outcomes)
}

/// Replaces the ids of duplicates with the ids of the rows stored earlier.
async fn resolve_duplicate_ids(
    db: &PgPool,
    events: &[NewRawEvent],
    outcomes: &mut [StoreOutcome],
) -> Result<(), sqlx::Error> {
    let dup: Vec<usize> = (0..events.len())
        .filter(|&i| outcomes[i].duplicate)
        .collect();
    let sources: Vec<&str> = dup.iter().map(|&i| events[i].source.as_str()).collect();
    let keys: Vec<&str> = dup
        .iter()
        .map(|&i| events[i].source_event_id.as_str())
        .collect();
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT r.id, r.source, r.source_event_id FROM customer_raw_event r \
         JOIN UNNEST($1::text[], $2::text[]) AS k(source, source_event_id) \
           ON r.source = k.source AND r.source_event_id = k.source_event_id",
    )
    .bind(&sources)
    .bind(&keys)
    .fetch_all(db)
    .await?;
    let existing: std::collections::HashMap<(String, String), Uuid> = rows
        .into_iter()
        .map(|(id, source, key)| ((source, key), id))
        .collect();
    for &i in &dup {
        let key = (
            events[i].source.as_str().to_owned(),
            events[i].source_event_id.clone(),
        );
        outcomes[i].id = existing.get(&key).copied().unwrap_or(Uuid::nil());
    }
    Ok(())
}

/// Marks events stored by [`insert_batch`] as published on `events.raw`: takes the
/// outbox rows of their batches out. `ids` must hold whole batches (every new event of
/// each [`insert_batch`] call, as [`publish_stored`] gets them): a batch row is only
/// deleted when every event it lists is in `ids`, so a partial list takes nothing out
/// and the relay publishes the batch again (at least once) rather than never.
pub async fn mark_stored_published(db: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    delete_outbox_rows(
        db,
        "DELETE FROM raw_event_outbox_batch WHERE id = ANY($1) AND event_ids <@ $1",
        ids,
    )
    .await
}

/// Marks single queued events (`raw_event_outbox`: what the relay publishes, and what
/// `ctl republish` queues) as published on `events.raw`: takes them out of the outbox.
pub async fn mark_published(db: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    delete_outbox_rows(db, "DELETE FROM raw_event_outbox WHERE id = ANY($1)", ids).await
}

/// Runs one of the outbox's `DELETE`s (`$1`: the published ids), unless `ids` is empty.
async fn delete_outbox_rows(db: &PgPool, sql: &str, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if !ids.is_empty() {
        sqlx::query(sql).bind(ids).execute(db).await?;
    }
    Ok(())
}

/// Publishes newly stored events on `events.raw`, then marks them published
/// ([`mark_stored_published`]: `events` must hold whole batches of [`insert_batch`]). A
/// failure is logged and counted: the rows stay in the outbox for the relay.
pub async fn publish_stored(streams: &Streams, db: &PgPool, events: &[NewRawEvent]) -> bool {
    if events.is_empty() {
        return true;
    }
    let envelopes: Vec<Envelope<RawPayloadRef<'_>>> =
        events.iter().map(NewRawEvent::envelope_ref).collect();
    if let Err(e) = streams.publish_many(Topic::EventsRaw, &envelopes).await {
        metrics::counter!("ingest_publish_failures_total").increment(events.len() as u64);
        tracing::warn!(error = %e, events = events.len(), "publishing to events.raw failed; the outbox relay will retry");
        return false;
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    if let Err(e) = mark_stored_published(db, &ids).await {
        // Published but not marked: the relay publishes them again later, which
        // at-least-once delivery allows for.
        tracing::warn!(error = %e, "marking raw events published failed");
        return false;
    }
    metrics::counter!("ingest_raw_events_published_total").increment(events.len() as u64);
    true
}

/// Tuning of the group-commit writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Most rows in one INSERT.
    pub batch_rows: usize,
    /// How long a writer waits for more work when its batch is short.
    pub linger: Duration,
    /// Writer tasks (concurrent INSERTs): while one commits, the next collects.
    pub writers: usize,
    /// Publisher tasks (concurrent pipelines to Redis).
    pub publishers: usize,
}

impl WriterOptions {
    /// The options in the settings (`INGEST_COMMIT_*`).
    pub fn from_settings(s: &config::Settings) -> Self {
        Self {
            batch_rows: s.ingest.ingest_commit_batch.max(1),
            linger: Duration::from_micros(s.ingest.ingest_commit_linger_us),
            writers: s.ingest.ingest_commit_writers.max(1),
            publishers: s.ingest.ingest_publishers.max(1),
        }
    }
}

/// Whether Postgres refused the data itself ([`Fault::Permanent`]: a data exception, an
/// integrity violation, a value past a program limit, or one sqlx could not encode), so
/// the same rows would fail again; anything else (connections, timeouts, shutdown) is
/// the database's trouble and may pass.
pub fn is_data_error(e: &sqlx::Error) -> bool {
    fault::classify(e) == Fault::Permanent
}

/// Why a job was not stored.
enum JobError {
    /// Its own data was refused (see [`StoreError::Rejected`]).
    Rejected(String),
    /// The database failed.
    Failed(Arc<sqlx::Error>),
}

type Reply = oneshot::Sender<Result<Vec<StoreOutcome>, JobError>>;

struct Job {
    events: Vec<NewRawEvent>,
    reply: Reply,
}

/// The handle request handlers store events through. Cheap to clone; the writers stop
/// when the last handle is dropped.
#[derive(Clone)]
pub struct RawEventStore {
    jobs: mpsc::Sender<Job>,
}

/// The background tasks of a [`RawEventStore`]; await [`StoreTasks::drained`] after
/// dropping every handle to let queued events commit and publish.
pub struct StoreTasks {
    writers: Vec<JoinHandle<()>>,
    publishers: Vec<JoinHandle<()>>,
}

impl StoreTasks {
    /// Waits until every queued event is committed and every commit published (or left
    /// to the relay).
    pub async fn drained(self) {
        for h in self.writers {
            let _ = h.await;
        }
        for h in self.publishers {
            let _ = h.await;
        }
    }
}

impl RawEventStore {
    /// Starts the writer and publisher tasks. `streams` of `None` leaves every row to the
    /// outbox relay (used by tools that must not publish).
    pub fn start(db: PgPool, streams: Option<Streams>, opts: WriterOptions) -> (Self, StoreTasks) {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(opts.batch_rows.max(64) * 4);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (pub_tx, pub_rx) = mpsc::channel::<Vec<NewRawEvent>>(opts.writers * 4);
        let pub_rx = Arc::new(Mutex::new(pub_rx));

        let writers = (0..opts.writers)
            .map(|_| {
                tokio::spawn(writer_loop(
                    db.clone(),
                    Arc::clone(&jobs_rx),
                    streams.is_some().then(|| pub_tx.clone()),
                    opts.clone(),
                ))
            })
            .collect();
        drop(pub_tx);
        let publishers = match streams {
            Some(streams) => (0..opts.publishers)
                .map(|_| {
                    tokio::spawn(publisher_loop(
                        db.clone(),
                        streams.clone(),
                        Arc::clone(&pub_rx),
                        opts.batch_rows,
                    ))
                })
                .collect(),
            None => Vec::new(),
        };
        (
            Self { jobs: jobs_tx },
            StoreTasks {
                writers,
                publishers,
            },
        )
    }

    /// Makes `events` durable (group-committed with other callers' events) and reports,
    /// per event and in order, whether it was new or a duplicate. Returns only after the
    /// commit.
    pub async fn store(&self, events: Vec<NewRawEvent>) -> Result<Vec<StoreOutcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { events, reply })
            .await
            .map_err(|_| StoreError::Stopped)?;
        match answer.await {
            Ok(Ok(outcomes)) => Ok(outcomes),
            Ok(Err(JobError::Rejected(reason))) => Err(StoreError::Rejected(reason)),
            Ok(Err(JobError::Failed(e))) => Err(StoreError::Database(clone_sqlx_error(&e))),
            Err(_) => Err(StoreError::Stopped),
        }
    }
}

/// sqlx errors are not `Clone`; every waiter of a failed batch gets a protocol error with
/// the same text.
fn clone_sqlx_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}

async fn collect(rx: &Mutex<mpsc::Receiver<Job>>, opts: &WriterOptions) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut rows = first.events.len();
    let mut jobs = vec![first];
    let deadline = tokio::time::Instant::now() + opts.linger;
    while rows < opts.batch_rows {
        match rx.try_recv() {
            Ok(job) => {
                rows += job.events.len();
                jobs.push(job);
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if opts.linger.is_zero() {
                    break;
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => {
                        rows += job.events.len();
                        jobs.push(job);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
    Some(jobs)
}

async fn writer_loop(
    db: PgPool,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    publish: Option<mpsc::Sender<Vec<NewRawEvent>>>,
    opts: WriterOptions,
) {
    while let Some(jobs) = collect(&rx, &opts).await {
        let mut events = Vec::with_capacity(jobs.iter().map(|j| j.events.len()).sum());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.reply, job.events.len()));
            events.extend(job.events);
        }
        metrics::histogram!("ingest_commit_batch_rows").record(events.len() as f64);
        let fresh = match insert_batch(&db, &events).await {
            Ok(outcomes) => {
                count_stored(&outcomes);
                let mut rest = outcomes.as_slice();
                for (reply, n) in replies {
                    let (mine, tail) = rest.split_at(n);
                    rest = tail;
                    // A waiter that went away (client disconnected) still had its events
                    // committed; nothing to undo.
                    let _ = reply.send(Ok(mine.to_vec()));
                }
                new_events(events, &outcomes)
            }
            Err(e) if is_data_error(&e) && replies.len() > 1 => {
                // One request's data poisoned the shared INSERT: commit each request
                // alone, so only the culprit is refused and the others are stored.
                tracing::warn!(error = %e, requests = replies.len(), "group commit refused; committing requests one by one");
                metrics::counter!("ingest_commit_splits_total").increment(1);
                commit_one_by_one(&db, events, replies).await
            }
            Err(e) => {
                let shared = job_error(e, events.len());
                for (reply, _) in replies {
                    let _ = reply.send(Err(shared()));
                }
                Vec::new()
            }
        };
        if let Some(publish) = &publish
            && !fresh.is_empty()
            && publish.send(fresh).await.is_err()
        {
            tracing::warn!("publisher stopped; events stay in the outbox");
        }
    }
}

/// Commits each request's events with an INSERT of their own; returns the new events.
async fn commit_one_by_one(
    db: &PgPool,
    mut events: Vec<NewRawEvent>,
    replies: Vec<(Reply, usize)>,
) -> Vec<NewRawEvent> {
    let mut fresh = Vec::new();
    for (reply, n) in replies {
        let mine: Vec<NewRawEvent> = events.drain(..n).collect();
        match insert_batch(db, &mine).await {
            Ok(outcomes) => {
                count_stored(&outcomes);
                let _ = reply.send(Ok(outcomes.clone()));
                fresh.extend(new_events(mine, &outcomes));
            }
            Err(e) => {
                let _ = reply.send(Err(job_error(e, mine.len())()));
            }
        }
    }
    fresh
}

/// The error every waiter of a failed INSERT of `rows` rows gets, logged and counted
/// once.
fn job_error(e: sqlx::Error, rows: usize) -> impl Fn() -> JobError {
    let rejected = is_data_error(&e);
    if rejected {
        tracing::warn!(error = %e, events = rows, "raw events refused by Postgres");
        metrics::counter!("ingest_commit_rejected_total").increment(1);
    } else {
        tracing::error!(error = %e, events = rows, "group commit failed");
        metrics::counter!("ingest_commit_failures_total").increment(1);
    }
    let reason = e
        .as_database_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned());
    let shared = Arc::new(e);
    move || {
        if rejected {
            JobError::Rejected(reason.clone())
        } else {
            JobError::Failed(Arc::clone(&shared))
        }
    }
}

fn count_stored(outcomes: &[StoreOutcome]) {
    let stored = outcomes.iter().filter(|o| !o.duplicate).count();
    metrics::counter!("ingest_raw_events_stored_total").increment(stored as u64);
    metrics::counter!("ingest_raw_events_duplicate_total")
        .increment((outcomes.len() - stored) as u64);
}

/// The events of `outcomes` that were not duplicates.
fn new_events(events: Vec<NewRawEvent>, outcomes: &[StoreOutcome]) -> Vec<NewRawEvent> {
    events
        .into_iter()
        .zip(outcomes)
        .filter(|(_, o)| !o.duplicate)
        .map(|(e, _)| e)
        .collect()
}

async fn publisher_loop(
    db: PgPool,
    streams: Streams,
    rx: Arc<Mutex<mpsc::Receiver<Vec<NewRawEvent>>>>,
    batch_rows: usize,
) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(mut batch) = rx.recv().await else {
                return;
            };
            while batch.len() < batch_rows {
                match rx.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            batch
        };
        publish_stored(&streams, &db, &batch).await;
    }
}
