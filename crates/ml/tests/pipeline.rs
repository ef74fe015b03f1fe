//! The ML pipeline against real Postgres and Redis, on small simulated brands loaded
//! straight into the shared tables: the same features from the database as in memory,
//! no leakage past a cutoff, training into the registry, scoring every profile, and the
//! activation rule.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use ml::features::{self, Features};
use ml::pipeline::{self, CacheUpdate};
use ml::registry::{self, Decision, NewModelVersion, Task};
use ml::{FEATURE_NAMES, synthetic};
use redis::AsyncCommands;
use scenario::{Brand, BrandConfig, generate};
use test_support::TestEnv;
use uuid::Uuid;

fn brand(seed: u64, customers: usize) -> Brand {
    generate(&BrandConfig {
        seed,
        customers,
        months: 15,
        end: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        ..BrandConfig::default()
    })
}

fn close(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-3 * a.abs().max(1.0)
}

fn assert_same(a: &Features, b: &Features, who: Uuid) {
    for ((name, x), y) in FEATURE_NAMES.iter().zip(a.to_vec()).zip(b.to_vec()) {
        assert!(
            close(x, y),
            "profile {who}: {name} is {x} in one and {y} in the other"
        );
    }
}

#[tokio::test]
async fn features_from_postgres_equal_features_in_memory() {
    let env = TestEnv::new().await;
    let b = brand(21, 150);
    let summary = ml::load::load_brand(&env.db, &b).await.unwrap();
    assert_eq!(summary.profiles, 150);
    assert!(summary.orders > 100, "{summary:?}");

    let from_db = pipeline::load_all_histories(&env.db, None).await.unwrap();
    assert_eq!(from_db.len(), 150);
    let in_memory = synthetic::histories(&b);
    let cutoff = b.config.end - Duration::days(120);
    for h in &from_db {
        let person = in_memory
            .iter()
            .find(|m| m.profile_id == h.profile_id)
            .expect("same ids");
        assert_same(
            &features::compute(h, cutoff),
            &features::compute(person, cutoff),
            h.profile_id,
        );
        assert_same(
            &features::compute(h, b.config.end),
            &features::compute(person, b.config.end),
            h.profile_id,
        );
    }
}

/// Nothing stored after a cutoff — new orders, browsing, a cancellation or a refund of
/// an earlier order — changes a feature computed as of that cutoff.
#[tokio::test]
async fn nothing_after_the_cutoff_changes_a_training_feature() {
    let env = TestEnv::new().await;
    let b = brand(22, 120);
    ml::load::load_brand(&env.db, &b).await.unwrap();
    let cutoff = b.config.end - Duration::days(200);
    let ids = ml::store::live_profiles(&env.db, None, 1_000)
        .await
        .unwrap();
    let before: Vec<Features> = ml::store::load_histories(&env.db, &ids, None)
        .await
        .unwrap()
        .iter()
        .map(|h| features::compute(h, cutoff))
        .collect();

    // For every profile with an order before the cutoff: cancel and refund that order
    // after the cutoff, and add a new order and browsing after it too.
    let orders: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (profile_id) profile_id, source, external_order_id FROM orders \
         WHERE placed_at < $1 AND status <> 'cancelled' ORDER BY profile_id, placed_at",
    )
    .bind(cutoff)
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert!(
        orders.len() > 30,
        "{} profiles bought before the cutoff",
        orders.len()
    );
    for (i, (profile, source, order_id)) in orders.iter().enumerate() {
        let after = cutoff + Duration::hours(1 + i as i64);
        for (kind, data) in [
            (
                "order_cancelled",
                serde_json::json!({"order_id": order_id, "total": 0, "currency": "INR"}),
            ),
            (
                "refund_issued",
                serde_json::json!({"order_id": order_id, "total": 10, "currency": "INR"}),
            ),
            ("product_viewed", serde_json::Value::Null),
            ("message_received", serde_json::Value::Null),
        ] {
            sqlx::query(
                "INSERT INTO normalized_event (event_id, occurred_at, received_at, source, channel, type, order_data, profile_id) \
                 VALUES ($1, $2, $2, $3, 'web', $4, $5, $6)",
            )
            .bind(Uuid::new_v4())
            .bind(after)
            .bind(source)
            .bind(kind)
            .bind((!data.is_null()).then_some(&data))
            .bind(profile)
            .execute(&env.db)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO orders (id, source, external_order_id, profile_id, event_id, status, channel, placed_at, currency, total) \
             VALUES ($1, 'shopify', $2, $3, $1, 'paid', 'web', $4, 'INR', 999)",
        )
        .bind(Uuid::new_v4())
        .bind(format!("late-{i}"))
        .bind(profile)
        .bind(after)
        .execute(&env.db)
        .await
        .unwrap();
    }

    let after: Vec<Features> = ml::store::load_histories(&env.db, &ids, None)
        .await
        .unwrap()
        .iter()
        .map(|h| features::compute(h, cutoff))
        .collect();
    for ((id, x), y) in ids.iter().zip(&before).zip(&after) {
        assert_same(x, y, *id);
    }
    // ...while features as of the end do see them (the test would prove nothing if the
    // new rows were invisible).
    let later = b.config.end + Duration::days(1);
    let changed = ml::store::load_histories(&env.db, &ids, None)
        .await
        .unwrap()
        .iter()
        .zip(synthetic::histories(&b))
        .filter(|(db, mem)| {
            features::compute(db, later).cancellations > features::compute(mem, later).cancellations
        })
        .count();
    assert_eq!(changed, orders.len());
}

