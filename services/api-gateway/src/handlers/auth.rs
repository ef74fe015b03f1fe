//! Sign-in, sign-out and "who am I".

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::api::{ApiErrorBody, LoginRequest, LoginResponse, Me, PrincipalKind};
use service_kit::{ApiError, PeerAddr};

use crate::auth::{self, Caller};
use crate::extract::ApiJson;
use crate::handlers::users::user_view;
use crate::state::AppState;
use crate::throttle::Throttled;

/// Signs a user in and sets the session cookie.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    summary = "Sign in",
    description = "Checks the e-mail and password and sets the `ci_session` cookie \
                   (HttpOnly, SameSite=Strict, Secure unless `COOKIE_SECURE=false`). \
                   Attempts are limited per client address (`LOGIN_ATTEMPTS_PER_MINUTE`) \
                   and per account (`LOGIN_ATTEMPTS_PER_ACCOUNT_PER_HOUR`).",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = LoginResponse,
         headers(("set-cookie" = String, description = "The session cookie"))),
        (status = 400, description = "Malformed body (`bad_request`)", body = ApiErrorBody),
        (status = 401, description = "Wrong e-mail or password, or a disabled user (`invalid_credentials`)", body = ApiErrorBody),
        (status = 403, description = "Request from a foreign origin (`csrf`)", body = ApiErrorBody),
        (status = 429, description = "Too many attempts from this address or for this account (`rate_limited`); `Retry-After` says when to try again", body = ApiErrorBody,
         headers(("retry-after" = u64, description = "Seconds until the next attempt is allowed"))),
    )
)]
pub async fn login(
    State(app): State<AppState>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let client = app.trusted_proxies.client_ip(peer, &headers);
    match app.login_limiter.attempt(client, &body.email) {
        Ok(()) => {}
        Err(Throttled::Client(wait)) => {
            tracing::warn!(%client, "sign-in attempts throttled for a client address");
            return Err(ApiError::too_many_requests(
                "too many sign-in attempts from this address; try again later",
                wait,
            ));
        }
        Err(Throttled::Account(wait)) => {
            tracing::warn!(%client, "sign-in attempts throttled for an account");
            return Err(ApiError::too_many_requests(
                "too many sign-in attempts for this account; try again later",
                wait,
            ));
        }
    }
    auth::check_origin(&headers, &app.settings.api.cors_origins)?;
    let user = storage::users::find_user_by_email(&app.db, &body.email)
        .await
        .map_err(ApiError::internal)?;
    // Verify against a decoy hash for unknown e-mails, so timing does not reveal which
    // e-mails have accounts.
    let hash = user.as_ref().map_or_else(
        || storage::users::decoy_password_hash().to_owned(),
        |u| u.password_hash.clone(),
    );
    let password = body.password;
    let matches =
        tokio::task::spawn_blocking(move || storage::users::verify_password(&hash, &password))
            .await
            .map_err(ApiError::internal)?;
    let Some(user) = user.filter(|u| matches && !u.disabled) else {
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "wrong e-mail or password",
        ));
    };
    let ttl = Duration::from_secs(u64::from(app.settings.api.session_ttl_hours) * 3600);
    let (token, expires_at) = storage::users::create_session(
        &app.db,
        user.id,
        chrono::Duration::from_std(ttl).map_err(ApiError::internal)?,
    )
    .await
    .map_err(ApiError::internal)?;
    storage::users::record_login(&app.db, user.id)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user = %user.email, "signed in");
    // A request that came over HTTPS gets a Secure cookie even where the setting is off.
    let secure =
        app.settings.api.cookie_secure || app.trusted_proxies.forwarded_https(peer, &headers);
    let cookie = auth::session_set_cookie(&token, ttl, secure);
    let body = LoginResponse {
        user: user_view(&user),
        expires_at,
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// Ends the caller's session.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    summary = "Sign out",
    description = "Ends the session of the cookie and clears it. With an API token there \
                   is no session: nothing happens.",
    responses((status = 204, description = "Signed out"))
)]
pub async fn logout(
    State(app): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if caller.kind == PrincipalKind::User
        && let Some(token) = auth::session_cookie(&headers)
    {
        storage::users::delete_session(&app.db, &token)
            .await
            .map_err(ApiError::internal)?;
        app.auth_cache.clear();
    }
    let cookie = auth::session_clear_cookie(app.settings.api.cookie_secure);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// Who the caller is.
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "auth",
    summary = "The current caller",
    responses((status = 200, description = "The caller", body = Me))
)]
pub async fn me(Caller(caller): Caller) -> Json<Me> {
    Json(caller.me())
}
