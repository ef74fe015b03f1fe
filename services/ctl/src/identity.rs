//! `ctl identity rebuild|eval`: the operator's handle on identity resolution.
//!
//! - `rebuild` recomputes every profile from the stored normalised events in time order
//!   (merger replicas pause while it runs) and reports what moved. On a database the
//!   merger keeps, nothing should move: that is the "rebuild equals streaming" check.
//! - `eval` measures identity quality: it generates the scenario (people with several
//!   e-mails and phones, households, counter phones, junk, guest checkouts, with the
//!   truth of who is who), resolves it with the real resolver against a fresh database,
//!   and prints pairwise precision, recall and F1 with the merges, review items and
//!   suspect identifiers — then the same with every guard off, to show what they buy.
//!   The fresh databases are dropped afterwards unless `--keep` is given.

use std::collections::HashMap;
use std::time::Instant;

use ::identity::quality::{PairwiseQuality, pairwise};
use ::identity::resolver::Resolver;
use ::identity::{Guards, Policy};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use config::Settings;
use scenario::identity::{IdentityConfig, IdentityScenario, generate};
use sqlx::PgPool;
use uuid::Uuid;

/// `ctl identity`.
#[derive(Args)]
pub struct IdentityArgs {
    #[command(subcommand)]
    command: IdentityCommand,
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Recompute every profile from the stored normalised events, in time order.
    Rebuild,
    /// Resolve the scenario generator's events against a fresh database and print
    /// pairwise precision/recall against the truth, with and without the guards.
    Eval {
        /// People in the scenario (the default, 750, gives about 60,000 events).
        #[arg(long)]
        people: Option<usize>,
        /// Seed of the scenario.
        #[arg(long)]
        seed: Option<u64>,
        /// Only the run with every guard on.
        #[arg(long)]
        guarded_only: bool,
        /// Keep the evaluation databases (their names are printed).
        #[arg(long)]
        keep: bool,
    },
}

/// Runs `ctl identity`.
pub async fn run(settings: &Settings, args: IdentityArgs) -> anyhow::Result<()> {
    match args.command {
        IdentityCommand::Rebuild => rebuild(settings).await,
        IdentityCommand::Eval {
            people,
            seed,
            guarded_only,
            keep,
        } => {
            let mut cfg = IdentityConfig::default();
            if let Some(p) = people {
                cfg.brand.customers = p;
            }
            if let Some(s) = seed {
                cfg.brand.seed = s;
            }
            let started = Instant::now();
            let s = generate(&cfg);
            println!(
                "scenario: {} people, {} events (generated in {:.1}s)",
                cfg.brand.customers,
                s.events.len(),
                started.elapsed().as_secs_f64()
            );
            let mut runs = vec![("guards on", Guards::ALL)];
            if !guarded_only {
                runs.push(("guards off", Guards::NONE));
            }
            for (label, guards) in runs {
                eval(settings, &s, label, guards, keep).await?;
            }
            Ok(())
        }
    }
}

async fn rebuild(settings: &Settings) -> anyhow::Result<()> {
    let db = crate::db::connect(settings, 4, crate::db::Statements::Unlimited).await?;
    storage::migrate(&db).await.context("migrating")?;
    let redis = service_kit::connect_redis(&settings.redis_url).await?;
    let resolver = Resolver::new(db, redis, settings).await?;
    let started = Instant::now();
    let r = resolver.rebuild().await.context("rebuilding profiles")?;
    println!(
        "rebuilt {} events into {} profiles in {:.1}s (resolve {:.1}s, write {:.1}s): \
         {} events moved, {} profiles retired, {} tombstones re-pointed, {} new review items, \
         {} suspect identifiers",
        r.events,
        r.profiles,
        started.elapsed().as_secs_f64(),
        r.resolve_time.as_secs_f64(),
        r.write_time.as_secs_f64(),
        r.moved_events,
        r.retired_profiles,
        r.repointed_tombstones,
        r.reviews,
        r.suspects
    );
    Ok(())
}

