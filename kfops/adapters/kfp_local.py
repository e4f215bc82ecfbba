"""KFP SDK adapter: compile pipelines and components to IR YAML, run compiled YAML with
``kfp.local``, and read a component's typed interface.

Pipelines and components live in the project's top-level ``pipelines/`` and ``components/``
folders, which are not installed packages: they are imported from :func:`project_root`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import re
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kfops.config import PROJECT_DIR_ENV
from kfops.core.files import import_callable, on_sys_path
from kfops.errors import ConfigError, KfopsError

PIPELINES = {
    "training": "pipelines.training:create_pipeline",
    "retraining": "pipelines.retraining:create_pipeline",
}
# The pipelines' steps, then the components only a user's own pipeline uses (batch scoring).
PIPELINE_STEPS = ("ingest", "validate", "featurize", "train", "evaluate", "register", "deploy", "drift")
COMPONENTS = (*PIPELINE_STEPS, "predict")
PROJECT_ENV = PROJECT_DIR_ENV  # also where a step's relative paths resolve (KfopsConfig.resolve_at_run_time)


def project_root() -> Path:
    """The folder holding ``pipelines/`` and ``components/``.

    ``$KFOPS_PROJECT_DIR`` if set, else the working directory or one above it, else the checkout
    kfops itself was installed from (an editable install).
    """
    candidates: list[Path] = []
    if os.environ.get(PROJECT_ENV):
        candidates.append(Path(os.environ[PROJECT_ENV]).expanduser())
    cwd = Path.cwd()
    candidates += [cwd, *cwd.parents, Path(__file__).resolve().parents[2]]
    for folder in candidates:
        if (folder / "pipelines" / "training.py").is_file() and (folder / "components").is_dir():
            return folder.resolve()
    raise ConfigError(
        "no kfops project here: no folder with pipelines/training.py and components/",
        hint=f"run from the project folder, or set {PROJECT_ENV}",
    )


PROJECT_PACKAGES = ("pipelines", "components")


@contextlib.contextmanager
def project_packages(root: Path) -> Iterator[None]:
    """``pipelines`` and ``components`` importable from ``root`` for the block.

    Python caches an imported package with the folder it came from: after an import from another
    project folder (a copy that may since have been deleted), ``pipelines.retraining`` would be
    looked for there. Cached project packages from elsewhere are dropped first, and the block's
    own are dropped after it, with what was cached before put back: a later plain import (of
    ``components.drift``, say) must not meet a package of a folder that is gone.
    """
    import sys

    def cached() -> dict[str, Any]:
        return {name: module for name, module in sys.modules.items() if name.split(".", 1)[0] in PROJECT_PACKAGES}

    before = cached()
    here = str(root.resolve())
    for name, module in before.items():
        locations = list(getattr(module, "__path__", []) or []) or [getattr(module, "__file__", None) or ""]
        if not all(str(Path(location).resolve()).startswith(here + os.sep) for location in locations if location):
            del sys.modules[name]
    try:
        with on_sys_path(root):
            yield
    finally:
        for name in cached():
            del sys.modules[name]
        sys.modules.update(before)


def pipeline_function(name: str, cfg: Any) -> Any:
    """The KFP pipeline function that ``pipelines/<name>.py``'s ``create_pipeline(cfg)`` builds."""
    if name not in PIPELINES:
        raise KfopsError(f"unknown pipeline '{name}'", hint=f"choose one of: {', '.join(PIPELINES)}")
    with project_packages(project_root()):
        return import_callable(PIPELINES[name])(cfg)


def component(name: str) -> Any:
    """The KFP component object of ``components/<name>/component.py``."""
    with project_packages(project_root()):
        module = importlib.import_module(f"components.{name}.component")
    return getattr(module, name)


def compile_pipeline(cfg: Any, name: str, output: Path) -> Path:
    from kfp import compiler

    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_function(name, cfg), str(output))
    return output


def compile_components(out_root: Path) -> list[Path]:
    """Compile each component to ``components/<name>/component.yaml`` so any KFP user can reuse it."""
    from kfp import compiler

    written = []
    for name in COMPONENTS:
        target = out_root / name / "component.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(component(name), str(target))
        written.append(target)
    return written


