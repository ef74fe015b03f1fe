//! wip
#![allow(missing_docs)]
use leptos::prelude::*;
#[component]
pub fn ReviewQueue() -> impl IntoView {
    "wip"
}
