//! wip
#![allow(missing_docs)]
use leptos::prelude::*;
#[component]
pub fn Imports() -> impl IntoView {
    "wip"
}
