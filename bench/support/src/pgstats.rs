//! `--pg-stats` (`bench-pipeline`, `bench-identity stream`): what the load asked of
//! Postgres, from `pg_stat_statements`, `pg_stat_user_tables` and `pg_stat_wal`, per
//! 1,000 events. Counts, rows,
//! blocks and WAL bytes hardly move with the machine's load; the milliseconds do, so
//! read them as shares of the run's total.
//!
//! Besides the statements it prints what the server did in the background while the
//! load ran — checkpoints and who wrote the dirty buffers (`pg_stat_bgwriter`, or
//! `pg_stat_checkpointer` from Postgres 17), full-page images in the WAL, autovacuum
//! and autoanalyze runs per table — and the indexes the load wrote but no statement
//! read (`pg_stat_user_indexes`): the costs that can grow with a database's size
//! although no statement reads more rows.
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
    for shared in ["wal", "bgwriter"] {
        sqlx::query("SELECT pg_stat_reset_shared($1)")
            .bind(shared)
            .execute(db)
            .await?;
    }
    if server_version(db).await? >= 170_000 {
        sqlx::query("SELECT pg_stat_reset_shared('checkpointer')")
            .execute(db)
            .await?;
    }
    Ok(())
}

/// `server_version_num` (e.g. 150020).
async fn server_version(db: &PgPool) -> anyhow::Result<i32> {
    Ok(
        sqlx::query_scalar("SELECT current_setting('server_version_num')::int4")
            .fetch_one(db)
            .await?,
    )
}

type StatementRow = (String, i64, i64, f64, f64, i64, i64, i64, i64);
type TableRow = (String, i64, i64, i64, i64, i64, i64);
type IndexRow = (String, String, i64, i64);

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
    let (wal_all, wal_fpi, wal_records, wal_buffers_full): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT wal_bytes::int8, wal_fpi, wal_records, wal_buffers_full FROM pg_stat_wal",
    )
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
        "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, \
                autovacuum_count, autoanalyze_count \
         FROM pg_stat_user_tables \
         WHERE n_tup_ins + n_tup_upd + n_tup_del + autovacuum_count + autoanalyze_count > 0 \
         ORDER BY n_tup_ins + n_tup_upd + n_tup_del DESC",
    )
    .fetch_all(db)
    .await?;
    println!(
        "  table rows per 1,000 events: inserted | updated (HOT) | deleted | table \
         (autovacuum and autoanalyze runs during the load, if any)"
    );
    for (table, ins, upd, hot, del, vacuums, analyzes) in tables {
        let background = if vacuums + analyzes > 0 {
            format!(" ({vacuums} autovacuum, {analyzes} autoanalyze)")
        } else {
            String::new()
        };
        println!(
            "  {:>7.0} | {:>7.0} ({:>5.0}) | {:>7.0} | {table}{background}",
            ins as f64 * per_k,
            upd as f64 * per_k,
            hot as f64 * per_k,
            del as f64 * per_k,
        );
    }
    let written = Background::read(db).await?;
    println!(
        "  in the background during the load: {} checkpoints ({} requested by WAL volume); \
         buffers written per 1,000 events: {:.0} by the checkpointer, {:.0} by the background \
         writer, {} by backends | WAL: {:.0} records, {:.0} full-page images ({:.0}% of the \
         records) per 1,000 events, the WAL buffers full {wal_buffers_full} times",
        written.checkpoints,
        written.requested,
        written.by_checkpointer as f64 * per_k,
        written.by_bgwriter as f64 * per_k,
        written.by_backends.map_or_else(
            || String::from("(uncounted: pg_stat_io)"),
            |b| format!("{:.0}", b as f64 * per_k)
        ),
        wal_records as f64 * per_k,
        wal_fpi as f64 * per_k,
        100.0 * wal_fpi as f64 / wal_records.max(1) as f64,
    );
    let idle: Vec<IndexRow> = sqlx::query_as(
        "SELECT i.relname::text, i.indexrelname::text, \
                pg_relation_size(i.indexrelid)::int8, t.n_tup_ins + t.n_tup_upd - t.n_tup_hot_upd \
         FROM pg_stat_user_indexes i JOIN pg_stat_user_tables t USING (relid) \
         WHERE i.idx_scan = 0 AND t.n_tup_ins + t.n_tup_upd - t.n_tup_hot_upd > 0 \
         ORDER BY 4 DESC, 1, 2",
    )
    .fetch_all(db)
    .await?;
    println!(
        "  indexes written but never read during the load (check each against every query \
         before dropping one): table | index | size MB | rows written to its table per 1,000 events (a partial index gets fewer)"
    );
    for (table, index, bytes, rows) in idle {
        println!(
            "  {table} | {index} | {:.1} | {:.0}",
            bytes as f64 / 1_048_576.0,
            rows as f64 * per_k
        );
    }
    Ok(())
}

/// What the checkpointer, the background writer and the backends wrote since [`reset`].
struct Background {
    checkpoints: i64,
    requested: i64,
    by_checkpointer: i64,
    by_bgwriter: i64,
    /// Before Postgres 17 `pg_stat_bgwriter.buffers_backend`; from 17 on the counter
    /// moved to `pg_stat_io`, which this report does not read.
    by_backends: Option<i64>,
}

impl Background {
    async fn read(db: &PgPool) -> anyhow::Result<Self> {
        if server_version(db).await? >= 170_000 {
            let (checkpoints, requested, by_checkpointer, by_bgwriter): (i64, i64, i64, i64) =
                sqlx::query_as(
                    "SELECT c.num_timed + c.num_requested, c.num_requested, c.buffers_written, \
                            b.buffers_clean \
                     FROM pg_stat_checkpointer c, pg_stat_bgwriter b",
                )
                .fetch_one(db)
                .await?;
            return Ok(Self {
                checkpoints,
                requested,
                by_checkpointer,
                by_bgwriter,
                by_backends: None,
            });
        }
        let (checkpoints, requested, by_checkpointer, by_bgwriter, by_backends): (
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = sqlx::query_as(
            "SELECT checkpoints_timed + checkpoints_req, checkpoints_req, buffers_checkpoint, \
                    buffers_clean, buffers_backend \
             FROM pg_stat_bgwriter",
        )
        .fetch_one(db)
        .await?;
        Ok(Self {
            checkpoints,
            requested,
            by_checkpointer,
            by_bgwriter,
            by_backends: Some(by_backends),
        })
    }
}
