"""Typed configuration: one pydantic model per concern, loaded from YAML, overridable.

Precedence, lowest first: model defaults < ``kfops.yaml`` < ``KFOPS__SECTION__KEY`` environment
variables < ``--set section.key=value`` on the command line. Nothing here touches the disk at
import time; :func:`load_config` is the only reader.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from kfops.core.drift import DriftConfig
from kfops.core.redaction import redact_uri, strip_password
from kfops.core.retrain_policy import RetrainPolicy
from kfops.errors import ConfigError

CONFIG_FILENAME = "kfops.yaml"
ENV_PREFIX = "KFOPS__"
CONFIG_JSON_ENV = "KFOPS_CONFIG_JSON"  # a whole resolved config, e.g. in an InferenceService's container
# The project folder: kfops.yaml, expectations/, feature_repo/ (and pipelines/, components/). Relative
# paths of a config a step receives as JSON resolve against it; unset, against the working directory
# (in the image: its WORKDIR, /opt/kfops). `kfops run` sets it to the config file's folder for its tasks.
PROJECT_DIR_ENV = "KFOPS_PROJECT_DIR"
# Path keys, by what they hold: files of the project, read only; and state kfops writes.
# A project's name is a key segment of the shared state store: no '/', no spaces, no leading dot.
PROJECT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
PROJECT_PATH_KEYS = ("dataset.source_dir", "validation.suites_dir", "features.repo_path")
STATE_PATH_KEYS = ("data_dir", "serving.inference_log_dir")
# Secrets (see docs/security.md, "Where secrets go"). SECRET_KEYS hold nothing but a credential:
# SecretStr fields, never serialised. CREDENTIAL_KEYS are URIs and connection strings that may
# carry one (``user:password@``, Redis ``password=``): serialised without it. Either comes back
# where a step or the model server runs, from its KFOPS__SECTION__KEY environment variable
# (:meth:`KfopsConfig.with_secrets`), which on a cluster a Kubernetes Secret fills.
SECRET_KEYS = ("features.redis_password", "notify.webhook_url")
# Secrets only pipeline runs use: never handed to a model server (local, container or predictor).
RUN_ONLY_SECRET_KEYS = ("notify.webhook_url",)
CREDENTIAL_KEYS = ("registry.tracking_uri", "registry.registry_uri", "features.registry", "features.redis_connection")
# Keys with no sensible default: what the dataset is. Unset, a pipeline is refused when it is built
# (:meth:`KfopsConfig.check_required`) and a step that needs one names it (:meth:`KfopsConfig.require`).
REQUIRED_KEYS = ("dataset.loader", "dataset.entity_builder", "dataset.row_id", "dataset.start", "dataset.end",
                 "validation.tables")
REQUIRED_HINT = ("a dataset needs its loader, entity builder, row id, window (start, end) and raw tables in "
                 "kfops.yaml: see README.md, "
                 "'Bring your own data', and the example kfops.yaml in the kfops repository")


def env_name(key: str) -> str:
    """The environment variable that overrides ``section.key``: ``KFOPS__SECTION__KEY``."""
    return ENV_PREFIX + "__".join(part.upper() for part in key.split("."))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __repr_args__(self) -> Any:  # a printed or logged config shows no password
        for name, value in super().__repr_args__():
            yield name, (redact_uri(value) if isinstance(value, str) else value)


class DatasetConfig(_Strict):
    """Which data to ingest, and the window of it."""

    loader: str | None = Field(
        None,
        description="Required. `module:function` returning a dict of table name -> DataFrame for a window "
        "(given the config).",
    )
    entity_builder: str | None = Field(
        None,
        description="Required. `module:function` turning the raw tables (and the config) into the entity frame: "
        "row id, join keys, event time, label and request-time features.",
    )
    feast_sources_writer: str | None = Field(
        None,
        description="`module:function` writing the Feast offline source files from the raw tables into a "
        "folder; none: the Feast definitions read sources that already exist.",
    )
    request_builder: str | None = Field(
        None,
        description="`module:attr`, a `RequestBuilder` (kfops.core.requests) describing a raw serving request: "
        "its fields and how to derive request features and the event time from them. Default: the raw request "
        "is the feature views' join keys plus the model features no view provides, with an optional event "
        "time (dataset.request_time_field; ISO 8601; default now).",
    )
    request_time_field: str = Field(
        "event_timestamp", min_length=1,
        description="Without dataset.request_builder: the raw request's optional field holding each row's "
        "event time (ISO 8601; default now), the time its features are read as of. `kfops init` names it after "
        "the events table's time column, so a client sends an event as the table holds it.",
    )
    source_dir: str | Path | None = Field(  # str first: JSON gives a URI back as it was
        None, description="Where the loader reads raw files from: a folder, or an object-store prefix "
        "(`s3://bucket/prefix`, which a pod can read; `kfops.datasets.read_table_file` reads either); default: "
        "the loader's own choice.",
    )
    start: dt.date | None = Field(None, description="Required. First day of the window (inclusive).")
    end: dt.date | None = Field(None, description="Required. Last day of the window (inclusive).")
    label: str = Field("label", description="Name of the binary label column in the entity frame.")
    event_timestamp: str = Field("event_timestamp", description="Event time column of the entity frame.")
    row_id: str | None = Field(None, description="Required. Unique row id column of the entity frame.")
    class_names: tuple[str, str] = Field(
        ("negative", "positive"), description="Names of label 0 and label 1, as reports and KFP metrics show them."
    )

    @field_validator("source_dir")
    @classmethod
    def _folder_unless_uri(cls, value: str | Path | None) -> str | Path | None:
        return Path(value) if isinstance(value, str) and not is_uri(value) else value

    @model_validator(mode="after")
    def _window_is_ordered(self) -> DatasetConfig:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"dataset.end ({self.end}) is before dataset.start ({self.start})")
        return self


class ValidationConfig(_Strict):
    """Great Expectations suites, kept as reviewable JSON files in the repo."""

    suites_dir: Path = Field(Path("expectations"), description="Folder of `<table>.json` suites.")
    tables: list[str] = Field(
        default_factory=list, description="Required. Raw tables (names the loader returns) to validate, each "
        "against `<suites_dir>/<table>.json`."
    )
    max_examples: int = Field(5, ge=0, description="Example failing rows to report per expectation.")
    volume_band: float = Field(
        0.5, gt=0, lt=1, description="Allowed relative change in rows per day against the previous run (0.5 = ±50%)."
    )
    label_rate_band: tuple[float, float] = Field(
        (0.02, 0.8), description="Allowed range of the training set's label rate (share of positive labels)."
    )
    window_timezone: str = Field(
        "UTC", description="Time zone of dataset.start/end; timestamps are checked against its midnights."
    )

    @field_validator("label_rate_band")
    @classmethod
    def _ordered_band(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low <= high <= 1:
            raise ValueError(f"label_rate_band must satisfy 0 <= low <= high <= 1, got {list(value)}")
        return value

    @field_validator("window_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone '{value}' (use an IANA name such as UTC or Europe/Paris)") from err
        return value


class FeaturesConfig(_Strict):
    """The Feast repository and what to pull from it."""

    repo_path: Path = Field(Path("feature_repo"), description="Folder holding the feature definitions.")
    definitions: str = Field(
        "definitions:build",
        description="`module:function` inside repo_path returning Feast objects, given the source dir.",
    )
    project: str = Field("kfops", description="Feast project name.")
    feature_refs: list[str] = Field(
        default_factory=list,
        description="Feature references `view:feature` joined point-in-time onto the entity frame.",
    )
    feature_set: str | None = Field(
        None, description="`module:NAME` of a `kfops.core.featureset.FeatureSet`, the one declaration of the "
        "Feast features (`module.py` beside kfops.yaml, or importable): feature_refs, when not written, are "
        "its features, and its string features are categorical. `kfops init` writes one."
    )
    request_features: list[str] = Field(
        default_factory=list,
        description="Entity-frame columns known at request time that the model uses directly.",
    )
    categorical: list[str] = Field(
        default_factory=list,
        description="Feature columns treated as categories (vocabulary learnt at training).",
    )
    forbidden_columns: list[str] = Field(
        default_factory=list,
        description="Columns known only after the event (leakage); feature views and training sets holding one "
        "are refused.",
    )
    online_store: Literal["sqlite", "redis"] = Field("sqlite", description="Online store kind.")
    redis_connection: str = Field(
        "127.0.0.1:6379", description="Redis connection string for Feast (`host:port[,ssl=true]`); a "
        "`password=` in it is never serialised: prefer redis_password."
    )
    redis_timeout_s: float = Field(
        2.0, gt=0, description="Redis socket connect and read timeout: a dead or paused Redis fails a lookup "
        "(503) within this long instead of hanging it. A `socket_timeout=` in redis_connection wins."
    )
    redis_password: SecretStr | None = Field(
        None, exclude=True, description="Password of the Redis online store. A secret: set it only through "
        "KFOPS__FEATURES__REDIS_PASSWORD (a Kubernetes Secret on a cluster); never serialised or shown."
    )
    registry: str | None = Field(
        None, description="Feast registry path or URI (s3://, postgresql://); default: under data_dir. A "
        "password in it is never serialised: give it through KFOPS__FEATURES__REGISTRY or PGPASSWORD."
    )
    materialize_online: bool = Field(
        False, description="featurize also loads the online store with each entity's latest features of the "
        "window, so the deployed server answers raw requests (what a production pipeline does; "
        "`kfops features materialize` does it by hand)."
    )

    @field_serializer("redis_connection", "registry")
    def _without_password(self, value: str | None) -> str | None:
        return strip_password(value) if value else value

    @property
    def online_connection(self) -> str:
        """Feast's Redis connection string, with the password from redis_password when set."""
        if self.redis_password is None:
            return self.redis_connection
        return f"{strip_password(self.redis_connection)},password={self.redis_password.get_secret_value()}"

    @property
    def refs_by_view(self) -> dict[str, list[str]]:
        """The feature names of each feature view in ``feature_refs`` ('view:feature'), in order."""
        by_view: dict[str, list[str]] = {}
        for ref in self.feature_refs:
            view, _, name = ref.partition(":")
            by_view.setdefault(view, []).append(name)
        return by_view


