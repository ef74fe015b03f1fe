//! Who is calling, and may they: authentication by session cookie or bearer token, the
//! per-route guard that enforces each route's minimum role and the CSRF rules, and the
//! re-check live feeds make of the credential they were opened with.
//!
//! The guard runs before the handler and its extractors, so an anonymous caller gets
//! 401 and a too-weak role 403 whatever the request carries. Cookie-authenticated
//! state-changing requests must also prove they come from the dashboard's own origin
//! (see [`check_csrf`]); bearer tokens are not sent by browsers on their own, so they
//! need no such proof.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};
use domain::api::{CSRF_HEADER, Me, PrincipalKind, Role, SESSION_COOKIE};
use service_kit::ApiError;
use uuid::Uuid;

use crate::state::AppState;

/// Who a route admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Callers with at least this role.
    Role(Role),
}

impl Access {
    /// `public` or the role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Role(r) => r.as_str(),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User or token.
    pub kind: PrincipalKind,
    /// User id or token id.
    pub id: Uuid,
    /// E-mail or token name.
    pub name: String,
    /// What the caller may do.
    pub role: Role,
    /// Session expiry (users).
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// How the caller is named in records of what they did (`merge_history.actor`,
    /// `csv_imports.created_by`, ...).
    pub fn actor(&self) -> String {
        match self.kind {
            PrincipalKind::User => self.name.clone(),
            PrincipalKind::Token => format!("token:{}", self.name),
        }
    }

    /// The user id, for users.
    pub fn user_id(&self) -> Option<Uuid> {
        (self.kind == PrincipalKind::User).then_some(self.id)
    }

    /// The `GET /auth/me` view.
    pub fn me(&self) -> Me {
        Me {
            kind: self.kind,
            id: self.id,
            name: self.name.clone(),
            role: self.role,
            expires_at: self.expires_at,
        }
    }
}

/// Extracts the caller the guard authenticated. Only usable on guarded routes.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::unauthorized("unauthorized", "sign in first"))
    }
}

/// State of one route's guard.
#[derive(Clone)]
pub struct Guard {
    /// Shared state.
    pub app: AppState,
    /// Who the route admits.
    pub access: Access,
}

/// The per-route middleware: authenticate, check the role, check CSRF, then run the
/// handler with the [`Principal`] in the request's extensions.
pub async fn guard(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let Access::Role(required) = guard.access else {
        return next.run(req).await;
    };
    let (principal, by_cookie) = match authenticate(&guard.app, req.headers()).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return ApiError::unauthorized(
                "unauthorized",
                "sign in, or send an API token as `Authorization: Bearer <token>`",
            )
            .into_response();
        }
        Err(e) => return e.into_response(),
    };
    if !principal.role.allows(required) {
        return ApiError::forbidden(format!(
            "this needs the {required} role; you are {}",
            principal.role
        ))
        .into_response();
    }
    if by_cookie
        && is_state_changing(req.method())
        && let Err(e) = check_csrf(req.headers(), &guard.app.settings.api.cors_origins)
    {
        return e.into_response();
    }
    let credential = Credential::of(req.headers(), required);
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(credential);
    next.run(req).await
}

/// What a guarded request authenticated with (its `Authorization` header or session
/// cookie) and the role its route needs, kept so that a response that lives on (a
/// server-sent-event feed) can ask again later whether the caller may still see it.
#[derive(Clone)]
pub struct Credential {
    headers: HeaderMap,
    required: Role,
}

impl Credential {
    fn of(headers: &HeaderMap, required: Role) -> Self {
        let mut kept = HeaderMap::new();
        for name in [header::AUTHORIZATION, header::COOKIE] {
            for value in headers.get_all(&name) {
                kept.append(name.clone(), value.clone());
            }
        }
        Self {
            headers: kept,
            required,
        }
    }

    /// Whether the credential still authenticates `principal` with the role the route
    /// needs: `Some(false)` when it was revoked, expired, disabled or demoted, `None`
    /// when Postgres could not be asked (a revocation needs Postgres too, so an outage
    /// is not one). Always asks Postgres, never the verified-credential cache.
    pub async fn still_valid(&self, app: &AppState, principal: &Principal) -> Option<bool> {
        match authenticate_in_db(app, &self.headers).await {
            Ok(Some((now, _))) => Some(
                now.id == principal.id
                    && now.kind == principal.kind
                    && now.role.allows(self.required),
            ),
            Ok(None) => Some(false),
            Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => Some(false),
            Err(_) => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Credential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Credential>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("unauthorized", "sign in first"))
    }
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Entries kept at most (a full cache is emptied, not grown).
const AUTH_CACHE_MAX: usize = 10_000;

/// Credentials this gateway verified in the last `AUTH_CACHE_MS`, keyed by the SHA-256
/// of what the caller presented, so a busy API client does not cost a Postgres round
/// trip per request. Every change this gateway makes to users, sessions or tokens
/// empties it at once; a change made elsewhere (another gateway, `ctl`) takes effect
/// within the TTL. A session's own expiry is always checked.
pub struct AuthCache {
    ttl: Duration,
    entries: Mutex<HashMap<Vec<u8>, (Principal, bool, Instant)>>,
}

impl AuthCache {
    /// A cache trusting verified credentials for `ttl` (zero disables it).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(kind: &str, secret: &str) -> Vec<u8> {
        storage::users::token_sha256(&format!("{kind}:{secret}"))
    }

