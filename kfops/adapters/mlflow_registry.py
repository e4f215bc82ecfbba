"""MLflow adapter: tracking runs, the model registry, aliases and the audit trail.

Every call takes the config (or a tracking URI) explicitly and goes through an ``MlflowClient``
built for it; the adapter never sets MLflow's process-wide tracking or registry URI, never
uses the fluent (active-run) API, and leaves ``os.environ`` as it found it. So one process can
work with several stores, and nothing outside this module needs to import mlflow.

Model versions are MLflow pyfunc models whose artifacts hold the kfops model folder, so
`mlflow models serve` works, while kfops' own server loads the native weights directly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from kfops.core.files import LockTimeout, file_lock
from kfops.errors import KfopsError, RegistryError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.exceptions import MlflowException

    from kfops.config import KfopsConfig

T = TypeVar("T")
MODEL_ARTIFACT_KEY = "kfops_model"
PYFUNC_ENTRY = Path(__file__).with_name("mlflow_pyfunc.py")
CHAMPION, CHALLENGER = "champion", "challenger"
TAG_PREFIX = "kfops."
AUDIT_PREFIX = "kfops.audit."
IDEMPOTENCY_TAG = "kfops.idempotency_key"
BLESSED_TAG = "kfops.blessed"
FAILED_CHECKS_TAG = "kfops.failed_checks"  # on a run the gate refused: its failed checks, " | " between
PIPELINE_RUN_TAG = "kfops.pipeline_run"
REGISTER_STATE_TAG = "kfops.register_state"
"""``pending`` from a version's creation until register has moved its aliases and recorded them (``done``)."""
JUDGED_TAG = "kfops.judged_against"
"""The @champion version the gate compared this version with (``none``: there was no champion)."""
DB_CONNECT_TIMEOUT_S = 10
"""How long one connection attempt to a tracking database may take before the registry counts as down."""
LOCK_TIMEOUT_S = 300.0
"""How long a writer waits for another one on the same store before giving up (RegistryError)."""


RETRY_BUDGET_S = 20.0
"""No new attempt of a failed registry call starts after this long: the error comes within bounded time."""


def retry(call: Callable[[], T], what: str, attempts: int = 4, base_delay: float = 0.5) -> T:
    """Retry calls to the tracking server with exponential backoff, then fail with a clear error.

    Attempts stop at ``attempts`` or when the next one would start after :data:`RETRY_BUDGET_S`
    (MLflow retries each HTTP request itself too, within ``registry.http_max_retries``).
    """
    from mlflow.exceptions import MlflowException
    from requests.exceptions import ConnectionError as RequestsConnectionError

    last: Exception | None = None
    deadline = time.monotonic() + RETRY_BUDGET_S
    for attempt in range(attempts):
        try:
            return call()
        except (RequestsConnectionError, ConnectionError, TimeoutError) as err:
            last = err
        except MlflowException as err:
            if _callers_mistake(err):
                raise
            last = err
        delay = base_delay * 2**attempt
        if attempt + 1 < attempts:
            if time.monotonic() + delay >= deadline:
                break
            time.sleep(delay)
    raise RegistryError(f"MLflow did not answer while trying to {what}: {last}",
                        hint="check registry.tracking_uri and that the tracking server is up") from last


def _callers_mistake(err: MlflowException) -> bool:
    """MLflow's answer for a model, version or alias that does not exist (or cannot): not worth a retry."""
    return "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "INVALID_PARAMETER" in str(err.error_code)


@dataclass(frozen=True)
class HttpBounds:
    """MLflow's own retries and timeout per HTTP request to a tracking server.

    MLflow's defaults retry for minutes before a clear error can be given; kfops lowers them.
    """

    max_retries: int
    timeout_s: int
    backoff_factor: int = 1

    @classmethod
    def of(cls, cfg: KfopsConfig) -> HttpBounds:
        return cls(cfg.registry.http_max_retries, cfg.registry.http_timeout_s)

    def environment(self) -> dict[str, str]:
        return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries),
                "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.timeout_s),
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(self.backoff_factor)}


