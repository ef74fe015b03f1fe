//! [`Streams`]: the handle every service holds to publish envelopes and to start
//! consumers. It knows the key prefix (`STREAM_PREFIX`) and the `MAXLEN ~` cap, so no
//! caller ever builds a stream key or an `XADD` by hand.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::wire::BODY_FIELD;
use crate::{Envelope, StreamError, Topic};

/// Publisher and entry point of the streams runtime. Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    pub(crate) redis: ConnectionManager,
    /// Opens the dedicated connection a consumer blocks on; `None` when built from a
    /// bare connection (consumers then poll instead of blocking).
    pub(crate) client: Option<redis::Client>,
    prefix: Arc<str>,
    maxlen: usize,
    dlq_maxlen: usize,
}

/// Dead letters kept per topic unless [`Streams::with_dlq_maxlen`] says otherwise
/// (`STREAM_DLQ_MAXLEN`).
pub const DEFAULT_DLQ_MAXLEN: usize = 100_000;

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("prefix", &self.prefix)
            .field("maxlen", &self.maxlen)
            .field("dlq_maxlen", &self.dlq_maxlen)
            .field("blocking_reads", &self.client.is_some())
            .finish()
    }
}

impl Streams {
    /// Streams on an existing connection, keys under `prefix`, each topic capped at about
    /// `maxlen` entries.
    ///
    /// A consumer started from this handle cannot open a connection of its own, and a
    /// blocking `XREADGROUP` on a shared multiplexed connection would stall every other
    /// command on it; so its consumers poll (a non-blocking read, then a short sleep when
    /// idle). Services use `ServiceContext::streams` (service-kit), tools
    /// [`Streams::connect`]: both block.
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>, maxlen: usize) -> Self {
        Self {
            redis,
            client: None,
            prefix: Arc::from(prefix.into()),
            maxlen,
            dlq_maxlen: DEFAULT_DLQ_MAXLEN,
        }
    }

    /// Caps each dead-letter stream at about `dlq_maxlen` entries (`XADD MAXLEN ~`;
    /// at least 1): past it the oldest dead letters are trimmed, logged and counted.
    pub fn with_dlq_maxlen(mut self, dlq_maxlen: usize) -> Self {
        self.dlq_maxlen = dlq_maxlen.max(1);
        self
    }

    /// The approximate length cap of every dead-letter stream.
    pub fn dlq_maxlen(&self) -> usize {
        self.dlq_maxlen
    }

    /// Lets consumers started from this handle block on connections of their own,
    /// opened from `client` (the services' handle, `ServiceContext::streams`, does this).
    pub fn with_client(mut self, client: redis::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Connects to `redis_url` (for tools such as `ctl` that have no service context).
    pub async fn connect(
        redis_url: &str,
        prefix: impl Into<String>,
        maxlen: usize,
    ) -> Result<Self, StreamError> {
        let client = redis::Client::open(redis_url)?;
        let redis = crate::managed_connection(client.clone()).await?;
        let mut streams = Self::new(redis, prefix, maxlen);
        streams.client = Some(client);
        Ok(streams)
    }

    /// The key prefix (`STREAM_PREFIX`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The approximate length cap of every topic.
    pub fn maxlen(&self) -> usize {
        self.maxlen
    }

    /// The Redis key of `topic`.
    pub fn key(&self, topic: Topic) -> String {
        topic.key(&self.prefix)
    }

    /// The Redis key of `topic`'s dead-letter stream.
    pub fn dlq_key(&self, topic: Topic) -> String {
        topic.dlq_key(&self.prefix)
    }

    /// A clone of the shared connection.
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.redis.clone()
    }

    fn xadd(&self, topic: Topic, body: &str) -> redis::Cmd {
        xadd_body(&self.key(topic), self.maxlen, body)
    }

    /// Appends one envelope to `topic` and returns its entry id.
    pub async fn publish<T: Serialize>(
        &self,
        topic: Topic,
        env: &Envelope<T>,
    ) -> Result<String, StreamError> {
        let body = serde_json::to_string(env)?;
        let id: String = self
            .xadd(topic, &body)
            .query_async(&mut self.conn())
            .await?;
        Ok(id)
    }

    /// Appends many envelopes to `topic` in one pipeline (one round trip) and returns
    /// their entry ids in order. Not atomic: on error some may have been appended, which
    /// at-least-once delivery already allows for.
    pub async fn publish_many<T: Serialize>(
        &self,
        topic: Topic,
        envs: &[Envelope<T>],
    ) -> Result<Vec<String>, StreamError> {
        if envs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for env in envs {
            pipe.add_command(self.xadd(topic, &serde_json::to_string(env)?));
        }
        let ids: Vec<String> = pipe.query_async(&mut self.conn()).await?;
        Ok(ids)
    }

    /// Appends an already-encoded body (a replayed or republished entry) to `topic`.
    pub async fn publish_raw(&self, topic: Topic, body: &str) -> Result<String, StreamError> {
        let id: String = self.xadd(topic, body).query_async(&mut self.conn()).await?;
        Ok(id)
    }
}

/// `XADD key MAXLEN ~ maxlen * e body`.
pub(crate) fn xadd_body(key: &str, maxlen: usize, body: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*")
        .arg(BODY_FIELD)
        .arg(body);
    cmd
}
