//! Sign-in throttling: password guessing is limited per client address and per
//! account, so neither one address trying many accounts nor many addresses trying one
//! account gets far.
//!
//! Two keyed GCRA limiters from `governor`: `LOGIN_ATTEMPTS_PER_MINUTE` per client
//! address (the client behind `TRUSTED_PROXIES`, see `service_kit::client_ip`) and
//! `LOGIN_ATTEMPTS_PER_ACCOUNT_PER_HOUR` per account. Each allows a burst of its whole
//! quota and then refills evenly. Accounts are keyed by the SHA-256 of the lower-cased
//! e-mail, whether or not the account exists (the answer must not reveal which e-mails
//! have accounts), so a flood of long made-up e-mails costs 32 bytes a key. State is
//! per gateway process; [`LoginLimiter::forget_idle`] drops keys whose quota has
//! refilled.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};

type Keyed<K, C> =
    RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Why a sign-in attempt was refused, and how long until the next one is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// This client address has used its attempts.
    Client(Duration),
    /// This account has had its attempts, from whatever addresses.
    Account(Duration),
}

/// Per-client and per-account limits on sign-in attempts. A quota of 0 refuses every
/// attempt.
pub struct LoginLimiter<C: Clock = DefaultClock> {
    clock: C,
    per_client: Option<Keyed<IpAddr, C>>,
    per_account: Option<Keyed<[u8; 32], C>>,
}

/// When a zero quota's refusal says to come back.
const BLOCKED_WAIT: Duration = Duration::from_secs(3600);

impl LoginLimiter {
    /// Limits of `per_client_per_minute` attempts per address and
    /// `per_account_per_hour` attempts per account.
    pub fn new(per_client_per_minute: u32, per_account_per_hour: u32) -> Self {
        Self::with_clock(
            per_client_per_minute,
            per_account_per_hour,
            DefaultClock::default(),
        )
    }
}

impl<C: Clock + Clone> LoginLimiter<C> {
    /// The same limits on a chosen clock (tests use a fake one).
    pub fn with_clock(per_client_per_minute: u32, per_account_per_hour: u32, clock: C) -> Self {
        Self {
            per_client: NonZeroU32::new(per_client_per_minute).map(|n| {
                RateLimiter::new(
                    Quota::per_minute(n),
                    DefaultKeyedStateStore::default(),
                    clock.clone(),
                )
            }),
            per_account: NonZeroU32::new(per_account_per_hour).map(|n| {
                RateLimiter::new(
                    Quota::per_hour(n),
                    DefaultKeyedStateStore::default(),
                    clock.clone(),
                )
            }),
            clock,
        }
    }

    /// Takes one attempt for `ip` and for the account `email`; refused when either
    /// has none left. The client is checked first, so a client over its limit spends
    /// nothing of the account's.
    pub fn attempt(&self, ip: IpAddr, email: &str) -> Result<(), Throttled> {
        let Some(per_client) = &self.per_client else {
            return Err(Throttled::Client(BLOCKED_WAIT));
        };
        per_client
            .check_key(&ip)
            .map_err(|n| Throttled::Client(n.wait_time_from(self.clock.now())))?;
        let Some(per_account) = &self.per_account else {
            return Err(Throttled::Account(BLOCKED_WAIT));
        };
        per_account
            .check_key(&account_key(email))
            .map_err(|n| Throttled::Account(n.wait_time_from(self.clock.now())))
    }

    /// Forgets clients and accounts whose quota has refilled (they are
    /// indistinguishable from new ones), so memory follows recent traffic.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_client {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_account {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The key of an account: SHA-256 of the trimmed, lower-cased e-mail.
fn account_key(email: &str) -> [u8; 32] {
    Sha256::digest(email.trim().to_lowercase().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn each_client_gets_a_burst_then_refills() {
        let clock = FakeRelativeClock::default();
        let limiter = LoginLimiter::with_clock(3, 1000, clock.clone());
        for n in 0..3 {
            assert_eq!(limiter.attempt(ip(1), &format!("u{n}@x.io")), Ok(()));
        }
        let Err(Throttled::Client(wait)) = limiter.attempt(ip(1), "u9@x.io") else {
            panic!("the fourth attempt of a minute is refused");
        };
        assert!(wait <= Duration::from_secs(20) && wait > Duration::from_secs(19));
        assert_eq!(
            limiter.attempt(ip(2), "u0@x.io"),
            Ok(()),
            "clients are independent"
        );
        clock.advance(Duration::from_secs(20));
        assert_eq!(limiter.attempt(ip(1), "u9@x.io"), Ok(()));
        assert!(limiter.attempt(ip(1), "u9@x.io").is_err());
    }

    #[test]
    fn one_account_is_limited_across_clients() {
        let clock = FakeRelativeClock::default();
        let limiter = LoginLimiter::with_clock(100, 4, clock.clone());
        for n in 0..4 {
            // Case and spaces do not make a new account.
            let email = if n % 2 == 0 {
                "Ann@Shop.io "
            } else {
                "ann@shop.io"
            };
            assert_eq!(limiter.attempt(ip(n), email), Ok(()));
        }
        let Err(Throttled::Account(wait)) = limiter.attempt(ip(50), "ann@shop.io") else {
            panic!("a fifth address gets no fifth attempt on the account");
        };
        assert!(wait > Duration::from_secs(14 * 60) && wait <= Duration::from_secs(15 * 60));
        assert_eq!(
            limiter.attempt(ip(50), "bob@shop.io"),
            Ok(()),
            "other accounts"
        );
        clock.advance(Duration::from_secs(15 * 60));
        assert_eq!(limiter.attempt(ip(51), "ann@shop.io"), Ok(()));
        limiter.forget_idle();
    }

    #[test]
    fn zero_quotas_refuse_everything() {
        assert!(matches!(
            LoginLimiter::new(0, 10).attempt(ip(1), "a@b.c"),
            Err(Throttled::Client(_))
        ));
        assert!(matches!(
            LoginLimiter::new(10, 0).attempt(ip(1), "a@b.c"),
            Err(Throttled::Account(_))
        ));
    }
}
