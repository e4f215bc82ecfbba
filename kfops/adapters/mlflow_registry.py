"""MLflow adapter: tracking runs, the model registry, aliases and the audit trail.

Every call takes the config (or a tracking URI) explicitly; nothing is set at import time.
Model versions are MLflow pyfunc models whose artifacts hold the kfops model folder, so
`mlflow models serve` works, while kfops' own server loads the native weights directly.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kfops.errors import KfopsError, RegistryError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from kfops.config import KfopsConfig

T = TypeVar("T")
MODEL_ARTIFACT_KEY = "kfops_model"
PYFUNC_ENTRY = Path(__file__).with_name("mlflow_pyfunc.py")
CHAMPION, CHALLENGER = "champion", "challenger"
TAG_PREFIX = "kfops."
AUDIT_PREFIX = "kfops.audit."
IDEMPOTENCY_TAG = "kfops.idempotency_key"
BLESSED_TAG = "kfops.blessed"


def retry(call: Callable[[], T], what: str, attempts: int = 4, base_delay: float = 0.5) -> T:
    """Retry calls to the tracking server with exponential backoff, then fail with a clear error."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import ConnectionError as RequestsConnectionError

    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return call()
        except (RequestsConnectionError, ConnectionError, TimeoutError) as err:
            last = err
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "INVALID_PARAMETER" in str(err.error_code):
                raise
            last = err
        if attempt + 1 < attempts:
            time.sleep(base_delay * 2**attempt)
    raise RegistryError(f"MLflow did not answer while trying to {what}: {last}",
                        hint="check registry.tracking_uri and that the tracking server is up") from last


def client(cfg: KfopsConfig) -> MlflowClient:
    import mlflow
    from mlflow import MlflowClient

    # MLflow reads these per request; its defaults retry for minutes before a clear error can be given.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.registry.http_max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(cfg.registry.http_timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    if cfg.tracking_uri.startswith("sqlite:///"):
        Path(cfg.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    if cfg.registry.registry_uri:
        mlflow.set_registry_uri(cfg.registry.registry_uri)
    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry.registry_uri or cfg.tracking_uri)


def ensure_experiment(cfg: KfopsConfig) -> str:
    mlflow_client = client(cfg)

    def get_or_create() -> str:
        found = mlflow_client.get_experiment_by_name(cfg.registry.experiment)
        if found is not None:
            return found.experiment_id
        # A tracking server decides artifact locations itself unless the config names one.
        embedded = cfg.registry.tracking_uri is None
        location = cfg.registry.artifact_location or (cfg.artifact_root if embedded else None)
        return mlflow_client.create_experiment(cfg.registry.experiment, artifact_location=location)

    return retry(get_or_create, f"create experiment '{cfg.registry.experiment}'")


def code_version() -> str:
    """The git sha of the working tree, when there is one (``KFOPS_CODE_VERSION`` wins)."""
    if os.environ.get("KFOPS_CODE_VERSION"):
        return os.environ["KFOPS_CODE_VERSION"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def log_model(model_dir: Path, example: pd.DataFrame, predictions: pd.DataFrame) -> str:
    """Log the kfops model folder as an MLflow pyfunc (models-from-code: no pickle) in the active run."""
    from mlflow.models import infer_signature

    signature = infer_signature(example, predictions)
    with tempfile.TemporaryDirectory() as staging:
        # MLflow names the artifact folder after the source folder: stage it under a fixed name.
        staged = Path(staging) / MODEL_ARTIFACT_KEY
        shutil.copytree(model_dir, staged)
        return _log_pyfunc(staged, signature, example)


def _log_pyfunc(model_dir: Path, signature, example: pd.DataFrame) -> str:
    import mlflow

    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_ENTRY),
        artifacts={MODEL_ARTIFACT_KEY: str(model_dir)},
        signature=signature,
        input_example=example,
        # Naming requirements skips MLflow's inference, which loads the model in a subprocess (~5 s).
        pip_requirements=serving_requirements(),
    )
    return info.model_uri