#[tokio::test]
async fn train_register_score_and_activation_rule() {
    let env = TestEnv::new().await;
    let b = brand(23, 700);
    ml::load::load_brand(&env.db, &b).await.unwrap();
    let settings = env.settings.ml.clone();

    let run = pipeline::train_and_register(&env.db, &settings, b.config.end)
        .await
        .unwrap();
    assert_eq!(run.profiles, 700);
    assert_eq!(
        run.models.iter().map(|m| m.task).collect::<Vec<_>>(),
        [Task::Churn, Task::Ltv, Task::Segment]
    );
    assert!(
        run.models
            .iter()
            .all(|m| matches!(m.decision, Decision::Activated { replaced: None }))
    );

    // Registry rows carry params, window, row counts, every metric and the artefact.
    let active = registry::active(&env.db).await.unwrap();
    assert_eq!(active.len(), 3);
    let churn = active.iter().find(|v| v.task == Task::Churn).unwrap();
    for key in [
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "pr_auc",
        "brier",
        "threshold",
        "baseline_recency_roc_auc",
    ] {
        assert!(
            churn.metrics[key].as_f64().is_some_and(f64::is_finite),
            "churn metric {key}: {}",
            churn.metrics
        );
    }
    assert!(
        churn.metrics["roc_auc"].as_f64().unwrap() > 0.7,
        "{}",
        churn.metrics
    );
    assert!(churn.artefact.starts_with("tree"), "LightGBM model text");
    assert_eq!(churn.params["horizon_days"], 90);
    assert_eq!(churn.feature_set_version, ml::FEATURE_SET_VERSION);
    assert_eq!(churn.data_window_end, Some(b.config.end));
    assert!(churn.train_rows > 100 && churn.test_rows > 100, "{churn:?}");
    let ltv = active.iter().find(|v| v.task == Task::Ltv).unwrap();
    for key in ["rmse", "mae", "r2", "mape_buyers"] {
        assert!(ltv.metrics[key].as_f64().is_some(), "ltv metric {key}");
        assert!(
            ltv.metrics["baseline_past_spend_rate"][key]
                .as_f64()
                .is_some(),
            "ltv baseline {key}"
        );
    }
    let seg = active.iter().find(|v| v.task == Task::Segment).unwrap();
    assert!(
        seg.metrics["silhouette"].as_f64().is_some() && seg.metrics["inertia"].as_f64().is_some()
    );
    let k = seg.metrics["k"].as_u64().unwrap() as usize;
    assert!((settings.ml_segments_min..=settings.ml_segments_max).contains(&k));

    // Score everyone: a segment for every profile, churn and LTV for every buyer.
    let models = Arc::new(pipeline::load_active(&env.db).await.unwrap());
    let mut redis = env.redis.clone();
    let scored = pipeline::score_all(
        &env.db,
        &mut redis,
        env.prefix(),
        &models,
        128,
        b.config.end,
    )
    .await
    .unwrap();
    assert_eq!(scored, 700);
    let count = |task: &'static str| {
        let db = env.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM predictions WHERE task = $1")
                .bind(task)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    // Buyers: an order before the end that was not cancelled by then.
    let buyers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM features WHERE (values->>'frequency')::float8 > 0",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert!(buyers > 400, "{buyers} buyers");
    assert_eq!(count("segment").await, 700);
    assert_eq!(count("churn").await, buyers);
    assert_eq!(count("ltv").await, buyers);
    let features_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM features")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(features_rows, 700);
    let (profile, details, model): (Uuid, serde_json::Value, Uuid) =
        sqlx::query_as("SELECT profile_id, details, model_version_id FROM predictions WHERE task = 'churn' LIMIT 1")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(model, churn.id);
    assert_eq!(details["top_reasons"].as_array().unwrap().len(), 3);
    // The reasons are real explanations: the strongest one moves the score.
    let explained: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM predictions WHERE task = 'churn' \
         AND abs((details->'top_reasons'->0->>'contribution')::float8) > 1e-6",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(
        explained, buyers,
        "every churn score has a non-zero top reason"
    );
    let stored: Option<String> = redis
        .get(ml::store::feature_key(env.prefix(), profile))
        .await
        .unwrap();
    let stored: serde_json::Value =
        serde_json::from_str(&stored.expect("feature store entry")).unwrap();
    assert_eq!(stored["feature_set_version"], ml::FEATURE_SET_VERSION);
    assert_eq!(
        stored["values"].as_object().unwrap().len(),
        FEATURE_NAMES.len()
    );
    let prospects: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM predictions WHERE task = 'segment' AND label = 'Prospects'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(prospects, 700 - buyers);

    // A worse churn model stays a candidate; the active one is untouched.
    let active_auc = churn.metrics["roc_auc"].as_f64().unwrap();
    let mut worse_metrics = churn.metrics.clone();
    worse_metrics["roc_auc"] = serde_json::json!(active_auc - 0.05);
    let worse = NewModelVersion {
        task: Task::Churn,
        algorithm: churn.algorithm.clone(),
        params: churn.params.clone(),
        feature_set_version: churn.feature_set_version,
        data_window_start: churn.data_window_start,
        data_window_end: churn.data_window_end,
        train_rows: churn.train_rows,
        test_rows: churn.test_rows,
        metrics: worse_metrics,
        artefact: churn.artefact.clone(),
    };
    let (worse_id, decision) =
        registry::register(&env.db, &worse, settings.ml_activation_tolerance)
            .await
            .unwrap();
    assert!(
        matches!(decision, Decision::Candidate { active, .. } if active == churn.id),
        "{decision:?}"
    );
    let status: String = sqlx::query_scalar("SELECT status FROM model_version WHERE id = $1")
        .bind(worse_id)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(status, "candidate");
    assert_eq!(
        registry::active_ids(&env.db)
            .await
            .unwrap()
            .iter()
            .find(|(t, _)| *t == Task::Churn)
            .unwrap()
            .1,
        churn.id
    );

    // One within the tolerance is activated; manual activation and rollback work.
    let mut close_metrics = churn.metrics.clone();
    close_metrics["roc_auc"] =
        serde_json::json!(active_auc - settings.ml_activation_tolerance / 2.0);
    let (close_id, decision) = registry::register(
        &env.db,
        &NewModelVersion {
            metrics: close_metrics,
            ..worse.clone()
        },
        settings.ml_activation_tolerance,
    )
    .await
    .unwrap();
    assert_eq!(
        decision,
        Decision::Activated {
            replaced: Some(churn.id)
        }
    );
    assert_eq!(
        registry::rollback(&env.db, Task::Churn).await.unwrap(),
        churn.id
    );
    assert_eq!(
        registry::activate(&env.db, worse_id).await.unwrap(),
        (Task::Churn, Some(churn.id))
    );
    let statuses: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM model_version WHERE task = 'churn' ORDER BY id")
            .fetch_all(&env.db)
            .await
            .unwrap();
    let status_of = |id: Uuid| statuses.iter().find(|(i, _)| *i == id).unwrap().1.clone();
    assert_eq!(
        (
            status_of(churn.id),
            status_of(close_id),
            status_of(worse_id)
        ),
        ("retired".into(), "retired".into(), "active".into())
    );
    assert!(registry::activate(&env.db, Uuid::new_v4()).await.is_err());

    // Re-scoring with the newly active version records it on the predictions.
    let models = Arc::new(pipeline::load_active(&env.db).await.unwrap());
    pipeline::score_profiles(
        &env.db,
        &mut redis,
        env.prefix(),
        &models,
        &[profile],
        b.config.end,
        CacheUpdate::Invalidate,
    )
    .await
    .unwrap();
    let model: Uuid = sqlx::query_scalar(
        "SELECT model_version_id FROM predictions WHERE task = 'churn' AND profile_id = $1",
    )
    .bind(profile)
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(model, worse_id);
}

