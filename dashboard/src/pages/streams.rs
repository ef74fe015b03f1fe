//! wip
#![allow(missing_docs)]
use leptos::prelude::*;
#[component]
pub fn Streams() -> impl IntoView {
    "wip"
}
