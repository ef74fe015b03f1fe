#!/usr/bin/env bash
# Identity resolution speed on this machine, with the machine's own Postgres ceilings
# and the pure engine's speed measured in the same run (figures in docs/identity.md).
#
# Usage: bench/identity/run.sh [stream|rebuild] [extra bench-identity arguments]
#   stream   events/s through 1 and 3 identity-merger replicas (default scenario, ~60k events)
#            (--shuffle-window N: events delivered out of time order within runs of N)
#   rebuild  `ctl identity rebuild` on 1M stored events
#
# Builds the merger, ctl and the benchmark in release mode and uses a throw-away
# database (constintel_bench_identity, BENCH_DATABASE_URL) and stream prefix
# (bench-identity:, BENCH_STREAM_PREFIX). Not part of `just test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The project's own tools (cmake for LightGBM, just) first on PATH, as `just` has them.
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

mode="${1:-stream}"
shift || true

export DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/constintel_bench_identity}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
export STREAM_PREFIX="${BENCH_STREAM_PREFIX:-bench-identity:}"
export DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-8}"
export LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-error}"

# BENCH_NO_BUILD=1 reuses the binaries already built. BENCH_PROFILE=dev measures the
# debug build (counts, not speed, on a machine too busy for a release build).
profile="${BENCH_PROFILE:-release}"
dir="$profile"
if [ "$profile" = dev ]; then dir=debug; fi
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --profile "$profile" -q -p identity-merger -p ctl -p bench-identity
fi
exec "target/$dir/bench-identity" "$mode" "$@"
