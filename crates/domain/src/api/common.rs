//! What every resource shares: the error body, pages and their limits, and the 202
//! answer of an action the identity merger applies asynchronously.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::merges::MergeAction;

/// Items per page when the request gives no `limit`.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;

/// The largest `limit` a list accepts.
pub const MAX_PAGE_LIMIT: u32 = 200;

/// The body of every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiErrorDetail,
}

/// Code and message of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorDetail {
    /// Stable machine-readable code (`not_found`, `bad_request`, `forbidden`, ...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// One page of a list. Pass `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items of this page, in the list's order.
    pub items: Vec<T>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Paging parameters shared by lists without other filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct PageQuery {
    /// Cursor from the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Items per page (1–200, default 50).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    pub limit: Option<u32>,
}

/// Answer of an action the identity merger applies asynchronously (approve, reject,
/// manual merge, unmerge, erase): the request was published on
/// `profiles.merge_requests`; the target's status shows the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// Id of the published request (the stream envelope id).
    pub request_id: Uuid,
    /// What was requested.
    pub action: MergeAction,
    /// Where to watch the outcome (an API path).
    pub status_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_page_has_no_cursor() {
        let page: Page<u32> = serde_json::from_str(r#"{"items":[1,2]}"#).unwrap();
        assert_eq!(page.next_cursor, None);
    }
}
