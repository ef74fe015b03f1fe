#!/usr/bin/env bash
# Backfill of 100,000 profiles into the HubSpot, Salesforce and REST fakes, each at its
# platform's default rate limit, against the bound that limit sets (figures in
# docs/destinations.md).
#
# Usage: bench/destinations/run.sh [--profiles N] [--kinds hubspot,salesforce,rest]
#
# Builds the benchmark in release mode and uses a throw-away database
# (constintel_bench_destinations). Not part of `just test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

export DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/constintel_bench_destinations}"
export DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-8}"
export RUST_LOG="${RUST_LOG:-error}"

# BENCH_NO_BUILD=1 reuses the release binary already built.
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -q -p bench-destinations
fi
exec target/release/bench-destinations "$@"
