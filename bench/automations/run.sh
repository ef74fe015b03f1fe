#!/usr/bin/env bash
# Audience previews and full recomputes on 100,000 profiles, with this machine's plain
# scan of the same tables measured in the same run (figures in docs/audiences.md).
#
# Usage: bench/automations/run.sh [--profiles N] [--runs R]
#
# Builds the benchmark in release mode and uses a throw-away database
# (constintel_bench_automations). Not part of `just test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

export DATABASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/constintel_bench_automations}"
export DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-4}"
export RUST_LOG="${RUST_LOG:-error}"

# BENCH_NO_BUILD=1 reuses the release binary already built.
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -q -p bench-automations
fi
exec target/release/bench-automations "$@"
