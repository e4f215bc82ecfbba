"""How each data step's cost grows with the data: 1x, 3x and 10x the 2013 flights.

The synthetic data is the 2013 year repeated: copy k (k = 0 .. N-1) is the year shifted to
2013 + k, the same local month, day and clock time, and its UTC timestamps (flights' and
weather's ``time_hour``) moved by the same number of days, so every flight still meets its
hour's weather. Copy k >= 1 gets its own aircraft: tail numbers starting with N start with
another letter (still a valid registration mark), and the planes table holds one row per
aircraft of every copy. The airlines table is shared. The tables are written as parquet into a
folder that ``dataset.source_dir`` points at, and the window (``dataset.start``/``end``) is
widened to the N years; the rest of the config is the example's (``kfops.yaml``).

Each step runs in its own Python process, calling the step function the KFP component calls
(``kfops.steps.*``), so its peak RSS is its own (``os.wait4`` rusage of that process):

    ingest -> validate -> featurize -> train -> evaluate -> (register: makes the champion) -> drift

``drift`` checks the second half of the N years against the first half (``reference_window``),
with the window's labelled data (both frames built with the loader and the point-in-time join,
the reference the first time, as the first check after training does).

Each child first imports what its step imports (``import_s``, constant), then times the call
(``step_s`` wall, ``cpu_s`` CPU of the process). Exponent b: t10 = t1 * 10^b, from ``step_s``.

    .venv/bin/python bench/scaling.py run --size 1       # one size; results in <work>/results.json
    .venv/bin/python bench/scaling.py run --size 10 --steps train evaluate register drift
    .venv/bin/python bench/scaling.py report             # table, exponents, 30x extrapolation

Everything lives under ``--work`` (default /tmp/kfops-scaling): ``source-<N>x`` (raw tables),
``run-<N>x`` (data dir and step outputs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STEPS = ("ingest", "validate", "featurize", "train", "evaluate", "register", "drift")
MEASURED = ("ingest", "validate", "featurize", "train", "evaluate", "drift")
FIRST_YEAR = 2013
# Replacements for the leading "N" of copy k's tail numbers: none is the first letter of a real
# 2013 tail number (all start with N, four flights' with D), so no two copies share an aircraft.
TAIL_PREFIXES = "ABCEFGHIJKLMOPQRSTUVWXYZ0123456789"
# What each step's function imports lazily: imported before the clock starts.
STEP_IMPORTS = {
    "ingest": ["pandas", "pyarrow.parquet", "kfops.datasets.flights"],
    "validate": ["great_expectations", "kfops.adapters.gx_validation", "kfops.reports.validation",
                 "kfops.adapters.state_store"],
    "featurize": ["feast", "great_expectations", "kfops.adapters.feast_store", "kfops.adapters.gx_validation",
                  "kfops.reports.validation", "kfops.datasets.flights.features", "kfops.adapters.state_store"],
    "train": ["xgboost", "mlflow", "kfops.adapters.mlflow_registry", "kfops.training", "kfops.core.model"],
    "evaluate": ["mlflow", "kfops.adapters.mlflow_registry", "kfops.core.evaluation", "kfops.reports.plots",
                 "kfops.core.model", "xgboost"],
    "register": ["mlflow", "kfops.adapters.mlflow_registry"],
    "drift": ["feast", "evidently", "mlflow", "kfops.adapters.feast_store", "kfops.core.drift",
              "kfops.reports.drift", "kfops.adapters.mlflow_registry", "kfops.core.model", "xgboost",
              "kfops.datasets.flights.features"],
}


def source_data_dir() -> Path:
    from kfops.datasets.flights import package_data_dir

    return package_data_dir()


def make_tables(size: int, out: Path) -> dict[str, int]:
    """Write ``size`` shifted copies of the 2013 tables as parquet into ``out``; returns row counts."""
    import numpy as np
    import pandas as pd

    if size > len(TAIL_PREFIXES) + 1:
        raise SystemExit(f"at most {len(TAIL_PREFIXES) + 1}x: there are no more tail-number prefixes")
    data = source_data_dir()
    flights = pd.read_csv(data / "flights.csv.zip")
    weather = pd.read_csv(data / "weather.csv")
    planes = pd.read_csv(data / "planes.csv")
    airlines = pd.read_csv(data / "airlines.csv")
    for frame in (flights, weather):
        frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)

    def shifted(frame: pd.DataFrame, k: int) -> pd.DataFrame:
        if k == 0:
            return frame
        old = pd.to_datetime(frame[["year", "month", "day"]])
        new = pd.to_datetime(frame[["year", "month", "day"]].assign(year=frame["year"] + k))
        out = frame.assign(year=frame["year"] + k, time_hour=frame["time_hour"] + (new - old))
        if "tailnum" in out.columns:
            out["tailnum"] = shift_tail(out["tailnum"], k)
        return out

    def shift_tail(tails: pd.Series, k: int) -> pd.Series:
        if k == 0:
            return tails
        prefix = TAIL_PREFIXES[k - 1]
        starts_n = tails.str.startswith("N", na=False)
        return tails.where(~starts_n, prefix + tails.str[1:])

    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "flights": pd.concat([shifted(flights, k) for k in range(size)], ignore_index=True),
        "weather": pd.concat([shifted(weather, k) for k in range(size)], ignore_index=True),
        "planes": pd.concat([planes.assign(tailnum=shift_tail(planes["tailnum"], k)) for k in range(size)],
                            ignore_index=True),
        "airlines": airlines,
    }
    assert not tables["planes"]["tailnum"].duplicated().any()
    assert np.all(tables["flights"]["year"].between(FIRST_YEAR, FIRST_YEAR + size - 1))
    for name, frame in tables.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    return {name: len(frame) for name, frame in tables.items()}


def window(size: int) -> tuple[dt.date, dt.date]:
    return dt.date(FIRST_YEAR, 1, 1), dt.date(FIRST_YEAR + size - 1, 12, 31)


def halves(size: int) -> tuple[tuple[dt.date, dt.date], tuple[dt.date, dt.date]]:
    start, end = window(size)
    middle = start + (end - start) / 2
    return (start, middle), (middle + dt.timedelta(days=1), end)


def config(size: int, work: Path, args, start: dt.date | None = None, end: dt.date | None = None):
    from kfops.config import load_config

    first, last = window(size)
    overrides = [
        f"data_dir={work / f'run-{size}x' / 'data'}",
        f"dataset.source_dir={work / f'source-{size}x'}",
        f"dataset.start={start or first}",
        f"dataset.end={end or last}",
    ]
    if args.rounds:
        # Exactly this many rounds at every size: early stopping would change the work per size.
        overrides += [f"train.xgboost.n_estimators={args.rounds}", f"train.xgboost.early_stopping_rounds={args.rounds}"]
    return load_config(REPO / "kfops.yaml", overrides)


def run_step(name: str, size: int, work: Path, args) -> dict:
    """In the child: import the step's modules, then time the step function."""
    import importlib

    started = time.perf_counter()
    for module in STEP_IMPORTS[name]:
        importlib.import_module(module)
    import_s = time.perf_counter() - started

    out = work / f"run-{size}x"
    raw, sources, training_set, model = out / "raw", out / "sources", out / "training_set.parquet", out / "model"
    state = out / "state.json"
    known = json.loads(state.read_text()) if state.is_file() else {}
    run_name = f"scaling-{size}x"
    cfg = config(size, work, args)
    wall, cpu = time.perf_counter(), time.process_time()
    extra: dict = {}
    if name == "ingest":
        from kfops.steps.ingest import ingest

        manifest = ingest(cfg, raw)
        known["data_hash"] = manifest["data_hash"]
        extra["rows"] = manifest["rows"]
    elif name == "validate":
        from kfops.steps.validate import validate

        summary = validate(cfg, raw, out / "validation.html", out / "validation.json")
        extra["success"] = summary.get("success")
    elif name == "featurize":
        from kfops.steps.featurize import featurize

        extra = featurize(cfg, raw, sources, training_set)
    elif name == "train":
        from kfops.steps.train import train

        known["run_id"] = train(cfg, training_set, model, run_name, known.get("data_hash", ""))
    elif name == "evaluate":
        from kfops.steps.evaluate import evaluate

        summary = evaluate(cfg, training_set, model, known["run_id"], out / "verdict.json", out / "plots.html")
        extra = {"blessed": summary["blessed"], "roc_auc": round(summary["metrics"]["roc_auc"], 4)}
    elif name == "register":
        from kfops.steps.register import register

        registered = register(cfg, known["run_id"], out / "verdict.json", out / "validation.json",
                              raw / "manifest.json", run_name)
        extra = {"version": registered["version"], "promoted": registered.get("promoted")}
    elif name == "drift":
        from kfops.steps.drift_check import drift_check

        reference, current = halves(size)
        current_cfg = config(size, work, args, *current)
        record = drift_check(current_cfg, out / "drift.html", out / "drift_verdict.json", out / "decision.json",
                             pipeline_run=run_name, reference_window=f"{reference[0]},{reference[1]}")
        extra = {"reference_rows": record["metrics"]["reference_rows"],
                 "current_rows": record["metrics"]["current_rows"], "drift": record["metrics"]["drift"]}
    step_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    state.write_text(json.dumps(known))
    return {"import_s": round(import_s, 2), "step_s": round(step_s, 2), "cpu_s": round(cpu_s, 2), **extra}


