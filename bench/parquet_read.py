"""Benchmark of kfops.core.tables.read_parquet (pyarrow reads the path) against pd.read_parquet
(pandas hands pyarrow a Python file object), which it replaced so that a process exiting right
after a read no longer aborts (apache/arrow#34314). The question: does the safe read cost time?

A flights-year-sized table (336,776 rows x 25 columns: numbers, text, timestamps) written once;
each reader reads it ``--repeats`` times, interleaved, and the medians are compared.

    .venv/bin/python bench/parquet_read.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kfops.core.tables import read_parquet


def table(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    columns: dict[str, object] = {f"x{i}": rng.normal(size=rows) for i in range(15)}
    columns.update({f"c{i}": rng.choice(["EWR", "JFK", "LGA", "UA", "DL", "B6"], size=rows) for i in range(8)})
    columns["when"] = pd.Timestamp("2013-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 365 * 86400, rows), unit="s")
    columns["id"] = np.arange(rows)
    return pd.DataFrame(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=336_776)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.parquet"
        table(args.rows).to_parquet(path, index=False)
        readers = {"pd.read_parquet (baseline)": pd.read_parquet, "kfops read_parquet": read_parquet}
        seconds: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.repeats):
            for name, read in readers.items():
                started = time.perf_counter()
                frame = read(path)
                seconds[name].append(time.perf_counter() - started)
        pd.testing.assert_frame_equal(read_parquet(path), pd.read_parquet(path))
    print(f"{args.rows:,} rows x {frame.shape[1]} columns, {args.repeats} reads each (median, min):")
    for name, times in seconds.items():
        print(f"  {name:28s} {statistics.median(times) * 1000:7.1f} ms  {min(times) * 1000:7.1f} ms")
    base, ours = (statistics.median(seconds[name]) for name in readers)
    print(f"kfops / baseline (median): {ours / base:.2f}x; the frames are equal")


if __name__ == "__main__":
    main()
