"""Choose the retrain policy's thresholds on the tuning months only (docs/backtest.md).

Replays a grid of ``mode: performance`` policies over the tuning months (the months before
``--held-out-from``; for the example, February to June 2013) from the backtest's cached bank
(``kfops backtest --cache-dir``; what is missing is computed), and prints the candidates whose
minimum monthly AUC is at least ``monthly``'s and that retrain at most ``--max-retrains`` times,
best mean AUC first. The held-out months are never replayed here.

    python scripts/tune_retrain_policy.py --cache-dir /tmp/rt19/cache --set data_dir=/tmp/rt19/data
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
from pathlib import Path


def main() -> None:

    from kfops.cli.options import cli_config
    from kfops.core.retrain_policy import RetrainPolicy
    from kfops.core.tables import read_parquet
    from kfops.runners import backtest as bt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--first", default="2013-02")
    parser.add_argument("--last", default="2013-12", help="the span of the cached bank (not replayed past June)")
    parser.add_argument("--held-out-from", default="2013-07", help="the first held-out month, never replayed here")
    parser.add_argument("--max-retrains", type=int, default=3)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    cfg = cli_config(None, args.set)
    cache = args.cache_dir / bt.cache_key(cfg, args.first, args.last, None)
    start = bt.parse_month(args.first)
    initial = (start - dt.timedelta(days=1)).replace(day=1)
    if (cache / "frame.parquet").exists():
        frame = read_parquet(cache / "frame.parquet")
    else:
        frame = bt.build_frame(cfg, initial, bt._month_end(bt.parse_month(args.last)), cache / "work")
    by_month = {m: p for m, p in frame.groupby(bt.MONTH_COLUMN, sort=True)}
    bank = bt.ModelBank(cfg, by_month, cache / "work", cache_dir=cache)
    tuning, _ = bt.split_months([m for m in sorted(by_month) if m >= args.first], args.held_out_from)

    def replay(policies):
        return bt.replay(cfg, frame, tuning, initial.strftime("%Y-%m"), policies, cache / "work", bank=bank)

    grid = []
    for triggers in (["observed"], ["estimated"], ["weighted_drift"], ["prediction_drift"], ["observed", "estimated"],
                     ["observed", "weighted_drift"], ["estimated", "weighted_drift"], ["observed", "prediction_drift"],
                     ["challenger"], ["observed", "challenger"], ["challenger", "estimated"],
                     ["observed", "estimated", "challenger"]):
        for ot, et, ws, debounce, cooldown, floor in itertools.product(
                (0.0, 0.01, 0.02, 0.03), (0.0, 0.01, 0.02, 0.03, 0.05), (0.3, 0.5, 0.7), (1, 2), ("0d", "35d", "59d"),
                (None, 0.62, 0.64, 0.65, 0.66, 0.68)):
            if ("observed" not in triggers and (ot or floor)) or ("estimated" not in triggers and et) or \
                    ("weighted_drift" not in triggers and ws != 0.5):
                continue
            grid.append(RetrainPolicy(mode="performance", triggers=triggers, observed_tolerance=ot, min_roc_auc=floor,
                                      estimated_tolerance=et, weighted_drift_share=ws, debounce=debounce,
                                      cooldown=cooldown))
    monthly = replay(["monthly"]).totals().iloc[0]
    result = replay([(f"c{i}", policy) for i, policy in enumerate(grid)])
    bank.save()
    totals = result.totals()
    totals["policy"] = [grid[int(name[1:])] for name in totals["policy"]]
    kept = totals[(totals["min_roc_auc"] >= monthly["min_roc_auc"] - 1e-9) & (totals["retrains"] <= args.max_retrains)]
    print(f"monthly on {tuning[0]}..{tuning[-1]}: mean {monthly['mean_roc_auc']:.4f}, min {monthly['min_roc_auc']:.4f}, "
          f"{monthly['retrains']} retrains; {len(kept)} of {len(grid)} candidates kept")
    for row in kept.sort_values(["mean_roc_auc", "retrains"], ascending=[False, True]).head(20).itertuples():
        p = row.policy
        print(f"{row.mean_roc_auc:.4f} {row.min_roc_auc:.4f} {row.retrains} | triggers={p.triggers} "
              f"observed_tolerance={p.observed_tolerance} min_roc_auc={p.min_roc_auc} "
              f"estimated_tolerance={p.estimated_tolerance} weighted_drift_share={p.weighted_drift_share} "
              f"debounce={p.debounce} cooldown={p.cooldown}")


if __name__ == "__main__":
    main()
