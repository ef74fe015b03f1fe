//! Postgres pools of `ctl`'s commands, with or without the services' statement limits.
//!
//! A short command (`user add`, `token create`, `integration`, `destination`, `import`,
//! `ml status|activate`) runs its statements under the same `statement_timeout` and
//! `lock_timeout` as the services (`DATABASE_STATEMENT_TIMEOUT_MS`,
//! `DATABASE_LOCK_TIMEOUT_MS`, 30 s and 5 s by default): it fails with Postgres' reason
//! instead of hanging behind a lock or a runaway query. Bulk jobs whose single statements
//! may scan or rewrite whole tables (`migrate`, `identity rebuild|eval`, `ml train|score-all`,
//! `republish`, `demo`) run without limits, as migrations always do. Setting either
//! variable to 0 for one run lifts that limit for a short command too.

use anyhow::Context as _;
use config::Settings;
use sqlx::PgPool;

/// How long a command's statements may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// The services' `statement_timeout` and `lock_timeout`.
    Limited,
    /// No limit: a bulk job.
    Unlimited,
}

/// Opens a pool of at most `max_connections` to `DATABASE_URL` for a command.
pub async fn connect(
    settings: &Settings,
    max_connections: u32,
    statements: Statements,
) -> anyhow::Result<PgPool> {
    let timeouts = match statements {
        Statements::Limited => service_kit::query_timeouts(settings),
        Statements::Unlimited => storage::QueryTimeouts::default(),
    };
    storage::connect_with_timeouts(&settings.database_url, max_connections, timeouts)
        .await
        .context("connecting to Postgres")
}
