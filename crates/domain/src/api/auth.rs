//! Signing in and who the caller is (`/auth/*`), and the roles every route is
//! authorised against: the session cookie, the CSRF header, [`Role`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::users::UserView;

/// Name of the session cookie set by `POST /api/v1/auth/login`.
pub const SESSION_COOKIE: &str = "ci_session";

/// Header a cookie-authenticated client must send on every state-changing request
/// (`POST`, `PUT`, `PATCH`, `DELETE`). Browsers cannot add it to a cross-site request
/// without a CORS preflight the gateway refuses, so its presence proves same-origin.
/// Requests authenticated with a bearer token do not need it.
pub const CSRF_HEADER: &str = "x-requested-with";

/// Value to send in [`CSRF_HEADER`] (any non-empty value is accepted).
pub const CSRF_HEADER_VALUE: &str = "constintel";

names! {
    /// What a user or API token may do. Each role includes the ones below it:
    /// `viewer` reads, `analyst` also acts on merges, imports and test events,
    /// `admin` also manages users, tokens, integrations, erasure and dead letters.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum Role("role") {
        /// Reads everything except secrets.
        Viewer = "viewer",
        /// Viewer plus merge decisions, CSV imports and test events.
        Analyst = "analyst",
        /// Everything, including users, tokens, integrations, erasure and dead letters.
        Admin = "admin",
    }
}

impl Role {
    /// Whether this role may call a route that needs `required`.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

/// `POST /auth/login`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// The user's e-mail (case-insensitive).
    pub email: String,
    /// The user's password.
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// Answer of a successful login; the session itself travels in the
/// [`SESSION_COOKIE`] cookie (HttpOnly, SameSite=Strict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// The signed-in user.
    pub user: UserView,
    /// When the session expires.
    pub expires_at: DateTime<Utc>,
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A dashboard user with a session cookie.
    User,
    /// A machine with a bearer API token.
    Token,
}

/// `GET /auth/me`: who the caller is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// User or token.
    pub kind: PrincipalKind,
    /// User id or token id.
    pub id: Uuid,
    /// The user's e-mail or the token's name.
    pub name: String,
    /// The caller's role.
    pub role: Role,
    /// When the session expires (users only).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Admin.allows(Role::Analyst));
        assert!(Role::Analyst.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Analyst));
        assert!(!Role::Analyst.allows(Role::Admin));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn passwords_never_print() {
        let login = LoginRequest {
            email: "a@b.com".into(),
            password: "hunter2hunter2".into(),
        };
        assert!(!format!("{login:?}").contains("hunter2"));
    }
}