RUN_TMP_PREFIX = "kfops-run-"  # a run's $TMPDIR: what outlives the run (a served model) must not use it
# Filled by KFP's driver (2.17) in a task input whose runtime value is exactly one of these;
# kfp.local (2.17) fills neither and fails on them (placeholder_utils: IndexError).
RUN_TIME_PLACEHOLDERS = ("{{$.pipeline_job_create_time_utc}}", "{{$.pipeline_job_schedule_time_utc}}")


def fill_run_time_placeholders(compiled: Path, folder: Path, now: dt.datetime | None = None) -> Path:
    """``compiled``, or a copy in ``folder`` whose run-time placeholders hold ``now`` (RFC 3339
    UTC), as the KFP driver fills them for a one-off run (a run's schedule time is its creation
    time unless a recurring run scheduled it). Only task inputs' runtime constants change."""
    import yaml

    text = compiled.read_text()
    if not any(placeholder in text for placeholder in RUN_TIME_PLACEHOLDERS):
        return compiled
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    documents = list(yaml.safe_load_all(text))

    def fill(dag: dict[str, Any]) -> None:
        for task in (dag or {}).get("tasks", {}).values():
            for spec in task.get("inputs", {}).get("parameters", {}).values():
                runtime = spec.get("runtimeValue") or {}
                if runtime.get("constant") in RUN_TIME_PLACEHOLDERS:
                    runtime["constant"] = stamp

    for document in documents:
        if isinstance(document, dict) and "root" in document:
            fill(document["root"].get("dag"))
            for component in document.get("components", {}).values():
                fill(component.get("dag"))
    filled = folder / compiled.name
    filled.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return filled


