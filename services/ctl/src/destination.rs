//! `ctl destination add|list|test|sync|replay|log`: the CRMs and REST endpoints the
//! destinations service keeps in sync with Customer 360 (docs/destinations.md).
//!
//! Credentials never travel on the command line (shell history, process lists): `add`
//! names them with `--credential NAME` and reads each value from the environment
//! variable `DESTINATION_<NAME>` (`DESTINATION_TOKEN`, `DESTINATION_CLIENT_SECRET`,
//! `DESTINATION_SECRET`). They are sealed under `INTEGRATION_SECRETS_KEY` and never
//! shown again. A HubSpot destination added without `--credential token` takes the
//! private-app token from `HUBSPOT_TOKEN`, and stores it the same way.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use config::{ExposeSecret as _, Settings};
use domain::api::{DestinationKind, DestinationMode, DestinationRequest, ProfileField};
use uuid::Uuid;

/// `ctl destination`.
#[derive(Args)]
pub struct DestinationArgs {
    #[command(subcommand)]
    command: DestinationCommand,
}

#[derive(Subcommand)]
enum DestinationCommand {
    /// Create a destination; its backfill starts at once.
    Add {
        /// A unique name.
        #[arg(long)]
        name: String,
        /// `hubspot`, `salesforce` or `rest`.
        #[arg(long)]
        kind: String,
        /// Settings as a JSON object (`{"url": "...", "batch_size": 100}`; see
        /// docs/destinations.md).
        #[arg(long, default_value = "{}")]
        config: String,
        /// A credential's name (`token`, `client_secret`, `secret`); its value is read
        /// from `DESTINATION_<NAME>`. Repeatable. HubSpot without it: `HUBSPOT_TOKEN`.
        #[arg(long = "credential")]
        credentials: Vec<String>,
        /// Field mapping as a JSON object, remote field → profile field; the kind's
        /// defaults when omitted.
        #[arg(long)]
        mapping: Option<String>,
        /// `upsert` (default) or `mirror` (needs --audience).
        #[arg(long, default_value = "upsert")]
        mode: String,
        /// Only the members of this audience (id).
        #[arg(long)]
        audience: Option<Uuid>,
    },
    /// List destinations with synced, pending, lag, last success, error rate.
    List,
    /// Check a destination's endpoint and credentials.
    Test {
        /// Id or name.
        destination: String,
    },
    /// Queue every profile the destination covers (unchanged records are not resent).
    Sync {
        /// Id or name.
        destination: String,
    },
    /// Queue a destination's dead letters again, after their cause was fixed.
    Replay {
        /// Id or name.
        destination: String,
    },
    /// Show a destination's latest deliveries and open dead letters.
    Log {
        /// Id or name.
        destination: String,
        /// How many of each.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

/// Runs `ctl destination`.
pub async fn run(settings: &Settings, args: DestinationArgs) -> anyhow::Result<()> {
    let db = crate::db::connect(settings, 2, crate::db::Statements::Limited).await?;
    let key = || service_kit::secrets_key(settings);
    match args.command {
        DestinationCommand::Add {
            name,
            kind,
            config,
            credentials,
            mapping,
            mode,
            audience,
        } => {
            let kind: DestinationKind = kind.parse()?;
            let mode: DestinationMode = mode.parse()?;
            let config: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&config).context("--config is not a JSON object")?;
            let mapping: BTreeMap<String, ProfileField> = match mapping {
                Some(m) => serde_json::from_str(&m)
                    .context("--mapping is not a JSON object of profile fields")?,
                None => BTreeMap::new(),
            };
            let mut creds = BTreeMap::new();
            for c in credentials {
                let var = format!("DESTINATION_{}", c.to_uppercase());
                let value =
                    std::env::var(&var).with_context(|| format!("credential `{c}`: set {var}"))?;
                creds.insert(c, value);
            }
            if kind == DestinationKind::Hubspot
                && !creds.contains_key("token")
                && let Some(token) = &settings.api.hubspot_token
            {
                // The deployment's HubSpot token is the default credential; it is
                // sealed with the destination like one given with --credential.
                creds.insert("token".into(), token.expose_secret().to_owned());
            }
            let req = DestinationRequest {
                name,
                kind,
                config,
                credentials: creds,
                mapping,
                mode,
                audience_id: audience,
            };
            let d = destinations::store::create(&db, &key()?, &req, "ctl").await?;
            println!("id:       {}", d.id);
            println!("name:     {}", d.name);
            println!("kind:     {}", d.kind);
            println!("queued:   {} profiles (backfill)", d.status.pending);
            println!("mapping:");
            for (remote, field) in &d.mapping {
                println!("  {remote:<34} ← {field}");
            }
        }
        DestinationCommand::List => {
            let all = destinations::store::list(&db).await?;
            if all.is_empty() {
                println!("no destinations");
            }
            for d in all {
                let s = &d.status;
                println!(
                    "{} {:<24} {:<10} {:<8} synced {:>8} pending {:>8} lag {:>7.1}s errors {:>5.1}% dead {:>5} last ok {}",
                    d.id,
                    d.name,
                    d.kind,
                    if d.enabled { "enabled" } else { "paused" },
                    s.synced,
                    s.pending,
                    s.lag_secs,
                    s.error_rate * 100.0,
                    s.dead_letters,
                    s.last_success_at
                        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339())
                );
            }
        }
        DestinationCommand::Test { destination } => {
            let id = destinations::store::resolve(&db, &destination).await?;
            match destinations::test_connection(&db, &key()?, settings, id).await? {
                Ok(m) => println!("ok: {m}"),
                Err(m) => anyhow::bail!("the destination refused: {m}"),
            }
        }
        DestinationCommand::Sync { destination } => {
            let id = destinations::store::resolve(&db, &destination).await?;
            let n = destinations::store::backfill(&db, id).await?;
            println!("{n} profiles queued");
        }
        DestinationCommand::Replay { destination } => {
            let id = destinations::store::resolve(&db, &destination).await?;
            let n = destinations::store::replay(&db, id).await?;
            println!("{n} dead letters queued again");
        }
        DestinationCommand::Log { destination, limit } => {
            let id = destinations::store::resolve(&db, &destination).await?;
            println!("deliveries (newest first):");
            for d in destinations::store::deliveries(&db, id, limit).await? {
                println!(
                    "  {} {:<10} {:<9} {:>4} records {:>6} ms  {}  →  {}",
                    d.at.to_rfc3339(),
                    d.operation,
                    d.outcome,
                    d.records,
                    d.duration_ms,
                    d.request,
                    d.response
                );
            }
            println!("dead letters:");
            for d in destinations::store::dead_letters(&db, id, limit).await? {
                println!(
                    "  {} {} {:<7} {}",
                    d.failed_at.to_rfc3339(),
                    d.profile_id,
                    d.operation,
                    d.error
                );
            }
        }
    }
    Ok(())
}