class _BoundsScope:
    """Sets MLflow's HTTP bounds while adapter calls run, and restores the environment after.

    MLflow 3.17 has no per-client setting for them: ``mlflow.utils.rest_utils.http_request``
    reads ``MLFLOW_HTTP_REQUEST_*`` from ``os.environ`` on every request. So the adapter sets
    the variables it lacks when the outermost scope opens and removes exactly those when it
    closes (a count, under a lock, lets scopes nest and overlap across threads; overlapping
    scopes share the first one's values). Values the operator exported are never touched.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._added: dict[str, str] = {}

    @contextmanager
    def __call__(self, bounds: HttpBounds) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._added = {k: v for k, v in bounds.environment().items() if k not in os.environ}
                os.environ.update(self._added)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for key, value in self._added.items():
                        if os.environ.get(key) == value:
                            del os.environ[key]
                    self._added = {}


http_bounds = _BoundsScope()


class BoundedClient:
    """An ``MlflowClient`` whose every call runs within the config's HTTP bounds."""

    def __init__(self, mlflow_client: MlflowClient, bounds: HttpBounds) -> None:
        self._client = mlflow_client
        self._bounds = bounds

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def bounded(*args: Any, **kwargs: Any) -> Any:
            with http_bounds(self._bounds):
                return attribute(*args, **kwargs)

        bounded.__name__ = name
        bounded.__doc__ = attribute.__doc__
        return bounded


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]) if uri.startswith("sqlite:///") else None


def lock_path(cfg: KfopsConfig) -> Path:
    """The lock file of the config's registry: beside a SQLite store, else under ``data_dir/locks``.

    A file lock orders writers on this machine (processes sharing a data dir: concurrent local runs,
    the scheduler, a person). Writers on other machines against one tracking server are not ordered
    by it; the register step's compare-before-move still refuses a stale verdict there.
    """
    uri = cfg.registry.registry_uri or cfg.tracking_uri
    found = _sqlite_path(uri)
    if found is not None:
        return found.with_name(found.name + ".lock")
    return cfg.data_dir / "locks" / f"registry-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


@contextmanager
def store_lock(cfg: KfopsConfig, what: str) -> Iterator[None]:
    """One writer at a time on the config's registry (see :func:`lock_path`) while the block runs."""
    with _locked(lock_path(cfg), what):
        yield


@contextmanager
def _locked(path: Path, what: str) -> Iterator[None]:
    try:
        with file_lock(path, LOCK_TIMEOUT_S, what):
            yield
    except LockTimeout as err:
        raise RegistryError(f"could not {what}: {err}",
                            hint="another kfops process holds the registry; wait for it or stop it") from err


def _mlflow_client(tracking_uri: str, registry_uri: str | None = None) -> MlflowClient:
    """An ``MlflowClient`` with its stores open, a SQLite store opened under its lock.

    MLflow creates or migrates a SQLite store's schema (alembic) the first time a process opens
    it (the client's constructor opens the tracking store). Two processes doing that at once
    leave a half-applied revision that breaks every later command, so the first opens it under
    the store's lock and migrates; the others wait and find the schema done. MLflow caches open
    stores per process, so the lock is taken once per process and store.
    """
    from mlflow import MlflowClient

    registry_uri = registry_uri or tracking_uri
    for uri in dict.fromkeys((tracking_uri, registry_uri)):
        _check_database(uri)
        _check_server(uri)
    with ExitStack() as locks:
        for uri in dict.fromkeys((tracking_uri, registry_uri)):
            path = _sqlite_path(uri)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                locks.enter_context(_locked(path.with_name(path.name + ".lock"), f"open the MLflow store {path}"))
        for uri in dict.fromkeys((tracking_uri, registry_uri)):
            _create_sqlite_store(uri)
        mlflow_client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        if _sqlite_path(registry_uri) is not None:
            mlflow_client._get_registry_client().store  # noqa: B018 (opening the store is the point)
    return mlflow_client


def _create_sqlite_store(uri: str) -> None:
    """Build a new SQLite store under a temporary name and rename it into place (under the store's lock).

    MLflow creates a store's tables in many alembic steps; a process killed among them (kill -9 of
    a task on its first MLflow call) left a half-migrated file ('duplicate column name') that broke
    every later run. A file that exists was created whole.
    """
    from mlflow import MlflowClient

    path = _sqlite_path(uri)
    if path is None or path.exists():
        return
    staging = path.with_name(f".{path.name}.{os.getpid()}.creating")
    staging.unlink(missing_ok=True)
    staging_uri = "sqlite:///" + str(staging) + ("?" + uri.split("?", 1)[1] if "?" in uri else "")
    MlflowClient(tracking_uri=staging_uri, registry_uri=staging_uri)._get_registry_client().store  # noqa: B018
    from mlflow.tracking._tracking_service.utils import _get_store

    with contextlib.suppress(Exception):  # close the staging engine's connections before the rename
        _get_store(staging_uri).engine.dispose()
    os.replace(staging, path)


