//! The dashboard's one HTTP client: every call to `/api/v1` goes through here.
//!
//! Requests carry the session cookie (same origin) and, when they change state, the
//! CSRF header the gateway requires from cookie-authenticated callers. Error bodies are
//! the gateway's `{"error": {"code", "message"}}` ([`domain::api::ApiErrorBody`]) and
//! become an [`ApiError`] whose message pages show as they are. A 401 outside the
//! sign-in calls means the session ended: the browser goes to the login page, which
//! brings the user back to where they were.

use std::fmt;

use domain::api::{ApiErrorBody, CSRF_HEADER, CSRF_HEADER_VALUE};
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Prefix of every API route.
pub const BASE: &str = "/api/v1";

/// Why an API call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Not signed in, or the session expired (401).
    Unauthorized,
    /// The gateway answered with an error status and (usually) a JSON error body.
    Status {
        /// HTTP status.
        status: u16,
        /// Stable error code (`not_found`, `forbidden`, ...).
        code: String,
        /// What went wrong, for people.
        message: String,
    },
    /// The request did not reach the gateway.
    Network(String),
    /// The answer was not what this dashboard expects (version skew).
    Decode(String),
}

impl ApiError {
    /// The HTTP status, when the gateway answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unauthorized => Some(401),
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unauthorized => f.write_str("Your session has ended. Please sign in again."),
            ApiError::Status {
                status: 403,
                message,
                ..
            } => write!(f, "Your role may not do this ({message})."),
            ApiError::Status {
                status, message, ..
            } if message.is_empty() => write!(f, "The server answered {status}."),
            ApiError::Status { message, .. } => f.write_str(message),
            ApiError::Network(e) => write!(f, "Could not reach the server: {e}"),
            ApiError::Decode(e) => write!(f, "Unexpected answer from the server: {e}"),
        }
    }
}

/// The full URL of an API path (`/profiles` → `/api/v1/profiles`).
pub fn url(path: &str) -> String {
    format!("{BASE}{path}")
}

/// `path` with `query` serialised as its query string (absent fields left out).
pub fn with_query<Q: Serialize>(path: &str, query: &Q) -> String {
    match serde_urlencoded::to_string(query) {
        Ok(qs) if !qs.is_empty() => format!("{path}?{qs}"),
        _ => path.to_owned(),
    }
}

/// `GET path`, decoding the JSON answer.
pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    send(path, Request::get(&url(path)).build()).await
}

/// `POST path` with a JSON body.
pub async fn post<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiError> {
    send(path, changing(Request::post(&url(path))).json(body)).await
}

/// `POST path` without a body.
pub async fn post_empty<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    send(path, changing(Request::post(&url(path))).build()).await
}

/// `PATCH path` with a JSON body.
pub async fn patch<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiError> {
    send(path, changing(Request::patch(&url(path))).json(body)).await
}

/// `PUT path` with a JSON body.
pub async fn put<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiError> {
    send(path, changing(Request::put(&url(path))).json(body)).await
}

/// `DELETE path` (the answer is empty).
pub async fn delete(path: &str) -> Result<(), ApiError> {
    send(path, changing(Request::delete(&url(path))).build()).await
}

/// `POST path` with a multipart form (file uploads).
pub async fn post_form<T: DeserializeOwned>(
    path: &str,
    form: web_sys::FormData,
) -> Result<T, ApiError> {
    send(path, changing(Request::post(&url(path))).body(form)).await
}

/// Adds the header that proves a state-changing request comes from this origin.
fn changing(builder: RequestBuilder) -> RequestBuilder {
    builder.header(CSRF_HEADER, CSRF_HEADER_VALUE)
}

async fn send<T: DeserializeOwned>(
    path: &str,
    request: Result<Request, gloo_net::Error>,
) -> Result<T, ApiError> {
    let request = request.map_err(|e| ApiError::Network(e.to_string()))?;
    let response = request
        .send()
        .await
        .map_err(|e| ApiError::Network(e.to_string()))?;
    let result = decode(response).await;
    if result.as_ref().err() == Some(&ApiError::Unauthorized) && !path.starts_with("/auth/") {
        crate::session::session_ended();
    }
    result
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, ApiError> {
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| ApiError::Network(e.to_string()))?;
    if status == 401 {
        return Err(ApiError::Unauthorized);
    }
    if !(200..300).contains(&status) {
        return Err(error_of(status, &text));
    }
    // 202/204 answers may be empty: decode them as JSON `null` so `()` and `Option`
    // targets work.
    let body = if text.trim().is_empty() {
        "null"
    } else {
        &text
    };
    serde_json::from_str(body).map_err(|e| ApiError::Decode(e.to_string()))
}

/// The [`ApiError`] of a non-2xx answer with body `text`.
pub fn error_of(status: u16, text: &str) -> ApiError {
    match serde_json::from_str::<ApiErrorBody>(text) {
        Ok(body) => ApiError::Status {
            status,
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => ApiError::Status {
            status,
            code: String::new(),
            message: text.chars().take(200).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::api::{ChurnBand, ProfileQuery};

    #[test]
    fn query_strings_leave_out_absent_filters_and_encode_values() {
        let q = ProfileQuery {
            q: Some("+91 98765 43210".into()),
            churn_band: Some(ChurnBand::High),
            ..Default::default()
        };
        assert_eq!(
            with_query("/profiles", &q),
            "/profiles?q=%2B91+98765+43210&churn_band=high"
        );
        assert_eq!(
            with_query("/profiles", &ProfileQuery::default()),
            "/profiles"
        );
    }

    #[test]
    fn error_bodies_become_messages() {
        let e = error_of(
            404,
            r#"{"error":{"code":"not_found","message":"no such profile"}}"#,
        );
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "no such profile");
        let e = error_of(502, "Bad Gateway");
        assert_eq!(e.to_string(), "Bad Gateway");
        assert_eq!(error_of(500, "").to_string(), "The server answered 500.");
    }
}
