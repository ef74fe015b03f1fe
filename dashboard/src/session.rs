//! Who is signed in, and what their role may do.
//!
//! The session itself is the gateway's HttpOnly cookie, which this code never sees;
//! what the app keeps is the answer of `GET /auth/me` (name and role). Pages ask
//! [`Session::can`] before offering an action, so a viewer is never shown a button
//! the gateway would refuse — the gateway still checks every request.

use domain::api::{LoginRequest, LoginResponse, Me, PrincipalKind, Role};
use leptos::prelude::*;

use crate::api::{self, ApiError};

/// The signed-in user, shared through the component tree.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// The current user, once known; `None` when signed out.
    pub me: RwSignal<Option<Me>>,
    /// Whether `GET /auth/me` has answered at least once.
    pub checked: RwSignal<bool>,
}

impl Session {
    /// The signed-in user's role (reactive).
    pub fn role(&self) -> Option<Role> {
        self.me.with(|m| m.as_ref().map(|m| m.role))
    }

    /// Whether the signed-in user's role includes `required` (reactive).
    pub fn can(&self, required: Role) -> bool {
        self.role().is_some_and(|r| r.allows(required))
    }

    /// Asks the gateway who is signed in and records the answer.
    pub async fn refresh(self) {
        let me = api::get::<Me>("/auth/me").await.ok();
        self.me.set(me);
        self.checked.set(true);
    }

    /// Signs in with e-mail and password.
    pub async fn login(self, email: String, password: String) -> Result<(), ApiError> {
        let answer: LoginResponse =
            api::post("/auth/login", &LoginRequest { email, password }).await?;
        self.me.set(Some(Me {
            kind: PrincipalKind::User,
            id: answer.user.id,
            name: answer.user.email,
            role: answer.user.role,
            expires_at: Some(answer.expires_at),
        }));
        self.checked.set(true);
        Ok(())
    }

    /// Signs out (ends the session on the server) and forgets the user.
    pub async fn logout(self) -> Result<(), ApiError> {
        let result = api::post_empty::<serde_json::Value>("/auth/logout").await;
        self.me.set(None);
        result.map(|_| ())
    }
}

/// Creates the session context and starts asking who is signed in.
pub fn provide_session() -> Session {
    let session = Session {
        me: RwSignal::new(None),
        checked: RwSignal::new(false),
    };
    provide_context(session);
    leptos::task::spawn_local(session.refresh());
    session
}

/// The session context provided by the app.
pub fn use_session() -> Session {
    expect_context::<Session>()
}

/// The login URL that brings the user back to `path` afterwards.
pub fn login_url(path: &str) -> String {
    if path.is_empty() || path == "/" || path.starts_with("/login") {
        "/login".to_owned()
    } else {
        format!(
            "/login?next={}",
            String::from(js_sys::encode_uri_component(path))
        )
    }
}

/// Called by the API client when a request is refused with 401: the session expired
/// or was revoked, so the browser goes to the login page (a full navigation, which
/// also drops every piece of state loaded under the old session).
pub fn session_ended() {
    let Some(window) = web_sys::window() else {
        return;
    };
    let location = window.location();
    let path = format!(
        "{}{}",
        location.pathname().unwrap_or_default(),
        location.search().unwrap_or_default()
    );
    if !path.starts_with("/login") {
        let _ = location.assign(&login_url(&path));
    }
}

/// Where to go after signing in: the `next` parameter when it is a path on this site,
/// else the overview. Refusing anything else keeps the login page from being an open
/// redirect.
pub fn safe_next(next: Option<String>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\") => p,
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/profiles?q=x".into())), "/profiles?q=x");
        assert_eq!(safe_next(Some("//evil.example".into())), "/");
        assert_eq!(safe_next(Some("https://evil.example".into())), "/");
        assert_eq!(safe_next(Some("/\\evil.example".into())), "/");
        assert_eq!(safe_next(None), "/");
    }
}
