//! `ctl user add` and `ctl token create`: dashboard users and API tokens from the shell,
//! for the first admin on a fresh install or when nobody can sign in any more.
//!
//! Both go through `storage::users`, the same code the api-gateway uses, so a user made
//! here signs in on the dashboard and a token made here authenticates API calls. A
//! password left out is generated and printed once; a token is printed once (only its
//! hash is stored).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use config::Settings;
use domain::api::Role;

/// `ctl user`.
#[derive(Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a dashboard user.
    Add {
        /// E-mail, the login name.
        #[arg(long)]
        email: String,
        /// admin, analyst or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Password (at least 12 characters); generated and printed when omitted.
        /// Prefer the environment variable to keep it out of shell history.
        #[arg(long, env = "CTL_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

/// `ctl token`.
#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a machine and print it (once).
    Create {
        /// What the token is for (e.g. `warehouse-sync`).
        #[arg(long)]
        name: String,
        /// admin, analyst or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: domain::source::UnknownName| format!("{e} (admin, analyst or viewer)"))
}

async fn connect(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    let db = crate::db::connect(settings, 2, crate::db::Statements::Limited).await?;
    storage::migrate(&db).await.context("migrating")?;
    Ok(db)
}

/// Runs `ctl user`.
pub async fn user(settings: &Settings, args: UserArgs) -> anyhow::Result<()> {
    let UserCommand::Add {
        email,
        role,
        password,
    } = args.command;
    let db = connect(settings).await?;
    let (password, generated) = match password {
        Some(p) => (p, false),
        None => (storage::users::new_secret("")[..24].to_owned(), true),
    };
    let user = storage::users::create_user(&db, &email, &password, role)
        .await
        .with_context(|| format!("creating user {email}"))?;
    println!("id:       {}", user.id);
    println!("email:    {}", user.email);
    println!("role:     {}", user.role());
    if generated {
        println!("password: {password}  (shown once)");
    }
    Ok(())
}

/// Runs `ctl token`.
pub async fn token(settings: &Settings, args: TokenArgs) -> anyhow::Result<()> {
    let TokenCommand::Create { name, role } = args.command;
    let db = connect(settings).await?;
    let (token, row) = storage::users::create_token(&db, &name, role, None)
        .await
        .with_context(|| format!("creating the API token `{name}`"))?;
    println!("id:     {}", row.id);
    println!("name:   {}", row.name);
    println!("role:   {}", row.role());
    println!("token:  {token}  (shown once; send it as `Authorization: Bearer <token>`)");
    Ok(())
}
