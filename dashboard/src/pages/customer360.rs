//! Customer 360: everything known about one person on one page — who they are (best
//! identifiers, segment, churn probability with its reasons, predicted and realised
//! lifetime value, orders, first/last seen, channels), every identifier with where it
//! came from, marketing consent per channel (status, source, when; analysts record a
//! decision), recent WhatsApp messages in and out with their delivery status, category
//! affinity, purchases, browsing, the full timeline, recommendations, and the merges
//! that made the profile (with Unmerge for those allowed to).
//!
//! A merged-away id still works: the gateway answers with the survivor, the page says
//! so and moves the URL to the survivor's.

use domain::api::{
    Accepted, ConsentAccepted, ConsentUpdate, MergeLogEntry, ModelTask, Page, ProfileView, Role,
    TimelineEvent,
};
use domain::consent::{ConsentEntry, ConsentStatus};
use domain::identifier::is_order_reference;
use domain::profile::{Customer360, PredictionSummary, ProfileIdentifier};
use domain::profile::{MessageDirection, MessageEntry};
use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_navigate, use_params_map};
use uuid_js::Uuid;

use super::profiles::churn_tone;
use crate::api::{self, ApiError};
use crate::charts::HBars;
use crate::format;
use crate::session::use_session;
use crate::widgets::{Badge, ErrorNotice, Loading, loaded};

/// The Customer 360 page (`/profiles/:id`).
#[component]
pub fn Customer360Page() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id")).unwrap_or_default());
    let view = LocalResource::new(move || {
        let id = id.get();
        async move {
            if Uuid::parse_str(&id).is_err() {
                return Err(ApiError::Status {
                    status: 404,
                    code: "not_found".into(),
                    message: format!("“{id}” is not a profile id."),
                });
            }
            api::get::<ProfileView>(&format!("/profiles/{id}")).await
        }
    });
    let navigate = use_navigate();
    // A merged-away id: show the survivor under its own URL (replacing the history
    // entry, so Back does not bounce).
    Effect::new(move |_| {
        if let Some(Ok(v)) = view.get()
            && let Some(survivor) = v.merged_into
            && id.get_untracked() != survivor.to_string()
        {
            navigate(
                &format!("/profiles/{survivor}?merged_from={}", v.requested_id),
                NavigateOptions {
                    replace: true,
                    ..Default::default()
                },
            );
        }
    });
    let merged_from = super::query_param("merged_from");

    view! {
        <div class="page-head">
            <div>
                <a href="/profiles">"← Profiles"</a>
                <h1>"Customer 360"</h1>
            </div>
        </div>
        {move || merged_from.get().map(|from| view! {
            <p class="notice info">
                {format!("Profile {from} was merged into this one; its identifiers, orders and events are shown here.")}
            </p>
        })}
        {loaded(view, move |v: ProfileView| {
            let refresh = move || view.refetch();
            view! { <Profile c=v.profile refresh/> }
        })}
    }
}

/// The identifiers table's rows: a person's own identifiers by strength, then the
/// merger's order references.
fn identifier_rows(ids: &[ProfileIdentifier]) -> Vec<ProfileIdentifier> {
    let mut rows = ids.to_vec();
    rows.sort_by_key(|i| {
        (
            is_order_reference(i.kind, &i.value),
            std::cmp::Reverse(i.kind.priority()),
            i.first_seen_at,
        )
    });
    rows
}

/// The latest prediction of `task`.
fn prediction(c: &Customer360, task: ModelTask) -> Option<&PredictionSummary> {
    c.predictions.iter().find(|p| p.task == task)
}

