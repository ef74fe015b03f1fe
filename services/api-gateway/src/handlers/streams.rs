//! The Streams page: per-topic length, consumer groups, pending, lag and dead letters;
//! recent entries and dead letters page by page; dead-letter replay; and a
//! server-sent-event feed for the live viewer.
//!
//! Statistics and replay come from the streams runtime (`streams::Streams`); paging
//! through entries older than a cursor is a plain `XREVRANGE` here.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::Utc;
use domain::api::{
    ApiErrorBody, ConsumerGroupStats, DlqEntry, Page, ReplayAccepted, StreamEntriesQuery,
    StreamEntry, StreamsOverview, TopicStats, live_events,
};
use futures::Stream;
use service_kit::ApiError;
use streams::Topic;

use crate::extract::{ApiPath, ApiQuery, decode_cursor, page_limit, paginate};
use crate::live::LiveFeed;
use crate::state::AppState;

/// Entries the live feed sends per topic and tick at most (it is a viewer, not a
/// consumer: under heavy load it shows a sample).
const LIVE_ENTRIES_PER_TICK: usize = 50;

fn topic_of(name: &str) -> Result<Topic, ApiError> {
    Topic::from_name(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no topic `{name}` (one of {})",
            Topic::ALL.map(Topic::name).join(", ")
        ))
    })
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "reading the streams failed");
    ApiError::unavailable("Redis did not answer; try again")
}

async fn stats(app: &AppState) -> Result<StreamsOverview, ApiError> {
    let topics = app.streams.stats().await.map_err(unavailable)?;
    Ok(StreamsOverview {
        at: Utc::now(),
        topics: topics
            .into_iter()
            .map(|t| TopicStats {
                topic: t.topic,
                length: t.length,
                dlq_length: t.dlq_length,
                last_entry_id: t.last_entry_id,
                groups: t
                    .groups
                    .into_iter()
                    .map(|g| ConsumerGroupStats {
                        name: g.name,
                        consumers: g.consumers,
                        pending: g.pending,
                        lag: g.lag,
                        last_delivered_id: g.last_delivered_id,
                    })
                    .collect(),
            })
            .collect(),
    })
}

/// Every topic's state.
#[utoipa::path(
    get,
    path = "/streams",
    tag = "streams",
    summary = "Streams overview",
    description = "Per topic, in pipeline order: length, newest entry, dead-letter count, \
                   and each consumer group's consumers, pending entries and lag.",
    responses(
        (status = 200, description = "The streams", body = StreamsOverview),
        (status = 503, description = "Redis did not answer (`unavailable`)", body = ApiErrorBody),
    )
)]
pub async fn overview(State(app): State<AppState>) -> Result<Json<StreamsOverview>, ApiError> {
    Ok(Json(stats(&app).await?))
}

