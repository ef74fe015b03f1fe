//! CSV imports: the streamed multipart upload into the ingestion library's importer,
//! progress and per-row errors by import id, and a server-sent-event progress feed.
//!
//! The upload is never held in memory: the handler reads the `file` part chunk by
//! chunk and hands each chunk through a small bounded channel to the importer, which
//! runs as a background task (it spools to a temporary file while hashing, then parses
//! and stores rows). When the last chunk has been handed over the handler answers 202
//! with the import id; parsing may still be running, and its progress is visible at
//! `GET /imports/{id}` and `GET /imports/{id}/events`. Shutdown waits for running
//! imports. Rows are keyed by file hash and line, so an import cut short by a crash is
//! completed, without duplicates, by uploading the file again.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use domain::api::{
    ApiErrorBody, CsvImportAccepted, CsvImportKind, CsvImportRowError, CsvImportStatus,
    CsvImportView, CsvMapping, CsvUploadForm, Page, PageQuery, import_events,
};
use futures::Stream;
use futures::StreamExt as _;
use ingestion::csv::{CsvError, ImportOptions};
use service_kit::ApiError;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::StreamReader;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiPath, ApiQuery, decode_cursor, page_limit, paginate};
use crate::live::LiveFeed;
use crate::state::AppState;

async fn find(app: &AppState, id: Uuid) -> Result<Option<CsvImportView>, sqlx::Error> {
    ingestion::csv::summary(&app.db, id).await
}

fn csv_error(e: CsvError) -> ApiError {
    match e {
        CsvError::Mapping(m) => ApiError::bad_request("bad_csv", m),
        CsvError::Read(m) => ApiError::bad_request("bad_csv", format!("reading the file: {m}")),
        CsvError::TooLarge(n) => ApiError::too_large(format!("the file is larger than {n} bytes")),
        CsvError::Database(e) => ApiError::internal(e),
    }
}

/// Why a form's `kind` is refused, with the kinds that are accepted.
fn kind_error(e: domain::source::UnknownName) -> String {
    let kinds: Vec<&str> = CsvImportKind::ALL.iter().map(|k| k.as_str()).collect();
    format!("{e} (one of: {})", kinds.join(", "))
}

/// The importer's mapping from the form's `{header: field}` object.
fn mapping_of(
    json: Option<&str>,
    default_currency: Option<String>,
    namespace: Option<String>,
) -> Result<CsvMapping, ApiError> {
    let mut mapping = CsvMapping::default();
    if let Some(json) = json.map(str::trim).filter(|j| !j.is_empty()) {
        let by_header: std::collections::BTreeMap<String, String> = serde_json::from_str(json)
            .map_err(|e| {
                ApiError::bad_request(
                    "bad_request",
                    format!("mapping must be a JSON object of column header to field: {e}"),
                )
            })?;
        for (header, field) in by_header {
            let field = field.trim().to_owned();
            if field.is_empty() {
                continue;
            }
            if let Some(previous) = mapping.columns.insert(field.clone(), header.clone()) {
                return Err(ApiError::bad_request(
                    "bad_request",
                    format!("columns `{previous}` and `{header}` are both mapped to `{field}`"),
                ));
            }
        }
    }
    mapping.default_currency = default_currency.filter(|c| !c.trim().is_empty());
    mapping.customer_id_namespace = namespace.filter(|n| !n.trim().is_empty());
    Ok(mapping)
}

