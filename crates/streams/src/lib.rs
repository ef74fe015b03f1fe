//! Redis Streams runtime shared by every ConstIntel consumer and publisher.
//!
//! (Being built: see issue "Foundation". The envelope and topic names below are the
//! contract every service codes against.)

mod envelope;
mod topic;

pub use envelope::{ENVELOPE_VERSION, Envelope};
pub use topic::Topic;