#[tokio::test]
async fn training_is_deterministic_given_the_seed() {
    let b = brand(24, 400);
    let histories = synthetic::histories(&b);
    let opts = ml::train::TrainOptions {
        as_of: b.config.end,
        horizon_days: 90,
        seed: 5,
        segments_min: 4,
        segments_max: 6,
    };
    let a = ml::train::train_all(&histories, &opts).unwrap();
    let again = ml::train::train_all(&histories, &opts).unwrap();
    assert_eq!(
        a.churn.model.to_text().unwrap(),
        again.churn.model.to_text().unwrap()
    );
    assert_eq!(a.ltv.to_text().unwrap(), again.ltv.to_text().unwrap());
    assert_eq!(a.segments, again.segments);
    assert_eq!(a.churn_report, again.churn_report);
}

/// The generator makes churn predictable from behaviour, not from recency alone: the
/// model clearly beats ranking customers by days since their last order.
#[test]
fn churn_beats_the_recency_baseline_on_generated_data() {
    let b = generate(&BrandConfig {
        seed: 31,
        customers: 3_000,
        ..BrandConfig::default()
    });
    let histories = synthetic::histories(&b);
    let (test_cutoff, horizon) = (b.config.end - Duration::days(90), 90);
    let train = ml::train::labelled_rows(&histories, test_cutoff - Duration::days(90), horizon);
    let test = ml::train::labelled_rows(&histories, test_cutoff, horizon);
    let params = |o| ml::gbm::GbmParams::new(o, 42).sized_for(train.len());
    let (_, r) =
        ml::train::train_churn(&train, &test, &params(ml::gbm::Objective::Binary)).unwrap();
    println!(
        "churn ROC-AUC {:.4} vs recency only {:.4}",
        r.metrics.roc_auc, r.baseline_recency_roc_auc
    );
    assert!(
        r.metrics.roc_auc >= r.baseline_recency_roc_auc + 0.02,
        "{r:?}"
    );
    assert!(r.metrics.pr_auc > r.baseline_recency_pr_auc, "{r:?}");
    let (_, l) = ml::train::train_ltv(
        &train,
        &test,
        horizon,
        &params(ml::gbm::Objective::Regression),
    )
    .unwrap();
    assert!(l.metrics.rmse < l.baseline_past_spend_rate.rmse, "{l:?}");
    assert!(l.metrics.r2 > l.baseline_past_spend_rate.r2, "{l:?}");
}