_DATABASES_SEEN: set[str] = set()
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")


def _check_database(uri: str) -> None:
    """Connect once to a tracking database (PostgreSQL, MySQL) with a timeout before MLflow does.

    MLflow retries creating its engine ten times with backoff (about 1 min 45 s) and then fails
    with a bare OperationalError; a missing database or a dead port should instead fail at once
    as a registry error. Checked once per process and URI.
    """
    if uri in _DATABASES_SEEN or uri.split(":", 1)[0].split("+", 1)[0] not in _DATABASE_SCHEMES:
        return
    import sqlalchemy

    connect_args = {} if uri.startswith("mssql") else {"connect_timeout": DB_CONNECT_TIMEOUT_S}
    engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as err:
        problem = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise RegistryError(f"cannot connect to the MLflow tracking database {_display(uri)}: {problem}",
                            hint="check registry.tracking_uri: the host and port, that the database exists, "
                                 "and the credentials") from None
    finally:
        engine.dispose()
    _DATABASES_SEEN.add(uri)


SERVER_CHECK_TIMEOUT_S = (5.0, 10.0)
"""Connect and read timeouts of the one reachability check of a tracking server."""
_SERVERS_SEEN: set[str] = set()


def _check_server(uri: str) -> None:
    """Ask a tracking server's ``/health`` once, with short timeouts, before MLflow's retried calls.

    An unreachable server (refused, no route, unknown host, no answer) otherwise costs MLflow's
    retries times kfops' own before any error. Any HTTP answer counts as reachable (a proxy's
    401 is for MLflow's own calls to report); TLS problems are left to MLflow, which knows the
    configured certificates. Checked once per process and URI.
    """
    if uri in _SERVERS_SEEN or not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=SERVER_CHECK_TIMEOUT_S, allow_redirects=False)
    except requests.exceptions.SSLError:
        pass
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        kind = "did not answer in time" if isinstance(err, requests.exceptions.Timeout) else "is unreachable"
        raise RegistryError(f"the MLflow tracking server {_display(uri)} {kind}",
                            hint="check registry.tracking_uri and that the tracking server is up") from None
    _SERVERS_SEEN.add(uri)


def _display(uri: str) -> str:
    """The URI without a password (``user:***@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def client(cfg: KfopsConfig) -> MlflowClient:
    """A client for the config's tracking and registry URIs, with its HTTP bounds; changes no global state."""
    mlflow_client = _mlflow_client(cfg.tracking_uri, cfg.registry.registry_uri)
    return BoundedClient(mlflow_client, HttpBounds.of(cfg))  # type: ignore[return-value]


_SQL_STORES = ("sqlite", "postgresql", "mysql", "mssql")


def store_exists(cfg: KfopsConfig) -> bool:
    """Whether the tracking store already holds MLflow's tables, found without creating anything.

    A client for a database URI creates MLflow's schema (and a SQLite file) on first use, so a
    read-only command asks this first. A tracking server, or a file store, counts as existing:
    the client creates no schema there.
    """
    uri = cfg.tracking_uri
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme not in _SQL_STORES:
        return True
    if scheme == "sqlite":
        path = uri.removeprefix("sqlite:///")
        if path in ("", ":memory:") or not Path(path).is_file():
            return False
    import sqlalchemy

    connect_args = {"connect_timeout": max(1, cfg.registry.http_timeout_s)} if scheme == "postgresql" else {}
    engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            return sqlalchemy.inspect(connection).has_table("experiments")
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise RegistryError(f"cannot read the MLflow store {uri}: {type(err).__name__}: {getattr(err, 'orig', None) or err}",
                            hint="check registry.tracking_uri and that the database is up") from err
    finally:
        engine.dispose()


def ensure_experiment(cfg: KfopsConfig) -> str:
    """The experiment's id, created when missing (under the store's lock: concurrent first runs make one)."""
    mlflow_client = client(cfg)

    def get_or_create() -> str:
        found = mlflow_client.get_experiment_by_name(cfg.registry.experiment)
        if found is not None:
            return found.experiment_id
        # A tracking server decides artifact locations itself unless the config names one.
        embedded = cfg.registry.tracking_uri is None
        location = cfg.registry.artifact_location or (cfg.artifact_root if embedded else None)
        return mlflow_client.create_experiment(cfg.registry.experiment, artifact_location=location)

    with store_lock(cfg, f"create experiment '{cfg.registry.experiment}'"):
        return retry(get_or_create, f"create experiment '{cfg.registry.experiment}'")


