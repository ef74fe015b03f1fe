//! `--pg-stats` (`bench-pipeline`, `bench-identity stream`): what the load asked of
//! Postgres, from `pg_stat_statements`, `pg_stat_user_tables` and `pg_stat_wal`, per
//! 1,000 events. Counts, rows,
//! blocks and WAL bytes hardly move with the machine's load; the milliseconds do, so
//! read them as shares of the run's total.
//!
//! Needs a server started with `shared_preload_libraries=pg_stat_statements` (the
//! shared one is not): `bench/pipeline/pgstat.sh` starts a private one and runs the
//! benchmark against it (`PGSTAT_BENCH=identity` for `bench-identity stream`).

use std::time::Duration;

use sqlx::PgPool;

/// Statements printed, by total execution time.
const TOP: i64 = 15;

/// Creates the extension in the benchmark database and zeroes every counter, so what
/// [`report`] prints is the load's alone (not the seeding nor the limits).
pub async fn reset(db: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(db)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "--pg-stats needs a server with shared_preload_libraries=pg_stat_statements \
                 (bench/pipeline/pgstat.sh starts one): {e}"
            )
        })?;
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(db)
        .await?;
    sqlx::query("SELECT pg_stat_reset()").execute(db).await?;
    sqlx::query("SELECT pg_stat_reset_shared('wal')")
        .execute(db)
        .await?;
    Ok(())
}

type StatementRow = (String, i64, i64, f64, f64, i64, i64, i64, i64);
type TableRow = (String, i64, i64, i64, i64);

/// Prints the top statements, the table counters and the WAL written since [`reset`],
/// per 1,000 of the `events` the run handled. Call it after the fleet has stopped: backends
/// report their table counters when they end.
pub async fn report(db: &PgPool, events: u64) -> anyhow::Result<()> {
    // Backends of the benchmark's own pool flush their table counters at most once a
    // second; give them that.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(db)
        .await?;
    let per_k = 1_000.0 / events.max(1) as f64;
    let (calls, total_ms, wal): (i64, f64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(calls), 0)::int8, COALESCE(sum(total_exec_time), 0)::float8, \
                COALESCE(sum(wal_bytes), 0)::int8 \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(db)
    .await?;
    let wal_all: i64 = sqlx::query_scalar("SELECT wal_bytes::int8 FROM pg_stat_wal")
        .fetch_one(db)
        .await?;
    println!(
        "pg stats for {events} events posted: {:.0} statements, {:.0} ms executing, {:.0} kB WAL \
         (statements) / {:.0} kB (server) per 1,000 events",
        calls as f64 * per_k,
        total_ms * per_k,
        wal as f64 * per_k / 1_024.0,
        wal_all as f64 * per_k / 1_024.0,
    );
    let top: Vec<StatementRow> = sqlx::query_as(
        "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, rows, total_exec_time, \
                mean_exec_time, shared_blks_hit + shared_blks_read, shared_blks_dirtied, \
                shared_blks_written, wal_bytes::int8 \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(TOP)
    .fetch_all(db)
    .await?;
    println!(
        "  top {TOP} statements by total time, per 1,000 events: calls | rows | ms (share) | mean ms | \
         blocks touched | dirtied | written | WAL kB | statement"
    );
    for (query, calls, rows, total, mean, touched, dirtied, written, wal_bytes) in top {
        let text: String = query.chars().take(140).collect();
        println!(
            "  {:>7.1} | {:>7.0} | {:>7.1} ({:>4.1}%) | {:>6.2} | {:>7.0} | {:>5.0} | {:>5.0} | {:>6.0} | {text}",
            calls as f64 * per_k,
            rows as f64 * per_k,
            total * per_k,
            100.0 * total / total_ms.max(f64::MIN_POSITIVE),
            mean,
            touched as f64 * per_k,
            dirtied as f64 * per_k,
            written as f64 * per_k,
            wal_bytes as f64 * per_k / 1_024.0,
        );
    }
    let tables: Vec<TableRow> = sqlx::query_as(
        "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del \
         FROM pg_stat_user_tables \
         WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 \
         ORDER BY n_tup_ins + n_tup_upd + n_tup_del DESC",
    )
    .fetch_all(db)
    .await?;
    println!("  table rows per 1,000 events: inserted | updated (HOT) | deleted | table");
    for (table, ins, upd, hot, del) in tables {
        println!(
            "  {:>7.0} | {:>7.0} ({:>5.0}) | {:>7.0} | {table}",
            ins as f64 * per_k,
            upd as f64 * per_k,
            hot as f64 * per_k,
            del as f64 * per_k,
        );
    }
    Ok(())
}
