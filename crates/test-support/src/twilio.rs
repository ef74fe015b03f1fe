//! The fake of Twilio's Messages API (a real axum server on `127.0.0.1:0`; see
//! `messaging::fake` for the Twilio documentation sections it follows). It lives in the
//! `messaging` crate so `ctl fake-twilio` can serve it to the demo fleet too.

pub use messaging::fake::{FakeMessage, FakeTwilio};

/// The account SID tests use.
pub const ACCOUNT_SID: &str = "ACtest00000000000000000000000000000";
/// The auth token tests use.
pub const AUTH_TOKEN: &str = "test-twilio-auth-token";
/// The WhatsApp sender tests use.
pub const FROM: &str = "whatsapp:+14155238886";
