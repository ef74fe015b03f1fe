//! `ctl integration add|list`: configure the sources that deliver to ingest.
//!
//! `add` creates the integration (generating a secret unless one is given, e.g. the
//! signing secret Shopify shows for an existing webhook) and prints its id, the URL to
//! configure at the source and the secret or write key. The secret is printed only by
//! `add`; `list` never shows it.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use config::Settings;

/// `ctl integration`.
#[derive(Args)]
pub struct IntegrationArgs {
    #[command(subcommand)]
    command: IntegrationCommand,
}

#[derive(Subcommand)]
enum IntegrationCommand {
    /// Create an integration and print its id, webhook URL and secret.
    Add {
        /// shopify, woocommerce, twilio, segment or pos.
        #[arg(long)]
        kind: String,
        /// A name unique within the kind (the shop, the WhatsApp number, the app).
        #[arg(long)]
        name: String,
        /// The secret to use (Shopify/WooCommerce webhook secret, Twilio auth token);
        /// generated when omitted.
        #[arg(long)]
        secret: Option<String>,
    },
    /// List integrations with their webhook URL, state and last delivery.
    List,
}

/// Runs `ctl integration`.
pub async fn run(settings: &Settings, args: IntegrationArgs) -> anyhow::Result<()> {
    let db = storage::connect(&settings.database_url, 2)
        .await
        .context("connecting to Postgres")?;
    let base = &settings.ingest.public_base_url;
    match args.command {
        IntegrationCommand::Add { kind, name, secret } => {
            if kind == "csv" {
                anyhow::bail!("CSV files are imported with `ctl import csv`, not an integration");
            }
            let created = storage::integrations::create(&db, &kind, &name, secret.as_deref())
                .await
                .with_context(|| format!("creating the {kind} integration `{name}`"))?;
            let what = match kind.as_str() {
                "segment" => "write key",
                "pos" => "bearer token",
                "twilio" => "auth token",
                _ => "signing secret",
            };
            println!("id:          {}", created.id);
            println!("kind:        {}", created.kind);
            println!("name:        {}", created.name);
            println!(
                "webhook url: {}",
                ingestion::webhook_url(base, &kind, created.id)
            );
            if kind == "twilio" {
                println!(
                    "status url:  {}/status",
                    ingestion::webhook_url(base, &kind, created.id)
                );
            }
            println!("{what}: {}", created.secret);
        }
        IntegrationCommand::List => {
            let all = storage::integrations::list(&db).await?;
            if all.is_empty() {
                println!("no integrations; add one with `ctl integration add`");
            }
            for i in all {
                println!(
                    "{}  {:<11} {:<24} {:<8} last delivery {}  {}",
                    i.id,
                    i.kind,
                    i.name,
                    if i.enabled { "enabled" } else { "disabled" },
                    i.last_delivery_at
                        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
                    ingestion::webhook_url(base, &i.kind, i.id),
                );
            }
        }
    }
    Ok(())
}
