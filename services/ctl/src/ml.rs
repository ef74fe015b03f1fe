//! `ctl ml train|score-all|status|activate|eval`: the operator's handle on the models.
//!
//! - `train` trains churn, LTV and segments on every live profile and registers them
//!   (each is activated only if at least as good as the active one, within
//!   `ML_ACTIVATION_TOLERANCE`); `score-all` then re-scores everyone with the active
//!   models. ml-inference does both on its schedule; these run them now.
//! - `status` lists the active versions with their main metrics and recent candidates.
//! - `activate ID` makes a version active by hand; `activate --rollback TASK` brings
//!   back the one active before the current one.
//! - `eval --transactions FILE.csv` needs no database: it reads any brand's transaction
//!   log, trains on part of its customers and prints the metrics on the held-out rest
//!   beside simple baselines, so a brand can judge the models on its own history.

use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use clap::{Args, Subcommand};
use config::Settings;
use ml::eval::{ColumnMapping, read_transactions};
use ml::registry::{self, Decision, ModelVersion, Task};
use ml::train::evaluate_holdout;
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
    /// Share of customers held out for testing.
    #[arg(long, default_value_t = 0.25)]
    test_share: f64,
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
    if let MlCommand::Eval(eval) = args.command {
        return run_eval(settings, eval).await;
    }
    let db = storage::connect(&settings.database_url, 4)
        .await
        .context("connecting to Postgres")?;
    storage::migrate(&db).await.context("migrating")?;
    match args.command {
        MlCommand::Train { as_of, no_score } => {
            let as_of = as_of.unwrap_or_else(Utc::now);
            let run = pipeline::train_and_register(&db, &settings.ml, as_of).await?;
            println!("trained on {} profiles as of {as_of}", run.profiles);
            for m in &run.models {
                let outcome = match m.decision {
                    Decision::Activated {
                        replaced: Some(old),
                    } => format!("active (replaces {old})"),
                    Decision::Activated { replaced: None } => "active".to_owned(),
                    Decision::Candidate {
                        active,
                        active_metric,
                        new_metric,
                    } => format!(
                        "candidate: {} {new_metric:.4} < active {active} {active_metric:.4} - tolerance",
                        m.task.main_metric()
                    ),
                };
                println!("  {:<8} {}  {outcome}", m.task.as_str(), m.version_id);
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
            for task in [Task::Churn, Task::Ltv, Task::Segment] {
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
        MlCommand::Eval(_) => unreachable!("handled above"),
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
        pipeline::load_active(db)
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
        "  {} {:<9} {:<9} {}  trained {}  rows {}/{}  {}",
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
        Task::Recommend => m.to_string(),
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
    anyhow::ensure!(
        (0.05..=0.5).contains(&args.test_share),
        "--test-share must be between 0.05 and 0.5"
    );
    let seed = settings.ml.ml_seed;
    let test_share = args.test_share;
    let histories = log.histories.clone();
    let report = tokio::task::spawn_blocking(move || {
        evaluate_holdout(&histories, cutoff, horizon, seed, test_share)
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
    println!(
        "cutoff {}, horizon {horizon} days, {} held-out customers (of those who bought before the cutoff)\n",
        cutoff.format("%Y-%m-%d"),
        report.test_rows
    );
    let c = &report.churn;
    println!(
        "churn (positive = no order in the horizon; {:.1}% of held-out customers)",
        100.0 * c.metrics.positive_rate
    );
    println!("  {:<12} {:>10} {:>14}", "metric", "model", "recency only");
    println!(
        "  {:<12} {:>10.4} {:>14.4}",
        "roc_auc", c.metrics.roc_auc, c.baseline_recency_roc_auc
    );
    println!(
        "  {:<12} {:>10.4} {:>14.4}",
        "pr_auc", c.metrics.pr_auc, c.baseline_recency_pr_auc
    );
    for (name, v) in [
        ("accuracy", c.metrics.accuracy),
        ("precision", c.metrics.precision),
        ("recall", c.metrics.recall),
        ("f1", c.metrics.f1),
        ("brier", c.metrics.brier),
        ("threshold", c.metrics.threshold),
    ] {
        println!("  {name:<12} {v:>10.4} {:>14}", "-");
    }
    let l = &report.ltv;
    let b = &l.baseline_past_spend_rate;
    println!("\nLTV (spend in the {horizon} days after the cutoff)");
    println!(
        "  {:<12} {:>10} {:>16}",
        "metric", "model", "past spend rate"
    );
    for (name, m, base) in [
        ("rmse", l.metrics.rmse, b.rmse),
        ("mae", l.metrics.mae, b.mae),
        ("r2", l.metrics.r2, b.r2),
        ("mape_buyers", l.metrics.mape_buyers, b.mape_buyers),
    ] {
        println!("  {name:<12} {m:>10.4} {base:>16.4}");
    }
    Ok(())
}