/// A stream entry id as `(milliseconds, sequence)`, for ordering.
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Live feed: stream statistics and new entries.
#[utoipa::path(
    get,
    path = "/streams/live",
    tag = "streams",
    summary = "Live feed of the streams",
    description = "Server-sent events: `stats` (a `StreamsOverview`) every \
                   `LIVE_INTERVAL_MS`, and `entry` (a `StreamEntry`) for each new entry of \
                   `events.raw` and `events.normalized` (at most 50 per topic and tick). \
                   The feed ends when the caller's session or token is revoked or expires \
                   (checked every `LIVE_SESSION_CHECK_MS`).",
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = StreamEntry),
    )
)]
pub async fn live(
    State(app): State<AppState>,
    feed: LiveFeed,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let every = Duration::from_millis(app.settings.api.live_interval_ms.max(50));
    let watched = [Topic::EventsRaw, Topic::EventsNormalized];
    let app_for_stream = app.clone();
    let stream = async_stream::stream! {
        let app = app_for_stream;
        // Start after what exists now: the viewer shows what arrives from here on.
        let mut last: HashMap<Topic, (u64, u64)> = HashMap::new();
        for topic in watched {
            let newest = app.streams.recent_entries(topic, 1).await.ok()
                .and_then(|mut v| v.pop())
                .map_or((0, 0), |e| entry_order(&e.entry_id));
            last.insert(topic, newest);
        }
        loop {
            match stats(&app).await {
                Ok(s) => yield Ok(sse(live_events::STATS, &s)),
                Err(_) => {}
            }
            for topic in watched {
                let Ok(recent) = app.streams.recent_entries(topic, LIVE_ENTRIES_PER_TICK).await else {
                    continue;
                };
                let seen = last.get(&topic).copied().unwrap_or((0, 0));
                for entry in recent.into_iter().rev().filter(|e| entry_order(&e.entry_id) > seen) {
                    last.insert(topic, entry_order(&entry.entry_id));
                    let view = StreamEntry {
                        topic: topic.name().to_owned(),
                        envelope: entry.envelope.as_ref()
                            .and_then(|e| serde_json::to_value(e).ok())
                            .unwrap_or_else(|| serde_json::Value::String(entry.body.clone())),
                        entry_id: entry.entry_id,
                    };
                    yield Ok(sse(live_events::ENTRY, &view));
                }
            }
            tokio::time::sleep(every).await;
        }
    };
    Sse::new(feed.wrap(app, stream)).keep_alive(KeepAlive::default())
}

fn sse<T: serde::Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

/// Reads entries of `key` older than `before` (exclusive), newest first.
async fn entries_before(
    app: &AppState,
    key: &str,
    before: Option<&str>,
    count: i64,
) -> Result<Vec<redis::streams::StreamId>, ApiError> {
    let end = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(key)
        .arg(end)
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut app.redis.clone())
        .await
        .map_err(unavailable)?;
    Ok(reply.ids)
}

fn field(entry: &redis::streams::StreamId, name: &str) -> Option<String> {
    entry
        .map
        .get(name)
        .and_then(|v| redis::from_redis_value::<String>(v).ok())
}

fn body_json(body: Option<String>, entry: &redis::streams::StreamId) -> serde_json::Value {
    match body {
        Some(b) => serde_json::from_str(&b).unwrap_or(serde_json::Value::String(b)),
        // Not an envelope entry: show its fields as they are.
        None => serde_json::Value::Object(
            entry
                .map
                .keys()
                .map(|k| {
                    (
                        k.clone(),
                        field(entry, k).map_or(serde_json::Value::Null, Into::into),
                    )
                })
                .collect(),
        ),
    }
}

fn check_cursor(cursor: Option<String>) -> Result<Option<String>, ApiError> {
    match cursor {
        Some(c) if entry_order(&c) == (0, 0) || !c.contains('-') => Err(ApiError::bad_request(
            "bad_cursor",
            "the cursor is not one this list handed out",
        )),
        other => Ok(other),
    }
}

/// Recent entries of a topic.
#[utoipa::path(
    get,
    path = "/streams/{topic}/entries",
    tag = "streams",
    summary = "Entries of a topic",
    description = "Newest first. Streams are trimmed (`STREAM_MAXLEN`), so the oldest \
                   entries may be gone.",
    params(("topic" = String, Path, description = "Topic name, e.g. `events.raw`"), StreamEntriesQuery),
    responses(
        (status = 200, description = "A page of entries", body = Page<StreamEntry>),
        (status = 400, description = "Bad cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
        (status = 404, description = "No such topic (`not_found`)", body = ApiErrorBody),
        (status = 503, description = "Redis did not answer (`unavailable`)", body = ApiErrorBody),
    )
)]
pub async fn entries(
    State(app): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(q): ApiQuery<StreamEntriesQuery>,
) -> Result<Json<Page<StreamEntry>>, ApiError> {
    let topic = topic_of(&topic)?;
    let limit = page_limit(q.limit)?;
    let list = format!("entries:{}", topic.name());
    let before = check_cursor(decode_cursor(&list, q.cursor.as_deref())?)?;
    let rows = entries_before(&app, &app.streams.key(topic), before.as_deref(), limit + 1).await?;
    let page = paginate(rows, limit, &list, |e| e.id.clone());
    Ok(Json(crate::extract::map_page(page, |e| StreamEntry {
        topic: topic.name().to_owned(),
        envelope: body_json(field(&e, streams::BODY_FIELD), &e),
        entry_id: e.id,
    })))
}

