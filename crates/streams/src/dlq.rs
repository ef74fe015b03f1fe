//! Dead letters: entries a consumer gave up on, kept in `<topic>.dlq` with the reason,
//! and the operations to inspect and replay them (`ctl dlq`, the Streams page).
//!
//! A dead letter is a stream entry of its own with the fields `id` (the original entry
//! id), `topic`, `group`, `consumer`, `error`, `deliveries`, `failed_at` (RFC 3339) and
//! `e` (the original body, byte for byte). Nothing leaves a dead-letter stream except by
//! replay, by an operator, by a GDPR erasure (see `redact`), or by its length cap:
//! dead letters are appended with `MAXLEN ~ STREAM_DLQ_MAXLEN`, so a flood of bad input
//! cannot fill Redis. Trimming drops the oldest dead letters; each time it does, the
//! consumer logs a warning and counts them in
//! `streams_dead_letters_trimmed_total{topic}`.
//!
//! Replaying appends the body to the topic as a new entry and deletes the dead letter in
//! one Lua script, so a dead letter is never both replayed and kept, nor lost. A replayed
//! entry is seen again by every group of the topic, not only the one that failed it;
//! consumers are idempotent, so the others simply find their work already done.

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::wire::{self, BODY_FIELD, RawEntry};
use crate::{StreamError, Streams, Topic};

/// A dead letter as listed by `ctl dlq list` and the Streams page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Id of the dead letter itself in `<topic>.dlq` (what `replay --id` takes).
    pub dlq_id: String,
    /// Id the entry had on its topic.
    pub entry_id: String,
    /// The topic it came from.
    pub topic: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// The handler's error (or the runner's reason: undecodable, trimmed, too many deliveries).
    pub error: String,
    /// How many times it had been delivered.
    pub deliveries: u64,
    /// When it was dead-lettered.
    pub failed_at: Option<DateTime<Utc>>,
    /// The original entry body (the envelope JSON), as it was.
    pub body: String,
}

impl DeadLetter {
    fn from_raw(raw: &RawEntry) -> Self {
        let s = |name: &str| raw.field_str(name).unwrap_or_default();
        Self {
            dlq_id: raw.id.clone(),
            entry_id: s("id"),
            topic: s("topic"),
            group: s("group"),
            consumer: s("consumer"),
            error: s("error"),
            deliveries: s("deliveries").parse().unwrap_or(0),
            failed_at: DateTime::parse_from_rfc3339(&s("failed_at"))
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            body: s(BODY_FIELD),
        }
    }
}

/// A dead letter about to be written by a consumer.
pub(crate) struct DeadLetterDraft {
    entry_id: String,
    body: Vec<u8>,
    error: String,
    deliveries: u64,
}

impl DeadLetterDraft {
    pub(crate) fn new(raw: &RawEntry, error: String, deliveries: u64) -> Self {
        let body = match (raw.field(BODY_FIELD), &raw.fields) {
            (Some(body), _) => body.to_vec(),
            // Keep whatever the entry had, so an operator can see what was sent.
            (None, Some(_)) => raw.fields_json().into_bytes(),
            (None, None) => Vec::new(),
        };
        Self {
            entry_id: raw.id.clone(),
            body,
            error,
            deliveries,
        }
    }

