//! Redis Streams runtime shared by every ConstIntel publisher and consumer: topics, the
//! versioned envelope, [`Streams`] (publish), [`run_consumer`] (the consumer-group
//! runner with reclaim and dead letters), the outbox relay, and the inspection and
//! replay operations behind `ctl streams` / `ctl dlq` and the Streams page.
//!
//! # Wire format
//!
//! Each topic is one stream at `STREAM_PREFIX + name` (`events.raw`, ...); its dead
//! letters are at `... + name + ".dlq"`. An entry has one field, `e`, holding the
//! [`Envelope`] as JSON. Publishing is `XADD key MAXLEN ~ STREAM_MAXLEN * e <json>`.
//! Readers accept envelope version [`ENVELOPE_VERSION`] only.
//!
//! # Delivery guarantee
//!
//! **At least once.** A consumer's handler commits its effects to Postgres and only then
//! is the entry acknowledged (`XACK`). A crash between the two, a handler asking for a
//! retry, or a consumer dying with entries in hand all lead to the same entry being
//! delivered again — to the same consumer after a short back-off, or to another replica
//! of the group once the entry has been idle for `STREAM_CLAIM_IDLE_MS` (`XAUTOCLAIM`).
//! Handlers must therefore be **idempotent** (key writes by the envelope `id`, upsert,
//! compare versions); then at-least-once delivery gives exactly-once effects. Order is
//! preserved within a batch and between batches of one consumer, but not across
//! redeliveries or replicas: a retried entry can be handled after later ones. A handler
//! with an order of its own ([`Handler::order_key`]) receives, under a backlog, the
//! entries of two reads merged in that order, across the group's replicas ([`window`]).
//!
//! **Giving up.** An entry whose handler fails on its `STREAM_MAX_DELIVERIES`th delivery
//! (default 5), or says the failure is permanent, is written to `<topic>.dlq` with the
//! error, the delivery count and the original body, and acknowledged, in one `MULTI`.
//! Entries that cannot be decoded (not JSON, not an envelope of the topic's payload, an
//! unknown envelope version) are poison and go there at once, without reaching the
//! handler. `ctl dlq list|replay` inspects them and puts them back on the topic.
//!
//! **Trimming.** `MAXLEN ~` bounds each stream to about `STREAM_MAXLEN` entries by
//! dropping the oldest. A group lagging behind by more than that never sees the
//! dropped entries, and a pending entry trimmed before it is processed comes back with
//! no body; the runner dead-letters such entries with a reason saying so. Sizing rule:
//! `STREAM_MAXLEN` must cover the longest consumer outage you want to ride out at peak
//! rate; beyond that, republish from Postgres.
//!
//! **Redis loss.** Redis holds no truth. Every topic is derived from Postgres rows (the
//! raw events, normalised events, review decisions, profiles), so a wiped Redis loses
//! only in-flight entries, and those are republished from Postgres: the outbox relay
//! publishes every raw event still in ingest's outbox, and queueing recent rows there
//! again makes it publish them again (consumers being idempotent, re-sent work is
//! harmless). Consumers re-create their groups when they find them gone and carry on.
//!
//! # Assumptions, running, testing
//!
//! Assumes Redis 6.2 or later (`XAUTOCLAIM`) at `REDIS_URL`; it
//! never touches Postgres itself (the outbox relay reads through the [`OutboxStore`] its
//! caller implements). Tests: `cargo nextest run -p streams` (`tests/runtime.rs` runs
//! against the real Redis under a random prefix: reclaim, dead letters, trimming, replay,
//! shutdown). Benchmark: `bench/streams/run.sh` (publish and consume rates against raw
//! Redis on this machine).

mod connection;
mod consumer;
mod dlq;
mod envelope;
mod error;
mod inspect;
mod outbox;
mod publisher;
mod redact;
mod topic;
pub mod window;
mod wire;

pub use connection::{CONNECT_TIMEOUT, RECONNECT_MAX_DELAY, connection_config, managed_connection};
pub use consumer::{ConsumerOptions, Delivery, Handler, HandlerError, run_consumer};
pub use dlq::DeadLetter;
pub use envelope::{ENVELOPE_VERSION, Envelope};
pub use error::StreamError;
pub use inspect::{GroupStats, StreamEntry, TopicStats};
pub use outbox::{
    OutboxOptions, OutboxRow, OutboxStore, relay_once, run_outbox_relay, run_outbox_relay_with,
};
pub use publisher::Streams;
pub use redact::DeletedEntries;
pub use topic::Topic;
pub use wire::BODY_FIELD;

/// Creates consumer group `group` on stream `key` (and the stream itself if missing),
/// starting from the first entry; an existing group is left as it is.
pub(crate) async fn ensure_group(
    conn: &mut redis::aio::ConnectionManager,
    key: &str,
    group: &str,
) -> Result<(), StreamError> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => Ok(other?),
    }
}
