//! The streams runtime against the real Redis on this machine: redelivery, reclaim from
//! a killed consumer, dead letters and replay, poison, prefix isolation, graceful
//! shutdown, inspection and the outbox relay. Every test has its own random prefix
//! (through `TestEnv`), so they run in parallel without seeing each other.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use streams::{
    ConsumerOptions, Delivery, Envelope, Handler, HandlerError, OutboxRow, OutboxStore, Streams,
    Topic, run_consumer,
};
use test_support::{TestEnv, eventually};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TOPIC: Topic = Topic::EventsRaw;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    name: String,
}

fn envelope(name: &str) -> Envelope<Item> {
    Envelope::new(Uuid::new_v4(), "test", "item", Item { name: name.into() })
}

fn options(group: &str, consumer: &str) -> ConsumerOptions {
    ConsumerOptions {
        group: group.into(),
        consumer: consumer.into(),
        batch_size: 16,
        block: Duration::from_millis(100),
        max_deliveries: 3,
        claim_idle: Duration::from_millis(300),
        read_ahead: true,
    }
}

type Outcome = Box<dyn Fn(&Delivery<Item>) -> Result<(), HandlerError> + Send + Sync>;

/// A handler that "commits" each delivery it accepts into a list and records every
/// delivery it sees (name, delivery count), deciding each outcome with `outcome`.
struct Recorder {
    outcome: Outcome,
    seen: Mutex<Vec<(String, u64)>>,
    committed: Mutex<Vec<String>>,
}