/// Uploads a CSV file and starts importing it.
#[utoipa::path(
    post,
    path = "/imports",
    tag = "imports",
    summary = "Upload a CSV file",
    description = "multipart/form-data with `kind` (`customers`, `orders`, `order_lines`), \
                   optional `mapping` (JSON object of column header to field), \
                   `default_currency`, `customer_id_namespace`, then `file` last. The file \
                   is streamed into the importer, never held in memory; the answer comes \
                   once the upload is complete, and rows may still be being imported: \
                   follow `GET /imports/{id}` or its event stream. Good rows are imported \
                   and each bad row is reported.",
    request_body(content = CsvUploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Uploaded; importing", body = CsvImportAccepted),
        (status = 400, description = "Missing or misplaced form fields, bad kind or mapping, unusable header (`bad_request`, `bad_csv`)", body = ApiErrorBody),
        (status = 413, description = "The file is larger than `CSV_MAX_BYTES` (`payload_too_large`)", body = ApiErrorBody),
    )
)]
pub async fn upload(
    State(app): State<AppState>,
    Caller(caller): Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<CsvImportAccepted>), ApiError> {
    let mut multipart =
        multipart.map_err(|e| ApiError::bad_request("bad_request", e.body_text()))?;
    let bad_form = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), "bad_request", e.body_text())
    };
    let mut kind: Option<CsvImportKind> = None;
    let mut mapping_json: Option<String> = None;
    let mut default_currency = None;
    let mut namespace = None;
    let mut field = loop {
        let Some(field) = multipart.next_field().await.map_err(bad_form)? else {
            return Err(ApiError::bad_request(
                "bad_request",
                "the form has no `file` part",
            ));
        };
        match field.name().unwrap_or_default() {
            "file" => break field,
            name @ ("kind" | "mapping" | "default_currency" | "customer_id_namespace") => {
                let name = name.to_owned();
                let text = field.text().await.map_err(bad_form)?;
                match name.as_str() {
                    "kind" => {
                        kind =
                            Some(text.trim().parse().map_err(|e| {
                                ApiError::bad_request("bad_request", kind_error(e))
                            })?);
                    }
                    "mapping" => mapping_json = Some(text),
                    "default_currency" => default_currency = Some(text.trim().to_uppercase()),
                    _ => namespace = Some(text.trim().to_owned()),
                }
            }
            other => {
                return Err(ApiError::bad_request(
                    "bad_request",
                    format!("unexpected form field `{other}`"),
                ));
            }
        }
    };
    let kind = kind.ok_or_else(|| {
        ApiError::bad_request(
            "bad_request",
            "send the `kind` field before the `file` part",
        )
    })?;
    let mapping = mapping_of(mapping_json.as_deref(), default_currency, namespace)?;
    let filename = field
        .file_name()
        .map(str::to_owned)
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| "upload.csv".to_owned());
    let actor = caller.actor();

    // The importer reads from a small bounded channel: it never has more than a few
    // chunks in memory, and a slow importer slows the upload down.
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    // Fires when the importer has read the whole upload, i.e. spooled it within the
    // size limit.
    let (eof_tx, eof_rx) = oneshot::channel::<()>();
    let chunks = ReceiverStream::new(rx).chain(
        futures::stream::once(async move {
            let _ = eof_tx.send(());
            None
        })
        .filter_map(|end: Option<Result<bytes::Bytes, std::io::Error>>| async move { end }),
    );
    let started = Utc::now();
    let task = {
        let app = app.clone();
        let (filename, actor) = (filename.clone(), actor.clone());
        app.background.clone().spawn(async move {
            let opts = ImportOptions::from_settings(&app.settings);
            ingestion::csv::import(
                &app.db,
                Some(&app.streams),
                StreamReader::new(Box::pin(chunks)),
                kind,
                &mapping,
                &filename,
                &actor,
                &opts,
            )
            .await
        })
    };
    let mut importer_stopped = false;
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    // The importer stopped reading (too large, bad header, ...): its
                    // result below says why.
                    importer_stopped = true;
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                // The client went away or sent a broken form: fail the import rather
                // than import part of a file as if it were whole.
                let _ = tx
                    .send(Err(std::io::Error::other(format!(
                        "upload interrupted: {e}"
                    ))))
                    .await;
                drop(tx);
                let _ = task.await;
                return Err(bad_form(e));
            }
        }
    }
    drop(tx);
    let mut task = task;
    // Wait until the importer has read everything (the file fit the limit) or has
    // stopped (it did not, or the input was unreadable): either way the answer is
    // certain, never a guess that depends on timing.
    let outcome = if importer_stopped {
        Some((&mut task).await)
    } else {
        tokio::select! {
            read = eof_rx => match read {
                Ok(()) => None,
                // The stream was dropped unread: the importer has stopped.
                Err(_) => Some((&mut task).await),
            },
            done = &mut task => Some(done),
        }
    };
    let outcome = match outcome {
        None if task.is_finished() => Some((&mut task).await),
        other => other,
    };
    if let Some(done) = outcome {
        let summary = done.map_err(ApiError::internal)?.map_err(csv_error)?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(CsvImportAccepted {
                import_id: summary.id,
            }),
        ));
    }
    // The importer creates its row before it reads the first byte; find it by who
    // uploaded which file since when. Should two identical uploads race, wait for this
    // one to finish instead of guessing.
    // TODO(issue 3, ingestion): let `csv::import` take the import id so this lookup goes.
    let candidates: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM csv_imports WHERE created_by = $1 AND filename = $2 \
         AND started_at >= $3 - interval '1 second' AND status = 'running' \
         ORDER BY started_at DESC LIMIT 2",
    )
    .bind(&actor)
    .bind(&filename)
    .bind(started)
    .fetch_all(&app.db)
    .await?;
    let import_id = match candidates.as_slice() {
        [only] => *only,
        _ => {
            task.await
                .map_err(ApiError::internal)?
                .map_err(csv_error)?
                .id
        }
    };
    Ok((StatusCode::ACCEPTED, Json(CsvImportAccepted { import_id })))
}

