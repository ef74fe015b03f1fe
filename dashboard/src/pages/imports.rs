//! CSV upload: choose a file and what it holds, check the preview of its first rows
//! and the column mapping, upload, watch the progress bar fed by the server's progress
//! stream (`GET /imports/{id}/events`, server-sent events), then read the per-row
//! errors. Past imports are listed underneath; `?import=<id>` shows one (so a reload
//! during an import comes back to its progress).
//!
//! The file is read in the browser only for the preview and its row count (the
//! denominator of the bar); the upload itself streams to the gateway, which never
//! holds the file in memory either.

use domain::api::{
    CsvImportAccepted, CsvImportKind, CsvImportRowError, CsvImportStatus, CsvImportView, Page,
    Role, import_events,
};
use futures::StreamExt;
use leptos::prelude::*;
use leptos_router::hooks::use_navigate;
use wasm_bindgen::JsCast;

use super::{href, query_param};
use crate::api::{self, ApiError};
use crate::csv_preview::{self, Preview};
use crate::format;
use crate::session::use_session;
use crate::widgets::{Badge, ErrorNotice, Pager, loaded};

const KINDS: [(CsvImportKind, &str); 3] = [
    (CsvImportKind::Customers, "Customers (one per row)"),
    (
        CsvImportKind::Orders,
        "Orders (one per row, or one row per line)",
    ),
    (CsvImportKind::OrderLines, "Order lines (one line per row)"),
];

