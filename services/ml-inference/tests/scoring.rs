//! ml-inference end to end on real Postgres and Redis: profiles published on
//! `predictions.requests` get features, predictions from the active models and a fresh
//! Customer 360 document; a newly activated model is picked up without a restart; a
//! scheduled training run registers models and re-scores everyone.

use chrono::{TimeZone, Utc};
use ml::registry::{self, NewModelVersion, Task};
use redis::AsyncCommands;
use scenario::{Brand, BrandConfig, generate};
use test_support::{TestEnv, eventually};
use uuid::Uuid;

mod common;
use common::request;

fn brand() -> Brand {
    generate(&BrandConfig {
        seed: 41,
        customers: 500,
        months: 15,
        end: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        ..BrandConfig::default()
    })
}

async fn env_with_brand() -> (TestEnv, Brand) {
    // The schedule is tested through `retrain_and_rescore`; off here so it never races.
    let env = TestEnv::with_settings([("ML_RETRAIN_INTERVAL_HOURS", "0".to_owned())]).await;
    let b = brand();
    ml::load::load_brand(&env.db, &b).await.unwrap();
    (env, b)
}

async fn prediction(
    env: &TestEnv,
    profile: Uuid,
    task: &str,
) -> Option<(Uuid, Option<f64>, Option<String>)> {
    sqlx::query_as("SELECT model_version_id, score, label FROM predictions WHERE profile_id = $1 AND task = $2")
        .bind(profile)
        .bind(task)
        .fetch_optional(&env.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn scores_requested_profiles_and_reloads_when_the_active_model_changes() {
    let (env, b) = env_with_brand().await;
    pipeline_train(&env, &b).await;
    let active = registry::active(&env.db).await.unwrap();
    let churn = active
        .iter()
        .find(|v| v.task == Task::Churn)
        .unwrap()
        .clone();
    let segment = active.iter().find(|v| v.task == Task::Segment).unwrap().id;

    // Buyers and a prospect, one requested twice, one merged into another, one unknown.
    let buyers: Vec<Uuid> =
        sqlx::query_scalar("SELECT DISTINCT profile_id FROM orders WHERE status = 'paid' LIMIT 6")
            .fetch_all(&env.db)
            .await
            .unwrap();
    let prospect: Uuid = sqlx::query_scalar(
        "SELECT id FROM customer_profile p WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.profile_id = p.id) LIMIT 1",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    let (survivor, absorbed) = (buyers[4], buyers[5]);
    sqlx::query("UPDATE customer_profile SET merged_into = $1, merged_at = now() WHERE id = $2")
        .bind(survivor)
        .bind(absorbed)
        .execute(&env.db)
        .await
        .unwrap();

    env.spawn(ml_inference::run).await;
    let mut asked = buyers[..4].to_vec();
    asked.extend([buyers[0], prospect, absorbed, Uuid::new_v4()]);
    request(&env, &asked).await;

    for &p in buyers[..5].iter() {
        let (model, score, label) =
            eventually(30, "churn prediction", || prediction(&env, p, "churn")).await;
        assert_eq!(model, churn.id);
        assert!(score.is_some_and(|s| (0.0..=1.0).contains(&s)));
        assert!(matches!(label.as_deref(), Some("high" | "medium" | "low")));
        assert!(
            prediction(&env, p, "ltv")
                .await
                .is_some_and(|(_, s, _)| s.is_some_and(|s| s >= 0.0))
        );
        assert_eq!(prediction(&env, p, "segment").await.unwrap().0, segment);
    }
    let (_, _, label) = eventually(30, "prospect's segment", || {
        prediction(&env, prospect, "segment")
    })
    .await;
    assert_eq!(label.as_deref(), Some("Prospects"));
    assert!(
        prediction(&env, prospect, "churn").await.is_none(),
        "no churn score without an order"
    );
    assert!(
        prediction(&env, absorbed, "segment").await.is_none(),
        "tombstones are not scored"
    );

    // The Customer 360 document was rebuilt with the predictions, and features stored.
    // (The document is rebuilt after the predictions commit: wait for it.)
    let mut redis = env.redis.clone();
    let key = storage::customer360::cache_key(env.prefix(), buyers[0]);
    eventually(
        30,
        "the cached Customer 360 with the churn prediction",
        || {
            let mut redis = redis.clone();
            let key = key.clone();
            async move {
                let doc: Option<String> = redis.get(&key).await.unwrap();
                let doc: domain::Customer360 = serde_json::from_str(&doc?).unwrap();
                doc.predictions
                    .iter()
                    .any(|p| p.task == ml::Task::Churn && p.model_version_id == churn.id)
                    .then_some(())
            }
        },
    )
    .await;
    let features: Option<String> = redis
        .get(ml::store::feature_key(env.prefix(), buyers[1]))
        .await
        .unwrap();
    assert!(features.is_some());

    // Activate another churn version by hand: the next request is scored with it.
    let candidate = NewModelVersion {
        task: Task::Churn,
        algorithm: churn.algorithm.clone(),
        params: churn.params.clone(),
        feature_set_version: churn.feature_set_version,
        data_window_start: churn.data_window_start,
        data_window_end: churn.data_window_end,
        train_rows: churn.train_rows,
        test_rows: churn.test_rows,
        // Better than chance (so the gate lets it through), worse than the active one.
        metrics: serde_json::json!({"roc_auc": 0.6, "roc_auc_ci": {"low": 0.55, "high": 0.65}, "threshold": 0.9}),
        artefact: churn.artefact.clone(),
    };
    let (candidate_id, _) =
        registry::register(&env.db, &candidate, ml::pipeline::policy(&env.settings.ml))
            .await
            .unwrap();
    registry::activate(&env.db, candidate_id).await.unwrap();
    request(&env, &[buyers[2]]).await;
    eventually(30, "scored with the newly active model", || async {
        prediction(&env, buyers[2], "churn")
            .await
            .filter(|(m, _, _)| *m == candidate_id)
    })
    .await;
}

async fn pipeline_train(env: &TestEnv, b: &Brand) {
    ml::pipeline::train_and_register(&env.db, &env.settings.ml, b.config.end)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_training_round_registers_models_and_rescores_everyone() {
    let (env, b) = env_with_brand().await;
    let scorer = ml_inference::Scorer::new(&env.context());
    assert!(scorer.retrain_and_rescore().await.unwrap());
    let active = registry::active_ids(&env.db).await.unwrap();
    assert_eq!(
        active.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [Task::Churn, Task::Ltv, Task::Segment]
    );
    let segments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM predictions WHERE task = 'segment'")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(segments, b.people.len() as i64, "every profile re-scored");
    let scored_with: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT model_version_id FROM predictions WHERE task = 'churn'",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(scored_with, [active[0].1]);

    // Another replica holding the training lock makes this one skip its round.
    let mut other = env.db.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(ml_inference::TRAINING_LOCK)
        .execute(&mut *other)
        .await
        .unwrap();
    assert!(!scorer.retrain_and_rescore().await.unwrap());
}
