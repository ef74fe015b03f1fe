//! The ConstIntel analyst dashboard: a Leptos client-side app compiled to wasm.
//!
//! The api-gateway serves `dashboard/dist/` at `/` (falling back to `index.html` for
//! every client-side route) and the app talks only to `/api/v1` on the same origin,
//! with the session cookie the login sets. Request and response bodies are the
//! `domain::api` types the gateway serialises, so the two sides cannot drift.
//!
//! Layout: [`api`] is the one HTTP client; [`session`] knows who is signed in and
//! what their role may do; [`app`] holds the router and the page frame; one module per
//! page under [`pages`]; [`charts`] draws the SVG charts; [`widgets`] holds the small
//! shared pieces (loading, error and empty states, KPI cards, pagers); [`format`] and
//! [`csv_preview`] are pure and unit-tested on the host.

pub mod api;
pub mod app;
pub mod charts;
pub mod csv_preview;
pub mod format;
pub mod pages;
pub mod session;
pub mod widgets;

use wasm_bindgen::prelude::wasm_bindgen;

/// Entry point called by `index.html` once the wasm module is instantiated: mounts
/// the app on `<body>`.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
