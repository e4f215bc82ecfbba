"""``kfops serve``: the local model server (start, stop, status, predict-one) and ``kfops predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kfops.cli.options import ConfigOption, SetOption, cli_config
from kfops.errors import ConfigError, DataError, KfopsError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

app = typer.Typer(
    help=(
        "The local model server (KServe ModelServer on 127.0.0.1), and batch scoring.\n\n"
        "Examples:\n\n"
        "  kfops serve start                                  # serve @champion from the registry\n\n"
        "  kfops serve start --model-dir runs/model --port 8081\n\n"
        "  kfops serve status\n\n"
        "  kfops serve reload --version 4                    # hot-swap the running server's model\n\n"
        "  kfops serve canary --version 4                    # canary a new version, promote or roll back\n\n"
        "  kfops serve predict-one '{\"store_id\": \"S1\", \"item_id\": 17, \"price\": 9.5}'"
        "   # a raw request: entity keys + request-time inputs\n\n"
        "  kfops serve stop"
    ),
    no_args_is_help=True,
)

NameOption = Annotated[str | None, typer.Option("--name", help="Model name in the URLs (default: registry.model_name).")]
ModelDirOption = Annotated[Path | None, typer.Option("--model-dir", help="A kfops model folder.")]
ModelUriOption = Annotated[
    str | None, typer.Option("--model-uri", help="models:/<name>/<version> or models:/<name>@<alias>.")
]


def _echo_status(status: dict) -> None:
    if not status.get("running"):
        typer.echo(f"{status['name']}: not running (log: {status.get('log_file')})")
        return
    health = "healthy" if status["healthy"] else "NOT healthy"
    typer.echo(f"{status['name']}: {health}, version {status.get('model_version')}, pid {status['pid']}")
    for kind, url in (status.get("endpoints") or {}).items():
        typer.echo(f"  {kind:<8} {url}")
    typer.echo(f"  log      {status.get('log_file')}")
    typer.echo(f"  logs to  {status.get('inference_log_dir')}")


@app.command()
def start(
    model_dir: ModelDirOption = None,
    model_uri: ModelUriOption = None,
    version: Annotated[str | None, typer.Option("--version", help="A registered version of registry.model_name.")] = None,
    name: NameOption = None,
    port: Annotated[int | None, typer.Option("--port", help="HTTP port (default: serving.http_port).")] = None,
    online_lookup: Annotated[
        str, typer.Option("--online-lookup", help="Features for raw requests: feast, parquet:DIR or none.")
    ] = "feast",
    replace: Annotated[bool, typer.Option("--replace", help="Restart the process instead of hot-swapping.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Start the model server in the background and wait until it is ready.

    With no model given it serves serving.model_alias (default @champion) from the registry. If
    the server already runs, the new model is hot-swapped in without dropping requests.

    Examples:

      kfops serve start

      kfops serve start --version 3

      kfops serve start --model-dir .kfops/pipeline_root/.../model --port 8081 --online-lookup none
    """
    from kfops.serving.local.process import start_server

    cfg = cli_config(config, set_)
    if version is not None:
        from kfops.adapters.mlflow_registry import model_version

        # Before any process starts: a missing version is the caller's mistake (exit 2), as in promote and reload.
        if model_version(cfg, version=version) is None:
            raise KfopsError(f"model '{cfg.registry.model_name}' has no version {version}",
                             hint="list versions with `kfops history` or the MLflow UI")
    status = start_server(cfg, model_dir=model_dir, model_uri=model_uri, model_version=version, name=name, port=port,
                          online_lookup=online_lookup, replace=replace)
    _echo_status(status)