/// The reasons a churn prediction gives, as lines of text. Accepts a list of strings
/// or of objects naming a feature (with an optional contribution).
pub fn reasons(details: &serde_json::Value) -> Vec<String> {
    let list = details
        .get("reasons")
        .or_else(|| details.get("top_reasons"))
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|r| match r {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => {
                let text = ["reason", "description", "label", "feature"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(|v| v.as_str()))?;
                let weight = ["contribution", "impact", "value", "weight"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(|v| v.as_f64()));
                Some(match weight {
                    Some(w) => format!("{} ({w:+.2})", format::humanize(text)),
                    None => format::humanize(text),
                })
            }
            _ => None,
        })
        .take(5)
        .collect()
}

#[component]
fn Profile(c: Customer360, refresh: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let session = use_session();
    let now = format::now();
    let id = c.profile_id;
    let name = c
        .display_name
        .clone()
        .unwrap_or_else(|| "Unnamed profile".into());
    let currency = c.currency.clone();
    let churn = prediction(&c, ModelTask::Churn).cloned();
    let ltv = prediction(&c, ModelTask::Ltv).cloned();
    let segment = prediction(&c, ModelTask::Segment).and_then(|p| p.label.clone());
    let churn_reasons = churn
        .as_ref()
        .map(|p| reasons(&p.details))
        .unwrap_or_default();
    let best = super::profiles::best_identifiers(
        &c.identifiers
            .iter()
            .map(|i| domain::Identifier {
                kind: i.kind,
                value: i.value.clone(),
            })
            .collect::<Vec<_>>(),
        3,
    );
    let affinity: Vec<(String, f64, String)> = {
        let mut a: Vec<(String, f64)> = c.category_affinity.clone().into_iter().collect();
        a.sort_by(|x, y| y.1.total_cmp(&x.1));
        a.into_iter()
            .take(8)
            .map(|(k, v)| (k, v, format::percent(v)))
            .collect()
    };

    view! {
        <section class="c360-head">
            <div class="card">
                <div class="row">
                    <h2 class="profile-name" data-testid="profile-name">{name}</h2>
                    {segment.clone().map(|s| view! { <Badge text=s tone="info"/> })}
                    {churn.as_ref().and_then(|p| p.score).map(|s| {
                        let band = domain::api::ChurnBand::of(s);
                        view! { <Badge text=format!("{} churn risk", format::humanize(band.as_str())) tone=churn_tone(band)/> }
                    })}
                </div>
                <div class="ids">
                    {best.into_iter().map(|i| view! {
                        <span><small>{format::identifier_kind(i.kind)}": "</small>{i.value}</span>
                    }).collect_view()}
                </div>
                <dl class="facts" style="margin-top:1rem">
                    <div>
                        <dt>"Churn probability"</dt>
                        <dd data-testid="churn">{churn.as_ref().and_then(|p| p.score).map(format::percent).unwrap_or_else(|| "not scored".into())}</dd>
                    </div>
                    <div>
                        <dt>"Predicted LTV"</dt>
                        <dd>{ltv.as_ref().and_then(|p| p.score).map(|s| format::money(rust_decimal::Decimal::from_f64_retain(s).unwrap_or_default(), currency.as_deref())).unwrap_or_else(|| "not scored".into())}</dd>
                    </div>
                    <div>
                        <dt>"Realised LTV"</dt>
                        <dd data-testid="ltv">{format::money(c.lifetime_value, currency.as_deref())}</dd>
                    </div>
                    <div>
                        <dt>"Orders"</dt>
                        <dd data-testid="orders">{format::count(c.total_orders)}</dd>
                    </div>
                    <div>
                        <dt>"Average order"</dt>
                        <dd>{format::money(c.average_order_value, currency.as_deref())}</dd>
                    </div>
                    <div>
                        <dt>"First seen"</dt>
                        <dd>{format::maybe_datetime(c.first_seen_at)}</dd>
                    </div>
                    <div>
                        <dt>"Last seen"</dt>
                        <dd>{c.last_seen_at.map(|t| format::ago(t, now)).unwrap_or_else(|| "—".into())}</dd>
                    </div>
                    <div>
                        <dt>"Channels"</dt>
                        <dd data-testid="channels">{c.channels.iter().map(|ch| format::channel(*ch)).collect::<Vec<_>>().join(", ")}</dd>
                    </div>
                </dl>
                {(!churn_reasons.is_empty()).then(|| view! {
                    <h3>"Why this churn risk"</h3>
                    <ul class="reasons">{churn_reasons.into_iter().map(|r| view! { <li>{r}</li> }).collect_view()}</ul>
                })}
                <Show when=move || session.can(Role::Admin)>
                    <AdminActions id/>
                </Show>
            </div>
            <div class="card">
                <h2>"Category affinity"</h2>
                {if affinity.is_empty() {
                    view! { <p class="muted">"No product activity yet."</p> }.into_any()
                } else {
                    view! { <HBars label="Category affinity".into() rows=affinity/> }.into_any()
                }}
                <h2 style="margin-top:1rem">"Recommended products"</h2>
                {if c.recommendations.is_empty() {
                    view! { <p class="muted">"No recommendations for this profile yet: they appear once the recommendation model (task recommend) has passed its checks and scored it."</p> }.into_any()
                } else {
                    view! {
                        <ol class="steps" data-testid="recommendations">
                            {c.recommendations.iter().map(|r| view! {
                                <li>{r.name.clone()} " " <small>{r.category.clone().unwrap_or_default()}</small>
                                    <br/><small class="muted">{r.reason.clone().unwrap_or_default()}</small></li>
                            }).collect_view()}
                        </ol>
                    }.into_any()
                }}
            </div>
        </section>

        <section class="card table-wrap" style="margin-top:1rem">
            <h2>"Identifiers"</h2>
            <table class="table compact" data-testid="identifiers">
                <thead>
                    <tr>
                        <th>"Kind"</th>
                        <th>"Value"</th>
                        <th>"Source"</th>
                        <th class="hide-phone">"First seen"</th>
                        <th class="hide-phone">"Last seen"</th>
                        <th></th>
                    </tr>
                </thead>
                <tbody>
                    {identifier_rows(&c.identifiers).into_iter().map(|i| view! {
                        <tr
                            data-kind=if is_order_reference(i.kind, &i.value) { "order_reference" } else { i.kind.as_str() }
                            data-source=i.source.map(|s| s.as_str()).unwrap_or_default()
                        >
                            <td>{if is_order_reference(i.kind, &i.value) { "Order reference" } else { format::identifier_kind(i.kind) }}</td>
                            <td class="mono">{i.value.clone()}</td>
                            <td>{i.source.map(|s| format::humanize(s.as_str())).unwrap_or_else(|| "—".into())}</td>
                            <td class="hide-phone">{format::datetime(i.first_seen_at)}</td>
                            <td class="hide-phone">{format::ago(i.last_seen_at, now)}</td>
                            <td>{i.suspect.then(|| view! { <span title="Seen with many different people (a shop's counter phone, a shared device): kept, but never used to merge."><Badge text="shared — not used to merge" tone="warn"/></span> })}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>

        <section class="grid two">
            <div class="card table-wrap">
                <h2>"Consent"</h2>
                <ConsentTable id entries=c.consent.clone() refresh/>
            </div>
            <div class="card table-wrap">
                <h2>"Recent messages"</h2>
                <Messages messages=c.recent_messages.clone()/>
            </div>
        </section>

        <section class="grid two">
            <div class="card table-wrap">
                <h2>"Purchase history"</h2>
                {if c.purchase_history.is_empty() {
                    view! { <p class="muted">"No orders yet."</p> }.into_any()
                } else {
                    view! {
                        <table class="table compact" data-testid="purchases">
                            <thead><tr><th>"Placed"</th><th>"Order"</th><th>"Channel"</th><th>"Items"</th><th class="num">"Total"</th></tr></thead>
                            <tbody>
                                {c.purchase_history.iter().map(|o| {
                                    let items = o.items.iter().map(|i| format!("{} × {}", i.qty, i.name)).collect::<Vec<_>>().join(", ");
                                    let status = format!("{:?}", o.status).to_lowercase();
                                    view! {
                                        <tr>
                                            <td>{format::date(o.placed_at)}</td>
                                            <td class="mono">{o.order_id.clone()} " " {(status != "placed").then(|| view! { <Badge text=format::humanize(&status)/> })}</td>
                                            <td>{format::channel(o.channel)}{o.store.clone().map(|s| format!(" · {s}"))}</td>
                                            <td>{items}</td>
                                            <td class="num">{format::money(o.total, Some(&o.currency))}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any()
                }}
            </div>
            <div class="card">
                <h2>"Browsing history"</h2>
                {if c.browsing_history.is_empty() {
                    view! { <p class="muted">"No browsing or cart activity yet."</p> }.into_any()
                } else {
                    view! {
                        <ul class="timeline">
                            {c.browsing_history.iter().map(|b| {
                                let what = b.name.clone().or_else(|| b.url.clone()).or_else(|| b.sku.clone()).unwrap_or_default();
                                view! {
                                    <li>
                                        <span class="when">{format::ago(b.occurred_at, now)}</span>
                                        <span>
                                            <b>{format::humanize(&serde_json::to_value(b.event_type).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())}</b>
                                            " " {what} " " <small>{b.category.clone().unwrap_or_default()}</small>
                                        </span>
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                    }.into_any()
                }}
            </div>
        </section>

        <section class="grid two">
            <div class="card">
                <h2>"Timeline"</h2>
                <Timeline id/>
            </div>
            <div class="card">
                <h2>"Merge history"</h2>
                <MergeHistory id refresh/>
            </div>
        </section>
    }
}

/// Marketing consent per channel; analysts and admins record a decision (it flows
/// through the pipeline, so the page re-reads the profile until it shows).
#[component]
fn ConsentTable(
    id: Uuid,
    entries: Vec<ConsentEntry>,
    refresh: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let session = use_session();
    let now = format::now();
    let status = RwSignal::new(None::<Result<String, ApiError>>);
    let record = move |channel: domain::consent::ConsentChannel, to: ConsentStatus| {
        status.set(Some(Ok("Recording…".into())));
        leptos::task::spawn_local(async move {
            let body = ConsentUpdate {
                channel,
                status: to,
                source: Some("dashboard".into()),
            };
            match api::put::<_, ConsentAccepted>(&format!("/profiles/{id}/consent"), &body).await {
                Ok(_) => {
                    // The merger applies it asynchronously: re-read until it shows.
                    for _ in 0..20 {
                        gloo_timers::future::TimeoutFuture::new(500).await;
                        if let Ok(v) = api::get::<ProfileView>(&format!("/profiles/{id}")).await
                            && v.profile.consent.iter().any(|c| {
                                c.channel == channel && c.status.as_deref() == Some(to.as_str())
                            })
                        {
                            status.set(None);
                            refresh();
                            return;
                        }
                    }
                    status.set(Some(Ok(
                        "Recorded; the pipeline has not applied it yet.".into()
                    )));
                }
                Err(e) => status.set(Some(Err(e))),
            }
        });
    };
    let can_write = session.can(Role::Analyst);
    view! {
        <table class="table compact" data-testid="consent">
            <thead><tr><th>"Channel"</th><th>"Status"</th><th>"Source"</th><th>"When"</th><th></th></tr></thead>
            <tbody>
                {entries.into_iter().map(|e| {
                    let channel = e.channel;
                    let (text, tone) = match e.status.as_deref() {
                        None => ("not recorded".to_owned(), "muted"),
                        Some(s) if e.subscribed => (format::humanize(s), "ok"),
                        Some(s) => (format::humanize(s), "warn"),
                    };
                    let next = if e.subscribed { ConsentStatus::Unsubscribed } else { ConsentStatus::Subscribed };
                    view! {
                        <tr data-channel=channel.as_str() data-status=e.status.clone().unwrap_or_default()>
                            <td>{consent_channel(channel)}</td>
                            <td><Badge text=text tone/></td>
                            <td>{e.source.as_deref().map(consent_source).unwrap_or_else(|| "—".into())}</td>
                            <td>{e.updated_at.map(|t| view! { <span title=format::datetime(t)>{format::ago(t, now)}</span> })}</td>
                            <td>{can_write.then(|| view! {
                                <button type="button" class="button small ghost" data-action=next.as_str()
                                    on:click=move |_| record(channel, next)>
                                    {if next == ConsentStatus::Subscribed { "Opt in" } else { "Opt out" }}
                                </button>
                            })}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        {move || status.get().map(|s| match s {
            Ok(m) => view! { <small class="muted">{m}</small> }.into_any(),
            Err(error) => view! { <ErrorNotice error/> }.into_any(),
        })}
    }
}

/// A consent channel's label.
fn consent_channel(c: domain::consent::ConsentChannel) -> &'static str {
    match c {
        domain::consent::ConsentChannel::Whatsapp => "WhatsApp",
        domain::consent::ConsentChannel::Email => "E-mail",
        domain::consent::ConsentChannel::Sms => "SMS",
    }
}

/// Where a consent came from, in words.
pub fn consent_source(source: &str) -> String {
    match source {
        domain::consent::SOURCE_WHATSAPP_INBOUND => "WhatsApp message".into(),
        domain::consent::SOURCE_WHATSAPP_KEYWORD => "WhatsApp reply (keyword)".into(),
        "api" => "API".into(),
        "csv" => "CSV import".into(),
        other => match other.strip_prefix("api:") {
            Some(rest) => format!("API ({rest})"),
            None => format::humanize(other),
        },
    }
}

/// Recent messages in and out, newest first, with their delivery status.
#[component]
fn Messages(messages: Vec<MessageEntry>) -> impl IntoView {
    let now = format::now();
    if messages.is_empty() {
        return view! { <p class="muted">"No messages yet."</p> }.into_any();
    }
    view! {
        <ul class="timeline" data-testid="messages">
            {messages.into_iter().map(|m| {
                let (arrow, who) = match m.direction {
                    MessageDirection::Inbound => ("←", "Received"),
                    MessageDirection::Outbound => ("→", "Sent"),
                };
                let status = m.status.clone().unwrap_or_default();
                let tone = match status.as_str() {
                    "failed" | "undelivered" => "bad",
                    "delivered" | "read" | "received" => "ok",
                    _ => "info",
                };
                view! {
                    <li data-direction=m.direction.as_str() data-status=status.clone()>
                        <span class="when" title=format::datetime(m.at)>{format::ago(m.at, now)}</span>
                        <span>
                            <b>{arrow} " " {who}</b> " " <Badge text=format::channel(m.channel)/> " "
                            {(m.direction == MessageDirection::Outbound).then(|| view! { <Badge text=format::humanize(&status) tone/> })}
                            {m.error_code.clone().map(|c| view! { " " <small class="notice error">{format!("error {c}")}</small> })}
                            {m.body.clone().map(|b| view! { <br/><small>{b}</small> })}
                        </span>
                    </li>
                }
            }).collect_view()}
        </ul>
    }.into_any()
}

/// The profile's events, newest first, with "Show older events".
#[component]
fn Timeline(id: Uuid) -> impl IntoView {
    let events = RwSignal::new(Vec::<TimelineEvent>::new());
    let cursor = RwSignal::new(None::<String>);
    let state = RwSignal::new(Some(Ok::<(), ApiError>(())));
    let loaded_once = RwSignal::new(false);
    let load = move || {
        state.set(None);
        leptos::task::spawn_local(async move {
            let path = match cursor.get_untracked() {
                Some(c) => api::with_query(&format!("/profiles/{id}/timeline"), &[("cursor", c)]),
                None => format!("/profiles/{id}/timeline"),
            };
            match api::get::<Page<TimelineEvent>>(&path).await {
                Ok(page) => {
                    events.update(|e| e.extend(page.items));
                    cursor.set(page.next_cursor);
                    state.set(Some(Ok(())));
                }
                Err(e) => state.set(Some(Err(e))),
            }
            loaded_once.set(true);
        });
    };
    load();
    let now = format::now();
    view! {
        <ul class="timeline" data-testid="timeline">
            <For each=move || events.get() key=|e| e.event_id let:e>
                <li>
                    <span class="when" title=format::datetime(e.occurred_at)>{format::ago(e.occurred_at, now)}</span>
                    <span>
                        <b>{format::humanize(&serde_json::to_value(e.event_type).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())}</b>
                        " " <Badge text=format::channel(e.channel)/> " "
                        <small>{format::humanize(e.source.as_str())}</small>
                        {e.order.as_ref().map(|o| view! { " " <span>{format::money(o.total, Some(&o.currency))}</span> })}
                        {e.name.clone().map(|n| view! { " " <small>{n}</small> })}
                    </span>
                </li>
            </For>
        </ul>
        {move || match state.get() {
            None => view! { <Loading/> }.into_any(),
            Some(Err(error)) => view! { <ErrorNotice error/> }.into_any(),
            Some(Ok(())) if loaded_once.get() && events.with(Vec::is_empty) => view! { <p class="muted">"No events yet."</p> }.into_any(),
            Some(Ok(())) => cursor.get().is_some().then(|| view! {
                <button type="button" class="button ghost small" on:click=move |_| load()>"Show older events"</button>
            }).into_any(),
        }}
    }
}

/// Merges that involved the profile, with Unmerge for analysts and admins.
#[component]
fn MergeHistory(id: Uuid, refresh: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let session = use_session();
    let merges = LocalResource::new(move || async move {
        api::get::<Page<MergeLogEntry>>(&format!("/profiles/{id}/merges")).await
    });
    view! {
        {loaded(merges, move |page: Page<MergeLogEntry>| {
            if page.items.is_empty() {
                return view! { <p class="muted">"This profile was never merged with another."</p> }.into_any();
            }
            view! {
                <table class="table compact" data-testid="merge-history">
                    <thead><tr><th>"When"</th><th>"Rule"</th><th>"Absorbed"</th><th></th></tr></thead>
                    <tbody>
                        {page.items.into_iter().map(|m| view! {
                            <MergeRow m can_unmerge=session.can(Role::Analyst) on_done=move || { merges.refetch(); refresh(); }/>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        })}
    }
}

/// One merge of the history, with its Unmerge button.
#[component]
pub fn MergeRow(
    /// The merge.
    m: MergeLogEntry,
    /// Whether the signed-in role may undo it.
    can_unmerge: bool,
    /// Called once the merger has undone it.
    on_done: impl Fn() + Copy + Send + Sync + 'static,
    /// Also show the survivor and the identifiers that matched (the merge log).
    #[prop(optional)]
    detailed: bool,
) -> impl IntoView {
    let status = RwSignal::new(None::<Result<String, ApiError>>);
    let merge_id = m.id;
    let unmerge = move |_| {
        let confirmed = web_sys::window()
            .and_then(|w| w.confirm_with_message("Undo this merge? The absorbed profiles get their identifiers, orders and events back.").ok())
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        status.set(Some(Ok("Unmerge requested…".into())));
        leptos::task::spawn_local(async move {
            match api::post_empty::<Accepted>(&format!("/merges/{merge_id}/unmerge")).await {
                Ok(_) => {
                    // The merger applies it asynchronously: watch the merge until it is undone.
                    for _ in 0..40 {
                        gloo_timers::future::TimeoutFuture::new(500).await;
                        if let Ok(e) =
                            api::get::<MergeLogEntry>(&format!("/merges/{merge_id}")).await
                            && e.undone_at.is_some()
                        {
                            status.set(Some(Ok("Undone".into())));
                            on_done();
                            return;
                        }
                    }
                    status.set(Some(Ok(
                        "Requested; the merger has not applied it yet.".into()
                    )));
                }
                Err(e) => status.set(Some(Err(e))),
            }
        });
    };
    let absorbed = m.absorbed_ids.clone();
    let survivor = m.survivor_id;
    let matched = super::merges::matched_lines(&m.matched_identifiers);
    view! {
        <tr data-merge-id=m.id.to_string()>
            <td>{format::datetime(m.created_at)}</td>
            <td>{format::humanize(m.rule.as_str())}<br/><small>{m.actor.clone()}</small></td>
            {detailed.then(|| view! {
                <td><a class="mono" href=format!("/profiles/{survivor}")>{short_id(survivor)}</a></td>
            })}
            <td>
                <div class="ids">
                    {absorbed.into_iter().map(|a| view! { <a class="mono" href=format!("/profiles/{a}")>{short_id(a)}</a> }).collect_view()}
                </div>
            </td>
            {detailed.then(|| view! {
                <td class="hide-phone"><div class="ids">{matched.into_iter().map(|l| view! { <span>{l}</span> }).collect_view()}</div></td>
            })}
            <td>
                {match m.undone_at {
                    Some(t) => view! { <Badge text=format!("undone {}", format::date(t))/> }.into_any(),
                    None if can_unmerge => view! {
                        {move || match status.get() {
                            None => view! { <button type="button" class="button small ghost" on:click=unmerge>"Unmerge"</button> }.into_any(),
                            Some(Ok(s)) => view! { <small>{s}</small> }.into_any(),
                            Some(Err(e)) => view! { <small class="notice error">{e.to_string()}</small> }.into_any(),
                        }}
                    }.into_any(),
                    None => ().into_any(),
                }}
            </td>
        </tr>
    }
}

/// The first characters of a profile id, enough to tell profiles apart in a list.
fn short_id(id: Uuid) -> String {
    format!("{}…", &id.simple().to_string()[..8])
}

/// Admin-only: GDPR export and erasure.
#[component]
fn AdminActions(id: Uuid) -> impl IntoView {
    let status = RwSignal::new(None::<Result<String, ApiError>>);
    let erase = move |_| {
        let confirmed = web_sys::window()
            .and_then(|w| w.confirm_with_message("Erase this person? Their events, identifiers, orders and predictions are deleted and their identifiers are never ingested again. This cannot be undone.").ok())
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        leptos::task::spawn_local(async move {
            status.set(Some(
                api::post_empty::<Accepted>(&format!("/profiles/{id}/erase"))
                    .await
                    .map(|_| {
                        "Erasure requested: the profile disappears once the merger has applied it."
                            .into()
                    }),
            ));
        });
    };
    view! {
        <div class="row" style="margin-top:1rem" data-testid="admin-actions">
            <a class="button small ghost" href=api::url(&format!("/profiles/{id}/export")) download=format!("profile-{id}.json")>"Export data (GDPR)"</a>
            <button type="button" class="button small danger" on:click=erase>"Erase profile"</button>
            {move || status.get().map(|s| match s {
                Ok(m) => view! { <span class="notice ok">{m}</span> }.into_any(),
                Err(error) => view! { <ErrorNotice error/> }.into_any(),
            })}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn churn_reasons_read_strings_and_feature_objects() {
        assert_eq!(
            reasons(&json!({"reasons": ["No order in 90 days", "Fewer visits"]})),
            ["No order in 90 days", "Fewer visits"]
        );
        assert_eq!(
            reasons(
                &json!({"top_reasons": [{"feature": "days_since_last_order", "contribution": 0.42}]})
            ),
            ["Days since last order (+0.42)"]
        );
        assert!(reasons(&json!({})).is_empty());
        assert!(reasons(&json!({"reasons": [1, null]})).is_empty());
    }
}
