"""Adapter for a Kubeflow Pipelines endpoint (KFP v2beta1 REST API through ``kfp.client.Client``).

Every function takes the client as its first argument, so tests can point a real client at a
local contract server. Nothing here is imported by the pipeline code; ``kfp`` is imported lazily.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kfops.config import PROJECT_PATH_KEYS, STATE_PATH_KEYS
from kfops.core.cron import to_kfp_cron  # checked as `kfops schedule --local` checks it
from kfops.errors import ConfigError, KfopsError, PipelineFailed

if TYPE_CHECKING:
    from kfp.client import Client

    from kfops.config import KfopsConfig

TOKEN_ENV = "KFOPS_KFP_TOKEN"
# Where Kubeflow projects a service-account token into notebook/pipeline pods.
DEFAULT_TOKEN_PATH = Path("/var/run/secrets/kubeflow/pipelines/token")
# v2beta1 RuntimeState (backend/api/v2beta1/run.proto); there is no ERROR state in v2.
SUCCESS_STATES = frozenset({"SUCCEEDED", "SKIPPED"})
FAILURE_STATES = frozenset({"FAILED", "CANCELED"})
TERMINAL_STATES = SUCCESS_STATES | FAILURE_STATES


class ClusterError(KfopsError):
    """The KFP endpoint did not answer, or answered with an error."""

    exit_code = 3
    hint = "check cluster.kfp_host, the token (KFOPS_KFP_TOKEN or cluster.token_path) and the namespace"


@dataclass(frozen=True)
class Endpoint:
    host: str
    namespace: str | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str = "none"


def resolve_endpoint(
    cfg: KfopsConfig,
    host: str | None = None,
    namespace: str | None = None,
    environ: dict[str, str] | None = None,
    default_token_path: Path = DEFAULT_TOKEN_PATH,
) -> Endpoint:
    """Endpoint and auth: explicit arguments, then config, then the environment.

    Token precedence: ``KFOPS_KFP_TOKEN``, then ``cluster.token_path``, then the Kubeflow
    service-account token file when it exists. No token is fine for a port-forward.
    """
    environ = dict(os.environ if environ is None else environ)
    host = host or cfg.cluster.kfp_host
    if not host:
        raise ConfigError(
            "no Kubeflow Pipelines endpoint is configured",
            hint="pass --host URL or set cluster.kfp_host (e.g. --set cluster.kfp_host=http://localhost:8888)",
        )
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"KFP host '{host}' has no scheme", hint="write it as http://... or https://...")
    namespace = namespace or cfg.cluster.namespace
    if environ.get(TOKEN_ENV):
        return Endpoint(host.rstrip("/"), namespace, environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}")
    for path, explicit in ((cfg.cluster.token_path, True), (default_token_path, False)):
        if path is None:
            continue
        if path.is_file():
            return Endpoint(host.rstrip("/"), namespace, path.read_text().strip(), str(path))
        if explicit:
            raise ConfigError(f"cluster.token_path {path} does not exist",
                              hint="point it at a service-account token file or unset it")
    return Endpoint(host.rstrip("/"), namespace)


def connect(endpoint: Endpoint) -> Client:
    """A ``kfp.client.Client`` for ``endpoint``, once the endpoint has answered /healthz."""
    from kfp.client import Client

    probe_healthz(endpoint)
    kwargs: dict[str, Any] = {"host": endpoint.host, "existing_token": endpoint.token}
    if endpoint.namespace:
        kwargs["namespace"] = endpoint.namespace
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # The client warns on every construction that it needs KFP >= 2.0.0-beta.2.
        warnings.simplefilter("ignore", FutureWarning)
        return Client(**kwargs)


def probe_healthz(endpoint: Endpoint, timeout_s: float = 10.0) -> dict[str, Any]:
    """One GET of /apis/v2beta1/healthz. The kfp client retries it 5 times, 5 s apart: fail fast instead.

    The endpoint Terraform outputs is the KFP UI, which proxies the API. Its own healthz answers
    200 whether or not the API server is up, with ``apiServerReady`` saying which
    (frontend/server/handlers/healthz.ts); the API server's healthz has no such field. So a
    200 with ``apiServerReady: false`` is KFP down, not up.
    """
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{endpoint.host}/apis/v2beta1/healthz")
    if endpoint.token:
        request.add_header("Authorization", f"Bearer {endpoint.token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            health = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raise ClusterError(f"Kubeflow Pipelines at {endpoint.host} answered HTTP {err.code} {err.reason} "
                           f"(token from {endpoint.token_source})") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ClusterError(f"cannot reach Kubeflow Pipelines at {endpoint.host}: {err}") from err
    if not isinstance(health, dict):
        raise ClusterError(f"Kubeflow Pipelines at {endpoint.host} answered its health probe with {health!r}")
    if health.get("apiServerReady") is False:
        raise ClusterError(
            f"the Kubeflow Pipelines UI at {endpoint.host} answers, but its API server (ml-pipeline) is not ready",
            hint="kubectl -n kubeflow get pods -l app=ml-pipeline; its logs say why (database, object store)",
        )
    return health


def _short(err: BaseException) -> str:
    status = getattr(err, "status", None)
    reason = getattr(err, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return str(err).splitlines()[0][:200]


@contextlib.contextmanager
def _api_call(what: str):
    """Turn the generated client's errors into one typed error, and keep its prints off stdout."""
    import kfp_server_api
    import urllib3

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except kfp_server_api.ApiException as err:
        body = (err.body or "")[:300] if isinstance(err.body, str) else ""
        raise ClusterError(f"{what} failed: {_short(err)} {body}".strip()) from err
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise ClusterError(f"{what} failed: {_short(err)}") from err


