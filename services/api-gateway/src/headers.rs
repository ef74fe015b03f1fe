//! Security headers on everything the gateway serves.
//!
//! - `Content-Security-Policy`: the dashboard may run only its own scripts and its
//!   WebAssembly (`'wasm-unsafe-eval'` lets the browser compile `/pkg/*.wasm`; no
//!   JavaScript `eval`), talk only to this origin, and never be framed. Style
//!   attributes are allowed (the dashboard's views set a few); style sheets and
//!   images come from this origin (images also as `data:`). API responses get a policy
//!   that allows nothing, since they are data, never pages. The OpenAPI viewer sets
//!   its own (see `web`).
//! - `X-Frame-Options: DENY` for browsers that predate `frame-ancestors`.
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`.
//! - `Strict-Transport-Security` on responses to requests that came over HTTPS. The
//!   gateway serves plain HTTP, so that means a trusted proxy said
//!   `X-Forwarded-Proto: https` (see `service_kit::client_ip`); sending it over plain
//!   HTTP would be ignored by browsers and only mislead.
//!
//! Headers are set only when a handler has not set its own.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use service_kit::TrustedProxies;
use tower_http::set_header::SetResponseHeaderLayer;

/// The dashboard's policy (and the default for every non-API response).
pub const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; \
     frame-ancestors 'none'";

/// The policy of API responses: nothing may load or run in them, nor frame them.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Gives API responses the API's policy, whatever the outer layers would set.
pub fn api(router: Router) -> Router {
    router.layer(SetResponseHeaderLayer::overriding(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(API_CSP),
    ))
}

/// Adds the security headers to every response of `router`; HSTS with `max-age` of
/// `hsts_max_age_secs` (0 sends none) where one of `trusted` says the request came
/// over HTTPS.
pub fn all(router: Router, hsts_max_age_secs: u64, trusted: TrustedProxies) -> Router {
    let if_absent = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(if_absent(header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP))
        .layer(if_absent(header::X_FRAME_OPTIONS, "DENY"))
        .layer(if_absent(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(if_absent(header::REFERRER_POLICY, "no-referrer"))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new((hsts_max_age_secs, trusted)),
            strict_transport,
        ))
}

/// `Strict-Transport-Security` on responses to requests that came over HTTPS.
async fn strict_transport(
    State(hsts): State<Arc<(u64, TrustedProxies)>>,
    req: Request,
    next: Next,
) -> Response {
    let (max_age, trusted) = &*hsts;
    let max_age = *max_age;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ci| ci.0.ip());
    let https = trusted.forwarded_https(peer, req.headers());
    let mut response = next.run(req).await;
    if https && max_age > 0 {
        let value = HeaderValue::from_str(&format!("max-age={max_age}; includeSubDomains"))
            .expect("digits and ASCII");
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
    response
}