def code_version() -> str:
    """The git sha of the working tree, when there is one (``KFOPS_CODE_VERSION`` wins)."""
    if os.environ.get("KFOPS_CODE_VERSION"):
        return os.environ["KFOPS_CODE_VERSION"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], check=False, capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


# MLflow's own rule for metric, param and tag keys (mlflow.utils.validation, POSIX): a key built
# from a user's column name ("column_score.Amount ($)") must be mapped into it, or the run fails.
_MLFLOW_KEY_REFUSED = re.compile(r"[^/\w.\- :]")
MLFLOW_KEY_MAX = 250


def mlflow_key(name: str) -> str:
    """``name`` as a key MLflow accepts: each refused character becomes ``_``, a name that would
    read as another path (``a//b``, ``../x``, ``/x``) loses its slashes, and a name over 250
    characters keeps a hash of the whole. A valid key is returned unchanged."""
    key = _MLFLOW_KEY_REFUSED.sub("_", name)
    if posixpath.normpath(key) != key or key.startswith(("..", "/")) or key in ("", "."):
        key = key.replace("/", "_")
        if key.startswith("..") or key in ("", "."):
            key = f"_{key}"
    return _hashed(key, name) if len(key) > MLFLOW_KEY_MAX else key


def _hashed(key: str, name: str) -> str:
    return f"{key[:MLFLOW_KEY_MAX - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _mlflow_keys(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` under :func:`mlflow_key` keys; names that map to one key are told apart by a hash
    of each original name."""
    keys = {name: mlflow_key(name) for name in values}
    taken = Counter(keys.values())
    return {(_hashed(keys[name], name) if taken[keys[name]] > 1 and keys[name] != name else keys[name]): value
            for name, value in values.items()}


class TrackedRun:
    """One MLflow run, written through an explicit client: no active run, no global tracking URI.

    The calls mirror MLflow's fluent API (``mlflow.set_tags``, ``log_params``, ``log_metrics``,
    ``log_dict``, ``log_figure``, ``log_artifact``, ``pyfunc.log_model``), so runs, tags,
    params, metrics and artifacts come out the same as when the steps used it.
    """

    def __init__(self, mlflow_client: MlflowClient, run: Run) -> None:
        self._client = mlflow_client
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self.artifact_uri: str = run.info.artifact_uri

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in _mlflow_keys(tags).items()])

    def set_tag(self, key: str, value: Any) -> None:
        self._client.set_tag(self.run_id, mlflow_key(key), value)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self._client.log_batch(self.run_id, params=[Param(key, str(value))
                                                    for key, value in _mlflow_keys(params).items()])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Metrics at step 0; like the fluent API, also on the models this run logged at that step."""
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        run = self._client.get_run(self.run_id)
        outputs = run.outputs.model_outputs if run.outputs and run.outputs.model_outputs else []
        model_ids: list[str | None] = [output.model_id for output in outputs if output.step == 0] or [None]
        stamp = get_current_time_millis()
        self._client.log_batch(self.run_id, metrics=[
            Metric(key, value, stamp, 0, model_id=model_id, run_id=self.run_id)
            for key, value in _mlflow_keys(metrics).items() for model_id in model_ids
        ])

    def log_dict(self, dictionary: dict[str, Any], artifact_file: str) -> None:
        self._client.log_dict(self.run_id, dictionary, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self._client.log_figure(self.run_id, figure, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_model(self, model_dir: Path, example: pd.DataFrame, predictions: pd.DataFrame) -> str:
        """Log the kfops model folder as an MLflow pyfunc (models-from-code: no pickle); returns its URI."""
        from mlflow.models import infer_signature

        signature = infer_signature(example, predictions)
        with tempfile.TemporaryDirectory() as staging:
            # MLflow names the artifact folder after the source folder: stage it under a fixed name.
            staged = Path(staging) / MODEL_ARTIFACT_KEY
            shutil.copytree(model_dir, staged)
            return _log_pyfunc(self._client, self.run_id, self.experiment_id, staged, signature, example)


@contextmanager
def start_run(cfg: KfopsConfig, experiment_id: str, run_name: str | None = None) -> Iterator[TrackedRun]:
    """A new run in ``experiment_id``, FINISHED when the block ends (FAILED if it raises)."""
    from mlflow.tracking.context import registry as context_registry
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    mlflow_client = client(cfg)
    fail_abandoned_runs(cfg, experiment_id, run_name)
    # The tags mlflow.start_run adds: user, source name/type, git commit, run name.
    tags = context_registry.resolve_tags({MLFLOW_RUN_NAME: run_name} if run_name else {}) | _owner_tags()
    run = mlflow_client.create_run(experiment_id, tags=tags, run_name=run_name)
    with _running(mlflow_client, run) as tracked:
        yield tracked


ABANDONED_TAG = "kfops.abandoned"
# Which process holds a RUNNING run: a run whose process is gone from this host was killed.
OWNER_HOST_TAG = "kfops.owner_host"
OWNER_PID_TAG = "kfops.owner_pid"


def _owner_tags() -> dict[str, str]:
    import socket

    return {OWNER_HOST_TAG: socket.gethostname(), OWNER_PID_TAG: str(os.getpid())}


def _owner_gone(tags: dict[str, str]) -> bool:
    """True when the run's owner process ran on this host and is no longer alive."""
    import socket

    pid = tags.get(OWNER_PID_TAG, "")
    if tags.get(OWNER_HOST_TAG) != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def fail_abandoned_runs(cfg: KfopsConfig, experiment_id: str, run_name: str | None = None) -> list[str]:
    """Mark FAILED the runs a killed task left RUNNING; returns their ids.

    A run named ``run_name`` still RUNNING is an earlier attempt of the same step of the same
    pipeline run (the names carry both), so it is over; so is a run whose owner process (tagged
    when the run started or resumed) ran on this host and is gone, as after a kill -9 of a local
    run; any other run counts as abandoned once it has been RUNNING for
    ``registry.abandoned_run_hours`` (another pod's process cannot be checked). Concurrent runs
    younger than that are left alone. Each gets a ``kfops.abandoned`` tag saying why.
    """
    from mlflow.utils.time import get_current_time_millis

    mlflow_client = client(cfg)
    running = retry(lambda: mlflow_client.search_runs([experiment_id], "attributes.status = 'RUNNING'",
                                                      max_results=1000), "search unfinished runs")
    cutoff = get_current_time_millis() - int(cfg.registry.abandoned_run_hours * 3_600_000)
    failed = []
    for run in running:
        if run_name is not None and run.info.run_name == run_name:
            why = f"a new attempt of {run_name} started; this one was left RUNNING (its task was killed)"
        elif _owner_gone(run.data.tags):
            why = (f"its process {run.data.tags[OWNER_PID_TAG]} on {run.data.tags[OWNER_HOST_TAG]} is gone "
                   "(killed) and left it RUNNING")
        elif run.info.start_time < cutoff:
            why = f"RUNNING for more than registry.abandoned_run_hours ({cfg.registry.abandoned_run_hours:g} h)"
        else:
            continue
        mlflow_client.set_tag(run.info.run_id, ABANDONED_TAG, why)
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
        failed.append(run.info.run_id)
    return failed


@contextmanager
def resume_run(cfg: KfopsConfig, run_id: str) -> Iterator[TrackedRun]:
    """Reopen an existing run (RUNNING again, as mlflow.start_run(run_id=...) does) and end it as above."""
    mlflow_client = client(cfg)
    run = mlflow_client.get_run(run_id)
    if run.info.lifecycle_stage == "deleted":
        raise RegistryError(f"MLflow run {run_id} is deleted; cannot log to it")
    mlflow_client.update_run(run_id, status="RUNNING")
    for key, value in _owner_tags().items():  # this process holds it now
        mlflow_client.set_tag(run_id, key, value)
    with _running(mlflow_client, run) as tracked:
        yield tracked


@contextmanager
def _running(mlflow_client: MlflowClient, run: Run) -> Iterator[TrackedRun]:
    try:
        yield TrackedRun(mlflow_client, run)
    except BaseException:
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
        raise
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")


def _log_pyfunc(mlflow_client: MlflowClient, run_id: str, experiment_id: str, model_dir: Path, signature,
                example: pd.DataFrame) -> str:
    """What ``mlflow.pyfunc.log_model`` does in a run (MLflow 3.17 ``Model.log``), with an explicit client.

    A LoggedModel is created from the run (with its params), linked as the run's output at step 0
    with the run's step-0 metrics, saved as a pyfunc, uploaded and marked READY (FAILED on error).
    """
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.models import Model
    from mlflow.tracking.context import registry as context_registry

    run = mlflow_client.get_run(run_id)
    model = mlflow_client.create_logged_model(
        experiment_id=experiment_id, name="model", source_run_id=run_id,
        params={key: str(value) for key, value in run.data.params.items()},
        tags=context_registry.resolve_tags(None),
    )
    try:
        mlflow_client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        step_zero = [
            Metric(m.key, m.value, m.timestamp, m.step, dataset_name=m.dataset_name, dataset_digest=m.dataset_digest,
                   run_id=m.run_id, model_id=model.model_id)
            for key in run.data.metrics for m in mlflow_client.get_metric_history(run_id, key)
            if m.step == 0 and m.model_id is None
        ]
        mlflow_client.log_batch(run_id, metrics=step_zero)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                path=str(local),
                mlflow_model=Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id,
                                   model_id=model.model_id),
                python_model=str(PYFUNC_ENTRY),
                artifacts={MODEL_ARTIFACT_KEY: str(model_dir)},
                signature=signature,
                input_example=example,
                # Naming requirements skips MLflow's inference, which loads the model in a subprocess (~5 s).
                pip_requirements=serving_requirements(),
            )
            for pycache in local.rglob("__pycache__"):
                shutil.rmtree(pycache, ignore_errors=True)
            mlflow_client.log_model_artifacts(model.model_id, str(local))
    except BaseException:
        mlflow_client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    mlflow_client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return f"models:/{model.model_id}"


