"""Compile pipelines to KFP IR YAML and run that YAML with ``kfp.local`` (the embedded default).

What runs locally is the compiled file a cluster would get, not the Python function.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kfops.adapters.kfp_local import (
    EXECUTOR_OUTPUT,
    compile_pipeline,
    failed_task_in,
    run_compiled,
)
from kfops.config import KfopsConfig, env_name
from kfops.core.files import atomic_write_bytes
from kfops.core.signals import raising_interrupt
from kfops.errors import EXIT_INTERRUPTED, HINT_NOTE, ConfigError, KfopsError, PipelineFailed
from kfops.progress import PLAIN_LINE
from kfops.runners import run_records

# The runner sends the run's end to notify.webhook_url itself (run_records.notify_run_end), with
# the whole run's outcome; a task holding it would send its own too (the retraining exit handler's
# "failed"), so the user would hear of one failure twice. On a cluster the tasks are the notifiers.
RUNNER_ONLY_VARIABLES = (env_name("notify.webhook_url"),)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
POLL_S = 0.25  # how often the run folder is looked at


@dataclass
class LocalRun:
    name: str
    run_dir: Path | None
    compiled: Path
    log_path: Path
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)


class RunInterrupted(KfopsError):
    """Ctrl-C (SIGINT) stopped a local run: not a failed task, though its task died of it too."""

    exit_code = EXIT_INTERRUPTED


@dataclass(frozen=True)
class TaskEvent:
    """A task of a local run ``started``, ``finished``, ``failed`` or ``interrupted``; ``seconds`` since
    it was seen starting."""

    task: str
    state: Literal["started", "finished", "failed", "interrupted"]
    seconds: float | None = None

    def __str__(self) -> str:
        if self.seconds is None:
            return f"task '{self.task}' {self.state}"
        return f"task '{self.task}' {self.state} {'in' if self.state == 'finished' else 'after'} {self.seconds:.1f}s"


class RunWatcher:
    """Follow a kfp.local run through the files it writes under the pipeline root.

    The run's folder is named by ``run_name`` (what kfp.local called this run, None until it
    started: another run beside it on the same pipeline root is never taken for it); a task
    folder in it means the task started, its executor output that it finished. A task whose only
    outputs are returned values gets its folder when it finishes, so it is reported finished
    without a start. :meth:`poll` looks once; :meth:`start` polls every ``interval_s`` (default
    ``POLL_S``) on a thread until :meth:`stop`.
    """

    def __init__(self, pipeline_root: Path, run_name: Callable[[], str | None], on_task: Callable[[TaskEvent], None],
                 interval_s: float | None = None) -> None:
        self.pipeline_root = pipeline_root
        self.run_name = run_name
        self.on_task = on_task
        self.interval_s = POLL_S if interval_s is None else interval_s
        self.run_dir: Path | None = None
        self.started: dict[str, float] = {}  # task -> when it was seen starting (monotonic)
        self.finished: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        with self._lock:
            if self.run_dir is None:
                self.run_dir = self._find_run_dir()
                if self.run_dir is None:
                    return
            seen = [p for p in self.run_dir.iterdir() if p.is_dir() and p.name not in self.finished]
            outputs = {p.name: p / EXECUTOR_OUTPUT for p in seen}
            done = {name: path.stat().st_mtime for name, path in outputs.items() if path.is_file()}
            # Tasks run one at a time: the ones that finished first, in the order they finished.
            for task in sorted(outputs, key=lambda name: (name not in done, done.get(name, 0.0), name)):
                if task not in self.started:
                    if task in done:  # it started and finished between two looks, or had no folder till the end
                        self._finish(task, seconds=None)
                        continue
                    self.started[task] = time.monotonic()
                    self.on_task(TaskEvent(task, "started"))
                if task in done:
                    self._finish(task, seconds=time.monotonic() - self.started[task])

    def running(self) -> list[str]:
        """Tasks seen starting that have not finished: after a failed run, the task that failed."""
        with self._lock:
            return [task for task in self.started if task not in self.finished]

    def start(self) -> RunWatcher:
        self._thread = threading.Thread(target=self._loop, name="kfops-run-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, after one last look (the last task's output lands as the run returns)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            self.poll()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            with contextlib.suppress(OSError):  # a folder moved or half-written: look again next time
                self.poll()

    def _find_run_dir(self) -> Path | None:
        name = self.run_name()
        folder = None if name is None else self.pipeline_root / name
        return folder if folder is not None and folder.is_dir() else None

    def _finish(self, task: str, seconds: float | None) -> None:
        self.finished.append(task)
        self.on_task(TaskEvent(task, "finished", seconds))


class _ProgressTee(io.TextIOBase):
    """Send everything to the run log; show kfops' own lines and the tasks' progress lines on the console."""

    def __init__(self, log_file, on_event: Callable[[str], None]):
        self.log_file = log_file
        self.on_event = on_event
        self.buffer_text = ""
        self.lock = threading.RLock()  # the watcher thread writes task events to the same log

    def write(self, text: str) -> int:
        with self.lock:
            self.log_file.write(text)
            self.buffer_text += text
            while "\n" in self.buffer_text:
                line, self.buffer_text = self.buffer_text.split("\n", 1)
                clean = _ANSI.sub("", line).strip()
                # Not a traceback's first line alone: the run's error names the task's exception and its hint.
                # Not the exit handler's executor input either, whose JSON holds `"state": "FAILED",`.
                if clean.startswith("kfops:") or ("FAILED" in clean and not clean.startswith(('"', "{"))):
                    self.on_event(clean)
                elif (step := PLAIN_LINE.search(clean)) is not None:  # a task's own progress (epochs, rounds)
                    self.on_event(step.group(0))
        return len(text)

    def flush(self) -> None:
        with self.lock:
            self.log_file.flush()


# What a local run's task zygote imports once for all its tasks (kfops.adapters.kfp_zygote), in the
# order the pipeline's tasks first need them: a task forked while the zygote is still importing
# imports the rest itself. ``module:function`` is called (Feast is imported kfops' faster way).
_EXECUTOR = ("kfp.dsl.executor", "kfp.dsl.kfp_config", "kfp.dsl.utils", "pandas", "pyarrow.parquet",
             "kfops.config", "kfops.steps.common")
_TRAINING = ("kfops.steps.ingest", "kfops.steps.validate", "great_expectations", "kfops.adapters.gx_validation",
             "kfops.steps.featurize", "kfops.adapters.feast_store:import_feast", "duckdb", "ibis",
             "kfops.steps.train", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "kfops.adapters.mlflow_registry",
             "xgboost", "kfops.training.xgb", "git", "kfops.steps.evaluate", "kfops.core.evaluation",
             "matplotlib.pyplot", "kfops.reports.plots", "kfops.steps.register", "kfops.steps.deploy")
TASK_PRELOAD: dict[str, tuple[str, ...]] = {
    "training": _EXECUTOR + _TRAINING,
    "retraining": (*_EXECUTOR, "kfops.steps.drift_check", "evidently", "kfops.adapters.evidently_report", *_TRAINING),
}


def task_preload(cfg: KfopsConfig, name: str) -> tuple[str, ...]:
    """What the zygote of a local run of pipeline ``name`` imports: the dataset's own modules too."""
    dataset = tuple(dict.fromkeys(
        spec.partition(":")[0] for spec in (cfg.dataset.loader, cfg.dataset.entity_builder,
                                             cfg.dataset.feast_sources_writer) if spec))
    common = TASK_PRELOAD.get(name, _EXECUTOR)
    return common[:len(_EXECUTOR)] + dataset + common[len(_EXECUTOR):]


