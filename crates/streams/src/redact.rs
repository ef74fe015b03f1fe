//! Erasure in the streams: removing a person's entries from a topic and from its
//! dead-letter stream.
//!
//! Redis holds no truth, but its streams hold copies: an event's envelope stays on its
//! topic until `MAXLEN` trims it, and a dead letter keeps its body until replayed. A
//! GDPR erasure removes those copies as well. [`Streams::delete_matching`] walks a
//! stream in pages (`XRANGE`), asks the caller which entries are the person's (by their
//! field values: the body, a dead letter's error text; topics and dead-letter streams
//! may be judged differently), acknowledges each match in every
//! consumer group (so no group keeps it pending, or later mistakes it for an entry lost
//! to trimming) and deletes it (`XDEL`). A walk reads the whole stream, so it costs one
//! pass over at most `STREAM_MAXLEN` entries per topic: fine for an erasure, not for a
//! hot path.

use redis::aio::ConnectionManager;

use crate::wire::{self, RawEntry};
use crate::{StreamError, Streams, Topic};

/// Entries read per `XRANGE` page.
const PAGE: usize = 1000;

/// What [`Streams::delete_matching`] removed from one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletedEntries {
    /// Entries removed from the topic itself.
    pub entries: u64,
    /// Dead letters removed from `<topic>.dlq`.
    pub dead_letters: u64,
}

impl Streams {
    /// Deletes every entry of `topic` one of whose field values `entry` matches, and
    /// every dead letter of the topic one of whose field values (the original body, the
    /// error text, the original id) `dead_letter` matches. Matches are acknowledged in
    /// every consumer group before they are deleted.
    pub async fn delete_matching(
        &self,
        topic: Topic,
        entry: &(dyn Fn(&[u8]) -> bool + Send + Sync),
        dead_letter: &(dyn Fn(&[u8]) -> bool + Send + Sync),
    ) -> Result<DeletedEntries, StreamError> {
        let mut conn = self.conn();
        let entries = delete_in(&mut conn, &self.key(topic), entry).await?;
        let dead_letters = delete_in(&mut conn, &self.dlq_key(topic), dead_letter).await?;
        Ok(DeletedEntries {
            entries,
            dead_letters,
        })
    }
}

async fn delete_in(
    conn: &mut ConnectionManager,
    key: &str,
    matches: &(dyn Fn(&[u8]) -> bool + Send + Sync),
) -> Result<u64, StreamError> {
    let exists: bool = redis::cmd("EXISTS").arg(key).query_async(conn).await?;
    if !exists {
        return Ok(0);
    }
    let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await?;
    let mut deleted = 0;
    let mut start = "-".to_owned();
    loop {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        let page = wire::parse_entries(reply)?;
        let ids: Vec<&str> = page
            .iter()
            .filter(|e| is_match(e, matches))
            .map(|e| e.id.as_str())
            .collect();
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for g in &groups.groups {
                pipe.cmd("XACK").arg(key).arg(&g.name).arg(&ids).ignore();
            }
            pipe.cmd("XDEL").arg(key).arg(&ids);
            let (n,): (u64,) = pipe.query_async(conn).await?;
            deleted += n;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => start = format!("({}", last.id),
            _ => break,
        }
    }
    Ok(deleted)
}

fn is_match(entry: &RawEntry, matches: &(dyn Fn(&[u8]) -> bool + Send + Sync)) -> bool {
    entry.fields.iter().flatten().any(|(_, v)| matches(v))
}