class SplitConfig(_Strict):
    """Time-ordered split; fractions of the window's rows by event time."""

    train_fraction: float = Field(0.7, gt=0, lt=1)
    validation_fraction: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_a_test_split(self) -> SplitConfig:
        if self.train_fraction + self.validation_fraction >= 1:
            raise ValueError("split.train_fraction + split.validation_fraction must leave room for a test split")
        return self


class XGBoostConfig(_Strict):
    """Hyperparameters of the XGBoost trainer (used when train.trainer is xgboost)."""

    n_estimators: int = Field(400, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    max_depth: int = Field(7, ge=1)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(0.9, gt=0, le=1)
    colsample_bytree: float = Field(0.9, gt=0, le=1)
    early_stopping_rounds: int = Field(30, ge=1)
    max_cat_to_onehot: int = Field(8, ge=1)
    nthread: int | None = Field(None, description="Threads; default: all cores.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto` picks cuda when a GPU is visible.")


class TorchConfig(_Strict):
    """The PyTorch trainer (train.trainer: torch): network, optimisation and torchrun processes."""

    epochs: int = Field(4, ge=1)
    batch_size: int = Field(1024, ge=1, description="Per-process batch size.")
    learning_rate: float = Field(2e-3, gt=0)
    hidden: list[int] = Field([128, 64])
    embedding_dim: int = Field(8, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    nproc_per_node: int = Field(1, ge=1, description="Processes per node for torchrun.")
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    seed: int = 42
    num_nodes: int = Field(1, ge=1, description=">1 submits a Kubeflow Trainer TrainJob on clusters.")
    rank_timeout_s: int = Field(120, ge=5, description="A rank that waits longer than this fails.")
    trainjob_timeout_s: int = Field(
        6 * 3600, ge=60, description="num_nodes > 1: a TrainJob not done within this is deleted and the step fails."
    )
    num_threads: int | None = Field(None, ge=1, description="CPU threads per process; default: cores / processes.")


class TrainConfig(_Strict):
    """Which trainer fits the model, and the seed; each built-in trainer has its own section below."""

    trainer: str = Field(
        "xgboost",
        description="`xgboost`, `torch`, or `module:Class` of your own trainer (a `kfops.core.model.ModelPlugin`: "
        "`module.py` beside kfops.yaml, or importable; see docs/trainers.md). A model is loaded only by the "
        "trainer that wrote it: a built-in one, or the plug-in this key names.",
    )
    xgboost: XGBoostConfig = Field(default_factory=XGBoostConfig)
    torch: TorchConfig = Field(default_factory=TorchConfig)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Hyperparameters for a plug-in trainer, passed to its `fit` as they are (JSON values); "
        "the built-in trainers take theirs from their own sections (as train.xgboost is kept while "
        "train.trainer is torch, these are kept while it is built-in).",
    )
    also_load: list[str] = Field(
        default_factory=list,
        description="Plug-in trainers (`module:Class`), besides train.trainer, whose models kfops may load: "
        "the champion's while you move to another trainer. A model folder names its trainer, and loading "
        "imports it, so no other plug-in is ever imported because a model says so.",
    )
    seed: int = 42

    @field_validator("trainer")
    @classmethod
    def _known_trainer(cls, value: str) -> str:
        from kfops.core.model import BUILTIN_TRAINERS, PLUGIN_TRAINER

        if value not in BUILTIN_TRAINERS and not re.fullmatch(PLUGIN_TRAINER, value):
            raise ValueError(f"'{value}' is neither a built-in trainer ({', '.join(BUILTIN_TRAINERS)}) "
                             "nor module:Class of your own")
        return value

    @field_validator("also_load")
    @classmethod
    def _plugins_only(cls, values: list[str]) -> list[str]:
        from kfops.core.model import PLUGIN_TRAINER

        for value in values:
            if not re.fullmatch(PLUGIN_TRAINER, value):
                raise ValueError(f"'{value}' is not module:Class (built-in trainers always load)")
        return values

    @property
    def plugin(self) -> str | None:
        """The plug-in trainer, ``module:Class``, or None for a built-in one."""
        from kfops.core.model import BUILTIN_TRAINERS

        return None if self.trainer in BUILTIN_TRAINERS else self.trainer

    @property
    def plugins(self) -> tuple[str, ...]:
        """Every plug-in trainer whose models may be loaded: train.trainer's, then train.also_load."""
        own = (self.plugin,) if self.plugin else ()
        return own + tuple(name for name in self.also_load if name not in own)


class GateConfig(_Strict):
    """Thresholds for blessing a model. With none set, nothing is blessed (fail closed)."""

    min_roc_auc: float | None = Field(0.6, description="Absolute floor on test ROC AUC.")
    min_pr_auc: float | None = Field(None, description="Absolute floor on test PR AUC.")
    max_log_loss: float | None = Field(None, description="Ceiling on test log loss.")
    min_improvement: float | None = Field(
        0.0, description="Minimum ROC AUC gain over the champion (negative tolerates a small loss)."
    )
    max_slice_regression: float | None = Field(
        0.05, description="Most any slice's ROC AUC may drop versus the champion."
    )
    slices: list[str] = Field(
        default_factory=list, description="Columns whose values are judged one by one against the champion "
        "(max_slice_regression); none: no slice is judged."
    )
    min_slice_rows: int = Field(200, ge=1, description="Slices smaller than this are not judged.")


class EvaluateConfig(_Strict):
    """How the trained model is judged on the test split: threshold, calibration, the gate, behaviour checks."""

    threshold_metric: Literal["f1"] = "f1"
    calibration_bins: int = Field(10, ge=2)
    gate: GateConfig = Field(default_factory=GateConfig)
    behavioural_checks: bool = True
    invariant_columns: list[str] = Field(
        default_factory=list,
        description="Changing these must not change a prediction (behavioural invariance check); none: no check.",
    )
    non_decreasing_columns: list[str] = Field(
        default_factory=list, description="Raising these must not lower the mean predicted probability (direction "
        "check); none: no check."
    )


class RegistryConfig(_Strict):
    """The MLflow tracking store and Model Registry: where runs and model versions are kept, and promotion."""

    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: SQLite under data_dir. A `user:password@` in it is "
        "never serialised or shown: give it through KFOPS__REGISTRY__TRACKING_URI, or use PGPASSWORD, "
        "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN."
    )
    registry_uri: str | None = Field(None, description="MLflow registry URI; default: the tracking URI.")
    artifact_location: str | None = Field(None, description="Default artifact root for new experiments.")
    experiment: str = Field("kfops", description="MLflow experiment of the training runs.")
    model_name: str = Field("model", description="Registered model name (and the model's name in serving URLs).")
    auto_promote: bool = Field(False, description="Move @champion to a blessed model without a person.")
    http_max_retries: int = Field(2, ge=0, description="MLflow's own retries per HTTP request to a tracking server.")
    http_timeout_s: int = Field(30, ge=1, description="Timeout of one HTTP request to a tracking server.")
    abandoned_run_hours: float = Field(
        24.0, gt=0, description="A run still RUNNING after this long was left by a killed task: the next run "
        "in the experiment marks it FAILED (one of the same pipeline run and step at once)."
    )

    @field_serializer("tracking_uri", "registry_uri")
    def _without_password(self, value: str | None) -> str | None:
        return strip_password(value) if value else value