def task_preload_first(cfg: KfopsConfig, name: str) -> int:
    """How many of :func:`task_preload`'s entries every task imports: no task is forked before them."""
    return len(task_preload(cfg, name)) - len(TASK_PRELOAD.get(name, _EXECUTOR)) + len(_EXECUTOR)


def run_log_path(logs: Path, name: str, now: dt.datetime | None = None) -> Path:
    """``<name>-<local time to the microsecond>-<pid>-<random>.log``: sorts by start time, and two runs
    started at the same moment (two processes, or a scheduler and a person) never share a log."""
    now = now or dt.datetime.now()
    return logs / f"{name}-{now:%Y%m%d-%H%M%S-%f}-{os.getpid()}-{secrets.token_hex(3)}.log"


def _create_run_log(logs: Path, name: str):
    """A new, empty run log: its path and the open file (never an existing log, even by chance)."""
    while True:
        path = run_log_path(logs, name)
        try:
            return path, open(path, "x")  # the caller closes it (its with-block)
        except FileExistsError:
            continue


def run_locally(
    cfg: KfopsConfig,
    name: str = "training",
    on_event: Callable[[str], None] | None = None,
    on_task: Callable[[TaskEvent], None] | None = None,
    runner: str = "subprocess",
) -> LocalRun:
    """Compile ``name`` for ``cfg``, load the YAML back and run it with kfp.local's SubprocessRunner.

    ``on_task`` gets each task's start and end, seen in the run folder from a watcher thread;
    without it they go to ``on_event`` as lines. ``on_event`` gets kfops' lines and the tasks' own
    progress lines from their output, and the task lines when ``on_task`` is not given: it may be
    called from the watcher thread, so it should write to a stream of its own, not ``sys.stdout``
    (the run log while the run lasts). Default: the console's stderr.

    Raises :class:`RunInterrupted` (exit 130) when SIGINT arrives while the pipeline runs, once the
    run's processes are gone; :class:`PipelineFailed` when a task fails.
    """
    console_out, console_err = sys.stdout, sys.stderr
    on_event = on_event or (lambda line: print(line, file=console_err, flush=True))
    if runner == "docker":
        from kfops.runners import containers

        cfg = containers.docker_run_config(cfg)
    elif runner != "subprocess":
        raise ConfigError(f"unknown runner '{runner}'", hint="choose subprocess (default) or docker")
    logs = cfg.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path, log_file = _create_run_log(logs, name)
    record = run_records.start_record(cfg, name, log_path, runner)
    started = time.perf_counter()

    def ended(state: str, **fields: Any) -> None:  # the record, and the webhook when one is configured
        run_records.notify_run_end(cfg, run_records.end_record(record, state, **fields), on_event)

    try:
        run = _run_logged(cfg, name, runner, log_path, log_file, on_event, on_task, console_out, console_err)
    except (RunInterrupted, PipelineFailed) as err:
        failed_run = getattr(err, "run", None)
        ended(run_records.INTERRUPTED if isinstance(err, RunInterrupted) else run_records.FAILED,
              seconds=time.perf_counter() - started, run_dir=failed_run.run_dir if failed_run else None,
              outputs=failed_run.outputs if failed_run else None, failed_task=getattr(err, "failed_task", None),
              error=str(err))
        raise
    except BaseException as err:  # the run could not start (its config, its compile), Ctrl-C then, or kfops broke
        ended(run_records.INTERRUPTED if isinstance(err, KeyboardInterrupt) else run_records.FAILED,
              seconds=time.perf_counter() - started, error=f"{type(err).__name__}: {err}".rstrip(": "))
        raise
    ended(run_records.SUCCEEDED, seconds=run.seconds, run_dir=run.run_dir, outputs=run.outputs, compiled=run.compiled)
    return run


