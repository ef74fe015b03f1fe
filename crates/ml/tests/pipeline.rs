//! The ML pipeline against real Postgres and Redis, on small simulated brands loaded
//! straight into the shared tables: the same features from the database as in memory,
//! no leakage past a cutoff, training into the registry, scoring every profile, and the
//! activation rule.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use domain::{Channel, EventType, NormalizedEvent, Order, OrderStatus, Source};
use ml::features::{self, Features};
use ml::pipeline::{self, CacheUpdate};
use ml::registry::{self, Decision, NewModelVersion, Task};
use ml::store::Rewrite;
use ml::{FEATURE_NAMES, synthetic};
use redis::AsyncCommands;
use rust_decimal::Decimal;
use scenario::{Brand, BrandConfig, generate};
use storage::normalized::EventWrite;
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
    let mut writes = Vec::new();
    let mut profiles = Vec::new();
    for (i, (profile, source, order_id)) in orders.iter().enumerate() {
        let after = cutoff + Duration::hours(1 + i as i64);
        let source: Source = source.parse().unwrap();
        let order = |order_id: &str, total: i64, status: OrderStatus| Order {
            order_id: order_id.to_owned(),
            total: Decimal::from(total),
            currency: "INR".into(),
            status,
            store: None,
            items: Vec::new(),
        };
        for (event_type, source, order) in [
            (
                EventType::OrderCancelled,
                source,
                Some(order(order_id, 0, OrderStatus::Cancelled)),
            ),
            (
                EventType::RefundIssued,
                source,
                Some(order(order_id, 10, OrderStatus::PartiallyRefunded)),
            ),
            (EventType::ProductViewed, source, None),
            (EventType::MessageReceived, source, None),
            (
                EventType::OrderPlaced,
                Source::Shopify,
                Some(order(&format!("late-{i}"), 999, OrderStatus::Paid)),
            ),
        ] {
            writes.push(EventWrite::of_event(NormalizedEvent {
                event_id: Uuid::new_v4(),
                occurred_at: after,
                received_at: after,
                source,
                integration_id: None,
                channel: Channel::Web,
                event_type,
                name: None,
                identifiers: Vec::new(),
                traits: serde_json::Map::new(),
                properties: serde_json::Map::new(),
                order,
            }));
            profiles.push(*profile);
        }
    }
    storage::normalized::write_batch(&env.db, &mut writes)
        .await
        .unwrap();
    storage::normalized::attribute_as_resolved(&env.db, &writes, &profiles)
        .await
        .unwrap();

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
    // Every task ends with exactly one active version: LightGBM, or the baseline that
    // serves in its place, each with the reason recorded.
    let active = registry::active(&env.db).await.unwrap();
    assert_eq!(
        active.iter().map(|v| v.task).collect::<Vec<_>>(),
        [Task::Churn, Task::Ltv, Task::Recommend, Task::Segment]
    );
    for v in &active {
        assert!(
            v.status_reason.as_deref().is_some_and(|r| !r.is_empty()),
            "{v:?}"
        );
    }
    let churn = active.iter().find(|v| v.task == Task::Churn).unwrap();
    assert_eq!(churn.algorithm, "lightgbm", "{:?}", churn.status_reason);
    for key in [
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "pr_auc",
        "brier",
        "brier_uncalibrated",
        "threshold",
        "baseline_recency_roc_auc",
    ] {
        assert!(
            churn.metrics[key].as_f64().is_some_and(f64::is_finite),
            "churn metric {key}: {}",
            churn.metrics
        );
    }
    for baseline in ["recency", "bgnbd"] {
        let m = &churn.metrics["baselines"][baseline];
        assert!(
            m["roc_auc"].as_f64().is_some() && m["roc_auc_ci"]["low"].as_f64().is_some(),
            "{m}"
        );
    }
    assert!(!churn.metrics["reliability"].as_array().unwrap().is_empty());
    assert!(
        churn.metrics["roc_auc"].as_f64().unwrap() > 0.7,
        "{}",
        churn.metrics
    );
    let artefact: serde_json::Value = serde_json::from_str(&churn.artefact).unwrap();
    assert_eq!(artefact["kind"], "lightgbm");
    assert!(
        artefact["model"].as_str().unwrap().starts_with("tree"),
        "LightGBM model text"
    );
    assert!(artefact["btyd"]["bgnbd"]["r"].as_f64().is_some());
    assert_eq!(churn.params["horizon_days"], 90);
    assert_eq!(churn.feature_set_version, ml::FEATURE_SET_VERSION);
    assert_eq!(churn.data_window_end, Some(b.config.end));
    assert!(churn.train_rows > 100 && churn.test_rows > 100, "{churn:?}");
    let ltv = active.iter().find(|v| v.task == Task::Ltv).unwrap();
    for key in ["rmse", "mae", "r2", "mape_buyers"] {
        assert!(ltv.metrics[key].as_f64().is_some(), "ltv metric {key}");
    }
    let seg = active.iter().find(|v| v.task == Task::Segment).unwrap();
    assert!(
        seg.metrics["silhouette"].as_f64().is_some() && seg.metrics["inertia"].as_f64().is_some()
    );
    let k = seg.metrics["k"].as_u64().unwrap() as usize;
    assert!((settings.ml_segments_min..=settings.ml_segments_max).contains(&k));

    // Score everyone: a segment for every profile, churn and LTV for every buyer.
    let models = Arc::new(pipeline::load_active(&env.db, &settings).await.unwrap());
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
    // Tiers are cut-offs on the calibrated probability, and split the buyers.
    let tiers: Vec<(String, i64)> = sqlx::query_as(
        "SELECT label, count(*) FROM predictions WHERE task = 'churn' GROUP BY label ORDER BY label",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert!(tiers.len() >= 2, "{tiers:?}");
    let mistiered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM predictions WHERE task = 'churn' AND label <> \
         CASE WHEN score >= $1 THEN 'high' WHEN score >= $2 THEN 'medium' ELSE 'low' END",
    )
    .bind(settings.ml_churn_tier_high)
    .bind(settings.ml_churn_tier_medium)
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(mistiered, 0);
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

    // A worse churn model (that still beats chance, with no baselines recorded) stays
    // a candidate; the active one is untouched.
    let policy = pipeline::policy(&settings);
    let active_auc = churn.metrics["roc_auc"].as_f64().unwrap();
    let versus_active = |auc: f64| serde_json::json!({"roc_auc": auc, "roc_auc_ci": {"low": auc - 0.03, "high": auc + 0.03}});
    let worse = NewModelVersion {
        task: Task::Churn,
        algorithm: churn.algorithm.clone(),
        params: churn.params.clone(),
        feature_set_version: churn.feature_set_version,
        data_window_start: churn.data_window_start,
        data_window_end: churn.data_window_end,
        train_rows: churn.train_rows,
        test_rows: churn.test_rows,
        metrics: versus_active(active_auc - 0.05),
        artefact: churn.artefact.clone(),
    };
    let (worse_id, decision) = registry::register(&env.db, &worse, policy).await.unwrap();
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

    // One no better than a baseline is rejected and can never be activated.
    let mut beaten = versus_active(active_auc);
    beaten["baselines"] = serde_json::json!({"recency": {"roc_auc": active_auc + 0.01}});
    let (beaten_id, decision) = registry::register(
        &env.db,
        &NewModelVersion {
            metrics: beaten,
            ..worse.clone()
        },
        policy,
    )
    .await
    .unwrap();
    assert!(
        matches!(&decision, Decision::Rejected { reason } if reason.contains("recency")),
        "{decision:?}"
    );
    assert!(registry::activate(&env.db, beaten_id).await.is_err());

    // One within the tolerance is activated; manual activation and rollback work.
    let (close_id, decision) = registry::register(
        &env.db,
        &NewModelVersion {
            metrics: versus_active(active_auc - settings.ml_activation_tolerance / 2.0),
            ..worse.clone()
        },
        policy,
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
    let models = Arc::new(pipeline::load_active(&env.db, &settings).await.unwrap());
    pipeline::score_profiles(
        &env.db,
        &mut redis,
        env.prefix(),
        &models,
        &[profile],
        b.config.end,
        CacheUpdate::Invalidate,
        // A new model is a change whatever the scores say.
        Rewrite {
            tolerance: 1.0,
            force: &[],
        },
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

/// Profiles with a queued `profiles.changes` entry, and each profile's features `as_of`.
async fn outbox_and_feature_times(
    env: &TestEnv,
) -> (Vec<Uuid>, Vec<(Uuid, chrono::DateTime<Utc>)>) {
    let queued = sqlx::query_scalar("SELECT profile_id FROM profile_change_outbox ORDER BY 1")
        .fetch_all(&env.db)
        .await
        .unwrap();
    let features = sqlx::query_as("SELECT profile_id, as_of FROM features ORDER BY 1")
        .fetch_all(&env.db)
        .await
        .unwrap();
    (queued, features)
}

#[tokio::test]
async fn a_rescore_writes_only_what_changed() {
    let env = TestEnv::new().await;
    let b = brand(27, 400);
    ml::load::load_brand(&env.db, &b).await.unwrap();
    let settings = env.settings.ml.clone();
    let as_of = b.config.end;
    pipeline::train_and_register(&env.db, &settings, as_of)
        .await
        .unwrap();
    let models = Arc::new(pipeline::load_active(&env.db, &settings).await.unwrap());
    let mut redis = env.redis.clone();
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM customer_profile ORDER BY id")
        .fetch_all(&env.db)
        .await
        .unwrap();
    let score = |at, rewrite| {
        let (db, mut redis, models, ids) =
            (env.db.clone(), redis.clone(), models.clone(), ids.clone());
        let prefix = env.prefix().to_owned();
        async move {
            pipeline::score_profiles(
                &db,
                &mut redis,
                &prefix,
                &models,
                &ids,
                at,
                CacheUpdate::Invalidate,
                rewrite,
            )
            .await
            .unwrap()
        }
    };
    let selective = Rewrite {
        tolerance: 0.001,
        force: &[],
    };

    // The first scoring writes everything and queues a change of every profile.
    let first = score(as_of, selective).await;
    assert_eq!(first.profiles, 400);
    assert_eq!(first.changed, ids, "every profile gets at least a segment");
    let (queued, features) = outbox_and_feature_times(&env).await;
    assert_eq!(queued, ids);
    assert!(features.iter().all(|(_, at)| *at == as_of) && features.len() == 400);
    let stored: Vec<(Uuid, String, chrono::DateTime<Utc>)> =
        sqlx::query_as("SELECT profile_id, task, scored_at FROM predictions ORDER BY 1, 2")
            .fetch_all(&env.db)
            .await
            .unwrap();

    // The same facts at the same time: nothing is written, nothing queued.
    sqlx::query("DELETE FROM profile_change_outbox")
        .execute(&env.db)
        .await
        .unwrap();
    let again = score(
        as_of,
        Rewrite {
            tolerance: 0.0,
            force: &[],
        },
    )
    .await;
    assert_eq!(again.profiles, 400);
    assert!(again.changed.is_empty(), "{:?}", again.changed);
    assert_eq!(
        outbox_and_feature_times(&env).await,
        (vec![], features.clone())
    );
    let unchanged: Vec<(Uuid, String, chrono::DateTime<Utc>)> =
        sqlx::query_as("SELECT profile_id, task, scored_at FROM predictions ORDER BY 1, 2")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(unchanged, stored, "no prediction row was rewritten");

    // A forced profile is written although nothing changed.
    let forced = [ids[7]];
    let later = as_of + Duration::seconds(1);
    let one = score(
        later,
        Rewrite {
            tolerance: 0.001,
            force: &forced,
        },
    )
    .await;
    assert!(one.changed.contains(&ids[7]));
    let (queued, _) = outbox_and_feature_times(&env).await;
    assert_eq!(queued, one.changed);

    // Half a year on, recency moves the scores: exactly the profiles whose predictions
    // changed get new features (with the new as_of) and a queued change.
    sqlx::query("DELETE FROM profile_change_outbox")
        .execute(&env.db)
        .await
        .unwrap();
    let much_later = as_of + Duration::days(180);
    let moved = score(much_later, selective).await;
    assert!(!moved.changed.is_empty());
    // Prospects without activity keep their one prediction (segment `Prospects`).
    let constant: Vec<Uuid> = sqlx::query_scalar(
        "SELECT profile_id FROM predictions GROUP BY profile_id \
         HAVING bool_and(task = 'segment' AND label = 'Prospects')",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert!(constant.iter().all(|id| !moved.changed.contains(id)));
    let (queued, features) = outbox_and_feature_times(&env).await;
    assert_eq!(queued, moved.changed);
    for (id, at) in &features {
        assert_eq!(
            *at == much_later,
            moved.changed.contains(id),
            "features of {id} are the inputs of its stored predictions"
        );
    }
    let stored: Option<String> = redis
        .get(ml::store::feature_key(env.prefix(), moved.changed[0]))
        .await
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored.unwrap()).unwrap();
    assert_eq!(stored["as_of"], serde_json::json!(much_later));
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
    let (x, y) = (
        a.predictive.as_ref().unwrap(),
        again.predictive.as_ref().unwrap(),
    );
    assert_eq!(
        x.churn_model.model.to_text().unwrap(),
        y.churn_model.model.to_text().unwrap()
    );
    assert_eq!(
        x.ltv_model.model.to_text().unwrap(),
        y.ltv_model.model.to_text().unwrap()
    );
    assert_eq!(a.segments, again.segments);
    assert_eq!(x.summary, y.summary);
}

/// The generator makes churn predictable from behaviour, not from recency alone: on
/// cross-fitted customers the model clearly beats ranking by days since the last order
/// and BG/NBD, and LTV beats both spend baselines.
#[test]
fn churn_beats_the_baselines_on_generated_data() {
    let b = generate(&BrandConfig {
        seed: 31,
        customers: 3_000,
        ..BrandConfig::default()
    });
    let histories = synthetic::histories(&b);
    let e =
        ml::train::evaluate_and_fit(&histories, b.config.end - Duration::days(90), 90, 42).unwrap();
    let c = &e.summary.churn;
    let bgnbd = c.baselines.bgnbd.as_ref().unwrap();
    println!(
        "churn ROC-AUC {:.4} vs recency only {:.4} and BG/NBD {:.4}",
        c.metrics.roc_auc, c.baselines.recency.roc_auc, bgnbd.roc_auc
    );
    assert!(
        c.metrics.roc_auc >= c.baselines.recency.roc_auc + 0.02,
        "{c:?}"
    );
    assert!(c.metrics.roc_auc >= bgnbd.roc_auc + 0.02, "{c:?}");
    assert!(c.roc_auc_ci.low < c.metrics.roc_auc && c.metrics.roc_auc < c.roc_auc_ci.high);
    assert!(c.metrics.pr_auc > c.baselines.recency.pr_auc, "{c:?}");
    assert_eq!(
        c.metrics.rows, e.summary.customers,
        "every customer is scored"
    );
    let l = &e.summary.ltv;
    let gg = l.baselines.bgnbd_gamma_gamma.as_ref().unwrap();
    assert!(l.metrics.rmse < l.baselines.past_spend_rate.rmse, "{l:?}");
    // The served head has the lower MAE; the expected-spend head the better R² and RMSE.
    assert!(l.metrics.mae < gg.mae, "{l:?}");
    let mean = l.mean.as_ref().unwrap();
    assert!(mean.r2 > gg.r2 && mean.rmse < gg.rmse, "{l:?}");
}

/// With the future shuffled between customers, nothing predicts churn or spend: the
/// gate refuses the models and every baseline, so nothing serves — where the same
/// brand unshuffled gets a model for each.
#[tokio::test]
async fn a_model_no_better_than_its_baselines_is_refused() {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;

    let env = TestEnv::new().await;
    let b = generate(&BrandConfig {
        seed: 32,
        customers: 1_500,
        ..BrandConfig::default()
    });
    let as_of = b.config.end;
    let cutoff = as_of - Duration::days(90);
    let honest = synthetic::histories(&b);
    // Orders from the cutoff on are dealt to other customers at random.
    let mut shuffled = honest.clone();
    let mut futures: Vec<Vec<ml::history::OrderFact>> = shuffled
        .iter_mut()
        .map(|h| {
            let (past, future) = h.orders.drain(..).partition(|o| o.placed_at < cutoff);
            h.orders = past;
            future
        })
        .collect();
    futures.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    for (h, future) in shuffled.iter_mut().zip(futures) {
        h.orders.extend(future);
        // Events after the cutoff would tell the truth: keep only the past.
        h.events.retain(|e| e.at < cutoff);
    }
    let settings = env.settings.ml.clone();
    let opts = ml::train::TrainOptions {
        as_of,
        horizon_days: 90,
        seed: 42,
        segments_min: 4,
        segments_max: 4,
    };
    // Registers the churn and LTV offers (model, then the baseline in its place).
    let register = |histories: Vec<ml::history::ProfileHistory>| {
        let (db, settings, opts) = (env.db.clone(), settings.clone(), opts.clone());
        async move {
            let trained = ml::train::train_all(&histories, &opts).unwrap();
            let offers = pipeline::model_versions(&trained, &opts).unwrap();
            let mut decisions = Vec::new();
            for task in [Task::Churn, Task::Ltv] {
                let offer = offers.iter().find(|o| o.primary.task == task).unwrap();
                for v in std::iter::once(&offer.primary).chain(&offer.fallback) {
                    let (_, d) = registry::register(&db, v, pipeline::policy(&settings))
                        .await
                        .unwrap();
                    decisions.push((task, v.algorithm.clone(), d));
                }
            }
            decisions
        }
    };
    let refused = register(shuffled).await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    for (task, algorithm, d) in &refused {
        assert!(
            matches!(d, Decision::Rejected { .. }),
            "{task:?} {algorithm}: {d:?}"
        );
    }
    assert!(registry::active_ids(&env.db).await.unwrap().is_empty());
    let models = pipeline::load_active(&env.db, &settings).await.unwrap();
    assert!(models.churn.is_none(), "nothing serves churn");
    assert!(models.ltv.is_none(), "nothing serves LTV");

    let accepted = register(honest).await;
    for task in [Task::Churn, Task::Ltv] {
        assert!(
            accepted.iter().any(|(t, a, d)| *t == task
                && a == "lightgbm"
                && matches!(d, Decision::Activated { .. })),
            "{accepted:?}"
        );
    }
}

/// The recommender from the database: order lines and product views of a simulated
/// brand, trained twice with the same seed into the same registry row (metrics beside
/// P-TopFreq and popularity, HNSW recall), judged by the gate like every model, and —
/// active — served: a `recommend` prediction with reasons for every profile with
/// activity, and similar products stored for the API.
#[tokio::test]
async fn recommendations_train_register_and_serve() {
    let env = TestEnv::new().await;
    let b = brand(25, 500);
    ml::load::load_brand(&env.db, &b).await.unwrap();
    let settings = env.settings.ml.clone();
    let as_of = b.config.end;
    let version = pipeline::train_recommender(&env.db, &settings, as_of)
        .await
        .unwrap();
    let again = pipeline::train_recommender(&env.db, &settings, as_of)
        .await
        .unwrap();
    assert_eq!(version, again, "deterministic given the seed");
    assert_eq!(version.task, Task::Recommend);
    let m = &version.metrics;
    for key in [
        "recall_at_10",
        "recall_norm_at_10",
        "ndcg_at_10",
        "hit_rate_at_10",
        "repeat_recall_at_10",
        "explore_recall_at_10",
        "coverage",
        "ann_recall_at_10",
    ] {
        assert!(m[key].as_f64().is_some_and(f64::is_finite), "{key}: {m}");
    }
    assert!(m["ann_recall_at_10"].as_f64().unwrap() >= 0.95, "{m}");
    for baseline in ["p_topfreq", "popularity"] {
        assert!(
            m["baselines"][baseline]["recall_at_10"].as_f64().is_some(),
            "{m}"
        );
    }
    assert!(
        version.test_rows > 50 && version.train_rows > 500,
        "{version:?}"
    );

    let run = pipeline::train_and_register(&env.db, &settings, as_of)
        .await
        .unwrap();
    let rec = run
        .models
        .iter()
        .find(|r| r.task == Task::Recommend)
        .expect("recommend is trained with the others");
    let beats = |name: &str| {
        m["recall_at_10"].as_f64().unwrap()
            >= m["baselines"][name]["recall_at_10"].as_f64().unwrap() + settings.ml_baseline_margin
    };
    assert!(
        beats("p_topfreq") && beats("popularity"),
        "on this brand the blend beats both baselines: {m}"
    );
    assert_eq!(rec.decision, Decision::Activated { replaced: None }, "{m}");

    let models = Arc::new(pipeline::load_active(&env.db, &settings).await.unwrap());
    assert!(models.recommend.is_some());
    let mut redis = env.redis.clone();
    pipeline::score_all(&env.db, &mut redis, env.prefix(), &models, 128, as_of)
        .await
        .unwrap();
    let with_activity: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT profile_id) FROM ( \
           SELECT o.profile_id FROM orders o JOIN order_items i ON i.order_id = o.id \
           UNION SELECT profile_id FROM normalized_event \
           WHERE type IN ('product_viewed', 'added_to_cart') AND profile_id IS NOT NULL) x",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    let rows: Vec<(Uuid, serde_json::Value)> =
        sqlx::query_as("SELECT profile_id, details FROM predictions WHERE task = 'recommend'")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(rows.len() as i64, with_activity);
    let mut reasons = std::collections::HashSet::new();
    for (who, details) in &rows {
        let items = details["recommendations"].as_array().unwrap();
        assert_eq!(
            items.len(),
            ml::scoring::RECOMMENDATIONS,
            "{who}: {details}"
        );
        for item in items {
            let reason = item["reason"].as_str().unwrap();
            assert!(!item["name"].as_str().unwrap().is_empty());
            reasons.insert(reason.split(' ').next().unwrap().to_owned());
        }
    }
    assert!(
        reasons.contains("bought") && reasons.contains("popular"),
        "{reasons:?}"
    );
    let similar: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM product_similarity s JOIN model_version m ON m.id = s.model_version_id \
         WHERE m.status = 'active' AND m.task = 'recommend'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert!(similar > 100, "{similar} similar-product rows");
}
