//! `ctl`: the operator's tool. Each subcommand lives in its own module; this file only
//! parses the command line, loads settings and dispatches.
//!
//! # Assumptions, running, testing
//!
//! Assumes the settings every service reads (`DATABASE_URL`, `REDIS_URL`, ...); `ctl up`
//! also assumes the service binaries next to its own. Run: `cargo run -p ctl -- --help`.
//! Tests: `cargo nextest run -p ctl` (each command against the real Postgres and Redis;
//! `tests/e2e.rs` runs the whole fleet as processes on the demo brand and wipes Redis
//! mid-load). The demo's load and quality figures are in docs/demo.md.

mod db;
mod demo;
mod destination;
mod identity;
mod import;
mod integration;
mod ml;
mod republish;
mod streams;
mod supervisor;
mod user;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use config::Settings;

#[derive(Parser)]
#[command(name = "ctl", version, about = "Operate a ConstIntel fleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if needed and apply every pending migration.
    Migrate,
    /// Run every service under one supervisor until Ctrl-C (restarts crashed ones).
    Up(supervisor::UpArgs),
    /// Show each topic's length, consumer groups, pending entries, lag and dead letters.
    Streams,
    /// List or replay a topic's dead letters.
    Dlq(streams::DlqArgs),
    /// Add and list integrations (the sources that deliver to ingest).
    Integration(integration::IntegrationArgs),
    /// Add, list, test, sync and replay destinations (HubSpot, Salesforce, REST).
    Destination(destination::DestinationArgs),
    /// Bulk-import CSV files (customers, orders).
    Import(import::ImportArgs),
    /// Rebuild profiles from the stored events, or measure identity quality.
    Identity(identity::IdentityArgs),
    /// Train, score, inspect, activate and evaluate the ML models.
    Ml(ml::MlArgs),
    /// Load the demo brand through the real front door, wait for the pipeline, train.
    Demo(demo::DemoArgs),
    /// Re-drive unfinished work from Postgres after Redis lost stream entries.
    Republish(republish::RepublishArgs),
    /// Add dashboard users (`ctl user add --email E --role R [--password P]`).
    User(user::UserArgs),
    /// Create API tokens for machines (`ctl token create --name N --role R`).
    Token(user::TokenArgs),
    /// Serve a local fake of Twilio's Messages API (nothing reaches WhatsApp).
    FakeTwilio(FakeTwilioArgs),
}

/// `ctl fake-twilio`.
#[derive(clap::Args)]
struct FakeTwilioArgs {
    /// Address to listen on.
    #[arg(long, default_value = messaging::fake::DEV_BIND)]
    bind: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    telemetry::init("ctl", settings.log_format);
    match cli.command {
        Command::Migrate => {
            let created = storage::ensure_database(&settings.database_url).await?;
            let pool = db::connect(&settings, 2, db::Statements::Unlimited).await?;
            storage::migrate(&pool).await.context("migrating")?;
            println!(
                "database {} ({}), migrations applied",
                settings.database_url_redacted(),
                if created { "created" } else { "existing" }
            );
            // Integration secrets written before they were sealed are sealed now when
            // the key is at hand (ingest and the api-gateway also do it at start-up).
            if settings.integration_secrets_key.is_some() {
                let key = service_kit::secrets_key(&settings)?;
                let sealed = storage::integrations::seal_plaintext(&pool, &key).await?;
                if sealed > 0 {
                    println!("{sealed} integration secrets stored in plaintext are now sealed");
                }
            }
        }
        Command::Up(args) => supervisor::up(&settings, args).await?,
        Command::Streams => streams::show(&settings).await?,
        Command::Dlq(args) => streams::dlq(&settings, args).await?,
        Command::Integration(args) => integration::run(&settings, args).await?,
        Command::Destination(args) => destination::run(&settings, args).await?,
        Command::Import(args) => import::run(&settings, args).await?,
        Command::Identity(args) => identity::run(&settings, args).await?,
        Command::Ml(args) => ml::run(&settings, args).await?,
        Command::Demo(args) => demo::run(&settings, args).await?,
        Command::Republish(args) => republish::run(&settings, args).await?,
        Command::User(args) => user::user(&settings, args).await?,
        Command::Token(args) => user::token(&settings, args).await?,
        Command::FakeTwilio(args) => {
            use messaging::fake::{DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, FakeTwilio};
            let listener = tokio::net::TcpListener::bind(&args.bind)
                .await
                .with_context(|| format!("binding {}", args.bind))?;
            let fake = FakeTwilio::serve(listener, DEV_ACCOUNT_SID, DEV_AUTH_TOKEN).await?;
            println!(
                "fake Twilio Messages API at {} (account {DEV_ACCOUNT_SID}); a FAKE: nothing reaches WhatsApp. Ctrl-C stops it.",
                fake.base
            );
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}
