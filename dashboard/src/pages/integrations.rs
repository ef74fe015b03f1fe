//! wip
#![allow(missing_docs)]
use leptos::prelude::*;
#[component]
pub fn Integrations() -> impl IntoView {
    "wip"
}
#[component]
pub fn IntegrationDetail() -> impl IntoView {
    "wip"
}
