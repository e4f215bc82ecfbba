"""What does running through KFP cost? Compare, in one run on the same machine:

  A  `kfops run training` (compile, then the compiled YAML under kfp.local: one process per task)
  B  the same step functions called in sequence in one Python process, without KFP
  A0 (with --cold) A with KFOPS_ZYGOTE=0: every task a cold interpreter, no task zygote (the runner before it)

Both start from an empty data dir (no champion), on the same window, and end with a served model.

    .venv/bin/python bench/pipeline_overhead.py                 # full year, 336,776 flights
    .venv/bin/python bench/pipeline_overhead.py --end 2013-01-31 --repeat 2

Targets (2-core machine): A under 90 s, A/B at most 1.2 (issue 17).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def overrides(data_dir: Path, args) -> list[str]:
    return [f"data_dir={data_dir}", f"dataset.start={args.start}", f"dataset.end={args.end}",
            f"serving.http_port={args.port}"]


def run_kfp(data_dir: Path, args, cold: bool = False) -> float:
    command = [str(Path(sys.executable).with_name("kfops")), "run", "training"]
    for item in overrides(data_dir, args):
        command += ["--set", item]
    env = {**os.environ, "KFOPS_ZYGOTE": "0"} if cold else None
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"A failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    tasks = dict(TASK_LINE.findall(done.stdout + done.stderr))
    print(f"  {'A0' if cold else 'A'} tasks: " + ", ".join(f"{task} {seconds}" for task, seconds in tasks.items()), flush=True)
    for log in (data_dir / "logs").glob("training-*.log"):  # the task zygote's own report, when there is one
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("zygote: ") and ("preloaded" not in line or "great_expectations" in line or "xgboost" in line):
                print(f"  {line}", flush=True)
    return elapsed


TASK_LINE = re.compile(r"task '(\w+)' finished in ([\d.]+s)")


IN_PROCESS = r"""
import sys, time, json
from pathlib import Path
started = time.perf_counter()
from kfops.config import load_config
from kfops.steps.deploy import deploy
from kfops.steps.evaluate import evaluate
from kfops.steps.featurize import featurize
from kfops.steps.ingest import ingest
from kfops.steps.register import register
from kfops.steps.train import train
from kfops.steps.validate import validate
cfg = load_config(None, sys.argv[2:])
work = Path(sys.argv[1])
raw, sources, ts, model = work / "raw", work / "sources", work / "training_set.parquet", work / "model"
manifest = ingest(cfg, raw)
validate(cfg, raw, work / "report.html", work / "summary.json")
featurize(cfg, raw, sources, ts)
run_id = train(cfg, ts, model, "bench-in-process", manifest["data_hash"])
summary = evaluate(cfg, ts, model, run_id, work / "verdict.json", work / "plots.html")
reg = register(cfg, run_id, work / "verdict.json", work / "summary.json", raw / "manifest.json", "bench-in-process")
deploy(cfg, reg["version"])
print(json.dumps({"seconds": time.perf_counter() - started, "roc_auc": summary["metrics"]["roc_auc"]}))
"""


def run_in_process(data_dir: Path, args) -> float:
    # A fresh interpreter, so B also pays its imports once, as a user calling the functions would.
    work = data_dir / "work-in-process"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", IN_PROCESS, str(work), *overrides(data_dir, args)], cwd=REPO,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"B failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


def stop_server(data_dir: Path, args) -> None:
    from kfops.config import load_config
    from kfops.serving.local.process import stop_server as stop

    stop(load_config(None, overrides(data_dir, args)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--end", default="2013-12-31")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--cold", action="store_true", help="also run A0: A without the task zygote")
    args = parser.parse_args()
    a_times, b_times, cold_times = [], [], []
    runs = [("B", run_in_process, b_times), ("A", run_kfp, a_times)]
    if args.cold:
        runs.append(("A0", lambda data_dir, args: run_kfp(data_dir, args, cold=True), cold_times))
    for _ in range(args.repeat):
        for label, runner, bucket in runs:
            data_dir = Path(tempfile.mkdtemp(prefix=f"kfops-bench-{label}-"))
            try:
                seconds = runner(data_dir, args)
                bucket.append(seconds)
                print(f"{label}: {seconds:6.1f} s", flush=True)
            finally:
                stop_server(data_dir, args)
                shutil.rmtree(data_dir, ignore_errors=True)
    a, b = statistics.median(a_times), statistics.median(b_times)
    result = {"window": f"{args.start}..{args.end}", "A_kfp_local_s": round(a, 1), "B_in_process_s": round(b, 1),
              "ratio_A_over_B": round(a / b, 3), "repeat": args.repeat, "cores": os.cpu_count(),
              "target": "A < 90 s, A/B <= 1.2"}
    if cold_times:
        a0 = statistics.median(cold_times)
        result.update({"A0_no_zygote_s": round(a0, 1), "ratio_A0_over_B": round(a0 / b, 3)})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
