//! wip
#![allow(missing_docs)]
use leptos::prelude::*;
#[component]
pub fn Models() -> impl IntoView {
    "wip"
}
