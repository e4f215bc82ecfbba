"""A local cron scheduler: the laptop stand-in for a KFP recurring run.

It calls a run function at each cron time, logs each run and what it decided (retrain or not,
why, the gate's verdict, the version registered) as a JSON line under ``data_dir/scheduler/``,
survives a failed run, and stops after ``max_runs`` runs, ``max_seconds``, or at Ctrl-C (also
during a run). Missed times (a run outlasting the interval) are skipped, not caught up, as KFP's
``no_catchup`` does. Five-field crons are standard; six fields put seconds first (KFP's
robfig/cron convention); :func:`kfops.core.cron.check_cron` refuses what KFP would not read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.cron import check_cron, cron_iterator
from kfops.errors import EXIT_INTERRUPTED, ConfigError, KfopsError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

RunFunction = Callable[[], Any]
INTERRUPTED = "interrupted"


@dataclass
class SchedulerResult:
    log_path: Path
    runs: int = 0
    failures: int = 0
    skipped: int = 0
    stop_reason: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)


def scheduler_dir(cfg: KfopsConfig) -> Path:
    return cfg.data_dir / "scheduler"


def default_run_function(cfg: KfopsConfig, pipeline: str = "retraining", window_days: int | None = None,
                         now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> RunFunction:
    """A local run of ``pipeline``; its outcome names the run and what it decided
    (:func:`kfops.runners.run_records.run_decision`).

    With ``window_days``, each run checks (and trains on) the ``window_days`` whole days before the
    day it starts, in ``validation.window_timezone``, instead of the config's fixed dataset window.
    """
    from kfops.core.windows import moving_window, window_before

    if window_days is not None:
        moving_window(window_days, dt.date.today())  # refused before the first tick, not at it

    def run() -> dict[str, Any]:
        from kfops.runners.local import run_locally
        from kfops.runners.run_records import run_decision

        run_cfg = cfg if window_days is None else window_before(cfg, window_days, now())
        result = run_locally(run_cfg, pipeline, on_event=lambda line: None)
        return {"run_dir": str(result.run_dir), "seconds": round(result.seconds, 1), "log": str(result.log_path),
                "window": [str(day) for day in run_cfg.window], "decision": run_decision(result.outputs)}

    return run


class _Log:
    def __init__(self, path: Path, on_event: Callable[[dict[str, Any]], None] | None, result: SchedulerResult):
        self.path = path
        self.on_event = on_event
        self.result = result
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: str, **data: Any) -> None:
        record = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "event": event, **data}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        self.result.events.append(record)
        if self.on_event is not None:
            self.on_event(record)


def run_scheduler(
    cron: str,
    run: RunFunction,
    log_dir: Path,
    max_runs: int | None = None,
    max_seconds: float | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    name: str = "retraining",
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> SchedulerResult:
    """Call ``run()`` at each time of ``cron`` until ``max_runs`` runs or ``max_seconds`` pass.

    A run that raises is logged (type, message, traceback) and the scheduler goes on. Ctrl-C
    (KeyboardInterrupt, or an error with exit code 130 from the run) stops it: ``stop_reason``
    is ``interrupted``. A bad cron or bound is refused before anything is logged.
    """
    if max_runs is not None and max_runs < 1:
        raise ConfigError(f"max_runs must be at least 1, not {max_runs}", hint="pass --max-runs 1 or more")
    if max_seconds is not None and max_seconds <= 0:
        raise ConfigError(f"max_seconds must be positive, not {max_seconds}", hint="pass --max-seconds above 0")
    started = now()
    cron = check_cron(cron, started)
    deadline = started + dt.timedelta(seconds=max_seconds) if max_seconds is not None else None
    result = SchedulerResult(log_path=log_dir / f"{name}.jsonl")
    log = _Log(result.log_path, on_event, result)
    schedule = cron_iterator(cron, started)
    log("started", cron=cron, name=name, pid=os.getpid(), max_runs=max_runs, max_seconds=max_seconds)
    try:
        while True:
            due = schedule.get_next()
            if deadline is not None and due > deadline:
                result.stop_reason = "max_seconds"
                break
            log("scheduled", due=due.isoformat())
            wait = (due - now()).total_seconds()
            if wait > 0:
                sleep(wait)
            result.runs += 1
            log("run_started", run=result.runs, due=due.isoformat())
            began = time.perf_counter()
            try:
                outcome = run()
            except KeyboardInterrupt:
                log("run_interrupted", run=result.runs, seconds=round(time.perf_counter() - began, 3))
                raise
            except KfopsError as err:
                if err.exit_code == EXIT_INTERRUPTED:  # Ctrl-C, which the run caught to clean up: stop too
                    log("run_interrupted", run=result.runs, error=str(err),
                        seconds=round(time.perf_counter() - began, 3))
                    raise KeyboardInterrupt from err
                result.failures += 1
                log("run_failed", run=result.runs, error_type=type(err).__name__, error=str(err),
                    seconds=round(time.perf_counter() - began, 3))
            except Exception as err:  # scheduler boundary: one bad run must not stop the next
                result.failures += 1
                log("run_failed", run=result.runs, error_type=type(err).__name__, error=str(err),
                    traceback=traceback.format_exc(limit=8), seconds=round(time.perf_counter() - began, 3))
            else:
                log("run_succeeded", run=result.runs, seconds=round(time.perf_counter() - began, 3),
                    outcome=outcome)
            if max_runs is not None and result.runs >= max_runs:
                result.stop_reason = "max_runs"
                break
            # Skip the times that passed while the run was going (no catch-up).
            schedule = cron_iterator(cron, now())
            missed = _count_missed(cron, due, now())
            if missed:
                result.skipped += missed
                log("skipped", count=missed, reason="the previous run outlasted the interval")
    except KeyboardInterrupt:
        result.stop_reason = INTERRUPTED
    log("stopped", reason=result.stop_reason, runs=result.runs, failures=result.failures, skipped=result.skipped)
    return result


def _count_missed(cron: str, after: dt.datetime, until: dt.datetime, limit: int = 1000) -> int:
    schedule = cron_iterator(cron, after)
    missed = 0
    while missed < limit and schedule.get_next() < until:
        missed += 1
    return missed
