#!/usr/bin/env bash
# Streams runtime throughput versus raw Redis on this machine (see README.md here).
# Usage: bench/streams/run.sh [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run -q -p streams --example throughput -- "$@"
