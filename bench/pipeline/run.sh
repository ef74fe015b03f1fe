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
# Builds the services and the load generator in release mode (BENCH_PROFILE=dev: debug)
# and uses a throw-away database (constintel_bench_pipeline, BENCH_DATABASE_URL) and
# stream prefix (bench-pipeline:, BENCH_STREAM_PREFIX), dropped and recreated at the
# start of each run: two runs at once on one machine need their own of each. Ingest listens on
# 127.0.0.1:18491 (BENCH_INGEST_PORT). Not part of `just test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

port="${BENCH_INGEST_PORT:-18491}"
export DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/constintel_bench_pipeline}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
export STREAM_PREFIX="${BENCH_STREAM_PREFIX:-bench-pipeline:}"
export INTEGRATION_SECRETS_KEY="${INTEGRATION_SECRETS_KEY:-$(head -c 32 /dev/urandom | base64)}"
export INGEST_BIND="127.0.0.1:$port"
export PUBLIC_BASE_URL="http://$INGEST_BIND"
export DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-8}"
export LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-error}"
# One load generator on one integration: the abuse limits would measure themselves.
export INGEST_RATE_PER_INTEGRATION=0 INGEST_RATE_PER_CLIENT=0

# BENCH_NO_BUILD=1 reuses the binaries already built. BENCH_PROFILE=dev runs the debug
# build instead (counts such as pgstat.sh's per-1,000-event figures hardly depend on it;
# rates do).
profile="${BENCH_PROFILE:-release}"
case "$profile" in
    release) dir=release ;;
    dev | debug) profile=dev dir=debug ;;
    *) echo "BENCH_PROFILE must be release or dev (debug), not $profile" >&2; exit 2 ;;
esac
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --profile "$profile" -q -p ingest -p normalizer -p identity-merger -p ml-inference -p bench-pipeline
fi
"target/$dir/bench-pipeline" --ingest-url "http://$INGEST_BIND" "$@"