def serving_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", "xgboost", "torch", "pandas", "numpy", "scikit-learn", "pyarrow"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def fetch_model_dir(tracking_uri: str, model_uri: str, dst: Path | None = None) -> Path:
    """Download ``models:/name/version`` (or ``@alias``) and return the kfops model folder inside it."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst) if dst else None)
    return model_dir_in(Path(local), model_uri)


def model_dir_in(mlflow_model: Path, model_uri: str = "") -> Path:
    """The kfops model folder inside a downloaded MLflow model, as its MLmodel file names it."""
    import yaml

    mlmodel = mlflow_model / "MLmodel"
    try:
        flavor = yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"]
        folder = mlflow_model / flavor["artifacts"][MODEL_ARTIFACT_KEY]["path"]
    except (OSError, KeyError, TypeError) as err:
        raise RegistryError(f"{model_uri or mlflow_model} holds no kfops model (no '{MODEL_ARTIFACT_KEY}' artifact)") from err
    if not folder.is_dir():
        raise RegistryError(f"{model_uri or mlflow_model}: the kfops model folder {folder} is missing")
    return folder


def model_version(cfg: KfopsConfig, version: str | int | None = None, alias: str | None = None) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    mlflow_client = client(cfg)
    name = cfg.registry.model_name
    try:
        if alias:
            return retry(lambda: mlflow_client.get_model_version_by_alias(name, alias), f"read {name}@{alias}")
        return retry(lambda: mlflow_client.get_model_version(name, str(version)), f"read {name} v{version}")
    except MlflowException:
        return None


def champion(cfg: KfopsConfig) -> ModelVersion | None:
    return model_version(cfg, alias=CHAMPION)


def register_version(
    cfg: KfopsConfig, run_id: str, model_uri: str, tags: dict[str, str], idempotency_key: str
) -> tuple[ModelVersion, bool]:
    """Register the run's model once per ``idempotency_key`` (pipeline run + task).

    Returns (version, created). A retried step finds the version it made and creates no duplicate.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(cfg)
    name = cfg.registry.model_name

    def ensure_model() -> None:
        try:
            mlflow_client.get_registered_model(name)
        except MlflowException:
            mlflow_client.create_registered_model(name, description="Registered by kfops.")

    retry(ensure_model, f"create registered model '{name}'")
    existing = retry(
        lambda: mlflow_client.search_model_versions(f"name='{name}' and tags.`{IDEMPOTENCY_TAG}`='{idempotency_key}'"),
        "search model versions",
    )
    if existing:
        return existing[0], False
    all_tags = {**tags, IDEMPOTENCY_TAG: idempotency_key}
    import mlflow

    # mlflow.register_model resolves MLflow 3 logged-model URIs (models:/m-...) to their model id.
    version = retry(lambda: mlflow.register_model(model_uri, name, tags=all_tags), f"register a version of '{name}'")
    return version, True


def record_audit(cfg: KfopsConfig, event: dict[str, Any]) -> None:
    """Append an event to the audit trail, kept as registered-model tags (one per event)."""
    mlflow_client = client(cfg)
    stamp = dt.datetime.now(dt.UTC)
    event = {"at": stamp.isoformat(timespec="milliseconds"), "who": event.get("who") or _who(), **event}
    key = f"{AUDIT_PREFIX}{stamp:%Y%m%dT%H%M%S%f}"
    retry(lambda: mlflow_client.set_registered_model_tag(cfg.registry.model_name, key, json.dumps(event)),
          "record the audit trail")


def _who() -> str:
    try:
        return os.environ.get("KFOPS_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def audit_trail(cfg: KfopsConfig) -> list[dict[str, Any]]:
    mlflow_client = client(cfg)
    model = retry(lambda: mlflow_client.get_registered_model(cfg.registry.model_name), "read the registered model")
    events = [json.loads(v) for k, v in model.tags.items() if k.startswith(AUDIT_PREFIX)]
    return sorted(events, key=lambda e: e["at"])


def move_alias(
    cfg: KfopsConfig, alias: str, version: str | int, reason: str, who: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Point ``alias`` at ``version`` and record who moved it, from which version, and why."""
    target = model_version(cfg, version=version)
    if target is None:
        raise KfopsError(f"model '{cfg.registry.model_name}' has no version {version}",
                         hint="list versions with `kfops history` or the MLflow UI")
    if alias == CHAMPION and target.tags.get(BLESSED_TAG) != "true" and not force:
        raise KfopsError(f"version {version} was never blessed by the evaluation gate",
                         hint="pass --force to promote it anyway; the override is recorded in the audit trail")
    previous = model_version(cfg, alias=alias)
    mlflow_client = client(cfg)
    retry(lambda: mlflow_client.set_registered_model_alias(cfg.registry.model_name, alias, str(version)),
          f"set @{alias}")
    event = {
        "action": "alias",
        "alias": alias,
        "from_version": str(previous.version) if previous else None,
        "to_version": str(version),
        "reason": reason,
        "forced": force,
        "who": who or _who(),
    }
    record_audit(cfg, event)
    return event


def lineage(cfg: KfopsConfig, version: str | int) -> dict[str, Any]:
    found = model_version(cfg, version=version)
    if found is None:
        raise KfopsError(f"model '{cfg.registry.model_name}' has no version {version}")
    tags = {k.removeprefix(TAG_PREFIX): v for k, v in found.tags.items() if k.startswith(TAG_PREFIX)}
    return {
        "model": found.name,
        "version": found.version,
        "run_id": found.run_id,
        "source": found.source,
        "aliases": list(getattr(found, "aliases", []) or []),
        "created": dt.datetime.fromtimestamp(found.creation_timestamp / 1000, dt.UTC).isoformat(),
        **tags,
    }
