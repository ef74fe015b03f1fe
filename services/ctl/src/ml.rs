//! `ctl ml train|score-all|status|activate|eval|eval-recs`: the operator's handle on the
//! models.
//!
//! - `train` trains churn, LTV and segments on every live profile and registers them
//!   (each is activated only if at least as good as the active one, within
//!   `ML_ACTIVATION_TOLERANCE`); `score-all` then re-scores everyone with the active
//!   models. ml-inference does both on its schedule; these run them now.
//! - `status` lists the active versions with their main metrics and recent candidates.
//! - `activate ID` makes a version active by hand; `activate --rollback TASK` brings
//!   back the one active before the current one.
//! - `eval --transactions FILE.csv` needs no database: it reads any brand's transaction
//!   log, scores every customer by cross-fitting (each by a model that never saw them)
//!   and prints the metrics, with bootstrap intervals, beside recency alone, BG/NBD and
//!   Gamma-Gamma × BG/NBD on the same customers, so a brand can judge the models on its
//!   own history.
//! - `eval-recs --transactions FILE.csv --cutoff DATE --horizon DAYS` needs no database
//!   either: it trains the recommender on everything before the cutoff and prints
//!   Recall@10, NDCG@10 and HitRate@10 (split into repeat and explore items) and coverage
//!   for popularity, P-TopFreq, item-kNN, item2vec neighbours and the blend
//!   ([`ml::recs::offline`]).

use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use clap::{Args, Subcommand};
use config::Settings;
use ml::eval::{ColumnMapping, read_transactions};
use ml::registry::{self, Decision, ModelVersion, Task};
use ml::train::evaluate_and_fit;
use ml::{MlError, pipeline};

/// `ctl ml`.
#[derive(Args)]
pub struct MlArgs {
    #[command(subcommand)]
    command: MlCommand,
}

#[derive(Subcommand)]
enum MlCommand {
    /// Train churn, LTV and segments on every profile and register them.
    Train {
        /// Treat this instant as "now" (RFC 3339 or YYYY-MM-DD); default: now.
        #[arg(long, value_parser = parse_instant)]
        as_of: Option<DateTime<Utc>>,
        /// Do not re-score every profile afterwards.
        #[arg(long)]
        no_score: bool,
    },
    /// Re-score every live profile with the active models.
    ScoreAll {
        /// Compute features as of this instant; default: now.
        #[arg(long, value_parser = parse_instant)]
        as_of: Option<DateTime<Utc>>,
    },
    /// Show the active model of each task and the latest versions.
    Status {
        /// Versions listed per task.
        #[arg(long, default_value_t = 5)]
        limit: i64,
    },
    /// Make a model version active by hand, or roll a task back to its previous one.
    Activate {
        /// The version to activate (as listed by `ctl ml status`).
        #[arg(required_unless_present = "rollback", conflicts_with = "rollback")]
        version: Option<uuid::Uuid>,
        /// Re-activate the version that was active before the current one of this task
        /// (churn, ltv, segment).
        #[arg(long, value_parser = parse_task)]
        rollback: Option<Task>,
    },
    /// Train and evaluate churn and LTV on a transaction log (no database needed).
    Eval(EvalArgs),
    /// Train and evaluate recommendations on order lines (no database needed).
    EvalRecs(EvalRecsArgs),
}

