//! The group commit's net under the edge's checks: when Postgres refuses one request's
//! data inside a shared INSERT, only that request fails (`StoreError::Rejected`) and
//! every other request of the batch is stored. The poisons here bypass the edge on
//! purpose (built as raw events directly) to prove the net itself.

use std::time::Duration;

use chrono::DateTime;
use domain::Source;
use ingestion::raw::{RawEventStore, StoreError, WriterOptions};
use ingestion::raw_event::NewRawEvent;
use serde_json::json;
use test_support::TestEnv;

fn event(key: &str) -> NewRawEvent {
    NewRawEvent::new(
        None,
        Source::Segment,
        key,
        "track",
        json!({"type": "track", "event": "E", "userId": key}),
    )
}

#[tokio::test]
async fn one_refused_request_leaves_the_rest_of_its_batch_stored() {
    let env = TestEnv::new().await;
    let (store, tasks) = RawEventStore::start(
        env.db.clone(),
        None,
        WriterOptions {
            batch_rows: 512,
            // Long enough that every request below shares one INSERT.
            linger: Duration::from_millis(200),
            writers: 1,
            publishers: 1,
        },
    );
    let mut poison_nul = event("poison-nul");
    poison_nul.body["event"] = json!("a\u{0}b");
    let mut poison_time = event("poison-time");
    // 7536 BC: chrono holds it, Postgres's timestamptz does not.
    poison_time.occurred_at = DateTime::from_timestamp(-300_000_000_000, 0);
    let mut requests = vec![vec![poison_nul], vec![poison_time]];
    for i in 0..30 {
        // Some requests carry several events, as Segment batches do.
        requests.push(vec![
            event(&format!("good-{i}")),
            event(&format!("good-{i}-b")),
        ]);
    }
    let handles: Vec<_> = requests
        .into_iter()
        .map(|events| {
            let store = store.clone();
            tokio::spawn(async move { store.store(events).await })
        })
        .collect();
    let mut rejected = 0;
    let mut stored = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(outcomes) => stored += outcomes.iter().filter(|o| !o.duplicate).count(),
            Err(StoreError::Rejected(reason)) => {
                assert!(!reason.is_empty());
                rejected += 1;
            }
            Err(e) => panic!("a good request failed: {e}"),
        }
    }
    drop(store);
    tasks.drained().await;
    assert_eq!((rejected, stored), (2, 60));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_raw_event")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(rows, 60);
}
