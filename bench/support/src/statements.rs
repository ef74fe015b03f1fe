//! Statement counters from `pg_stat_statements`, when the server has it loaded
//! (`shared_preload_libraries`; a private cluster, see `docs/performance.md`): what
//! each statement of a run cost per call in calls, rows and shared buffers touched —
//! figures the machine's load does not distort, and the ones that show whether a
//! statement's cost grows with the size of the tables it reads.

use sqlx::PgPool;

/// One statement's totals since the last [`reset`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Statement {
    /// The normalised text (parameters as `$n`).
    pub query: String,
    /// Times executed.
    pub calls: i64,
    /// Milliseconds spent executing, in all.
    pub total_ms: f64,
    /// Rows returned or affected, in all.
    pub rows: i64,
    /// Shared buffers hit or read, in all.
    pub blocks: i64,
}

impl Statement {
    /// Shared buffers touched per call.
    pub fn blocks_per_call(&self) -> f64 {
        self.blocks as f64 / self.calls.max(1) as f64
    }

    /// Rows per call.
    pub fn rows_per_call(&self) -> f64 {
        self.rows as f64 / self.calls.max(1) as f64
    }
}

/// Creates the extension in `db` if needed and zeroes the counters. `false` when the
/// server does not have `pg_stat_statements` loaded (nothing is counted then).
pub async fn reset(db: &PgPool) -> bool {
    if sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(db)
        .await
        .is_err()
    {
        return false;
    }
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(db)
        .await
        .is_ok()
}

/// The `limit` statements of this database that took the most time since [`reset`].
pub async fn top(db: &PgPool, limit: i64) -> Result<Vec<Statement>, sqlx::Error> {
    sqlx::query_as(
        "SELECT query, calls, total_exec_time AS total_ms, rows, \
                shared_blks_hit + shared_blks_read AS blocks \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One line per statement: calls, time, rows and buffers per call, and the text
/// (whitespace folded, cut at `width` characters).
pub fn describe(statements: &[Statement], width: usize) -> String {
    let mut out =
        String::from("  calls | total ms | ms/call | rows/call | buffers/call | statement\n");
    for s in statements {
        let text: String = s.query.split_whitespace().collect::<Vec<_>>().join(" ");
        let text: String = text.chars().take(width).collect();
        out.push_str(&format!(
            "  {} | {:.0} | {:.3} | {:.1} | {:.1} | {text}\n",
            s.calls,
            s.total_ms,
            s.total_ms / s.calls.max(1) as f64,
            s.rows_per_call(),
            s.blocks_per_call(),
        ));
    }
    out
}