    fn get(&self, key: &[u8]) -> Option<(Principal, bool)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (principal, by_cookie, at) = entries.get(key)?;
        let session_live = principal
            .expires_at
            .is_none_or(|exp| exp > chrono::Utc::now());
        (at.elapsed() < self.ttl && session_live).then(|| (principal.clone(), *by_cookie))
    }

    fn put(&self, key: Vec<u8>, principal: &Principal, by_cookie: bool) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= AUTH_CACHE_MAX {
            entries.clear();
        }
        entries.insert(key, (principal.clone(), by_cookie, Instant::now()));
    }

    /// Forgets every verified credential (after a logout, a revocation, a user change).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Finds the caller: a bearer token if the request has an `Authorization` header (a
/// bad one is refused, never ignored), else the session cookie. Returns the principal
/// and whether it came from the cookie. Verified credentials are remembered briefly
/// ([`AuthCache`]); unknown ones are always checked against Postgres.
async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Principal, bool)>, ApiError> {
    let presented = match headers.get(header::AUTHORIZATION) {
        Some(v) => v.to_str().ok().map(|t| AuthCache::key("bearer", t)),
        None => session_cookie(headers).map(|c| AuthCache::key("cookie", &c)),
    };
    if let Some(key) = &presented
        && let Some(hit) = app.auth_cache.get(key)
    {
        return Ok(Some(hit));
    }
    let found = authenticate_in_db(app, headers).await?;
    if let (Some(key), Some((principal, by_cookie))) = (presented, &found) {
        app.auth_cache.put(key, principal, *by_cookie);
    }
    Ok(found)
}

async fn authenticate_in_db(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Principal, bool)>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "invalid_token",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        let Some(row) = storage::users::find_token(&app.db, token)
            .await
            .map_err(ApiError::internal)?
        else {
            return Err(ApiError::unauthorized(
                "invalid_token",
                "unknown or revoked API token",
            ));
        };
        let principal = Principal {
            kind: PrincipalKind::Token,
            id: row.id,
            role: row.role(),
            name: row.name,
            expires_at: None,
        };
        return Ok(Some((principal, false)));
    }
    let Some(token) = session_cookie(headers) else {
        return Ok(None);
    };
    let Some(session) = storage::users::find_session(&app.db, &token)
        .await
        .map_err(ApiError::internal)?
    else {
        return Ok(None);
    };
    let principal = Principal {
        kind: PrincipalKind::User,
        id: session.user.id,
        role: session.user.role(),
        name: session.user.email,
        expires_at: Some(session.expires_at),
    };
    Ok(Some((principal, true)))
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(SESSION_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` value of a new session. The token is hex, so it needs no quoting.
pub fn session_set_cookie(token: &str, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        ttl.as_secs()
    )
}

/// `Set-Cookie` value that removes the session cookie.
pub fn session_clear_cookie(secure: bool) -> String {
    session_set_cookie("", Duration::ZERO, secure)
}

/// CSRF rules for cookie-authenticated state-changing requests: the custom header
/// [`CSRF_HEADER`] must be present (a cross-site form or `fetch` cannot add it without
/// a CORS preflight, which only `CORS_ORIGINS` pass), and an `Origin` header, when the
/// browser sends one, must be the gateway's own origin or one of `CORS_ORIGINS`. The
/// session cookie is also `SameSite=Strict`, so browsers do not send it cross-site at
/// all; these checks are the second line.
pub fn check_csrf(headers: &HeaderMap, cors_origins: &str) -> Result<(), ApiError> {
    let has_header = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    if !has_header {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "csrf",
            format!("cookie-authenticated changes must send the `{CSRF_HEADER}` header"),
        ));
    }
    check_origin(headers, cors_origins)
}

/// An `Origin` header, when present, must name this host or an allowed CORS origin.
pub fn check_origin(headers: &HeaderMap, cors_origins: &str) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let same_host = origin
        .split_once("://")
        .map(|(_, authority)| authority.trim_end_matches('/'))
        .zip(host)
        .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
    let allowed = cors_origins
        .split(',')
        .map(str::trim)
        .any(|o| !o.is_empty() && o.eq_ignore_ascii_case(origin));
    if same_host || allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "csrf",
            format!("requests from origin {origin} are not accepted"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn csrf_needs_the_header_and_a_friendly_origin() {
        let ok = headers(&[("x-requested-with", "constintel"), ("host", "gw:8080")]);
        assert!(check_csrf(&ok, "").is_ok());
        let missing = headers(&[("host", "gw:8080")]);
        assert_eq!(check_csrf(&missing, "").unwrap_err().code, "csrf");
        let same = headers(&[
            ("x-requested-with", "1"),
            ("host", "gw:8080"),
            ("origin", "http://gw:8080"),
        ]);
        assert!(check_csrf(&same, "").is_ok());
        let foreign = headers(&[
            ("x-requested-with", "1"),
            ("host", "gw:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(check_csrf(&foreign, "").is_err());
        assert!(check_csrf(&foreign, "https://app.example, https://evil.example").is_ok());
    }

    #[test]
    fn cookies_are_strict_and_http_only() {
        let c = session_set_cookie("abc", Duration::from_secs(3600), true);
        for part in [
            "ci_session=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert!(session_clear_cookie(false).contains("Max-Age=0"));
    }
}
