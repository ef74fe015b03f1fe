//! The consumer-group runner: the one loop every consumer of the fleet runs.
//!
//! [`run_consumer`] creates the group (`XGROUP CREATE … 0 MKSTREAM`), then repeats:
//!
//! 1. every `claim_idle / 2`: `XAUTOCLAIM` entries idle longer than `claim_idle` on any
//!    consumer (a dead replica's pending entries become ours) and process them; forget
//!    consumers that left the group holding nothing; refresh the pending/lag gauges;
//! 2. when a retry is due: re-read this consumer's own pending entries (`XREADGROUP …
//!    0`) and process them again — a failing entry is retried after a short exponential
//!    backoff, not after the claim timeout;
//! 3. otherwise: `XREADGROUP … BLOCK … >` for new entries and process them.
//!
//! **Read-ahead** ([`ConsumerOptions::read_ahead`], on by default). While a batch of new
//! entries is handled, the runner already reads the next one (`XREADGROUP … >` without
//! `BLOCK`, on the same connection), so a busy consumer does not wait for a read after
//! each commit. Batches are still handed to the
//! handler one at a time and in the order they were read, each acked only after the
//! handler has committed it: the batch read ahead is handed over at the next step,
//! before housekeeping or a retry scan, and is itself read ahead of only when neither is
//! due. Entries read ahead are this consumer's pending entries like any other: killed
//! with them in hand, they are reclaimed by another replica after `claim_idle` (or
//! re-read by a consumer of the same name); held for half of `claim_idle` or longer
//! (the batch before them was slow, or paused through an outage) they are not handed
//! over from memory but re-read from this consumer's pending list, where they are only
//! if no other replica has claimed them meanwhile. On shutdown the batch read ahead is
//! settled with the batch in hand, and nothing is read ahead once shutdown has begun.
//!
//! **Ordering window** (handlers with an [`Handler::order_key`]; see [`crate::window`]).
//! Every batch of new entries is merged with the entries the group holds back (taken
//! from the window's holders onto this consumer, whichever replica gave them back); a
//! full batch means more are waiting, so the runner hands the handler all but the
//! latest `batch_size` by key and gives those back to the holders for the next read of
//! any replica. A read that is not full (or returns nothing) or shutdown hands every
//! held entry over at once, and the read that follows giving back never blocks. Held
//! entries stay pending, unacknowledged, on a holder: the next step of any replica takes
//! them, and if none steps for `claim_idle`, housekeeping claims them like a dead
//! replica's.
//!
//! Processing a batch: undecodable bodies and unknown envelope versions are
//! dead-lettered at once (poison never reaches the handler and never stops the loop);
//! the handler commits the rest and returns one result per delivery, each `Ok` or a
//! [`HandlerError`] saying whose fault the failure is:
//!
//! - exactly the `Ok` entries are `XACK`ed;
//! - when every delivery of a batch of more than one fails and not for an outage, the
//!   handler could not tell the culprit, so the batch is handed back in halves (and
//!   those in halves) until each failure is pinned to one entry: one poisoned event
//!   never takes its batch-mates down with it;
//! - `Permanent` errors, and `Retry` errors on the last allowed delivery, go to
//!   `<topic>.dlq` (the dead letter is written and the entry acked in one `MULTI`);
//!   other `Retry` errors are delivered again after a short exponential backoff;
//! - `Transient` errors (an outage) are not counted at all: the runner keeps those
//!   entries in hand, pauses (100 ms doubling to 5 s) and hands them to the handler
//!   again, refreshing its claim with `XCLAIM … JUSTID` (which counts no delivery), until
//!   the outage ends or the runner is shut down.
//!
//! Delivery counts come from Redis itself (`XPENDING`), so they survive restarts and
//! move with claimed entries.
//!
//! Redis errors never end the runner: it backs off and carries on, and re-creates its
//! group if Redis was wiped. It returns once the shutdown token is cancelled and the
//! batch in hand is settled.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use redis::aio::ConnectionManager;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::dlq::DeadLetterDraft;
use crate::wire::{self, BODY_FIELD, RawEntry};
use crate::{ENVELOPE_VERSION, Envelope, StreamError, Streams, Topic};

/// One entry handed to a [`Handler`].
#[derive(Debug, Clone)]
pub struct Delivery<T> {
    /// The stream entry id (`<ms>-<seq>`).
    pub entry_id: String,
    /// The decoded envelope.
    pub envelope: Envelope<T>,
    /// How many times this entry has been delivered to the group, this time included
    /// (1 on first delivery).
    pub delivery_count: u64,
}

/// Why a handler could not process one delivery. Handlers pick the variant from the
/// error with `storage::fault::classify` (through `service_kit::handler_error`), so every
/// consumer sorts failures the same way.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// An outage (database or Redis down, pool exhausted, lock or statement timeout):
    /// nothing was committed and the entry is not at fault. The runner keeps the entry,
    /// pauses with a growing back-off and hands it to the handler again, without reading
    /// it from Redis again — so an outage never counts as a delivery and never
    /// dead-letters anything, however long it lasts.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// A failure of unknown cause: nothing was committed, the entry stays pending and is
    /// delivered again; after `max_deliveries` deliveries it is dead-lettered with this
    /// error.
    #[error("{0:#}")]
    Retry(anyhow::Error),
    /// The entry can never be processed (it violates the topic's contract, or Postgres
    /// refuses its data): it goes to the dead-letter stream at once with this reason.
    #[error("{0}")]
    Permanent(String),
}

impl HandlerError {
    /// Whether this is a failure of the entry (or of unknown cause) rather than an
    /// outage: what the runner bisects a failed batch for.
    fn blames_entry(&self) -> bool {
        !matches!(self, HandlerError::Transient(_))
    }
}

impl From<anyhow::Error> for HandlerError {
    fn from(e: anyhow::Error) -> Self {
        HandlerError::Retry(e)
    }
}

