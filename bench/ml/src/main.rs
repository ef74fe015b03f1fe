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
use ml::scoring::{
    ActiveChurn, ActiveLtv, ActiveModels, ActiveSegments, ChurnScorer, LtvScorer, RiskTiers,
};
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
    let cutoff = cfg.end - Duration::days(horizon);
    let total = Instant::now();
    let t = Instant::now();
    let evaluated =
        train::evaluate_and_fit(&histories, cutoff, horizon as u32, 42).expect("churn and LTV");
    let t_predictive = secs(t);
    let t = Instant::now();
    let now = train::features_as_of(&histories, cfg.end);
    let t_now = secs(t);
    let t = Instant::now();
    let current: Vec<_> = now.iter().map(|(_, f)| *f).collect();
    let (segments, segment_metrics) = ml::segments::train(&current, 4, 8, 42).expect("segments");
    let t_segments = secs(t);
    let t_total = secs(total);
    let (c, l) = (&evaluated.summary.churn, &evaluated.summary.ltv);
    println!(
        "\ntraining ({} customers at the cutoff, {} training rows over {} cutoffs, {} inputs, {}-fold cross-fitting + the served fit)",
        evaluated.summary.customers,
        c.train_rows,
        evaluated.summary.rolling_cutoffs.len() + 1,
        train::N_INPUTS,
        c.folds
    );
    println!("  churn + LTV (BG/NBD, Gamma-Gamma, LightGBM) {t_predictive:>7.2}s");
    println!(
        "    churn ROC-AUC {:.4} [{:.3}, {:.3}] (recency only {:.4}, BG/NBD {:.4}); Brier {:.4} (uncalibrated {:.4})",
        c.metrics.roc_auc,
        c.roc_auc_ci.low,
        c.roc_auc_ci.high,
        c.baselines.recency.roc_auc,
        c.baselines.bgnbd.as_ref().map_or(f64::NAN, |b| b.roc_auc),
        c.metrics.brier,
        c.brier_uncalibrated
    );
    let gg = l.baselines.bgnbd_gamma_gamma.as_ref();
    println!(
        "    LTV (served: {} head) R² {:.4}, RMSE {:.0}, MAE {:.0} (BG/NBD × Gamma-Gamma: R² {:.4}, RMSE {:.0}, MAE {:.0}; past spend rate: R² {:.4}, RMSE {:.0})",
        l.head.as_str(),
        l.metrics.r2,
        l.metrics.rmse,
        l.metrics.mae,
        gg.map_or(f64::NAN, |g| g.r2),
        gg.map_or(f64::NAN, |g| g.rmse),
        gg.map_or(f64::NAN, |g| g.mae),
        l.baselines.past_spend_rate.r2,
        l.baselines.past_spend_rate.rmse
    );
    for (name, m) in [("expected spend", &l.mean), ("median", &l.median)] {
        if let Some(m) = m {
            println!(
                "      head {name}: R² {:.4}, RMSE {:.0}, MAE {:.0}",
                m.r2, m.rmse, m.mae
            );
        }
    }
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
    let train::Evaluated {
        churn_model,
        ltv_model,
        ..
    } = evaluated;
    let models = ActiveModels {
        churn: Some(ActiveChurn {
            version_id: Uuid::nil(),
            threshold: churn_model.threshold,
            scorer: ChurnScorer::Gbm {
                btyd: churn_model.btyd,
                model: churn_model.model,
                calibrator: churn_model.calibrator,
                stack: churn_model.stack,
            },
        }),
        ltv: Some(ActiveLtv {
            version_id: Uuid::nil(),
            scorer: LtvScorer::Gbm {
                btyd: ltv_model.btyd,
                head: ltv_model.choice.head,
                model: match ltv_model.choice.head {
                    train::LtvHead::Mean => ltv_model.model,
                    train::LtvHead::Median => ltv_model.median,
                },
            },
            horizon_days: horizon as u32,
        }),
        segments: Some(ActiveSegments {
            version_id: Uuid::nil(),
            model: segments,
        }),
        // Recommendations are timed by `bench/recs` on real baskets.
        recommend: None,
        tiers: RiskTiers::default(),
    };
    let batch = 512;
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

    // --- LightGBM: Rust binding vs Python package, same matrices and parameters (the
    // binding's cost, on the features alone at two cutoffs; untimed preparation). ---
    let train_rows =
        train::labelled_rows(&histories, cutoff - Duration::days(horizon), horizon as u32);
    let test_rows = train::labelled_rows(&histories, cutoff, horizon as u32);
    let churn_params = GbmParams::new(Objective::Binary, 42).sized_for(train_rows.len());
    let ltv_params = GbmParams::new(Objective::Regression, 42).sized_for(train_rows.len());
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
    let x = train::matrix(&train_rows.features);
    let test_x = train::matrix(&test_rows.features);
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
