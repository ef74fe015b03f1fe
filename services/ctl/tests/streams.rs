//! `ctl streams` and `ctl dlq list|replay` run as the real binary against the real
//! Redis, on a test's own stream prefix.

use std::process::Output;

use streams::{Envelope, Streams, Topic};
use test_support::TestEnv;
use tokio::process::Command;
use uuid::Uuid;

async fn ctl(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctl"))
        .args(args)
        .env("REDIS_URL", &env.settings.redis_url)
        .env("DATABASE_URL", &env.settings.database_url)
        .env("STREAM_PREFIX", env.prefix())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("running ctl")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Writes a dead letter the way a consumer does: via a poison entry that a consumer
/// dead-letters (the runtime's own path), so the test does not fake the format.
async fn dead_letter_one(env: &TestEnv, streams: &Streams) {
    use streams::{ConsumerOptions, Delivery, Handler, HandlerError};

    struct Reject;
    #[async_trait::async_trait]
    impl Handler for Reject {
        type Payload = serde_json::Value;
        async fn handle(
            &self,
            batch: &[Delivery<serde_json::Value>],
        ) -> Vec<Result<(), HandlerError>> {
            batch
                .iter()
                .map(|_| Err(HandlerError::Permanent("rejected by the test".into())))
                .collect()
        }
    }

    let token = tokio_util::sync::CancellationToken::new();
    let mut opts = ConsumerOptions::from_settings(&env.settings, "ctl-test");
    opts.block = std::time::Duration::from_millis(50);
    let task = tokio::spawn(streams::run_consumer(
        streams.clone(),
        Topic::EventsRaw,
        opts,
        std::sync::Arc::new(Reject),
        token.clone(),
    ));
    test_support::eventually(10, "a dead letter", || async {
        (streams.dlq_len(Topic::EventsRaw).await.unwrap() == 1).then_some(())
    })
    .await;
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn ctl_shows_streams_lists_and_replays_dead_letters() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let envelope = Envelope::new(Uuid::new_v4(), "test", "item", serde_json::json!({"n": 1}));
    streams.publish(Topic::EventsRaw, &envelope).await.unwrap();
    dead_letter_one(&env, &streams).await;

    let table = stdout(&ctl(&env, &["streams"]).await);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("events.raw"))
        .expect("a row for events.raw")
        .split_whitespace()
        .collect();
    // length 1, one group, nothing pending, no lag, one dead letter
    assert_eq!(row, ["events.raw", "1", "1", "0", "0", "1"], "{table}");
    assert!(table.contains("group ctl-test"), "{table}");

    let list = stdout(&ctl(&env, &["dlq", "list", "events.raw"]).await);
    assert!(list.contains("1 dead letters"), "{list}");
    assert!(list.contains("error: rejected by the test"), "{list}");
    let dlq_id = list
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();

    let missing = ctl(&env, &["dlq", "replay", "events.raw", "--id", "0-1"]).await;
    assert!(!missing.status.success(), "replaying an unknown id fails");
    let bad_topic = ctl(&env, &["dlq", "list", "events"]).await;
    assert!(String::from_utf8_lossy(&bad_topic.stderr).contains("unknown topic"));

    let replayed = stdout(&ctl(&env, &["dlq", "replay", "events.raw", "--id", &dlq_id]).await);
    assert!(
        replayed.contains(&format!("replayed {dlq_id}")),
        "{replayed}"
    );
    assert_eq!(streams.dlq_len(Topic::EventsRaw).await.unwrap(), 0);
    let recent = streams.recent_entries(Topic::EventsRaw, 1).await.unwrap();
    assert_eq!(
        recent[0].envelope.as_ref(),
        Some(&envelope),
        "the same body is back"
    );

    dead_letter_one(&env, &streams).await;
    let all = stdout(&ctl(&env, &["dlq", "replay", "events.raw", "--all"]).await);
    assert!(all.contains("replayed 1 dead letters"), "{all}");
    assert_eq!(streams.dlq_len(Topic::EventsRaw).await.unwrap(), 0);
}

#[tokio::test]
async fn republish_hands_undone_merge_requests_back_to_the_outbox() {
    let env = TestEnv::new().await;
    let (done, undone) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, done_at) in [(done, "now()"), (undone, "NULL")] {
        let envelope = Envelope::new(
            id,
            "api-gateway",
            "erase",
            serde_json::json!({"action": "erase", "profile_id": Uuid::now_v7(), "actor": "dpo"}),
        );
        sqlx::query(&format!(
            "INSERT INTO api_merge_requests (id, action, actor, envelope, published_at, done_at) \
             VALUES ($1, 'erase', 'dpo', $2, now(), {done_at})"
        ))
        .bind(id)
        .bind(sqlx::types::Json(&envelope))
        .execute(&env.db)
        .await
        .unwrap();
    }
    let out = stdout(&ctl(&env, &["republish"]).await);
    assert!(out.contains("1 merge requests"), "{out}");
    let unpublished: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM api_merge_requests WHERE published_at IS NULL")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(
        unpublished,
        [undone],
        "only the undone erase goes back to the relay"
    );
}
