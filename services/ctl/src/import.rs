//! `ctl import csv FILE --kind customers|orders|order_lines [--mapping field=Column,...]`:
//! bulk-imports a CSV file through the same importer as the dashboard's upload, prints
//! the summary and the first rejected rows. Running it twice on the same file adds
//! nothing the second time.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use config::Settings;
use domain::api::{CsvImportKind, CsvMapping};
use ingestion::csv::ImportOptions;

/// `ctl import`.
#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    command: ImportCommand,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Import customers or orders from a CSV file.
    Csv {
        /// The file.
        file: PathBuf,
        /// customers, orders (one row per order or per order line) or order_lines.
        #[arg(long)]
        kind: String,
        /// Column mapping `field=Column,...`; unmapped fields are read from columns
        /// named like them (`Email`, `Order ID`).
        #[arg(long, default_value = "")]
        mapping: String,
        /// Currency of orders when the file has no currency column.
        #[arg(long)]
        currency: Option<String>,
        /// Namespace of bare customer ids (default `csv`; `shopify` for a Shopify export).
        #[arg(long)]
        customer_id_namespace: Option<String>,
    },
}

/// Runs `ctl import`.
pub async fn run(settings: &Settings, args: ImportArgs) -> anyhow::Result<()> {
    let ImportCommand::Csv {
        file,
        kind,
        mapping,
        currency,
        customer_id_namespace,
    } = args.command;
    let kind: CsvImportKind = kind.parse()?;
    let mut mapping = CsvMapping::parse_pairs(&mapping)?;
    mapping.default_currency = currency;
    mapping.customer_id_namespace = customer_id_namespace;
    let db = crate::db::connect(settings, 2, crate::db::Statements::Limited).await?;
    let streams = streams::Streams::connect(
        &settings.redis_url,
        settings.stream_prefix.clone(),
        settings.stream_maxlen,
    )
    .await
    .context("connecting to Redis")?;
    let reader = tokio::fs::File::open(&file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let filename = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let summary = ingestion::csv::import(
        &db,
        Some(&streams),
        reader,
        kind,
        &mapping,
        &filename,
        "ctl",
        &ImportOptions::from_settings(settings),
    )
    .await?;
    println!("import {} {}", summary.id, summary.status);
    println!(
        "rows: {} read, {} imported, {} already imported, {} rejected",
        summary.total_rows, summary.imported_rows, summary.duplicate_rows, summary.error_rows
    );
    let errors = ingestion::csv::row_errors(&db, summary.id, 0, 20).await?;
    for e in &errors {
        println!("  line {}: {}", e.line, e.reason);
    }
    if summary.error_rows > errors.len() as i64 {
        println!("  … {} more", summary.error_rows - errors.len() as i64);
    }
    Ok(())
}
