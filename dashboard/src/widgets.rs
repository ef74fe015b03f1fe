//! Small pieces every page uses: the loading, error and empty states, KPI cards, the
//! keyset pager, badges and the copy button.
//!
//! [`loaded`] is how a page shows a resource: a spinner until the first answer, the
//! error when there is one, the content otherwise (while a new answer loads the last
//! one stays on screen, so filters do not flicker).

use leptos::prelude::*;

use crate::api::ApiError;

/// Renders `resource` with the loading and error states handled.
pub fn loaded<T, V>(
    resource: LocalResource<Result<T, ApiError>>,
    content: impl Fn(T) -> V + Send + Sync + 'static,
) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    move || match resource.get() {
        None => view! { <Loading/> }.into_any(),
        Some(Err(error)) => view! { <ErrorNotice error/> }.into_any(),
        Some(Ok(value)) => content(value).into_any(),
    }
}

/// Shown while a page's data loads.
#[component]
pub fn Loading() -> impl IntoView {
    view! {
        <div class="loading" role="status" aria-live="polite">
            <span class="spinner"></span>
            "Loading…"
        </div>
    }
}

/// Shown when a request failed: the reason, in the gateway's words.
#[component]
pub fn ErrorNotice(
    /// The failure.
    error: ApiError,
) -> impl IntoView {
    let title = match error.status() {
        Some(403) => "Not allowed",
        Some(404) => "Not found",
        Some(s) if s >= 500 => "The server had a problem",
        None => "Could not load this",
        _ => "That did not work",
    };
    view! {
        <div class="notice error" role="alert">
            <strong>{title}</strong>
            <p>{error.to_string()}</p>
        </div>
    }
}

/// Shown instead of an empty list: what is missing and what to do next.
#[component]
pub fn Empty(
    /// What is missing.
    title: &'static str,
    /// What to do about it.
    hint: String,
    /// An optional action (a link or button).
    #[prop(optional)]
    children: Option<Children>,
) -> impl IntoView {
    view! {
        <div class="empty">
            <strong>{title}</strong>
            <p>{hint}</p>
            {children.map(|c| c())}
        </div>
    }
}

/// One KPI: a label, a large value and a line of context.
#[component]
pub fn Kpi(
    /// What is counted.
    label: &'static str,
    /// The value as shown.
    value: String,
    /// Context under the value.
    #[prop(optional, into)]
    hint: String,
    /// The exact value, shown on hover when `value` is abbreviated.
    #[prop(optional, into)]
    exact: Option<String>,
    /// Stable name for the test suite (`data-kpi`).
    name: &'static str,
) -> impl IntoView {
    let title = exact.clone().unwrap_or_else(|| value.clone());
    view! {
        <div class="kpi" data-kpi=name>
            <span class="kpi-label">{label}</span>
            <span class="kpi-value" title=title data-exact=exact>{value}</span>
            <span class="kpi-hint">{hint}</span>
        </div>
    }
}

/// A small coloured label.
#[component]
pub fn Badge(
    /// The text shown (and copied).
    #[prop(into)]
    text: String,
    /// Colour class (`ok`, `warn`, `bad`, `muted`, `info`).
    #[prop(default = "muted")]
    tone: &'static str,
) -> impl IntoView {
    view! { <span class=format!("badge {tone}")>{text}</span> }
}

/// Keyset paging: "First page" when not on it, "Next page" when there is one. Links,
/// so each page has its own URL and Back works.
#[component]
pub fn Pager(
    /// Whether the current page is not the first.
    on_later_page: bool,
    /// URL of the first page.
    first_href: String,
    /// URL of the next page, when there is one.
    next_href: Option<String>,
) -> impl IntoView {
    view! {
        <nav class="pager" aria-label="Pages">
            {on_later_page.then(|| view! { <a class="button ghost" href=first_href>"« First page"</a> })}
            {match next_href {
                Some(h) => view! { <a class="button ghost" href=h rel="next">"Next page »"</a> }.into_any(),
                None => view! { <span class="muted">"End of the list"</span> }.into_any(),
            }}
        </nav>
    }
}

/// A button that copies `text` to the clipboard and says so.
#[component]
pub fn CopyButton(
    /// What to copy.
    text: String,
    /// Button label.
    #[prop(default = "Copy")]
    label: &'static str,
) -> impl IntoView {
    let copied = RwSignal::new(false);
    let copy = move |_| {
        if let Some(window) = web_sys::window() {
            let _ = window.navigator().clipboard().write_text(&text);
            copied.set(true);
            set_timeout(
                move || copied.set(false),
                std::time::Duration::from_millis(1500),
            );
        }
    };
    view! {
        <button type="button" class="button small ghost" on:click=copy>
            {move || if copied.get() { "Copied" } else { label }}
        </button>
    }
}

/// A `<pre>` with pretty-printed JSON (evidence, metrics, payloads).
#[component]
pub fn JsonBlock(
    /// The value.
    value: serde_json::Value,
) -> impl IntoView {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    view! { <pre class="json">{text}</pre> }
}
