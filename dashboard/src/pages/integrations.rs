//! Integrations: the configured sources with their status and last delivery; adding
//! one of the kinds that deliver to ingest (the webhook URL and secret are shown once,
//! with copy buttons and the platform's setup steps); and per integration
//! enable/disable, secret rotation, a test event and the delivery log.
//!
//! Nothing here is written per kind: labels, the kinds that can be added, secret hints,
//! URLs, authentication texts and setup steps come from the API (`GET /sources` and
//! each integration's view), which takes them from the server's source registry.
//!
//! Managing integrations and their secrets is for admins, sending a test event for
//! analysts too; viewers see the list and the logs only.

use domain::api::{
    CreateIntegrationRequest, DeliveryLogEntry, IntegrationSecret, IntegrationView, Page, Role,
    SourceKindView, TestEventAccepted, UpdateIntegrationRequest,
};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use super::{href, query_param};
use crate::api::{self, ApiError};
use crate::format;
use crate::session::use_session;
use crate::widgets::{Badge, CopyButton, Empty, ErrorNotice, Pager, loaded};

/// The Integrations list page (`/integrations`).
#[component]
pub fn Integrations() -> impl IntoView {
    let session = use_session();
    let cursor = query_param("cursor");
    let list = LocalResource::new(move || {
        let c = cursor.get();
        async move { api::get::<Page<IntegrationView>>(&href("/integrations", &[("cursor", c)])).await }
    });
    let adding = RwSignal::new(false);
    let created = RwSignal::new(None::<IntegrationSecret>);
    let now = format::now();

    view! {
        <div class="page-head">
            <div>
                <h1>"Integrations"</h1>
                <p class="sub">"Where customer events come from."</p>
            </div>
            <Show when=move || session.can(Role::Admin) && !adding.get()>
                <button type="button" class="button" on:click=move |_| { created.set(None); adding.set(true); }>
                    "Add integration"
                </button>
            </Show>
        </div>
        <Show when=move || adding.get()>
            <AddIntegration
                on_created=move |s| { created.set(Some(s)); adding.set(false); list.refetch(); }
                on_cancel=move || adding.set(false)
            />
        </Show>
        {move || created.get().map(|s| view! { <SecretPanel secret=s first_time=true/> })}
        {loaded(list, move |page: Page<IntegrationView>| {
            if page.items.is_empty() {
                return view! {
                    <Empty
                        title="No integrations yet"
                        hint=if session.can(Role::Admin) {
                            "Add your shop, WhatsApp number, tracking SDK or POS: each gets its own webhook URL and secret.".to_owned()
                        } else {
                            "An admin adds sources here; each gets its own webhook URL and secret.".to_owned()
                        }
                    />
                }.into_any();
            }
            let next_href = page.next_cursor.clone().map(|c| href("/integrations", &[("cursor", Some(c))]));
            view! {
                <div class="card table-wrap">
                    <table class="table" data-testid="integrations">
                        <thead>
                            <tr>
                                <th>"Name"</th>
                                <th>"Kind"</th>
                                <th>"Status"</th>
                                <th>"Last delivery"</th>
                                <th class="hide-phone">"Webhook URL"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {page.items.into_iter().map(|i| view! {
                                <tr>
                                    <td><a href=format!("/integrations/{}", i.id)>{i.name.clone()}</a></td>
                                    <td>{i.label.clone()}</td>
                                    <td>{status_badge(i.enabled)}</td>
                                    <td>{i.last_delivery_at.map(|t| format::ago(t, now)).unwrap_or_else(|| "never".into())}</td>
                                    <td class="hide-phone mono">{i.webhook_url.clone().unwrap_or_else(|| "—".into())}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <Pager on_later_page=cursor.get().is_some() first_href="/integrations".into() next_href/>
                </div>
            }.into_any()
        })}
    }
}

fn status_badge(enabled: bool) -> impl IntoView {
    if enabled {
        view! { <Badge text="enabled" tone="ok"/> }
    } else {
        view! { <Badge text="disabled" tone="muted"/> }
    }
}

/// The "add integration" form.
#[component]
fn AddIntegration(
    on_created: impl Fn(IntegrationSecret) + Copy + Send + Sync + 'static,
    on_cancel: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    // The kinds that deliver to ingest (CSV files are uploaded on their own page).
    let kinds = LocalResource::new(|| async {
        api::get::<Vec<SourceKindView>>("/sources")
            .await
            .map(|all| {
                all.into_iter()
                    .filter(|k| k.receives_deliveries)
                    .collect::<Vec<_>>()
            })
    });
    let kind = RwSignal::new(String::new());
    let name = RwSignal::new(String::new());
    let secret = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    // The selected kind: the one picked, else the first offered.
    let selected = move || {
        let all = kinds.get().and_then(Result::ok).unwrap_or_default();
        let picked = kind.get();
        all.iter()
            .find(|k| k.kind.as_str() == picked)
            .or_else(|| all.first())
            .cloned()
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(chosen) = selected() else {
            return;
        };
        busy.set(true);
        error.set(None);
        let body = CreateIntegrationRequest {
            kind: chosen.kind,
            name: name.get_untracked().trim().to_owned(),
            secret: Some(secret.get_untracked().trim().to_owned()).filter(|s| !s.is_empty()),
        };
        leptos::task::spawn_local(async move {
            match api::post::<_, IntegrationSecret>("/integrations", &body).await {
                Ok(s) => on_created(s),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    view! {
        <form class="card stack" on:submit=submit data-testid="add-integration">
            <h2>"Add integration"</h2>
            <div class="filters">
                <label>
                    "Kind"
                    <select bind:value=kind>
                        {move || {
                            kinds.get().and_then(Result::ok).unwrap_or_default().into_iter()
                                .map(|k| view! { <option value=k.kind.as_str()>{k.label}</option> })
                                .collect_view()
                        }}
                    </select>
                </label>
                <label class="search">
                    "Name"
                    <input type="text" required placeholder="e.g. Main web shop" bind:value=name/>
                </label>
            </div>
            {move || selected().and_then(|k| k.own_secret_hint.map(|hint| (k.secret_name, hint))).map(|(secret_name, hint)| view! {
                <label>
                    {format!("The {secret_name} from the platform (optional)")}
                    <input type="password" autocomplete="off" bind:value=secret/>
                    <small>{hint} " Leave empty to generate one."</small>
                </label>
            })}
            {move || kinds.get().and_then(Result::err).map(|error| view! { <ErrorNotice error/> })}
            {move || error.get().map(|error| view! { <ErrorNotice error/> })}
            <div class="row">
                <button type="submit" class="button" disabled=move || busy.get()>"Create"</button>
                <button type="button" class="button ghost" on:click=move |_| on_cancel()>"Cancel"</button>
            </div>
        </form>
    }
}

/// An integration's webhook URL and secret, with copy buttons and setup steps.
#[component]
fn SecretPanel(secret: IntegrationSecret, first_time: bool) -> impl IntoView {
    let i = secret.integration.clone();
    let url = i.webhook_url.clone().unwrap_or_default();
    view! {
        <section class="card stack" data-testid="integration-secret">
            <h2>{format!("{} — {}", i.label, i.name)}</h2>
            {first_time.then(|| view! {
                <p class="notice warn">"Copy the secret now: it is shown only this once. An admin can reveal or rotate it later."</p>
            })}
            <div>
                <small>"Webhook URL"</small>
                <div class="secret-box"><code>{url.clone()}</code><CopyButton text=url.clone()/></div>
            </div>
            <div>
                <small>{format!("Secret ({})", i.authentication)}</small>
                <div class="secret-box"><code data-testid="secret">{secret.secret.clone()}</code><CopyButton text=secret.secret.clone()/></div>
            </div>
            <h3>"Set up"</h3>
            <ol class="steps">{i.setup_steps.iter().map(|s| view! { <li>{s.clone()}</li> }).collect_view()}</ol>
        </section>
    }
}

/// One integration (`/integrations/:id`): settings, actions and the delivery log.
#[component]
pub fn IntegrationDetail() -> impl IntoView {
    let session = use_session();
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id")).unwrap_or_default());
    let integration = LocalResource::new(move || {
        let id = id.get();
        async move { api::get::<IntegrationView>(&format!("/integrations/{id}")).await }
    });
    let cursor = query_param("cursor");
    let deliveries = LocalResource::new(move || {
        let id = id.get();
        let c = cursor.get();
        async move {
            api::get::<Page<DeliveryLogEntry>>(&href(
                &format!("/integrations/{id}/deliveries"),
                &[("cursor", c)],
            ))
            .await
        }
    });
    let shown = RwSignal::new(None::<IntegrationSecret>);
    let message = RwSignal::new(None::<Result<String, ApiError>>);
    let busy = RwSignal::new(false);

    let run = move |what: &'static str| {
        let id = id.get_untracked();
        busy.set(true);
        message.set(None);
        leptos::task::spawn_local(async move {
            let result: Result<String, ApiError> = match what {
                "reveal" => api::get::<IntegrationSecret>(&format!("/integrations/{id}/secret"))
                    .await
                    .map(|s| {
                        shown.set(Some(s));
                        String::new()
                    }),
                "rotate" => api::post_empty::<IntegrationSecret>(&format!(
                    "/integrations/{id}/rotate-secret"
                ))
                .await
                .map(|s| {
                    shown.set(Some(s));
                    "New secret issued: the old one no longer works. Update the platform now."
                        .into()
                }),
                "test" => {
                    api::post_empty::<TestEventAccepted>(&format!("/integrations/{id}/test-event"))
                        .await
                        .map(|t| format!("Test event stored as {}.", t.source_event_id))
                }
                enable => {
                    let enabled = enable == "enable";
                    api::patch::<_, IntegrationView>(
                        &format!("/integrations/{id}"),
                        &UpdateIntegrationRequest { enabled },
                    )
                    .await
                    .map(|_| {
                        if enabled {
                            "Enabled: deliveries are accepted.".into()
                        } else {
                            "Disabled: deliveries are refused until you enable it again.".into()
                        }
                    })
                }
            };
            integration.refetch();
            deliveries.refetch();
            message.set(Some(result).filter(|r| !matches!(r, Ok(m) if m.is_empty())));
            busy.set(false);
        });
    };
    let confirm = |text: &str| {
        web_sys::window()
            .and_then(|w| w.confirm_with_message(text).ok())
            .unwrap_or(false)
    };

    view! {
        <div class="page-head">
            <div>
                <a href="/integrations">"← Integrations"</a>
                <h1>"Integration"</h1>
            </div>
        </div>
        {loaded(integration, move |i: IntegrationView| {
            let url = i.webhook_url.clone().unwrap_or_default();
            let enabled = i.enabled;
            view! {
                <section class="card stack" data-testid="integration">
                    <div class="row">
                        <h2 style="margin:0">{i.name.clone()}</h2>
                        <Badge text=i.label.clone() tone="info"/>
                        {status_badge(i.enabled)}
                        <span class="spacer"></span>
                        <small>{format!("Last delivery: {}", format::maybe_datetime(i.last_delivery_at))}</small>
                    </div>
                    {(!url.is_empty()).then(|| view! {
                        <div>
                            <small>"Webhook URL"</small>
                            <div class="secret-box"><code>{url.clone()}</code><CopyButton text=url.clone()/></div>
                        </div>
                    })}
                    <p><small>{format!("Authentication: {} · secret ends in …{}", i.authentication, i.secret_hint.trim_start_matches('…'))}</small></p>
                    <Show when=move || session.can(Role::Analyst)>
                    <div class="row" data-testid="integration-actions">
                        <button type="button" class="button ghost" disabled=move || busy.get() on:click=move |_| run("test")>"Send test event"</button>
                        <Show when=move || session.can(Role::Admin)>
                            <button type="button" class="button ghost" disabled=move || busy.get() on:click=move |_| run("reveal")>"Reveal secret"</button>
                            <button
                                type="button"
                                class="button ghost"
                                disabled=move || busy.get()
                                on:click=move |_| if confirm("Issue a new secret? The current one stops working at once.") { run("rotate") }
                            >
                                "Rotate secret"
                            </button>
                            {if enabled {
                                view! { <button type="button" class="button danger" disabled=move || busy.get() on:click=move |_| run("disable")>"Disable"</button> }.into_any()
                            } else {
                                view! { <button type="button" class="button ok" disabled=move || busy.get() on:click=move |_| run("enable")>"Enable"</button> }.into_any()
                            }}
                        </Show>
                    </div>
                    </Show>
                    {move || message.get().map(|m| match m {
                        Ok(text) => view! { <p class="notice ok" role="status">{text}</p> }.into_any(),
                        Err(error) => view! { <ErrorNotice error/> }.into_any(),
                    })}
                    <details>
                        <summary>"Setup steps"</summary>
                        <ol class="steps">{i.setup_steps.iter().map(|s| view! { <li>{s.clone()}</li> }).collect_view()}</ol>
                    </details>
                </section>
            }
        })}
        {move || shown.get().map(|s| view! { <SecretPanel secret=s first_time=false/> })}
        <section class="card table-wrap" style="margin-top:1rem">
            <h2>"Delivery log"</h2>
            {loaded(deliveries, move |page: Page<DeliveryLogEntry>| {
                if page.items.is_empty() {
                    return view! { <p class="muted">"No deliveries yet. Follow the setup steps, or send a test event."</p> }.into_any();
                }
                let base = format!("/integrations/{}", id.get_untracked());
                let next_href = page.next_cursor.clone().map(|c| href(&base, &[("cursor", Some(c))]));
                view! {
                    <table class="table compact" data-testid="deliveries">
                        <thead><tr><th>"When"</th><th>"Endpoint"</th><th>"Status"</th><th class="num">"Latency"</th><th>"Error"</th></tr></thead>
                        <tbody>
                            {page.items.into_iter().map(|d| view! {
                                <tr>
                                    <td>{format::datetime(d.at)}</td>
                                    <td class="mono">{d.endpoint.clone()}</td>
                                    <td><Badge text=d.status.to_string() tone=if (200..300).contains(&d.status) { "ok" } else { "bad" }/></td>
                                    <td class="num">{format!("{:.1} ms", d.latency_ms)}</td>
                                    <td>{d.error.clone().unwrap_or_default()}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <Pager on_later_page=cursor.get().is_some() first_href=base next_href/>
                }.into_any()
            })}
        </section>
    }
}
