//! The one error type of the streams runtime. Redis failures are kept whole (callers
//! retry them); a body that cannot be encoded is a programming error surfaced at once.

/// A streams operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// An envelope could not be serialised to JSON.
    #[error("encoding an envelope: {0}")]
    Encode(#[from] serde_json::Error),
    /// Redis answered with a shape this runtime does not understand.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
}

impl StreamError {
    /// Whether Redis said the consumer group does not exist (the stream was deleted or
    /// Redis was wiped): the runner then re-creates the group and carries on.
    pub(crate) fn is_missing_group(&self) -> bool {
        matches!(self, StreamError::Redis(e) if e.code() == Some("NOGROUP"))
    }
}
