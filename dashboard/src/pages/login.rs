//! Sign in with e-mail and password. On success the gateway sets the HttpOnly
//! session cookie and the app goes to `next` (the page that sent the user here).

use leptos::prelude::*;
use leptos_router::hooks::use_navigate;

use super::query_param;
use crate::session::{safe_next, use_session};

/// The login page.
#[component]
pub fn Login() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let next = query_param("next");
    let email = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);

    // Already signed in (a reload of /login, or Back after signing in): move on.
    {
        let navigate = navigate.clone();
        Effect::new(move |_| {
            if session.me.with(Option::is_some) && !busy.get_untracked() {
                navigate(&safe_next(next.get_untracked()), Default::default());
            }
        });
    }

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        error.set(None);
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match session
                .login(
                    email.get_untracked().trim().to_owned(),
                    password.get_untracked(),
                )
                .await
            {
                Ok(()) => navigate(&safe_next(next.get_untracked()), Default::default()),
                Err(crate::api::ApiError::Unauthorized) => {
                    error.set(Some("Wrong e-mail or password.".into()));
                }
                Err(e) => error.set(Some(e.to_string())),
            }
            busy.set(false);
        });
    };

    view! {
        <div class="page-center login-page">
            <form class="card narrow login" on:submit=submit>
                <div class="brand big">
                    <span class="logo">"◆"</span>
                    "ConstIntel"
                </div>
                <h1>"Sign in"</h1>
                <label>
                    "E-mail"
                    <input
                        type="email"
                        name="email"
                        autocomplete="username"
                        required
                        bind:value=email
                    />
                </label>
                <label>
                    "Password"
                    <input
                        type="password"
                        name="password"
                        autocomplete="current-password"
                        required
                        bind:value=password
                    />
                </label>
                {move || error.get().map(|e| view! { <p class="notice error" role="alert">{e}</p> })}
                <button type="submit" class="button primary" disabled=move || busy.get()>
                    {move || if busy.get() { "Signing in…" } else { "Sign in" }}
                </button>
            </form>
        </div>
    }
}
