"""Local retention: what `retention` in the config lets go from data_dir, after each local run and
with `kfops prune`.

Removed when older than ``retention.run_days`` (by the newest file written in them): a pipeline
run's folder under ``<data_dir>/pipeline_root``, except the ``retention.keep_newest_runs`` newest;
a step's scratch folder for a run (``<data_dir>/work/<step>/<run>``: the drift step's windows,
torch checkpoints a retry resumes from); a run's own log, compiled YAML and record
(``<pipeline>-<time>-<pid>-<hex>.log|yaml|json``; the latest ``compiled/<pipeline>.yaml`` stays).
With ``retention.inference_log_days``, the local inference log's ``date=`` partitions older than
that. The registry, its artifacts, the audit trail, drift references and validation baselines are
never touched.

A folder is first renamed to a hidden name, then deleted: two runs pruning at once never both
delete one folder, and a reader sees the folder whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

DAY_S = 86400.0
RUN_FILE = re.compile(r"^[\w.-]+-\d{8}-\d{6}-\d{6}-\d+-[0-9a-f]{6}\.(log|yaml|json)$")  # runners.local.run_log_path
REMOVING = ".removing-"


@dataclass
class Pruned:
    """What a prune removed (or, on a dry run, would remove)."""

    runs: list[Path] = field(default_factory=list)
    work: list[Path] = field(default_factory=list)
    run_files: list[Path] = field(default_factory=list)
    log_days: list[Path] = field(default_factory=list)
    bytes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [*self.runs, *self.work, *self.run_files, *self.log_days]

    def summary(self) -> str:
        parts = [f"{len(self.runs)} run folder(s)" if self.runs else "",
                 f"{len(self.work)} step scratch folder(s)" if self.work else "",
                 f"{len(self.run_files)} run log/YAML/record file(s)" if self.run_files else "",
                 f"{len(self.log_days)} day(s) of the inference log" if self.log_days else ""]
        return ", ".join(p for p in parts if p) + f" ({self.bytes / 1e6:,.1f} MB)"


def prune_local_state(cfg: KfopsConfig, *, now: float | None = None, dry_run: bool = False,
                      run_days: int | None = None) -> Pruned:
    """Remove what ``cfg.retention`` lets go (``run_days`` overrides ``retention.run_days``).
    A path that cannot be removed is reported in ``errors``, never raised."""
    now = time.time() if now is None else now
    keep_days = cfg.retention.run_days if run_days is None else run_days
    pruned = Pruned()
    log_location = cfg.inference_log_location
    local_log = None if str(log_location).startswith("s3://") else Path(log_location)
    work = cfg.data_dir / "work"
    work_steps = sorted(p for p in work.iterdir() if p.is_dir()) if work.is_dir() else []
    run_file_folders = (cfg.data_dir / "logs", cfg.data_dir / "compiled", cfg.data_dir / "runs")
    for folder in (cfg.pipeline_root, *work_steps, *run_file_folders, local_log):
        _finish_interrupted_removals(folder, pruned, dry_run)
    if keep_days is not None:
        cutoff = now - keep_days * DAY_S
        runs = sorted(_run_folders(cfg.pipeline_root), key=_mtime, reverse=True)
        for folder in runs[cfg.retention.keep_newest_runs:]:
            if _untouched_since(folder, cutoff):
                _remove(folder, pruned, pruned.runs, dry_run)
        for step in work_steps:
            for folder in sorted(_run_folders(step)):
                if _untouched_since(folder, cutoff):
                    _remove(folder, pruned, pruned.work, dry_run)
        for folder in run_file_folders:
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                if RUN_FILE.match(path.name) and path.is_file() and _mtime(path) < cutoff:
                    _remove(path, pruned, pruned.run_files, dry_run)
    if cfg.retention.inference_log_days is not None and local_log is not None:
        from kfops.serving.runtime.inference_log import PARTITION_PREFIX

        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        first_kept = today - dt.timedelta(days=cfg.retention.inference_log_days)  # today's is open: never
        for folder in sorted(local_log.glob(f"{PARTITION_PREFIX}*")) if local_log.is_dir() else []:
            try:
                day = dt.date.fromisoformat(folder.name[len(PARTITION_PREFIX):])
            except ValueError:
                continue  # not one of ours
            if day < first_kept:
                _remove(folder, pruned, pruned.log_days, dry_run)
    return pruned


def _run_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [folder for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith(".")]


def _untouched_since(folder: Path, cutoff: float) -> bool:
    """Nothing in ``folder`` was written after ``cutoff`` (a running run writes now). Only an old
    folder is walked: a run folder's own time moves with each task it starts."""
    if _mtime(folder) >= cutoff:
        return False
    for dirpath, dirnames, filenames in os.walk(folder):
        if any(_mtime(Path(dirpath) / name) >= cutoff for name in (*dirnames, *filenames)):
            return False
    return True


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum((Path(d) / f).lstat().st_size for d, _, files in os.walk(path) for f in files)


def _remove(path: Path, pruned: Pruned, into: list[Path], dry_run: bool) -> None:
    try:
        size = _size(path)
        if not dry_run:
            hidden = path.with_name(f"{REMOVING}{uuid.uuid4().hex[:8]}-{path.name}")
            path.rename(hidden)  # another prune that got here first: FileNotFoundError, skipped
            _delete(hidden)
    except FileNotFoundError:
        return
    except OSError as err:
        pruned.errors.append(f"{path}: {err}")
        return
    into.append(path)
    pruned.bytes += size


def _delete(path: Path) -> None:
    """Delete a renamed file or folder; what a concurrent delete took first is no error."""
    def gone_already(function, name, error) -> None:
        error = error[1] if isinstance(error, tuple) else error  # onerror's exc_info, onexc's exception
        if not isinstance(error, FileNotFoundError):
            raise error

    if path.is_dir() and not path.is_symlink():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=gone_already)
        else:
            shutil.rmtree(path, onerror=gone_already)
    else:
        path.unlink(missing_ok=True)


def _finish_interrupted_removals(folder: Path | None, pruned: Pruned, dry_run: bool) -> None:
    """Delete what an earlier prune renamed but could not delete (killed, or a file it could not
    remove then)."""
    if dry_run or folder is None or not folder.is_dir():
        return
    for path in folder.glob(f"{REMOVING}*"):
        try:
            _delete(path)
        except OSError as err:
            pruned.errors.append(f"{path}: {err}")
