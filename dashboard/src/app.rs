//! The router and the page frame.
//!
//! Every page has a real URL (filters and paging live in the query string), so a
//! link can be shared and a reload lands on the same view: the gateway answers any
//! non-API path with `index.html` and the router takes it from there. The frame
//! ([`Shell`]) holds the navigation and the signed-in user, and sends anyone not
//! signed in to the login page with the way back in `next`.

use domain::api::Role;
use leptos::prelude::*;
use leptos_router::components::{Outlet, ParentRoute, Route, Router, Routes};
use leptos_router::hooks::{use_location, use_navigate};
use leptos_router::path;

use crate::pages;
use crate::session::{Session, login_url, provide_session, use_session};
use crate::widgets::{Badge, Loading};

/// The whole app.
#[component]
pub fn App() -> impl IntoView {
    provide_session();
    view! {
        <Router>
            <Routes fallback=|| view! { <pages::not_found::NotFound/> }>
                <Route path=path!("/login") view=pages::login::Login/>
                <ParentRoute path=path!("") view=Shell>
                    <Route path=path!("/") view=pages::overview::Overview/>
                    <Route path=path!("/profiles") view=pages::profiles::Profiles/>
                    <Route path=path!("/profiles/:id") view=pages::customer360::Customer360Page/>
                    <Route path=path!("/merges") view=pages::merges::MergeLog/>
                    <Route path=path!("/merges/review") view=pages::reviews::ReviewQueue/>
                    <Route path=path!("/integrations") view=pages::integrations::Integrations/>
                    <Route
                        path=path!("/integrations/:id")
                        view=pages::integrations::IntegrationDetail
                    />
                    <Route path=path!("/imports") view=pages::imports::Imports/>
                    <Route path=path!("/audiences") view=pages::audiences::Audiences/>
                    <Route path=path!("/audiences/:id") view=pages::audiences::AudienceDetail/>
                    <Route path=path!("/automations") view=pages::automations::Automations/>
                    <Route
                        path=path!("/automations/new")
                        view=pages::automations::AutomationBuilder
                    />
                    <Route
                        path=path!("/automations/:id")
                        view=pages::automations::AutomationDetail
                    />
                    <Route
                        path=path!("/automations/:id/results")
                        view=pages::automations::AutomationResultsPage
                    />
                    <Route path=path!("/destinations") view=pages::destinations::Destinations/>
                    <Route
                        path=path!("/destinations/:id")
                        view=pages::destinations::DestinationDetail
                    />
                    <Route path=path!("/models") view=pages::models::Models/>
                    <Route path=path!("/streams") view=pages::streams::Streams/>
                    <Route path=path!("/*any") view=pages::not_found::NotFound/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}

/// The navigation entries: (path, label).
const NAV: [(&str, &str); 11] = [
    ("/", "Overview"),
    ("/profiles", "Profiles"),
    ("/audiences", "Audiences"),
    ("/automations", "Automations"),
    ("/merges", "Merges"),
    ("/merges/review", "Review queue"),
    ("/integrations", "Integrations"),
    ("/imports", "CSV upload"),
    ("/destinations", "Destinations"),
    ("/models", "Models"),
    ("/streams", "Streams"),
];

/// Whether the nav entry `href` is the current page (the longest matching entry wins,
/// so `/merges/review` does not also light up `/merges`).
fn is_current(href: &str, path: &str) -> bool {
    let matches = |h: &str| {
        if h == "/" {
            path == "/"
        } else {
            path == h || path.starts_with(&format!("{h}/"))
        }
    };
    matches(href)
        && !NAV
            .iter()
            .any(|(other, _)| other.len() > href.len() && matches(other))
}

/// `/path?query` from the router's path and search (which it gives without the `?`).
fn path_and_query(path: &str, search: &str) -> String {
    let search = search.trim_start_matches('?');
    if search.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{search}")
    }
}

/// The frame around every signed-in page.
#[component]
fn Shell() -> impl IntoView {
    let session = use_session();
    let location = use_location();
    let navigate = use_navigate();
    let menu_open = RwSignal::new(false);

    // Not signed in: go to the login page, remembering where we were.
    Effect::new(move |_| {
        if session.checked.get() && session.me.with(Option::is_none) {
            let here = path_and_query(
                &location.pathname.get_untracked(),
                &location.search.get_untracked(),
            );
            navigate(&login_url(&here), Default::default());
        }
    });
    // Close the phone menu after following a link.
    Effect::new(move |_| {
        location.pathname.track();
        menu_open.set(false);
    });

    view! {
        <Show
            when=move || session.me.with(Option::is_some)
            fallback=|| view! { <div class="page-center"><Loading/></div> }
        >
            <div class="layout" class:menu-open=move || menu_open.get()>
                <header class="topbar">
                    <button
                        type="button"
                        class="menu-toggle"
                        aria-label="Menu"
                        on:click=move |_| menu_open.update(|o| *o = !*o)
                    >
                        "☰"
                    </button>
                    <a class="brand" href="/">
                        <span class="logo">"◆"</span>
                        "ConstIntel"
                    </a>
                    <UserMenu session/>
                </header>
                <nav class="sidebar" aria-label="Main">
                    {NAV
                        .iter()
                        .map(|(href, label)| {
                            let href = *href;
                            view! {
                                <a
                                    href=href
                                    class="nav-link"
                                    aria-current=move || {
                                        is_current(href, &location.pathname.get()).then_some("page")
                                    }
                                >
                                    {*label}
                                </a>
                            }
                        })
                        .collect_view()}
                </nav>
                <main class="content">
                    <Outlet/>
                </main>
            </div>
        </Show>
    }
}

/// The signed-in user's name and role, and the sign-out button.
#[component]
fn UserMenu(session: Session) -> impl IntoView {
    let navigate = use_navigate();
    let sign_out = move |_| {
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            let _ = session.logout().await;
            navigate("/login", Default::default());
        });
    };
    let name = move || session.me.with(|m| m.as_ref().map(|m| m.name.clone()));
    let role = move || session.role().map(Role::as_str).unwrap_or("");
    view! {
        <div class="user">
            <span class="user-name" data-testid="user-name">{name}</span>
            <span data-testid="user-role">
                {move || view! { <Badge text=role() tone="info"/> }}
            </span>
            <button type="button" class="button small ghost" on:click=sign_out>
                "Sign out"
            </button>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_way_back_keeps_the_query() {
        assert_eq!(path_and_query("/profiles", "q=asha"), "/profiles?q=asha");
        assert_eq!(path_and_query("/profiles", "?q=asha"), "/profiles?q=asha");
        assert_eq!(path_and_query("/models", ""), "/models");
    }

    #[test]
    fn the_most_specific_nav_entry_is_current() {
        assert!(is_current("/", "/"));
        assert!(!is_current("/", "/profiles"));
        assert!(is_current("/profiles", "/profiles/0192"));
        assert!(is_current("/merges", "/merges"));
        assert!(!is_current("/merges", "/merges/review"));
        assert!(is_current("/merges/review", "/merges/review"));
        assert!(!is_current("/profiles", "/profilesx"));
    }
}
