//! Request extractors that answer bad input with the API's JSON error (400 and the
//! reason) instead of axum's plain-text rejections, and the keyset pagination helpers
//! every list uses.
//!
//! A cursor is opaque to clients: base64url of `{"l": list, "k": key}`, where `key` is
//! the sort key of the last item of the previous page. The list name inside means a
//! cursor from one list is refused by another instead of silently mis-paging.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::api::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page};
use serde::Serialize;
use serde::de::DeserializeOwned;
use service_kit::ApiError;

/// A JSON body; a malformed one answers 400 (415 without a JSON content type, 413 when
/// too large) with the reason. Every body of this API is a JSON object: anything else
/// (an array serde would read field by field, a bare string) is a 400 too.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(json_rejection)?;
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "bad_request",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request("bad_request", format!("invalid body: {e}")))
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    match e.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(e.body_text()),
        _ => ApiError::bad_request("bad_request", e.body_text()),
    }
}

/// Query parameters; a bad one (unknown enum value, malformed time or number) answers
/// 400 with the reason.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::bad_request("bad_filter", e.body_text()))
    }
}

/// Path parameters; a malformed one (an id that is not a UUID) answers 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e: PathRejection| ApiError::bad_request("bad_path", e.body_text()))
    }
}

/// The page size of a request: `limit` within 1–200, default 50.
pub fn page_limit(limit: Option<u32>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(i64::from(DEFAULT_PAGE_LIMIT)),
        Some(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => Ok(i64::from(n)),
        Some(n) => Err(ApiError::bad_request(
            "bad_filter",
            format!("limit must be between 1 and {MAX_PAGE_LIMIT}, not {n}"),
        )),
    }
}

#[derive(Serialize, serde::Deserialize)]
struct CursorBody<K> {
    l: String,
    k: K,
}

/// Encodes the sort key of a page's last item as the next page's cursor.
pub fn encode_cursor<K: Serialize>(list: &str, key: &K) -> String {
    let body = CursorBody {
        l: list.to_owned(),
        k: key,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).expect("cursor keys serialise"))
}

/// Decodes a cursor of `list`; `None` when there is none (first page).
pub fn decode_cursor<K: DeserializeOwned>(
    list: &str,
    cursor: Option<&str>,
) -> Result<Option<K>, ApiError> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "bad_cursor",
            "the cursor is not one this list handed out; start again without it",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let body: CursorBody<K> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if body.l != list {
        return Err(bad());
    }
    Ok(Some(body.k))
}

/// Turns `rows` fetched with `LIMIT limit + 1` into a page: at most `limit` items and,
/// when there were more, the cursor after the last one.
pub fn paginate<T, K: Serialize>(
    mut rows: Vec<T>,
    limit: i64,
    list: &str,
    key_of: impl Fn(&T) -> K,
) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| encode_cursor(list, &key_of(last)))
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

/// Maps the rows of a page.
pub fn map_page<T, U>(page: Page<T>, f: impl FnMut(T) -> U) -> Page<U> {
    Page {
        items: page.items.into_iter().map(f).collect(),
        next_cursor: page.next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_list() {
        let c = encode_cursor("profiles", &(42_i64, "x"));
        let back: Option<(i64, String)> = decode_cursor("profiles", Some(&c)).unwrap();
        assert_eq!(back, Some((42, "x".to_owned())));
        assert!(decode_cursor::<(i64, String)>("merges", Some(&c)).is_err());
        assert!(decode_cursor::<(i64, String)>("profiles", Some("%%%")).is_err());
        assert_eq!(decode_cursor::<i64>("profiles", None).unwrap(), None);
    }

    #[test]
    fn pages_cut_at_the_limit() {
        let p = paginate(vec![1, 2, 3], 2, "n", |n| *n);
        assert_eq!(p.items, vec![1, 2]);
        let after: Option<i32> = decode_cursor("n", p.next_cursor.as_deref()).unwrap();
        assert_eq!(after, Some(2));
        let last = paginate(vec![1, 2], 2, "n", |n| *n);
        assert_eq!(last.next_cursor, None);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(201)).is_err());
        assert_eq!(page_limit(None).unwrap(), 50);
    }
}
