"""Python reference for bench/ml: trains LightGBM through the `lightgbm` package on
the exact feature matrices and parameters the Rust benchmark exported, and reports the
training times (median of N runs) and test-set predictions as JSON on stdout.

Usage: python3 lgbm_reference.py OUT_DIR RUNS
OUT_DIR holds, per model (churn, ltv): {model}_train_x.f32, {model}_train_y.f32,
{model}_test_x.f32 (row-major little-endian float32), {model}_params.json; and
meta.json with the number of features.
"""

import json
import statistics
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np


def main() -> None:
    out = Path(sys.argv[1])
    runs = int(sys.argv[2])
    meta = json.loads((out / "meta.json").read_text())
    n_features = meta["n_features"]
    report = {"lightgbm_version": lgb.__version__, "numpy_version": np.__version__, "models": {}}
    for model in ("churn", "ltv"):
        x = np.fromfile(out / f"{model}_train_x.f32", dtype="<f4").reshape(-1, n_features)
        y = np.fromfile(out / f"{model}_train_y.f32", dtype="<f4")
        test_x = np.fromfile(out / f"{model}_test_x.f32", dtype="<f4").reshape(-1, n_features)
        params = json.loads((out / f"{model}_params.json").read_text())
        times = []
        booster = None
        for _ in range(runs):
            started = time.perf_counter()
            booster = lgb.train(params, lgb.Dataset(x, label=y))
            times.append(time.perf_counter() - started)
        predictions = booster.predict(test_x)
        predictions.astype("<f8").tofile(out / f"{model}_python_predictions.f64")
        report["models"][model] = {
            "rows": int(x.shape[0]),
            "train_seconds": times,
            "median_seconds": statistics.median(times),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