class CanaryConfig(_Strict):
    """Canary analysis: a new version takes a share of traffic and is promoted only if it stays healthy."""

    traffic_percent: int = Field(10, ge=1, le=99, description="Share of requests the canary receives.")
    bake_s: float = Field(300.0, ge=0, description="How long the canary must stay healthy before promotion.")
    min_requests: int = Field(200, ge=1, description="Canary requests needed before it can be judged.")
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Most 5xx per request, and most extra 4xx versus the stable version."
    )
    max_p99_ms: float = Field(100.0, gt=0, description="Ceiling on the canary's p99 latency.")
    max_p99_ratio: float = Field(1.5, ge=1, description="Most the canary's p99 may exceed the stable version's.")
    latency_slack_ms: float = Field(
        5.0, ge=0, description="p99 differences below this are noise, whatever the ratio."
    )
    poll_s: float = Field(10.0, gt=0, description="Seconds between metric reads.")
    timeout_s: float = Field(
        1800.0, gt=0, description="Still too little traffic to judge after this long: roll back (fail closed)."
    )
    split_port: int = Field(8090, ge=1, le=65535, description="Local traffic split in front of the two servers.")
    canary_port: int | None = Field(None, ge=1, le=65535, description="Local canary server; default http_port + 1.")

    @model_validator(mode="after")
    def _bake_within_timeout(self) -> CanaryConfig:
        if self.bake_s > self.timeout_s:
            raise ValueError(f"bake_s ({self.bake_s:g}) is longer than timeout_s ({self.timeout_s:g})")
        return self


