//! The page for URLs the dashboard does not know.

use leptos::prelude::*;

/// "Nothing here", with the way back.
#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <div class="page-center">
            <div class="card narrow">
                <h1>"Page not found"</h1>
                <p>"There is nothing at this address. It may have been mistyped or moved."</p>
                <a class="button" href="/">"Go to the overview"</a>
            </div>
        </div>
    }
}
