#!/usr/bin/env bash
# The whole pipeline on this machine: Segment batches of realistic people posted to
# ingest, normalised and resolved by the release fleet, timed until every event is
# attached to its profile, beside this machine's own limits measured in the same run
# (figures and how to read them: docs/performance.md).
#
# Usage: bench/pipeline/run.sh [bench-pipeline arguments]
#   e.g. bench/pipeline/run.sh --profiles 1000
#        bench/pipeline/run.sh --profiles 1000000 --steady-rate 0
#
# Builds the services and the load generator in release mode and uses a throw-away
# database (constintel_bench_pipeline) and stream prefix (dropped and recreated at the start of each run). Ingest
# listens on 127.0.0.1:18491 (BENCH_INGEST_PORT). Not part of `just test`.
#
# BENCH_PRIVATE_PG=1 runs it against a Postgres cluster of its own instead (Debian's
# initdb/pg_ctl, data under target/bench-pg, a free port, the same default settings as
# a fresh cluster) with pg_stat_statements loaded — the benchmark then prints what
# every statement cost per call — and auto_explain logging the plans (EXPLAIN ANALYZE,
# BUFFERS) of a sample of statements (BENCH_EXPLAIN_SAMPLE, default 0.02) to
# target/bench-pg/server.log. The cluster is stopped at the end (its log is kept).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

port="${BENCH_INGEST_PORT:-18491}"
if [ -n "${BENCH_PRIVATE_PG:-}" ]; then
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
    pg_dir="$ROOT/target/bench-pg"
    pg_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    rm -rf "$pg_dir" && mkdir -p "$pg_dir"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$pg_dir"
    as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -s -o \
        "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 \
         -c shared_preload_libraries=pg_stat_statements,auto_explain \
         -c pg_stat_statements.max=10000 -c auto_explain.log_min_duration=0 \
         -c auto_explain.log_analyze=on -c auto_explain.log_buffers=on \
         -c auto_explain.log_timing=off -c auto_explain.sample_rate=${BENCH_EXPLAIN_SAMPLE:-0.02}" start
    trap 'as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -s stop || true' EXIT
    BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/constintel_bench_pipeline"
    say "private Postgres on port $pg_port (log: $pg_dir/server.log)"
fi
export DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/constintel_bench_pipeline}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
export STREAM_PREFIX="bench-pipeline:"
export INTEGRATION_SECRETS_KEY="${INTEGRATION_SECRETS_KEY:-$(head -c 32 /dev/urandom | base64)}"
export INGEST_BIND="127.0.0.1:$port"
export PUBLIC_BASE_URL="http://$INGEST_BIND"
export DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-8}"
export LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-error}"
# One load generator on one integration: the abuse limits would measure themselves.
export INGEST_RATE_PER_INTEGRATION=0 INGEST_RATE_PER_CLIENT=0

# BENCH_NO_BUILD=1 reuses the release binaries already built.
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -q -p ingest -p normalizer -p identity-merger -p ml-inference -p bench-pipeline
fi
target/release/bench-pipeline --ingest-url "http://$INGEST_BIND" "$@"