def serving_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", "xgboost", "torch", "pandas", "numpy", "scikit-learn", "pyarrow"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def fetch_model_dir(
    tracking_uri: str, model_uri: str, dst: Path | None = None, *, registry_uri: str | None = None,
    bounds: HttpBounds | None = None,
) -> Path:
    """Download ``models:/name/version`` (or ``@alias``) and return the kfops model folder inside it.

    The URI is resolved with a client for these URIs, then the files are read from where the
    registry says they are (``mlflow.artifacts.download_artifacts`` would resolve a registered
    model through the process-wide registry URI).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import (
        get_artifact_repository,
    )
    from mlflow.store.artifact.utils.models import get_model_name_and_version
    from mlflow.utils.yaml_utils import write_yaml

    registry_uri = registry_uri or tracking_uri
    with http_bounds(bounds) if bounds else nullcontext():
        mlflow_client = _mlflow_client(tracking_uri, registry_uri)
        try:
            found = get_model_name_and_version(mlflow_client, model_uri)
            if len(found) == 1:
                location = mlflow_client.get_logged_model(found[0]).artifact_location
            else:
                location = mlflow_client.get_model_version_download_uri(*found)
        except MlflowException as err:  # e.g. no such version: say which, not an MLflow traceback
            # A version or model that does not exist is the caller's mistake (exit 2), like `kfops promote 99`;
            # a registry that fails is infrastructure (exit 3).
            kind = KfopsError if _callers_mistake(err) else RegistryError
            raise kind(f"cannot find {model_uri} in the registry: {err.message}",
                       hint="list the registered versions with `kfops history`") from err
        if dst is not None:
            Path(dst).mkdir(parents=True, exist_ok=True)
        repository = get_artifact_repository(location, tracking_uri=tracking_uri, registry_uri=registry_uri)
        local = Path(repository.download_artifacts("", dst_path=str(dst) if dst else None))
    if (local / "MLmodel").is_file():
        # What MLflow's models:/ download (ModelsArtifactRepository) leaves beside the model's files.
        name, number = found if len(found) == 2 else (None, None)
        write_yaml(str(local), "registered_model_meta", {"model_name": name, "model_version": number},
                   overwrite=True, ensure_yaml_extension=False)
    return model_dir_in(local, model_uri)


def fetch_version_dir(cfg: KfopsConfig, version: str | int, dst: Path | None = None) -> Path:
    """The kfops model folder of ``version`` of ``registry.model_name``."""
    return fetch_model_dir(cfg.tracking_uri, f"models:/{cfg.registry.model_name}/{version}", dst,
                           registry_uri=cfg.registry.registry_uri, bounds=HttpBounds.of(cfg))


def version_for_alias(tracking_uri: str, name: str, alias: str) -> str:
    """The version number ``models:/name@alias`` points to; RegistryError when it cannot be read."""
    from mlflow.exceptions import MlflowException

    try:
        found = _mlflow_client(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException as err:
        kind = KfopsError if _callers_mistake(err) else RegistryError
        raise kind(f"cannot resolve models:/{name}@{alias} at {tracking_uri}: {err.message}",
                   hint="list the versions and their aliases with `kfops history`") from err
    return str(found.version)


def tag_version(tracking_uri: str, name: str, version: str | int, tags: dict[str, str]) -> None:
    """Set tags on a registered model version of the registry at ``tracking_uri``."""

    mlflow_client = _mlflow_client(tracking_uri)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, str(version), key, value)


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


def pipeline_run_decision(cfg: KfopsConfig, pipeline_run: str) -> dict[str, Any]:
    """What the training of KFP run ``pipeline_run`` decided, as MLflow keeps it: ``blessed`` and
    ``failed_checks`` from its evaluated run (the latest, if a task was retried), and
    ``registered_version``, the version it registered. Empty when nothing of it was evaluated."""
    mlflow_client = client(cfg)
    quoted = pipeline_run.replace("'", "\\'")
    decided: dict[str, Any] = {}
    experiment = retry(lambda: mlflow_client.get_experiment_by_name(cfg.registry.experiment), "read the experiment")
    if experiment is not None:
        runs = retry(lambda: mlflow_client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{quoted}'",
            order_by=["attributes.start_time DESC"]), "search the pipeline run's runs")
        evaluated = [run.data.tags for run in runs if BLESSED_TAG in run.data.tags]
        if evaluated:
            decided["blessed"] = evaluated[0][BLESSED_TAG] == "true"
            if not decided["blessed"]:
                decided["failed_checks"] = [c for c in evaluated[0].get(FAILED_CHECKS_TAG, "").split(" | ") if c]
    name = cfg.registry.model_name
    versions = retry(lambda: mlflow_client.search_model_versions(
        f"name='{name}' and tags.`{PIPELINE_RUN_TAG}`='{quoted}'"), "search the pipeline run's versions")
    if versions:
        decided["registered_version"] = str(max(int(v.version) for v in versions))
    return decided


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
    from mlflow.store.artifact.utils.models import _parse_model_id_if_present

    # As mlflow.register_model does: an MLflow 3 logged-model URI (models:/m-...) names its model id.
    model_id = _parse_model_id_if_present(model_uri)

    def create() -> ModelVersion:
        with _embedded_registry_sees(cfg):
            return mlflow_client.create_model_version(name, model_uri, tags=all_tags, model_id=model_id)

    version = retry(create, f"register a version of '{name}'")
    if model_id:
        _link_logged_model(mlflow_client, model_id, version)
    return version, True


def _link_logged_model(mlflow_client: MlflowClient, model_id: str, version: ModelVersion) -> None:
    """Name the new version on its logged model (the ``mlflow.modelVersions`` tag), as mlflow.register_model does."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    linked = [{"name": version.name, "version": version.version}]
    try:
        model = mlflow_client.get_logged_model(model_id)
        if existing := model.tags.get(MLFLOW_MODEL_VERSIONS):
            linked = json.loads(existing) + linked
        mlflow_client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(linked)})
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" not in str(err.error_code):
            raise


