//! `ctl republish`: re-drives work from Postgres after Redis lost stream entries (a
//! wipe, a restart without persistence, trimming past a slow consumer).
//!
//! Redis holds no truth (ARCHITECTURE §2): every stream entry is derived from a row, so
//! whatever was in flight can be sent again, and every consumer is idempotent, so
//! sending again what was already handled changes nothing. Three things are re-driven,
//! each through the outbox its owner already relays, so nothing here builds a stream
//! entry by hand:
//!
//! - raw events whose normalised event is missing or not yet attached to a profile are
//!   queued in `raw_event_outbox` again: ingest's outbox relay publishes them on
//!   `events.raw` again,
//!   the normalizer rewrites nothing it already has and publishes on
//!   `events.normalized`, and the identity merger resolves what it had not;
//! - analysts' requests the merger has not marked done (an erase above all) get
//!   `published_at` cleared in `api_merge_requests`: the api-gateway's outbox relay
//!   publishes them on `profiles.merge_requests` again;
//! - live profiles whose predictions are missing or older than their last change are
//!   queued in the merger's prediction outbox (`identity_prediction_outbox`), which it
//!   publishes on `predictions.requests` (only once a model is active, and skipped
//!   while that table does not exist).
//!
//! Caches need nothing: Customer 360 reads fall back to Postgres and refill.

use anyhow::Context as _;
use clap::Args;
use config::Settings;
use sqlx::PgPool;

/// `ctl republish`.
#[derive(Args, Debug)]
pub struct RepublishArgs {
    /// Only re-drive raw events received in the last this many hours (default: all).
    #[arg(long)]
    pub hours: Option<u32>,
}

/// What a republish queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Republished {
    /// Raw events handed back to ingest's outbox relay.
    pub raw_events: u64,
    /// Analysts' requests (erase, merge, …) handed back to the api-gateway's relay.
    pub requests: u64,
    /// Profiles queued for new predictions.
    pub profiles: u64,
}

/// Queues everything not yet fully processed for publishing again.
pub async fn republish(db: &PgPool, hours: Option<u32>) -> anyhow::Result<Republished> {
    let raw_events = sqlx::query(
        "INSERT INTO raw_event_outbox (id, received_at) \
         SELECT r.id, r.received_at FROM customer_raw_event r \
         WHERE ($1::int IS NULL OR r.received_at > now() - make_interval(hours => $1::int)) \
           AND NOT EXISTS (SELECT 1 FROM normalized_event n \
                           WHERE n.event_id = r.id AND n.resolved_at IS NOT NULL) \
         ORDER BY r.id \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(hours.map(|h| i32::try_from(h).unwrap_or(i32::MAX)))
    .execute(db)
    .await
    .context("handing raw events back to the outbox")?
    .rows_affected();

    let requests = sqlx::query(
        "UPDATE api_merge_requests SET published_at = NULL \
         WHERE done_at IS NULL AND published_at IS NOT NULL AND envelope IS NOT NULL",
    )
    .execute(db)
    .await
    .context("handing undone merge requests back to the outbox")?
    .rows_affected();

    let outbox: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('identity_prediction_outbox')::text")
            .fetch_one(db)
            .await
            .context("looking for the prediction outbox")?;
    let mut profiles = 0;
    if outbox.is_some() {
        profiles = sqlx::query(
            "INSERT INTO identity_prediction_outbox (profile_id, due_at) \
             SELECT p.id, now() FROM customer_profile p \
             WHERE p.merged_into IS NULL \
               AND EXISTS (SELECT 1 FROM model_version WHERE status = 'active') \
               AND NOT EXISTS ( \
                 SELECT 1 FROM predictions pr \
                 WHERE pr.profile_id = p.id AND pr.scored_at >= p.updated_at) \
             ON CONFLICT (profile_id) DO NOTHING",
        )
        .execute(db)
        .await
        .context("queueing profiles for predictions")?
        .rows_affected();
    }
    Ok(Republished {
        raw_events,
        requests,
        profiles,
    })
}

/// Runs `ctl republish`.
pub async fn run(settings: &Settings, args: RepublishArgs) -> anyhow::Result<()> {
    let db = crate::db::connect(settings, 2, crate::db::Statements::Unlimited).await?;
    let done = republish(&db, args.hours).await?;
    println!(
        "republish: {} raw events handed to ingest's outbox relay (published within \
         OUTBOX_RELAY_AFTER_SECS while ingest runs), {} merge requests handed to the \
         api-gateway's outbox relay, {} profiles queued for predictions",
        done.raw_events, done.requests, done.profiles
    );
    Ok(())
}
