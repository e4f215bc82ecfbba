"""The cluster path: `kfops submit`, `kfops runs list|get`, `kfops doctor`, `kfops build`.

Thin runners around kfops.adapters.kfp_api / doctor / images.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kfops.cli.options import (
    ConfigOption,
    ExperimentOption,
    HostOption,
    NamespaceOption,
    SetOption,
    WindowDaysOption,
    cli_config,
    over_window_days,
)
from kfops.errors import ConfigError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

app = typer.Typer(
    help="Runs: on a Kubeflow Pipelines endpoint, or with none configured, the local runs of this data_dir."
         "\n\nExamples:\n\n  kfops runs list\n\n  kfops runs get training-20261207-1434\n\n"
         "  kfops runs list --host http://localhost:8888\n\n  kfops runs get 5f1c... --host http://localhost:8888",
    no_args_is_help=True,
)


def _local(cfg: KfopsConfig, host: str | None) -> bool:
    """No endpoint given or configured: the runs are this data_dir's local ones."""
    return host is None and not cfg.cluster.kfp_host

def _connect(cfg, host: str | None, namespace: str | None):
    from kfops.adapters import kfp_api

    endpoint = kfp_api.resolve_endpoint(cfg, host=host, namespace=namespace)
    return endpoint, kfp_api.connect(endpoint)


def compile_to(cfg, pipeline: str, folder: Path) -> Path:
    from kfops.adapters.kfp_local import PIPELINES, compile_pipeline

    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown pipeline '{pipeline}'", hint=f"choose one of: {', '.join(PIPELINES)}")
    return compile_pipeline(cfg, pipeline, folder / f"{pipeline}.yaml")


@app.callback()
def _group() -> None:
    """Keeps `list` and `get` subcommands when this app runs on its own."""


def submit_command(
    pipeline: Annotated[str, typer.Argument(help="training or retraining.")],
    host: HostOption = None,
    experiment: ExperimentOption = None,
    version_name: Annotated[str | None, typer.Option(
        "--version-name", help="Pipeline version name (default: <pipeline>-<code version>-<yaml digest>).")] = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="Run name (default: pipeline and time).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until it ends; non-zero exit on failure.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: stop waiting after this many seconds.")] = 6 * 3600,
    poll_interval: Annotated[float, typer.Option(help="With --wait: seconds between status polls.", min=0.001)] = 10.0,
    namespace: NamespaceOption = None,
    window_days: WindowDaysOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Compile a pipeline, upload it as a pipeline version and start a run on Kubeflow Pipelines.

    Auth: KFOPS_KFP_TOKEN (bearer token), else cluster.token_path, else the Kubeflow
    service-account token file when present.

    The pods must reach every store the config names: a config whose MLflow tracking URI or
    Feast registry is a file here (both are by default), or with an absolute path of this
    machine, is refused before anything is uploaded.

    Examples:

      kfops submit training --host http://localhost:8888

      kfops submit retraining --experiment nightly --wait --namespace team-a

      kfops submit retraining --window-days 14

      kfops submit training --set cluster.gpus_per_node=1 --set train.trainer=torch
    """
    from kfops.adapters import kfp_api
    from kfops.adapters.mlflow_registry import code_version

    cfg = over_window_days(cli_config(config, set_), window_days)
    cfg.check_required()  # the dataset keys a run needs, named as `kfops run` names them
    kfp_api.require_cluster_config(cfg)  # before anything is contacted or uploaded
    with tempfile.TemporaryDirectory(prefix="kfops-submit-") as folder:
        package = compile_to(cfg, pipeline, Path(folder))  # a pipeline that cannot compile needs no cluster
        endpoint, client = _connect(cfg, host, namespace)
        info = kfp_api.pipeline_info(package)
        version = version_name or kfp_api.version_name(info["name"], code_version(), package)
        submission = kfp_api.submit(
            client, endpoint, package, version, experiment or cfg.registry.experiment,
            run_name or kfp_api.default_run_name(pipeline), service_account=cfg.cluster.service_account,
            pipeline_root=cfg.cluster.pipeline_root,
        )
    first, last = cfg.window
    typer.echo(f"submitted {info['name']} version {submission.version_name} "
               f"to experiment '{experiment or cfg.registry.experiment}' over {first}..{last}")
    typer.echo(f"run {submission.run_id}: {submission.url}")
    if wait:
        final = kfp_api.wait_for_run(client, submission.run_id, timeout_s=timeout, poll_s=poll_interval,
                                        on_state=lambda state: typer.echo(f"  state: {state}"))
        typer.echo(f"run {submission.run_id} {final['state']}")


@app.command("list")
def list_(
    experiment: Annotated[str | None, typer.Option("--experiment", help="Only runs of this experiment.")] = None,
    limit: Annotated[int, typer.Option(help="Most runs to show (newest first).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    host: HostOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """List recent runs, newest first: on the KFP endpoint, or with none configured, the local runs
    (`kfops run`, the local scheduler) with their state and what they decided.

    Examples:

      kfops runs list

      kfops runs list --experiment my-experiment --limit 5 --host http://localhost:8888
    """
    from kfops.adapters import kfp_api

    cfg = cli_config(config, set_)
    if _local(cfg, host):
        _list_local(cfg, limit, as_json)
        return
    endpoint, client = _connect(cfg, host, namespace)
    runs = kfp_api.list_runs(client, endpoint.namespace, experiment, page_size=limit)
    if as_json:
        typer.echo(json.dumps(runs, indent=2))
        return
    if not runs:
        typer.echo("no runs")
    for run in runs:
        typer.echo(f"{run['run_id']}  {run['state']:<10} {run['created_at'] or '-':<26} {run['name']}")


@app.command("get")
def get(
    run_id: Annotated[str, typer.Argument(help="Run id (from `kfops submit` or `kfops runs list`).")],
    host: HostOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Show one run: state, times, pipeline version, error, URL; locally, its record (the id, the
    kfp.local run name, or a prefix of either that one run has).

    Examples:

      kfops runs get training-20261207-1434

      kfops runs get 5f1c2d3e-... --host http://localhost:8888
    """
    from kfops.adapters import kfp_api

    cfg = cli_config(config, set_)
    if _local(cfg, host):
        _get_local(cfg, run_id)
        return
    endpoint, client = _connect(cfg, host, namespace)
    run = kfp_api.get_run(client, run_id)
    run["url"] = kfp_api.run_url(endpoint.host, run_id)
    width = max(len(k) for k in run)
    for key, value in run.items():
        typer.echo(f"{key:<{width}}  {value if value is not None else '-'}")


