"""The pipeline's steps as plain functions of paths and config.

Each KFP component is a thin wrapper that turns its artifacts into paths and calls one of these.
The benchmark's in-process baseline calls them in sequence, so both paths run the same code.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import ConfigError, DataError, KfopsError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig

log = logging.getLogger("kfops.steps")
RAW_MANIFEST = "manifest.json"
SPLIT_COLUMN = "split"


def _config(config: KfopsConfig | str) -> KfopsConfig:
    from kfops.config import KfopsConfig

    return config if isinstance(config, KfopsConfig) else KfopsConfig.from_json(config)


def import_callable(spec: str, search_path: Path | None = None) -> Callable[..., Any]:
    """``module:function``; with ``search_path`` the module is a file inside that folder."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"'{spec}' must look like module:function")
    try:
        if search_path is not None and (search_path / f"{module_name}.py").is_file():
            unique = f"kfops_user_{abs(hash(str(search_path)))}_{module_name}"
            loader_spec = importlib.util.spec_from_file_location(unique, search_path / f"{module_name}.py")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import '{module_name}' for '{spec}': {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise ConfigError(f"'{module_name}' has no '{attr}' (from '{spec}')") from err


def table_hash(tables: dict[str, pd.DataFrame]) -> str:
    """Content hash of the tables: equal data, equal hash, whatever the file encoding."""
    import pandas as pd

    digest = hashlib.sha256()
    for name in sorted(tables):
        frame = tables[name]
        digest.update(name.encode())
        digest.update(",".join(map(str, frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def read_tables(raw_dir: Path) -> dict[str, pd.DataFrame]:
    import pandas as pd

    raw_dir = Path(raw_dir)
    files = sorted(raw_dir.glob("*.parquet"))
    if not files:
        raise DataError(f"no raw tables (*.parquet) in {raw_dir}", hint="run the ingest step first")
    tables = {}
    for path in files:
        try:
            tables[path.stem] = pd.read_parquet(path)
        except (OSError, ValueError) as err:
            raise DataError(f"raw table {path} could not be read: {err}") from err
    return tables


def ingest(config: KfopsConfig | str, raw_dir: Path) -> dict[str, Any]:
    """Read the raw tables and write a dated parquet snapshot with its content hash."""
    cfg = _config(config)
    started = time.perf_counter()
    tables = import_callable(cfg.dataset.loader)(cfg)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    from kfops.progress import progress

    with progress("ingest: snapshot", total=len(tables), unit="table", every=1) as bar:
        for name, frame in tables.items():
            frame.to_parquet(raw_dir / f"{name}.parquet", index=False)
            bar.advance(message=f"{name}: {len(frame):,} rows")
    manifest = {
        "data_hash": table_hash(tables),
        "snapshot_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "window": [str(cfg.dataset.start), str(cfg.dataset.end)],
        "rows": {name: int(len(frame)) for name, frame in tables.items()},
    }
    (raw_dir / RAW_MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("ingested %s in %.1fs (hash %s)", manifest["rows"], time.perf_counter() - started, manifest["data_hash"][:12])
    return manifest


def _previous_validation(cfg: KfopsConfig, name: str) -> tuple[Path, dict | None]:
    path = cfg.data_dir / "validation" / f"{name}.last.json"
    if path.is_file():
        return path, json.loads(path.read_text()).get("stats")
    return path, None


def validate(config: KfopsConfig | str, raw_dir: Path, report_html: Path, summary_json: Path) -> dict[str, Any]:
    """Run the expectation suites on the raw tables; raise ValidationFailed, with examples, on failure."""
    from kfops import validation

    cfg = _config(config)
    tables = read_tables(raw_dir)
    last_path, previous = _previous_validation(cfg, "raw")
    result = validation.validate_tables(tables, cfg, previous=previous)
    validation.write_reports(result, Path(report_html), Path(summary_json))
    if not result.success:
        print(validation.format_failures(result), flush=True)
        validation.raise_if_failed(result, summary_path=str(summary_json))
    last_path.parent.mkdir(parents=True, exist_ok=True)
    last_path.write_text(Path(summary_json).read_text())
    return json.loads(Path(summary_json).read_text())


def split_by_time(frame: pd.DataFrame, cfg: KfopsConfig) -> pd.Series:
    """train / validation / test by event time, never at random; a timestamp never spans two splits."""
    import numpy as np
    import pandas as pd

    times = frame[cfg.dataset.event_timestamp]
    cut_train = times.quantile(cfg.split.train_fraction)
    cut_val = times.quantile(cfg.split.train_fraction + cfg.split.validation_fraction)
    split = np.where(times <= cut_train, "train", np.where(times <= cut_val, "validation", "test"))
    return pd.Series(split, index=frame.index, name=SPLIT_COLUMN)


def featurize(config: KfopsConfig | str, raw_dir: Path, sources_dir: Path, training_set: Path) -> dict[str, Any]:
    """Write the Feast offline sources from validated tables, then join features point-in-time and split by time.

    The sources are derived here, after validation, so corrupted data never reaches the feature store.
    """
    from kfops import features, validation

    cfg = _config(config)
    tables = read_tables(raw_dir)
    import_callable(cfg.dataset.feast_sources_writer)(tables, Path(sources_dir))
    entities = import_callable(cfg.dataset.entity_builder)(tables, cfg)
    frame = features.build_training_set(entities, cfg, Path(sources_dir))
    frame[SPLIT_COLUMN] = split_by_time(frame, cfg)
    last_path, previous = _previous_validation(cfg, "training_set")
    result = validation.validate_training_set(frame, cfg, previous=previous)
    report_dir = Path(training_set).parent
    validation.write_reports(result, report_dir / "training_set_validation.html", report_dir / "training_set_validation.json")
    if not result.success:
        print(validation.format_failures(result), flush=True)
        validation.raise_if_failed(result)
    Path(training_set).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(training_set, index=False)
    last_path.parent.mkdir(parents=True, exist_ok=True)
    last_path.write_text(json.dumps({"stats": result.stats}, default=str))
    counts = frame[SPLIT_COLUMN].value_counts().to_dict()
    return {"rows": int(len(frame)), "splits": {k: int(v) for k, v in counts.items()},
            "label_rate": float(frame[cfg.dataset.label].mean())}


def _load_training_set(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise DataError(f"training set {path} could not be read: {err}") from err


def _feature_views(cfg: KfopsConfig) -> str:
    return ",".join(sorted({ref.split(":", 1)[0] for ref in cfg.features.feature_refs}))


def _definitions_hash(cfg: KfopsConfig) -> str:
    module = cfg.features.definitions.partition(":")[0]
    path = cfg.features.repo_path / f"{module}.py"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "unknown"


def train(
    config: KfopsConfig | str, training_set: Path, model_dir: Path, pipeline_run: str, data_hash: str = ""
) -> str:
    """Fit the configured trainer, save the kfops model folder, log the run to MLflow; returns the run id."""
    import mlflow
    import pandas as pd

    from kfops import registry
    from kfops.evaluation import choose_threshold
    from kfops.model import FeatureSpec, predict_proba, save_model
    from kfops.training import train_model

    cfg = _config(config)
    frame = _load_training_set(training_set)
    parts = {name: frame[frame[SPLIT_COLUMN] == name] for name in ("train", "validation")}
    spec = FeatureSpec.fit(parts["train"], cfg.feature_columns, cfg.features.categorical, label=cfg.dataset.label)
    work_dir = cfg.data_dir / "work" / "train" / (pipeline_run or "adhoc")
    result = train_model(parts["train"], parts["validation"], spec, cfg.train, work_dir)
    val_proba = predict_proba(result.model, parts["validation"])
    result.model.threshold = choose_threshold(parts["validation"][cfg.dataset.label].to_numpy(), val_proba)
    save_model(result.model, Path(model_dir), metadata={"pipeline_run": pipeline_run, "data_hash": data_hash})

    experiment_id = registry.ensure_experiment(cfg)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{pipeline_run}"[:250]) as run:
        mlflow.set_tags({"kfops.pipeline_run": pipeline_run, "kfops.data_hash": data_hash,
                         "kfops.trainer": cfg.train.trainer, "kfops.window": cfg.window_name})
        mlflow.log_params({k: v for k, v in result.params.items()})
        mlflow.log_params({"threshold": round(result.model.threshold, 6), "train_rows": len(parts["train"]),
                           "validation_rows": len(parts["validation"]), "features": len(spec.columns)})
        mlflow.log_metrics(result.metrics)
        example = parts["validation"][spec.columns].head(5).reset_index(drop=True)
        proba = predict_proba(result.model, example)
        outputs = pd.DataFrame({"probability": proba, "prediction": (proba >= result.model.threshold).astype(int)})
        model_uri = registry.log_model(Path(model_dir), example, outputs)
        mlflow.set_tag("kfops.model_uri", model_uri)
        return run.info.run_id


def evaluate(
    config: KfopsConfig | str, training_set: Path, model_dir: Path, run_id: str, verdict_json: Path, plots_html: Path
) -> dict[str, Any]:
    """Score challenger and champion on the same frozen test split; write the verdict; log to MLflow."""
    import mlflow

    from kfops import plots, registry
    from kfops.evaluation import behavioural_checks, classification_metrics, gate, slice_metrics
    from kfops.model import load_model, predict_proba

    cfg = _config(config)
    frame = _load_training_set(training_set)
    test = frame[frame[SPLIT_COLUMN] == "test"]
    if test.empty:
        raise DataError("the test split is empty", hint="widen the window or lower split fractions")
    y_true = test[cfg.dataset.label].to_numpy()
    model = load_model(Path(model_dir))
    proba = predict_proba(model, test)
    metrics = classification_metrics(y_true, proba, model.threshold, cfg.evaluate.calibration_bins)
    gate_cfg = cfg.evaluate.gate
    slices = slice_metrics(test, y_true, proba, gate_cfg.slices, gate_cfg.min_slice_rows)

    champion_metrics = champion_slices = champion_version = None
    champion_proba = None
    found = registry.champion(cfg)
    if found is not None:
        champion_version = found.version
        champion_model = load_model(registry.fetch_model_dir(cfg.tracking_uri, f"models:/{found.name}/{found.version}"))
        champion_proba = predict_proba(champion_model, test)
        champion_metrics = classification_metrics(y_true, champion_proba, champion_model.threshold,
                                                  cfg.evaluate.calibration_bins)["scalars"]
        champion_slices = slice_metrics(test, y_true, champion_proba, gate_cfg.slices, gate_cfg.min_slice_rows)
    behaviour = (behavioural_checks(model, test, cfg.evaluate.invariant_columns, cfg.evaluate.non_decreasing_columns)
                 if cfg.evaluate.behavioural_checks else [])
    verdict = gate(metrics["scalars"], gate_cfg, champion_metrics, slices, champion_slices, behaviour, champion_version)
    missing = [c for c in gate_cfg.slices if c not in test.columns]
    if missing:
        verdict.reasons.append(f"NOTE slices: {', '.join(missing)} not in the test data, so not judged")
    summary = {
        "blessed": verdict.blessed,
        "verdict": verdict.to_dict(),
        "metrics": metrics["scalars"],
        "champion_metrics": champion_metrics,
        "slices": slices,
        "champion_slices": champion_slices,
        "roc": metrics["roc"],
        "confusion_matrix": metrics["confusion_matrix"],
        "calibration": metrics["calibration"],
    }
    Path(verdict_json).parent.mkdir(parents=True, exist_ok=True)
    Path(verdict_json).write_text(json.dumps(summary, indent=2, default=float))
    figures = plots.evaluation_figures(y_true, proba, champion_proba, metrics, slices, champion_slices)
    plots.write_html(figures, Path(plots_html), title="kfops evaluation", verdict=verdict.reasons)

    registry.client(cfg)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics["scalars"].items() if isinstance(v, float)})
        mlflow.set_tags({"kfops.blessed": str(verdict.blessed).lower(),
                         "kfops.champion_version": champion_version or "none"})
        mlflow.log_dict(summary, "evaluation/verdict.json")
        for name, figure in figures.items():
            mlflow.log_figure(figure, f"evaluation/{name}.png")
    plots.close(figures)
    return summary


def register(
    config: KfopsConfig | str, run_id: str, verdict_json: Path, validation_summary: Path, raw_manifest: Path,
    pipeline_run: str, task_key: str = "register",
) -> dict[str, Any]:
    """Register a blessed model (idempotently) as @challenger; bootstrap @champion when there is none."""
    from kfops import registry

    cfg = _config(config)
    verdict = json.loads(Path(verdict_json).read_text())
    if not verdict.get("blessed"):
        raise KfopsError("refusing to register a model the gate did not bless")
    manifest = json.loads(Path(raw_manifest).read_text()) if Path(raw_manifest).is_file() else {}
    validation = json.loads(Path(validation_summary).read_text()) if Path(validation_summary).is_file() else {}
    mlflow_client = registry.client(cfg)
    run = registry.retry(lambda: mlflow_client.get_run(run_id), f"read run {run_id}")
    model_uri = run.data.tags.get("kfops.model_uri")
    if not model_uri:
        raise KfopsError(f"run {run_id} logged no model", hint="the train step must run before register")
    tags = {
        "kfops.pipeline_run": pipeline_run,
        "kfops.run_id": run_id,
        "kfops.data_hash": manifest.get("data_hash", "unknown"),
        "kfops.window": ",".join(manifest.get("window", [])),
        "kfops.validation": "passed" if validation.get("success", True) else "failed",
        "kfops.validation_report": _validation_report(Path(validation_summary)),
        "kfops.feature_views": _feature_views(cfg),
        "kfops.feature_definitions": _definitions_hash(cfg),
        "kfops.code_version": registry.code_version(),
        "kfops.trainer": cfg.train.trainer,
        "kfops.trainer_config": cfg.train.model_dump_json()[:4900],
        "kfops.blessed": "true",
        "kfops.test_roc_auc": f"{verdict['metrics']['roc_auc']:.4f}",
        "kfops.gate": " | ".join(verdict["verdict"]["reasons"])[:4900],
    }
    # The data contract's result travels with the model: summary and report on the training run.
    for path in (Path(validation_summary), Path(tags["kfops.validation_report"] or validation_summary)):
        if path.is_file():
            registry.retry(lambda p=path: mlflow_client.log_artifact(run_id, str(p), artifact_path="validation"),
                           "log the validation report")
    version, created = registry.register_version(cfg, run_id, model_uri, tags, f"{pipeline_run}/{task_key}")
    if created:
        registry.move_alias(cfg, registry.CHALLENGER, version.version, reason="blessed by the evaluation gate",
                            who="kfops-pipeline")
    champion = registry.champion(cfg)
    promoted = None
    if champion is None:
        promoted = registry.move_alias(cfg, registry.CHAMPION, version.version, who="kfops-pipeline",
                                       reason="bootstrap: no champion existed")
    elif cfg.registry.auto_promote and champion.version != version.version:
        promoted = registry.move_alias(cfg, registry.CHAMPION, version.version, who="kfops-pipeline",
                                       reason="auto_promote: blessed by the gate")
    return {"model_name": cfg.registry.model_name, "version": str(version.version), "created": created,
            "promoted": promoted is not None}


def _validation_report(summary: Path) -> str:
    """The HTML report written beside the summary (KFP names it `report`; in-process callers `report.html`)."""
    for name in ("report", "report.html"):
        if summary.with_name(name).is_file():
            return str(summary.with_name(name))
    return ""


def deploy(config: KfopsConfig | str, version: str = "") -> dict[str, Any]:
    """Serve the champion (or ``serving.model_alias``) on a local KServe ModelServer; smoke-test it."""
    from kfops import registry
    from kfops.serving import client as serving_client
    from kfops.serving import process

    cfg = _config(config)
    alias = cfg.serving.model_alias or registry.CHAMPION
    target = registry.model_version(cfg, alias=alias)
    if target is None:
        raise KfopsError(f"no model version holds @{alias}", hint="promote one with `kfops promote <version>`")
    if serving_target(cfg) == "kserve":
        from kfops.cluster.inference_service import rollout

        result = rollout(cfg, str(target.version))
        return {"endpoint": result["url"], "model_name": target.name, "version": str(target.version), "alias": alias,
                "rollout": result, "just_registered": version}
    status = process.start_server(cfg, model_version=str(target.version))
    model_dir = registry.fetch_model_dir(cfg.tracking_uri, f"models:/{target.name}/{target.version}")
    example = example_request_rows(model_dir)
    response = serving_client.smoke_test(status["url"], cfg.registry.model_name, example)
    return {"endpoint": status["url"], "model_name": target.name, "version": str(target.version), "alias": alias,
            "smoke_test": response, "just_registered": version}


def serving_target(cfg: KfopsConfig) -> str:
    """``serving.target``, with auto meaning kserve inside a Kubernetes pod (a KFP run on the cluster)."""
    if cfg.serving.target != "auto":
        return cfg.serving.target
    return "kserve" if os.environ.get("KUBERNETES_SERVICE_HOST") else "local"


def example_request_rows(model_dir: Path) -> list[dict[str, Any]]:
    """The input example MLflow stored beside the model: a real row to smoke-test the endpoint with."""
    mlflow_dir = Path(model_dir).parent.parent  # <mlflow model>/artifacts/<kfops model>
    example = mlflow_dir / "input_example.json"
    if example.is_file():
        data = json.loads(example.read_text())
        columns, rows = data["columns"], data["data"]
        return [dict(zip(columns, row, strict=True)) for row in rows[:1]]
    raise KfopsError(f"no input example stored with the model at {mlflow_dir}")
