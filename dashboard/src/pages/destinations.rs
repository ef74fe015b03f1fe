//! Destinations: the CRMs and REST endpoints kept in sync with Customer 360. The list
//! shows each one's sync status (synced, pending, lag, error rate, dead letters, last
//! success); a destination's page adds its delivery log and dead letters, and the
//! actions the role allows: test the connection and resync (analysts), replay the dead
//! letters (admins). Destinations are created with `ctl destination add` or the API,
//! since their credentials are write-only.

use domain::api::{
    DeadLetterView, DeliveryView, DestinationQueued, DestinationTestResult, DestinationView, Role,
};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{self, ApiError};
use crate::format;
use crate::session::use_session;
use crate::widgets::{Badge, Empty, ErrorNotice, Kpi, loaded};

fn outcome_tone(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "ok",
        "partial" | "transient" => "warn",
        _ => "bad",
    }
}

/// The Destinations page (`/destinations`).
#[component]
pub fn Destinations() -> impl IntoView {
    let list =
        LocalResource::new(|| async { api::get::<Vec<DestinationView>>("/destinations").await });
    view! {
        <div class="page-head">
            <div>
                <h1>"Destinations"</h1>
                <p class="sub">"HubSpot, Salesforce and REST endpoints kept in sync with Customer 360."</p>
            </div>
        </div>
        {loaded(list, move |items: Vec<DestinationView>| {
            if items.is_empty() {
                return view! {
                    <Empty
                        title="No destinations yet"
                        hint="Add one with `ctl destination add` or POST /api/v1/destinations: its credentials are stored sealed and never shown again.".into()
                    />
                }.into_any();
            }
            view! {
                <div class="card table-wrap">
                    <table class="table" data-testid="destinations">
                        <thead>
                            <tr>
                                <th>"Name"</th>
                                <th>"Kind"</th>
                                <th class="num">"Synced"</th>
                                <th class="num">"Pending"</th>
                                <th class="num hide-phone">"Lag"</th>
                                <th class="num hide-phone">"Errors (1 h)"</th>
                                <th class="num">"Dead letters"</th>
                                <th class="hide-phone">"Last success"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {items.into_iter().map(|d| {
                                let s = d.status.clone();
                                view! {
                                    <tr>
                                        <td><a href=format!("/destinations/{}", d.id)>{d.name.clone()}</a>{(!d.enabled).then(|| view! { " " <Badge text="paused" tone="warn"/> })}</td>
                                        <td>{d.kind.to_string()}</td>
                                        <td class="num" data-testid="synced">{format::count(s.synced)}</td>
                                        <td class="num" data-testid="pending">{format::count(s.pending)}</td>
                                        <td class="num hide-phone">{format!("{:.0} s", s.lag_secs)}</td>
                                        <td class="num hide-phone">{format::percent(s.error_rate)}</td>
                                        <td class="num" data-testid="dead-letters">{format::count(s.dead_letters)}</td>
                                        <td class="hide-phone">{format::maybe_datetime(s.last_success_at)}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            }.into_any()
        })}
    }
}

/// One destination (`/destinations/:id`): status, actions, delivery log, dead letters.
#[component]
pub fn DestinationDetail() -> impl IntoView {
    let session = use_session();
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id")).unwrap_or_default());
    let destination = LocalResource::new(move || {
        let id = id.get();
        async move { api::get::<DestinationView>(&format!("/destinations/{id}")).await }
    });
    let deliveries = LocalResource::new(move || {
        let id = id.get();
        async move { api::get::<Vec<DeliveryView>>(&format!("/destinations/{id}/deliveries")).await }
    });
    let dead = LocalResource::new(move || {
        let id = id.get();
        async move { api::get::<Vec<DeadLetterView>>(&format!("/destinations/{id}/dead-letters")).await }
    });
    let message = RwSignal::new(None::<Result<String, ApiError>>);
    let busy = RwSignal::new(false);
    let run = move |what: &'static str| {
        let id = id.get_untracked();
        busy.set(true);
        message.set(None);
        leptos::task::spawn_local(async move {
            let result: Result<String, ApiError> = match what {
                "test" => {
                    api::post_empty::<DestinationTestResult>(&format!("/destinations/{id}/test"))
                        .await
                        .map(|t| {
                            if t.ok {
                                format!("Connection works: {}", t.message)
                            } else {
                                format!("The destination refused: {}", t.message)
                            }
                        })
                }
                "sync" => api::post_empty::<DestinationQueued>(&format!("/destinations/{id}/sync"))
                    .await
                    .map(|q| {
                        format!(
                            "{} profiles queued; only changed records are sent.",
                            q.queued
                        )
                    }),
                _ => api::post_empty::<DestinationQueued>(&format!("/destinations/{id}/replay"))
                    .await
                    .map(|q| format!("{} dead letters queued again.", q.queued)),
            };
            destination.refetch();
            deliveries.refetch();
            dead.refetch();
            message.set(Some(result));
            busy.set(false);
        });
    };
    view! {
        <div class="page-head">
            <div>
                <a href="/destinations">"← Destinations"</a>
                <h1>"Destination"</h1>
            </div>
        </div>
        {loaded(destination, move |d: DestinationView| {
            let s = d.status.clone();
            view! {
                <section class="card stack" data-testid="destination">
                    <div class="row">
                        <h2 style="margin:0">{d.name.clone()}</h2>
                        <Badge text=d.kind.to_string() tone="info"/>
                        <Badge text=d.mode.to_string() tone="info"/>
                        <span class="spacer"></span>
                        <small>{format!("Credentials: {} (write-only)", d.credential_names.join(", "))}</small>
                    </div>
                    <div class="kpis">
                        <Kpi label="Synced" value=format::count(s.synced) name="synced"/>
                        <Kpi label="Pending" value=format::count(s.pending) name="pending" hint=format!("oldest {:.0} s", s.lag_secs)/>
                        <Kpi label="Error rate" value=format::percent(s.error_rate) name="error-rate" hint="requests, last hour"/>
                        <Kpi label="Dead letters" value=format::count(s.dead_letters) name="dead-letters"/>
                        <Kpi label="Last success" value=format::maybe_datetime(s.last_success_at) name="last-success"/>
                    </div>
                    <details>
                        <summary>"Field mapping"</summary>
                        <table class="table compact">
                            <thead><tr><th>"Remote field"</th><th>"Customer 360 field"</th></tr></thead>
                            <tbody>{d.mapping.iter().map(|(k, v)| view! { <tr><td class="mono">{k.clone()}</td><td>{v.to_string()}</td></tr> }).collect_view()}</tbody>
                        </table>
                    </details>
                </section>
            }
        })}
        <Show when=move || session.can(Role::Analyst)>
            <div class="row" data-testid="destination-actions" style="margin-top:1rem">
                <button type="button" class="button ghost" disabled=move || busy.get() on:click=move |_| run("test")>"Test connection"</button>
                <button type="button" class="button ghost" disabled=move || busy.get() on:click=move |_| run("sync")>"Resync"</button>
                <Show when=move || session.can(Role::Admin)>
                    <button type="button" class="button" disabled=move || busy.get() on:click=move |_| run("replay")>"Replay dead letters"</button>
                </Show>
            </div>
        </Show>
        {move || message.get().map(|m| match m {
            Ok(text) => view! { <p class="notice ok" role="status" data-testid="destination-message">{text}</p> }.into_any(),
            Err(error) => view! { <ErrorNotice error/> }.into_any(),
        })}
        <section class="card table-wrap" style="margin-top:1rem">
            <h2>"Dead letters"</h2>
            {loaded(dead, move |items: Vec<DeadLetterView>| {
                if items.is_empty() {
                    return view! { <p class="muted">"None: every record the destination was sent, it accepted (or is still retrying)."</p> }.into_any();
                }
                view! {
                    <table class="table compact" data-testid="destination-dead-letters">
                        <thead><tr><th>"When"</th><th>"Profile"</th><th>"Operation"</th><th>"Remote error"</th></tr></thead>
                        <tbody>
                            {items.into_iter().map(|d| view! {
                                <tr>
                                    <td>{format::datetime(d.failed_at)}</td>
                                    <td><a class="mono" href=format!("/profiles/{}", d.profile_id)>{d.profile_id.to_string()}</a></td>
                                    <td>{d.operation.clone()}</td>
                                    <td>{d.error.clone()}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            })}
        </section>
        <section class="card table-wrap" style="margin-top:1rem">
            <h2>"Delivery log"</h2>
            {loaded(deliveries, move |items: Vec<DeliveryView>| {
                if items.is_empty() {
                    return view! { <p class="muted">"No requests yet."</p> }.into_any();
                }
                view! {
                    <table class="table compact" data-testid="destination-deliveries">
                        <thead><tr><th>"When"</th><th>"Request"</th><th class="num">"Records"</th><th>"Outcome"</th><th class="num">"Time"</th><th>"Response"</th></tr></thead>
                        <tbody>
                            {items.into_iter().map(|d| view! {
                                <tr>
                                    <td>{format::datetime(d.at)}</td>
                                    <td class="mono">{d.request.clone()}</td>
                                    <td class="num">{d.records}</td>
                                    <td><Badge text=d.outcome.clone() tone=outcome_tone(&d.outcome)/></td>
                                    <td class="num">{format!("{} ms", d.duration_ms)}</td>
                                    <td>{d.response.clone()}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            })}
        </section>
    }
}
