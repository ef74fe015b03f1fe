//! The client address of a request, for per-client limits (ingest's rate limits, the
//! gateway's login throttling).
//!
//! The TCP peer is the client unless it is one of the proxies named in
//! `TRUSTED_PROXIES` (addresses or CIDR blocks, comma separated). Then
//! `X-Forwarded-For` is read from the right, skipping trusted proxies, and the first
//! address that is not one is the client: the entries left of it could have been
//! written by anybody, so they are never believed. An untrusted peer's
//! `X-Forwarded-For` is ignored entirely, so a client cannot pick its own address.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// A `TRUSTED_PROXIES` entry that is neither an address nor a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TRUSTED_PROXIES: `{0}` is not an IP address or CIDR block")]
pub struct BadProxy(pub String);

impl FromStr for TrustedProxies {
    type Err = BadProxy;

    /// Parses `10.0.0.0/8, 127.0.0.1, ::1`; empty trusts no proxy.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadProxy(p.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` carrying `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // Every X-Forwarded-For header, in order, as one list of hops.
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(parse_hop)
            .collect();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        client
    }
}

impl TrustedProxies {
    /// Whether a request from `peer` came over HTTPS, by the word of a trusted proxy:
    /// the nearest one's (right-most) `X-Forwarded-Proto`. Never for an untrusted peer
    /// (this service itself speaks plain HTTP).
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        self.trusts(canonical(peer))
            && headers
                .get_all("x-forwarded-proto")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .next_back()
                .is_some_and(|p| p.eq_ignore_ascii_case("https"))
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port or in brackets.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
        .map(canonical)
}

/// IPv4 addresses seen through an IPv6 socket (`::ffff:a.b.c.d`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The TCP peer of a request (served with `into_make_service_with_connect_info`, as
/// [`crate::serve`] does); unspecified when unknown. Handlers pass it to
/// [`TrustedProxies::client_ip`].
pub struct PeerAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |ci| ci.0.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn https_is_a_trusted_proxys_word_only() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-proto", "http".parse().unwrap());
        h.append("x-forwarded-proto", "https".parse().unwrap());
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert!(
            proxies.forwarded_https(ip("10.0.0.1"), &h),
            "the nearest proxy's word"
        );
        assert!(
            !proxies.forwarded_https(ip("203.0.113.9"), &h),
            "untrusted peer"
        );
        assert!(!proxies.forwarded_https(ip("10.0.0.1"), &HeaderMap::new()));
        let mut plain = HeaderMap::new();
        plain.append("x-forwarded-proto", "https, http".parse().unwrap());
        assert!(!proxies.forwarded_https(ip("10.0.0.1"), &plain));
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("203.0.113.9"), &xff(&["1.2.3.4"])),
            ip("203.0.113.9")
        );
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            proxies.client_ip(ip("203.0.113.9"), &xff(&["1.2.3.4"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
        let proxies: TrustedProxies = " 10.0.0.0/8 , 127.0.0.1,::1".parse().unwrap();
        // The client forged the leftmost entry; the proxies appended the real one.
        let h = xff(&["6.6.6.6, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // IPv4-mapped peers and ports in entries.
        let h = xff(&["198.51.100.8:4711"]);
        assert_eq!(
            proxies.client_ip(ip("::ffff:10.0.0.2"), &h),
            ip("198.51.100.8")
        );
        // No header: the proxy itself.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
        // Only proxies in the chain: the leftmost.
        let h = xff(&["10.9.9.9, 10.8.8.8"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // Garbage entries are skipped.
        let h = xff(&["198.51.100.9, nonsense"]);
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), &h), ip("198.51.100.9"));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert_eq!(
            "10.0.0.0/8, proxy.local".parse::<TrustedProxies>(),
            Err(BadProxy("proxy.local".into()))
        );
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::default()));
    }
}
