#!/usr/bin/env bash
# Streams runtime throughput versus raw Redis on this machine (see README.md here).
# Usage: bench/streams/run.sh [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/../.."
# The project's own tools (cmake for LightGBM, just) first on PATH, as `just` has them.
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
exec cargo run -q -p streams --example throughput -- "$@"