def _list_local(cfg: KfopsConfig, limit: int, as_json: bool) -> None:
    from kfops.runners.run_records import outcome, read_records

    records = read_records(cfg)[:limit]
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    if not records:
        typer.echo(f"no local runs in {cfg.data_dir} (and no Kubeflow Pipelines endpoint configured)")
    for record in records:
        seconds = f"{record['seconds']:.0f}s" if record.get("seconds") is not None else "-"
        said = outcome(record)
        said = said if len(said) <= 100 else said[:99] + "…"  # `kfops runs get` shows it whole
        typer.echo(f"{record['id']}  {record['state']:<11} {record.get('started_at') or '-':<25} {seconds:>6}  "
                   f"{said}".rstrip())


def _get_local(cfg: KfopsConfig, run: str) -> None:
    from kfops.errors import KfopsError
    from kfops.runners.run_records import find_record, outcome

    record = find_record(cfg, run)
    if record is None:
        raise KfopsError(f"no local run '{run}' in {cfg.data_dir}",
                         hint="`kfops runs list` shows the local runs; a KFP run needs --host or cluster.kfp_host")
    shown = {**record, "outcome": outcome(record)}
    decision = shown.pop("decision", None) or {}
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        typer.echo(f"{key:<{width}}  {value if value not in (None, '') else '-'}")
    if decision.get("reason"):
        typer.echo(f"{'reason':<{width}}  {decision['reason']}")


