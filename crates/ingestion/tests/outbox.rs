//! The `events.raw` outbox (`raw_event_outbox`) against the real Postgres and Redis: a
//! stored event is queued by the same statement that stores it (a duplicate is not
//! queued again), publishing takes it out without rewriting the raw row, the relay
//! publishes what is left oldest first, and an outbox row whose raw event was erased
//! before it was published is dropped rather than published or kept forever.

use std::time::Duration;

use domain::Source;
use ingestion::outbox::RawEventOutbox;
use ingestion::raw::{RawEventStore, WriterOptions};
use ingestion::raw_event::NewRawEvent;
use serde_json::json;
use streams::Streams;
use test_support::TestEnv;
use uuid::Uuid;

fn event(key: &str) -> NewRawEvent {
    NewRawEvent::new(
        None,
        Source::Segment,
        key,
        "track",
        json!({"type": "track", "event": "E", "userId": key}),
    )
}

fn options() -> WriterOptions {
    WriterOptions {
        batch_rows: 512,
        linger: Duration::ZERO,
        writers: 1,
        publishers: 1,
    }
}

/// Stores `events` through a store with (or without) a publisher and waits until it
/// has drained.
async fn store(env: &TestEnv, streams: Option<Streams>, events: Vec<NewRawEvent>) {
    let (store, tasks) = RawEventStore::start(env.db.clone(), streams, options());
    store.store(events).await.unwrap();
    drop(store);
    tasks.drained().await;
}

async fn queued(env: &TestEnv) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM raw_event_outbox_events ORDER BY id")
        .fetch_all(&env.db)
        .await
        .unwrap()
}

/// Each raw row's id and physical place: a row rewritten by an UPDATE moves.
async fn raw_rows(env: &TestEnv) -> Vec<(Uuid, String)> {
    sqlx::query_as("SELECT id, ctid::text FROM customer_raw_event ORDER BY id")
        .fetch_all(&env.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn stored_events_wait_in_the_outbox_until_published_and_the_raw_row_is_never_rewritten() {
    let env = TestEnv::new().await;
    let events: Vec<NewRawEvent> = (0..4).map(|i| event(&format!("e-{i}"))).collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();

    // No publisher: every new row waits in the outbox, queued by its own INSERT.
    store(&env, None, events.clone()).await;
    assert_eq!(queued(&env).await, ids);
    let before = raw_rows(&env).await;
    // A redelivery stores nothing and queues nothing.
    let again: Vec<NewRawEvent> = (0..4).map(|i| event(&format!("e-{i}"))).collect();
    store(&env, None, again).await;
    assert_eq!(queued(&env).await, ids, "duplicates are not queued again");

    // The raw event of e-1 is erased before it is published.
    sqlx::query("DELETE FROM customer_raw_event WHERE id = $1")
        .bind(ids[1])
        .execute(&env.db)
        .await
        .unwrap();

    let streams = Streams::new(env.redis.clone(), env.prefix(), 100_000);
    let relayed = streams::relay_once(
        &streams,
        &RawEventOutbox::new(env.db.clone()),
        1_000,
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(relayed, 3);
    assert_eq!(
        env.raw_stream_ids().await,
        vec![ids[0], ids[2], ids[3]],
        "published oldest first; the erased event is not published"
    );
    assert!(
        queued(&env).await.is_empty(),
        "the erased event's row is dropped too"
    );
    let mut kept = before;
    kept.remove(1);
    assert_eq!(
        raw_rows(&env).await,
        kept,
        "publishing did not rewrite a raw row"
    );

    // With a publisher: published right after the commit, nothing left queued.
    let fresh: Vec<NewRawEvent> = (0..3).map(|i| event(&format!("f-{i}"))).collect();
    let fresh_ids: Vec<Uuid> = fresh.iter().map(|e| e.id).collect();
    store(&env, Some(streams.clone()), fresh).await;
    assert!(queued(&env).await.is_empty());
    assert_eq!(env.raw_stream_ids().await[3..], fresh_ids[..]);
    assert_eq!(
        RawEventOutbox::new(env.db.clone()).backlog().await.unwrap(),
        0
    );
}

#[tokio::test]
async fn a_stored_batch_is_one_outbox_row_taken_out_only_when_all_of_it_is_published() {
    let env = TestEnv::new().await;
    let events: Vec<NewRawEvent> = (0..5).map(|i| event(&format!("b-{i}"))).collect();
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    ids.sort();

    ingestion::raw::insert_batch(&env.db, &events)
        .await
        .unwrap();
    let batches: Vec<(Uuid, Vec<Uuid>)> =
        sqlx::query_as("SELECT id, event_ids FROM raw_event_outbox_batch")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(
        batches,
        vec![(ids[0], ids.clone())],
        "one row for the batch, keyed by its smallest id, listing every event"
    );
    let singles: i64 = sqlx::query_scalar("SELECT count(*) FROM raw_event_outbox")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(singles, 0, "no row per event");
    assert_eq!(queued(&env).await, ids);

    // A publisher that sent only part of the batch takes nothing out.
    ingestion::raw::mark_stored_published(&env.db, &ids[..4])
        .await
        .unwrap();
    assert_eq!(queued(&env).await, ids);
    ingestion::raw::mark_stored_published(&env.db, &ids)
        .await
        .unwrap();
    assert!(queued(&env).await.is_empty());
}
