//! Read-only views of the streams for operators: per-topic length, groups, pending,
//! lag and dead letters (`ctl streams`, the api-gateway's Streams page), and the most
//! recent entries of a topic.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::wire::{self, BODY_FIELD};
use crate::{Envelope, StreamError, Streams, Topic};

/// One topic at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicStats {
    /// Unprefixed topic name (`events.raw`).
    pub topic: String,
    /// Its Redis key (prefix included).
    pub key: String,
    /// Entries currently in the stream (after `MAXLEN` trimming).
    pub length: u64,
    /// Id of the newest entry, if any.
    pub last_entry_id: Option<String>,
    /// Consumer groups reading it.
    pub groups: Vec<GroupStats>,
    /// Entries in its dead-letter stream.
    pub dlq_length: u64,
}

impl TopicStats {
    /// Pending entries summed over all groups.
    pub fn pending(&self) -> u64 {
        self.groups.iter().map(|g| g.pending).sum()
    }

    /// The largest lag among its groups (`None` if a group's lag is unknown or there are
    /// no groups).
    pub fn max_lag(&self) -> Option<u64> {
        self.groups
            .iter()
            .map(|g| g.lag)
            .try_fold(None, |acc: Option<u64>, lag| {
                lag.map(|l| Some(acc.map_or(l, |a| a.max(l))))
            })?
    }
}

/// One consumer group of a topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    /// Group name.
    pub name: String,
    /// Consumers known to the group: replicas that hold entries or received some within
    /// the last ten claim timeouts (runners forget the others, see `run_consumer`).
    pub consumers: u64,
    /// Entries delivered but not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group; `None` when Redis cannot tell (after
    /// entries were deleted from the middle of the stream).
    pub lag: Option<u64>,
    /// Id of the last entry delivered to the group.
    pub last_delivered_id: String,
}

/// A recent entry of a topic, for the Streams viewer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamEntry {
    /// Entry id.
    pub entry_id: String,
    /// When Redis appended it (from the id).
    pub appended_at: Option<DateTime<Utc>>,
    /// The raw body (envelope JSON).
    pub body: String,
    /// The decoded envelope with an untyped payload, when the body is one.
    pub envelope: Option<Envelope<serde_json::Value>>,
}

impl Streams {
    /// Statistics of one topic. A topic never written to shows zeros.
    pub async fn topic_stats(&self, topic: Topic) -> Result<TopicStats, StreamError> {
        let key = self.key(topic);
        let mut conn = self.conn();
        let (exists, length, dlq_length, newest): (bool, u64, u64, redis::Value) = redis::pipe()
            .cmd("EXISTS")
            .arg(&key)
            .cmd("XLEN")
            .arg(&key)
            .cmd("XLEN")
            .arg(self.dlq_key(topic))
            .cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let groups = if exists {
            let reply: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&key)
                .query_async(&mut conn)
                .await?;
            reply
                .groups
                .into_iter()
                .map(|g| GroupStats {
                    name: g.name,
                    consumers: g.consumers as u64,
                    pending: g.pending as u64,
                    lag: g.lag.map(|l| l as u64),
                    last_delivered_id: g.last_delivered_id,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(TopicStats {
            topic: topic.name().to_owned(),
            key,
            length,
            last_entry_id: wire::parse_entries(newest)?.pop().map(|e| e.id),
            groups,
            dlq_length,
        })
    }

    /// Statistics of every topic, in pipeline order.
    pub async fn stats(&self) -> Result<Vec<TopicStats>, StreamError> {
        let mut all = Vec::with_capacity(Topic::ALL.len());
        for topic in Topic::ALL {
            all.push(self.topic_stats(topic).await?);
        }
        Ok(all)
    }

    /// The `n` most recent entries of `topic`, newest first.
    pub async fn recent_entries(
        &self,
        topic: Topic,
        n: usize,
    ) -> Result<Vec<StreamEntry>, StreamError> {
        let reply: redis::Value = redis::cmd("XREVRANGE")
            .arg(self.key(topic))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(n)
            .query_async(&mut self.conn())
            .await?;
        Ok(wire::parse_entries(reply)?
            .into_iter()
            .map(|raw| {
                let body = raw
                    .field_str(BODY_FIELD)
                    .unwrap_or_else(|| raw.fields_json());
                StreamEntry {
                    appended_at: wire::id_millis(&raw.id)
                        .and_then(DateTime::<Utc>::from_timestamp_millis),
                    envelope: serde_json::from_str(&body).ok(),
                    entry_id: raw.id,
                    body,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(pending: u64, lag: Option<u64>) -> GroupStats {
        GroupStats {
            name: "g".into(),
            consumers: 1,
            pending,
            lag,
            last_delivered_id: "0-0".into(),
        }
    }

    #[test]
    fn totals_over_groups() {
        let mut s = TopicStats {
            topic: "events.raw".into(),
            key: "events.raw".into(),
            length: 3,
            last_entry_id: None,
            groups: vec![group(2, Some(1)), group(3, Some(7))],
            dlq_length: 0,
        };
        assert_eq!(s.pending(), 5);
        assert_eq!(s.max_lag(), Some(7));
        s.groups.push(group(0, None));
        assert_eq!(
            s.max_lag(),
            None,
            "one unknown lag makes the maximum unknown"
        );
        s.groups.clear();
        assert_eq!(s.max_lag(), None);
    }
}
