//! wip
#![allow(missing_docs)]
use leptos::prelude::*;
#[component]
pub fn Customer360Page() -> impl IntoView {
    "wip"
}