def _run_logged(cfg: KfopsConfig, name: str, runner: str, log_path: Path, log_file: Any,
                on_event: Callable[[str], None], on_task: Callable[[TaskEvent], None] | None,
                console_out: Any, console_err: Any) -> LocalRun:
    """The part of :func:`run_locally` after its log and record exist."""
    docker_args = None
    # Each run compiles to a file of its own (named like its log) and runs that: runs started
    # together on one data dir would otherwise read each other's half-written YAML. The latest
    # is also kept as compiled/<name>.yaml, replaced atomically.
    compiled = compile_pipeline(cfg, name, cfg.data_dir / "compiled" / f"{log_path.stem}.yaml")
    atomic_write_bytes(cfg.data_dir / "compiled" / f"{name}.yaml", compiled.read_bytes())
    cfg.pipeline_root.mkdir(parents=True, exist_ok=True)
    if runner == "docker":
        from kfops.runners import containers

        docker_args = containers.docker_runner_args(cfg)
    started = time.perf_counter()
    error: BaseException | None = None
    interrupts: list[int] = []  # SIGINT seen while the pipeline ran

    def on_console(line: str) -> None:
        if interrupts:  # what dies of Ctrl-C prints tracebacks: the run log keeps them, the console says why
            return
        # The tee owns stdout while the run lasts: show progress on the real console.
        with contextlib.redirect_stdout(console_out), contextlib.redirect_stderr(console_err):
            on_event(line)

    with log_file:
        tee = _ProgressTee(log_file, on_console)

        def task_event(event: TaskEvent) -> None:
            with tee.lock:
                log_file.write(f"kfops: {event}\n")
                log_file.flush()
                if on_task is not None:
                    on_task(event)
                else:
                    on_event(str(event))

        names: list[str] = []  # kfp.local's name for this run, once it started
        watcher = RunWatcher(cfg.pipeline_root, lambda: names[0] if names else None, task_event).start()
        try:
            with raising_interrupt(signal.SIGINT, interrupts), contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
                try:
                    # Tasks resolve the compiled config's relative paths where this config did.
                    run_compiled(compiled, cfg.pipeline_root, project_dir=cfg.resolved_against or Path.cwd(),
                                 docker_args=docker_args,
                                 preload=task_preload(cfg, name) if docker_args is None else None,
                                 preload_first=task_preload_first(cfg, name), on_run_name=names.append,
                                 withheld=RUNNER_ONLY_VARIABLES)
                except RuntimeError as err:  # kfp.local reports a failed task as RuntimeError
                    error = err
        except KeyboardInterrupt:  # run_compiled's cleanup ran: the zygote and the run's scratch are gone
            interrupts.append(signal.SIGINT)
        finally:
            watcher.stop()
        failed = None
        if error is not None or interrupts:
            running = watcher.running()
            failed = running[-1] if running else failed_task_in(error) if error is not None else None
            if failed is not None:
                seen = watcher.started.get(failed)
                task_event(TaskEvent(failed, "interrupted" if interrupts else "failed",
                                     None if seen is None else time.monotonic() - seen))
        if interrupts:
            log_file.write("kfops: interrupted (SIGINT)\n")
    apply_retention(cfg, on_event)
    run_dir = watcher.run_dir  # None when no task wrote anything
    run = LocalRun(name=name, run_dir=run_dir, compiled=compiled, log_path=log_path,
                   seconds=time.perf_counter() - started, outputs=collect_outputs(run_dir) if run_dir else {})
    if interrupts:
        where = f" in task '{failed}'" if failed else ""
        stopped = RunInterrupted(f"interrupted: pipeline '{name}' stopped{where} after {run.seconds:.1f}s "
                                 "(Ctrl-C); the tasks after it did not run",
                                 hint=f"`kfops run {name}` starts it again from the first task; full log: {log_path}")
        stopped.run, stopped.failed_task = run, failed  # type: ignore[attr-defined]  # for the run's record
        raise stopped
    if error is not None:
        task_hint = _task_error(log_path)[1]
        failure = PipelineFailed(_failure_message(run, error, failed),
                                 hint=f"{task_hint}; full log: {log_path}" if task_hint else f"full log: {log_path}")
        failure.run, failure.failed_task = run, failed  # type: ignore[attr-defined]  # for the run's record
        raise failure from error
    return run