# ---------------------------------------------------------------------------------------------
# Pure helpers


# Stores a pod reaches over the network; everything else a URI can name (sqlite:, file:, a bare path)
# is a file on the machine that submits, which no pod can open.
_REMOTE_TRACKING = frozenset({"http", "https", "postgresql", "mysql", "mssql", "databricks"})
_REMOTE_FEAST_REGISTRY = frozenset({"s3", "gs", "postgresql", "mysql", "mssql"})
_LOOPBACK = frozenset({"localhost", "0.0.0.0", "::1", "::"})


def _scheme(uri: str) -> str:
    """``postgresql+psycopg2://h/db`` -> ``postgresql``; ``''`` for a bare path."""
    return uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""


def _uri_problem(key: str, uri: str, remote: frozenset[str], fix: str, host_network: bool = False) -> str | None:
    from urllib.parse import urlsplit

    scheme = _scheme(uri)
    if scheme not in remote:
        return f"{key} '{uri}' is a file on this machine, which no pod can read: {fix}"
    host = urlsplit(uri).hostname or ""
    if not host_network and (host in _LOOPBACK or host.startswith("127.")):
        return (f"{key} '{uri}' is this machine's loopback address, which in a pod is the pod itself: "
                f"use the address the cluster knows it by (e.g. a Service's <name>.<namespace>.svc)")
    return None