/// `ctl ml eval-recs`.
#[derive(Args)]
struct EvalRecsArgs {
    /// CSV of order lines: customer_id, order_id, sku, category, name, date, quantity,
    /// price (customer_id, sku and date required).
    #[arg(long)]
    transactions: std::path::PathBuf,
    /// Train on everything before this date (RFC 3339 or YYYY-MM-DD); repeat the flag
    /// for several cutoffs. Default: the last order minus the horizon.
    #[arg(long, value_parser = parse_instant)]
    cutoff: Vec<DateTime<Utc>>,
    /// Days after the cutoff whose purchases are the truth.
    #[arg(long, default_value_t = 28, value_parser = clap::value_parser!(i64).range(1..=3650))]
    horizon: i64,
    /// Print the reports as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// `ctl ml eval`.
#[derive(Args)]
struct EvalArgs {
    /// CSV with one row per transaction (or per order line).
    #[arg(long)]
    transactions: std::path::PathBuf,
    /// Features as of this date; default: the last transaction minus the horizon.
    #[arg(long, value_parser = parse_instant)]
    cutoff: Option<DateTime<Utc>>,
    /// Days after the cutoff that define churn and future spend; default:
    /// CHURN_HORIZON_DAYS.
    #[arg(long)]
    horizon: Option<u32>,
    /// Header of the customer id column.
    #[arg(long, default_value = "customer_id")]
    customer_col: String,
    /// Header of the date column.
    #[arg(long, default_value = "date")]
    date_col: String,
    /// Header of the amount column.
    #[arg(long, default_value = "amount")]
    amount_col: String,
    /// Header of the order id column (rows of one order are one basket), if any.
    #[arg(long, default_value = "order_id")]
    order_col: String,
    /// Header of the SKU column, if any.
    #[arg(long, default_value = "sku")]
    sku_col: String,
    /// Header of the category column, if any.
    #[arg(long, default_value = "category")]
    category_col: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_instant(raw: &str) -> Result<DateTime<Utc>, String> {
    ml::eval::parse_date(raw)
        .ok_or_else(|| format!("`{raw}` is not a date (use RFC 3339 or YYYY-MM-DD)"))
}

fn parse_task(raw: &str) -> Result<Task, String> {
    raw.parse::<Task>().map_err(|e| e.to_string())
}

/// Runs `ctl ml ...`.
pub async fn run(settings: &Settings, args: MlArgs) -> anyhow::Result<()> {
    match args.command {
        MlCommand::Eval(eval) => return run_eval(settings, eval).await,
        MlCommand::EvalRecs(eval) => return run_eval_recs(settings, eval).await,
        _ => {}
    }
    // Training and re-scoring everyone are bulk jobs; the rest are short.
    let statements = match args.command {
        MlCommand::Train { .. } | MlCommand::ScoreAll { .. } => crate::db::Statements::Unlimited,
        _ => crate::db::Statements::Limited,
    };
    let db = crate::db::connect(settings, 4, statements).await?;
    storage::migrate(&db).await.context("migrating")?;
    match args.command {
        MlCommand::Train { as_of, no_score } => {
            let as_of = as_of.unwrap_or_else(Utc::now);
            let run = pipeline::train_and_register(&db, &settings.ml, as_of).await?;
            println!("trained on {} profiles as of {as_of}", run.profiles);
            for m in &run.models {
                let outcome = match &m.decision {
                    Decision::Activated {
                        replaced: Some(old),
                    } => format!("active (replaces {old})"),
                    Decision::Activated { replaced: None } => "active".to_owned(),
                    Decision::Candidate {
                        active,
                        active_metric,
                        new_metric,
                    } => format!(
                        "candidate: {} {new_metric:.4} loses to active {active} {active_metric:.4} beyond the tolerance",
                        m.task.main_metric()
                    ),
                    Decision::Rejected { reason } => format!("rejected: {reason}"),
                };
                println!(
                    "  {:<8} {:<18} {}  {outcome}",
                    m.task.as_str(),
                    m.algorithm,
                    m.version_id
                );
                println!("           {}", summary(m.task, &m.metrics));
            }
            if !no_score {
                score_all(settings, &db, as_of).await?;
            }
        }
        MlCommand::ScoreAll { as_of } => {
            score_all(settings, &db, as_of.unwrap_or_else(Utc::now)).await?
        }
        MlCommand::Status { limit } => {
            let active = registry::active(&db).await?;
            if active.is_empty() {
                println!("no active models: run `ctl ml train`");
            }
            for task in Task::ALL {
                println!("{task}:");
                for v in registry::list(&db, Some(task), limit).await? {
                    print_version(&v);
                }
            }
        }
        MlCommand::Activate { version, rollback } => match (version, rollback) {
            (_, Some(task)) => {
                let id = registry::rollback(&db, task).await?;
                println!("{task}: rolled back to {id}");
            }
            (Some(id), None) => {
                let (task, replaced) = registry::activate(&db, id).await?;
                match replaced {
                    Some(old) => println!("{task}: {id} is active (retired {old})"),
                    None => println!("{task}: {id} is active"),
                }
            }
            (None, None) => unreachable!("clap requires a version or --rollback"),
        },
        MlCommand::Eval(_) | MlCommand::EvalRecs(_) => unreachable!("handled above"),
    }
    Ok(())
}

async fn score_all(
    settings: &Settings,
    db: &sqlx::PgPool,
    as_of: DateTime<Utc>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let n = score_everyone(settings, db, as_of).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "scored {n} profiles in {secs:.1}s ({:.0} profiles/s)",
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Scores every live profile as of `as_of` with the active models (refreshing the
/// feature store and the Customer 360 cache); returns how many were scored. Shared by
/// `ctl ml score-all`, `ctl ml train` and `ctl demo`.
pub(crate) async fn score_everyone(
    settings: &Settings,
    db: &sqlx::PgPool,
    as_of: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let models = Arc::new(
        pipeline::load_active(db, &settings.ml)
            .await
            .context("loading the active models")?,
    );
    if models.is_empty() {
        anyhow::bail!("no active models to score with: run `ctl ml train` first");
    }
    let mut redis = service_kit::connect_redis(&settings.redis_url).await?;
    let n = pipeline::score_all(
        db,
        &mut redis,
        &settings.stream_prefix,
        &models,
        settings.ml.ml_batch_size,
        as_of,
    )
    .await
    .context("scoring every profile")?;
    Ok(n)
}

fn print_version(v: &ModelVersion) {
    println!(
        "  {} {:<9} {:<17} {}  trained {}  rows {}/{}  {}",
        v.id,
        v.status,
        v.algorithm,
        v.activated_at
            .map(|t| format!("activated {}", t.format("%Y-%m-%d %H:%M")))
            .unwrap_or_default(),
        v.created_at.format("%Y-%m-%d %H:%M"),
        v.train_rows,
        v.test_rows,
        summary(v.task, &v.metrics),
    );
    if let Some(reason) = &v.status_reason {
        println!("      why: {reason}");
    }
}

/// The metrics people look at, on one line.
fn summary(task: Task, m: &serde_json::Value) -> String {
    let f = |k: &str| m[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.3}"));
    match task {
        Task::Churn => format!(
            "roc_auc {} (recency only {}) pr_auc {} f1 {} brier {} threshold {}",
            f("roc_auc"),
            f("baseline_recency_roc_auc"),
            f("pr_auc"),
            f("f1"),
            f("brier"),
            f("threshold")
        ),
        Task::Ltv => format!(
            "r2 {} rmse {} mae {} mape_buyers {} (past spend rate: r2 {} rmse {})",
            f("r2"),
            f("rmse"),
            f("mae"),
            f("mape_buyers"),
            m["baseline_past_spend_rate"]["r2"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.3}")),
            m["baseline_past_spend_rate"]["rmse"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.1}")),
        ),
        Task::Segment => {
            let names: Vec<String> = m["segments"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|s| format!("{} {}", s["name"].as_str().unwrap_or("?"), s["size"]))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "k {} silhouette {} inertia {} [{}]",
                m["k"],
                f("silhouette"),
                f("inertia"),
                names.join(", ")
            )
        }
        Task::Recommend => format!(
            "recall@10 {} ndcg@10 {} explore recall {} coverage {} (P-TopFreq recall {}, popularity {}) hnsw recall {}",
            f("recall_at_10"),
            f("ndcg_at_10"),
            f("explore_recall_at_10"),
            f("coverage"),
            m["baselines"]["p_topfreq"]["recall_at_10"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.3}")),
            m["baselines"]["popularity"]["recall_at_10"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.3}")),
            f("ann_recall_at_10"),
        ),
    }
}

async fn run_eval(settings: &Settings, args: EvalArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.transactions)
        .with_context(|| format!("opening {}", args.transactions.display()))?;
    let optional = |s: String| (!s.is_empty()).then_some(s);
    let mapping = ColumnMapping {
        customer: args.customer_col,
        date: args.date_col,
        amount: args.amount_col,
        order: optional(args.order_col),
        sku: optional(args.sku_col),
        category: optional(args.category_col),
    };
    let log = tokio::task::spawn_blocking(move || {
        read_transactions(std::io::BufReader::new(file), &mapping)
    })
    .await??;
    let (Some(first), Some(last)) = (log.first, log.last) else {
        anyhow::bail!(
            "no readable transactions in {}",
            args.transactions.display()
        );
    };
    let horizon = args.horizon.unwrap_or(settings.ml.churn_horizon_days);
    let cutoff = args
        .cutoff
        .unwrap_or(last - Duration::days(i64::from(horizon)));
    anyhow::ensure!(
        cutoff > first && cutoff <= last,
        "cutoff {cutoff} must fall inside the data ({first} .. {last})"
    );
    let seed = settings.ml.ml_seed;
    let histories = log.histories.clone();
    let report = tokio::task::spawn_blocking(move || {
        evaluate_and_fit(&histories, cutoff, horizon, seed).map(|e| e.summary)
    })
    .await?
    .map_err(|e| match e {
        MlError::NotEnoughData(m) => anyhow::anyhow!("not enough data to evaluate: {m}"),
        other => other.into(),
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} rows, {} customers, {} orders, {} bad rows, {} returns left out; data {} .. {}",
        log.rows,
        log.histories.len(),
        log.orders,
        log.bad_rows.len(),
        log.returns_ignored,
        first.format("%Y-%m-%d"),
        last.format("%Y-%m-%d")
    );
    for (line, reason) in log.bad_rows.iter().take(5) {
        println!("  line {line}: {reason}");
    }
    print_evaluation(&report);
    Ok(())
}

async fn run_eval_recs(settings: &Settings, args: EvalRecsArgs) -> anyhow::Result<()> {
    let path = args.transactions.clone();
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let started = std::time::Instant::now();
    let log = tokio::task::spawn_blocking(move || {
        ml::recs::offline::read_transactions(std::io::BufReader::new(file))
    })
    .await??;
    let Some((first, last)) = log.span else {
        anyhow::bail!("no readable order lines in {}", path.display());
    };
    if !args.json {
        println!(
            "{} rows ({} skipped), {} customers, {} products, {} .. {}; read in {:.1}s",
            log.rows,
            log.skipped,
            log.corpus.customers.len(),
            log.corpus.catalogue.len(),
            first.format("%Y-%m-%d"),
            last.format("%Y-%m-%d"),
            started.elapsed().as_secs_f64()
        );
        for (line, reason) in log.bad_rows.iter().take(5) {
            println!("  line {line}: {reason}");
        }
    }
    let cutoffs = if args.cutoff.is_empty() {
        vec![last - Duration::days(args.horizon)]
    } else {
        args.cutoff.clone()
    };
    for &cutoff in &cutoffs {
        anyhow::ensure!(
            cutoff > first && cutoff <= last,
            "cutoff {cutoff} must fall inside the data ({first} .. {last})"
        );
    }
    let params = ml::recs::RecsParams {
        item2vec: ml::recs::item2vec::Item2VecParams {
            seed: settings.ml.ml_seed,
            ..Default::default()
        },
        ..Default::default()
    };
    // This machine's own limits, measured in the same run: the speed figures are printed
    // as ratios to them (and to the goals).
    let machine = tokio::task::spawn_blocking(ml::recs::offline::machine_reference).await?;
    if !args.json {
        println!(
            "machine reference: memory read {:.1} GB/s, {:.0} M 32-dim dot products/s on one core; \
             {} cores, load average {}",
            machine.memory_gb_per_second,
            machine.dots_per_second / 1e6,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            ml::recs::offline::load_average()
        );
    }
    let corpus = Arc::new(log.corpus);
    let mut reports = Vec::new();
    for cutoff in cutoffs {
        let corpus = Arc::clone(&corpus);
        let horizon = args.horizon;
        let report = tokio::task::spawn_blocking(move || {
            ml::recs::offline::evaluate(&corpus, cutoff, horizon, &params)
        })
        .await?
        .map_err(|e| match e {
            MlError::NotEnoughData(m) => anyhow::anyhow!("not enough data to evaluate: {m}"),
            other => other.into(),
        })?;
        if !args.json {
            let mut text = String::new();
            ml::recs::offline::write_report(&mut text, &report, &machine)?;
            print!("{text}");
        }
        reports.push(report);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"machine": machine, "evaluations": reports})
            )?
        );
    }
    Ok(())
}

