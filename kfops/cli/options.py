"""Options the CLI's commands share, and the one way a command loads its configuration.

Every command takes ``--config/-c`` and ``--set/-s``; the cluster commands also take ``--host``,
``--namespace`` and ``--experiment``. Defining them once keeps their spelling and help the same
everywhere.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Config file (default: nearest kfops.yaml).")]
SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a key: section.key=value.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and full logs.")]
HostOption = Annotated[str | None, typer.Option("--host", help="KFP endpoint (default: cluster.kfp_host).")]
NamespaceOption = Annotated[str | None, typer.Option("--namespace", help="Kubeflow profile namespace "
                                                    "(default: cluster.namespace).")]
ExperimentOption = Annotated[str | None, typer.Option("--experiment", help="KFP experiment (default: registry.experiment).")]
WindowDaysOption = Annotated[int | None, typer.Option(
    "--window-days", min=1, help="Run over the N whole days before today (validation.window_timezone) instead "
                                 "of the config's dataset.start..end, as a run scheduled with --window-days N would.")]


def accept_verbose(app: typer.Typer) -> None:
    """Give every command of ``app`` and of its sub-apps ``--verbose/-v``: error hints say "run again
    with --verbose", so each command must accept it. What the flag does (the traceback of an error)
    is the entry point's, which reads it from the command line; commands that use it themselves
    (``run``, ``init``) declare ``VerboseOption`` and are left as they are."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = _with_verbose(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            accept_verbose(group.typer_instance)


def _with_verbose(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with a ``verbose: VerboseOption`` parameter it does not see (typer builds the
    options from the signature); ``command`` itself when it has one."""
    signature = inspect.signature(command, eval_str=True)
    if "verbose" in signature.parameters:
        return command

    @functools.wraps(command)
    def accepting_verbose(*args: Any, verbose: bool = False, **kwargs: Any) -> Any:
        return command(*args, **kwargs)

    flag = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=VerboseOption)
    accepting_verbose.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), flag])
    return accepting_verbose


def cli_config(config: Path | None, overrides: list[str] | None = None, *extra: str) -> KfopsConfig:
    """The configuration from ``--config`` (else the nearest kfops.yaml) with the ``--set`` overrides,
    then ``extra`` overrides a command derives from its own options (``--online-store``, ``--start``)."""
    from kfops.config import load_config

    return load_config(config, [*(overrides or []), *extra])


def over_window_days(cfg: KfopsConfig, window_days: int | None) -> KfopsConfig:
    """``cfg`` over the ``window_days`` whole days before now (the rule of a scheduled run's moving
    window, :func:`kfops.core.windows.window_before`); ``cfg`` itself without ``--window-days``."""
    if window_days is None:
        return cfg
    import datetime as dt

    from kfops.core.windows import window_before

    return window_before(cfg, window_days, dt.datetime.now(dt.UTC))