class InferenceServiceConfig(_Strict):
    """The KServe InferenceService the deploy step renders on a cluster (serverless mode, for canaries)."""

    name: str | None = Field(None, description="InferenceService name; default: registry.model_name.")
    cpu_request: str = "1"
    memory_request: str = "2Gi"
    cpu_limit: str = "2"
    memory_limit: str = "4Gi"
    min_replicas: int = Field(1, ge=0, description="0 lets Knative scale to zero.")
    max_replicas: int = Field(5, ge=1)
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] = "rps"
    scale_target: int = Field(1000, ge=1, description="Target per replica of scale_metric (rps, requests, %).")
    container_concurrency: int | None = Field(None, ge=0, description="Hard cap of concurrent requests per replica.")
    timeout_s: int = Field(30, ge=1, description="Request timeout at the predictor.")
    online_lookup: str = Field("feast", description="Features for raw requests: feast or none.")
    transformer: bool = Field(
        False, description="Complete raw requests in a separate KServe transformer container instead of in-process."
    )
    logger_url: str | None = Field(
        None, description="CloudEvents sink for KServe's request/response logger; none: no logger."
    )
    logger_mode: Literal["all", "request", "response"] = "all"
    log_sink: bool = Field(
        False, description="Run kfops' inference-log sink beside the InferenceService and point its logger there: "
        "a Deployment (one replica: a request and its response must meet in one process), a Service, and a "
        "NetworkPolicy that admits only this InferenceService's pods (KServe's logger sends no credentials, so "
        "the network is what keeps forged rows out). It writes to `serving.inference_log_store`, else "
        "`<state.store>/<project>/inference_logs`. Instead of `logger_url`."
    )
    ready_timeout_s: float = Field(600.0, gt=0, description="Wait this long for the new revision to be Ready.")
    canary: bool = Field(True, description="Roll a new version out as a canary when one is already serving.")
    ingress_namespaces: list[str] = Field(
        default_factory=lambda: ["knative-serving", "istio-system"],
        description="Namespaces whose pods may reach the predictor (the NetworkPolicy rendered with the "
        "InferenceService); pods of the serving namespace labelled `kfops.io/model-client: \"true\"` may too.",
    )

    @model_validator(mode="after")
    def _replicas_ordered(self) -> InferenceServiceConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        if self.log_sink and self.logger_url:
            raise ValueError(f"log_sink runs kfops' own sink for the logger; logger_url ({self.logger_url}) names "
                             "another: set one of them")
        return self


class ServingConfig(_Strict):
    """How deploy serves the model: where (a local server or KServe), which registry alias, and batching limits."""

    target: Literal["auto", "local", "docker", "kserve"] = Field(
        "auto", description="Where deploy serves: a local process, a container of cluster.serving_image "
        "(docker), or a KServe InferenceService; auto: kserve inside a Kubernetes pod (a KFP run on the "
        "cluster), docker in `kfops run --runner docker`, local otherwise."
    )
    host: str = Field("127.0.0.1", description="Bind address of the local model server.")
    http_port: int = Field(8080, ge=1, le=65535)
    model_alias: str | None = Field(
        None, description="Registry alias deploy serves; default: `champion`. A newly registered version is "
        "`@challenger` and serves only once it is @champion: the first version at once, later ones by "
        "`kfops promote` or registry.auto_promote."
    )
    startup_timeout_s: float = Field(120.0, gt=0)
    max_batch_size: int = Field(256, ge=1)
    max_latency_ms: float = Field(2.0, ge=0)
    max_payload_bytes: int = Field(1_000_000, ge=1024)
    workers: int = Field(
        1, ge=1, le=64, description="Server processes sharing the port (SO_REUSEPORT), each with its own event loop "
        "and copy of the model: up to one per core. With more than one, reload by SIGHUP or restart (the HTTP "
        "reload route answers 409) and each process keeps its own /metrics."
    )
    inference_log_dir: Path | None = Field(None, description="Where predictions are logged; default: under data_dir.")
    request_timeout_s: float = Field(
        10.0, gt=0, description="Deadline of one inference request on the model server and the transformer; "
        "past it the answer is 504."
    )
    reload_roots: list[Path] = Field(
        default_factory=list, description="Folders a `model_dir` reload may load from (relative: under data_dir); "
        "default: data_dir. Any other folder is refused before a file is read."
    )
    model_repository: bool = Field(
        False, description="Turn on KServe's model repository routes (`/v2/repository/...`, load and unload); "
        "token-protected like reload. Off: they answer 404."
    )
    inference_log_store: str | None = Field(
        None, description="s3://bucket/prefix where the cluster's log sink writes; the drift job reads it when set."
    )
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    kserve: InferenceServiceConfig = Field(default_factory=InferenceServiceConfig)



