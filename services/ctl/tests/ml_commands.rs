//! `ctl ml train|status|activate|score-all|eval|eval-recs`, run as the real binary: against a
//! fresh database holding a simulated brand (train, registry, activation by hand and
//! rollback, scoring everyone), and on a transaction log written to a CSV file (eval,
//! which needs no database; eval-recs likewise, with its speed figures).

mod ctl_cli;

use std::io::Write as _;
use std::process::Output;

use chrono::{TimeZone, Utc};
use ml::registry::{self, Task};
use scenario::{ActivityKind, Brand, BrandConfig, generate};
use test_support::TestEnv;

fn ctl(env: &TestEnv, args: &[&str]) -> Output {
    ctl_cli::run(env, args, &[])
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ctl failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn brand(customers: usize) -> Brand {
    generate(&BrandConfig {
        seed: 23,
        customers,
        months: 15,
        end: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        ..BrandConfig::default()
    })
}

#[tokio::test]
async fn train_status_activate_rollback_and_score_all() {
    let env = TestEnv::new().await;
    let b = brand(600);
    ml::load::load_brand(&env.db, &b).await.unwrap();
    let as_of = "2026-11-01";

    let out = ok(&ctl(&env, &["ml", "train", "--as-of", as_of, "--no-score"]));
    assert!(out.contains("trained on 600 profiles"), "{out}");
    let first = registry::active(&env.db).await.unwrap();
    assert_eq!(
        first.len(),
        4,
        "churn, LTV, segments and recommendations are active: {out}"
    );
    let first_churn = first.iter().find(|v| v.task == Task::Churn).unwrap().id;
    assert!(out.contains(&first_churn.to_string()), "{out}");

    // Nothing to roll back to yet: a clear error, nothing changed.
    let out = ctl(&env, &["ml", "activate", "--rollback", "churn"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());

    // A second run on the same data is as good, so it replaces the first.
    let out = ok(&ctl(&env, &["ml", "train", "--as-of", as_of, "--no-score"]));
    assert!(out.contains(&format!("replaces {first_churn}")), "{out}");
    let second_churn = registry::active(&env.db)
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.task == Task::Churn)
        .unwrap()
        .id;
    assert_ne!(second_churn, first_churn);

    let out = ok(&ctl(&env, &["ml", "status"]));
    for task in ["churn", "ltv", "segment"] {
        assert!(out.contains(&format!("{task}:")), "{out}");
    }
    assert!(
        out.contains("roc_auc") && out.contains("silhouette"),
        "{out}"
    );

    // Rollback brings the first churn model back; activating the second by id undoes it.
    let out = ok(&ctl(&env, &["ml", "activate", "--rollback", "churn"]));
    assert!(out.contains(&first_churn.to_string()), "{out}");
    let active_churn = |active: Vec<registry::ModelVersion>| {
        active
            .into_iter()
            .find(|v| v.task == Task::Churn)
            .unwrap()
            .id
    };
    assert_eq!(
        active_churn(registry::active(&env.db).await.unwrap()),
        first_churn
    );
    ok(&ctl(&env, &["ml", "activate", &second_churn.to_string()]));
    assert_eq!(
        active_churn(registry::active(&env.db).await.unwrap()),
        second_churn
    );
    let out = ctl(&env, &["ml", "activate", &uuid::Uuid::now_v7().to_string()]);
    assert!(!out.status.success(), "an unknown version is refused");

    // Every profile gets a segment, and every buyer (the population churn is trained
    // on) a churn probability, from the active models.
    let out = ok(&ctl(&env, &["ml", "score-all", "--as-of", as_of]));
    assert!(out.contains("scored 600 profiles"), "{out}");
    let scored = |task: &'static str, version: uuid::Uuid| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(DISTINCT profile_id) FROM predictions WHERE task = $1 AND model_version_id = $2",
        )
        .bind(task)
        .bind(version)
        .fetch_one(&env.db)
    };
    let active = registry::active(&env.db).await.unwrap();
    let segment = active.iter().find(|v| v.task == Task::Segment).unwrap().id;
    assert_eq!(scored("segment", segment).await.unwrap(), 600);
    let buyers: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT profile_id) FROM orders WHERE placed_at < $1 AND status <> 'cancelled'")
            .bind(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap())
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert!(buyers > 300, "{buyers} buyers");
    assert_eq!(scored("churn", second_churn).await.unwrap(), buyers);
}

/// The brand's order lines as a transaction log with the brand's own header names.
fn transactions_csv(b: &Brand) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "Customer,Bill Date,Line Amount,Bill No,Item,Dept").unwrap();
    for a in &b.activities {
        if let ActivityKind::OrderPlaced {
            order_id, items, ..
        } = &a.kind
        {
            for item in items {
                let amount = item.price * rust_decimal::Decimal::from(item.qty);
                writeln!(
                    file,
                    "C{},{},{amount},{order_id},{},{}",
                    a.person_id,
                    a.at.format("%Y-%m-%d %H:%M:%S"),
                    item.sku,
                    item.category.as_deref().unwrap_or("")
                )
                .unwrap();
            }
        }
    }
    // A row a brand's export might carry: no amount.
    writeln!(file, "C1,2026-01-01 10:00:00,,X-1,APP-001,Apparel").unwrap();
    file.flush().unwrap();
    file
}

