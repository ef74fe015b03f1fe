//! wip
#![allow(missing_docs)]
use leptos::prelude::*;
#[component]
pub fn Profiles() -> impl IntoView {
    "wip"
}