_PROCESS_URI_LOCK = threading.Lock()


@contextmanager
def _embedded_registry_sees(cfg: KfopsConfig) -> Iterator[None]:
    """Let an in-process registry store find the config's logged models, for one call.

    MLflow 3.17's database registry store looks a ``models:/m-...`` source up with a bare
    ``MlflowClient()``, i.e. through the process-wide tracking URI (a TODO in
    ``SqlAlchemyStore.create_model_version``). For that call only, the module variable behind
    ``mlflow.get_tracking_uri()`` names the config's tracking URI; it is put back afterwards.
    ``os.environ`` is not touched. A tracking server does the lookup itself: nothing is set then.
    """
    registry_uri = cfg.registry.registry_uri or cfg.tracking_uri
    if registry_uri.startswith(("http://", "https://")):
        yield
        return
    from mlflow.tracking._tracking_service import utils as tracking_utils

    state: Any = tracking_utils  # MLflow declares the variable as None-typed
    with _PROCESS_URI_LOCK:
        saved = state._tracking_uri
        state._tracking_uri = cfg.tracking_uri
        try:
            yield
        finally:
            state._tracking_uri = saved


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
    """Every alias move recorded for ``registry.model_name``, oldest first; none before a model is registered."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(cfg)
    try:
        model = retry(lambda: mlflow_client.get_registered_model(cfg.registry.model_name), "read the registered model")
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code):
            return []
        raise
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
    with store_lock(cfg, f"move @{alias}"):  # the previous version read is the one replaced
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


def pending_versions(cfg: KfopsConfig) -> list[ModelVersion]:
    """Versions a register step created but did not finish (its process died before the alias moves)."""
    mlflow_client = client(cfg)
    name = cfg.registry.model_name
    found = retry(lambda: mlflow_client.search_model_versions(
        f"name='{name}' and tags.`{REGISTER_STATE_TAG}`='pending'"), "search unfinished model versions")
    return sorted(found, key=lambda v: int(v.version))


def set_version_tags(cfg: KfopsConfig, version: str | int, tags: dict[str, str]) -> None:
    from functools import partial

    mlflow_client = client(cfg)
    for key, value in tags.items():
        retry(partial(mlflow_client.set_model_version_tag, cfg.registry.model_name, str(version), key, value),
              f"tag version {version}")


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


# --- webhooks (the promotion controller's feed) -----------------------------------------------

ALIAS_EVENTS: tuple[Literal["model_version_alias.created"], Literal["model_version_alias.deleted"]] = (
    "model_version_alias.created", "model_version_alias.deleted")


def webhook_name(cfg: KfopsConfig) -> str:
    return f"kfops-controller-{cfg.registry.model_name}"


def webhooks_supported(cfg: KfopsConfig) -> bool:
    """Whether the registry sends webhooks: an MLflow tracking server (a SQL backend) that lists them.

    A local store (``sqlite:``, a folder) has no server process to send anything.
    """
    from mlflow.exceptions import MlflowException

    if not cfg.tracking_uri.startswith(("http://", "https://")):
        return False
    try:
        client(cfg).list_webhooks(max_results=1)
    except MlflowException:
        return False
    return True


def register_webhook(cfg: KfopsConfig, url: str, secret: str) -> tuple[str, str]:
    """Create or update (by name) the webhook that sends alias moves to the controller at ``url``.

    Idempotent: a second call updates the same webhook (its URL, events and secret; re-enabled).
    Returns ``(webhook id, "created" | "updated")``. RegistryError names what MLflow refused (a
    server without ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` refuses an http URL, say).
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(cfg)
    name = webhook_name(cfg)
    try:
        existing = _find_webhook(mlflow_client, name)
        if existing is not None:
            mlflow_client.update_webhook(existing.webhook_id, url=url, events=list(ALIAS_EVENTS), secret=secret,
                                         status="ACTIVE",
                                         description=f"alias moves of {cfg.registry.model_name} -> kfops controller")
            return existing.webhook_id, "updated"
        created = mlflow_client.create_webhook(name=name, url=url, events=list(ALIAS_EVENTS), secret=secret,
                                               description=f"alias moves of {cfg.registry.model_name} -> kfops "
                                               "controller")
    except MlflowException as err:
        raise RegistryError(f"MLflow refused the webhook {name} -> {url}: {err.message}",
                            hint="the tracking server must allow the URL: MLFLOW_WEBHOOK_ALLOWED_SCHEMES (http for "
                            "a plain-HTTP controller) and MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true for an in-cluster "
                            "or loopback address") from err
    return created.webhook_id, "created"


def disable_webhook(cfg: KfopsConfig) -> bool:
    """Set the controller's webhook to DISABLED (a local controller that stops); False when none."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(cfg)
    try:
        existing = _find_webhook(mlflow_client, webhook_name(cfg))
        if existing is None:
            return False
        mlflow_client.update_webhook(existing.webhook_id, status="DISABLED")
    except MlflowException as err:
        raise RegistryError(f"could not disable the webhook {webhook_name(cfg)}: {err.message}") from err
    return True


def _find_webhook(mlflow_client: MlflowClient, name: str) -> Any:
    token = None
    while True:
        page = mlflow_client.list_webhooks(max_results=100, page_token=token)
        for webhook in page:
            if webhook.name == name:
                return webhook
        token = page.token
        if not token:
            return None
