//! The analyst dashboard.
use leptos::prelude::*;
use wasm_bindgen::prelude::wasm_bindgen;

/// Entry point.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(|| view! { <p>"ConstIntel"</p> });
}
