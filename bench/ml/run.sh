#!/usr/bin/env bash
# ML training time, batch scoring throughput and LightGBM against Python's `lightgbm` on
# the same matrices (figures and how to read them: docs/ml.md). Not part of `just test`.
#
# Usage: bench/ml/run.sh [--customers 100000] [--runs 3] [--no-python]
#
# Installs the pinned Python reference (bench/ml/requirements.txt) into a virtualenv under
# .data/bench-ml-venv when it is missing, builds the benchmark in release mode and runs
# it with that virtualenv's python3 first on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The project's own tools (cmake for LightGBM, just) first on PATH, as `just` has them.
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

venv=.data/bench-ml-venv
if [[ " $* " != *" --no-python "* ]] &&
    ! "$venv/bin/python3" -c 'import lightgbm, numpy, scipy' 2>/dev/null; then
    echo "installing the Python reference (bench/ml/requirements.txt) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/ml/requirements.txt
fi

# BENCH_NO_BUILD=1 reuses the release binary already built.
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -q -p ml-bench
fi
PATH="$PWD/$venv/bin:$PATH" exec target/release/ml-bench "$@"
