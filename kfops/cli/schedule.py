"""`kfops schedule ...`: recurring runs on Kubeflow Pipelines, or a local scheduler process."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kfops.cli.options import (
    ConfigOption,
    ExperimentOption,
    HostOption,
    NamespaceOption,
    SetOption,
    cli_config,
)
from kfops.cli.runs import _connect

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

app = typer.Typer(
    help="Recurring runs: a KFP recurring run on a cluster, or a local scheduler (--local).\n\n"
         "Examples:\n\n  kfops schedule retraining --cron '0 3 * * *'\n\n"
         "  kfops schedule retraining --local --cron '0 3 * * *'\n\n  kfops schedule list\n\n"
         "  kfops schedule delete 7a0c...",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """Keeps the subcommands when this app runs on its own."""


def _schedule(
    pipeline: str,
    cron: str,
    experiment: str | None,
    name: str | None,
    local: bool,
    max_runs: int | None,
    max_seconds: float | None,
    window_days: int | None,
    host: str | None,
    namespace: str | None,
    config: Path | None,
    set_: list[str] | None,
) -> None:
    from kfops.core.cron import check_cron

    if max_seconds is not None and max_seconds <= 0:
        raise typer.BadParameter(f"{max_seconds} is not above 0", param_hint="'--max-seconds'")
    if not local and (max_runs is not None or max_seconds is not None):
        raise typer.BadParameter("--max-runs and --max-seconds are the local scheduler's; add --local")
    if not local and window_days is not None and pipeline != "retraining":
        raise typer.BadParameter(
            f"a KFP recurring run of '{pipeline}' trains on the config's window; for a moving window schedule "
            "'retraining' with --window-days (retrain.mode: scheduled retrains on a clock), or add --local",
            param_hint="'--window-days'")
    cron = check_cron(cron)  # before the banner, and before anything is compiled, contacted or uploaded
    cfg = cli_config(config, set_)
    if local:
        _schedule_locally(pipeline, cron, cfg, max_runs, max_seconds, window_days)
        return
    if window_days is not None:  # each run's window is set in the pipeline (its `window` task): check it can be
        import datetime as dt

        from kfops.core.windows import window_before

        window_before(cfg, window_days, dt.datetime.now(dt.UTC)).check_required()
    from kfops.adapters import kfp_api
    from kfops.adapters.mlflow_registry import code_version
    from kfops.cli.runs import compile_to

    kfp_api.require_cluster_config(cfg)  # before anything is contacted or uploaded
    endpoint, client = _connect(cfg, host, namespace)
    with tempfile.TemporaryDirectory(prefix="kfops-schedule-") as folder:
        package = compile_to(cfg, pipeline, Path(folder))
        info = kfp_api.pipeline_info(package)
        created = kfp_api.create_schedule(
            client, endpoint, package, kfp_api.version_name(info["name"], code_version(), package),
            experiment or cfg.registry.experiment, name or kfp_api.default_schedule_name(pipeline, cron), cron,
            service_account=cfg.cluster.service_account, pipeline_root=cfg.cluster.pipeline_root,
            parameters=None if window_days is None else {"window_days": window_days},
        )
    window = "the config's dataset window" if window_days is None else f"the {window_days} days before each run's day"
    typer.echo(f"recurring run {created.recurring_run_id} '{created.name}': cron '{created.cron}' "
               f"(KFP, seconds first) over {window}, pipeline version {created.version_id}")


def _schedule_locally(pipeline: str, cron: str, cfg: KfopsConfig, max_runs: int | None, max_seconds: float | None,
                      window_days: int | None) -> None:
    import datetime as dt

    from kfops.core.windows import window_before
    from kfops.errors import EXIT_INTERRUPTED
    from kfops.runners.scheduler import INTERRUPTED, default_run_function, run_scheduler, scheduler_dir

    # A run missing its dataset keys would fail at every tick: say so now (a moving window sets start and end).
    (cfg if window_days is None else window_before(cfg, window_days, dt.datetime.now(dt.UTC))).check_required()
    run = default_run_function(cfg, pipeline, window_days=window_days)
    log_dir = scheduler_dir(cfg)
    window = "the config's dataset window" if window_days is None else f"the {window_days} days before each run's day"
    typer.echo(f"local scheduler: '{pipeline}' on '{cron}' over {window} (log: {log_dir / f'{pipeline}.jsonl'}); "
               "Ctrl-C stops it")
    result = run_scheduler(cron, run, log_dir, max_runs=max_runs, max_seconds=max_seconds, name=pipeline,
                           on_event=_print_event)
    typer.echo(f"stopped ({result.stop_reason}): {result.runs} runs, {result.failures} failed, "
               f"{result.skipped} skipped")
    if result.stop_reason == INTERRUPTED:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)


def _print_event(event: dict) -> None:
    details = {k: v for k, v in event.items() if k not in {"at", "event", "traceback"}}
    typer.echo(f"  {event['at']} {event['event']} {json.dumps(details, default=str)}")


# `schedule retraining` and `schedule training` take the same options: they are declared once
# here, and each pipeline's command is this signature with its own name, help and cron help.
def _schedule_command(pipeline: str, doc: str, cron_help: str) -> Callable[..., None]:
    def command(
        cron: str,  # annotated below: its help differs per pipeline
        experiment: ExperimentOption = None,
        name: Annotated[str | None, typer.Option("--name", help="Recurring run name.")] = None,
        local: Annotated[bool, typer.Option("--local", help="Run a local scheduler process instead of KFP.")] = False,
        max_runs: Annotated[int | None, typer.Option(min=1, help="--local: stop after this many runs.")] = None,
        max_seconds: Annotated[float | None, typer.Option(help="--local: stop after this many seconds.")] = None,
        window_days: Annotated[int | None, typer.Option(
            min=1, help="Each run checks and trains on the N whole days before the day it starts "
                        "(validation.window_timezone), not the config's fixed dataset.start..end; on KFP, "
                        "retraining only (the day of the run's scheduled time).")] = None,
        host: HostOption = None,
        namespace: NamespaceOption = None,
        config: ConfigOption = None,
        set_: SetOption = None,
    ) -> None:
        _schedule(pipeline, cron, experiment, name, local, max_runs, max_seconds, window_days, host, namespace, config,
                  set_)

    # Annotations are strings here (``from __future__ import annotations``) that typer resolves in
    # the module's globals, where ``cron_help`` does not exist: give ``cron`` its type as an object.
    command.__annotations__["cron"] = Annotated[str, typer.Option("--cron", help=cron_help)]
    command.__name__ = pipeline
    command.__doc__ = doc
    return app.command(pipeline)(command)


retraining = _schedule_command(
    "retraining",
    """Schedule the retraining pipeline.

    Examples:

      kfops schedule retraining --cron "0 3 * * *" --experiment nightly

      kfops schedule retraining --local --cron "*/30 * * * *" --max-runs 4

      kfops schedule retraining --local --cron "0 3 * * *" --window-days 14
    """,
    cron_help="5-field cron (min hour dom month dow), UTC; 6 fields put seconds first.",
)
training = _schedule_command(
    "training",
    """Schedule the training pipeline.

    Example:

      kfops schedule training --cron "0 4 * * 1"
    """,
    cron_help="5-field cron, UTC; 6 fields put seconds first.",
)


@app.command("list")
def list_(
    host: HostOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """List recurring runs on the KFP endpoint.

    Example:

      kfops schedule list --namespace team-a
    """
    from kfops.adapters import kfp_api

    cfg = cli_config(config, set_)
    endpoint, client = _connect(cfg, host, namespace)
    rows = kfp_api.list_schedules(client, endpoint.namespace)
    if not rows:
        typer.echo("no recurring runs")
    for row in rows:
        window = "" if row.get("window_days") is None else f"  (window: the {int(row['window_days'])} days before each run)"
        typer.echo(f"{row['recurring_run_id']}  {row['mode']:<8} {row['cron'] or '-':<16} {row['name']}{window}")


@app.command("delete")
def delete(
    recurring_run_id: Annotated[str, typer.Argument(help="Recurring run id (from `kfops schedule list`).")],
    host: HostOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Delete a recurring run (runs it already started are kept).

    Example:

      kfops schedule delete 7a0c1b2d-...
    """
    from kfops.adapters import kfp_api

    cfg = cli_config(config, set_)
    _, client = _connect(cfg, host, namespace)
    kfp_api.delete_schedule(client, recurring_run_id)
    typer.echo(f"deleted recurring run {recurring_run_id}")
