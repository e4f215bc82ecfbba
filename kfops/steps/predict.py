"""Batch predict: score a file of rows with a registered model (the ``predict`` component and
``kfops predict``).

Rows are feature rows (every model feature), or raw rows (what a client sends the server,
completed with the offline feature sources: :mod:`kfops.serving.local.raw_scoring`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import ConfigError, DataError
from kfops.steps.common import step_config

if TYPE_CHECKING:
    from kfops.config import KfopsConfig


def model_folder(cfg: KfopsConfig, model_uri: str | None) -> tuple[Path, str]:
    """The model ``model_uri`` names (``models:/<name>/<version>`` or ``@<alias>``), else the
    ``serving.model_alias`` (default @champion) of ``registry.model_name``, fetched from MLflow;
    and its URI pinned to the version (an alias moves)."""
    from kfops.adapters.mlflow_registry import fetch_model_dir
    from kfops.serving.runtime.loading import ModelSource, resolve_version

    uri = model_uri or f"models:/{cfg.registry.model_name}@{cfg.serving.model_alias or 'champion'}"
    pinned, _ = resolve_version(ModelSource(model_uri=uri, tracking_uri=cfg.tracking_uri))
    return Path(fetch_model_dir(cfg.tracking_uri, pinned)), pinned


def predict(
    config: KfopsConfig | str,
    rows: Path,
    predictions: Path,
    *,
    raw: bool = False,
    feature_sources: Path | str | None = None,
    model_dir: Path | None = None,
    model_uri: str | None = None,
    chunk_rows: int = 250_000,
    threads: int | None = None,
    coerce: bool = False,
    log_predictions: bool = False,
    log_event_time: bool = False,
) -> dict[str, Any]:
    """Score every row of ``rows`` (parquet or CSV) into ``predictions`` (parquet).

    ``raw``: the rows are raw rows, joined point-in-time with the views from ``feature_sources``
    (a folder, or an ``s3://`` prefix, of offline source parquet files, e.g. the featurize step's). The model is
    ``model_dir``, else ``model_uri``, else the serving alias. Nothing is written when a row is
    refused. ``log_predictions``: the predictions are appended to the inference log too
    (``serving.inference_log_dir``, or the cluster's log store), as the server logs what it serves,
    so a drift check on ``inference_logs`` sees them. ``log_event_time``: each logged row is stamped
    with its own time (a raw row's event time as the request builder derived it, a feature row's
    ``dataset.event_timestamp`` column), not the time it was scored, so a backfill of past rows
    lands in the days they are about.
    """
    from kfops.core.model import load_model
    from kfops.serving.local.batch_scoring import predict_file, require_input

    cfg = step_config(config)
    if log_event_time and not log_predictions:
        raise ConfigError("log_event_time stamps logged rows: it needs log_predictions",
                          hint="log the predictions too (kfops predict --log --log-event-time)")
    rows, predictions = require_input(Path(rows)), Path(predictions)
    folder, scored_by = (Path(model_dir), str(model_dir)) if model_dir is not None else model_folder(cfg, model_uri)
    model = load_model(folder, cfg.train.plugins, cfg.resolved_against)
    with ExitStack() as scratch:
        complete = None
        if raw:
            from kfops.serving.local.raw_scoring import RawCompleter

            sources = None  # a dataset without feature views: every feature is in the row
            if cfg.features.feature_refs:
                if feature_sources is None:
                    raise DataError("raw rows need the offline feature sources to join the feature views onto")
                sources = scratch.enter_context(local_sources(feature_sources))
            complete = RawCompleter(cfg, model.spec, sources, str(rows), event_times=log_event_time)
        log = None
        if log_predictions:
            from kfops.serving.local.batch_log import UNREGISTERED, BatchPredictionLog

            name, version = ((cfg.registry.model_name, UNREGISTERED) if model_dir is not None
                             else _name_and_version(scored_by))
            log = BatchPredictionLog(cfg.inference_log_location, model_name=name, model_version=version,
                                     spec=model.spec, threshold=model.threshold,
                                     raw_fields=[f.name for f in complete.schema.builder.fields] if complete else None,
                                     event_time_column=cfg.dataset.event_timestamp if log_event_time else None)
        result = predict_file(model, rows, predictions, chunk_rows=chunk_rows, threads=threads, coerce=coerce,
                              complete=complete, log=log)
    outcome: dict[str, Any] = {"rows": result.rows, "seconds": round(result.seconds, 3),
                               "rows_per_second": round(result.rows_per_second), "model": scored_by, "raw": raw}
    if complete is not None and complete.time_field_absent:
        outcome["as_of_now"] = complete.time_field_absent  # no time column: features as they are now
    if log is not None:
        from kfops.core.redaction import redact_uri

        outcome.update(logged_to=redact_uri(str(cfg.inference_log_location)), request_id=log.request_id)
        if log.days is not None:
            outcome["logged_days"] = [str(day) for day in log.days]
    return outcome


def _name_and_version(pinned_uri: str) -> tuple[str, str]:
    """``models:/<name>/<version>`` -> (name, version)."""
    name, _, version = pinned_uri.removeprefix("models:/").rpartition("/")
    return name, version


@contextmanager
def local_sources(location: Path | str) -> Iterator[Path]:
    """A folder of offline sources: ``location``, or a scratch copy of an ``s3://`` prefix (a
    cluster run's featurize output), removed afterwards."""
    if not str(location).startswith("s3://"):
        yield Path(location)
        return
    import tempfile

    from kfops.adapters import s3

    with tempfile.TemporaryDirectory(prefix="kfops-predict-sources-") as scratch:
        s3.fetch_dir(str(location), Path(scratch))
        if not any(Path(scratch).rglob("*.parquet")):
            raise DataError(f"no feature sources (*.parquet) under {location}",
                            hint="give a training run's featurize/feast_sources artifact URI")
        yield Path(scratch)
