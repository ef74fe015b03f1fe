#!/usr/bin/env bash
# The pipeline benchmark against a private Postgres with pg_stat_statements preloaded,
# then what the load asked of Postgres per 1,000 events: the top statements by total
# time (calls, rows, ms, blocks, WAL), rows inserted/updated (HOT)/deleted per table and
# the WAL written (docs/performance.md, "What each event asks of Postgres").
#
# Usage: bench/pipeline/pgstat.sh [bench-pipeline arguments]
#   e.g. BENCH_NO_BUILD=1 bench/pipeline/pgstat.sh --profiles 1000 --people 4000 --steady-seconds 5 --no-ml
#        PGSTAT_BENCH=identity bench/pipeline/pgstat.sh stream --replicas 1 --shuffle-window 2000
#   PGSTAT_BENCH=identity runs bench/identity/run.sh (its `stream` mode) instead.
#   PGSTAT_POSTGRES_OPTIONS adds server settings, e.g. "-c shared_buffers=1GB" to see
#   what a database whose hot indexes fit in the shared buffers asks (docs/performance.md).
#   (BENCH_PROFILE=dev: the debug build; the counts per 1,000 events hardly depend on it)
#
# The cluster lives in target/pgstat (PGSTAT_DIR: two runs at once need their own), created
# fresh, on a free port, with Postgres's default settings as the machine's own server
# has them, and is stopped at the end, whatever
# happens. The machine's shared Postgres is not touched; Redis is the shared one, with
# the benchmark's own stream prefix as always.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin="$(dirname "$(readlink -f "$(command -v pg_ctl || ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")")"
dir="${PGSTAT_DIR:-$PWD/target/pgstat}"
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi

# A port nothing listens on.
port=25432
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done

# A cluster left by an interrupted run is stopped and replaced.
if [ -f "$dir/data/postmaster.pid" ]; then
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -s stop || true
fi
rm -rf "$dir"
mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
stop() { "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -s stop || true; }
trap stop EXIT
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top -c track_io_timing=on ${PGSTAT_POSTGRES_OPTIONS:-}" \
    start
echo "private Postgres on port $port ($("${as_pg[@]}" "$bin/postgres" --version); ${PGSTAT_POSTGRES_OPTIONS:-default settings})"

# Stream prefixes named after the private cluster's port (free, so unique among the runs
# on this machine): two pgstat.sh runs at once never read each other's events.
if [ "${PGSTAT_BENCH:-pipeline}" = identity ]; then
    BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$port/constintel_bench_identity" \
        BENCH_STREAM_PREFIX="${BENCH_STREAM_PREFIX:-bench-identity-pgstat-$port:}" \
        bench/identity/run.sh "$@" --pg-stats
    exit
fi
# Its own stream prefix and a free ingest port, so a plain run.sh or another pgstat.sh
# may run beside it.
ingest_port=18492
while (exec 3<>"/dev/tcp/127.0.0.1/$ingest_port") 2>/dev/null; do ingest_port=$((ingest_port + 1)); done
BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$port/constintel_bench_pipeline" \
    BENCH_STREAM_PREFIX="${BENCH_STREAM_PREFIX:-bench-pipeline-pgstat-$port:}" \
    BENCH_INGEST_PORT="${BENCH_INGEST_PORT:-$ingest_port}" \
    bench/pipeline/run.sh --pg-stats "$@"
