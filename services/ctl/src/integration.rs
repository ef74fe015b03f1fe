//! `ctl integration add|list|kinds`: configure the sources that deliver to ingest.
//!
//! `add` creates the integration (generating a secret unless one is given, e.g. the
//! signing secret Shopify shows for an existing webhook) and prints its id, the URLs to
//! configure at the source, how deliveries authenticate, and the secret under the name
//! the source gives it (signing secret, auth token, write key, bearer token). The
//! secret is printed only by `add`; `list` never shows it. Kinds, URLs and texts come
//! from the source registry (`ingestion::sources`). Secrets are sealed at rest under
//! `INTEGRATION_SECRETS_KEY`; `reseal` moves them to a new key.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use config::Settings;
use ingestion::sources::{self, Connector};
use uuid::Uuid;

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
        /// The source kind: a source that delivers to ingest (see `ctl integration
        /// kinds`).
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
    /// Re-seal every integration secret under the current `INTEGRATION_SECRETS_KEY`,
    /// opening them with the previous key (changing the key).
    Reseal {
        /// The previous key (base64); from the environment only, so it stays out of
        /// shell history and process lists.
        #[arg(
            long = "old-key",
            env = "INTEGRATION_SECRETS_KEY_OLD",
            hide_env_values = true,
            hide = true
        )]
        old_key: String,
    },
    /// List the kinds of source, with how each authenticates.
    Kinds,
}

/// Runs `ctl integration`.
pub async fn run(settings: &Settings, args: IntegrationArgs) -> anyhow::Result<()> {
    let db = crate::db::connect(settings, 2, crate::db::Statements::Limited).await?;
    // `kinds` needs no key; everything that reads or writes a secret does.
    let key = || service_kit::secrets_key(settings);
    let base = &settings.ingest.public_base_url;
    match args.command {
        IntegrationCommand::Add { kind, name, secret } => {
            let connector = sources::by_kind(&kind)
                .with_context(|| format!("unknown kind `{kind}`; see `ctl integration kinds`"))?;
            if connector.webhook_url(base, Uuid::nil()).is_none() {
                anyhow::bail!(
                    "{} does not deliver to ingest: {}",
                    connector.label(),
                    connector.authentication()
                );
            }
            let created =
                ingestion::integrations::create(&db, &key()?, &kind, &name, secret.as_deref())
                    .await
                    .with_context(|| format!("creating the {kind} integration `{name}`"))?;
            println!("id:          {}", created.id);
            println!("kind:        {}", created.kind);
            println!("name:        {}", created.name);
            for (purpose, url) in urls(connector, base, created.id) {
                println!("{purpose:<12} {url}");
            }
            println!("authentication: {}", connector.authentication());
            println!("{}: {}", connector.credential().name(), created.secret);
        }
        IntegrationCommand::Reseal { old_key } => {
            let old = storage::secrets::SecretsKey::from_base64(&old_key)
                .context("INTEGRATION_SECRETS_KEY_OLD")?;
            let key = key()?;
            let resealed = storage::integrations::reseal(&db, &old, &key).await?;
            let plain = storage::integrations::seal_plaintext(&db, &key).await?;
            let destinations = destinations::store::reseal(&db, &old, &key).await?;
            println!(
                "{} secrets re-sealed from key {} to key {}; {plain} plaintext secrets sealed; \
                 {destinations} destinations' credentials re-sealed",
                resealed,
                old.id(),
                key.id()
            );
        }
        IntegrationCommand::Kinds => {
            for c in sources::all() {
                println!(
                    "{:<11} {:<26} {}",
                    c.source(),
                    c.label(),
                    c.authentication()
                );
            }
        }
        IntegrationCommand::List => {
            let all = storage::integrations::list(&db, &key()?).await?;
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
                    sources::by_kind(&i.kind)
                        .and_then(|c| c.webhook_url(base, i.id))
                        .unwrap_or_default(),
                );
            }
        }
    }
    Ok(())
}

/// The URLs to configure at the source, labelled: the webhook URL, and for a signed
/// webhook with several routes (Twilio's status callbacks) each further route's.
fn urls(connector: &dyn Connector, base: &str, id: Uuid) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = connector
        .webhook_url(base, id)
        .map(|url| ("webhook url:".to_owned(), url))
        .into_iter()
        .collect();
    if let Some(hook) = connector.webhook() {
        for route in hook.routes().iter().skip(1) {
            out.push((
                format!("{}:", route.purpose),
                sources::route_url(base, connector.source(), route, id),
            ));
        }
    }
    out
}