/// Lists imports, newest first.
#[utoipa::path(
    get,
    path = "/imports",
    tag = "imports",
    summary = "List CSV imports",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of imports", body = Page<CsvImportView>),
        (status = 400, description = "Bad cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn list_imports(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<CsvImportView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor("imports", q.cursor.as_deref())?;
    let rows = ingestion::csv::list(&app.db, after, limit + 1).await?;
    Ok(Json(paginate(rows, limit, "imports", |r| {
        (r.started_at, r.id)
    })))
}

/// One import and its progress.
#[utoipa::path(
    get,
    path = "/imports/{id}",
    tag = "imports",
    summary = "One CSV import",
    params(("id" = Uuid, Path, description = "Import id")),
    responses(
        (status = 200, description = "The import", body = CsvImportView),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such import (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn get_import(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<CsvImportView>, ApiError> {
    find(&app, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no import {id}")))
}

/// The rejected rows of an import.
#[utoipa::path(
    get,
    path = "/imports/{id}/errors",
    tag = "imports",
    summary = "Rejected rows of a CSV import",
    description = "In line order.",
    params(("id" = Uuid, Path, description = "Import id"), PageQuery),
    responses(
        (status = 200, description = "A page of rejected rows", body = Page<CsvImportRowError>),
        (status = 400, description = "Bad cursor, limit or id (`bad_filter`, `bad_cursor`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such import (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn import_errors(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<CsvImportRowError>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<i64> = decode_cursor("import-errors", q.cursor.as_deref())?;
    if find(&app, id).await?.is_none() {
        return Err(ApiError::not_found(format!("no import {id}")));
    }
    let rows = ingestion::csv::row_errors(&app.db, id, after.unwrap_or(0), limit + 1).await?;
    Ok(Json(paginate(rows, limit, "import-errors", |r| r.line)))
}

/// Progress of an import as server-sent events.
#[utoipa::path(
    get,
    path = "/imports/{id}/events",
    tag = "imports",
    summary = "Progress stream of a CSV import",
    description = "Server-sent events: `progress` with the import (a `CsvImportView`) \
                   whenever it changes, then `done` with its final state, after which the \
                   stream ends (earlier when the caller's session or token is revoked or \
                   expires).",
    params(("id" = Uuid, Path, description = "Import id")),
    responses(
        (status = 200, description = "An event stream of `CsvImportView`", content_type = "text/event-stream", body = CsvImportView),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such import (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn import_events(
    State(app): State<AppState>,
    feed: LiveFeed,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let first = find(&app, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no import {id}")))?;
    let every = Duration::from_millis(app.settings.api.live_interval_ms.max(50));
    let app_for_stream = app.clone();
    let stream = async_stream::stream! {
        let app = app_for_stream;
        let mut last: Option<CsvImportView> = None;
        let mut current = Some(first);
        loop {
            if let Some(view) = current.take() {
                let done = view.status != CsvImportStatus::Running;
                if done {
                    yield Ok(sse(import_events::DONE, &view));
                    break;
                }
                if last.as_ref() != Some(&view) {
                    yield Ok(sse(import_events::PROGRESS, &view));
                    last = Some(view);
                }
            }
            tokio::time::sleep(every).await;
            match find(&app, id).await {
                Ok(Some(view)) => current = Some(view),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, import = %id, "reading import progress failed");
                }
            }
        }
    };
    Ok(Sse::new(feed.wrap(app, stream)).keep_alive(KeepAlive::default()))
}

fn sse<T: serde::Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_invert_to_field_columns() {
        let m = mapping_of(
            Some(r#"{"Mobile": "phone", "E-mail": "email", "Notes": ""}"#),
            Some("INR".into()),
            None,
        )
        .unwrap();
        assert_eq!(m.columns.get("phone").map(String::as_str), Some("Mobile"));
        assert_eq!(m.columns.get("email").map(String::as_str), Some("E-mail"));
        assert_eq!(m.columns.len(), 2);
        assert_eq!(m.default_currency.as_deref(), Some("INR"));
        assert!(mapping_of(Some(r#"{"A": "phone", "B": "phone"}"#), None, None).is_err());
        assert!(mapping_of(Some("[1]"), None, None).is_err());
        assert_eq!(mapping_of(None, None, None).unwrap(), CsvMapping::default());
    }
}