    /// Appends the dead letter (capped at `STREAM_DLQ_MAXLEN`) and acks the original
    /// entry, atomically. Returns how many older dead letters the cap trimmed away.
    pub(crate) async fn write(
        &self,
        conn: &mut ConnectionManager,
        key: &str,
        streams: &Streams,
        topic: Topic,
        group: &str,
        consumer: &str,
    ) -> Result<u64, StreamError> {
        let dlq_key = streams.dlq_key(topic);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XLEN")
            .arg(&dlq_key)
            .cmd("XADD")
            .arg(&dlq_key)
            .arg("MAXLEN")
            .arg("~")
            .arg(streams.dlq_maxlen())
            .arg("*")
            .arg("id")
            .arg(&self.entry_id)
            .arg("topic")
            .arg(topic.name())
            .arg("group")
            .arg(group)
            .arg("consumer")
            .arg(consumer)
            .arg("error")
            .arg(&self.error)
            .arg("deliveries")
            .arg(self.deliveries)
            .arg("failed_at")
            .arg(Utc::now().to_rfc3339())
            .arg(BODY_FIELD)
            .arg(&self.body)
            .ignore()
            .cmd("XLEN")
            .arg(&dlq_key)
            .cmd("XACK")
            .arg(key)
            .arg(group)
            .arg(&self.entry_id)
            .ignore();
        let (before, after): (u64, u64) = pipe.query_async(conn).await?;
        let trimmed = (before + 1).saturating_sub(after);
        if trimmed > 0 {
            metrics::counter!("streams_dead_letters_trimmed_total", "topic" => topic.name())
                .increment(trimmed);
            tracing::warn!(
                topic = topic.name(),
                trimmed,
                cap = streams.dlq_maxlen(),
                "the dead-letter stream reached STREAM_DLQ_MAXLEN; its oldest dead letters were dropped"
            );
        }
        Ok(trimmed)
    }
}

/// Moves one dead letter back onto its topic: `KEYS[1]` the dead-letter stream,
/// `KEYS[2]` the topic, `ARGV[1]` the dead letter id, `ARGV[2]` the topic's MAXLEN.
/// Returns the new entry id, or nil if no such dead letter exists.
const REPLAY_SCRIPT: &str = r"
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #rows == 0 then return false end
local fields = rows[1][2]
local body = nil
for i = 1, #fields, 2 do
  if fields[i] == 'e' then body = fields[i + 1] end
end
if body == nil then return redis.error_reply('dead letter ' .. ARGV[1] .. ' has no body') end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', body)
redis.call('XDEL', KEYS[1], ARGV[1])
return id
";

impl Streams {
    /// Number of dead letters of `topic`.
    pub async fn dlq_len(&self, topic: Topic) -> Result<u64, StreamError> {
        let n: u64 = redis::cmd("XLEN")
            .arg(self.dlq_key(topic))
            .query_async(&mut self.conn())
            .await?;
        Ok(n)
    }

    /// The oldest `limit` dead letters of `topic`, oldest first.
    pub async fn dead_letters(
        &self,
        topic: Topic,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StreamError> {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(self.dlq_key(topic))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn())
            .await?;
        Ok(wire::parse_entries(reply)?
            .iter()
            .map(DeadLetter::from_raw)
            .collect())
    }

    /// Puts dead letter `dlq_id` back onto `topic` (as a new entry, delivered afresh) and
    /// deletes it from the dead-letter stream. Returns the new entry id, or `None` if
    /// there is no such dead letter.
    pub async fn replay_dead_letter(
        &self,
        topic: Topic,
        dlq_id: &str,
    ) -> Result<Option<String>, StreamError> {
        let id: Option<String> = redis::Script::new(REPLAY_SCRIPT)
            .key(self.dlq_key(topic))
            .key(self.key(topic))
            .arg(dlq_id)
            .arg(self.maxlen())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(id)
    }

    /// Replays every dead letter of `topic` that existed when the call began (entries
    /// that fail again and come back meanwhile are left for the next replay). Returns how
    /// many were replayed.
    pub async fn replay_all_dead_letters(&self, topic: Topic) -> Result<usize, StreamError> {
        let dlq_key = self.dlq_key(topic);
        let newest: redis::Value = redis::cmd("XREVRANGE")
            .arg(&dlq_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await?;
        let Some(last) = wire::parse_entries(newest)?.pop().map(|e| e.id) else {
            return Ok(0);
        };
        let mut replayed = 0;
        loop {
            let page: redis::Value = redis::cmd("XRANGE")
                .arg(&dlq_key)
                .arg("-")
                .arg(&last)
                .arg("COUNT")
                .arg(100)
                .query_async(&mut self.conn())
                .await?;
            let ids: Vec<String> = wire::parse_entries(page)?
                .into_iter()
                .map(|e| e.id)
                .collect();
            if ids.is_empty() {
                return Ok(replayed);
            }
            for id in ids {
                if self.replay_dead_letter(topic, &id).await?.is_some() {
                    replayed += 1;
                }
            }
        }
    }
}
