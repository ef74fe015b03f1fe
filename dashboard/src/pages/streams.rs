//! Streams: a live view of the pipeline — per topic its length, dead letters and each
//! consumer group's pending entries and lag — with recent events scrolling in. Fed by
//! the gateway's server-sent events (`GET /streams/live`); dead letters of a topic can
//! be listed, and replayed by admins.

use std::collections::VecDeque;

use domain::api::{
    DlqEntry, Page, ReplayAccepted, Role, StreamEntry, StreamsOverview, live_events,
};
use futures::StreamExt;
use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::format;
use crate::session::use_session;
use crate::widgets::{Badge, ErrorNotice, JsonBlock, Loading, loaded};

/// Recent events kept on screen.
const FEED_LEN: usize = 50;

/// A one-line summary of an envelope: `kind · source · id`.
pub fn envelope_summary(e: &serde_json::Value) -> (String, String) {
    let text = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let kind = text("kind");
    let payload_type = e
        .get("payload")
        .and_then(|p| p.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let what = match (kind.as_str(), payload_type) {
        ("", "") => "entry".to_owned(),
        (k, "") => format::humanize(k),
        (_, t) => format::humanize(t),
    };
    let source = text("source");
    (what, source)
}

/// The Streams page (`/streams`).
#[component]
pub fn Streams() -> impl IntoView {
    let stats = RwSignal::new(None::<Result<StreamsOverview, ApiError>>);
    let feed = RwSignal::new(VecDeque::<StreamEntry>::new());
    let live = RwSignal::new(false);
    let dlq_topic = RwSignal::new(None::<String>);

    let (cancel_tx, cancel_rx) = futures::channel::oneshot::channel::<()>();
    let cancel_tx = std::sync::Mutex::new(Some(cancel_tx));
    on_cleanup(move || {
        if let Some(tx) = cancel_tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(());
        }
    });
    leptos::task::spawn_local(async move {
        stats.set(Some(api::get::<StreamsOverview>("/streams").await));
        // Start the feed with what already went through, newest first.
        for topic in ["events.normalized", "events.raw"] {
            if let Ok(page) =
                api::get::<Page<StreamEntry>>(&format!("/streams/{topic}/entries?limit=20")).await
                && !page.items.is_empty()
            {
                feed.set(page.items.into_iter().collect());
                break;
            }
        }
        let watch = follow(stats, feed, live);
        futures::pin_mut!(watch);
        let _ = futures::future::select(watch, cancel_rx).await;
        live.set(false);
    });

    view! {
        <div class="page-head">
            <div>
                <h1>"Streams"</h1>
                <p class="sub">"The event pipeline, live."</p>
            </div>
            <span class="row" data-testid="live">
                <span class="live-dot" class:off=move || !live.get()></span>
                {move || if live.get() { "live" } else { "not live (reload to reconnect)" }}
            </span>
        </div>
        {move || match stats.get() {
            None => view! { <Loading/> }.into_any(),
            Some(Err(error)) => view! { <ErrorNotice error/> }.into_any(),
            Some(Ok(s)) => view! {
                <section class="card table-wrap">
                    <h2>"Topics"</h2>
                    <table class="table" data-testid="topics">
                        <thead>
                            <tr>
                                <th>"Topic"</th>
                                <th class="num">"Length"</th>
                                <th class="num">"Dead letters"</th>
                                <th>"Consumer groups (consumers · pending · lag)"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {s.topics.into_iter().map(|t| {
                                let topic = t.topic.clone();
                                view! {
                                    <tr data-topic=t.topic.clone()>
                                        <td class="mono">{t.topic.clone()}</td>
                                        <td class="num">{format::count(t.length as i64)}</td>
                                        <td class="num">
                                            {if t.dlq_length > 0 {
                                                view! {
                                                    <button type="button" class="button small ghost" on:click=move |_| dlq_topic.set(Some(topic.clone()))>
                                                        <Badge text=format::count(t.dlq_length as i64) tone="bad"/>
                                                    </button>
                                                }.into_any()
                                            } else {
                                                view! { "0" }.into_any()
                                            }}
                                        </td>
                                        <td>
                                            {if t.groups.is_empty() {
                                                view! { <span class="muted">"no consumers yet"</span> }.into_any()
                                            } else {
                                                view! {
                                                    <div class="ids">
                                                        {t.groups.into_iter().map(|g| view! {
                                                            <span>
                                                                <b>{g.name.clone()}</b>
                                                                {format!(" · {} · {} pending · lag {}",
                                                                    g.consumers,
                                                                    format::count(g.pending as i64),
                                                                    g.lag.map(|l| format::count(l as i64)).unwrap_or_else(|| "?".into()))}
                                                            </span>
                                                        }).collect_view()}
                                                    </div>
                                                }.into_any()
                                            }}
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                    <small>{format!("Measured {}", format::datetime(s.at))}</small>
                </section>
            }.into_any(),
        }}
        {move || dlq_topic.get().map(|topic| view! { <DeadLetters topic on_close=move || dlq_topic.set(None)/> })}
        <section class="card" style="margin-top:1rem">
            <h2>"Recent events"</h2>
            {move || if feed.with(VecDeque::is_empty) {
                view! { <p class="muted">"Waiting for events… they appear here as they flow through the pipeline."</p> }.into_any()
            } else {
                ().into_any()
            }}
            <ul class="feed" data-testid="feed">
                <For each=move || feed.get() key=|e| (e.topic.clone(), e.entry_id.clone()) let:e>
                    {
                        let (what, source) = envelope_summary(&e.envelope);
                        view! {
                            <li>
                                <Badge text=e.topic.clone() tone="info"/>
                                <b>{what}</b>
                                <small>{format::humanize(&source)}</small>
                                <small class="mono">{e.entry_id.clone()}</small>
                            </li>
                        }
                    }
                </For>
            </ul>
        </section>
    }
}

/// Applies the live stream to the page until it ends.
async fn follow(
    stats: RwSignal<Option<Result<StreamsOverview, ApiError>>>,
    feed: RwSignal<VecDeque<StreamEntry>>,
    live: RwSignal<bool>,
) {
    let Ok(mut source) =
        gloo_net::eventsource::futures::EventSource::new(&api::url("/streams/live"))
    else {
        return;
    };
    let (Ok(ticks), Ok(entries)) = (
        source.subscribe(live_events::STATS),
        source.subscribe(live_events::ENTRY),
    ) else {
        return;
    };
    let mut events = futures::stream::select(ticks, entries);
    while let Some(Ok((name, message))) = events.next().await {
        live.set(true);
        let Some(text) = message.data().as_string() else {
            continue;
        };
        if name == live_events::STATS {
            if let Ok(s) = serde_json::from_str::<StreamsOverview>(&text) {
                stats.set(Some(Ok(s)));
            }
        } else if let Ok(e) = serde_json::from_str::<StreamEntry>(&text) {
            feed.update(|f| {
                f.push_front(e);
                f.truncate(FEED_LEN);
            });
        }
    }
    source.close();
}

/// The dead letters of one topic, with replay for admins.
#[component]
fn DeadLetters(topic: String, on_close: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let session = use_session();
    let path = format!("/streams/{topic}/dlq");
    let entries = LocalResource::new(move || {
        let path = path.clone();
        async move { api::get::<Page<DlqEntry>>(&path).await }
    });
    let message = RwSignal::new(None::<Result<String, ApiError>>);
    let replay = {
        let topic = topic.clone();
        move |entry_id: String| {
            let topic = topic.clone();
            leptos::task::spawn_local(async move {
                let r = api::post_empty::<ReplayAccepted>(&format!(
                    "/streams/{topic}/dlq/{entry_id}/replay"
                ))
                .await
                .map(|a| format!("Replayed as entry {}.", a.entry_id));
                message.set(Some(r));
                entries.refetch();
            });
        }
    };
    view! {
        <section class="card table-wrap" style="margin-top:1rem" data-testid="dlq">
            <div class="row">
                <h2 style="margin:0">{format!("Dead letters of {topic}")}</h2>
                <span class="spacer"></span>
                <button type="button" class="button small ghost" on:click=move |_| on_close()>"Close"</button>
            </div>
            {move || message.get().map(|m| match m {
                Ok(t) => view! { <p class="notice ok">{t}</p> }.into_any(),
                Err(error) => view! { <ErrorNotice error/> }.into_any(),
            })}
            {loaded(entries, move |page: Page<DlqEntry>| {
                let replay = replay.clone();
                view! {
                    <table class="table compact">
                        <thead><tr><th>"Entry"</th><th>"Group"</th><th class="num">"Deliveries"</th><th>"Error"</th><th></th></tr></thead>
                        <tbody>
                            {page.items.into_iter().map(|d| {
                                let replay = replay.clone();
                                let id = d.entry_id.clone();
                                view! {
                                    <tr>
                                        <td class="mono">{d.entry_id.clone()}</td>
                                        <td>{d.group.clone().unwrap_or_default()}</td>
                                        <td class="num">{d.deliveries.map(|n| n.to_string()).unwrap_or_default()}</td>
                                        <td>
                                            {d.error.clone().unwrap_or_default()}
                                            <details><summary>"Envelope"</summary><JsonBlock value=d.envelope.clone()/></details>
                                        </td>
                                        <td>
                                            <Show when=move || session.can(Role::Admin)>
                                                {
                                                    let replay = replay.clone();
                                                    let id = id.clone();
                                                    view! { <button type="button" class="button small" on:click=move |_| replay(id.clone())>"Replay"</button> }
                                                }
                                            </Show>
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }
            })}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_summarise_to_what_and_where() {
        let e = json!({"kind": "orders/create", "source": "shopify", "payload": {"type": "order_placed"}});
        assert_eq!(
            envelope_summary(&e),
            ("Order placed".into(), "shopify".into())
        );
        let e = json!({"kind": "message", "source": "twilio", "payload": {}});
        assert_eq!(envelope_summary(&e), ("Message".into(), "twilio".into()));
        assert_eq!(envelope_summary(&json!({})).0, "entry");
    }
}