class StateConfig(_Strict):
    """Where state that outlives a run lives: retrain decisions, validation baselines, drift references."""

    store: str | None = Field(
        None, description="s3://bucket/prefix shared by every pod of a cluster run, and by every project: each "
        "keeps its state under `<prefix>/<project>/` (and, under `<prefix>/<project>/inference_logs/`, the inference "
        "logs unless `serving.inference_log_store` is set); default: files under data_dir, which a pod loses when its "
        "task ends."
    )

    @field_validator("store")
    @classmethod
    def _object_store(cls, value: str | None) -> str | None:
        if value is None:
            return None
        bucket = value[len("s3://"):].partition("/")[0] if value.startswith("s3://") else ""
        if not bucket:
            raise ValueError(f"'{value}' is not s3://<bucket>/<prefix>; leave state.store unset for files "
                             "under data_dir")
        return value.rstrip("/")


NOTIFY_EVENTS = ("failed", "registered", "refused", "retrained", "interrupted")


class NotifyConfig(_Strict):
    """Where kfops says how unattended runs ended: a webhook that takes a JSON POST (Slack's or
    Mattermost's incoming webhooks read its `text`; a service of yours reads `kfops` too)."""

    webhook_url: SecretStr | None = Field(
        None, exclude=True, description="The webhook's URL. A secret (such URLs carry their token): give it as "
        "KFOPS__NOTIFY__WEBHOOK_URL, on a cluster as that key of the Secret cluster.secrets_name; it is never "
        "written to YAML, MLflow, a log or a message. Unset: nothing is sent."
    )
    events: list[Literal["failed", "registered", "refused", "retrained", "interrupted"]] = Field(
        default_factory=lambda: ["failed", "registered", "refused"],
        description="What is sent: a run that failed; a model version registered; a model the gate refused; a "
        "retraining run that retrained; a local run stopped with Ctrl-C. Local runs send each; on a cluster the "
        "pipelines' exit handlers send all but interrupted (registered and refused as MLflow has them).",
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="Seconds the webhook has to answer; a slower one is "
                             "reported and the run's result stands.")

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")  # the value itself is not repeated: it is a secret
        return value


class RetentionConfig(_Strict):
    """How long local runs' files are kept under data_dir. After each local run (and with `kfops prune`)
    older ones are removed; the registry, its artifacts and the audit trail are never touched. On a
    cluster the buckets' lifecycle rules do this (Terraform: `pipeline_root_expiration_days`)."""

    run_days: int | None = Field(
        90, ge=1, description="Days a local pipeline run's folder (`<data_dir>/pipeline_root/<run>`: its task "
        "artifacts and reports), its steps' scratch (`<data_dir>/work/<step>/<run>`), its log and its compiled "
        "YAML are kept after they were last written; none: kept for ever. The same default as the cluster's "
        "pipeline root."
    )
    keep_newest_runs: int = Field(
        3, ge=1, description="The newest run folders kept whatever their age: the reports the last runs printed, "
        "and the feature sources `kfops predict --raw` reads by default."
    )
    inference_log_days: int | None = Field(
        None, ge=1, description="Days of the local inference log kept before today (whole UTC days, by their "
        "`date=` partition; today's is always kept); none: kept for ever. Keep at least the longest window a "
        "retraining run checks with `drift.current_source=inference_logs`."
    )


class ClusterConfig(_Strict):
    """The Kubeflow cluster: KFP endpoint, images, GPU scheduling and service accounts (unset: local runs)."""

    kfp_host: str | None = Field(None, description="KFP endpoint; with none set, kfops runs locally.")
    namespace: str | None = None
    token_path: Path | None = None
    image: str = Field("ghcr.io/kfops/kfops:0.1.0", description="CPU image every component runs in.")
    gpu_image: str = Field("ghcr.io/kfops/kfops-gpu:0.1.0", description="CUDA image for GPU training.")
    serving_image: str = Field(
        "ghcr.io/kfops/kfops-serving:0.1.0",
        description="Slim image the model server (predictor, transformer, log sink) runs in.",
    )
    pipeline_root: str | None = None
    gpu_node_selector: dict[str, str] = Field(default_factory=lambda: {"kfops.io/node-pool": "gpu"})
    gpu_toleration_key: str = "nvidia.com/gpu"
    gpus_per_node: int = Field(0, ge=0, description=">0 puts the train task on GPU nodes.")
    accelerator_type: str = "nvidia.com/gpu"
    service_account: str | None = Field(
        None, description="Service account pipeline runs use (its cloud identity reaches the buckets)."
    )
    serving_namespace: str | None = Field(None, description="Namespace of the KServe InferenceServices.")
    serving_service_account: str | None = Field(
        None, description="Service account of the InferenceServices (reads model artifacts)."
    )
    log_sink_service_account: str | None = Field(
        None, description="Service account of the inference-log sink (`serving.kserve.log_sink`): it writes the "
        "inference log's bucket, which the predictors' account need not; default: serving_service_account."
    )
    secrets_name: str | None = Field(
        None, description="Kubernetes Secret in the serving namespace whose keys are the KFOPS__ variables of "
        "the secrets the predictor needs (e.g. KFOPS__FEATURES__REDIS_PASSWORD); referenced, never copied."
    )