def doctor_command(
    pipeline_yaml: Annotated[Path | None, typer.Argument(help="A compiled pipeline YAML.")] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Compile this pipeline (training, retraining) "
                                                 "with the current config and inspect it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    outputs: Annotated[Path | None, typer.Option("--outputs", help="The platform root's `terraform output "
                                                 "-json`, to check the config against what it installed.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Show what a cluster honours that a local kfp.local run ignores (or does differently).

    Resources, accelerators, node selectors, tolerations, images, caching, retries and
    environment variables, per task; and, for a cluster config, what would fail there: local
    paths, unpublished images, no object-store pipeline root, multi-node training without S3,
    and (with --outputs) a serving mode the platform did not install.

    Examples:

      kfops doctor --pipeline training --set cluster.gpus_per_node=1

      kfops doctor training.yaml
    """
    from kfops.cluster.doctor import (
        format_table,
        inspect_config,
        inspect_pipeline,
        load_pipeline_spec,
        summary_line,
    )
    from kfops.cluster.terraform_outputs import load_outputs

    if (pipeline_yaml is None) == (pipeline is None):
        raise ConfigError("give either a compiled PIPELINE_YAML or --pipeline NAME",
                          hint="e.g. `kfops doctor --pipeline training`")
    cfg = cli_config(config, set_)
    with tempfile.TemporaryDirectory(prefix="kfops-doctor-") as folder:
        path = pipeline_yaml if pipeline_yaml is not None else compile_to(cfg, pipeline, Path(folder))
        spec = load_pipeline_spec(path)
    findings = inspect_pipeline(spec, expected_images={cfg.cluster.image, cfg.cluster.gpu_image})
    versions = None
    if outputs is not None:
        versions = (load_outputs(outputs).get("platform_versions") or {}).get("value") or {}
    findings += inspect_config(cfg, versions)
    if as_json:
        typer.echo(json.dumps({"findings": [f.to_dict() for f in findings], "summary": summary_line(findings)},
                              indent=2))
        return
    typer.echo(f"pipeline {spec['pipelineInfo']['name']}:")
    if findings:
        typer.echo(format_table(findings))
    typer.echo(summary_line(findings))


def build_command(
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="pipeline (cluster.image), serving (cluster.serving_image) or gpu (cluster.gpu_image); "
                       "repeat for several. Default: all three.")] = None,
    base_image: Annotated[str | None, typer.Option(
        help="Base image of the pipeline and serving images (default: python:3.11-slim).")] = None,
    torch_index: Annotated[str | None, typer.Option(
        help="Index torch is installed from (default: PyTorch's CPU index; '' for pip's own indexes).")] = None,
    pip_from_host: Annotated[bool, typer.Option(
        "--pip-from-host", help="Build with this machine's pip settings: its indexes, CA bundle and local "
                                "wheel folders (served on loopback during the build).")] = False,
    push: Annotated[bool, typer.Option("--push", help="Also push the tags.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the commands, run nothing.")] = False,
    context: Annotated[Path, typer.Option(help="Build context: the kfops repository root.")] = Path("."),
    from_image: Annotated[list[str] | None, typer.Option(
        "--from", metavar="ROLE=IMAGE",
        help="A project's build: the kfops image its ROLE image builds on (default: kfops' own image of the "
             "role, e.g. ghcr.io/kfops/kfops:<version>); repeat per role.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Build the images, one per role: pipeline (Dockerfile -> cluster.image), serving
    (Dockerfile.serving -> cluster.serving_image) and gpu (Dockerfile.gpu -> cluster.gpu_image).

    Each runs as a non-root user (uid 1000). Prints each image's build time and size. Without a
    docker daemon (or with --dry-run) it prints the commands instead of running them.

    With the config of a project outside the kfops repository (one `kfops init` made), it builds
    that project's images instead: per role (pipeline and serving unless --role says), kfops'
    image of the role with the project's kfops.yaml, suites, Feast definitions and plug-in
    modules as its working folder, tagged with the project's cluster.image / cluster.serving_image.

    Examples:

      kfops build --dry-run

      kfops build -c shop/kfops.yaml -s cluster.image=reg.example.com/shop:1 -s cluster.serving_image=reg.example.com/shop-s:1

      kfops build --role pipeline --role serving --base-image kfops-base:bookworm --torch-index '' --pip-from-host

      kfops build --push --set cluster.image=registry.example.com/kfops:0.2.0
    """
    import shlex

    from kfops.cluster import images, project_image

    cfg = cli_config(config, set_)
    config_file = _config_file(config)
    if config_file is not None and not project_image.is_kfops_source(config_file.resolve().parent):
        _build_project(cfg, config_file, tuple(role or ("pipeline", "serving")), from_image, push, dry_run)
        return
    if from_image:
        raise ConfigError("--from is for a project's images; this config is the kfops repository's own",
                          hint="pass -c with the project's kfops.yaml")
    roles = tuple(role or images.ROLES)
    options = images.BuildOptions(base_image=base_image, torch_index=torch_index, pip_from_host=pip_from_host)
    root = context.resolve()
    if dry_run or not images.docker_available():
        if not dry_run:
            typer.echo("# docker is not available (no client, or `docker info` fails): the commands to run are")
        for command in images.build_commands(cfg.cluster, root, push=push, roles=roles, options=options):
            typer.echo(shlex.join(command))
        return
    results = images.build_images(images.image_builds(cfg.cluster, root, roles, options), root,
                                  on_command=typer.echo, push=push)
    for result in results:
        typer.echo(f"built {result.role} image {result.tag}: {result.size_bytes / 1e9:.2f} GB in {result.seconds:.0f} s"
                   + (" and pushed it" if push else ""))


def _config_file(config: Path | None) -> Path | None:
    from kfops.config import find_config_file

    return config if config is not None else find_config_file()


def _build_project(cfg: KfopsConfig, config_file: Path, roles: tuple[str, ...], from_image: list[str] | None,
                   push: bool, dry_run: bool) -> None:
    import shlex

    from kfops.cluster import images, project_image

    bases = {}
    for item in from_image or []:
        role, sep, image = item.partition("=")
        if not sep or not image:
            raise ConfigError(f"--from '{item}' is not ROLE=IMAGE", hint="e.g. --from pipeline=kfops:dev")
        bases[role] = image
    builds = project_image.project_builds(cfg, roles, bases)
    files = project_image.project_files(cfg, config_file)
    typer.echo(f"project {cfg.project} ({config_file.resolve().parent}): {len(files)} files go to "
               f"{project_image.WORKDIR} in its images")
    if dry_run or not images.docker_available():
        if not dry_run:
            typer.echo("# docker is not available (no client, or `docker info` fails): the commands to run are")
        for name in sorted(files):
            typer.echo(f"#   {name}")
        for build in builds:
            typer.echo(shlex.join(build.build_command()) + f"  # context: a Dockerfile FROM {build.base} and the files")
            if push:
                typer.echo(shlex.join(build.push_command()))
        return
    results = project_image.build_project_images(cfg, files, builds, on_command=typer.echo, push=push)
    for result in results:
        typer.echo(f"built {cfg.project}'s {result.role} image {result.tag}: {result.size_bytes / 1e9:.2f} GB in "
                   f"{result.seconds:.0f} s" + (" and pushed it" if push else ""))
