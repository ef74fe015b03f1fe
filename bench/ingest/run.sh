#!/usr/bin/env bash
# Ingest throughput on this machine, with the machine's own Redis and Postgres ceilings
# measured in the same run (see docs/ingestion.md for the figures and how to read them).
#
# Usage: bench/ingest/run.sh [load|csv-memory] [extra bench-ingest arguments]
#
# Builds ingest and the load generator in release mode, creates a throw-away database
# (constintel_bench) and stream prefix, starts ingest on 127.0.0.1:18481 (BENCH_INGEST_PORT), runs the
# benchmark and removes everything again. Not part of `just test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The project's own tools (cmake for LightGBM, just) first on PATH, as `just` has them.
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

mode="${1:-load}"
shift || true

export DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/constintel_bench}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
export STREAM_PREFIX="bench-ingest:"
# Integration secrets are sealed at rest; a throw-away key for the throw-away database.
export INTEGRATION_SECRETS_KEY="${INTEGRATION_SECRETS_KEY:-$(head -c 32 /dev/urandom | base64)}"
export INGEST_BIND="127.0.0.1:${BENCH_INGEST_PORT:-18481}"
export PUBLIC_BASE_URL="http://$INGEST_BIND"
export DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-8}"
export LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-warn}"
# The load generator is one client on one integration per source: the abuse limits
# would measure themselves, not ingest.
export INGEST_RATE_PER_INTEGRATION=0 INGEST_RATE_PER_CLIENT=0

# BENCH_NO_BUILD=1 reuses the release binaries already built.
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -q -p ingest -p bench-ingest
fi
bench=target/release/bench-ingest

"$bench" prepare
trap '"$bench" cleanup >/dev/null || true' EXIT

if [ "$mode" = "csv-memory" ]; then
    "$bench" csv-memory "$@"
    exit 0
fi

target/release/ingest &
ingest_pid=$!
trap 'kill $ingest_pid 2>/dev/null || true; wait $ingest_pid 2>/dev/null || true; "$bench" cleanup >/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -fs "http://$INGEST_BIND/readyz" >/dev/null && break
    sleep 0.1
done
"$bench" load --url "http://$INGEST_BIND" "$@"
