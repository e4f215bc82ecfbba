"""A record of each local run, so `kfops runs list|get` answer on the embedded default as they do
on a Kubeflow endpoint.

``<data_dir>/runs/<run id>.json``, the run id being its log's name (``<pipeline>-<time>-<pid>-<hex>``):
written as ``running`` when the run starts (with its pid and host) and rewritten once when it ends,
``succeeded``, ``failed`` (with the task and the error) or ``interrupted``, with what it decided
(:func:`run_decision`). A run whose process died without ending its record (killed, the machine
restarted) reads as ``abandoned`` once its pid is gone from this host, or is another process's now
(Linux: the process's start time is recorded beside its pid). Retention removes records
with their logs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.files import atomic_write_bytes

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

RUNNING, SUCCEEDED, FAILED, INTERRUPTED, ABANDONED = "running", "succeeded", "failed", "interrupted", "abandoned"


def records_dir(cfg: KfopsConfig) -> Path:
    return cfg.data_dir / "runs"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write(path: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(record, indent=1, default=str) + "\n").encode())


def start_record(cfg: KfopsConfig, pipeline: str, log_path: Path, runner: str) -> Path:
    """Write the record of a run that starts now; returns its path."""
    path = records_dir(cfg) / f"{log_path.stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, {
        "id": log_path.stem, "pipeline": pipeline, "state": RUNNING, "started_at": _now(), "ended_at": None,
        "seconds": None, "window": [str(day) for day in cfg.window] if cfg.dataset.start and cfg.dataset.end else None,
        "runner": runner, "pid": os.getpid(), "pid_started": process_start(os.getpid()),
        "host": socket.gethostname(), "log": str(log_path),
        "run_name": None, "run_dir": None, "failed_task": None, "error": None, "decision": {},
    })
    return path


def end_record(path: Path, state: str, *, seconds: float, run_dir: Path | None = None,
               outputs: dict[str, Any] | None = None, failed_task: str | None = None, error: str | None = None,
               compiled: Path | None = None) -> dict[str, Any] | None:
    """Rewrite a run's record as it ended; returns it (None when it could not be written). Never
    raises: a record must not fail the run it records."""
    try:
        record = json.loads(path.read_text())
        record.update({
            "state": state, "ended_at": _now(), "seconds": round(seconds, 1),
            "run_name": run_dir.name if run_dir else None, "run_dir": str(run_dir) if run_dir else None,
            "compiled": str(compiled) if compiled else None, "failed_task": failed_task,
            "error": error, "decision": run_decision(outputs or {}),
        })
        _write(path, record)
    except (OSError, ValueError):
        return None
    return record


def read_records(cfg: KfopsConfig) -> list[dict[str, Any]]:
    """Every local run's record, newest first; a record a dead process left ``running`` reads as abandoned."""
    folder = records_dir(cfg)
    records = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed meanwhile (retention), or not one of ours
        if isinstance(record, dict) and "id" in record:
            records.append(_with_liveness(record))
    return sorted(records, key=lambda r: (r.get("started_at") or "", r["id"]), reverse=True)


def find_record(cfg: KfopsConfig, run: str) -> dict[str, Any] | None:
    """The record whose id or kfp.local run name is ``run``, or starts with it when only one does."""
    records = read_records(cfg)
    exact = [r for r in records if run in (r["id"], r.get("run_name"))]
    if exact:
        return exact[0]
    matching = [r for r in records if r["id"].startswith(run) or (r.get("run_name") or "").startswith(run)]
    return matching[0] if len(matching) == 1 else None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks after boot (Linux's /proc); None elsewhere or
    when there is no such process. A pid is reused; a pid with its start time names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None  # field 22 of proc_pid_stat(5)


def _with_liveness(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("state") != RUNNING or record.get("host") != socket.gethostname():
        return record
    try:
        pid = int(record["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return {**record, "state": ABANDONED}
    except (PermissionError, TypeError, ValueError, KeyError):
        return record  # alive under another user, or a record without a pid: say what it says
    recorded, now = record.get("pid_started"), process_start(pid)
    if recorded is not None and now is not None and recorded != now:
        return {**record, "state": ABANDONED}  # the pid was reused by a process that is not this run
    return record


def outcome(record: dict[str, Any]) -> str:
    """One line: what the run decided, or where it failed."""
    if record.get("state") in (FAILED, INTERRUPTED) and record.get("error"):
        return str(record["error"]).splitlines()[0]  # it names the task: "pipeline 'x' failed in task 'y': ..."
    if record.get("state") == ABANDONED:
        return f"its process ({record.get('pid')}) ended without recording how the run ended"
    from kfops.core.notifications import decision_text

    return decision_text(record.get("decision") or {})


def _read_json(path: Any) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError):  # a run's outcome line never fails over a missing or partial file
        return {}
    return data if isinstance(data, dict) else {}


def run_decision(outputs: dict[str, Any]) -> dict[str, Any]:
    """What a finished local run decided, from its task outputs (``LocalRun.outputs``).

    ``retrain``, ``code`` and ``reason``: the drift task's retrain decision (a retraining run);
    ``blessed`` and ``failed_checks``: the evaluation gate's verdict, when a model was trained;
    ``registered_version``: the version registered, if any. Only what the run produced is there.
    """
    decided: dict[str, Any] = {}
    drift = outputs.get("drift") or {}
    decision = _read_json(drift.get("decision"))
    if decision or "Output" in drift:
        decided["retrain"] = bool(decision.get("retrain", drift.get("Output")))
        decided.update({key: decision[key] for key in ("code", "reason", "drift", "triggered_by") if key in decision})
    verdict = _read_json((outputs.get("evaluate") or {}).get("verdict"))
    if "blessed" in verdict:
        decided["blessed"] = bool(verdict["blessed"])
        reasons = (verdict.get("verdict") or {}).get("reasons") or []
        decided["failed_checks"] = [r.removeprefix("FAIL ") for r in reasons if str(r).startswith("FAIL ")]
    registered = (outputs.get("register") or {}).get("Output")
    if registered:
        decided["registered_version"] = str(registered)
    return decided


def notify_run_end(cfg: KfopsConfig, record: dict[str, Any] | None, on_event: Any) -> None:
    """Send the run's end to ``notify.webhook_url`` when it is one of ``notify.events``; a webhook
    that fails or is slow is reported through ``on_event``, never raised."""
    from kfops.core.notifications import run_events, run_message

    if record is None or cfg.notify.webhook_url is None:
        return
    events = [e for e in run_events(record["state"], record.get("decision") or {}) if e in cfg.notify.events]
    if not events:
        return
    from kfops.adapters.notify_webhook import send

    send(cfg.notify, run_message(cfg.project, cfg.registry.model_name, record, events, outcome(record)), on_event)
