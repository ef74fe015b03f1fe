//! Connection strings (`DATABASE_URL`, `REDIS_URL`) that never print their password.
//!
//! A [`ConnectionUrl`] dereferences to the full string for the code that connects, but
//! its `Debug` and `Display` show [`redact_url_password`]'s form, so settings, startup
//! lines and error contexts (`format!("connecting to {url}")`) are safe to log.

use std::ffi::OsStr;
use std::fmt;
use std::ops::Deref;

use serde::Deserialize;

/// What a redacted password or credential reads as.
pub const REDACTED: &str = "***";

/// Query parameters that carry a password in Postgres and Redis URLs.
const PASSWORD_PARAMS: [&str; 4] = ["password", "pass", "sslpassword", "auth"];

/// A connection URL whose password is redacted whenever it is formatted.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConnectionUrl(String);

impl ConnectionUrl {
    /// Wraps a connection string.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full string, password included: only for opening connections.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The string with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url_password(&self.0)
    }
}

impl Deref for ConnectionUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ConnectionUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<OsStr> for ConnectionUrl {
    fn as_ref(&self) -> &OsStr {
        OsStr::new(&self.0)
    }
}

impl fmt::Display for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Replaces the password of a URL (`scheme://user:password@host`, or a `password=` /
/// `pass=` query parameter) with `***`. A string that is not a URL but has user
/// information (`...:secret@host`) loses everything before the `@`.
pub fn redact_url_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) => {
            let mut changed = false;
            if parsed.password().is_some() {
                changed |= parsed.set_password(Some(REDACTED)).is_ok();
            }
            let has_secret_param = parsed
                .query_pairs()
                .any(|(k, _)| PASSWORD_PARAMS.contains(&k.to_ascii_lowercase().as_str()));
            if has_secret_param {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let secret = PASSWORD_PARAMS.contains(&k.to_ascii_lowercase().as_str());
                        (
                            k.into_owned(),
                            if secret {
                                REDACTED.into()
                            } else {
                                v.into_owned()
                            },
                        )
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
                changed = true;
            }
            if changed {
                // The url crate percent-encodes `*`; show it as written.
                parsed.to_string().replace("%2A%2A%2A", REDACTED)
            } else {
                raw.to_owned()
            }
        }
        Err(_) => match raw.rsplit_once('@') {
            Some((before, host)) => match before.split_once("://") {
                Some((scheme, _)) => format!("{scheme}://{REDACTED}@{host}"),
                None => format!("{REDACTED}@{host}"),
            },
            None => raw.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_they_sit() {
        for (raw, shown) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
            (
                "rediss://default:s3cr%40t@h:6380",
                "rediss://default:***@h:6380",
            ),
            (
                "postgres://u@h/db?sslmode=require&password=pw",
                "postgres://u@h/db?sslmode=require&password=***",
            ),
            (
                "redis+unix:///tmp/redis.sock?db=1&pass=pw",
                "redis+unix:///tmp/redis.sock?db=1&pass=***",
            ),
            ("redis://h:6379", "redis://h:6379"),
            (
                "postgres://postgres@127.0.0.1:5432/x",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            ("not a url but:pw@host", "***@host"),
        ] {
            assert_eq!(redact_url_password(raw), shown, "{raw}");
        }
    }

    #[test]
    fn formatting_never_shows_the_password() {
        let url = ConnectionUrl::new("postgres://app:hunter2-secret@db:5432/constintel");
        for shown in [
            format!("{url}"),
            format!("{url:?}"),
            format!("{url:#?}"),
            url.redacted(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("app:***@db:5432"), "{shown}");
        }
        assert_eq!(
            url.as_str(),
            "postgres://app:hunter2-secret@db:5432/constintel"
        );
        assert_eq!(&*url, url.as_str());
    }
}
