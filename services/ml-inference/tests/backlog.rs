//! Online scoring under a backlog of the pipeline, on real Postgres and Redis: while
//! `events.normalized` holds more entries than `ML_DEFER_BACKLOG`, ml-inference holds
//! the requests it read and leaves later ones queued; once the backlog drains, every
//! requested profile is scored and every request acknowledged. Without a drain the wait
//! ends at `ML_DEFER_MAX_MS`.

use chrono::{TimeZone, Utc};
use scenario::{BrandConfig, generate};
use streams::Topic;
use test_support::{TestEnv, eventually};
use uuid::Uuid;

mod common;
use common::request;

/// The consumer group whose backlog is simulated (the merger's, which is not running).
const MERGER: &str = "identity-merger";

/// A brand loaded and its models trained, with the given settings.
async fn trained(defer_max_ms: u64) -> (TestEnv, Vec<Uuid>) {
    let env = TestEnv::with_settings([
        ("ML_RETRAIN_INTERVAL_HOURS", "0".to_owned()),
        ("ML_DEFER_BACKLOG", "100".to_owned()),
        ("ML_DEFER_MAX_MS", defer_max_ms.to_string()),
        // Long enough that the cap of half the claim timeout does not shorten the wait.
        ("STREAM_CLAIM_IDLE_MS", "600000".to_owned()),
        ("ML_BATCH_SIZE", "40".to_owned()),
    ])
    .await;
    let b = generate(&BrandConfig {
        seed: 43,
        customers: 200,
        months: 15,
        end: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        ..BrandConfig::default()
    });
    ml::load::load_brand(&env.db, &b).await.unwrap();
    ml::pipeline::train_and_register(&env.db, &env.settings.ml, b.config.end)
        .await
        .unwrap();
    let ids = sqlx::query_scalar("SELECT id FROM customer_profile ORDER BY id LIMIT 120")
        .fetch_all(&env.db)
        .await
        .unwrap();
    (env, ids)
}

/// `n` entries on `events.normalized` that the merger's group has not read yet.
async fn pile_up(env: &TestEnv, n: usize) {
    let key = Topic::EventsNormalized.key(env.prefix());
    let mut redis = env.redis.clone();
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg(MERGER)
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("body")
            .arg(i)
            .ignore();
    }
    pipe.query_async::<()>(&mut redis).await.unwrap();
}

/// The merger catches up: its group has nothing left to read.
async fn drain(env: &TestEnv) {
    let mut redis = env.redis.clone();
    redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(Topic::EventsNormalized.key(env.prefix()))
        .arg(MERGER)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
}

/// ml-inference's group on `predictions.requests`: (pending, undelivered).
async fn requests_state(env: &TestEnv) -> (u64, u64) {
    let stats = env
        .context()
        .streams()
        .topic_stats(Topic::PredictionsRequests)
        .await
        .unwrap();
    stats
        .groups
        .iter()
        .find(|g| g.name == ml_inference::GROUP)
        .map_or((0, u64::MAX), |g| (g.pending, g.lag.unwrap_or(u64::MAX)))
}

/// How many of `ids` have a segment (every live profile gets one when scored).
async fn scored(env: &TestEnv, ids: &[Uuid]) -> usize {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM predictions WHERE task = 'segment' AND profile_id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(&env.db)
    .await
    .unwrap();
    n as usize
}

#[tokio::test]
async fn scoring_waits_for_the_backlog_and_then_scores_every_request() {
    let (env, ids) = trained(600_000).await;
    pile_up(&env, 500).await;
    let scorer = ml_inference::Scorer::new(&env.context());
    assert!(scorer.backlog().await.unwrap() >= 500);

    env.spawn(ml_inference::run).await;
    let (first, rest) = ids.split_at(30);
    request(&env, first).await;
    // The consumer takes (some of) the first requests and holds them, unscored.
    eventually(60, "the first batch in hand", || async {
        (requests_state(&env).await.0 > 0).then_some(())
    })
    .await;
    // Requests keep coming during the backlog, some of them twice.
    request(&env, rest).await;
    request(&env, &rest[..10]).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        scored(&env, &ids).await,
        0,
        "nothing scored during the backlog"
    );
    let (held, queued) = requests_state(&env).await;
    assert!(held <= 40, "one batch in hand: {held}");
    assert_eq!(
        held + queued,
        (ids.len() + 10) as u64,
        "every request is held or queued"
    );

    drain(&env).await;
    eventually(120, "every requested profile scored", || async {
        (scored(&env, &ids).await == ids.len()).then_some(())
    })
    .await;
    eventually(30, "every request acknowledged", || async {
        (requests_state(&env).await == (0, 0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_backlog_that_never_drains_delays_scoring_by_the_bound_only() {
    let (env, ids) = trained(1_500).await;
    pile_up(&env, 500).await;
    env.spawn(ml_inference::run).await;
    request(&env, &ids).await;
    eventually(120, "every requested profile scored", || async {
        (scored(&env, &ids).await == ids.len()).then_some(())
    })
    .await;
    let scorer = ml_inference::Scorer::new(&env.context());
    assert!(
        scorer.backlog().await.unwrap() >= 500,
        "scored while the backlog was still there"
    );
}