/// What a consumer does with its deliveries.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The envelope payload type of the topic consumed.
    type Payload: DeserializeOwned + Send + Sync + 'static;

    /// Commit the batch's effects (idempotently: an entry may be seen twice) and return
    /// one result per delivery, same order.
    async fn handle(&self, batch: &[Delivery<Self::Payload>]) -> Vec<Result<(), HandlerError>>;

    /// Where `delivery` belongs in the order this handler would rather apply entries in,
    /// which turns on the ordering window (module doc, [`crate::window`]): under a
    /// backlog, batches are handed over merged across two reads in this order. `None`
    /// (the default) for any delivery of a step: that step hands over what it read, as
    /// read.
    fn order_key(&self, delivery: &Delivery<Self::Payload>) -> Option<crate::window::OrderKey> {
        let _ = delivery;
        None
    }
}

/// How a consumer reads its topic.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Consumer group (one per consuming service: replicas share it).
    pub group: String,
    /// This consumer's name within the group; must be unique among running consumers
    /// (two runners sharing a name would take each other's in-flight entries for their
    /// own pending ones).
    pub consumer: String,
    /// Entries read per `XREADGROUP` (and handed to the handler at once).
    pub batch_size: usize,
    /// Longest an `XREADGROUP` blocks waiting for new entries; also bounds how long a
    /// cancelled consumer takes to notice.
    pub block: Duration,
    /// Deliveries after which a failing entry is dead-lettered.
    pub max_deliveries: u32,
    /// How long an entry may stay pending on a consumer before another claims it. Must
    /// be longer than the slowest handler batch, or live work gets claimed twice.
    pub claim_idle: Duration,
    /// Whether the next batch of new entries is read while one is handled (see the
    /// module doc). On by default; off for a handler that holds its batch on purpose
    /// (ml-inference waiting for a backlog to drain), which would hold a second one too.
    pub read_ahead: bool,
}

impl ConsumerOptions {
    /// Default for [`ConsumerOptions::block`].
    pub const DEFAULT_BLOCK: Duration = Duration::from_secs(1);

    /// Options from the fleet's settings (`STREAM_BATCH_SIZE`, `STREAM_MAX_DELIVERIES`,
    /// `STREAM_CLAIM_IDLE_MS`) for `group`. The consumer is named `host-pid-n` (`n` counts
    /// calls in this process), so no two consumers share a name — not replicas on one
    /// host, nor several runners in one process (tests start whole fleets in one).
    pub fn from_settings(s: &config::Settings, group: &str) -> Self {
        Self {
            group: group.to_owned(),
            consumer: default_consumer_name(),
            batch_size: s.stream_batch_size.max(1),
            block: Self::DEFAULT_BLOCK,
            max_deliveries: s.stream_max_deliveries.max(1),
            claim_idle: Duration::from_millis(s.stream_claim_idle_ms.max(1)),
            read_ahead: true,
        }
    }
}

fn default_consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{n}", std::process::id())
}

