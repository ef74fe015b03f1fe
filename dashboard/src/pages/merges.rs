//! wip
#![allow(missing_docs)]
use leptos::prelude::*;
#[component]
pub fn MergeLog() -> impl IntoView {
    "wip"
}
