//! ML benchmark: training time of churn + LTV + segments for a large simulated brand,
//! batch scoring throughput, and LightGBM through Rust (`lightgbm3`) against the same
//! training through Python's `lightgbm` on the same matrices and parameters.
//!
//! `cargo run --release -p ml-bench -- [--customers 100000] [--runs 3] [--no-python]`
//!
//! Figures are relative to this machine, measured in the same run: the Python
//! reference (pinned in `bench/ml/requirements.txt`) is the yardstick for LightGBM, the
//! 30-second goal for the whole training, and the load average is printed because the
//! machine may be shared. Every timed step is the production code path
//! (`ml::train`, `ml::scoring`); only data generation and file export are untimed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::Duration;
use ml::features::N_FEATURES;
use ml::gbm::{GbmModel, GbmParams, Objective};
use ml::history::ProfileHistory;
use ml::scoring::{ActiveChurn, ActiveLtv, ActiveModels, ActiveSegments};
use ml::train;
use scenario::BrandConfig;
use scenario::brand::Simulator;
use uuid::Uuid;

struct Args {
    customers: usize,
    runs: usize,
    python: bool,
    out: PathBuf,
}

fn parse_args() -> Args {
    let mut args = Args {
        customers: 100_000,
        runs: 3,
        python: true,
        out: PathBuf::from("bench/out/ml"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--customers" => {
                args.customers = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--customers N")
            }
            "--runs" => args.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--no-python" => args.python = false,
            "--out" => args.out = it.next().map(PathBuf::from).expect("--out DIR"),
            other => panic!("unknown argument {other}; see the module doc"),
        }
    }
    args
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Simulates the brand person by person on every core, keeping only histories.
fn histories(cfg: &BrandConfig) -> Vec<ProfileHistory> {
    let sim = Simulator::new(cfg);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = cfg.customers.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let sim = &sim;
                s.spawn(move || {
                    let range = (t * per)..((t + 1) * per).min(cfg.customers);
                    range
                        .map(|p| {
                            let (person, acts) = sim.person(p as u32);
                            ml::synthetic::history(cfg.seed, &person, &acts)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("simulation thread"))
            .collect()
    })
}

fn secs(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("writing a matrix");
}

fn read_f64(path: &Path) -> Vec<f64> {
    std::fs::read(path)
        .expect("reading Python's predictions")
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn main() {
    let args = parse_args();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ml bench: {} customers, {cpus} cores, load average {}",
        args.customers,
        load_average()
    );

    let cfg = BrandConfig {
        customers: args.customers,
        ..BrandConfig::default()
    };
    let started = Instant::now();
    let histories = histories(&cfg);
    let facts: usize = histories
        .iter()
        .map(|h| h.orders.len() + h.events.len())
        .sum();
    println!(
        "simulated {} profiles, {facts} orders and events in {:.1}s (untimed)",
        histories.len(),
        secs(started)
    );

    // --- Training, as `ml::train::train_all` does it, stage by stage. ---
    let horizon = 90;
    let test_cutoff = cfg.end - Duration::days(horizon);
    let train_cutoff = test_cutoff - Duration::days(horizon);
    let total = Instant::now();
    let t = Instant::now();
    let train_rows = train::labelled_rows(&histories, train_cutoff, horizon as u32);
    let test_rows = train::labelled_rows(&histories, test_cutoff, horizon as u32);
    let t_features = secs(t);
    let churn_params = GbmParams::new(Objective::Binary, 42).sized_for(train_rows.len());
    let ltv_params = GbmParams::new(Objective::Regression, 42).sized_for(train_rows.len());
    let t = Instant::now();
    let (churn, churn_report) =
        train::train_churn(&train_rows, &test_rows, &churn_params).expect("churn");
    let t_churn = secs(t);
    let t = Instant::now();
    let (ltv, ltv_report) =
        train::train_ltv(&train_rows, &test_rows, horizon as u32, &ltv_params).expect("ltv");
    let t_ltv = secs(t);
    let t = Instant::now();
    let now = train::features_as_of(&histories, cfg.end);
    let t_now = secs(t);
    let t = Instant::now();
    let current: Vec<_> = now.iter().map(|(_, f)| *f).collect();
    let (segments, segment_metrics) = ml::segments::train(&current, 4, 8, 42).expect("segments");
    let t_segments = secs(t);
    let t_total = secs(total);
    println!(
        "\ntraining ({} training rows, {} test rows, {N_FEATURES} features)",
        train_rows.len(),
        test_rows.len()
    );
    println!("  features at two cutoffs  {t_features:>7.2}s");
    println!(
        "  churn (LightGBM)         {t_churn:>7.2}s  ROC-AUC {:.4} (recency only {:.4})",
        churn_report.metrics.roc_auc, churn_report.baseline_recency_roc_auc
    );
    println!(
        "  LTV (LightGBM)           {t_ltv:>7.2}s  R² {:.4}, RMSE {:.0} (past spend rate: R² {:.4}, RMSE {:.0})",
        ltv_report.metrics.r2,
        ltv_report.metrics.rmse,
        ltv_report.baseline_past_spend_rate.r2,
        ltv_report.baseline_past_spend_rate.rmse
    );
    println!("  features as of now       {t_now:>7.2}s");
    println!(
        "  segments (KMeans k={}..8) {t_segments:>6.2}s  k={} silhouette {:.4} inertia {:.4} on {} buyers",
        4,
        segment_metrics.k,
        segment_metrics.silhouette,
        segment_metrics.inertia,
        segment_metrics.rows
    );
    println!(
        "  total                    {t_total:>7.2}s  (goal < 30 s: {:.2}× of the budget)",
        t_total / 30.0
    );

    // --- Batch scoring: features from history + every model, in service-sized batches. ---
    let models = ActiveModels {
        churn: Some(ActiveChurn {
            version_id: Uuid::nil(),
            model: churn.model,
            threshold: churn.threshold,
        }),
        ltv: Some(ActiveLtv {
            version_id: Uuid::nil(),
            model: ltv,
            horizon_days: horizon as u32,
        }),
        segments: Some(ActiveSegments {
            version_id: Uuid::nil(),
            model: segments,
        }),
    };
    let batch = 512;
    if std::env::var("ML_BENCH_DETAIL").is_ok() {
        let churn_model = &models.churn.as_ref().expect("churn").model;
        let x = train::matrix(&now.iter().take(batch).map(|(_, f)| *f).collect::<Vec<_>>());
        let t = Instant::now();
        churn_model.predict(&x).expect("predict");
        println!("  detail: predict {batch} rows {:.3}s", secs(t));
        let t = Instant::now();
        churn_model.contributions(&x).expect("contrib");
        println!("  detail: contributions {batch} rows {:.3}s", secs(t));
    }
    let t = Instant::now();
    let mut predictions = 0;
    for chunk in now.chunks(batch) {
        predictions += models.score(chunk).expect("scoring").len();
    }
    let t_score = secs(t);
    let t = Instant::now();
    for chunk in histories.chunks(batch) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|h| (h.profile_id, ml::features::compute(h, cfg.end)))
            .collect();
        models.score(&rows).expect("scoring");
    }
    let t_both = secs(t);
    println!(
        "\nbatch scoring ({} profiles, batches of {batch}, {predictions} predictions)",
        now.len()
    );
    println!(
        "  models only              {:>9.0} profiles/s",
        now.len() as f64 / t_score
    );
    println!(
        "  features + models        {:>9.0} profiles/s (one thread; the service runs batches concurrently)",
        now.len() as f64 / t_both
    );

    // --- LightGBM: Rust binding vs Python package, same matrices and parameters. ---
    std::fs::create_dir_all(&args.out).expect("creating the output directory");
    let out = &args.out;
    std::fs::write(
        out.join("meta.json"),
        format!("{{\"n_features\": {N_FEATURES}}}"),
    )
    .expect("meta");
    let churn_y: Vec<f32> = train_rows
        .churned()
        .into_iter()
        .map(|c| f32::from(u8::from(c)))
        .collect();
    let ltv_y: Vec<f32> = train_rows.spend().into_iter().map(|s| s as f32).collect();
    let x = train_rows.matrix();
    let test_x = test_rows.matrix();
    let mut rust_times = Vec::new();
    for (name, y, params) in [
        ("churn", &churn_y, &churn_params),
        ("ltv", &ltv_y, &ltv_params),
    ] {
        write_f32(&out.join(format!("{name}_train_x.f32")), &x);
        write_f32(&out.join(format!("{name}_train_y.f32")), y);
        write_f32(&out.join(format!("{name}_test_x.f32")), &test_x);
        std::fs::write(
            out.join(format!("{name}_params.json")),
            params.to_lightgbm().to_string(),
        )
        .expect("params");
        let mut times = Vec::new();
        let mut model = None;
        for _ in 0..args.runs {
            let t = Instant::now();
            model = Some(GbmModel::train(&x, y, N_FEATURES, params).expect("training"));
            times.push(secs(t));
        }
        let predictions = model
            .expect("at least one run")
            .predict(&test_x)
            .expect("predicting");
        rust_times.push((name, median(times), predictions, train_rows.len()));
    }
    println!(
        "\nLightGBM on the same matrices and parameters (median of {} runs)",
        args.runs
    );
    if !args.python {
        for (name, rust, _, rows) in &rust_times {
            println!("  {name:<6} {rows} rows: Rust {rust:.2}s (Python skipped)");
        }
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("lgbm_reference.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(out)
        .arg(args.runs.to_string())
        .output()
        .expect("running python3 (pip install -r bench/ml/requirements.txt)");
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("the Python reference failed (pip install -r bench/ml/requirements.txt)");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("Python's JSON report");
    println!(
        "  Python lightgbm {}",
        report["lightgbm_version"].as_str().unwrap_or("?")
    );
    for (name, rust, predictions, rows) in &rust_times {
        let python = report["models"][name]["median_seconds"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let theirs = read_f64(&out.join(format!("{name}_python_predictions.f64")));
        let max_diff = predictions
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "  {name:<6} {rows} rows: Rust {rust:.2}s, Python {python:.2}s, ratio {:.2}× (goal ≤ 1.20×); max |Δ prediction| {max_diff:.2e}",
            rust / python
        );
    }
    println!("\nload average at the end: {}", load_average());
}