class KfopsConfig(_Strict):
    """Everything a pipeline run needs. Serialised into the compiled pipeline, so it is reproducible."""

    project: str = Field("kfops", pattern=PROJECT_NAME,
                         description="Project name: letters, digits, '.', '_' and '-'; with `state.store` set, "
                         "the project's state lives under `<state.store>/<project>/`.")
    data_dir: Path = Field(
        Path(".kfops"), description="Embedded-default state: raw snapshots, MLflow, Feast, logs. Relative: beside "
        "kfops.yaml; in a cluster's pod (no KFOPS_PROJECT_DIR), under $TMPDIR/kfops-<uid>, as scratch."
    )

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_named(cls, value: Any) -> Any:
        # An empty value (an unset variable in a manifest) is Path("."): every store in the project folder.
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("must name a folder (it is empty); leave it out for the default .kfops")
        return value
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    state: StateConfig = Field(default_factory=StateConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser()

    # Provenance of the absolute paths, set by resolve(): {key: (as written, as resolved)} and the
    # folder they were resolved against. Not part of the config's value (see __eq__), never serialised.
    _written: dict[str, tuple[Path, Path]] = PrivateAttr(default_factory=dict)
    _resolved_against: Path | None = PrivateAttr(None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KfopsConfig):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, as every pydantic model that is not frozen

    # Derived locations: one place decides where the embedded default keeps things.
    def resolve(self, base: Path | None = None, state_base: Path | None = None) -> KfopsConfig:
        """Return a copy whose relative paths are absolute against ``base`` (default: cwd).

        State paths (``data_dir``, ``serving.inference_log_dir``) resolve against ``state_base``
        when given, else ``base`` too. What each path was before is remembered, so
        :meth:`portable` can give the paths back as written.
        """
        base = (base or Path.cwd()).resolve()
        state_base = base if state_base is None else state_base
        cfg = self
        written = dict(self._written)
        for key in (*PROJECT_PATH_KEYS, *STATE_PATH_KEYS):
            value = _get_key(self, key)
            if value is None:
                continue
            absolute = _absolute(value, state_base if key in STATE_PATH_KEYS else base)
            if absolute != value:
                written[key] = (value, absolute)
                cfg = _with_key(cfg, key, absolute)
        cfg = cfg.model_copy()
        cfg._written = written
        # Re-resolving a resolved config changes no path: it keeps the folder they came from.
        unchanged = cfg.__dict__ == self.__dict__ and self._resolved_against is not None
        cfg._resolved_against = self._resolved_against if unchanged else base
        return cfg

    def resolve_at_run_time(self, environ: dict[str, str] | None = None) -> KfopsConfig:
        """Resolve relative paths where a pipeline step runs: a kfp.local task or a pod on a cluster.

        The compiled pipeline carries paths as the user wrote them (:meth:`portable`), so it runs
        on any machine. Files of the project resolve against ``$KFOPS_PROJECT_DIR``, else the
        working directory (the image's WORKDIR holds expectations/, feature_repo/, kfops.yaml).
        State resolves against ``$KFOPS_PROJECT_DIR`` too when it is set: `kfops run` sets it to
        the config file's folder, so a local run keeps ``.kfops`` beside kfops.yaml. Without it
        (a pod), state goes to :func:`scratch_dir` instead: the working directory is the image's
        code folder, which may be read-only to the pod's (non-root, possibly arbitrary) user and
        must not be written at run time anyway; and a pod's disk is gone when the task ends, so
        data_dir is scratch there: what outlives a task lives in the shared stores (MLflow
        server, Feast registry, pipeline artifacts). An absolute path stays as written.

        Secrets, which the compiled pipeline never carries, come back from the environment
        (:meth:`with_secrets`).
        """
        variables: Mapping[str, str] = os.environ if environ is None else environ
        cfg = self.with_secrets(variables)
        project = variables.get(PROJECT_DIR_ENV)
        if project:
            base = Path(project).expanduser()
            return cfg.resolve(base)
        return cfg.resolve(Path.cwd(), state_base=scratch_dir())

    def with_secrets(self, environ: Mapping[str, str] | None = None) -> KfopsConfig:
        """A copy with the secrets that serialising dropped given back from ``KFOPS__`` variables.

        A secret key (``features.redis_password``) takes its variable whenever it is set. A URI
        or connection string takes its variable only when that names the same store as the
        value here once the password is set aside (``postgresql://u:pw@db/x`` for
        ``postgresql://u@db/x``): the password comes back, and a value chosen by ``--set`` is
        never replaced by a different one from the environment.
        """
        variables: Mapping[str, str] = os.environ if environ is None else environ
        cfg = self
        for key in SECRET_KEYS:
            value = variables.get(env_name(key))
            if value:
                cfg = _with_key(cfg, key, SecretStr(value))
        for key in CREDENTIAL_KEYS:
            value, current = variables.get(env_name(key)), _get_key(cfg, key)
            if value and current is not None and value != current and strip_password(value) == strip_password(current):
                cfg = _with_key(cfg, key, value)
        if cfg is not self:
            cfg = cfg.model_copy()
            cfg._written, cfg._resolved_against = dict(self._written), self._resolved_against
        return cfg

    def with_credentials(self, uri: str | None) -> str | None:
        """``uri`` with the password of this config's tracking or registry URI, when it names that store.

        A URI passed on a command line or kept in a state file has no password
        (:func:`~kfops.core.redaction.strip_password`); this gives it back in the process that
        connects.
        """
        if not uri:
            return uri
        for known in (self.registry.tracking_uri, self.registry.registry_uri):
            if known and strip_password(known) == strip_password(uri):
                return known
        return uri

    def secret_environment(self, serving: bool = False) -> dict[str, str]:
        """The ``KFOPS__`` variables that carry this config's secrets to a process it starts;
        ``serving``: to a model server, which gets none of the :data:`RUN_ONLY_SECRET_KEYS`.

        Values in clear: give them to a child process's environment (or a Kubernetes Secret),
        never to its command line, a file or a log.
        """
        found: dict[str, str] = {}
        for key in SECRET_KEYS:
            if serving and key in RUN_ONLY_SECRET_KEYS:
                continue
            value = _get_key(self, key)
            if value is not None:
                found[env_name(key)] = value.get_secret_value()
        for key in CREDENTIAL_KEYS:
            value = _get_key(self, key)
            if value and strip_password(value) != value:
                found[env_name(key)] = value
        return found

    def portable(self) -> KfopsConfig:
        """A copy with each path that :meth:`resolve` made absolute given back as written.

        This is what a compiled pipeline embeds: relative paths resolve where a step runs (see
        :meth:`resolve_at_run_time`), not against the folder of the machine that compiled it. A
        path set since it was resolved, or written absolute, stays as it is.
        """
        cfg = self
        for key, (written, resolved) in self._written.items():
            if _get_key(cfg, key) == resolved:
                cfg = _with_key(cfg, key, written)
        cfg = cfg.model_copy()
        cfg._written = {}
        cfg._resolved_against = None
        return cfg

    def with_state_in_scratch(self) -> KfopsConfig:
        """A copy that keeps its state paths here, but whose :meth:`portable` form leaves them unset
        (``data_dir`` relative): a task that shares no disk with this machine (a container) keeps
        its state in its own scratch folder, while this process still reads the pipeline root and
        logs under the absolute ``data_dir``."""
        cfg = self.model_copy()
        cfg._written = dict(self._written)
        cfg._resolved_against = self._resolved_against
        defaults = {"data_dir": KfopsConfig.model_fields["data_dir"].default}
        for key in STATE_PATH_KEYS:
            value = _get_key(self, key)
            if value is not None and Path(value).is_absolute():
                cfg._written[key] = (defaults.get(key), value)
        return cfg

    def missing_required(self) -> list[str]:
        """The :data:`REQUIRED_KEYS` left unset (or empty), in order."""
        return [key for key in REQUIRED_KEYS if not _get_key(self, key)]

    def check_required(self) -> None:
        """Refuse a config that does not say what its dataset is, naming every key it lacks."""
        missing = self.missing_required()
        if missing:
            raise ConfigError(f"required configuration missing: {', '.join(missing)}", hint=REQUIRED_HINT)

    def require(self, key: str) -> Any:
        """The value of ``section.key``; a :class:`ConfigError` naming it when it is unset or empty."""
        value = _get_key(self, key)
        if value is None or value == [] or value == "":
            raise ConfigError(f"required configuration missing: {key}", hint=REQUIRED_HINT)
        return value

    @property
    def resolved_against(self) -> Path | None:
        """The folder relative paths were resolved against (the config file's folder), if any."""
        return self._resolved_against

    def project_plugins(self) -> dict[str, str]:
        """Plug-in key -> module, for each plug-in (``kfops.core.files.PLUGIN_KEYS``) that is a module
        of the project folder, not kfops' own."""
        from kfops.core.files import PLUGIN_KEYS, project_plugins

        values: dict[str, str | None] = {}
        for key in PLUGIN_KEYS:
            section, _, name = key.partition(".")
            values[key] = getattr(getattr(self, section), name)
        return project_plugins(values, self.resolved_against)

    @property
    def tracking_uri(self) -> str:
        return self.registry.tracking_uri or f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.registry.artifact_location or (self.data_dir / "mlflow" / "artifacts").as_uri()

    @property
    def pipeline_root(self) -> Path:
        return self.data_dir / "pipeline_root"

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def inference_log_dir(self) -> Path:
        return self.serving.inference_log_dir or self.data_dir / "inference_logs"

    @property
    def inference_log_location(self) -> Path | str:
        """Where the drift job reads predictions: the cluster's log store, else ``inference_logs``
        in the state store when there is one, else the local log."""
        if self.serving.inference_log_store:
            return self.serving.inference_log_store
        return f"{self.state_location}/inference_logs" if self.state.store else self.inference_log_dir

    @property
    def state_location(self) -> Path | str:
        """Where state that outlives a run lives: ``<state.store>/<project>``, else data_dir.

        One store serves every project of a cluster (``kfops config from-terraform`` gives each the
        same bucket prefix), so each project keeps its state under its own name: another project's
        row counts, retrain decisions or inference logs are never read as this one's."""
        return f"{self.state.store}/{self.project}" if self.state.store else self.data_dir

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs: request features, then each Feast feature by name."""
        names = [ref.split(":", 1)[1] for ref in self.features.feature_refs]
        return [*self.features.request_features, *names]

    @property
    def window(self) -> tuple[dt.date, dt.date]:
        """``(dataset.start, dataset.end)``, the data window; a :class:`ConfigError` naming whichever
        is unset (there is no default window: it is the dataset's)."""
        start, end = self.dataset.start, self.dataset.end
        if start is None or end is None:
            unset = [key for key, value in (("dataset.start", start), ("dataset.end", end)) if value is None]
            raise ConfigError(f"required configuration missing: {', '.join(unset)}", hint=REQUIRED_HINT)
        return start, end

    @property
    def window_name(self) -> str:
        start, end = self.window
        return f"{start:%Y%m%d}-{end:%Y%m%d}"

    def to_json(self) -> str:
        """The config as JSON, without any secret (see :data:`SECRET_KEYS`, :data:`CREDENTIAL_KEYS`)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> KfopsConfig:
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            raise ConfigError(_describe(err)) from err


def is_uri(location: str | Path) -> bool:
    """``s3://bucket/key`` and the like: a location no local folder resolves."""
    return isinstance(location, str) and "://" in location


def _absolute(path: Path | str, base: Path) -> Path | str:
    if is_uri(path):
        return path
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _get_key(cfg: BaseModel, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _with_key(cfg: KfopsConfig, key: str, value: Any) -> KfopsConfig:
    """A copy of ``cfg`` with ``section.field`` (or a top-level field) set, without touching ``cfg``."""
    section, _, name = key.rpartition(".")
    if not section:
        return cfg.model_copy(update={name: value})
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update={name: value})})


