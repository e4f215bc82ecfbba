"""Benchmark of kfops.core.evaluation.slice_metrics (every slice's ROC AUC from ranks within its
slice, at once) against what it replaced, one boolean mask and one sklearn ``roc_auc_score`` per
slice value, measured in the same run on the same rows.

The rows: a test split of 150,000 scored rows, sliced by a column of ``--values`` values (2,000:
the merchants of a card-transactions project, where the evaluate step spent 40 s here) and by one
of 3 values (a channel, as the example's carrier or origin), scores rounded to 3 decimals so that
ties occur. Both give the same slices, rows and AUCs (checked first).

    .venv/bin/python bench/slice_metrics.py
    .venv/bin/python bench/slice_metrics.py --values 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kfops.core.evaluation import slice_metrics


def one_mask_per_value(frame: pd.DataFrame, y_true: np.ndarray, proba: np.ndarray, slices: list[str],
                       min_rows: int) -> dict[str, dict[str, dict[str, float]]]:
    """slice_metrics before (kfops 0c7253a), kept here as the baseline."""
    from sklearn.metrics import roc_auc_score

    out: dict[str, dict[str, dict[str, float]]] = {}
    for column in slices:
        groups: dict[str, dict[str, float]] = {}
        values = frame[column].astype(str).to_numpy()
        for value in np.unique(values):
            mask = values == value
            if mask.sum() < min_rows or len(np.unique(y_true[mask])) < 2:
                continue
            groups[str(value)] = {"rows": int(mask.sum()), "roc_auc": float(roc_auc_score(y_true[mask], proba[mask]))}
        out[column] = groups
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--values", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"merchant": rng.choice([f"M{i}" for i in range(args.values)], args.rows),
                          "channel": rng.choice(["pos", "web", "app"], args.rows)})
    y_true = rng.random(args.rows) < 0.1
    proba = np.round(np.clip(0.1 + 0.2 * y_true + rng.normal(0, 0.2, args.rows), 0, 1), 3)
    slices = ["merchant", "channel"]

    new, old = slice_metrics(frame, y_true, proba, slices, 50), one_mask_per_value(frame, y_true, proba, slices, 50)
    assert new.keys() == old.keys() and all(new[c].keys() == old[c].keys() for c in old)
    worst = max(abs(new[c][v]["roc_auc"] - old[c][v]["roc_auc"]) for c in old for v in old[c])
    assert worst < 1e-12 and all(new[c][v]["rows"] == old[c][v]["rows"] for c in old for v in old[c])

    times: dict[str, list[float]] = {"one mask per value (baseline)": [], "ranks within slices": []}
    for _ in range(args.repeats):  # interleaved, so that the machine's noise falls on both alike
        for name, function in (("one mask per value (baseline)", one_mask_per_value),
                               ("ranks within slices", slice_metrics)):
            start = time.perf_counter()
            function(frame, y_true, proba, slices, 50)
            times[name].append(time.perf_counter() - start)
    print(f"{args.rows:,} rows; slices: merchant ({args.values:,} values, {len(new['merchant']):,} judged), "
          f"channel (3); the same AUCs (largest difference {worst:.1e})")
    baseline = statistics.median(times["one mask per value (baseline)"])
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"  {name:<31} median {median:8.3f} s   x{baseline / median:7.1f} the baseline's speed")


if __name__ == "__main__":
    main()