/// The CSV upload page (`/imports`).
#[component]
pub fn Imports() -> impl IntoView {
    let session = use_session();
    let current = query_param("import");
    let cursor = query_param("cursor");
    // Rows of the file uploaded from this page, for the progress bar's denominator.
    let expected_rows = RwSignal::new(None::<(String, usize)>);
    let history = LocalResource::new(move || {
        let c = cursor.get();
        // Refresh the list when the shown import changes (a new upload).
        current.track();
        async move { api::get::<Page<CsvImportView>>(&href("/imports", &[("cursor", c)])).await }
    });

    view! {
        <div class="page-head">
            <div>
                <h1>"CSV upload"</h1>
                <p class="sub">"Bring in customers and orders from exports of shops, tills and spreadsheets."</p>
            </div>
        </div>
        <Show
            when=move || session.can(Role::Analyst)
            fallback=|| view! { <p class="notice info">"Your role can see imports but not start them; ask an analyst or admin to upload files."</p> }
        >
            <UploadForm expected_rows/>
        </Show>
        {move || current.get().map(|id| {
            let rows = expected_rows.with(|e| e.as_ref().filter(|(i, _)| *i == id).map(|(_, n)| *n));
            view! { <ImportProgress id rows/> }
        })}
        <section class="card table-wrap" style="margin-top:1rem">
            <h2>"Recent imports"</h2>
            {loaded(history, move |page: Page<CsvImportView>| {
                if page.items.is_empty() {
                    return view! { <p class="muted">"No imports yet. Upload a customers or orders export above."</p> }.into_any();
                }
                let next_href = page.next_cursor.clone().map(|c| href("/imports", &[("cursor", Some(c))]));
                view! {
                    <table class="table compact" data-testid="imports">
                        <thead><tr><th>"Started"</th><th>"File"</th><th>"Kind"</th><th>"Status"</th><th class="num">"Rows"</th><th class="num">"Imported"</th><th class="num">"Errors"</th></tr></thead>
                        <tbody>
                            {page.items.into_iter().map(|i| view! {
                                <tr>
                                    <td>{format::datetime(i.started_at)}</td>
                                    <td><a href=href("/imports", &[("import", Some(i.id.to_string()))])>{i.filename.clone()}</a></td>
                                    <td>{format::humanize(i.kind.as_str())}</td>
                                    <td>{status_badge(i.status)}</td>
                                    <td class="num">{format::count(i.total_rows)}</td>
                                    <td class="num">{format::count(i.imported_rows)}</td>
                                    <td class="num">{format::count(i.error_rows)}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <Pager on_later_page=cursor.get().is_some() first_href="/imports".into() next_href/>
                }.into_any()
            })}
        </section>
    }
}

fn status_badge(s: CsvImportStatus) -> impl IntoView {
    match s {
        CsvImportStatus::Running => view! { <Badge text="running" tone="info"/> },
        CsvImportStatus::Completed => view! { <Badge text="completed" tone="ok"/> },
        CsvImportStatus::Failed => view! { <Badge text="failed" tone="bad"/> },
    }
}

/// Choose, preview, map and upload.
#[component]
fn UploadForm(expected_rows: RwSignal<Option<(String, usize)>>) -> impl IntoView {
    let navigate = use_navigate();
    let file = RwSignal::new_local(None::<web_sys::File>);
    let preview = RwSignal::new(None::<Result<Preview, String>>);
    let kind = RwSignal::new(CsvImportKind::Customers.as_str().to_owned());
    let mapping = RwSignal::new(Vec::<(String, Option<String>)>::new());
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let kind_value = move || {
        kind.get()
            .parse::<CsvImportKind>()
            .unwrap_or(CsvImportKind::Customers)
    };

    // Re-guess the mapping when the file or the kind changes.
    Effect::new(move |_| {
        let k = kind_value();
        let guessed = preview.with(|p| match p {
            Some(Ok(p)) => p
                .headers
                .iter()
                .map(|h| {
                    (
                        h.clone(),
                        csv_preview::suggest_field(h, k).map(str::to_owned),
                    )
                })
                .collect(),
            _ => Vec::new(),
        });
        mapping.set(guessed);
    });

    let choose = move |ev: leptos::ev::Event| {
        let Some(input) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        else {
            return;
        };
        let chosen = input.files().and_then(|f| f.get(0));
        file.set(chosen.clone());
        preview.set(None);
        error.set(None);
        if let Some(f) = chosen {
            leptos::task::spawn_local(async move {
                let read = wasm_bindgen_futures::JsFuture::from(f.array_buffer()).await;
                preview.set(Some(match read {
                    Ok(buf) => {
                        let bytes = js_sys::Uint8Array::new(&buf).to_vec();
                        csv_preview::preview(&bytes, 5).map_err(|e| e.to_string())
                    }
                    Err(_) => Err("The file could not be read.".into()),
                }));
            });
        }
    };

    let upload = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(f) = file.get_untracked() else {
            return;
        };
        let rows = preview.with_untracked(|p| {
            p.as_ref()
                .and_then(|p| p.as_ref().ok())
                .map(|p| p.data_rows)
        });
        let Ok(form) = web_sys::FormData::new() else {
            return;
        };
        // Text fields first: the gateway streams the file part into the importer as it
        // arrives, so it must already know the kind and mapping.
        let _ = form.append_with_str("kind", &kind.get_untracked());
        let _ = form.append_with_str(
            "mapping",
            &csv_preview::mapping_json(&mapping.get_untracked()),
        );
        let _ = form.append_with_blob_and_filename("file", &f, &f.name());
        busy.set(true);
        error.set(None);
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match api::post_form::<CsvImportAccepted>("/imports", form).await {
                Ok(accepted) => {
                    let id = accepted.import_id.to_string();
                    if let Some(n) = rows {
                        expected_rows.set(Some((id.clone(), n)));
                    }
                    navigate(
                        &href("/imports", &[("import", Some(id))]),
                        Default::default(),
                    );
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };

    view! {
        <form class="card stack" on:submit=upload data-testid="upload-form">
            <div class="filters">
                <label class="search">
                    "CSV file"
                    <input type="file" name="file" accept=".csv,text/csv" on:change=choose/>
                </label>
                <label>
                    "What it holds"
                    <select name="kind" bind:value=kind>
                        {KINDS.into_iter().map(|(k, label)| view! { <option value=k.as_str()>{label}</option> }).collect_view()}
                    </select>
                </label>
            </div>
            {move || preview.get().map(|p| match p {
                Err(e) => view! { <p class="notice error">{e}</p> }.into_any(),
                Ok(p) => view! {
                    <div>
                        <h3>{format!("Preview — {} data rows", format::count(p.data_rows as i64))}</h3>
                        <div class="table-wrap">
                            <table class="table compact" data-testid="preview">
                                <thead><tr>{p.headers.iter().map(|h| view! { <th>{h.clone()}</th> }).collect_view()}</tr></thead>
                                <tbody>
                                    {p.rows.iter().map(|r| view! { <tr>{r.iter().map(|c| view! { <td>{c.clone()}</td> }).collect_view()}</tr> }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                        <h3>"Column mapping"</h3>
                        <p class="muted">"Which field each column holds. Columns left on “ignore” are not imported."</p>
                        <div class="mapping" data-testid="mapping">
                            {move || {
                                let fields = kind_value().fields();
                                mapping.get().into_iter().enumerate().map(|(idx, (header, field))| {
                                    view! {
                                        <label>
                                            {header.clone()}
                                            <select
                                                data-column=header.clone()
                                                on:change=move |ev| {
                                                    let v = event_target_value(&ev);
                                                    mapping.update(|m| m[idx].1 = Some(v).filter(|v| !v.is_empty()));
                                                }
                                            >
                                                <option value="" selected=field.is_none()>"— ignore —"</option>
                                                {fields.iter().map(|f| view! {
                                                    <option value=*f selected=field.as_deref() == Some(*f)>{format::humanize(f)}</option>
                                                }).collect_view()}
                                            </select>
                                        </label>
                                    }
                                }).collect_view()
                            }}
                        </div>
                    </div>
                }.into_any(),
            })}
            {move || error.get().map(|error| view! { <ErrorNotice error/> })}
            <div class="row">
                <button
                    type="submit"
                    class="button"
                    disabled=move || busy.get() || !preview.with(|p| matches!(p, Some(Ok(_))))
                >
                    {move || if busy.get() { "Uploading…" } else { "Upload" }}
                </button>
            </div>
        </form>
    }
}

/// Progress and outcome of one import, live while it runs.
#[component]
fn ImportProgress(id: String, rows: Option<usize>) -> impl IntoView {
    let state = RwSignal::new(None::<CsvImportView>);
    let failure = RwSignal::new(None::<ApiError>);
    let (cancel_tx, cancel_rx) = futures::channel::oneshot::channel::<()>();
    let cancel_tx = std::sync::Mutex::new(Some(cancel_tx));
    on_cleanup(move || {
        if let Some(tx) = cancel_tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(());
        }
    });
    {
        let id = id.clone();
        leptos::task::spawn_local(async move {
            let watch = follow(id, state);
            futures::pin_mut!(watch);
            if let futures::future::Either::Left((Err(e), _)) =
                futures::future::select(watch, cancel_rx).await
            {
                failure.set(Some(e));
            }
        });
    }
    let finished = move || {
        state.with(|s| {
            s.as_ref()
                .is_some_and(|s| s.status != CsvImportStatus::Running)
        })
    };
    let percent = move || {
        state.with(|s| {
            s.as_ref().map(|s| {
                let processed = s.imported_rows + s.duplicate_rows + s.error_rows;
                let denominator = rows.unwrap_or(s.total_rows.max(0) as usize);
                csv_preview::progress_percent(
                    processed.max(s.total_rows),
                    denominator,
                    s.status != CsvImportStatus::Running,
                )
            })
        })
    };
    let errors = LocalResource::new(move || {
        let id = id.clone();
        let done = finished();
        async move {
            if !done {
                return Ok(None);
            }
            api::get::<Page<CsvImportRowError>>(&format!("/imports/{id}/errors?limit=200"))
                .await
                .map(Some)
        }
    });

    view! {
        <section class="card stack" data-testid="import">
            {move || failure.get().map(|error| view! { <ErrorNotice error/> })}
            {move || state.get().map(|s| view! {
                <div class="row">
                    <h2 style="margin:0">{s.filename.clone()}</h2>
                    {status_badge(s.status)}
                    <span class="spacer"></span>
                    <small>{format!("{} · started {}", format::humanize(s.kind.as_str()), format::datetime(s.started_at))}</small>
                </div>
            })}
            {move || percent().map(|p| view! {
                <div
                    class="progress"
                    role="progressbar"
                    aria-valuemin="0"
                    aria-valuemax="100"
                    aria-valuenow=format!("{p:.0}")
                    data-testid="import-progress"
                >
                    <div class="progress-fill" class:done=finished style=format!("width:{p:.1}%")></div>
                </div>
                <p data-testid="import-percent"><b>{format!("{p:.0} %")}</b></p>
            })}
            {move || state.get().map(|s| view! {
                <dl class="facts" data-testid="import-counts">
                    <div><dt>"Rows read"</dt><dd>{format::count(s.total_rows)}</dd></div>
                    <div><dt>"Imported"</dt><dd data-testid="imported-rows">{format::count(s.imported_rows)}</dd></div>
                    <div><dt>"Already imported"</dt><dd>{format::count(s.duplicate_rows)}</dd></div>
                    <div><dt>"Row errors"</dt><dd data-testid="error-rows">{format::count(s.error_rows)}</dd></div>
                </dl>
                {s.error.clone().map(|e| view! { <p class="notice error">{format!("The import stopped: {e}")}</p> })}
            })}
            {move || errors.get().map(|r| match r {
                Ok(Some(page)) if !page.items.is_empty() => view! {
                    <h3>"Rows that were not imported"</h3>
                    <table class="table compact" data-testid="row-errors">
                        <thead><tr><th class="num">"Line"</th><th>"Reason"</th></tr></thead>
                        <tbody>
                            {page.items.into_iter().map(|e| view! { <tr><td class="num">{e.line}</td><td>{e.reason}</td></tr> }).collect_view()}
                        </tbody>
                    </table>
                    {page.next_cursor.is_some().then(|| view! { <p class="muted">"Showing the first 200 row errors."</p> })}
                }.into_any(),
                Ok(Some(_)) => view! { <p class="notice ok">"Every row was imported."</p> }.into_any(),
                Ok(None) => ().into_any(),
                Err(error) => view! { <ErrorNotice error/> }.into_any(),
            })}
        </section>
    }
}

/// Follows an import until it finishes: the server's progress stream first, polling
/// `GET /imports/{id}` if the stream cannot be opened or breaks off early.
async fn follow(id: String, state: RwSignal<Option<CsvImportView>>) -> Result<(), ApiError> {
    let first = api::get::<CsvImportView>(&format!("/imports/{id}")).await?;
    let running = first.status == CsvImportStatus::Running;
    state.set(Some(first));
    if !running {
        return Ok(());
    }
    if let Ok(mut source) = gloo_net::eventsource::futures::EventSource::new(&api::url(&format!(
        "/imports/{id}/events"
    ))) && let (Ok(progress), Ok(done)) = (
        source.subscribe(import_events::PROGRESS),
        source.subscribe(import_events::DONE),
    ) {
        let mut events = futures::stream::select(progress, done);
        while let Some(Ok((_, message))) = events.next().await {
            let Some(text) = message.data().as_string() else {
                continue;
            };
            if let Ok(view) = serde_json::from_str::<CsvImportView>(&text) {
                let finished = view.status != CsvImportStatus::Running;
                state.set(Some(view));
                if finished {
                    source.close();
                    return Ok(());
                }
            }
        }
        source.close();
    }
    // The stream was unavailable or ended before the import did: poll.
    loop {
        gloo_timers::future::TimeoutFuture::new(700).await;
        let view = api::get::<CsvImportView>(&format!("/imports/{id}")).await?;
        let finished = view.status != CsvImportStatus::Running;
        state.set(Some(view));
        if finished {
            return Ok(());
        }
    }
}