def scratch_dir() -> Path:
    """Where a step without a project folder (a pod) keeps state given as a relative path.

    Under the system temp dir (``$TMPDIR``, e.g. an emptyDir a pod spec mounts), which any user
    may write, unlike ``$HOME``: a pod run as an arbitrary uid often has ``/`` as home. Per user,
    so two users on one machine never share it.
    """
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"kfops-{user}"


def _describe(err: ValidationError, sources: dict[str, str] | None = None) -> str:
    """One line naming each bad key; ``sources`` maps a key to where its value came from
    (``--set``, a ``KFOPS__`` variable), so the message points at what the user wrote."""
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        came = next((f" (from {source})" for key, source in (sources or {}).items()
                     if where == key or where.startswith(key + ".")), "")
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key '{where}'{came}")
        else:
            parts.append(f"{where}: {item['msg']}{came}")
    return "invalid configuration: " + "; ".join(parts)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML so numbers and lists keep their types."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override '{text}' has an empty key")
    if ".".join(path) in SECRET_KEYS:
        return path, raw  # taken as written: a password such as 0123 or yes is not a number or a boolean
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that leaves dates and times as text: pydantic reads them with the key's name in
    any error (YAML's own parser turns 2013-02-30 into a bare 'day is out of range for month')."""


def _unique_keys(loader: _YamlLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    """A mapping whose keys are all different: YAML would keep the last of two, silently."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"found the key '{key}' twice in one mapping (YAML would keep the last)",
                key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _number_unless_clock(loader: _YamlLoader, node: yaml.ScalarNode) -> Any:
    """YAML 1.1 reads ``12:00:00`` as the base-60 number 43200: a duration written as a clock time
    (``label_delay: 0:00:00``, as the reference shows defaults) stays text, which pydantic reads as one."""
    if ":" in str(node.value):
        return loader.construct_scalar(node)
    if node.tag.endswith(":int"):
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    return yaml.SafeLoader.construct_yaml_float(loader, node)


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys)  # type: ignore[arg-type]
_YamlLoader.add_constructor("tag:yaml.org,2002:int", _number_unless_clock)  # type: ignore[arg-type]
_YamlLoader.add_constructor("tag:yaml.org,2002:float", _number_unless_clock)  # type: ignore[arg-type]
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str) -> Any:
    """``yaml.safe_load``, with dates and times left as text for the config's own validation."""
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass: builds plain data only


# scheme://user:pass/word@host: a '/', '?' or '#' in the password ends the authority early, so the
# URI names another host (and a library's error quotes the start of the password).
_UNENCODED_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^@\s]*[/?#][^@\s]*@")


def check_credential_uris(config: KfopsConfig) -> None:
    """Refuse a credential URI whose password would be read as part of its path, naming the key only."""
    for key in CREDENTIAL_KEYS:
        value = _get_key(config, key)
        if isinstance(value, str) and _UNENCODED_PASSWORD.match(value):
            raise ConfigError(f"{key}: the password in this URI holds '/', '?' or '#', which end a URI's host part",
                              hint="percent-encode them in the password: / as %2F, ? as %3F, # as %23")


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def env_overrides(environ: dict[str, str] | None = None) -> list[tuple[list[str], Any]]:
    """``KFOPS__TRAIN__TRAINER=torch`` becomes (["train", "trainer"], "torch")."""
    environ = dict(os.environ if environ is None else environ)
    found = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if path:
            found.append(parse_override(".".join(path) + "=" + raw))
    return found


def load_config_json(text: str, environ: Mapping[str, str] | None = None) -> KfopsConfig:
    """A config given whole as JSON (``KFOPS_CONFIG_JSON``), with ``KFOPS__`` variables over it.

    What an InferenceService's container gets: the JSON holds no secret, the variables (from a
    Kubernetes Secret) bring them, and any other override set in the pod's environment applies
    as it would over a kfops.yaml.
    """
    try:
        tree = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"the config JSON is not valid JSON: {err}") from err
    if not isinstance(tree, dict):
        raise ConfigError("the config JSON must hold an object at the top level")
    for key_path, value in env_overrides(dict(os.environ if environ is None else environ)):
        _set_path(tree, key_path, value)
    try:
        return KfopsConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err) + " (config JSON with KFOPS__ overrides)") from err


