"""The ``kfops`` command line. Thin runners around the package's functions.

Errors print as one line with a hint; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from kfops.cli.options import (
    ConfigOption,
    SetOption,
    VerboseOption,
    WindowDaysOption,
    accept_verbose,
    cli_config,
    over_window_days,
)
from kfops.core.redaction import redact_uri
from kfops.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_BLESSED, GateRefused, KfopsError

app = typer.Typer(
    name="kfops",
    help=(
        "MLOps on Kubeflow Pipelines: validate, featurize, train, evaluate, register and deploy.\n\n"
        "With no cluster configured, pipelines run locally with kfp.local on the embedded stack "
        "(MLflow on SQLite, Feast on DuckDB + SQLite, a local KServe ModelServer).\n\n"
        "Examples:\n\n"
        "  kfops run training\n\n"
        "  kfops run training --set train.trainer=torch --set dataset.end=2013-03-31\n\n"
        "  kfops promote 3 --reason 'better on summer months'\n\n"
        "  kfops ui\n\n"
        "Long steps show progress: a bar on a terminal, plain lines in CI, pods and pipes; "
        "KFOPS_PROGRESS=rich|plain|off chooses."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

# Sub-apps owned by feature areas; each module exposes ``app``. Missing ones are skipped so a
# partial install still starts.
SUBCOMMANDS = {
    "features": ("kfops.cli.features", (
        "Feast: materialize the online store, inspect features.\n\n"
        "Examples:\n\n  kfops features materialize\n\n  kfops features get customer_id=C1042 store=north")),
    "serve": ("kfops.cli.serve", (
        "The local model server: start, stop, status.\n\n"
        "Examples:\n\n  kfops serve start --version 3\n\n  kfops serve status\n\n  kfops serve stop")),
    "drift": ("kfops.cli.drift", (
        "Drift checks between a reference and a current dataset.\n\n"
        "Example:\n\n  kfops drift check --reference jan.parquet --current jul.parquet")),
    "config": ("kfops.cli.config_cmd", (
        "Configuration helpers: a cluster profile from Terraform outputs.\n\n"
        "Example:\n\n  kfops config from-terraform outputs.json -o kfops.cluster.yaml")),
    "schedule": ("kfops.cli.schedule", (
        "Recurring runs: on a cluster, or a local scheduler.\n\n"
        "Examples:\n\n  kfops schedule retraining --cron '0 3 * * *'\n\n  kfops schedule list")),
    "controller": ("kfops.cli.controller", (
        "The promotion controller: MLflow webhooks on alias moves -> the rollout.\n\n"
        "Examples:\n\n  kfops controller run\n\n  kfops controller register-webhook --url URL")),
    "runs": ("kfops.cli.runs", (
        "Pipeline runs: this machine's local runs, or a Kubeflow Pipelines endpoint's.\n\n"
        "Examples:\n\n  kfops runs list --limit 5\n\n  kfops runs get RUN_ID")),
}
SINGLE_COMMANDS = {
    "validate": ("kfops.cli.validate", "validate_command"),
    "predict": ("kfops.cli.serve", "predict_command"),
    "backtest": ("kfops.cli.backtest", "backtest_command"),
    "submit": ("kfops.cli.runs", "submit_command"),
    "doctor": ("kfops.cli.runs", "doctor_command"),
    "build": ("kfops.cli.runs", "build_command"),
    "init": ("kfops.cli.init", "init_command"),
}

def echo(text: str = "") -> None:
    typer.echo(text)


@app.command()
def run(
    pipeline: Annotated[str, typer.Argument(help="training or retraining.")] = "training",
    config: ConfigOption = None,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    window_days: WindowDaysOption = None,
    runner: Annotated[str, typer.Option(
        help="subprocess: each task a process of this virtualenv; docker: each task a container of "
             "cluster.image, as a pod runs it (needs shared stores, see docs/deployment.md).")] = "subprocess",
) -> None:
    """Compile a pipeline and run the compiled YAML locally with kfp.local.

    Exit codes (docs/troubleshooting.md): 0 the model was blessed, or the run had nothing to
    judge; 1 a pipeline task failed; 2 bad command line, configuration or data; 3 a service
    (registry, model server, cluster) failed; 4 the run finished but the gate refused the model
    (NOT BLESSED, nothing registered or deployed).

    Examples:

      kfops run training

      kfops run training --set dataset.start=2013-01-01 --set dataset.end=2013-01-14

      kfops run retraining --window-days 14

      kfops run training --set train.trainer=torch --set train.torch.nproc_per_node=2

      kfops run training --runner docker --config production.yaml
    """
    from kfops.adapters.kfp_local import PIPELINES
    from kfops.cli.summary import print_run_summary
    from kfops.runners.local import run_locally

    if pipeline not in PIPELINES:  # before the banner says it is running
        raise KfopsError(f"unknown pipeline '{pipeline}'", hint=f"choose one of: {', '.join(PIPELINES)}")
    cfg = over_window_days(cli_config(config, set_), window_days)
    cfg.check_required()  # every missing dataset key named at once, before anything runs
    if cfg.cluster.kfp_host:
        echo(f"note: cluster.kfp_host is set ({cfg.cluster.kfp_host}); `kfops run` runs locally, "
             "`kfops submit` sends it to the cluster")
    where = "in containers" if runner == "docker" else "locally"
    first, last = cfg.window
    echo(f"kfops: running '{pipeline}' {where} on {first}..{last} (data in {cfg.data_dir})")

    with task_progress(pipeline) as display:
        result = run_locally(cfg, pipeline, on_event=display.line, on_task=display.task, runner=runner)
    facts = print_run_summary(cfg, result, verbose=verbose, same=same_project_options(config, set_))
    if facts["blessed"] is False:  # a decision, not a failure: its own exit code for automation
        raise gate_refused(facts["reasons"])


def same_project_options(config: Path | None, set_: list[str] | None) -> str:
    """' -c FILE --set k=v ...' as given: what a suggested follow-up command needs to act on this project."""
    import shlex

    words = (["-c", str(config)] if config is not None else []) + [w for item in set_ or [] for w in ("--set", item)]
    return "".join(f" {shlex.quote(word)}" for word in words)


def gate_refused(reasons: list[str]) -> GateRefused:
    """The error `kfops run` ends with when the gate refused the model: the failed checks say why."""
    failed = [reason.removeprefix("FAIL ") for reason in reasons if reason.startswith("FAIL ")]
    why = "; ".join(failed) or "see the gate's reasons above"
    return GateRefused(f"the evaluation gate did not bless the model, so nothing was registered or deployed: {why}",
                       hint=f"exit code {EXIT_NOT_BLESSED} means refused, not failed; the evaluation report "
                            "above shows the metrics, evaluate.gate holds the thresholds")


class TaskDisplay:
    """What `kfops run` shows: a line per task start and end, and the lines the tasks relay."""

    def __init__(self, bar) -> None:
        self.bar = bar

    def line(self, text: str) -> None:
        self.bar.note(f"  {text}")

    def task(self, event) -> None:
        """A :class:`kfops.runners.local.TaskEvent`: a line, and a step of the bar when a task ends."""
        self.line(str(event))
        if self.bar.mode != "rich":  # plain: the line says it all
            return
        if event.state == "started":
            self.bar.status(f"{event.task} running")
        elif event.state == "finished":
            self.bar.advance()
            self.bar.status(f"{event.task} done")


@contextlib.contextmanager
def task_progress(pipeline: str):
    """The pipeline's tasks and their steps' own progress lines (epochs, rounds, tables): a rich
    bar on a terminal; plain lines under CI, in pods, or when piped (``KFOPS_PROGRESS`` overrides)."""
    from kfops.adapters.kfp_local import PIPELINE_STEPS
    from kfops.progress import progress

    # The training pipeline has every step but drift; retraining may skip all but drift.
    tasks = len(PIPELINE_STEPS) - (pipeline == "training")
    # Always to stdout, never through logging: kfp.local logs to the stream this display reads.
    with progress(pipeline, total=tasks, unit="task", stream=sys.stdout, use_logging=False) as bar:
        bar.status("starting")
        yield TaskDisplay(bar)
        if bar.mode == "rich" and bar.completed < tasks:  # conditional tasks that did not run (no drift)
            bar.advance(tasks - bar.completed)
        bar.status("finished")


@app.command("compile")
def compile_(
    pipeline: Annotated[str, typer.Argument(help="training or retraining.")] = "training",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the YAML.")] = None,
    components: Annotated[bool, typer.Option(help="Also compile components/<name>/component.yaml.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Compile a pipeline to KFP IR YAML (what `kfops submit` uploads).

    Example:

      kfops compile training -o training.yaml --components
    """
    from kfops.adapters.kfp_local import compile_components, compile_pipeline
    from kfops.errors import ConfigError

    target_path = output or Path(f"{pipeline}.yaml")
    if target_path.suffix not in (".yaml", ".yml") or target_path.is_dir():
        raise ConfigError(f"--output {target_path}: the compiled pipeline is a YAML file, named *.yaml or *.yml")
    cfg = cli_config(config, set_)
    target = compile_pipeline(cfg, pipeline, target_path)
    echo(f"compiled {pipeline} -> {target}")
    if components:
        for path in compile_components(Path("components")):
            echo(f"compiled component -> {path}")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port for the MLflow UI.", min=1, max=65535)] = 5000,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Open the MLflow UI on the same store kfops uses (runs, registry, aliases).

    Example:

      kfops ui --port 5000
    """
    from kfops.errors import ServingError
    from kfops.serving.local.process import port_in_use

    cfg = cli_config(config, set_)
    if port_in_use("127.0.0.1", port):
        # mlflow's server logs the bind error and still exits 0, so a script would think the UI is up.
        raise ServingError(f"127.0.0.1:{port} is already in use by another process",
                           hint="pass another --port, or stop whatever listens there")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", cfg.tracking_uri,
               "--default-artifact-root", cfg.artifact_root, "--host", "127.0.0.1", "--port", str(port)]
    echo(f"MLflow UI on http://127.0.0.1:{port}  (store: {redact_uri(cfg.tracking_uri)})")
    os.execv(command[0], command)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Model version to make @champion.")],
    reason: Annotated[str, typer.Option(help="Why; kept in the audit trail.")] = "promoted from the CLI",
    force: Annotated[bool, typer.Option(help="Promote a version the gate never blessed (recorded).")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Move @champion to VERSION; the deploy reconciler then serves it.

    Example:

      kfops promote 4 --reason "blessed on Q3 data"
    """
    from kfops.runners.promotion import promote as promote_version

    event = promote_version(cli_config(config, set_), version, reason=reason, force=force)
    echo(f"@champion: v{event['from_version'] or '-'} -> v{event['to_version']} ({reason})")
    echo("a running `kfops deploy --watch` serves it within its poll interval; or run `kfops deploy` now")


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why; kept in the audit trail.")] = "rollback from the CLI",
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Put the previous champion back (from the audit trail).

    Example:

      kfops rollback --reason "p99 latency regression"
    """
    from kfops.runners.promotion import rollback as roll_back

    event = roll_back(cli_config(config, set_), reason=reason)
    echo(f"@champion: v{event['from_version']} -> v{event['to_version']} (rollback)")


@app.command()
def history(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Print the audit trail: who moved which alias, when, from which version to which, and why.

    Example:

      kfops history
    """
    from kfops.adapters import mlflow_registry as registry

    cfg = cli_config(config, set_)
    events = registry.audit_trail(cfg)
    if not events:
        echo("no alias moves recorded yet")
    for event in events:
        forced = " [forced]" if event.get("forced") else ""
        echo(f"{event['at']}  {event.get('who', '?'):<16} @{event.get('alias')}: "
             f"v{event.get('from_version') or '-'} -> v{event.get('to_version')}{forced}  {event.get('reason', '')}")