impl Recorder {
    fn new(
        outcome: impl Fn(&Delivery<Item>) -> Result<(), HandlerError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            outcome: Box::new(outcome),
            seen: Mutex::default(),
            committed: Mutex::default(),
        })
    }

    fn accepting() -> Arc<Self> {
        Self::new(|_| Ok(()))
    }

    fn seen(&self) -> Vec<(String, u64)> {
        self.seen.lock().unwrap().clone()
    }

    fn committed(&self) -> Vec<String> {
        self.committed.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Handler for Recorder {
    type Payload = Item;

    async fn handle(&self, batch: &[Delivery<Item>]) -> Vec<Result<(), HandlerError>> {
        batch
            .iter()
            .map(|d| {
                let name = d.envelope.payload.name.clone();
                self.seen
                    .lock()
                    .unwrap()
                    .push((name.clone(), d.delivery_count));
                let result = (self.outcome)(d);
                if result.is_ok() {
                    self.committed.lock().unwrap().push(name);
                }
                result
            })
            .collect()
    }
}

fn spawn<H: Handler>(
    streams: &Streams,
    opts: ConsumerOptions,
    handler: Arc<H>,
    shutdown: &CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(run_consumer(
        streams.clone(),
        TOPIC,
        opts,
        handler,
        shutdown.clone(),
    ))
}

/// Pending entries of `group` (XPENDING summary count); 0 before the group exists.
async fn pending(env: &TestEnv, streams: &Streams, group: &str) -> u64 {
    let reply: redis::RedisResult<redis::streams::StreamPendingReply> =
        env.redis.clone().xpending(streams.key(TOPIC), group).await;
    match reply {
        Ok(reply) => reply.count() as u64,
        Err(e) if e.code() == Some("NOGROUP") => 0,
        Err(e) => panic!("XPENDING: {e}"),
    }
}

#[tokio::test]
async fn an_entry_whose_handler_fails_before_commit_is_redelivered() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let failed_once = Arc::new(AtomicBool::new(false));
    let flag = failed_once.clone();
    let handler = Recorder::new(move |d| {
        if d.envelope.payload.name == "flaky" && !flag.swap(true, Ordering::SeqCst) {
            return Err(HandlerError::Retry(anyhow::anyhow!("database unavailable")));
        }
        Ok(())
    });
    streams.publish(TOPIC, &envelope("steady")).await.unwrap();
    streams.publish(TOPIC, &envelope("flaky")).await.unwrap();
    let task = spawn(&streams, options("g", "c1"), handler.clone(), &env.shutdown);

    eventually(10, "the flaky entry to be committed", || async {
        handler
            .committed()
            .contains(&"flaky".to_owned())
            .then_some(())
    })
    .await;
    let seen = handler.seen();
    assert!(seen.contains(&("flaky".into(), 1)), "{seen:?}");
    assert!(
        seen.contains(&("flaky".into(), 2)),
        "redelivered with its count: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|(n, _)| n == "steady").count(),
        1,
        "a committed entry is not redelivered: {seen:?}"
    );
    eventually(5, "nothing left pending", || async {
        (pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;
    assert_eq!(streams.dlq_len(TOPIC).await.unwrap(), 0);
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// A handler that never finishes: its consumer "dies" holding the batch.
struct Stuck;

#[async_trait::async_trait]
impl Handler for Stuck {
    type Payload = Item;

    async fn handle(&self, _batch: &[Delivery<Item>]) -> Vec<Result<(), HandlerError>> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_entry_left_pending_by_a_killed_consumer_is_reclaimed_by_another() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    streams.publish(TOPIC, &envelope("orphan")).await.unwrap();

    let a_token = CancellationToken::new();
    let a = spawn(&streams, options("g", "a"), Arc::new(Stuck), &a_token);
    eventually(10, "consumer a to hold the entry", || async {
        (pending(&env, &streams, "g").await == 1).then_some(())
    })
    .await;
    a.abort(); // killed: no cleanup, the entry stays pending on `a`
    let _ = a.await;

    let handler = Recorder::accepting();
    let b = spawn(&streams, options("g", "b"), handler.clone(), &env.shutdown);
    eventually(10, "consumer b to reclaim and commit the entry", || async {
        (handler.committed() == ["orphan"]).then_some(())
    })
    .await;
    assert_eq!(
        handler.seen(),
        [("orphan".to_owned(), 2)],
        "claim counts as a delivery"
    );
    eventually(5, "the entry to be acked", || async {
        (pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;
    env.shutdown.cancel();
    b.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_entry_failing_n_times_is_dead_lettered_and_replay_puts_it_back() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let broken = Arc::new(AtomicBool::new(true));
    let still_broken = broken.clone();
    let handler = Recorder::new(move |d| {
        if d.envelope.payload.name == "bad" && still_broken.load(Ordering::SeqCst) {
            return Err(HandlerError::Retry(anyhow::anyhow!(
                "constraint violated: bad row"
            )));
        }
        Ok(())
    });
    let bad = envelope("bad");
    let bad_entry = streams.publish(TOPIC, &bad).await.unwrap();
    streams.publish(TOPIC, &envelope("good")).await.unwrap();
    let task = spawn(&streams, options("g", "c1"), handler.clone(), &env.shutdown);

    let letters = eventually(10, "the failing entry in the DLQ", || async {
        let l = streams.dead_letters(TOPIC, 10).await.unwrap();
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.entry_id, bad_entry);
    assert_eq!(letter.topic, "events.raw");
    assert_eq!(letter.group, "g");
    assert_eq!(letter.deliveries, 3);
    assert!(
        letter.error.contains("constraint violated: bad row"),
        "{}",
        letter.error
    );
    let body: Envelope<Item> = serde_json::from_str(&letter.body).unwrap();
    assert_eq!(body, bad, "the original body is kept byte for byte");
    let bad_seen: Vec<u64> = handler
        .seen()
        .into_iter()
        .filter(|(n, _)| n == "bad")
        .map(|(_, c)| c)
        .collect();
    assert_eq!(bad_seen, [1, 2, 3], "handled exactly max_deliveries times");
    eventually(5, "the dead-lettered entry to be acked", || async {
        (pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;

    broken.store(false, Ordering::SeqCst);
    assert_eq!(
        streams.replay_dead_letter(TOPIC, "0-1").await.unwrap(),
        None
    );
    let new_id = streams
        .replay_dead_letter(TOPIC, &letter.dlq_id)
        .await
        .unwrap()
        .expect("the dead letter exists");
    assert_ne!(new_id, bad_entry, "replayed as a new entry");
    eventually(10, "the replayed entry to be committed", || async {
        handler
            .committed()
            .contains(&"bad".to_owned())
            .then_some(())
    })
    .await;
    assert_eq!(
        streams.dlq_len(TOPIC).await.unwrap(),
        0,
        "replay removes the dead letter"
    );
    assert!(
        handler.seen().contains(&("bad".into(), 1)),
        "delivered afresh"
    );
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn permanent_failures_dead_letter_at_once_and_replay_all_moves_every_letter() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let reject = Arc::new(AtomicBool::new(true));
    let rejecting = reject.clone();
    let handler = Recorder::new(move |d| {
        if d.envelope.payload.name.starts_with("reject") && rejecting.load(Ordering::SeqCst) {
            return Err(HandlerError::Permanent("unknown integration".into()));
        }
        Ok(())
    });
    for name in ["reject-1", "ok", "reject-2"] {
        streams.publish(TOPIC, &envelope(name)).await.unwrap();
    }
    let task = spawn(&streams, options("g", "c1"), handler.clone(), &env.shutdown);
    eventually(10, "both rejections in the DLQ", || async {
        (streams.dlq_len(TOPIC).await.unwrap() == 2).then_some(())
    })
    .await;
    let letters = streams.dead_letters(TOPIC, 10).await.unwrap();
    assert!(
        letters
            .iter()
            .all(|l| l.deliveries == 1 && l.error == "unknown integration")
    );

    reject.store(false, Ordering::SeqCst);
    assert_eq!(streams.replay_all_dead_letters(TOPIC).await.unwrap(), 2);
    eventually(10, "replayed entries committed", || async {
        let c = handler.committed();
        (c.contains(&"reject-1".to_owned()) && c.contains(&"reject-2".to_owned())).then_some(())
    })
    .await;
    assert_eq!(streams.dlq_len(TOPIC).await.unwrap(), 0);
    assert_eq!(streams.replay_all_dead_letters(TOPIC).await.unwrap(), 0);
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn two_prefixes_never_see_each_others_entries() {
    let one = TestEnv::new().await;
    let two = TestEnv::new().await;
    // One side blocks on its own connection, the other polls a shared one: both modes.
    let s1 = one.context().streams();
    let s2 = Streams::new(two.redis.clone(), two.prefix(), 1000);
    assert_ne!(s1.key(TOPIC), s2.key(TOPIC));
    let h1 = Recorder::accepting();
    let h2 = Recorder::accepting();
    let t1 = spawn(&s1, options("g", "c"), h1.clone(), &one.shutdown);
    let t2 = spawn(&s2, options("g", "c"), h2.clone(), &two.shutdown);
    s1.publish_many(TOPIC, &[envelope("one-a"), envelope("one-b")])
        .await
        .unwrap();
    s2.publish(TOPIC, &envelope("two-a")).await.unwrap();

    eventually(10, "each consumer to commit its own entries", || async {
        (h1.committed().len() == 2 && h2.committed().len() == 1).then_some(())
    })
    .await;
    // Give any cross-talk a chance to show before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h1.committed(), ["one-a", "one-b"]);
    assert_eq!(h2.committed(), ["two-a"]);
    assert_eq!(s1.topic_stats(TOPIC).await.unwrap().length, 2);
    assert_eq!(s2.topic_stats(TOPIC).await.unwrap().length, 1);
    one.shutdown.cancel();
    two.shutdown.cancel();
    t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
}

#[tokio::test]
async fn poison_and_unknown_versions_go_to_the_dlq_and_the_consumer_carries_on() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let mut conn = env.redis.clone();
    let key = streams.key(TOPIC);
    let future_version = serde_json::to_string(&envelope("v9"))
        .unwrap()
        .replace("\"v\":1", "\"v\":9");
    let wrong_payload =
        serde_json::to_string(&Envelope::new(Uuid::new_v4(), "t", "k", 42)).unwrap();
    let _: String = conn.xadd(&key, "*", &[("e", "{not json")]).await.unwrap();
    let _: String = conn.xadd(&key, "*", &[("other", "x")]).await.unwrap();
    let _: String = conn
        .xadd(&key, "*", &[("e", future_version.as_str())])
        .await
        .unwrap();
    let _: String = conn
        .xadd(&key, "*", &[("e", wrong_payload.as_str())])
        .await
        .unwrap();
    streams.publish(TOPIC, &envelope("fine")).await.unwrap();

    let handler = Recorder::accepting();
    let task = spawn(&streams, options("g", "c1"), handler.clone(), &env.shutdown);
    eventually(10, "four poison entries dead-lettered", || async {
        (streams.dlq_len(TOPIC).await.unwrap() == 4).then_some(())
    })
    .await;
    let errors: Vec<String> = streams
        .dead_letters(TOPIC, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.error)
        .collect();
    assert!(errors[0].contains("not JSON"), "{errors:?}");
    assert!(errors[1].contains("no `e` field"), "{errors:?}");
    assert!(
        errors[2].contains("unsupported envelope version 9"),
        "{errors:?}"
    );
    assert!(errors[3].contains("does not match"), "{errors:?}");

    streams.publish(TOPIC, &envelope("after")).await.unwrap();
    eventually(10, "good entries committed", || async {
        (handler.committed() == ["fine", "after"]).then_some(())
    })
    .await;
    assert_eq!(pending(&env, &streams, "g").await, 0);
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Commits its first delivery to Postgres and fails the second, but only once the test
/// has cancelled the consumer while the batch is in hand.
struct SlowCommitter {
    db: sqlx::PgPool,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Handler for SlowCommitter {
    type Payload = Item;

    async fn handle(&self, batch: &[Delivery<Item>]) -> Vec<Result<(), HandlerError>> {
        self.entered.notify_one();
        self.release.notified().await;
        let mut results = Vec::new();
        for (i, d) in batch.iter().enumerate() {
            if i == 0 {
                sqlx::query("INSERT INTO committed_items (name) VALUES ($1)")
                    .bind(&d.envelope.payload.name)
                    .execute(&self.db)
                    .await
                    .unwrap();
                results.push(Ok(()));
            } else {
                results.push(Err(HandlerError::Retry(anyhow::anyhow!("shutting down"))));
            }
        }
        results
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_batch_and_acks_nothing_uncommitted() {
    let env = TestEnv::new().await;
    sqlx::query("CREATE TABLE committed_items (name TEXT PRIMARY KEY)")
        .execute(&env.db)
        .await
        .unwrap();
    let streams = env.context().streams();
    streams
        .publish_many(TOPIC, &[envelope("first"), envelope("second")])
        .await
        .unwrap();
    let handler = Arc::new(SlowCommitter {
        db: env.db.clone(),
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let task = spawn(&streams, options("g", "c1"), handler.clone(), &env.shutdown);
    handler.entered.notified().await;
    env.shutdown.cancel();
    streams.publish(TOPIC, &envelope("third")).await.unwrap();
    handler.release.notify_one();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the consumer returns after its batch")
        .unwrap()
        .unwrap();

    let committed: Vec<String> = sqlx::query_scalar("SELECT name FROM committed_items")
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert_eq!(committed, ["first"]);
    let still_pending: redis::streams::StreamPendingCountReply = env
        .redis
        .clone()
        .xpending_count(streams.key(TOPIC), "g", "-", "+", 10)
        .await
        .unwrap();
    let ids: Vec<_> = still_pending.ids.iter().map(|p| p.id.clone()).collect();
    let entries = streams.recent_entries(TOPIC, 10).await.unwrap();
    let second = entries
        .iter()
        .find(|e| e.body.contains("second"))
        .unwrap()
        .entry_id
        .clone();
    assert_eq!(ids, [second], "only the uncommitted entry stays pending");
    let stats = streams.topic_stats(TOPIC).await.unwrap();
    assert_eq!(
        stats.groups[0].lag,
        Some(1),
        "nothing was read after cancellation"
    );
}

#[tokio::test]
async fn a_panicking_handler_only_fails_the_entry_that_panics() {
    struct Panicky(Arc<Recorder>);

    #[async_trait::async_trait]
    impl Handler for Panicky {
        type Payload = Item;

        async fn handle(&self, batch: &[Delivery<Item>]) -> Vec<Result<(), HandlerError>> {
            assert!(
                batch.iter().all(|d| d.envelope.payload.name != "boom"),
                "cannot handle boom"
            );
            self.0.handle(batch).await
        }
    }

    let env = TestEnv::new().await;
    let streams = env.context().streams();
    streams
        .publish_many(TOPIC, &[envelope("a"), envelope("boom"), envelope("b")])
        .await
        .unwrap();
    let recorder = Recorder::accepting();
    let task = spawn(
        &streams,
        options("g", "c1"),
        Arc::new(Panicky(recorder.clone())),
        &env.shutdown,
    );
    let letters = eventually(10, "the panicking entry dead-lettered", || async {
        let l = streams.dead_letters(TOPIC, 10).await.unwrap();
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert!(
        letters[0]
            .error
            .contains("handler panicked: cannot handle boom"),
        "{letters:?}"
    );
    assert_eq!(
        recorder.committed(),
        ["a", "b"],
        "batch-mates committed once each"
    );
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_consumer_recreates_its_group_after_redis_loses_the_stream() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let handler = Recorder::accepting();
    let task = spawn(&streams, options("g", "c1"), handler.clone(), &env.shutdown);
    streams.publish(TOPIC, &envelope("before")).await.unwrap();
    eventually(10, "first entry committed", || async {
        (handler.committed().len() == 1).then_some(())
    })
    .await;
    let _: () = env.redis.clone().del(streams.key(TOPIC)).await.unwrap();
    // Published into a fresh stream with no group: the consumer must re-create it from 0.
    streams.publish(TOPIC, &envelope("after")).await.unwrap();
    eventually(15, "entry after the wipe committed", || async {
        (handler.committed() == ["before", "after"]).then_some(())
    })
    .await;
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn stats_and_recent_entries_describe_the_topic() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let empty = streams.topic_stats(TOPIC).await.unwrap();
    assert_eq!(
        (empty.length, empty.dlq_length, empty.groups.len()),
        (0, 0, 0)
    );

    let ids = streams
        .publish_many(TOPIC, &[envelope("x"), envelope("y"), envelope("z")])
        .await
        .unwrap();
    let recent = streams.recent_entries(TOPIC, 2).await.unwrap();
    assert_eq!(
        recent
            .iter()
            .map(|e| e.entry_id.clone())
            .collect::<Vec<_>>(),
        [ids[2].clone(), ids[1].clone()],
        "newest first"
    );
    let decoded = recent[0].envelope.as_ref().expect("an envelope");
    assert_eq!(decoded.payload["name"], "z");
    assert!(recent[0].appended_at.is_some());

    // A consumer that takes a batch of one entry and never finishes it, having read the
    // next batch (the second entry) ahead.
    let mut opts = options("slow", "c1");
    opts.batch_size = 1;
    let task = spawn(&streams, opts, Arc::new(Stuck), &env.shutdown);
    let stats = eventually(10, "two entries pending", || async {
        let s = streams.topic_stats(TOPIC).await.unwrap();
        (s.pending() == 2).then_some(s)
    })
    .await;
    assert_eq!(stats.topic, "events.raw");
    assert_eq!(stats.key, format!("{}events.raw", env.prefix()));
    assert_eq!(stats.length, 3);
    assert_eq!(stats.last_entry_id.as_deref(), Some(ids[2].as_str()));
    let g = &stats.groups[0];
    assert_eq!(
        (g.name.as_str(), g.consumers, g.pending, g.lag),
        ("slow", 1, 2, Some(1))
    );
    assert_eq!(g.last_delivered_id, ids[1]);
    task.abort();
}

#[tokio::test]
async fn metrics_count_processed_failed_and_dead_lettered_entries_and_the_dlq_size() {
    let metrics = telemetry::metrics_handle();
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let group = format!("metrics-{}", Uuid::new_v4().simple());
    let handler = Recorder::new(|d| {
        if d.envelope.payload.name == "bad" {
            Err(HandlerError::Permanent("no".into()))
        } else {
            Ok(())
        }
    });
    streams
        .publish_many(TOPIC, &[envelope("ok"), envelope("bad")])
        .await
        .unwrap();
    let task = spawn(&streams, options(&group, "c1"), handler, &env.shutdown);
    let line = |name: &str, text: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(&group))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    eventually(10, "metrics for the group", || async {
        let text = metrics.render();
        let values: HashMap<&str, Option<String>> = [
            "streams_entries_processed_total",
            "streams_entries_failed_total",
            "streams_entries_dead_lettered_total",
        ]
        .into_iter()
        .map(|n| (n, line(n, &text)))
        .collect();
        (values.values().all(|v| v.as_deref() == Some("1"))
            && line("streams_pending_entries", &text).as_deref() == Some("0")
            && line("streams_dlq_entries", &text).as_deref() == Some("1"))
        .then_some(())
    })
    .await;
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// An outbox kept in memory: the relay's contract, not a stand-in for Postgres (ingest
/// tests its own store over `customer_raw_event`).
#[derive(Default)]
struct MemoryOutbox {
    rows: Mutex<Vec<(OutboxRow, bool)>>,
}

#[async_trait::async_trait]
impl OutboxStore for MemoryOutbox {
    async fn unpublished(
        &self,
        limit: usize,
        older_than: Duration,
    ) -> anyhow::Result<Vec<OutboxRow>> {
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(older_than)?;
        Ok(self
            .rows
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, _, e), published)| !published && e.received_at <= cutoff)
            .take(limit)
            .map(|(row, _)| row.clone())
            .collect())
    }

    async fn mark_published(&self, ids: &[Uuid]) -> anyhow::Result<()> {
        let ids: HashSet<_> = ids.iter().collect();
        for row in self.rows.lock().unwrap().iter_mut() {
            if ids.contains(&row.0.0) {
                row.1 = true;
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_outbox_relay_publishes_old_unpublished_rows_once() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let store = Arc::new(MemoryOutbox::default());
    let old = chrono::Utc::now() - chrono::Duration::seconds(60);
    let add = |topic, name: &str, received_at| {
        let mut e = Envelope::new(
            Uuid::new_v4(),
            "test",
            "item",
            serde_json::json!({ "name": name }),
        );
        e.received_at = received_at;
        store.rows.lock().unwrap().push(((e.id, topic, e), false));
    };
    add(Topic::EventsRaw, "raw-1", old);
    add(Topic::EventsRaw, "raw-2", old);
    add(Topic::PredictionsRequests, "predict", old);
    add(
        Topic::EventsRaw,
        "fresh",
        chrono::Utc::now() + chrono::Duration::seconds(60),
    );

    let n = streams::relay_once(&streams, store.as_ref(), 100, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(n, 3, "the fresh row is left to its own publisher");
    let raw: Vec<String> = streams
        .recent_entries(Topic::EventsRaw, 10)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| {
            e.envelope
                .map(|e| e.payload["name"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(raw, ["raw-2", "raw-1"]);
    assert_eq!(
        streams
            .topic_stats(Topic::PredictionsRequests)
            .await
            .unwrap()
            .length,
        1
    );
    assert_eq!(
        streams::relay_once(&streams, store.as_ref(), 100, Duration::from_secs(5))
            .await
            .unwrap(),
        0,
        "published rows are not published again"
    );

    // The running relay picks up the fresh row once it is old enough.
    store.rows.lock().unwrap()[3].0.2.received_at = old;
    let relay = tokio::spawn(streams::run_outbox_relay(
        streams.clone(),
        store.clone(),
        Duration::from_millis(50),
        env.shutdown.clone(),
    ));
    eventually(10, "the relay to publish the last row", || async {
        (streams.topic_stats(Topic::EventsRaw).await.unwrap().length == 3).then_some(())
    })
    .await;
    env.shutdown.cancel();
    relay.await.unwrap().unwrap();
}

#[tokio::test]
async fn consumers_that_left_holding_nothing_are_forgotten() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let key = streams.key(TOPIC);
    let mut conn = env.redis.clone();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    // A replica that handled an entry and exited (holding nothing), and one that died
    // holding an entry: the first may be forgotten at once, the second only after its
    // entry has been taken over (forgetting it earlier would lose the entry).
    let read_as = |consumer: &'static str| {
        let mut conn = conn.clone();
        let key = key.clone();
        async move {
            let reply: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg(consumer)
                .arg("STREAMS")
                .arg(&key)
                .arg(">")
                .query_async(&mut conn)
                .await
                .unwrap();
            reply
        }
    };
    let early = streams.publish(TOPIC, &envelope("early")).await.unwrap();
    read_as("gone").await;
    let _: i64 = conn.clone().xack(&key, "g", &[&early]).await.unwrap();
    streams.publish(TOPIC, &envelope("held")).await.unwrap();
    read_as("crashed").await;

    let handler = Recorder::accepting();
    let mut opts = options("g", "live");
    opts.claim_idle = Duration::from_millis(100);
    let task = spawn(&streams, opts, handler.clone(), &env.shutdown);
    eventually(15, "departed consumers forgotten", || async {
        let consumers: redis::streams::StreamInfoConsumersReply =
            conn.clone().xinfo_consumers(&key, "g").await.unwrap();
        let names: Vec<String> = consumers.consumers.into_iter().map(|c| c.name).collect();
        (names == ["live"]).then_some(())
    })
    .await;
    assert_eq!(
        handler.committed(),
        ["held"],
        "the crashed replica's entry was taken over"
    );
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_restarted_consumer_settles_everything_it_left_pending() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let names = ["p1", "p2", "p3", "p4", "p5"];
    let batch: Vec<_> = names.iter().map(|n| envelope(n)).collect();
    streams.publish_many(TOPIC, &batch).await.unwrap();
    // The previous run of consumer `c1` read all five and died before acking.
    let mut conn = env.redis.clone();
    let key = streams.key(TOPIC);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c1")
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();

    // Same name, batches of two, and a claim timeout far beyond the test: only its own
    // pending scan can deliver them.
    let mut opts = options("g", "c1");
    opts.batch_size = 2;
    opts.claim_idle = Duration::from_secs(600);
    let handler = Recorder::accepting();
    let task = spawn(&streams, opts, handler.clone(), &env.shutdown);
    eventually(10, "all five settled", || async {
        (handler.committed().len() == 5).then_some(())
    })
    .await;
    assert_eq!(handler.committed(), names);
    assert!(
        handler.seen().iter().all(|(_, count)| *count == 2),
        "{:?}",
        handler.seen()
    );
    assert_eq!(pending(&env, &streams, "g").await, 0);
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// A handler that commits a batch only as a whole, as a set-based write does: any
/// `poison` entry in it fails every entry of the batch with `Permanent`, and while `down`
/// is set every batch fails with `Transient` (an outage). Records each call's entries
/// with their delivery counts.
struct AllOrNothing {
    down: AtomicBool,
    calls: Mutex<Vec<Vec<(String, u64)>>>,
    committed: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Handler for AllOrNothing {
    type Payload = Item;

    async fn handle(&self, batch: &[Delivery<Item>]) -> Vec<Result<(), HandlerError>> {
        let names: Vec<(String, u64)> = batch
            .iter()
            .map(|d| (d.envelope.payload.name.clone(), d.delivery_count))
            .collect();
        self.calls.lock().unwrap().push(names.clone());
        if self.down.load(Ordering::SeqCst) {
            return batch
                .iter()
                .map(|_| {
                    Err(HandlerError::Transient(anyhow::anyhow!(
                        "connection refused"
                    )))
                })
                .collect();
        }
        if names.iter().any(|(n, _)| n == "poison") {
            return batch
                .iter()
                .map(|_| Err(HandlerError::Permanent("numeric field overflow".into())))
                .collect();
        }
        self.committed
            .lock()
            .unwrap()
            .extend(names.into_iter().map(|(n, _)| n));
        batch.iter().map(|_| Ok(())).collect()
    }
}

fn all_or_nothing(down: bool) -> Arc<AllOrNothing> {
    Arc::new(AllOrNothing {
        down: AtomicBool::new(down),
        calls: Mutex::default(),
        committed: Mutex::default(),
    })
}

#[tokio::test]
async fn a_batch_failing_whole_is_halved_until_only_its_culprit_is_dead_lettered() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let names: Vec<String> = (0..13)
        .map(|i| {
            if i == 9 {
                "poison".into()
            } else {
                format!("ok-{i}")
            }
        })
        .collect();
    // Published before the consumer starts: one batch of 13.
    for name in &names {
        streams.publish(TOPIC, &envelope(name)).await.unwrap();
    }
    let handler = all_or_nothing(false);
    let task = spawn(&streams, options("g", "c1"), handler.clone(), &env.shutdown);
    eventually(10, "the culprit dead-lettered", || async {
        (streams.dlq_len(TOPIC).await.unwrap() == 1).then_some(())
    })
    .await;
    eventually(10, "everything settled", || async {
        (pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;
    let letters = streams.dead_letters(TOPIC, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].body.contains("poison"), "{letters:?}");
    assert_eq!(
        (letters[0].error.as_str(), letters[0].deliveries),
        ("numeric field overflow", 1)
    );
    // Every innocent entry committed exactly once, all on their first delivery.
    let mut committed = handler.committed.lock().unwrap().clone();
    committed.sort();
    let mut innocent: Vec<String> = names.into_iter().filter(|n| n != "poison").collect();
    innocent.sort();
    assert_eq!(committed, innocent);
    let calls = handler.calls.lock().unwrap().clone();
    assert_eq!(calls[0].len(), 13, "first the whole batch: {calls:?}");
    assert!(
        calls.iter().flatten().all(|(_, count)| *count == 1),
        "{calls:?}"
    );
    // Halving 13 down to the one culprit takes a handful of calls, not one per entry.
    assert!(calls.len() <= 9, "{} calls: {calls:?}", calls.len());
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_outage_holds_entries_without_counting_a_delivery_or_dead_lettering() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    for i in 0..5 {
        streams
            .publish(TOPIC, &envelope(&format!("e-{i}")))
            .await
            .unwrap();
    }
    let handler = all_or_nothing(true);
    // One allowed delivery: any counted retry would dead-letter at once.
    let mut opts = options("g", "c1");
    opts.max_deliveries = 1;
    let task = spawn(&streams, opts, handler.clone(), &env.shutdown);
    // Several pauses, past the claim timeout (300 ms) more than once.
    eventually(20, "the outage retried a few times", || async {
        (handler.calls.lock().unwrap().len() >= 5).then_some(())
    })
    .await;
    let calls = handler.calls.lock().unwrap().clone();
    assert!(
        calls.iter().all(|c| c.len() == 5),
        "an outage is not halved: {calls:?}"
    );
    assert!(
        calls.iter().flatten().all(|(_, count)| *count == 1),
        "an outage counted a delivery: {calls:?}"
    );
    assert_eq!(streams.dlq_len(TOPIC).await.unwrap(), 0);
    assert_eq!(pending(&env, &streams, "g").await, 5);

    handler.down.store(false, Ordering::SeqCst);
    eventually(20, "every entry committed after the outage", || async {
        (pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;
    assert_eq!(handler.committed.lock().unwrap().len(), 5);
    assert_eq!(streams.dlq_len(TOPIC).await.unwrap(), 0);
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_dead_letter_stream_is_capped_and_what_trimming_drops_is_counted() {
    let metrics = telemetry::metrics_handle();
    let env = TestEnv::with_settings([("STREAM_DLQ_MAXLEN", "10".to_owned())]).await;
    let streams = env.context().streams();
    assert_eq!(streams.dlq_maxlen(), 10);
    let handler = Recorder::new(|_| Err(HandlerError::Permanent("bad input".into())));
    let bad: Vec<Envelope<Item>> = (0..300).map(|i| envelope(&format!("bad-{i}"))).collect();
    streams.publish_many(TOPIC, &bad).await.unwrap();
    let task = spawn(&streams, options("g", "c1"), handler.clone(), &env.shutdown);
    eventually(30, "every entry dead-lettered", || async {
        // Every entry of a batch failing makes the runner halve it (it cannot tell one
        // bad entry failing its batch from all of them bad), so entries are seen more
        // than once: count them once each.
        let distinct: HashSet<String> = handler.seen().into_iter().map(|(n, _)| n).collect();
        (distinct.len() == 300 && pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;
    // `MAXLEN ~` trims whole nodes (100 entries by default), never below the cap.
    let kept = streams.dlq_len(TOPIC).await.unwrap();
    assert!((10..=110).contains(&kept), "{kept} dead letters kept");
    let letters = streams.dead_letters(TOPIC, 1000).await.unwrap();
    assert!(
        letters.last().unwrap().body.contains("bad-299"),
        "the newest dead letters are kept"
    );
    let trimmed = metrics
        .render()
        .lines()
        .find(|l| l.starts_with("streams_dead_letters_trimmed_total") && l.contains("events.raw"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap());
    assert_eq!(trimmed, Some(300 - kept));
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// A handler that holds its first call until released (or forever), then accepts
/// everything; records each call's entries with their delivery counts, and "commits"
/// accepted entries.
struct HoldsFirstBatch {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
    /// How long the first call takes when it is not held for a release.
    first_takes: Option<Duration>,
    calls: Mutex<Vec<Vec<(String, u64)>>>,
    committed: Mutex<Vec<String>>,
}

impl HoldsFirstBatch {
    fn new(first_takes: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            entered: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
            first_takes,
            calls: Mutex::default(),
            committed: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<Vec<(String, u64)>> {
        self.calls.lock().unwrap().clone()
    }

    fn committed(&self) -> Vec<String> {
        self.committed.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Handler for HoldsFirstBatch {
    type Payload = Item;

    async fn handle(&self, batch: &[Delivery<Item>]) -> Vec<Result<(), HandlerError>> {
        let names: Vec<(String, u64)> = batch
            .iter()
            .map(|d| (d.envelope.payload.name.clone(), d.delivery_count))
            .collect();
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(names.clone());
            calls.len() == 1
        };
        if first {
            self.entered.notify_one();
            match self.first_takes {
                Some(d) => tokio::time::sleep(d).await,
                None => self.release.notified().await,
            }
        }
        self.committed
            .lock()
            .unwrap()
            .extend(names.into_iter().map(|(n, _)| n));
        batch.iter().map(|_| Ok(())).collect()
    }
}

fn numbered(n: usize) -> (Vec<String>, Vec<Envelope<Item>>) {
    let names: Vec<String> = (0..n).map(|i| format!("e{i:02}")).collect();
    let envelopes = names.iter().map(|n| envelope(n)).collect();
    (names, envelopes)
}

#[tokio::test]
async fn the_next_batch_is_read_while_the_handler_still_holds_the_current_one() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let (names, envelopes) = numbered(32);
    streams.publish_many(TOPIC, &envelopes).await.unwrap();

    let handler = HoldsFirstBatch::new(None);
    let mut opts = options("g", "c1"); // batches of 16
    opts.claim_idle = Duration::from_secs(30);
    let task = spawn(&streams, opts, handler.clone(), &env.shutdown);
    handler.entered.notified().await;
    // The handler holds the first batch, uncommitted: the second is already read.
    eventually(10, "the second batch read ahead", || async {
        (pending(&env, &streams, "g").await == 32).then_some(())
    })
    .await;
    assert_eq!(
        handler.calls().len(),
        1,
        "one batch in the handler at a time"
    );
    assert!(handler.committed().is_empty());
    let stats = streams.topic_stats(TOPIC).await.unwrap();
    assert_eq!(stats.groups[0].lag, Some(0), "every entry was read");

    handler.release.notify_one();
    eventually(10, "both batches committed and acked", || async {
        (handler.committed().len() == 32 && pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;
    // Handed over in the order read, each once, on its first delivery.
    assert_eq!(handler.committed(), names);
    let calls = handler.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().flatten().all(|(_, count)| *count == 1));
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_consumer_killed_with_a_batch_read_ahead_loses_nothing_and_doubles_nothing() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let (names, envelopes) = numbered(32);
    streams.publish_many(TOPIC, &envelopes).await.unwrap();

    // `a` holds its first batch forever, uncommitted, with the second read ahead.
    let stuck = HoldsFirstBatch::new(None);
    let a_token = CancellationToken::new();
    let a = spawn(&streams, options("g", "a"), stuck.clone(), &a_token);
    stuck.entered.notified().await;
    eventually(10, "consumer a to hold both batches", || async {
        (pending(&env, &streams, "g").await == 32).then_some(())
    })
    .await;
    a.abort(); // killed: no cleanup, both batches stay pending on `a`
    let _ = a.await;
    assert!(stuck.committed().is_empty());

    let handler = Recorder::accepting();
    let b = spawn(&streams, options("g", "b"), handler.clone(), &env.shutdown);
    assert_each_committed_once(&env, &streams, &handler, &names).await;
    env.shutdown.cancel();
    b.await.unwrap().unwrap();
}

/// Waits until `handler` has committed `names` (sorted) and nothing is pending, then
/// checks that each was committed exactly once.
async fn assert_each_committed_once(
    env: &TestEnv,
    streams: &Streams,
    handler: &Recorder,
    names: &[String],
) {
    eventually(
        20,
        "the other consumer to reclaim and commit every entry",
        || async {
            (handler.committed().len() >= names.len() && pending(env, streams, "g").await == 0)
                .then_some(())
        },
    )
    .await;
    let mut committed = handler.committed();
    committed.sort();
    assert_eq!(committed, names, "every entry committed exactly once");
}

#[tokio::test]
async fn a_batch_read_ahead_but_held_too_long_is_re_read_from_the_pending_list() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let (names, envelopes) = numbered(32);
    streams.publish_many(TOPIC, &envelopes).await.unwrap();

    // The first batch takes longer than the claim timeout: by then another replica could
    // have claimed the batch read ahead, so it is not handed over from memory.
    let handler = HoldsFirstBatch::new(Some(Duration::from_millis(400)));
    let task = spawn(&streams, options("g", "c1"), handler.clone(), &env.shutdown);
    eventually(10, "both batches committed and acked", || async {
        (handler.committed().len() == 32 && pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;
    assert_eq!(handler.committed(), names);
    let calls = handler.calls();
    assert!(calls[0].iter().all(|(_, count)| *count == 1), "{calls:?}");
    assert!(
        calls[1..].iter().flatten().all(|(_, count)| *count == 2),
        "the second batch came again from the pending list: {calls:?}"
    );
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// `inner` with an order of its own: an entry named `k<n>` belongs at time `n` seconds.
struct Ordered<H>(Arc<H>);

#[async_trait::async_trait]
impl<H: Handler<Payload = Item>> Handler for Ordered<H> {
    type Payload = Item;

    async fn handle(&self, batch: &[Delivery<Item>]) -> Vec<Result<(), HandlerError>> {
        self.0.handle(batch).await
    }

    fn order_key(&self, d: &Delivery<Item>) -> Option<streams::window::OrderKey> {
        let n: i64 = d
            .envelope
            .payload
            .name
            .trim_start_matches('k')
            .parse()
            .ok()?;
        Some((chrono::DateTime::from_timestamp(n, 0)?, d.envelope.id))
    }
}

/// Entries named `k<n>` for each `n`, in that order.
fn keyed(ns: impl IntoIterator<Item = u32>) -> Vec<Envelope<Item>> {
    ns.into_iter().map(|n| envelope(&format!("k{n}"))).collect()
}

/// Three batches of 16 entries, each later in the order than the batch after it, and
/// their names sorted.
fn three_batches_later_first() -> (Vec<Envelope<Item>>, Vec<String>) {
    let envelopes = keyed((200..216).chain(100..116).chain(0..16));
    let mut names: Vec<String> = envelopes.iter().map(|e| e.payload.name.clone()).collect();
    names.sort();
    (envelopes, names)
}

fn names(calls: &[Vec<(String, u64)>]) -> Vec<Vec<String>> {
    calls
        .iter()
        .map(|c| c.iter().map(|(n, _)| n.clone()).collect())
        .collect()
}

#[tokio::test]
async fn under_a_backlog_two_reads_are_handed_over_merged_in_the_handlers_order() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    // Two batches of 16: the second holds the earlier half of the order.
    let envelopes = keyed((100..116).chain(0..16));
    streams.publish_many(TOPIC, &envelopes).await.unwrap();

    let handler = HoldsFirstBatch::new(Some(Duration::ZERO));
    let mut opts = options("g", "c1");
    opts.claim_idle = Duration::from_secs(30);
    let task = spawn(
        &streams,
        opts,
        Arc::new(Ordered(handler.clone())),
        &env.shutdown,
    );
    eventually(10, "every entry committed and acked", || async {
        (handler.committed().len() == 32 && pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;
    let expected: Vec<String> = (0..16).chain(100..116).map(|n| format!("k{n}")).collect();
    assert_eq!(
        handler.committed(),
        expected,
        "applied in the handler's order"
    );
    let calls = handler.calls();
    assert_eq!(
        names(&calls)[0],
        expected[..16],
        "the first step gets the earliest batch of both reads: {calls:?}"
    );
    assert!(calls.iter().flatten().all(|(_, count)| *count == 1));
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn entries_one_replica_holds_back_are_merged_into_another_replicas_next_read() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    // Two batches of 16, the second earlier in the order than the first.
    streams
        .publish_many(TOPIC, &keyed((100..116).chain(0..16)))
        .await
        .unwrap();
    // `a` merges both reads, hands the earliest 16 (k0..k15) to a handler that never
    // returns and gives the other 16 (k100..k115) back to be held.
    let stuck = HoldsFirstBatch::new(None);
    let a_token = CancellationToken::new();
    let mut opts = options("g", "a");
    opts.claim_idle = Duration::from_secs(30);
    let a = spawn(&streams, opts, Arc::new(Ordered(stuck.clone())), &a_token);
    stuck.entered.notified().await;
    let first: Vec<String> = (0..16).map(|n| format!("k{n}")).collect();
    assert_eq!(names(&stuck.calls()), vec![first]);
    // `a` read ahead (finding nothing) as it handed that batch over; let that read land
    // before publishing more, so the next batch is b's.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another replica reads the next batch, which belongs around the held entries: it
    // merges them in, while `a` is still alive and busy.
    streams
        .publish_many(TOPIC, &keyed((90..98).chain(120..128)))
        .await
        .unwrap();
    let handler = HoldsFirstBatch::new(Some(Duration::ZERO));
    let mut opts = options("g", "b");
    opts.claim_idle = Duration::from_secs(30);
    let b = spawn(
        &streams,
        opts,
        Arc::new(Ordered(handler.clone())),
        &env.shutdown,
    );
    eventually(10, "b to commit its read and the held entries", || async {
        (handler.committed().len() == 32 && pending(&env, &streams, "g").await == 16).then_some(())
    })
    .await;
    let k = |r: std::ops::Range<u32>| r.map(|n| format!("k{n}")).collect::<Vec<_>>();
    // b counts two replicas reading, so the window holds two batches: b's full read and
    // the held entries are held together, and go, merged, when nothing more is waiting.
    let expected = vec![[k(90..98), k(100..116), k(120..128)].concat()];
    let calls = handler.calls();
    assert_eq!(names(&calls), expected, "merged across replicas");
    assert!(
        calls.iter().flatten().all(|(_, count)| *count == 1),
        "holding counts no delivery: {calls:?}"
    );
    env.shutdown.cancel();
    b.await.unwrap().unwrap();
    a.abort();
    let _ = a.await;
}

#[tokio::test]
async fn without_a_backlog_nothing_is_held_back() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    // Fewer than a batch, out of order: handed over at once, in one call, sorted.
    streams
        .publish_many(TOPIC, &keyed([5, 3, 9, 1]))
        .await
        .unwrap();
    let handler = HoldsFirstBatch::new(Some(Duration::ZERO));
    let task = spawn(
        &streams,
        options("g", "c1"),
        Arc::new(Ordered(handler.clone())),
        &env.shutdown,
    );
    eventually(10, "the entries committed", || async {
        (handler.committed().len() == 4).then_some(())
    })
    .await;
    assert_eq!(names(&handler.calls()), vec![vec!["k1", "k3", "k5", "k9"]]);
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_consumer_killed_holding_entries_back_loses_nothing_and_doubles_nothing() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let (envelopes, names_published) = three_batches_later_first();
    streams.publish_many(TOPIC, &envelopes).await.unwrap();

    // `a` merges its first two reads, hands the earliest 16 to a handler that never
    // returns, holds the other 16 back and reads the third batch ahead.
    let stuck = HoldsFirstBatch::new(None);
    let a_token = CancellationToken::new();
    let mut opts = options("g", "a");
    opts.claim_idle = Duration::from_secs(1);
    let a = spawn(&streams, opts, Arc::new(Ordered(stuck.clone())), &a_token);
    stuck.entered.notified().await;
    eventually(10, "consumer a to hold every entry", || async {
        (pending(&env, &streams, "g").await == 48).then_some(())
    })
    .await;
    let first: Vec<String> = (100..116).map(|n| format!("k{n}")).collect();
    assert_eq!(
        names(&stuck.calls()),
        vec![first],
        "merged across two reads"
    );
    a.abort(); // killed: the batch in the handler, the held and the read-ahead entries stay pending
    let _ = a.await;
    assert!(stuck.committed().is_empty());

    let handler = Recorder::accepting();
    let mut opts = options("g", "b");
    opts.claim_idle = Duration::from_secs(1);
    let b = spawn(
        &streams,
        opts,
        Arc::new(Ordered(handler.clone())),
        &env.shutdown,
    );
    assert_each_committed_once(&env, &streams, &handler, &names_published).await;
    env.shutdown.cancel();
    b.await.unwrap().unwrap();
}

#[tokio::test]
async fn entries_held_back_longer_than_the_claim_timeout_are_claimed_and_committed_once() {
    let env = TestEnv::new().await;
    let streams = env.context().streams();
    let (envelopes, expected) = three_batches_later_first();
    streams.publish_many(TOPIC, &envelopes).await.unwrap();

    // The first step takes longer than the claim timeout while a batch is held back (and
    // another read ahead): the read-ahead batch is re-read from the pending list, the
    // held one claimed from its holder like a dead replica's entries.
    let handler = HoldsFirstBatch::new(Some(Duration::from_millis(400)));
    let task = spawn(
        &streams,
        options("g", "c1"),
        Arc::new(Ordered(handler.clone())),
        &env.shutdown,
    );
    eventually(10, "every entry committed and acked", || async {
        (handler.committed().len() >= 48 && pending(&env, &streams, "g").await == 0).then_some(())
    })
    .await;
    let mut committed = handler.committed();
    committed.sort();
    assert_eq!(committed, expected, "every entry committed exactly once");
    let calls = handler.calls();
    assert!(calls[0].iter().all(|(_, count)| *count == 1), "{calls:?}");
    assert!(
        calls[1..].iter().flatten().any(|(_, count)| *count == 2),
        "the entries held came again through the pending list: {calls:?}"
    );
    env.shutdown.cancel();
    task.await.unwrap().unwrap();
}
