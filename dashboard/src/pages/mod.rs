//! One module per page. Each page reads its state from the URL (path parameters and
//! query string), loads what it shows through [`crate::api`], and offers only the
//! actions the signed-in role may take.

pub mod audiences;
pub mod automations;
pub mod customer360;
pub mod destinations;
pub mod imports;
pub mod integrations;
pub mod login;
pub mod merges;
pub mod models;
pub mod not_found;
pub mod overview;
pub mod profiles;
pub mod reviews;
pub mod streams;

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// The value of query parameter `name` in the current URL (reactive).
pub fn query_param(name: &'static str) -> Memo<Option<String>> {
    let query = use_query_map();
    Memo::new(move |_| query.with(|q| q.get(name)).filter(|v| !v.is_empty()))
}

/// `path` with the given query parameters, leaving out empty ones.
pub fn href(path: &str, params: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .filter_map(|(k, v)| v.as_deref().filter(|v| !v.is_empty()).map(|v| (*k, v)))
        .collect();
    crate::api::with_query(path, &pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_leave_out_empty_parameters() {
        assert_eq!(
            href(
                "/profiles",
                &[
                    ("q", Some("a b".into())),
                    ("segment", None),
                    ("sort", Some(String::new()))
                ]
            ),
            "/profiles?q=a+b"
        );
        assert_eq!(href("/models", &[]), "/models");
    }
}