/// Dead letters of a topic.
#[utoipa::path(
    get,
    path = "/streams/{topic}/dlq",
    tag = "streams",
    summary = "Dead letters of a topic",
    description = "Entries a consumer gave up on, newest first, with the reason.",
    params(("topic" = String, Path, description = "Topic name, e.g. `events.raw`"), StreamEntriesQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = Page<DlqEntry>),
        (status = 400, description = "Bad cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
        (status = 404, description = "No such topic (`not_found`)", body = ApiErrorBody),
        (status = 503, description = "Redis did not answer (`unavailable`)", body = ApiErrorBody),
    )
)]
pub async fn dead_letters(
    State(app): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(q): ApiQuery<StreamEntriesQuery>,
) -> Result<Json<Page<DlqEntry>>, ApiError> {
    let topic = topic_of(&topic)?;
    let limit = page_limit(q.limit)?;
    let list = format!("dlq:{}", topic.name());
    let before = check_cursor(decode_cursor(&list, q.cursor.as_deref())?)?;
    let rows = entries_before(
        &app,
        &app.streams.dlq_key(topic),
        before.as_deref(),
        limit + 1,
    )
    .await?;
    let page = paginate(rows, limit, &list, |e| e.id.clone());
    Ok(Json(crate::extract::map_page(page, |e| DlqEntry {
        topic: topic.name().to_owned(),
        error: field(&e, "error"),
        group: field(&e, "group"),
        deliveries: field(&e, "deliveries").and_then(|d| d.parse().ok()),
        original_entry_id: field(&e, "id"),
        envelope: body_json(field(&e, streams::BODY_FIELD), &e),
        entry_id: e.id,
    })))
}

/// Puts a dead letter back on its topic.
#[utoipa::path(
    post,
    path = "/streams/{topic}/dlq/{entry_id}/replay",
    tag = "streams",
    summary = "Replay a dead letter",
    description = "Appends the dead letter's entry to its topic again (every group of the \
                   topic sees it; consumers are idempotent) and removes it from the \
                   dead-letter stream, atomically.",
    params(
        ("topic" = String, Path, description = "Topic name"),
        ("entry_id" = String, Path, description = "Dead letter id (from the dead-letter list)"),
    ),
    responses(
        (status = 202, description = "Replayed", body = ReplayAccepted),
        (status = 404, description = "No such topic or dead letter (`not_found`)", body = ApiErrorBody),
        (status = 503, description = "Redis did not answer (`unavailable`)", body = ApiErrorBody),
    )
)]
pub async fn replay(
    State(app): State<AppState>,
    crate::auth::Caller(caller): crate::auth::Caller,
    ApiPath((topic, entry_id)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Json<ReplayAccepted>), ApiError> {
    let topic = topic_of(&topic)?;
    if entry_order(&entry_id) == (0, 0) {
        return Err(ApiError::not_found(format!("no dead letter {entry_id}")));
    }
    let new_id = app
        .streams
        .replay_dead_letter(topic, &entry_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("no dead letter {entry_id} on {topic}")))?;
    tracing::info!(%topic, dead_letter = %entry_id, %new_id, by = %caller.actor(), "dead letter replayed");
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayAccepted { entry_id: new_id }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_numerically() {
        assert!(entry_order("10-0") > entry_order("9-5"));
        assert!(entry_order("10-2") > entry_order("10-1"));
        assert_eq!(entry_order("junk"), (0, 0));
    }
}
