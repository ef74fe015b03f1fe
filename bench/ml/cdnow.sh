#!/usr/bin/env bash
# CDNOW, the classic public purchase log of BG/NBD's paper: converts the sample (2,357
# customers) and the master log (23,570 customers) to `ctl ml eval`'s CSV and evaluates
# churn and LTV on the paper's calibration split (cutoff 1997-09-30, horizon 273 days =
# 39 weeks), beside recency alone, BG/NBD and Gamma-Gamma × BG/NBD (figures: docs/ml.md).
#
# Usage: bench/ml/cdnow.sh [sample|master|both] [extra ctl ml eval flags, e.g. --json]
#
# The data ships inside Python's `lifetimes` package (pinned below); only the wheel is
# downloaded, nothing is installed. Files land in .data/cdnow/.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

which=${1:-both}
shift || true
dir=.data/cdnow
mkdir -p "$dir"
if [ ! -f "$dir/master.csv" ]; then
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        lifetimes==0.11.3 -d "$dir/wheel"
    python3 - "$dir" <<'PY'
import sys, zipfile, glob
out = sys.argv[1]
wheel = glob.glob(f"{out}/wheel/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for name, target in [("lifetimes/datasets/CDNOW_sample.txt", "sample"),
                         ("lifetimes/datasets/CDNOW_master.txt", "master")]:
        rows = z.read(name).decode().split("\n")
        with open(f"{out}/{target}.csv", "w") as f:
            f.write("customer_id,date,amount\n")
            for line in rows:
                cols = line.split()
                if not cols or not cols[-3].isdigit():
                    continue  # header or blank line
                # sample: old id, new id, date, quantity, amount; master: id, date, quantity, amount
                customer, date, amount = cols[0], cols[-3], cols[-1]
                f.write(f"{customer},{date[:4]}-{date[4:6]}-{date[6:]},{amount}\n")
PY
fi

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cargo build --release -q -p ctl
fi
for data in sample master; do
    if [ "$which" = both ] || [ "$which" = "$data" ]; then
        echo "== CDNOW $data =="
        target/release/ctl ml eval --transactions "$dir/$data.csv" \
            --cutoff 1997-09-30 --horizon 273 "$@"
        echo
    fi
done