@app.command()
def reload(
    version: Annotated[str | None, typer.Option("--version", help="A registered version of the served model.")] = None,
    name: NameOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Hot-swap the running server's model: the same source again (an alias that moved), or a version.

    Examples:

      kfops serve reload                # e.g. after `kfops promote` moved @champion

      kfops serve reload --version 4
    """
    from kfops.serving.local.process import reload_server

    result = reload_server(cli_config(config, set_), name, version)
    typer.echo(f"{result['name']}: version {result['previous_version']} -> {result['version']}")


@app.command()
def stop(name: NameOption = None, config: ConfigOption = None, set_: SetOption = None) -> None:
    """Stop the background model server (SIGTERM: requests in progress finish, logs are flushed).

    Example:

      kfops serve stop
    """
    from kfops.serving.local.process import stop_server

    cfg = cli_config(config, set_)
    result = stop_server(cfg, name)
    if result["stopped"]:
        typer.echo(f"stopped {result['name']} (pid {result['pid']})")
        return
    if name in (None, cfg.registry.model_name):
        container = _stop_server_container(cfg)
        if container is not None:
            typer.echo(f"stopped {cfg.registry.model_name} (container {container})")
            return
    typer.echo(f"{result['name']}: nothing to stop ({result['reason']})")


def _stop_server_container(cfg: KfopsConfig) -> str | None:
    """The model's server container (`--runner docker` deploys one) removed; None when there is none
    or no Docker engine answers."""
    from kfops.serving.local.container import container_name, stop_server_container

    try:
        return container_name(cfg) if stop_server_container(cfg) else None
    except KfopsError:  # no Docker engine here: so no container of ours either
        return None


@app.command()
def status(
    name: NameOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Show whether the server runs, its version, endpoints and log file.

    Examples:

      kfops serve status

      kfops serve status --json
    """
    from kfops.serving.local.process import server_status

    result = server_status(cli_config(config, set_), name)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _echo_status(result)


@app.command()
def canary(
    model_dir: ModelDirOption = None,
    model_uri: ModelUriOption = None,
    version: Annotated[str | None, typer.Option("--version", help="A registered version of registry.model_name.")] = None,
    name: NameOption = None,
    percent: Annotated[int | None, typer.Option("--percent", help="Canary share (serving.canary.traffic_percent).")] = None,
    bake_s: Annotated[float | None, typer.Option("--bake-s", help="Healthy time needed (serving.canary.bake_s).")] = None,
    min_requests: Annotated[
        int | None, typer.Option("--min-requests", help="Canary requests needed (serving.canary.min_requests).")
    ] = None,
    online_lookup: Annotated[
        str, typer.Option("--online-lookup", help="Features for raw requests: feast, parquet:DIR or none.")
    ] = "feast",
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Roll a new model out as a canary next to the running server; promote it or roll it back.

    A second server serves the new model and a traffic split (serving.canary.split_port) sends
    it --percent of the requests. Send your traffic to the split while this runs. When the
    canary stays healthy for --bake-s over at least --min-requests requests, the main server
    hot-swaps to it; more errors or slower answers than serving.canary allows roll it back at
    once. Exit code 3 means it was rolled back. The same rules decide canaries on KServe.

    Examples:

      kfops serve canary --version 4

      kfops serve canary --model-dir runs/model --percent 20 --bake-s 120 --min-requests 500
    """
    from kfops.serving.local.canary import run_local_canary

    canary_settings = [f"serving.canary.{key}={value}" for key, value in
                       (("traffic_percent", percent), ("bake_s", bake_s), ("min_requests", min_requests))
                       if value is not None]
    cfg = cli_config(config, set_, *canary_settings)

    def show(decision) -> None:
        typer.echo(f"  {decision.action}: {'; '.join(decision.reasons)}")

    outcome = run_local_canary(cfg, model_dir=model_dir, model_uri=model_uri, model_version=version, name=name,
                               online_lookup=online_lookup, on_event=typer.echo, on_decision=show)
    typer.echo(f"version {outcome['canary_version']} now serves all traffic at the main server; "
               "see `kfops serve status`")


@app.command("predict-one")
def predict_one(
    instance: Annotated[str, typer.Argument(help="One row as JSON: a raw request or all model features.")],
    url: Annotated[str | None, typer.Option("--url", help="Server URL (default: the running local server).")] = None,
    name: NameOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Send one row to the server (V2 protocol) and print the probability and label.

    Example:

      kfops serve predict-one '{"store_id": "S1", "item_id": 17, "price": 9.5}'

    A raw request holds the dataset's entity keys and request-time inputs (the fields of
    dataset.request_builder); a 400 names the fields this model's server expects.
    """
    from kfops.errors import ServingError
    from kfops.serving.local.client import infer
    from kfops.serving.local.process import server_status

    cfg = cli_config(config, set_)
    name = name or cfg.registry.model_name
    try:
        row = json.loads(instance)
    except ValueError as err:
        raise DataError(f"the instance is not valid JSON: {err}") from err
    if not isinstance(row, dict):
        raise DataError("the instance must be a JSON object of field -> value")
    if url is None:
        status = server_status(cfg, name)
        if not status["healthy"]:
            raise ServingError(f"no healthy local server for {name}", hint="start one with `kfops serve start`")
        url = status["url"]
    response = infer(url, name, [row])
    outputs = {o["name"]: o["data"][0] for o in response["outputs"]}
    typer.echo(json.dumps({"model_version": response.get("model_version"), **outputs}))


def predict_command(
    input_path: Annotated[Path, typer.Option("--input", "-i", help="Parquet or CSV file of rows to score.")],
    output_path: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")],
    model_dir: ModelDirOption = None,
    model_uri: ModelUriOption = None,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", help="Rows per chunk (memory vs speed).")] = 250_000,
    threads: Annotated[int | None, typer.Option("--threads", help="Predict threads (default: all cores).")] = None,
    coerce: Annotated[bool, typer.Option(
        "--coerce", help="Score a value that is not a number in a numeric column as missing, instead of refusing the file.",
    )] = False,
    raw: Annotated[bool, typer.Option(
        "--raw", help="The rows are raw rows, as a client sends the server (dataset.request_builder): their "
                      "request features are derived and the feature views joined point-in-time from the offline "
                      "sources at each row's event time, as training joined them.")] = False,
    sources: Annotated[str | None, typer.Option(
        "--sources", help="--raw: folder or s3:// prefix of offline feature sources, e.g. a training run's "
                          "featurize/feast_sources (default: the newest local pipeline run's, else "
                          "<data_dir>/feast/sources).")] = None,
    log_predictions: Annotated[bool, typer.Option(
        "--log", help="Append the predictions to the inference log (serving.inference_log_dir, or the cluster's "
                      "log store) once every row is scored, as the server logs what it serves: a drift check on "
                      "inference_logs then sees them.")] = False,
    log_event_time: Annotated[bool, typer.Option(
        "--log-event-time", help="--log: stamp each logged row with its own time (a raw row's event time, a "
                                 "feature row's dataset.event_timestamp column), not the time it was scored, so "
                                 "a backfill of past rows lands in the days they are about.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Score a file of rows in chunks; writes ids + probability + prediction to parquet.

    The rows hold every model feature; with --raw they are what a client sends the server, and
    the feature views are joined point-in-time from the offline sources (every input column is
    then kept beside the predictions). With neither --model-dir nor --model-uri it scores with
    serving.model_alias (default @champion) of registry.model_name.

    Examples:

      kfops predict --input test.parquet --output scored.parquet --model-dir runs/model

      kfops predict --input rows.csv --output scored.parquet --model-uri models:/my-model/3

      kfops predict --raw --input requests.csv --output scored.parquet

      kfops predict --raw --input today.csv --output scored.parquet --log

      kfops predict --raw --input last_month.csv --output scored.parquet --log --log-event-time
    """
    from kfops.steps.predict import predict

    cfg = cli_config(config, set_)
    if model_dir is not None and model_uri is not None:
        raise ConfigError("give --model-dir or --model-uri, not both")
    if sources is not None and not raw:
        raise ConfigError("--sources is for --raw rows: feature rows are scored as they are")
    if log_event_time and not log_predictions:
        raise ConfigError("--log-event-time says when logged rows happened: add --log")
    feature_sources = None
    if raw:
        from kfops.serving.local.batch_scoring import require_input

        require_input(input_path)  # before the sources are looked for
        feature_sources = _feature_sources(cfg, sources)
    result = predict(cfg, input_path, output_path, raw=raw, feature_sources=feature_sources, model_dir=model_dir,
                     model_uri=model_uri, chunk_rows=chunk_rows, threads=threads, coerce=coerce,
                     log_predictions=log_predictions, log_event_time=log_event_time)
    typer.echo(f"scored {result['rows']:,} rows in {result['seconds']:.1f}s ({result['rows_per_second']:,} rows/s) "
               f"-> {output_path}")
    if result.get("as_of_now"):
        typer.echo(f"note: {input_path} has no '{result['as_of_now']}' column, so every row was scored as of now, "
                   "with the features the sources hold now (a view's features older than its TTL count as "
                   f"missing); to score rows as of their own time, add '{result['as_of_now']}' (ISO 8601)",
                   err=True)
    if log_predictions:
        first, last = result.get("logged_days") or ("", "")
        when = f", dated {first}" + (f" to {last}" if last != first else "") if first else ""
        typer.echo(f"logged as {result['request_id']} in {result['logged_to']}{when}")


app.command("predict")(predict_command)


def _feature_sources(cfg: KfopsConfig, sources: str | None) -> Path | str | None:
    """``sources`` (an ``s3://`` prefix is fetched by the step), else the newest local pipeline
    run's, else ``<data_dir>/feast/sources``; None for a dataset without feature views
    (``features.feature_refs`` empty), which joins nothing."""
    from kfops.cli.features import pipeline_feature_sources

    if not cfg.features.feature_refs:
        return None
    if sources is not None and sources.startswith("s3://"):
        return sources
    if sources is not None:
        found = Path(sources).expanduser().resolve()
    else:
        found = pipeline_feature_sources(cfg) or cfg.feast_dir / "sources"
    if not any(found.glob("*.parquet")):
        raise DataError(f"no feature sources (*.parquet) in {found}",
                        hint="run the training pipeline (its featurize step writes them), or pass --sources DIR")
    return found

