#!/usr/bin/env bash
# What the pipeline bench costs Postgres, per service: bench/pipeline/run.sh against a
# private Postgres of its own with pg_stat_statements, ml-inference logged in as a role of
# its own (ml_inference) so its statements are told apart. Prints, after the bench's own
# table: statements, rows, shared blocks, WAL bytes and execution time per role; the
# prediction requests published during the run; ml-inference's statements per scored
# profile and its busiest statements (figures and how to read them: docs/performance.md).
#
# Usage: bench/pipeline/statements.sh [bench-pipeline arguments]
#   e.g. BENCH_NO_BUILD=1 bench/pipeline/statements.sh --profiles 1000 --people 4000 --steady-seconds 5
#
# The server lives under target/bench-pg (recreated each run, stopped at the end) on
# BENCH_PG_PORT (55439); the stream prefix is bench-statements: and ingest listens on
# BENCH_INGEST_PORT (18492), so it runs beside run.sh. Not part of `just test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

port="${BENCH_PG_PORT:-55439}"
bin="$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -1)"
[ -x "$bin/pg_ctl" ] || die "Postgres server binaries are missing (apt-get install postgresql)"
dir="$ROOT/target/bench-pg"
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s -o \
    "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 \
     -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top" start
stop() { as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w -s stop || true; }
trap stop EXIT
sql() { psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -X "$@"; }
sql -qc "CREATE EXTENSION pg_stat_statements" -c "CREATE ROLE ml_inference LOGIN SUPERUSER"

db=constintel_bench_pipeline
prefix="bench-statements:"
export BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$port/$db"
export BENCH_ML_DATABASE_URL="postgres://ml_inference@127.0.0.1:$port/$db"
export BENCH_STREAM_PREFIX="$prefix"
export BENCH_INGEST_PORT="${BENCH_INGEST_PORT:-18492}"

# The bench deletes its keys when it ends: keep the last count of requests seen.
requests_file="$dir/requests"
echo 0 >"$requests_file"
(
    while sleep 0.5; do
        n="$(redis-cli -u "${BENCH_REDIS_URL:-redis://127.0.0.1:6379}" XINFO STREAM "${prefix}predictions.requests" 2>/dev/null |
            awk 'prev == "entries-added" { print; exit } { prev = $0 }')"
        [ -n "$n" ] && echo "$n" >"$requests_file"
    done
) &
watcher=$!
trap 'kill "$watcher" 2>/dev/null || true; stop' EXIT

bench/pipeline/run.sh "$@"
sleep 1
kill "$watcher" 2>/dev/null || true

echo
echo "prediction requests published (predictions.requests entries): $(cat "$requests_file")"
echo "Postgres work per role (pg_stat_statements, database $db):"
sql -P footer=off -c "
SELECT r.rolname AS role, sum(s.calls) AS statements, sum(s.rows) AS rows,
       sum(s.shared_blks_hit + s.shared_blks_read) AS blocks_touched,
       sum(s.shared_blks_dirtied) AS blocks_dirtied,
       pg_size_pretty(sum(s.wal_bytes)) AS wal,
       round(sum(s.total_exec_time)::numeric / 1000, 2) AS exec_seconds
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = '$db' GROUP BY r.rolname ORDER BY r.rolname"
echo "ml-inference per scored profile (profiles = rows of the live-profile resolution):"
sql -P footer=off -c "
WITH ml AS (
  SELECT s.* FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
  JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$db' AND r.rolname = 'ml_inference'),
scored AS (SELECT sum(rows) AS profiles, sum(calls) AS batches FROM ml WHERE query LIKE 'WITH RECURSIVE chain%')
SELECT scored.profiles, scored.batches,
       round(sum(ml.calls) / nullif(scored.profiles, 0), 3) AS statements_per_profile,
       round(sum(ml.rows) / nullif(scored.profiles, 0), 1) AS rows_per_profile,
       round(sum(ml.shared_blks_hit + ml.shared_blks_read) / nullif(scored.profiles, 0), 1) AS blocks_per_profile,
       round(sum(ml.shared_blks_dirtied) / nullif(scored.profiles, 0), 2) AS dirtied_per_profile,
       round(sum(ml.wal_bytes) / nullif(scored.profiles, 0)) AS wal_bytes_per_profile,
       round((sum(ml.total_exec_time) / nullif(scored.profiles, 0))::numeric, 3) AS exec_ms_per_profile
FROM ml, scored GROUP BY scored.profiles, scored.batches"
echo "ml-inference's busiest statements:"
sql -P footer=off -c "
SELECT s.calls, s.rows, s.shared_blks_hit + s.shared_blks_read AS blocks,
       round(s.total_exec_time::numeric / 1000, 2) AS exec_s, left(regexp_replace(s.query, '\s+', ' ', 'g'), 90) AS statement
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = '$db' AND r.rolname = 'ml_inference'
ORDER BY s.total_exec_time DESC LIMIT 15"