fn ci(i: &ml::crossfit::Interval) -> String {
    format!("[{:.3}, {:.3}]", i.low, i.high)
}

fn print_evaluation(report: &ml::train::EvaluationSummary) {
    let horizon = report.horizon_days;
    println!(
        "cutoff {}, horizon {horizon} days: {} customers who bought before the cutoff, each scored \
         by a model that never saw them ({}-fold cross-fitting){}",
        report.cutoff.format("%Y-%m-%d"),
        report.customers,
        report.churn.folds,
        if report.rolling_cutoffs.is_empty() {
            String::new()
        } else {
            format!(
                "; training rows also at {}",
                report
                    .rolling_cutoffs
                    .iter()
                    .map(|c| c.format("%Y-%m-%d").to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if let Some(b) = report.btyd.bgnbd {
        println!(
            "BG/NBD: r {:.3}, alpha {:.2} days ({:.3} weeks), a {:.3}, b {:.3}",
            b.r,
            b.alpha,
            b.alpha / 7.0,
            b.a,
            b.b
        );
    }
    if let Some(g) = report.btyd.gamma_gamma {
        println!(
            "Gamma-Gamma: p {:.3}, q {:.3}, gamma {:.3}",
            g.p, g.q, g.gamma
        );
    }
    let c = &report.churn;
    println!(
        "\nchurn (positive = no order in the horizon; {:.1}% of customers)",
        100.0 * c.metrics.positive_rate
    );
    println!(
        "  {:<14} {:>22} {:>22} {:>22}",
        "metric", "model", "recency only", "BG/NBD"
    );
    let bg = c.baselines.bgnbd.as_ref();
    let cell = |v: f64, i: &ml::crossfit::Interval| format!("{v:.4} {}", ci(i));
    println!(
        "  {:<14} {:>22} {:>22} {:>22}",
        "roc_auc",
        cell(c.metrics.roc_auc, &c.roc_auc_ci),
        cell(c.baselines.recency.roc_auc, &c.baselines.recency.roc_auc_ci),
        bg.map_or("-".into(), |b| cell(b.roc_auc, &b.roc_auc_ci)),
    );
    println!(
        "  {:<14} {:>22.4} {:>22.4} {:>22}",
        "pr_auc",
        c.metrics.pr_auc,
        c.baselines.recency.pr_auc,
        bg.map_or("-".into(), |b| format!("{:.4}", b.pr_auc)),
    );
    let calibrated = |b: Option<f64>| b.map_or("-".into(), |v| format!("{v:.4}"));
    println!(
        "  {:<14} {:>22.4} {:>22} {:>22}",
        "brier",
        c.metrics.brier,
        calibrated(c.baselines.recency.brier),
        calibrated(bg.and_then(|b| b.brier)),
    );
    println!("  {:<14} {:>22.4}", "brier (uncal.)", c.brier_uncalibrated);
    if let Some(k) = &c.candidates {
        println!(
            "  candidates (served model, validation roc_auc): lightgbm {:.4}, logistic {:.4}, \
             blend {:.4}, mean {:.4} → {:?}",
            k.lightgbm_auc, k.logistic_auc, k.blend_auc, k.mean_auc, k.chosen
        );
    }
    if let Some(k) = &c.calibration {
        println!(
            "  calibration (on {} out-of-fold scores, cross-fitted brier): none {:.4}, \
             platt {:.4}, isotonic {:.4} → {}; slope {:.3}, intercept {:.3}",
            k.rows,
            k.brier_none,
            k.brier_platt,
            k.brier_isotonic,
            k.method,
            k.slope.unwrap_or(f64::NAN),
            k.intercept.unwrap_or(f64::NAN)
        );
    }
    for (name, v) in [
        ("accuracy", c.metrics.accuracy),
        ("precision", c.metrics.precision),
        ("recall", c.metrics.recall),
        ("f1", c.metrics.f1),
        ("threshold", c.metrics.threshold),
    ] {
        println!("  {name:<14} {v:>22.4}");
    }
    println!("  reliability (predicted → observed, customers):");
    for b in &c.reliability {
        println!(
            "    {:>5.3} → {:>5.3}  {:>6}",
            b.predicted, b.observed, b.rows
        );
    }
    let l = &report.ltv;
    println!("\nLTV (spend in the {horizon} days after the cutoff)");
    println!(
        "  {:<12} {:>12} {:>20} {:>16}",
        "metric", "served", "BG/NBD x Gamma-Gamma", "past spend rate"
    );
    let gg = l.baselines.bgnbd_gamma_gamma.as_ref();
    let past = &l.baselines.past_spend_rate;
    for (name, m, g, p) in [
        ("mae", l.metrics.mae, gg.map(|g| g.mae), past.mae),
        ("rmse", l.metrics.rmse, gg.map(|g| g.rmse), past.rmse),
        ("r2", l.metrics.r2, gg.map(|g| g.r2), past.r2),
        (
            "mape_buyers",
            l.metrics.mape_buyers,
            gg.map(|g| g.mape_buyers),
            past.mape_buyers,
        ),
    ] {
        println!(
            "  {name:<12} {m:>12.4} {:>20} {p:>16.4}",
            g.map_or("-".into(), |g| format!("{g:.4}"))
        );
    }
    if let Some(m) = &l.baselines.constant {
        println!(
            "  constant (training median spend, no skill): mae {:.4}, rmse {:.4}, r2 {:.4}",
            m.mae, m.rmse, m.r2
        );
    }
    for (name, head) in [("expected spend", &l.mean), ("median", &l.median)] {
        if let Some(m) = head {
            println!(
                "  head {name:<15} mae {:.4}, rmse {:.4}, r2 {:.4}",
                m.mae, m.rmse, m.r2
            );
        }
    }
    if let Some(k) = &l.head_choice {
        println!(
            "  head (served model, validation mae): mean {:.4}, median {:.4} → {}",
            k.mean_mae,
            k.median_mae,
            k.head.as_str()
        );
    }
}
