//! Dashboard users and API tokens (`/users`, `/tokens`), admin-only. Secrets
//! (passwords, a new token) never appear in `Debug` output.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Role;

/// A dashboard user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// User id.
    pub id: Uuid,
    /// E-mail (lower-case), the login name.
    pub email: String,
    /// What the user may do.
    pub role: Role,
    /// Disabled users cannot sign in; their sessions stop working.
    pub disabled: bool,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// Last successful login.
    #[serde(default)]
    pub last_login_at: Option<DateTime<Utc>>,
}

/// `POST /users`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserRequest {
    /// E-mail, the login name.
    #[cfg_attr(feature = "openapi", schema(format = Email))]
    pub email: String,
    /// Password, at least 12 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 12))]
    pub password: String,
    /// What the new user may do.
    pub role: Role,
}

impl fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .field("role", &self.role)
            .finish()
    }
}

/// `PATCH /users/{id}`: the fields to change (absent fields stay as they are).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateUserRequest {
    /// New role.
    #[serde(default)]
    pub role: Option<Role>,
    /// Disable (ends the user's sessions) or re-enable.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// New password, at least 12 characters (ends the user's sessions).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 12))]
    pub password: Option<String>,
}

impl fmt::Debug for UpdateUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateUserRequest")
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// An API token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiTokenView {
    /// Token id.
    pub id: Uuid,
    /// What it is for.
    pub name: String,
    /// First characters of the token, to tell tokens apart.
    pub prefix: String,
    /// Role the token acts with.
    pub role: Role,
    /// The admin who created it.
    #[serde(default)]
    pub created_by: Option<Uuid>,
    /// When the token was created.
    pub created_at: DateTime<Utc>,
    /// Last request made with it (updated at most once a minute).
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; revoked tokens are refused.
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// `POST /tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenRequest {
    /// What the token is for (e.g. `warehouse-sync`): 1 to 100 characters besides
    /// surrounding spaces.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub name: String,
    /// Role it acts with.
    pub role: Role,
}

/// Answer of `POST /tokens`: the only time the token is shown.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The bearer token (`Authorization: Bearer <token>`). Store it now: only its hash
    /// is kept.
    pub token: String,
    /// The token's listing.
    pub info: ApiTokenView,
}

impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"[REDACTED]")
            .field("info", &self.info)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let token = CreatedToken {
            token: "ci_tok_secret".into(),
            info: ApiTokenView {
                id: Uuid::nil(),
                name: "n".into(),
                prefix: "ci_tok".into(),
                role: Role::Viewer,
                created_by: None,
                created_at: Utc::now(),
                last_used_at: None,
                revoked_at: None,
            },
        };
        assert!(!format!("{token:?}").contains("ci_tok_secret"));
        let user = CreateUserRequest {
            email: "a@b.com".into(),
            password: "hunter2hunter2".into(),
            role: Role::Viewer,
        };
        assert!(!format!("{user:?}").contains("hunter2"));
        let update = UpdateUserRequest {
            password: Some("hunter2hunter2".into()),
            ..UpdateUserRequest::default()
        };
        assert!(!format!("{update:?}").contains("hunter2"));
    }
}
