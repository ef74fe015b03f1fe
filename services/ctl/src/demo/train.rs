//! Training after the load: the same library calls as `ctl ml train` and
//! `ctl ml score-all` (`ml::pipeline`), so the dashboard opens on a brand whose every
//! profile already has churn, lifetime-value, segment and recommendation predictions.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use config::Settings;
use sqlx::PgPool;

/// Trains and registers every model as of `as_of` (the end of the simulated history),
/// then scores every live profile with the active models. Returns one line per model.
pub async fn train_and_score(
    settings: &Settings,
    db: &PgPool,
    as_of: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    eprintln!("demo: training churn, lifetime value, segments and recommendations as of {as_of}");
    let run = ml::pipeline::train_and_register(db, &settings.ml, as_of)
        .await
        .context("training the models")?;
    let lines = run
        .models
        .iter()
        .map(|m| {
            let decision = match &m.decision {
                ml::registry::Decision::Activated { .. } => "active".to_owned(),
                ml::registry::Decision::Candidate { .. } => {
                    "candidate (the active one is better)".to_owned()
                }
                ml::registry::Decision::Rejected { reason } => format!("rejected: {reason}"),
            };
            let metric = m.task.main_metric();
            let value = m.metrics[metric]
                .as_f64()
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
            format!(
                "{:<8} {} {metric} {value}, {decision} ({})",
                m.task.to_string(),
                m.algorithm,
                m.version_id
            )
        })
        .collect();
    let scored = crate::ml::score_everyone(settings, db, as_of).await?;
    eprintln!(
        "demo: {} profiles trained on, {scored} scored",
        run.profiles
    );
    Ok(lines)
}