/// How long an idle consumer without a dedicated connection sleeps between polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Runs a consumer of `topic` until `shutdown` is cancelled. See the module doc.
pub async fn run_consumer<H: Handler>(
    streams: Streams,
    topic: Topic,
    opts: ConsumerOptions,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(opts.batch_size > 0, "batch_size must be at least 1");
    anyhow::ensure!(opts.max_deliveries > 0, "max_deliveries must be at least 1");
    anyhow::ensure!(!opts.group.is_empty(), "the consumer group needs a name");
    anyhow::ensure!(!opts.consumer.is_empty(), "the consumer needs a name");

    let span = tracing::info_span!("consumer", topic = topic.name(), group = %opts.group, consumer = %opts.consumer);
    async move {
        let Some((conn, blocking)) = reader_connection(&streams, &shutdown).await else {
            return Ok(());
        };
        let mut runner = Runner::new(
            streams,
            topic,
            opts,
            handler,
            conn,
            blocking,
            shutdown.clone(),
        );
        tracing::info!(blocking, "consumer started");
        runner.run(&shutdown).await;
        tracing::info!("consumer stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// The connection this consumer reads on: its own when the handle can open one (a
/// blocking read must not stall other users of a shared multiplexed connection),
/// otherwise the shared one in polling mode. `None` if cancelled while connecting.
async fn reader_connection(
    streams: &Streams,
    shutdown: &CancellationToken,
) -> Option<(ConnectionManager, bool)> {
    let Some(client) = &streams.client else {
        return Some((streams.conn(), false));
    };
    let mut failures = 0;
    loop {
        match crate::managed_connection(client.clone()).await {
            Ok(conn) => return Some((conn, true)),
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "consumer cannot connect to redis; retrying");
                if sleep_or_cancel(error_backoff(failures), shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Sleeps for `d` unless cancelled first; returns whether it was cancelled.
pub(crate) async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// Back-off after the `n`th consecutive Redis failure: 100 ms doubling to 5 s.
pub(crate) fn error_backoff(n: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << n.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(5_000))
}

/// Delay before re-reading own pending entries after a retryable failure on delivery
/// `count`: a twentieth of `claim_idle` (10 ms to 1 s), doubling per delivery, and never
/// longer than half of `claim_idle` so this consumer retries before anyone claims.
pub(crate) fn retry_backoff(claim_idle: Duration, count: u64) -> Duration {
    let base = (claim_idle / 20).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let factor = 1u32 << count.saturating_sub(1).min(16);
    base.saturating_mul(factor).min((claim_idle / 2).max(base))
}

/// Decodes an entry's envelope, or says why it never can be.
pub(crate) fn decode<T: DeserializeOwned>(raw: &RawEntry) -> Result<Envelope<T>, String> {
    if raw.fields.is_none() {
        return Err(
            "the entry was trimmed by MAXLEN before it was processed, so its body is \
                    lost; republish it from Postgres"
                .into(),
        );
    }
    let Some(body) = raw.field(BODY_FIELD) else {
        return Err(format!(
            "the entry has no `{BODY_FIELD}` field, so it was not written by this runtime"
        ));
    };
    // The happy path parses once, straight into the payload type; only a failure pays
    // for a second look to say precisely why.
    match serde_json::from_slice::<Envelope<T>>(body) {
        Ok(env) if env.v == ENVELOPE_VERSION => Ok(env),
        Ok(env) => Err(unsupported_version(u64::from(env.v))),
        Err(typed) => {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
            match value.get("v").and_then(serde_json::Value::as_u64) {
                Some(v) if v == u64::from(ENVELOPE_VERSION) => Err(format!(
                    "the envelope does not match this topic's payload: {typed}"
                )),
                Some(v) => Err(unsupported_version(v)),
                None => Err("the envelope has no numeric version `v`".into()),
            }
        }
    }
}

fn unsupported_version(v: u64) -> String {
    format!("unsupported envelope version {v} (this build reads version {ENVELOPE_VERSION})")
}

/// Per-consumer metric handles, labelled by topic and group.
struct Meters {
    processed: metrics::Counter,
    failed: metrics::Counter,
    dead_lettered: metrics::Counter,
    claimed: metrics::Counter,
    outage_pauses: metrics::Counter,
    bisections: metrics::Counter,
    pending: metrics::Gauge,
    lag: metrics::Gauge,
    dead_letters: metrics::Gauge,
}

impl Meters {
    fn new(topic: Topic, group: &str) -> Self {
        let labels = [
            ("topic", topic.name().to_owned()),
            ("group", group.to_owned()),
        ];
        Self {
            processed: metrics::counter!("streams_entries_processed_total", &labels),
            failed: metrics::counter!("streams_entries_failed_total", &labels),
            dead_lettered: metrics::counter!("streams_entries_dead_lettered_total", &labels),
            claimed: metrics::counter!("streams_entries_claimed_total", &labels),
            outage_pauses: metrics::counter!("streams_outage_pauses_total", &labels),
            bisections: metrics::counter!("streams_batch_bisections_total", &labels),
            pending: metrics::gauge!("streams_pending_entries", &labels),
            lag: metrics::gauge!("streams_lag_entries", &labels),
            dead_letters: metrics::gauge!("streams_dlq_entries", &labels),
        }
    }
}

struct Runner<H: Handler> {
    streams: Streams,
    topic: Topic,
    key: String,
    opts: ConsumerOptions,
    handler: Arc<H>,
    conn: ConnectionManager,
    blocking: bool,
    meters: Meters,
    claim_cursor: String,
    housekeeping_every: Duration,
    next_housekeeping: Instant,
    /// When this consumer's failed entries are due for another delivery.
    retry_due: Option<Instant>,
    /// Where a scan of this consumer's own pending entries continues (an entry id; the
    /// scan reads entries after it), while one is under way.
    pending_scan: Option<String>,
    /// New entries read while the previous batch was handled (see the module doc).
    read_ahead: Option<ReadAhead>,
    /// Whether this consumer's last split gave entries to the fleet's window (see the
    /// module doc): its next read then does not block.
    gave_back: bool,
    /// Consumers of the group that read lately (holders excepted), counted at
    /// housekeeping: how many batches the ordering window holds.
    replicas: usize,
    /// Whether the handler has an order (a delivery had an [`Handler::order_key`]): only
    /// then does an empty read, or shutdown, take the window's held entries.
    windowed: bool,
    group_ready: bool,
    /// Ends a pause through an outage early.
    shutdown: CancellationToken,
}

impl<H: Handler> Runner<H> {
    fn new(
        streams: Streams,
        topic: Topic,
        opts: ConsumerOptions,
        handler: Arc<H>,
        conn: ConnectionManager,
        blocking: bool,
        shutdown: CancellationToken,
    ) -> Self {
        let now = Instant::now();
        Self {
            key: streams.key(topic),
            meters: Meters::new(topic, &opts.group),
            housekeeping_every: (opts.claim_idle / 2)
                .clamp(Duration::from_millis(10), Duration::from_secs(30)),
            streams,
            topic,
            opts,
            handler,
            conn,
            blocking,
            claim_cursor: "0-0".into(),
            next_housekeeping: now,
            retry_due: None,
            // A restarted consumer first settles what it left pending last time.
            pending_scan: Some("0".into()),
            read_ahead: None,
            gave_back: false,
            replicas: 1,
            windowed: false,
            group_ready: false,
            shutdown,
        }
    }

    async fn run(&mut self, shutdown: &CancellationToken) {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            match self.step(shutdown).await {
                Ok(()) => failures = 0,
                Err(e) if e.is_missing_group() => {
                    tracing::warn!(
                        "consumer group vanished (stream deleted or redis wiped); re-creating it"
                    );
                    self.group_ready = false;
                    self.claim_cursor = "0-0".into();
                    // Its entries went with the group.
                    self.read_ahead = None;
                    self.gave_back = false;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "consumer hit a redis error; backing off");
                    if sleep_or_cancel(error_backoff(failures), shutdown).await {
                        break;
                    }
                }
            }
        }
        // Entries read ahead are in hand too: settle them before stopping (nothing more is
        // read ahead once shutdown has begun).
        if let Some(ahead) = self.read_ahead.take()
            && let Err(e) = self.process_read_ahead(ahead).await
        {
            tracing::warn!(error = %e, "could not settle the entries read ahead; they stay pending");
        }
        if self.windowed
            && let Err(e) = self.hand_over_held().await
        {
            tracing::warn!(error = %e, "could not settle the entries held back; they stay pending");
        }
    }

    async fn step(&mut self, shutdown: &CancellationToken) -> Result<(), StreamError> {
        if !self.group_ready {
            crate::ensure_group(&mut self.conn, &self.key, &self.opts.group).await?;
            self.group_ready = true;
        }
        if let Some(ahead) = self.read_ahead.take() {
            return self.process_read_ahead(ahead).await;
        }
        let now = Instant::now();
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + self.housekeeping_every;
            if self.reclaim().await? {
                // More of the pending list is left to scan: carry on at once, so a dead
                // replica's backlog is taken over in one go, not a batch per tick.
                self.next_housekeeping = now;
                return Ok(());
            }
            self.forget_departed_consumers().await?;
            self.count_replicas().await?;
            self.report_gauges().await?;
            return Ok(());
        }
        if self.pending_scan.is_none() && self.retry_due.is_some_and(|due| now >= due) {
            // Failures of this scan set the next due time afresh.
            self.retry_due = None;
            self.pending_scan = Some("0".into());
        }
        if let Some(after) = self.pending_scan.take() {
            let entries = self
                .read(ReadFrom::OwnPending(&after), Duration::ZERO)
                .await?;
            if entries.len() >= self.opts.batch_size {
                // More of our pending entries may follow: continue after this batch
                // (entries of this batch that fail again wait for `retry_due`).
                self.pending_scan = entries.last().map(|e| e.id.clone());
            }
            if !entries.is_empty() {
                let counts = self.delivery_counts(&entries).await?;
                self.process(entries, &counts).await?;
            }
            return Ok(());
        }
        let mut wait = self.opts.block.min(self.next_housekeeping - now);
        if let Some(due) = self.retry_due {
            wait = wait.min(due.saturating_duration_since(now));
        }
        if self.gave_back {
            // Entries held back never wait for traffic that is not already there.
            wait = Duration::ZERO;
        }
        let entries = self.read(ReadFrom::New, wait).await?;
        if entries.is_empty() {
            // Nothing is waiting (here): whatever the fleet holds back goes now.
            self.gave_back = false;
            if self.windowed && self.hand_over_held().await? {
                return Ok(());
            }
            if !self.blocking {
                sleep_or_cancel(wait.min(POLL_INTERVAL), shutdown).await;
            }
            return Ok(());
        }
        self.process_new(entries).await
    }

    /// Hands over a batch read ahead, unless it was held so long that another consumer
    /// may claim its entries any moment: then they are re-read from this consumer's
    /// pending list instead, where they are only if still this consumer's.
    async fn process_read_ahead(&mut self, ahead: ReadAhead) -> Result<(), StreamError> {
        if ahead.read_at.elapsed() >= self.opts.claim_idle / 2 {
            tracing::info!(
                entries = ahead.entries.len(),
                "entries read ahead were held too long; re-reading them from the pending list"
            );
            self.pending_scan = Some("0".into());
            return Ok(());
        }
        self.process_new(ahead.entries).await
    }

    /// Processes entries read with `>` (on their first delivery) through the ordering
    /// window and, when neither housekeeping nor a retry is due and shutdown has not
    /// begun, reads the next batch meanwhile (see the module doc).
    async fn process_new(&mut self, entries: Vec<RawEntry>) -> Result<(), StreamError> {
        let now = Instant::now();
        let read_ahead = self.opts.read_ahead
            && !self.shutdown.is_cancelled()
            && now < self.next_housekeeping
            && self.pending_scan.is_none()
            && self.retry_due.is_none_or(|due| now < due);
        let full = entries.len() >= self.opts.batch_size;
        let (deliveries, bodies) = self.decode_all(entries, &HashMap::new()).await?;
        let (deliveries, bodies) = self.window(deliveries, bodies, full).await?;
        if !read_ahead {
            return self.hand_over(deliveries, bodies).await;
        }
        let cmd = self.read_cmd(ReadFrom::New, Duration::ZERO);
        let mut conn = self.conn.clone();
        let next = async move {
            let reply: redis::Value = cmd.query_async(&mut conn).await?;
            wire::parse_read_reply(reply)
        };
        let (processed, next) = tokio::join!(self.hand_over(deliveries, bodies), next);
        match next {
            Ok(entries) if entries.is_empty() => {}
            Ok(entries) => {
                self.read_ahead = Some(ReadAhead {
                    read_at: now,
                    entries,
                })
            }
            Err(e) => {
                // The read may have delivered entries whose reply was lost: they are
                // pending on this consumer, so scan the pending list for them.
                tracing::debug!(error = %e, "reading ahead failed; scanning the pending list next");
                self.pending_scan = Some("0".into());
            }
        }
        processed
    }

    /// The ordering window (module doc, [`crate::window`]): takes the entries the fleet
    /// holds back (from the window's holders, onto this consumer), merges them with the
    /// entries just `read` (`full`: a whole batch, so more are waiting), gives the latest
    /// batch back to the holders when more are waiting and returns the rest with their
    /// raw entries. Without an order key for every delivery, returns `read` as it came.
    /// A failure to take or give back only costs the order: what could not be taken stays
    /// held for the next step, and what could not be given back is handed over now.
    async fn window(
        &mut self,
        read: Vec<Delivery<H::Payload>>,
        mut bodies: HashMap<String, RawEntry>,
        full: bool,
    ) -> Result<(Vec<Delivery<H::Payload>>, HashMap<String, RawEntry>), StreamError> {
        let handler = self.handler.clone();
        let keyed = |d: &Delivery<H::Payload>| handler.order_key(d);
        if !read.iter().all(|d| keyed(d).is_some()) {
            return Ok((read, bodies));
        }
        self.windowed = true;
        let held = match self.take_held().await {
            Ok((held, held_bodies)) => {
                bodies.extend(held_bodies);
                held
            }
            Err(e) if e.is_missing_group() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "could not take the entries held back; they stay held");
                Vec::new()
            }
        };
        if !held.iter().all(|(_, d)| keyed(d).is_some()) {
            let mut all: Vec<_> = held.into_iter().map(|(_, d)| d).collect();
            all.extend(read);
            return Ok((all, bodies));
        }
        let more_waiting = full && !self.shutdown.is_cancelled() && self.pending_scan.is_none();
        let batches = crate::window::window_batches(self.replicas);
        let (mut now_part, later) = crate::window::split(
            held,
            read,
            self.opts.batch_size.saturating_mul(batches),
            crate::window::max_holds(batches),
            more_waiting,
            |d| keyed(d),
        );
        self.gave_back = false;
        if !later.is_empty() {
            match self.give_back(&later).await {
                Ok(()) => {
                    self.gave_back = true;
                    for (_, d) in &later {
                        bodies.remove(&d.entry_id);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not hold entries back; handing them over now");
                    now_part.extend(later.into_iter().map(|(_, d)| d));
                }
            }
        }
        Ok((now_part, bodies))
    }

    /// Takes every entry the window's holders hold (up to twice the largest window)
    /// onto this consumer, in one script, with how many times each was held.
    async fn take_held(
        &mut self,
    ) -> Result<(Vec<(u32, Delivery<H::Payload>)>, HashMap<String, RawEntry>), StreamError> {
        // Built once: `Script::new` hashes the script (SHA-1) for `EVALSHA`.
        static TAKE: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(crate::window::TAKE_HELD_SCRIPT));
        let mut script = TAKE.key(&self.key);
        script.arg(&self.opts.group).arg(&self.opts.consumer).arg(
            self.opts
                .batch_size
                .saturating_mul(2 * crate::window::MAX_WINDOW_BATCHES),
        );
        for holds in 1..=crate::window::max_holds(crate::window::MAX_WINDOW_BATCHES) {
            script.arg(crate::window::holder(holds));
        }
        let reply: redis::Value = script.invoke_async(&mut self.conn).await?;
        let taken = wire::parse_held_reply(reply)?;
        if taken.is_empty() {
            return Ok((Vec::new(), HashMap::new()));
        }
        let mut holds = HashMap::with_capacity(taken.len());
        let mut counts = HashMap::with_capacity(taken.len());
        let mut entries = Vec::with_capacity(taken.len());
        for (h, count, raw) in taken {
            holds.insert(raw.id.clone(), h);
            counts.insert(raw.id.clone(), count);
            entries.push(raw);
        }
        let (deliveries, bodies) = self.decode_all(entries, &counts).await?;
        let held = deliveries
            .into_iter()
            .map(|d| (holds.get(&d.entry_id).copied().unwrap_or(1), d))
            .collect();
        Ok((held, bodies))
    }

    /// Gives `later` to the window's holders (`XCLAIM … JUSTID`: no delivery counted,
    /// idle time reset), each to the holder of its hold count.
    async fn give_back(
        &mut self,
        later: &[(u32, Delivery<H::Payload>)],
    ) -> Result<(), StreamError> {
        let mut pipe = redis::pipe();
        for holds in 1..=crate::window::max_holds(crate::window::MAX_WINDOW_BATCHES) {
            let ids: Vec<&str> = later
                .iter()
                .filter(|(h, _)| *h == holds)
                .map(|(_, d)| d.entry_id.as_str())
                .collect();
            if ids.is_empty() {
                continue;
            }
            pipe.cmd("XCLAIM")
                .arg(&self.key)
                .arg(&self.opts.group)
                .arg(crate::window::holder(holds))
                .arg(0)
                .arg(&ids)
                .arg("JUSTID")
                .ignore();
        }
        let () = pipe.query_async(&mut self.conn).await?;
        Ok(())
    }

    /// Takes every entry the fleet's window holds back and hands it to the handler
    /// (nothing more is waiting, or the consumer is stopping). Returns whether there was
    /// any.
    async fn hand_over_held(&mut self) -> Result<bool, StreamError> {
        let (held, bodies) = self.window(Vec::new(), HashMap::new(), false).await?;
        if held.is_empty() {
            return Ok(false);
        }
        self.hand_over(held, bodies).await?;
        Ok(true)
    }

    async fn read(
        &mut self,
        from: ReadFrom<'_>,
        wait: Duration,
    ) -> Result<Vec<RawEntry>, StreamError> {
        let reply: redis::Value = self
            .read_cmd(from, wait)
            .query_async(&mut self.conn)
            .await?;
        wire::parse_read_reply(reply)
    }

    /// `XREADGROUP` of up to a batch from `from`, blocking up to `wait` for new entries
    /// on a dedicated connection.
    fn read_cmd(&self, from: ReadFrom<'_>, wait: Duration) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.opts.group)
            .arg(&self.opts.consumer)
            .arg("COUNT")
            .arg(self.opts.batch_size);
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        // BLOCK 0 would block forever, so a zero wait reads without blocking.
        if matches!(from, ReadFrom::New) && self.blocking && wait_ms > 0 {
            cmd.arg("BLOCK").arg(wait_ms);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(match from {
            ReadFrom::New => ">",
            ReadFrom::OwnPending(after) => after,
        });
        cmd
    }

    /// Delivery counts of entries already in this consumer's pending list.
    async fn delivery_counts(
        &mut self,
        entries: &[RawEntry],
    ) -> Result<HashMap<String, u64>, StreamError> {
        let mut pipe = redis::pipe();
        for e in entries {
            pipe.cmd("XPENDING")
                .arg(&self.key)
                .arg(&self.opts.group)
                .arg(&e.id)
                .arg(&e.id)
                .arg(1);
        }
        let replies: Vec<redis::streams::StreamPendingCountReply> =
            pipe.query_async(&mut self.conn).await?;
        Ok(replies
            .into_iter()
            .flat_map(|r| r.ids)
            .map(|p| (p.id, p.times_delivered as u64))
            .collect())
    }

    /// Takes over entries idle on other (presumably dead) consumers and processes them.
    /// Returns whether the scan of the pending list is unfinished.
    async fn reclaim(&mut self) -> Result<bool, StreamError> {
        let idle_ms = u64::try_from(self.opts.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.key)
            .arg(&self.opts.group)
            .arg(&self.opts.consumer)
            .arg(idle_ms)
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(self.opts.batch_size)
            .query_async(&mut self.conn)
            .await?;
        let (cursor, claimed, deleted) = wire::parse_autoclaim_reply(reply)?;
        let unfinished = cursor != "0-0";
        self.claim_cursor = cursor;
        // Redis has already dropped these from the pending list: their bodies were
        // trimmed away. Record them so the loss is visible in `ctl dlq list`.
        for id in deleted {
            let raw = RawEntry { id, fields: None };
            let reason = decode::<serde_json::Value>(&raw).err().unwrap_or_default();
            self.dead_letter(DeadLetterDraft::new(&raw, reason, 0))
                .await?;
        }
        if claimed.is_empty() {
            return Ok(unfinished);
        }
        tracing::info!(
            count = claimed.len(),
            "claimed entries left pending by another consumer"
        );
        self.meters.claimed.increment(claimed.len() as u64);
        let counts = self.delivery_counts(&claimed).await?;
        self.process(claimed, &counts).await?;
        Ok(unfinished)
    }

    /// Removes consumers of the group that hold nothing and have been idle for ten claim
    /// timeouts: mostly replicas that exited or crashed (each process has its own name,
    /// so without this every restart would leave one behind). The check and the removal
    /// run in one script, so a consumer that receives entries in between keeps them. A
    /// live replica may be removed too when its topic is quiet (before Redis 7.2, `idle`
    /// counts from the last delivery, not the last read); holding nothing, it loses
    /// nothing and is re-created by its next delivery.
    async fn forget_departed_consumers(&mut self) -> Result<(), StreamError> {
        let idle_ms = u64::try_from((self.opts.claim_idle * 10).as_millis()).unwrap_or(u64::MAX);
        let removed: u64 = redis::Script::new(FORGET_CONSUMERS_SCRIPT)
            .key(&self.key)
            .arg(&self.opts.group)
            .arg(idle_ms)
            .arg(&self.opts.consumer)
            .invoke_async(&mut self.conn)
            .await?;
        if removed > 0 {
            tracing::info!(removed, "forgot consumers that left the group");
        }
        Ok(())
    }

    /// Counts the group's consumers that read within the claim timeout: this one and
    /// the others (`XINFO CONSUMERS`: O(consumers); holders are not replicas).
    async fn count_replicas(&mut self) -> Result<(), StreamError> {
        let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.key)
            .arg(&self.opts.group)
            .query_async(&mut self.conn)
            .await?;
        let recent = self.opts.claim_idle.as_millis();
        let others = reply
            .consumers
            .iter()
            .filter(|c| {
                c.name != self.opts.consumer
                    && !c.name.starts_with(crate::window::HOLDER_PREFIX)
                    && (c.idle as u128) < recent
            })
            .count();
        self.replicas = others + 1;
        Ok(())
    }

    async fn report_gauges(&mut self) -> Result<(), StreamError> {
        let reply: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await?;
        if let Some(g) = reply.groups.iter().find(|g| g.name == self.opts.group) {
            self.meters.pending.set(g.pending as f64);
            if let Some(lag) = g.lag {
                self.meters.lag.set(lag as f64);
            }
        }
        // The topic's dead-letter stream, as every group of the topic sees it.
        let dead_letters: u64 = redis::cmd("XLEN")
            .arg(self.streams.dlq_key(self.topic))
            .query_async(&mut self.conn)
            .await?;
        self.meters.dead_letters.set(dead_letters as f64);
        Ok(())
    }

    /// Decodes, hands to the handler, acks the successes and dead-letters what must go.
    /// `counts` holds delivery counts of re-delivered entries; absent ids are on their
    /// first delivery.
    async fn process(
        &mut self,
        entries: Vec<RawEntry>,
        counts: &HashMap<String, u64>,
    ) -> Result<(), StreamError> {
        let (deliveries, bodies) = self.decode_all(entries, counts).await?;
        self.hand_over(deliveries, bodies).await
    }

    /// Decodes `entries` (delivery counts as in [`Runner::process`]), dead-letters those
    /// that can never be handled and returns the rest with their raw entries by id.
    async fn decode_all(
        &mut self,
        entries: Vec<RawEntry>,
        counts: &HashMap<String, u64>,
    ) -> Result<(Vec<Delivery<H::Payload>>, HashMap<String, RawEntry>), StreamError> {
        let max = u64::from(self.opts.max_deliveries);
        let mut dead = Vec::new();
        let mut deliveries = Vec::with_capacity(entries.len());
        let mut bodies = HashMap::new();
        for raw in entries {
            let count = counts.get(&raw.id).copied().unwrap_or(1);
            match decode::<H::Payload>(&raw) {
                Err(reason) => {
                    tracing::warn!(entry_id = %raw.id, %reason, "dead-lettering an undecodable entry");
                    dead.push(DeadLetterDraft::new(&raw, reason, count));
                }
                Ok(_) if count > max => {
                    // Delivered more often than allowed without an outcome: the consumer
                    // died (or was killed) while handling it, maybe because of it.
                    let reason = format!(
                        "delivered {count} times without an outcome (max {max}); a consumer \
                         may have crashed while handling it"
                    );
                    dead.push(DeadLetterDraft::new(&raw, reason, count));
                }
                Ok(envelope) => {
                    let entry_id = raw.id.clone();
                    bodies.insert(entry_id.clone(), raw);
                    deliveries.push(Delivery {
                        entry_id,
                        envelope,
                        delivery_count: count,
                    });
                }
            }
        }
        for draft in dead {
            self.dead_letter(draft).await?;
        }
        Ok((deliveries, bodies))
    }

    /// Hands decoded `deliveries` to the handler, acks the successes and dead-letters
    /// what must go (`bodies`: their raw entries by id).
    async fn hand_over(
        &mut self,
        mut deliveries: Vec<Delivery<H::Payload>>,
        bodies: HashMap<String, RawEntry>,
    ) -> Result<(), StreamError> {
        let max = u64::from(self.opts.max_deliveries);
        let mut outages = 0u32;
        while !deliveries.is_empty() {
            let results = self.isolate(&deliveries).await;
            let mut acks = Vec::new();
            let mut dead = Vec::new();
            let mut held = Vec::new();
            let mut outage = None;
            let mut retry_after: Option<Duration> = None;
            for (d, result) in deliveries.into_iter().zip(results) {
                match result {
                    Ok(()) => acks.push(d.entry_id.clone()),
                    Err(HandlerError::Transient(e)) => {
                        outage.get_or_insert_with(|| format!("{e:#}"));
                        held.push(d);
                    }
                    Err(HandlerError::Permanent(reason)) => {
                        self.meters.failed.increment(1);
                        tracing::warn!(entry_id = %d.entry_id, event_id = %d.envelope.id, %reason, "handler rejected an entry; dead-lettering it");
                        dead.push(DeadLetterDraft::new(
                            &bodies[&d.entry_id],
                            reason,
                            d.delivery_count,
                        ));
                    }
                    Err(HandlerError::Retry(e)) if d.delivery_count >= max => {
                        self.meters.failed.increment(1);
                        let reason = format!("{e:#}");
                        tracing::warn!(entry_id = %d.entry_id, event_id = %d.envelope.id, %reason, deliveries = d.delivery_count, "entry failed its last allowed delivery; dead-lettering it");
                        dead.push(DeadLetterDraft::new(
                            &bodies[&d.entry_id],
                            reason,
                            d.delivery_count,
                        ));
                    }
                    Err(HandlerError::Retry(e)) => {
                        self.meters.failed.increment(1);
                        tracing::info!(entry_id = %d.entry_id, event_id = %d.envelope.id, error = format!("{e:#}"), deliveries = d.delivery_count, "entry failed; it stays pending and will be retried");
                        let backoff = retry_backoff(self.opts.claim_idle, d.delivery_count);
                        retry_after = Some(retry_after.map_or(backoff, |r| r.min(backoff)));
                    }
                }
            }
            self.settle(&acks, dead, retry_after).await?;
            let Some(outage) = outage else { break };
            // An outage is nobody's fault: keep the entries in hand and try them again
            // after a pause, without reading them from Redis again (which would count a
            // delivery towards dead-lettering).
            outages += 1;
            self.meters.outage_pauses.increment(1);
            let pause = error_backoff(outages);
            tracing::warn!(entries = held.len(), error = %outage, pauses = outages, pause_ms = pause.as_millis() as u64, "outage while handling entries; pausing, then retrying them without counting a delivery");
            if sleep_or_cancel(pause, &self.shutdown).await {
                // Left pending: the next start of this consumer (or another replica after
                // the claim timeout) takes them up again.
                break;
            }
            self.keep_claimed(&held).await;
            deliveries = held;
        }
        Ok(())
    }

    /// Acknowledges `acks`, writes the dead letters and schedules the retry of failed
    /// entries.
    async fn settle(
        &mut self,
        acks: &[String],
        dead: Vec<DeadLetterDraft>,
        retry_after: Option<Duration>,
    ) -> Result<(), StreamError> {
        if !acks.is_empty() {
            let _: i64 = redis::cmd("XACK")
                .arg(&self.key)
                .arg(&self.opts.group)
                .arg(acks)
                .query_async(&mut self.conn)
                .await?;
            self.meters.processed.increment(acks.len() as u64);
        }
        for draft in dead {
            self.dead_letter(draft).await?;
        }
        if let Some(after) = retry_after {
            let due = Instant::now() + after;
            self.retry_due = Some(self.retry_due.map_or(due, |d| d.min(due)));
        }
        Ok(())
    }

    /// Resets the idle time of entries held through an outage, so no replica claims
    /// them while this one still has them in hand. `XCLAIM … JUSTID` does not count a
    /// delivery. A failure (Redis may be the outage) is harmless: a claim by another
    /// replica only means the entry is handled twice, idempotently.
    async fn keep_claimed(&mut self, held: &[Delivery<H::Payload>]) {
        let ids: Vec<&str> = held.iter().map(|d| d.entry_id.as_str()).collect();
        let claimed: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
            .arg(&self.key)
            .arg(&self.opts.group)
            .arg(&self.opts.consumer)
            .arg(0)
            .arg(&ids)
            .arg("JUSTID")
            .query_async(&mut self.conn)
            .await;
        if let Err(e) = claimed {
            tracing::debug!(error = %e, "could not refresh the claim on held entries");
        }
    }

    /// Hands `batch` to the handler; when every delivery of a part of more than one
    /// fails for a reason that may be the entries' own (not an outage), the handler
    /// failed the part as a whole and cannot say which entry is at fault, so the part is
    /// handed back in halves until each failure is pinned to one entry. Innocent entries
    /// are then committed (handlers are idempotent, so one handled in a failed attempt
    /// is not changed twice) and only the culprit is retried or dead-lettered.
    async fn isolate(&self, batch: &[Delivery<H::Payload>]) -> Vec<Result<(), HandlerError>> {
        let mut results: Vec<Option<Result<(), HandlerError>>> =
            std::iter::repeat_with(|| None).take(batch.len()).collect();
        // Parts still to hand over, as ranges of `batch` (a stack: halves are pushed
        // second half first, so the batch is handled in order).
        let mut parts: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
        parts.push(0..batch.len());
        while let Some(part) = parts.pop() {
            let outcome = self.call_handler(&batch[part.clone()]).await;
            let failed_whole = part.len() > 1
                && outcome
                    .iter()
                    .all(|r| r.as_ref().is_err_and(HandlerError::blames_entry));
            if failed_whole {
                let mid = part.start + part.len() / 2;
                tracing::info!(
                    size = part.len(),
                    "every entry of a batch failed; handing it back in halves to find the culprit"
                );
                self.meters.bisections.increment(1);
                parts.push(mid..part.end);
                parts.push(part.start..mid);
                continue;
            }
            for (slot, result) in results[part].iter_mut().zip(outcome) {
                *slot = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(HandlerError::Retry(anyhow::anyhow!(
                        "the handler gave no result for this delivery"
                    )))
                })
            })
            .collect()
    }

    /// Calls the handler, turning a panic or a wrong number of results into retryable
    /// failures. A batch that panics is retried one delivery at a time, so one bad entry
    /// cannot drag its batch-mates to the dead-letter stream.
    async fn call_handler(&self, batch: &[Delivery<H::Payload>]) -> Vec<Result<(), HandlerError>> {
        match self.try_handle(batch).await {
            Ok(results) => results,
            Err(panic) if batch.len() == 1 => {
                vec![Err(HandlerError::Retry(anyhow::anyhow!(
                    "handler panicked: {panic}"
                )))]
            }
            Err(panic) => {
                tracing::error!(%panic, size = batch.len(), "handler panicked; retrying the batch one delivery at a time");
                let mut results = Vec::with_capacity(batch.len());
                for d in batch {
                    match self.try_handle(std::slice::from_ref(d)).await {
                        Ok(mut r) => results.push(r.pop().unwrap_or(Ok(()))),
                        Err(panic) => results.push(Err(HandlerError::Retry(anyhow::anyhow!(
                            "handler panicked: {panic}"
                        )))),
                    }
                }
                results
            }
        }
    }

    async fn try_handle(
        &self,
        batch: &[Delivery<H::Payload>],
    ) -> Result<Vec<Result<(), HandlerError>>, String> {
        let results = AssertUnwindSafe(self.handler.handle(batch))
            .catch_unwind()
            .await
            .map_err(|p| panic_message(p.as_ref()))?;
        if results.len() == batch.len() {
            return Ok(results);
        }
        tracing::error!(
            results = results.len(),
            deliveries = batch.len(),
            "handler returned the wrong number of results; treating the batch as failed"
        );
        Ok(batch
            .iter()
            .map(|_| {
                Err(HandlerError::Retry(anyhow::anyhow!(
                    "handler returned {} results for {} deliveries",
                    results.len(),
                    batch.len()
                )))
            })
            .collect())
    }

    async fn dead_letter(&mut self, draft: DeadLetterDraft) -> Result<(), StreamError> {
        draft
            .write(
                &mut self.conn,
                &self.key,
                &self.streams,
                self.topic,
                &self.opts.group,
                &self.opts.consumer,
            )
            .await?;
        self.meters.dead_lettered.increment(1);
        Ok(())
    }
}