@app.command()
def lineage(
    version: Annotated[str, typer.Argument(help="Model version.")],
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Print where a model version came from: run, data, validation, features, code, config.

    Examples:

      kfops lineage 1

      kfops lineage 3 --config kfops.cluster.yaml
    """
    from kfops.adapters import mlflow_registry as registry

    cfg = cli_config(config, set_)
    info = registry.lineage(cfg, version)
    report = info.get("validation_report")
    if report and "://" not in report and not Path(report).exists():  # a run folder that retention let go
        kept = f"runs:/{info['run_id']}/validation/{Path(report).name}"
        info["validation_report"] = f"{report} (removed with its run folder; MLflow keeps {kept})"
    width = max(len(k) for k in info)
    for key, value in info.items():
        echo(f"{key:<{width}}  {value}")


@app.command()
def deploy(
    watch: Annotated[bool, typer.Option(help="Keep serving whatever @champion points to.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between registry polls with --watch.", min=0.1)] = 5.0,
    max_seconds: Annotated[float | None, typer.Option(help="Stop watching after this long.")] = None,
    webhook_port: Annotated[int, typer.Option(help="Port for MLflow's webhooks with --watch.", min=1, max=65535)] = 8095,
    webhooks: Annotated[bool, typer.Option(help="With --watch, take MLflow's webhooks where it sends them.")] = True,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Serve the current @champion locally (once, or keep following the alias with --watch).

    With --watch the promotion controller runs: it takes MLflow's webhooks when the tracking
    server sends them (a SQL-backed `mlflow server`), and polls every --interval otherwise.

    Examples:

      kfops deploy

      kfops deploy --watch --interval 5
    """
    cfg = cli_config(config, set_)
    if watch:
        from kfops.runners.controller import run_controller

        run_controller(cfg, port=webhook_port, poll_interval_s=interval, webhooks=webhooks, max_seconds=max_seconds,
                       on_event=echo)
        return
    from kfops.steps.deploy import deploy as deploy_step

    result = deploy_step(cfg)
    echo(f"serving {result['model_name']} v{result['version']} (@{result['alias']}) at {result['endpoint']}")


@app.command()
def status(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Show the local stack: stores, the model server, champion and challenger, recent runs.

    Examples:

      kfops status

      kfops status --set data_dir=/tmp/kfops-demo
    """
    from kfops.cli.summary import print_status

    print_status(cli_config(config, set_))


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; remove nothing.")] = False,
    older_than: Annotated[int | None, typer.Option(
        "--older-than", help="Days, instead of retention.run_days, for runs' folders, logs and YAML.", min=1)] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Remove old local runs' files from data_dir as the config's `retention` says (each local run
    does this at its end): run folders, steps' scratch, run logs and compiled YAML older than retention.run_days
    (90) except the retention.keep_newest_runs newest, and the inference log's days older than
    retention.inference_log_days (unset: kept). The registry and the audit trail are never touched.

    Examples:

      kfops prune --dry-run

      kfops prune --older-than 30

      kfops prune --set retention.inference_log_days=60
    """
    from kfops.runners.retention import prune_local_state

    cfg = cli_config(config, set_)
    pruned = prune_local_state(cfg, dry_run=dry_run, run_days=older_than)
    verb = "would remove" if dry_run else "removed"
    for path in pruned.paths:
        echo(f"{verb}  {path}")
    echo(f"{verb} {pruned.summary()}" if pruned.paths else "nothing to remove")
    for problem in pruned.errors:
        echo(f"could not remove {problem}")
    if pruned.errors:
        raise typer.Exit(EXIT_FAILED)


def _register_subcommands() -> None:
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        app.add_typer(module.app, name=name, help=help_text)
    for name, (module_name, attr) in SINGLE_COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        if hasattr(module, attr):
            app.command(name)(getattr(module, attr))


def _format_error(err: BaseException) -> str:
    text = f"{'not blessed' if isinstance(err, GateRefused) else 'error'}: {err}"
    hint = getattr(err, "hint", None)
    return redact_uri(text + (f"\n  hint: {hint}" if hint else ""))


def parser_click_exception() -> type[Exception]:
    """The base class of the errors typer's command-line parser raises (a missing or unknown
    option: usage errors, exit code 2). typer 0.2x parses with its own copy of click,
    ``typer._click``, whose exceptions are not click's: ``except click.ClickException`` misses them."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # an older typer, on click itself
        from click import ClickException
    return ClickException


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: one-line errors with a hint; tracebacks only with --verbose."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or "-v" in argv or os.environ.get("KFOPS_VERBOSE") == "1"
    _register_subcommands()
    accept_verbose(app)  # the hints below suggest --verbose: every command takes it
    usage_error = parser_click_exception()
    try:
        result = app(args=argv, prog_name="kfops", standalone_mode=False)
        if result == EXIT_INTERRUPTED and type(result) is int:
            # typer turns KeyboardInterrupt into Exit(130), which non-standalone mode returns, not raises.
            typer.echo("interrupted", err=True)
            raise SystemExit(EXIT_INTERRUPTED)
        return result
    except KfopsError as err:
        if verbose:
            traceback.print_exc()
        typer.echo(_format_error(err), err=True)
        raise SystemExit(err.exit_code) from None
    except typer.Exit as err:
        if err.exit_code == EXIT_INTERRUPTED:  # typer's answer to Ctrl-C: say so, as below
            typer.echo("interrupted", err=True)
        raise SystemExit(err.exit_code) from None
    except typer.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except usage_error as err:  # click's own message: the usage line, a pointer to --help, the error
        err.show()
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as err:  # the CLI boundary: one line, traceback on request
        if verbose:
            traceback.print_exc()
        known = _known_failure(err)
        if known is not None:
            typer.echo(_format_error(known), err=True)
            raise SystemExit(known.exit_code) from None
        typer.echo(redact_uri(f"error: unexpected {type(err).__name__}: {err}"), err=True)
        typer.echo("  hint: run again with --verbose for the traceback", err=True)
        raise SystemExit(EXIT_FAILED) from None


def _known_failure(err: Exception) -> KfopsError | None:
    """A failure of the machine or a service rather than of kfops, as the KfopsError that names it:
    a file or folder that cannot be used (exit 2), a service that cannot be reached (exit 3)."""
    from kfops.errors import DataError, ServiceUnavailable

    module = type(err).__module__.split(".")[0]
    if module == "redis":  # the Redis client's own errors (not builtins): a dead or slow online store
        return ServiceUnavailable(f"Redis: {type(err).__name__}: {err}",
                          hint="check features.redis_connection and that Redis is up")
    if isinstance(err, (ConnectionError, TimeoutError)):
        return ServiceUnavailable(f"{type(err).__name__}: {err}", hint="check that the service it names is up")
    if isinstance(err, OSError):
        where = f": {err.filename}" if err.filename else ""
        return DataError(f"{err.strerror or err}{where}", hint="check the path and its permissions "
                         "(data_dir and the files given on the command line)")
    return None


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