#[tokio::test]
async fn eval_reads_any_transaction_log_and_compares_with_baselines() {
    let env = TestEnv::new().await;
    let b = brand(1_500);
    let csv = transactions_csv(&b);
    let path = csv.path().to_str().unwrap();
    let mapping = [
        "--customer-col",
        "Customer",
        "--date-col",
        "Bill Date",
        "--amount-col",
        "Line Amount",
        "--order-col",
        "Bill No",
        "--sku-col",
        "Item",
        "--category-col",
        "Dept",
    ];

    let mut args = vec!["ml", "eval", "--transactions", path, "--horizon", "90"];
    args.extend(mapping);
    let table = ok(&ctl(&env, &args));
    assert!(table.contains("1 bad rows"), "{table}");
    assert!(table.contains("recency only"), "{table}");
    assert!(table.contains("past spend rate"), "{table}");

    args.push("--json");
    let report: serde_json::Value = serde_json::from_str(&ok(&ctl(&env, &args))).unwrap();
    let churn = &report["churn"];
    let auc = churn["roc_auc"].as_f64().unwrap();
    let baseline = churn["baseline_recency_roc_auc"].as_f64().unwrap();
    assert!(
        auc > baseline,
        "the model beats recency alone: {auc} vs {baseline}"
    );
    let ltv = &report["ltv"];
    assert!(ltv["rmse"].as_f64().unwrap().is_finite(), "{ltv}");
    assert!(
        ltv["baseline_past_spend_rate"]["rmse"]
            .as_f64()
            .unwrap()
            .is_finite()
    );

    // Headers that are not there: a clear error naming the column, non-zero exit.
    let out = ctl(&env, &["ml", "eval", "--transactions", path]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("customer_id"), "{err}");
    // A cutoff outside the data is refused.
    let mut args = vec![
        "ml",
        "eval",
        "--transactions",
        path,
        "--cutoff",
        "2010-01-01",
    ];
    args.extend(mapping);
    let out = ctl(&env, &args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cutoff"));
}

#[tokio::test]
async fn eval_recs_compares_the_blend_with_baselines_and_times_it_against_the_machine() {
    let env = TestEnv::new().await;
    let b = brand(800);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "customer_id,order_id,sku,name,category,date,quantity").unwrap();
    for a in &b.activities {
        if let ActivityKind::OrderPlaced {
            order_id, items, ..
        } = &a.kind
        {
            for item in items {
                writeln!(
                    file,
                    "C{},{order_id},{},,{},{},{}",
                    a.person_id,
                    item.sku,
                    item.category.as_deref().unwrap_or(""),
                    a.at.format("%Y-%m-%d %H:%M:%S"),
                    item.qty
                )
                .unwrap();
            }
        }
    }
    file.flush().unwrap();
    let path = file.path().to_str().unwrap();
    let args = [
        "ml",
        "eval-recs",
        "--transactions",
        path,
        "--cutoff",
        "2026-09-01",
        "--horizon",
        "28",
    ];
    let table = ok(&ctl(&env, &args));
    for line in [
        "machine reference: memory read",
        "training",
        "the 60 s goal",
        "similar items (",
        "cached neighbours",
        "an HNSW search",
        "the 2 ms goal",
        "explore slots",
        "load average",
        "the 2,000/s goal",
        "p_topfreq",
        "blend / P-TopFreq",
    ] {
        assert!(table.contains(line), "`{line}` in\n{table}");
    }

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let report: serde_json::Value = serde_json::from_str(&ok(&ctl(&env, &json_args))).unwrap();
    let machine = &report["machine"];
    assert!(machine["memory_gb_per_second"].as_f64().unwrap() > 0.0);
    assert!(machine["dots_per_second"].as_f64().unwrap() > 0.0);
    let eval = &report["evaluations"][0];
    assert!(eval["customers"].as_u64().unwrap() > 50, "{eval}");
    let similar = &eval["similar"];
    let (p50, p99) = (
        similar["p50_ms"].as_f64().unwrap(),
        similar["p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{similar}");
    let (hnsw_p50, hnsw_p99) = (
        similar["hnsw_p50_ms"].as_f64().unwrap(),
        similar["hnsw_p99_ms"].as_f64().unwrap(),
    );
    assert!(hnsw_p50 > 0.0 && hnsw_p50 <= hnsw_p99, "{similar}");
    assert!(similar["exact_mean_ms"].as_f64().unwrap() > 0.0);
    let methods: Vec<&str> = eval["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "popularity",
            "p_topfreq",
            "item_knn",
            "item2vec_ann",
            "linear_blend",
            "blend"
        ]
    );
    // The same data and seed give the same figures.
    let again: serde_json::Value = serde_json::from_str(&ok(&ctl(&env, &json_args))).unwrap();
    assert_eq!(again["evaluations"][0]["methods"], eval["methods"]);
    assert_eq!(again["evaluations"][0]["weights"], eval["weights"]);
}