def cluster_config_problems(cfg: KfopsConfig, host_network: bool = False) -> list[str]:
    """What in ``cfg`` names a file of this machine, which a run on the cluster cannot read: one line per key.

    The defaults are such files: with no ``registry.tracking_uri`` MLflow is a SQLite file under
    data_dir, with no ``features.registry`` the Feast registry is a file there too, with no
    ``state.store`` so are the retrain decisions and validation baselines, and in a pod
    data_dir is a scratch folder of that pod only. Paths are judged as the compiled pipeline
    carries them (:meth:`KfopsConfig.portable`): relative ones resolve in the image's working
    directory or the pod's scratch; absolute ones name a folder of this machine. With
    ``host_network`` (containers on this machine's network, ``kfops run --runner docker``),
    services on loopback are reachable and allowed.
    """
    import functools

    uri_problem = functools.partial(_uri_problem, host_network=host_network)
    mlflow_fix = "set it to the cluster's MLflow tracking server, http(s)://..."
    feast_fix = "set it to a shared registry: s3://bucket/path/registry.db, gs://... or postgresql+psycopg2://..."
    problems: list[str | None] = []
    registry = cfg.registry
    if registry.tracking_uri is None:
        problems.append("registry.tracking_uri is not set, so MLflow would be a SQLite file under data_dir, "
                        f"a folder private to each pod: {mlflow_fix}")
    else:
        problems.append(uri_problem("registry.tracking_uri", registry.tracking_uri, _REMOTE_TRACKING, mlflow_fix))
    if registry.registry_uri is not None:
        problems.append(uri_problem("registry.registry_uri", registry.registry_uri, _REMOTE_TRACKING,
                                     f"{mlflow_fix}, or leave it unset (the tracking server)"))
    if registry.artifact_location is not None:
        problems.append(uri_problem("registry.artifact_location", registry.artifact_location,
                                     frozenset({"s3", "gs", "wasbs", "hdfs", "mlflow-artifacts"}),
                                     "set it to an object store (s3://...) or leave it unset (the tracking server's)"))
    if cfg.features.registry is None:
        problems.append("features.registry is not set, so the Feast registry would be a file under data_dir, "
                        f"a folder private to each pod: {feast_fix}")
    else:
        problems.append(uri_problem("features.registry", cfg.features.registry, _REMOTE_FEAST_REGISTRY, feast_fix))
    if cfg.state.store is None:
        problems.append("state.store is not set, so the retrain decisions, validation baselines and drift "
                        "references would be files under data_dir, a folder private to each pod (and the drift "
                        "job would read inference logs there unless serving.inference_log_store is set): "
                        "set it to a shared object store, s3://bucket/prefix")
    problems.append(project_image_problem(cfg))
    carried = cfg.portable()
    for key in (*PROJECT_PATH_KEYS, *STATE_PATH_KEYS):
        path: Any = functools.reduce(getattr, key.split("."), carried)
        if path is None or not Path(path).is_absolute():
            continue
        fix = ("write it relative to the image's working directory, which holds the project's files"
               if key in PROJECT_PATH_KEYS else "leave it unset or relative: a pod keeps it in its scratch folder")
        if key == "dataset.source_dir":
            fix = ("put the raw files in an object store (s3://bucket/prefix), or in a folder inside the project "
                   "written relative to kfops.yaml, which the project's image carries (`kfops build -c`)")
        problems.append(f"{key} '{path}' is a folder of this machine, which no pod has: {fix}")
    return [problem for problem in problems if problem is not None]


def project_image_problem(cfg: KfopsConfig) -> str | None:
    """The project's plug-ins are files beside its kfops.yaml, but the pipeline or the server would run
    in kfops' own image, which holds the example's files instead: every step would fail to import them."""
    from kfops.config import ClusterConfig

    plugins = cfg.project_plugins()
    stock = ClusterConfig()
    keys = [name for name in ("image", "serving_image") if getattr(cfg.cluster, name) == getattr(stock, name)]
    if not plugins or not keys:
        return None
    named = ", ".join(f"{key} ({module})" for key, module in plugins.items())
    images = " and ".join(f"cluster.{name} {getattr(stock, name)}" for name in keys)
    return (f"{named} name modules of the project folder {cfg.resolved_against}, but {images} "
            "are kfops' own images, which hold the example's files, not this project's: build the project's "
            "images with `kfops build -c <this kfops.yaml> --set cluster.image=<tag> --set "
            "cluster.serving_image=<tag>` and set those keys to their tags")


def require_cluster_config(cfg: KfopsConfig) -> None:
    """Refuse, naming each key, a config whose run on the cluster would need files of this machine."""
    problems = cluster_config_problems(cfg)
    if problems:
        raise ConfigError(
            "this config cannot run on a cluster, whose pods cannot read files of this machine:\n"
            + "\n".join(f"  - {problem}" for problem in problems),
            hint="set these keys in the cluster's config (e.g. from `kfops config from-terraform`) or with --set",
        )


def pipeline_info(package_path: Path) -> dict[str, Any]:
    """Name and root parameters of a compiled pipeline (first YAML document)."""
    documents = list(yaml.safe_load_all(package_path.read_text()))
    spec = documents[0]
    return {
        "name": spec["pipelineInfo"]["name"],
        "parameters": sorted(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})),
    }


def version_name(pipeline_name: str, code_version: str, package_path: Path) -> str:
    """``<pipeline>-<code version>-<content digest>``: same code and config give the same name."""
    digest = hashlib.sha256(package_path.read_bytes()).hexdigest()[:8]
    return f"{pipeline_name}-{code_version}-{digest}"


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def _filter(name: str) -> str:
    import json

    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


# ---------------------------------------------------------------------------------------------
# Calls against the endpoint


