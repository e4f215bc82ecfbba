"""Compile pipelines to KFP IR YAML and run that YAML with ``kfp.local`` (the embedded default).

What runs locally is the compiled file a cluster would get, not the Python function.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfops.config import KfopsConfig
from kfops.errors import PipelineFailed
from kfops.progress import PLAIN_LINE

_TASK_EVENT = re.compile(r"Task '?(\S+?)'? (finished with status|.*Executing task)|Executing task '?(\S+?)'?$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class LocalRun:
    name: str
    run_dir: Path | None
    compiled: Path
    log_path: Path
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)


class _ProgressTee(io.TextIOBase):
    """Send everything to the run log; show the task events on the console."""

    def __init__(self, log_file, on_event: Callable[[str], None]):
        self.log_file = log_file
        self.on_event = on_event
        self.buffer_text = ""

    def write(self, text: str) -> int:
        self.log_file.write(text)
        self.buffer_text += text
        while "\n" in self.buffer_text:
            line, self.buffer_text = self.buffer_text.split("\n", 1)
            clean = _ANSI.sub("", line).strip()
            if "finished with status" in clean or clean.startswith("Executing task") or "Pipeline '" in clean:
                self.on_event(clean.split(" - INFO - ")[-1])
            elif clean.startswith("kfops:") or "FAILED" in clean or "Traceback" in clean:
                self.on_event(clean)
            elif (step := PLAIN_LINE.search(clean)) is not None:  # a task's own progress (epochs, rounds)
                self.on_event(step.group(0))
        return len(text)

    def flush(self) -> None:
        self.log_file.flush()


def run_locally(cfg: KfopsConfig, name: str = "training", on_event: Callable[[str], None] | None = None) -> LocalRun:
    """Compile ``name`` for ``cfg``, load the YAML back and run it with kfp.local's SubprocessRunner."""
    from kfops.adapters.kfp_local import compile_pipeline, run_compiled

    on_event = on_event or (lambda line: print(line, file=sys.stderr))
    compiled = compile_pipeline(cfg, name, cfg.data_dir / "compiled" / f"{name}.yaml")
    cfg.pipeline_root.mkdir(parents=True, exist_ok=True)
    logs = cfg.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    before = set(cfg.pipeline_root.iterdir())
    started = time.perf_counter()
    error: BaseException | None = None
    console_out, console_err = sys.stdout, sys.stderr

    def on_console(line: str) -> None:
        # The tee owns stdout while the run lasts: show progress on the real console.
        with contextlib.redirect_stdout(console_out), contextlib.redirect_stderr(console_err):
            on_event(line)

    with open(log_path, "w") as log_file:
        tee = _ProgressTee(log_file, on_console)
        with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
            try:
                run_compiled(compiled, cfg.pipeline_root)
            except RuntimeError as err:  # kfp.local reports a failed task as RuntimeError
                error = err
    new_dirs = sorted(set(cfg.pipeline_root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    run_dir = new_dirs[-1] if new_dirs else None
    run = LocalRun(name=name, run_dir=run_dir, compiled=compiled, log_path=log_path,
                   seconds=time.perf_counter() - started, outputs=collect_outputs(run_dir) if run_dir else {})
    if error is not None:
        raise PipelineFailed(_failure_message(run, error), hint=f"full log: {log_path}") from error
    return run


def _read_parameter(path: Path) -> Any:
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def collect_outputs(run_dir: Path) -> dict[str, Any]:
    """Task outputs of a local run: ``{task: {output: value or path}}``."""
    outputs: dict[str, Any] = {}
    for task_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        items: dict[str, Any] = {}
        executor_output = task_dir / "executor_output.json"
        if executor_output.is_file():
            data = json.loads(executor_output.read_text())
            items.update(data.get("parameterValues", {}))
        for child in task_dir.iterdir():
            if child.name != "executor_output.json" and child.name not in items:
                items[child.name] = str(child)
        outputs[task_dir.name] = items
    return outputs


def _failure_message(run: LocalRun, error: BaseException) -> str:
    try:
        log_text = _ANSI.sub("", run.log_path.read_text())
    except OSError:
        log_text = ""
    failed = re.findall(r"Task '?([\w-]+)'? finished with status FAILURE", log_text + _ANSI.sub("", str(error)))
    summary = None
    if run.run_dir is not None:
        summary_path = run.run_dir / "validate" / "summary"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
    if summary is not None and not summary.get("success", True):
        names = [f"{f.get('table')}.{f.get('expectation')}({f.get('column') or ''})" for f in summary.get("failures", [])]
        return f"validation failed, nothing was trained or registered: {'; '.join(names[:8])}"
    where = f" in task '{failed[0]}'" if failed else ""
    cause = _task_error(run.log_path) or _ANSI.sub("", str(error)).strip().splitlines()[-1]
    return f"pipeline '{run.name}' failed{where}: {cause[:400]}"


_TASK_ERROR = re.compile(r"^\s*(?:kfops\.errors\.)?(\w+(?:Error|Failed)): (.+)$")


def _task_error(log_path: Path) -> str | None:
    """The exception a failed task raised, from the run log (the task ran in another process)."""
    try:
        lines = _ANSI.sub("", log_path.read_text()).splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        found = _TASK_ERROR.match(line)
        if found and found.group(1) != "RuntimeError":
            return f"{found.group(1)}: {found.group(2).strip()}"
    return None