/// Deletes consumers of group `ARGV[1]` on stream `KEYS[1]` with no pending entries and
/// idle longer than `ARGV[2]` ms, except `ARGV[3]` (the caller). Returns how many.
const FORGET_CONSUMERS_SCRIPT: &str = r"
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[3] and f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed = removed + 1
  end
end
return removed
";

/// A batch of new entries read while the previous batch was handled.
struct ReadAhead {
    /// When the read was sent (the entries' idle time in the pending list counts from
    /// about then).
    read_at: Instant,
    entries: Vec<RawEntry>,
}

#[derive(Clone, Copy)]
enum ReadFrom<'a> {
    /// Entries never delivered to the group (`>`).
    New,
    /// This consumer's own pending entries with ids after the given one (`0`: all).
    OwnPending(&'a str),
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: Option<&str>) -> RawEntry {
        RawEntry {
            id: "1-0".into(),
            fields: Some(
                body.map(|b| vec![(BODY_FIELD.to_owned(), b.as_bytes().to_vec())])
                    .unwrap_or_default(),
            ),
        }
    }

    #[test]
    fn decode_explains_every_poison() {
        let ok = serde_json::to_string(&Envelope::new(uuid::Uuid::nil(), "t", "k", 7u32)).unwrap();
        assert_eq!(decode::<u32>(&entry(Some(&ok))).unwrap().payload, 7);
        let err = decode::<String>(&entry(Some(&ok))).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let v2 = ok.replace("\"v\":1", "\"v\":2");
        let err = decode::<u32>(&entry(Some(&v2))).unwrap_err();
        assert!(err.contains("unsupported envelope version 2"), "{err}");
        assert!(
            decode::<u32>(&entry(Some("{nope")))
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            decode::<u32>(&entry(None))
                .unwrap_err()
                .contains("no `e` field")
        );
        let trimmed = RawEntry {
            id: "1-0".into(),
            fields: None,
        };
        assert!(decode::<u32>(&trimmed).unwrap_err().contains("trimmed"));
    }

    #[test]
    fn consumer_names_are_unique_per_call() {
        let s = config::Settings::from_pairs([]).unwrap();
        let a = ConsumerOptions::from_settings(&s, "g");
        let b = ConsumerOptions::from_settings(&s, "g");
        assert_ne!(a.consumer, b.consumer);
        assert!(a.consumer.contains(&std::process::id().to_string()));
    }

    #[test]
    fn retry_backoff_grows_and_stays_under_the_claim_timeout() {
        let idle = Duration::from_secs(30);
        assert_eq!(retry_backoff(idle, 1), Duration::from_secs(1));
        assert_eq!(retry_backoff(idle, 2), Duration::from_secs(2));
        assert_eq!(retry_backoff(idle, 10), Duration::from_secs(15));
        let small = Duration::from_millis(100);
        assert_eq!(retry_backoff(small, 1), Duration::from_millis(10));
        assert!(retry_backoff(small, 30) <= Duration::from_millis(50));
        assert_eq!(error_backoff(1), Duration::from_millis(100));
        assert_eq!(error_backoff(40), Duration::from_secs(5));
    }
}