def find_pipeline(client: Client, name: str, namespace: str | None = None) -> str | None:
    with _api_call(f"looking up pipeline '{name}'"):
        result = client.list_pipelines(filter=_filter(name), namespace=namespace, page_size=2)
    pipelines = result.pipelines or []
    if len(pipelines) > 1:
        raise ClusterError(f"{len(pipelines)} pipelines are named '{name}'", hint="delete the duplicates in the KFP UI")
    return pipelines[0].pipeline_id if pipelines else None


def find_pipeline_version(client: Client, pipeline_id: str, name: str) -> str | None:
    with _api_call(f"looking up pipeline version '{name}'"):
        result = client.list_pipeline_versions(pipeline_id=pipeline_id, filter=_filter(name), page_size=2)
    versions = result.pipeline_versions or []
    return versions[0].pipeline_version_id if versions else None


def ensure_pipeline_version(
    client: Client, package_path: Path, pipeline_name: str, version: str, namespace: str | None = None,
    description: str | None = None,
) -> tuple[str, str]:
    """Upload ``package_path`` as version ``version`` of ``pipeline_name``; idempotent. Returns ids."""
    pipeline_id = find_pipeline(client, pipeline_name, namespace)
    if pipeline_id is None:
        with _api_call(f"uploading pipeline '{pipeline_name}'"):
            pipeline = client.upload_pipeline(str(package_path), pipeline_name=pipeline_name,
                                              description=description, namespace=namespace)
        pipeline_id = pipeline.pipeline_id
    else:
        existing = find_pipeline_version(client, pipeline_id, version)
        if existing is not None:
            return pipeline_id, existing
    with _api_call(f"uploading version '{version}' of '{pipeline_name}'"):
        uploaded = client.upload_pipeline_version(str(package_path), pipeline_version_name=version,
                                                  pipeline_id=pipeline_id, description=description)
    return pipeline_id, uploaded.pipeline_version_id


def ensure_experiment(client: Client, name: str, namespace: str | None = None) -> str:
    with _api_call(f"creating experiment '{name}'"):
        return client.create_experiment(name=name, namespace=namespace).experiment_id


def experiment_id(client: Client, name: str, namespace: str | None = None) -> str:
    with _api_call(f"looking up experiment '{name}'"):
        result = client.list_experiments(filter=_filter(name), namespace=namespace, page_size=2)
    experiments = result.experiments or []
    if not experiments:
        raise KfopsError(f"no experiment is named '{name}'", hint="`kfops runs list` without --experiment lists all")
    return experiments[0].experiment_id


@dataclass(frozen=True)
class Submission:
    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    run_id: str
    url: str


def submit(
    client: Client,
    endpoint: Endpoint,
    package_path: Path,
    version: str,
    experiment: str,
    run_name: str,
    service_account: str | None = None,
    pipeline_root: str | None = None,
) -> Submission:
    """Upload the compiled pipeline (as a version) and start one run of that version.

    ``pipeline_root`` (``cluster.pipeline_root``) goes with the run, so its artifacts land there
    whatever the cluster's kfp-launcher default is.
    """
    pipeline_name = pipeline_info(package_path)["name"]
    pipeline_id, version_id = ensure_pipeline_version(client, package_path, pipeline_name, version, endpoint.namespace)
    exp_id = ensure_experiment(client, experiment, endpoint.namespace)
    with _api_call(f"starting a run of '{pipeline_name}'"):
        run = client.run_pipeline(experiment_id=exp_id, job_name=run_name, pipeline_id=pipeline_id,
                                  version_id=version_id, service_account=service_account,
                                  pipeline_root=pipeline_root)
    return Submission(pipeline_id, version_id, version, exp_id, run.run_id, run_url(endpoint.host, run.run_id))


def run_summary(run: Any) -> dict[str, Any]:
    reference = run.pipeline_version_reference
    return {
        "run_id": run.run_id,
        "name": run.display_name,
        "state": str(run.state or "UNKNOWN"),
        "experiment_id": run.experiment_id,
        "pipeline_version_id": reference.pipeline_version_id if reference else run.pipeline_version_id,
        "created_at": _when(run.created_at),
        "finished_at": _when(run.finished_at),
        "error": run.error.message if run.error is not None else None,
    }


