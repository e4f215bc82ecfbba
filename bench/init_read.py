"""Benchmark of what `kfops init` pays to keep zero-padded codes as text: ``read_raw`` (the table,
then its integer and whole-float columns read once more as text and scanned for leading zeros)
against what it did before (``read_table_file``, then the timestamp column parsed), measured
alternately in the same run on the same CSV.

The CSV: ``--rows`` made-up visits (1,000,000: 78 MB), with a row id, a zero-padded postcode, two
whole-valued floats with nulls, a float, a boolean, a patient id and an ISO time, as a clinic's
export might hold them. The runs a project makes afterwards read it once, as before: the plug-in
names its text columns (TEXT_COLUMNS), and ``read_table_file`` reads them as text in the same pass.

    .venv/bin/python bench/init_read.py
    .venv/bin/python bench/init_read.py --rows 200000 --repeat 5
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

from kfops.core.featureset import parse_timestamps
from kfops.datasets import read_table_file
from kfops.datasets.scaffold import parse_table, read_raw


def write_visits(path: Path, rows: int) -> None:
    rng = np.random.default_rng(7)
    zips = [f"{z:05d}" for z in rng.choice(np.arange(1000, 9000), 40, replace=False)]
    at = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.uniform(0, 180 * 86400, rows)), unit="s")
    pd.DataFrame({
        "visit_id": np.arange(rows) + 100000, "patient_id": [f"P{i:06d}" for i in rng.integers(0, rows // 5, rows)],
        "clinic_zip": rng.choice(zips, rows), "visited_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "age": np.where(rng.random(rows) < 0.05, np.nan, rng.integers(18, 95, rows)),
        "bmi": rng.normal(27, 5, rows).round(1), "smoker": rng.choice([True, False], rows),
        "systolic": np.where(rng.random(rows) < 0.01, np.nan, rng.normal(130, 15, rows).round(0)),
    }).to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "visits.csv"
        write_visits(path, args.rows)
        table = parse_table(f"{path}:timestamp=visited_at")
        frame, padded = read_raw(table)
        assert padded == ["clinic_zip"] and frame["clinic_zip"].str.fullmatch(r"\d{5}").all(), padded
        size = path.stat().st_size
        times: dict[str, list[float]] = {"before": [], "read_raw": []}
        for _ in range(args.repeat):  # alternately, so that the machine's noise falls on both
            start = time.perf_counter()
            before = read_table_file(path)
            before["visited_at"] = parse_timestamps(before["visited_at"])
            times["before"].append(time.perf_counter() - start)
            start = time.perf_counter()
            read_raw(table)
            times["read_raw"].append(time.perf_counter() - start)
    base, new = (statistics.median(times[k]) for k in ("before", "read_raw"))
    print(f"{args.rows:,} rows, {size / 1e6:.0f} MB, median of {args.repeat}:")
    print(f"  read and parse (before)   {base:6.2f} s")
    print(f"  read_raw (zero-padded)    {new:6.2f} s   x{new / base:.2f} of before, +{new - base:.2f} s")


if __name__ == "__main__":
    main()
