"""Benchmark of `kfops predict --raw` against scoring finished feature rows, in the same run.

    .venv/bin/python bench/raw_scoring.py                                  # January to March 2013
    .venv/bin/python bench/raw_scoring.py --end 2013-12-31 --repeat 3      # the whole year

Trains the flights example on the window with the pipeline's own steps (ingest, featurize,
train) in a throwaway data dir, then scores the window's flights two ways with
``predict_file``:

  features  the training set's rows (every feature already joined): the baseline;
  raw       the same flights as raw rows (what a client sends the server), checked field by field,
            their request features derived and the views joined point-in-time from the offline
            sources (``kfops.serving.local.raw_scoring``).
  + log     each again with ``kfops predict --log``: the rows appended to the inference log
            (``kfops.serving.local.batch_log``).

Both outputs are compared first (the probabilities must be equal). Prints rows per second
(best of ``--repeat``) and raw's share of the baseline's throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--end", default="2013-03-31")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("KFOPS_PROGRESS", "off")

    import numpy as np
    import pandas as pd

    from kfops.config import load_config
    from kfops.core.model import load_model
    from kfops.core.tables import read_parquet
    from kfops.serving.local.batch_log import BatchPredictionLog
    from kfops.serving.local.batch_scoring import predict_file
    from kfops.serving.local.raw_scoring import RawCompleter
    from kfops.steps.featurize import featurize
    from kfops.steps.ingest import ingest
    from kfops.steps.train import train

    with tempfile.TemporaryDirectory(prefix="kfops-bench-raw-") as folder:
        work = Path(folder)
        cfg = load_config(REPO / "kfops.yaml", [f"data_dir={work / 'state'}", f"dataset.start={args.start}",
                                                f"dataset.end={args.end}"], environ={})
        raw_tables, sources, training_set = work / "raw", work / "sources", work / "training_set.parquet"
        manifest = ingest(cfg, raw_tables)
        featurize(cfg, raw_tables, sources, training_set)
        train(cfg, training_set, work / "model", "bench-raw", manifest["data_hash"])
        model = load_model(work / "model")

        rows = read_parquet(training_set)
        features_file, raw_file = work / "features.parquet", work / "raw.parquet"
        rows.drop(columns=["label", "split"]).to_parquet(features_file, index=False)
        pd.DataFrame({
            "flight_id": rows["flight_id"], "carrier": rows["carrier"], "origin": rows["origin"],
            "dest": rows["dest"], "distance": rows["distance"],
            "sched_dep": rows["event_timestamp"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%dT%H:%M"),
            "tailnum": rows["tailnum"], "flight": rows["flight"],
        }).to_parquet(raw_file, index=False)
        completer = RawCompleter(cfg, model.spec, sources, str(raw_file))

        def best(path: Path, out: Path, complete, logged: bool = False) -> float:
            seconds = []
            for _ in range(args.repeat):
                log = BatchPredictionLog(
                    work / "inference_logs", model_name="bench", model_version="1", spec=model.spec,
                    threshold=model.threshold,
                    raw_fields=[f.name for f in complete.schema.builder.fields] if complete else None,
                ) if logged else None
                started = time.perf_counter()
                predict_file(model, path, out, complete=complete, log=log)
                seconds.append(time.perf_counter() - started)
            return min(seconds)

        base = best(features_file, work / "scored_features.parquet", None)
        base_logged = best(features_file, work / "scored_features.parquet", None, logged=True)
        raw = best(raw_file, work / "scored_raw.parquet", completer)
        raw_logged = best(raw_file, work / "scored_raw.parquet", completer, logged=True)
        same = np.array_equal(read_parquet(work / "scored_features.parquet")["probability"].to_numpy(),
                              read_parquet(work / "scored_raw.parquet")["probability"].to_numpy())
        n = len(rows)
        print(f"window {args.start}..{args.end}: {n:,} flights, best of {args.repeat}, {os.cpu_count()} cores")
        print(f"  features  {n / base:>10,.0f} rows/s  ({base:.2f}s)")
        print(f"  raw       {n / raw:>10,.0f} rows/s  ({raw:.2f}s)")
        print(f"  features + log {n / base_logged:>10,.0f} rows/s  ({base_logged:.2f}s)")
        print(f"  raw + log      {n / raw_logged:>10,.0f} rows/s  ({raw_logged:.2f}s)")
        print(f"  raw / features throughput: {base / raw:.3f}; probabilities equal: {same}")
        print(f"  with --log / without: features {base / base_logged:.3f}, raw {raw / raw_logged:.3f}")
        if not same:
            raise SystemExit("the raw rows scored differently from their feature rows")


if __name__ == "__main__":
    main()