def _when(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        # KFP reports an unfinished run's finish time as the epoch.
        return None if value.year < 1971 else value.isoformat()
    return str(value)


def get_run(client: Client, run_id: str) -> dict[str, Any]:
    with _api_call(f"reading run {run_id}"):
        return run_summary(client.get_run(run_id))


def list_runs(client: Client, namespace: str | None = None, experiment: str | None = None,
              page_size: int = 20) -> list[dict[str, Any]]:
    exp_id = experiment_id(client, experiment, namespace) if experiment else None
    with _api_call("listing runs"):
        result = client.list_runs(experiment_id=exp_id, namespace=namespace, page_size=page_size,
                                  sort_by="created_at desc")
    return [run_summary(run) for run in result.runs or []]


def wait_for_run(
    client: Client,
    run_id: str,
    timeout_s: float = 6 * 3600,
    poll_s: float = 10.0,
    on_state: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the run is terminal; raise ``PipelineFailed`` unless it succeeded.

    Bounded: after ``timeout_s`` it raises ``ClusterError`` (the run keeps going on the cluster).
    """
    deadline = clock() + timeout_s
    last_state = None
    while True:
        summary = get_run(client, run_id)
        state = summary["state"]
        if state != last_state and on_state is not None:
            on_state(state)
        last_state = state
        if state in SUCCESS_STATES:
            return summary
        if state in FAILURE_STATES:
            detail = f": {summary['error']}" if summary["error"] else ""
            raise PipelineFailed(f"run {run_id} ended {state}{detail}", hint="open the run in the KFP UI for task logs")
        if clock() >= deadline:
            raise ClusterError(f"run {run_id} still {state} after {timeout_s:.0f}s; stopped waiting (it keeps running)",
                               hint="follow it with `kfops runs get RUN_ID` or the KFP UI")
        sleep(poll_s)


# ---------------------------------------------------------------------------------------------
# Recurring runs


@dataclass(frozen=True)
class Schedule:
    recurring_run_id: str
    name: str
    cron: str
    pipeline_id: str
    version_id: str
    experiment_id: str


def create_schedule(
    client: Client,
    endpoint: Endpoint,
    package_path: Path,
    version: str,
    experiment: str,
    name: str,
    cron: str,
    service_account: str | None = None,
    max_concurrency: int = 1,
    pipeline_root: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> Schedule:
    """A KFP recurring run of one pinned pipeline version, with ``parameters`` for the pipeline's
    inputs; no catch-up of missed intervals."""
    kfp_cron = to_kfp_cron(cron)
    pipeline_name = pipeline_info(package_path)["name"]
    pipeline_id, version_id = ensure_pipeline_version(client, package_path, pipeline_name, version, endpoint.namespace)
    exp_id = ensure_experiment(client, experiment, endpoint.namespace)
    with _api_call(f"creating recurring run '{name}'"):
        created = client.create_recurring_run(
            experiment_id=exp_id, job_name=name, cron_expression=kfp_cron, pipeline_id=pipeline_id,
            version_id=version_id, max_concurrency=max_concurrency, no_catchup=True, enabled=True,
            service_account=service_account, pipeline_root=pipeline_root, params=parameters or None,
        )
    return Schedule(created.recurring_run_id, name, kfp_cron, pipeline_id, version_id, exp_id)


def list_schedules(client: Client, namespace: str | None = None) -> list[dict[str, Any]]:
    with _api_call("listing recurring runs"):
        result = client.list_recurring_runs(namespace=namespace, page_size=100)
    rows = []
    for item in result.recurring_runs or []:
        trigger = item.trigger
        cron = trigger.cron_schedule.cron if trigger is not None and trigger.cron_schedule is not None else None
        reference = item.pipeline_version_reference
        parameters = (item.runtime_config.parameters if item.runtime_config is not None else None) or {}
        rows.append({
            "recurring_run_id": item.recurring_run_id,
            "name": item.display_name,
            "cron": cron,
            "mode": str(item.mode or ""),
            "pipeline_version_id": reference.pipeline_version_id if reference else None,
            "window_days": parameters.get("window_days"),
        })
    return rows


def delete_schedule(client: Client, recurring_run_id: str) -> None:
    with _api_call(f"deleting recurring run {recurring_run_id}"):
        client.delete_recurring_run(recurring_run_id)


def default_run_name(pipeline: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{pipeline} {now:%Y-%m-%d %H:%M:%S}Z"


_SAFE = re.compile(r"[^a-z0-9-]+")


def default_schedule_name(pipeline: str, cron: str) -> str:
    return f"kfops-{pipeline}-" + _SAFE.sub("-", cron.lower()).strip("-")
