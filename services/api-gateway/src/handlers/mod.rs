//! The handlers of `/api/v1`, one module per endpoint group. Each handler carries its
//! `#[utoipa::path]` documentation; `crate::routes` mounts it with its access rule.

pub mod audiences;
pub mod auth;
pub mod automations;
pub mod destinations;
pub mod imports;
pub mod integrations;
pub mod merges;
pub mod models;
pub mod overview;
pub mod profiles;
pub mod streams;
pub mod users;

use axum::http::StatusCode;
use service_kit::ApiError;
use storage::StorageError;

/// Maps a storage error to the API's: rejected input 400, uniqueness 409, the rest 500.
pub fn storage_error(e: StorageError) -> ApiError {
    match e {
        StorageError::Invalid(m) => ApiError::bad_request("bad_request", m),
        StorageError::Conflict(m) => conflict(m),
        other => ApiError::internal(other),
    }
}

/// 409 with a reason.
pub fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}