def find_config_file(start: Path | None = None) -> Path | None:
    """The nearest ``kfops.yaml`` from ``start`` upwards, or ``KFOPS_CONFIG`` when set."""
    explicit = os.environ.get("KFOPS_CONFIG")
    if explicit:
        return Path(explicit)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return None


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> KfopsConfig:
    """Load, override and validate the configuration; relative paths resolve against its folder.

    ``path`` is a str or path-like (``"kfops.yaml"`` or ``Path("kfops.yaml")``); none: the nearest
    ``kfops.yaml`` (:func:`find_config_file`).
    """
    path = Path(path) if path else find_config_file()
    tree: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tree = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        base = path.resolve().parent
    sources: dict[str, str] = {}
    for key_path, value in env_overrides(environ):
        _set_path(tree, key_path, value)
        sources[".".join(key_path)] = env_name(".".join(key_path))
    for item in overrides or []:
        key_path, value = parse_override(item)
        _set_path(tree, key_path, value)
        sources[".".join(key_path)] = "--set"
    try:
        config = KfopsConfig.model_validate(json.loads(json.dumps(tree, default=str)))
    except ValidationError as err:
        from_overrides = all(any(".".join(map(str, e["loc"])).startswith(k) for k in sources) for e in err.errors())
        source = f" ({path})" if path and not from_overrides else ""
        raise ConfigError(_describe(err, sources) + source) from err
    check_credential_uris(config)
    return _with_declared_features(config, base).resolve(base)


def _with_declared_features(config: KfopsConfig, base: Path) -> KfopsConfig:
    """Fill features.feature_refs (when not written) and categorical from features.feature_set.

    Done once, where the file is read: the config a step or a server receives as JSON already
    holds the refs, so only the process that reads kfops.yaml imports the declaring module.
    """
    features = config.features
    if not features.feature_set:
        return config
    from kfops.core.featureset import load_feature_set

    declared = load_feature_set(features.feature_set, search_path=base)
    refs = declared.feature_refs()
    if "feature_refs" in features.model_fields_set and features.feature_refs != refs:
        extra = sorted(set(features.feature_refs) - set(refs))
        missing = sorted(set(refs) - set(features.feature_refs))
        raise ConfigError(
            f"features.feature_refs disagrees with features.feature_set ({features.feature_set}): "
            f"not declared {extra or '-'}, declared but not listed {missing or '-'}",
            hint="declare a feature once: drop features.feature_refs and let it follow from the feature set",
        )
    categorical = list(dict.fromkeys([*features.categorical, *declared.categorical()]))
    return _with_key(_with_key(config, "features.feature_refs", refs), "features.categorical", categorical)