def run_compiled(compiled: Path, pipeline_root: Path, project_dir: Path | None = None,
                 docker_args: dict[str, Any] | None = None, preload: Sequence[str] | None = None,
                 preload_first: int = 0, on_run_name: Callable[[str], None] | None = None,
                 withheld: Sequence[str] = ()) -> None:
    """Run a compiled pipeline YAML with kfp.local: each task a process of this virtualenv
    (SubprocessRunner), or with ``docker_args`` each task a container of its executor's image
    (DockerRunner; the arguments go to docker's ``containers.run``).

    The compiled config keeps relative paths relative; with ``project_dir``, subprocess tasks
    resolve them against that folder (``$KFOPS_PROJECT_DIR``, which the task processes inherit),
    else against the working directory. Containers get no project folder: they see what a pod
    sees (see :meth:`kfops.config.KfopsConfig.resolve_at_run_time`). Raises RuntimeError, as
    kfp.local does, when a task fails.

    kfp.local leaves a temporary folder behind for every task (its command's ``mktemp -d``
    holding the component's source) and one workspace per run: subprocess tasks get a
    ``$TMPDIR`` of their own for the run, removed with everything in it when the run ends
    (a container's temporary files go with the container).

    With ``preload`` (module names, or ``module:function`` to call), subprocess tasks start from a
    task zygote that imported those once for the run (:mod:`kfops.adapters.kfp_zygote`): each task
    is still a process of its own running the compiled command, forked from a warm parent instead
    of a cold interpreter; the first ``preload_first`` entries (what every task imports) are in
    before any task is forked. Its report (what it preloaded, when it forked) goes to stdout at the end.

    ``on_run_name`` is called with the name kfp.local gives this run as it starts, the name of
    its folder under ``pipeline_root``: the one way to tell it from a run that another process
    started beside it on the same pipeline root.

    ``withheld`` names variables of this process that subprocess tasks do not inherit.
    """
    import shutil
    import tempfile

    from kfp import components, local

    scratch = Path(tempfile.mkdtemp(prefix=RUN_TMP_PREFIX))  # also fixes this process's tempdir first
    try:
        changes: dict[str, str | None] = {}  # None: unset for the tasks
        if docker_args is None:
            changes.update(dict.fromkeys(withheld))
            changes["TMPDIR"] = str(scratch)
            if project_dir is not None:
                changes[PROJECT_ENV] = str(project_dir)
        with contextlib.ExitStack() as stack:
            if docker_args is None and preload is not None:  # first: it imports while kfp.local loads
                from kfops.adapters.kfp_zygote import SOCKET_ENV, serving_tasks

                task_environment = {key: value for key, value in {**os.environ, **changes}.items() if value is not None}
                socket_path = stack.enter_context(serving_tasks(scratch, preload, task_environment,
                                                                log=sys.stdout, serve_after=preload_first))
                if socket_path is not None:
                    changes[SOCKET_ENV] = socket_path
            loaded = components.load_component_from_file(str(fill_run_time_placeholders(compiled, scratch)))
            if docker_args is not None:
                local.init(runner=local.DockerRunner(**docker_args), pipeline_root=str(pipeline_root),
                           raise_on_error=True)
            else:
                workspace = scratch / "workspace"
                workspace.mkdir()
                local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
                           workspace_root=str(workspace), raise_on_error=True)
            with _run_names_to(on_run_name):
                _run_with_environment(loaded, changes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_RUN_NAME_LISTENERS: dict[int, Callable[[str], None]] = {}  # thread -> who wants its run's name


@contextlib.contextmanager
def _run_names_to(listener: Callable[[str], None] | None) -> Iterator[None]:
    """Tell ``listener`` the run name kfp.local draws in this thread. kfp.local (2.17) draws it in
    ``executor_input_utils.get_local_pipeline_resource_name`` (pipeline name + local time) and
    does not return it, so that function is wrapped, once, to pass each name to the listener of
    the thread that drew it."""
    if listener is None:
        yield
        return
    import threading

    from kfp.local import executor_input_utils

    draw = executor_input_utils.get_local_pipeline_resource_name
    if not getattr(draw, "_kfops_reports_names", False):
        def reported(pipeline_name: str) -> str:
            name = draw(pipeline_name)
            listener_of_thread = _RUN_NAME_LISTENERS.get(threading.get_ident())
            if listener_of_thread is not None:
                listener_of_thread(name)
            return name

        reported._kfops_reports_names = True  # type: ignore[attr-defined]
        executor_input_utils.get_local_pipeline_resource_name = reported
    _RUN_NAME_LISTENERS[threading.get_ident()] = listener
    try:
        yield
    finally:
        _RUN_NAME_LISTENERS.pop(threading.get_ident(), None)


def _run_with_environment(loaded: Callable[[], Any], changes: dict[str, str | None]) -> None:
    previous = {key: os.environ.get(key) for key in changes}
    for key, value in changes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        loaded()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# What kfp.local (2.17) writes while it runs a pipeline, read by kfops.runners.local to follow a
# run without parsing its log: the run's folder is ``<pipeline_root>/<run name>`` (the name
# :func:`_run_names_to` reports: ``<pipeline name>-<local time %Y-%m-%d-%H-%M-%S-%f>``), each
# task's folder ``<run>/<component name without comp->``. A Python
# component's executor creates its task folder as it starts when the task has output artifacts
# or output files (a task that only returns values gets it at the end), and writes
# EXECUTOR_OUTPUT there once its function returned: a task folder without it is running or
# failed. Tasks inside dsl.If and sub-pipelines share the run folder.
EXECUTOR_OUTPUT = "executor_output.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_INNER_FAILED = re.compile(r"Inner task failed: '?([\w.-]+)'?")


def failed_task_in(error: BaseException) -> str | None:
    """The innermost failed task named by kfp.local's RuntimeError for a failed pipeline, if any."""
    found = _INNER_FAILED.search(_ANSI.sub("", str(error)))
    return found.group(1) if found else None


def component_interface(name: str) -> tuple[Callable[..., Any], dict[str, str]]:
    """A component's Python function and each parameter's direction: ``input`` or ``output``."""
    from kfp.dsl.types.type_annotations import OutputAnnotation

    func = component(name).python_func
    hints = typing.get_type_hints(func, include_extras=True)
    directions = {}
    for pname, hint in hints.items():
        marks = typing.get_args(hint)[1:] if typing.get_origin(hint) is typing.Annotated else ()
        directions[pname] = "output" if OutputAnnotation in marks else "input"
    return func, directions