def child(name: str, size: int, work: Path, args) -> dict:
    """Run one step in a fresh interpreter; its wall time, CPU and peak RSS from the OS."""
    command = [sys.executable, __file__, "_step", name, "--size", str(size), "--work", str(work)]
    if args.rounds:
        command += ["--rounds", str(args.rounds)]
    if args.profile:
        command += ["--profile"]
    log = work / f"run-{size}x" / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "KFOPS_PROJECT_DIR": str(REPO)}
    started = time.perf_counter()
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    text = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"step {name} at {size}x failed (log {log}):\n{text[-4000:]}")
    marker = [line for line in text.splitlines() if line.startswith("SCALING-RESULT ")]
    result = json.loads(marker[-1].removeprefix("SCALING-RESULT "))
    return {"wall_s": round(wall, 2), **result, "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def run_size(size: int, work: Path, args) -> None:
    import shutil

    source = work / f"source-{size}x"
    results_path = work / args.results[0]
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    entry = results.setdefault(str(size), {"steps": {}})
    steps = args.steps or list(STEPS)
    if not (source / "flights.parquet").is_file():  # the same data every time: made once
        started = time.perf_counter()
        entry["rows"] = make_tables(size, source)
        entry["make_data_s"] = round(time.perf_counter() - started, 1)
        print(f"{size}x: wrote {entry['rows']} in {entry['make_data_s']} s", flush=True)
    if steps[0] == "ingest":
        shutil.rmtree(work / f"run-{size}x", ignore_errors=True)
    (work / f"run-{size}x").mkdir(parents=True, exist_ok=True)
    for name in steps:
        measured = child(name, size, work, args)
        entry["steps"][name] = measured
        entry["load_average"] = os.getloadavg()
        entry["rounds"] = args.rounds
        print(f"{size}x {name:9s} {json.dumps(measured)}", flush=True)
        results_path.write_text(json.dumps(results, indent=2))


def exponent(small: float, large: float, ratio: float) -> float | None:
    return round(math.log(large / small) / math.log(ratio), 2) if small > 0 and large > 0 else None


def report(work: Path, names: list[str]) -> None:
    """The table; with several result files, a later file's steps replace an earlier's."""
    results: dict = {}
    for name in names:
        for size, entry in json.loads((work / name).read_text()).items():
            results.setdefault(size, {"steps": {}})["steps"].update(entry["steps"])
    sizes = sorted(int(s) for s in results)
    print("| step | " + " | ".join(f"{s}x s (CPU s) / peak RSS MB" for s in sizes)
          + f" | b time | b CPU | b CPU {f'{sizes[-2]}x->{sizes[-1]}x' if len(sizes) > 2 else '(upper pair)'} | b RSS"
          " | 30x RSS GB (linear / power) |")
    print("|---|" + "---:|" * (len(sizes) + 5))
    low, high = sizes[0], sizes[-1]
    for name in STEPS:
        cells, have = [], {}
        for s in sizes:
            step = results[str(s)]["steps"].get(name)
            have[s] = step
            cells.append("-" if step is None else f"{step['step_s']} ({step['cpu_s']}) / {step['peak_rss_mb']:,.0f}")
        a, b = have.get(low), have.get(high)
        if a and b and high > low:
            ratio = high / low
            rss_linear = b["peak_rss_mb"] + (b["peak_rss_mb"] - a["peak_rss_mb"]) * (30 - high) / (high - low)
            b_rss = exponent(a["peak_rss_mb"], b["peak_rss_mb"], ratio)
            rss_power = b["peak_rss_mb"] * (30 / high) ** b_rss
            mid = have.get(sizes[-2]) if len(sizes) > 2 else None
            b_upper = exponent(mid["cpu_s"], b["cpu_s"], high / sizes[-2]) if mid else "-"
            tail = (f"{exponent(a['step_s'], b['step_s'], ratio)} | {exponent(a['cpu_s'], b['cpu_s'], ratio)} | "
                    f"{b_upper} | {b_rss} | {rss_linear / 1024:.1f} / {rss_power / 1024:.1f}")
        else:
            tail = "- | - | - | - | -"
        print(f"| {name} | " + " | ".join(cells) + f" | {tail} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report", "make-data", "_step"])
    parser.add_argument("name", nargs="?", help="(_step) the step to run")
    parser.add_argument("--size", type=int, default=1, help="Copies of the 2013 year.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kfops-scaling"))
    parser.add_argument("--steps", nargs="+", choices=STEPS, help="Only these steps (in order); default: all.")
    parser.add_argument("--rounds", type=int, default=0,
                        help="Boost exactly this many xgboost rounds at every size (no early stopping); 0: the config's.")
    parser.add_argument("--profile", action="store_true", help="cProfile each step into run-<N>x/<step>.prof.")
    parser.add_argument("--results", nargs="+", default=["results.json"],
                        help="Result file(s) under --work: run writes the first; report merges them in order.")
    args = parser.parse_args()
    work = args.work.resolve()
    if args.command == "_step":
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            result = profiler.runcall(run_step, args.name, args.size, work, args)
            profiler.dump_stats(str(work / f"run-{args.size}x" / f"{args.name}.prof"))
        else:
            result = run_step(args.name, args.size, work, args)
        print("SCALING-RESULT " + json.dumps(result), flush=True)
    elif args.command == "make-data":
        print(make_tables(args.size, work / f"source-{args.size}x"))
    elif args.command == "run":
        run_size(args.size, work, args)
    else:
        report(work, args.results)


if __name__ == "__main__":
    main()