/// One evaluation run on its own fresh database.
async fn eval(
    settings: &Settings,
    s: &IdentityScenario,
    label: &str,
    guards: Guards,
    keep: bool,
) -> anyhow::Result<()> {
    let name = format!("constintel_eval_{}", Uuid::new_v4().simple());
    let url = database_url_with_name(&settings.database_url, &name)?;
    storage::ensure_database(&url)
        .await
        .context("creating the evaluation database")?;
    let result = async {
        let db = storage::connect(&url, 4).await?;
        storage::migrate(&db).await?;
        let redis = service_kit::connect_redis(&settings.redis_url).await?;
        // Its own key prefix, and documents that expire a minute after the run.
        let mut run_settings = settings.clone();
        run_settings.stream_prefix = format!("{name}:");
        run_settings.identity.customer360_cache_ttl_secs = 60;
        let policy = Policy::from_settings(&settings.identity).with_guards(guards);
        let resolver = Resolver::with_policy(db.clone(), redis, &run_settings, policy).await?;
        let started = Instant::now();
        ::identity::seed::store_events(&db, &s.events).await?;
        let stored = started.elapsed();
        let started = Instant::now();
        for chunk in s.events.chunks(settings.identity.identity_merger_batch_size.max(1)) {
            resolver.resolve(chunk).await?;
        }
        let resolved = started.elapsed();
        let q = quality(&db, s).await?;
        let (merges, reviews, suspects, shared): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM merge_history), (SELECT count(*) FROM manual_merge_queue), \
                    (SELECT count(*) FROM identity_identifier WHERE suspect), \
                    (SELECT count(*) FROM identity_identifier WHERE shared AND NOT suspect)",
        )
        .fetch_one(&db)
        .await?;
        println!(
            "{label}: precision {:.4}  recall {:.4}  F1 {:.4}  | {} profiles for {} people, {} merges, \
             {} review items, {} suspect + {} shared identifiers | stored in {:.1}s, resolved in {:.1}s ({:.0} events/s)",
            q.precision(),
            q.recall(),
            q.f1(),
            q.profiles,
            q.people,
            merges,
            reviews,
            suspects,
            shared,
            stored.as_secs_f64(),
            resolved.as_secs_f64(),
            s.events.len() as f64 / resolved.as_secs_f64().max(1e-9)
        );
        db.close().await;
        anyhow::Ok(())
    }
    .await;
    if keep {
        println!("  (database {name} kept)");
    } else {
        drop_database(&settings.database_url, &name).await?;
    }
    result
}

/// Pairwise quality of the stored partition against the scenario's truth.
async fn quality(db: &PgPool, s: &IdentityScenario) -> anyhow::Result<PairwiseQuality> {
    let rows: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT event_id, profile_id FROM normalized_event")
            .fetch_all(db)
            .await?;
    let profile: HashMap<Uuid, Uuid> = rows
        .into_iter()
        .filter_map(|(e, p)| Some((e, p?)))
        .collect();
    anyhow::ensure!(
        profile.len() == s.events.len(),
        "{} of {} events resolved",
        profile.len(),
        s.events.len()
    );
    Ok(pairwise(
        s.events
            .iter()
            .map(|e| (profile[&e.event_id], s.truth[&e.event_id])),
    ))
}

fn database_url_with_name(url: &str, name: &str) -> anyhow::Result<String> {
    let mut parsed = reqwest::Url::parse(url).context("DATABASE_URL")?;
    parsed.set_path(name);
    Ok(parsed.to_string())
}

async fn drop_database(url: &str, name: &str) -> anyhow::Result<()> {
    let admin = database_url_with_name(url, "postgres")?;
    let pool = storage::connect(&admin, 1).await?;
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        storage::quote_ident(name)
    ))
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(())
}