def apply_retention(cfg: KfopsConfig, on_event: Callable[[str], None]) -> None:
    """Let go of old runs' files (``retention``); says what went, and what could not, never fails the run."""
    from kfops.runners.retention import prune_local_state

    pruned = prune_local_state(cfg)
    if pruned.paths:
        on_event(f"kfops: retention removed {pruned.summary()}, older than the config's `retention` keeps")
    for problem in pruned.errors:
        on_event(f"kfops: retention could not remove {problem}")


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
        executor_output = task_dir / EXECUTOR_OUTPUT
        if executor_output.is_file():
            data = json.loads(executor_output.read_text())
            items.update(data.get("parameterValues", {}))
        for child in task_dir.iterdir():
            if child.name != EXECUTOR_OUTPUT and child.name not in items:
                items[child.name] = str(child)
        outputs[task_dir.name] = items
    return outputs


def _failure_message(run: LocalRun, error: BaseException, failed: str | None) -> str:
    summary = None
    if run.run_dir is not None:
        summary_path = run.run_dir / "validate" / "summary"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
    if summary is not None and not summary.get("success", True):
        from kfops.adapters.gx_validation import observed_text

        failures = summary.get("failures", [])
        names = [f"{f.get('table')}.{f.get('expectation')}({f.get('column') or ''})" for f in failures]
        shown = [f"\n  {f.get('table')}{'.' + str(f['column']) if f.get('column') else ''}: {observed_text(f)}"
                 for f in failures[:8]]
        more = f"\n  and {len(failures) - 8} more" if len(failures) > 8 else ""
        return f"validation failed, nothing was trained or registered: {'; '.join(names[:8])}{''.join(shown)}{more}"
    where = f" in task '{failed}'" if failed else ""
    cause = _task_error(run.log_path)[0] or _ANSI.sub("", str(error)).strip().splitlines()[-1]
    return f"pipeline '{run.name}' failed{where}: {cause[:400]}"


_TASK_ERROR = re.compile(r"^\s*(?:kfops\.errors\.)?(\w+(?:Error|Failed)): (.+)$")


def _task_error(log_path: Path) -> tuple[str | None, str | None]:
    """The exception a failed task raised and its hint, from the run log (the task ran in another process)."""
    try:
        lines = _ANSI.sub("", log_path.read_text()).splitlines()
    except OSError:
        return None, None
    for index in range(len(lines) - 1, -1, -1):
        found = _TASK_ERROR.match(lines[index])
        if found and found.group(1) != "RuntimeError":
            after = lines[index + 1].strip() if index + 1 < len(lines) else ""
            hint = after.removeprefix(HINT_NOTE) if after.startswith(HINT_NOTE) else None
            return f"{found.group(1)}: {found.group(2).strip()}", hint
    return None, None
