"""Serving on a cluster: a KServe ``InferenceService`` (serving.kserve.io/v1beta1) and its canary rollout.

:func:`render_inference_service` builds the manifest (pure): a custom predictor running
``python -m kfops.serving`` in the project's image, with resources, replicas and autoscaling, the
KServe request/response logger and, for an update, ``canaryTrafficPercent``. Knative mode (named
Serverless before KServe 0.16), because KServe only splits traffic between revisions there: the
platform Terraform installs Knative Serving with Kourier and KServe in that mode
(docs/deployment.md, "Serving mode"; tests/infra cross-checks the two).

:func:`rollout` applies it with the Kubernetes client and waits for the new revision to be
Ready. When another version already serves, the new one starts as a canary and
:func:`kfops.core.rollout.analyse_canary` watches both revisions' pods (their ``/metrics``,
read through the API server's pod proxy). The canary is promoted to 100% (the field removed, as
KServe documents) only when it stays healthy; otherwise ``canaryTrafficPercent: 0`` pins all
traffic back on the stable revision.

:func:`render_network_policy` restricts who reaches the InferenceService's pods: the Knative and
Istio data plane (``serving.kserve.ingress_namespaces``) and pods of the serving namespace
labelled ``kfops.io/model-client: "true"``; every other pod is refused. :func:`rollout` applies it
beside the InferenceService.

With ``serving.kserve.log_sink``, :func:`render_log_sink` adds kfops' inference-log sink
(:mod:`kfops.serving.sidecars.log_sink`): a Deployment of one replica, its Service, and a
NetworkPolicy that admits only this InferenceService's pods (KServe's logger runs in them and
sends no credentials, so the network keeps forged rows out); the logger posts to that Service.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kfops.config import CONFIG_JSON_ENV
from kfops.core.redaction import redact_uri, strip_password
from kfops.errors import ConfigError, ServingError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig
    from kfops.core.rollout import MetricsSnapshot, RolloutDecision

log = logging.getLogger(__name__)

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
API_VERSION = f"{GROUP}/{VERSION}"
CONTAINER = "kserve-container"  # the name KServe expects for a custom predictor's container
PORT = 8080
REVISION_LABEL = "serving.knative.dev/revision"
# The deployment mode every rendered InferenceService asks for; the platform must install it.
DEPLOYMENT_MODE = "Knative"
VERSION_ANNOTATION = "kfops.io/model-version"
ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"  # KServe puts it on every pod of the service
CLIENT_LABEL = "kfops.io/model-client"
SINK_LABEL = "kfops.io/log-sink"
SINK_CONTAINER = "log-sink"
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LOCAL_STORES = ("sqlite:", "file:", "/")


def service_name(cfg: KfopsConfig) -> str:
    name = cfg.serving.kserve.name or cfg.registry.model_name
    if len(name) > 45 or not _NAME.match(name):  # Knative appends -predictor-00001 and more
        raise ConfigError(
            f"InferenceService name '{name}' is not a DNS-1035 label of at most 45 characters",
            hint="set serving.kserve.name to lowercase letters, digits and '-', starting with a letter",
        )
    return name


def predictor_environment(cfg: KfopsConfig) -> tuple[dict[str, str], list[str]]:
    """The model server's environment, as a predictor gets it: (plain variables, secret variable names).

    The plain ones hold no secret: the config as JSON (serialised without any, see
    ``kfops.config.SECRET_KEYS``) and the runtime's settings. The secret ones are the
    ``KFOPS__SECTION__KEY`` variables that give the secrets back where the server starts
    (``kfops.config.load_config_json``): on a cluster, ``secretKeyRef`` entries of the
    Kubernetes Secret ``cluster.secrets_name`` (:func:`render_inference_service`); for a
    server started on this machine, their values are ``cfg.secret_environment(serving=True)[name]``.
    The one place both are decided, so a local container and a cluster pod see the same.
    """
    plain = {CONFIG_JSON_ENV: cfg.to_json(), "PYTHONUNBUFFERED": "1"}
    return plain, sorted(cfg.secret_environment(serving=True))


def _container_env(cfg: KfopsConfig, secrets_name: str | None) -> list[dict[str, Any]]:
    plain, secret_names = predictor_environment(cfg)
    env: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in plain.items()]
    if secret_names and not secrets_name:
        raise ConfigError(
            f"the predictor needs secrets ({', '.join(secret_names)}) and cluster.secrets_name names no "
            "Kubernetes Secret to take them from; kfops never writes a secret into a manifest",
            hint=f"kubectl -n <serving namespace> create secret generic kfops-secrets --from-literal="
                 f"{secret_names[0]}=... and set cluster.secrets_name: kfops-secrets",
        )
    env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": secrets_name, "key": name}}}
            for name in secret_names]
    return env


def predictor_container(cfg: KfopsConfig, version: str, *, host: str = "0.0.0.0", port: int = PORT,
                        secrets_name: str | None = None) -> dict[str, Any]:
    """The model server's container: image, command, arguments and environment.

    One function for both places a predictor runs: the InferenceService on a cluster, and the
    container ``serving.target: docker`` starts (:mod:`kfops.serving.local.container`), so what
    runs locally is what a pod runs. Secrets are ``secretKeyRef`` entries of the Kubernetes Secret
    ``secrets_name`` (default ``cluster.secrets_name``); a local container gets their values
    from the config under the same variable names.
    """
    tracking_uri = cfg.tracking_uri
    isvc = cfg.serving.kserve
    args = [
        "--name", cfg.registry.model_name, "--model-uri", f"models:/{cfg.registry.model_name}/{version}",
        # No password on a command line: the server takes it from its config (secretKeyRef env).
        "--tracking-uri", strip_password(tracking_uri), "--host", host, "--http-port", str(port),
        "--online-lookup", "none" if isvc.transformer else isvc.online_lookup,
        "--max-batch-size", str(cfg.serving.max_batch_size), "--max-latency-ms", f"{cfg.serving.max_latency_ms:g}",
        "--max-payload-bytes", str(cfg.serving.max_payload_bytes),
    ]  # fmt: skip
    if isvc.logger_url or isvc.log_sink:
        args.append("--no-inference-log")  # KServe's logger sends every request and response to the sink
    return {
        "name": CONTAINER,
        "image": cfg.cluster.serving_image,
        "command": ["python", "-m", "kfops.serving"],
        "args": args,
        "env": _container_env(cfg, secrets_name or cfg.cluster.secrets_name),
        "ports": [{"containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": f"/v2/models/{cfg.registry.model_name}/ready"}},
    }


def render_inference_service(
    cfg: KfopsConfig, version: str, *, namespace: str | None = None, canary_percent: int | None = None
) -> dict[str, Any]:
    """The InferenceService that serves ``version`` of ``registry.model_name`` from the MLflow registry."""
    tracking_uri = cfg.tracking_uri
    if tracking_uri.startswith(_LOCAL_STORES):
        raise ConfigError(
            f"the cluster cannot read the local registry {redact_uri(tracking_uri)}",
            hint="set registry.tracking_uri to the MLflow server the cluster reaches (see docs/deployment.md)",
        )
    isvc = cfg.serving.kserve
    name = service_name(cfg)
    model_uri = f"models:/{cfg.registry.model_name}/{version}"
    container = predictor_container(cfg, version)
    container["resources"] = {
        "requests": {"cpu": isvc.cpu_request, "memory": isvc.memory_request},
        "limits": {"cpu": isvc.cpu_limit, "memory": isvc.memory_limit},
    }
    predictor: dict[str, Any] = {
        "minReplicas": isvc.min_replicas,
        "maxReplicas": isvc.max_replicas,
        "scaleMetric": isvc.scale_metric,
        "scaleTarget": isvc.scale_target,
        "timeout": isvc.timeout_s,
        "containers": [container],
    }
    if isvc.container_concurrency is not None:
        predictor["containerConcurrency"] = isvc.container_concurrency
    if cfg.cluster.serving_service_account:
        predictor["serviceAccountName"] = cfg.cluster.serving_service_account
    logger = logger_url(cfg, namespace or cfg.cluster.serving_namespace or cfg.cluster.namespace)
    if logger:
        predictor["logger"] = {"mode": isvc.logger_mode, "url": logger}
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = int(canary_percent)
    spec: dict[str, Any] = {"predictor": predictor}
    if isvc.transformer:
        spec["transformer"] = _transformer(cfg, container)

    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/managed-by": "kfops", "app.kubernetes.io/name": name},
        "annotations": {
            "serving.kserve.io/deploymentMode": DEPLOYMENT_MODE,
            "serving.kserve.io/enable-prometheus-scraping": "true",
            "prometheus.kserve.io/port": str(PORT),
            "prometheus.kserve.io/path": "/metrics",
            VERSION_ANNOTATION: str(version),
            "kfops.io/model-uri": model_uri,
        },
    }
    namespace = namespace or cfg.cluster.serving_namespace
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": metadata, "spec": spec}


def render_network_policy(cfg: KfopsConfig, *, namespace: str | None = None) -> dict[str, Any]:
    """A NetworkPolicy (networking.k8s.io/v1) letting only the serving data plane and labelled
    client pods reach the InferenceService's pods (predictor and transformer), on the serving port."""
    name = service_name(cfg)
    allowed: list[dict[str, Any]] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        for ns in cfg.serving.kserve.ingress_namespaces
    ]
    allowed.append({"podSelector": {"matchLabels": {CLIENT_LABEL: "true"}}})
    metadata: dict[str, Any] = {"name": f"{name}-ingress",
                                "labels": {"app.kubernetes.io/managed-by": "kfops", "app.kubernetes.io/name": name}}
    namespace = namespace or cfg.cluster.serving_namespace
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": {ISVC_POD_LABEL: name}},
            "policyTypes": ["Ingress"],
            # Knative's queue-proxy listens on 8012/8022 and forwards to the container's 8080.
            "ingress": [{"from": allowed, "ports": [{"protocol": "TCP", "port": p} for p in (PORT, 8012, 8022)]}],
        },
    }


def log_sink_name(cfg: KfopsConfig) -> str:
    return f"{service_name(cfg)}-log-sink"


def logger_url(cfg: KfopsConfig, namespace: str | None) -> str | None:
    """Where the InferenceService's logger posts: ``serving.kserve.logger_url``, or kfops' own sink's
    Service; None: no logger."""
    isvc = cfg.serving.kserve
    if not isvc.log_sink:
        return isvc.logger_url
    if not namespace:
        raise ConfigError("the log sink's address needs the serving namespace",
                          hint="set cluster.serving_namespace (or cluster.namespace)")
    return f"http://{log_sink_name(cfg)}.{namespace}.svc.cluster.local"


def render_log_sink(cfg: KfopsConfig, *, namespace: str) -> list[dict[str, Any]]:
    """kfops' inference-log sink for this InferenceService: a Deployment, a Service and a
    NetworkPolicy admitting only the InferenceService's pods (apps/v1, v1, networking.k8s.io/v1)."""
    store = str(cfg.inference_log_location)
    if not store.startswith("s3://"):
        raise ConfigError(
            f"the log sink writes to {store}, a folder that its pod would lose",
            hint="set serving.inference_log_store (or state.store) to an s3:// prefix the sink's service account "
                 "(cluster.log_sink_service_account) may write",
        )
    name, service = log_sink_name(cfg), service_name(cfg)
    labels = {"app.kubernetes.io/managed-by": "kfops", "app.kubernetes.io/name": "kfops-log-sink",
              "app.kubernetes.io/instance": service, SINK_LABEL: service}
    selector = {SINK_LABEL: service}
    metadata = {"name": name, "namespace": namespace, "labels": labels}
    plain, _ = predictor_environment(cfg)  # the config (no secrets in it): the model's features
    container: dict[str, Any] = {
        "name": SINK_CONTAINER,
        "image": cfg.cluster.serving_image,
        "command": ["python", "-m", "kfops.serving.sidecars.log_sink"],
        "args": ["--store", store, "--host", "0.0.0.0", "--port", str(PORT), "--mode", cfg.serving.kserve.logger_mode],
        "env": [{"name": key, "value": value} for key, value in plain.items()],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": PORT}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/", "port": PORT}, "periodSeconds": 30, "failureThreshold": 4},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # it calls no Kubernetes API
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        # The sink writes what it holds when stopped: give it time to reach the store.
        "terminationGracePeriodSeconds": 60,
    }
    account = cfg.cluster.log_sink_service_account or cfg.cluster.serving_service_account
    if account:
        pod_spec["serviceAccountName"] = account
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
        "spec": {
            # One replica: KServe posts a request and its response as two events that must meet in one process.
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    service_manifest = {
        "apiVersion": "v1", "kind": "Service", "metadata": metadata,
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}]},
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {**metadata, "name": f"{name}-ingress"},
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {ISVC_POD_LABEL: service}}}],
                         "ports": [{"protocol": "TCP", "port": PORT}]}],
        },
    }
    return [deployment, service_manifest, policy]


def _transformer(cfg: KfopsConfig, predictor_container: dict[str, Any]) -> dict[str, Any]:
    """The raw-request transformer (:mod:`kfops.serving.kserve.transformer`); KServe adds --predictor_host."""
    isvc = cfg.serving.kserve
    container = {
        **{k: predictor_container[k] for k in ("image", "env", "ports", "resources")},
        "name": CONTAINER,
        "command": ["python", "-m", "kfops.serving.kserve.transformer"],
        "args": ["--model-name", cfg.registry.model_name, "--online-lookup", isvc.online_lookup,
                 "--host", "0.0.0.0", "--http-port", str(PORT)],  # the pod's address; locally 127.0.0.1
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready"}},
    }
    transformer: dict[str, Any] = {"minReplicas": isvc.min_replicas, "maxReplicas": isvc.max_replicas,
                                   "scaleMetric": isvc.scale_metric, "scaleTarget": isvc.scale_target,
                                   "timeout": isvc.timeout_s, "containers": [container]}
    if cfg.cluster.serving_service_account:
        transformer["serviceAccountName"] = cfg.cluster.serving_service_account
    return transformer


# --- status ------------------------------------------------------------------------------------


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def predictor_status(obj: dict[str, Any]) -> dict[str, Any]:
    return ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}


def _new_revision_ready(obj: dict[str, Any], previous: str | None) -> str | None:
    """The name of the new predictor revision once it is created, Ready and not the old one."""
    ready = _condition(obj, "Ready")
    status = predictor_status(obj)
    created, latest_ready = status.get("latestCreatedRevision"), status.get("latestReadyRevision")
    if ready and ready.get("status") == "True" and created and created == latest_ready and created != previous:
        return created
    return None


def _revision_failed(obj: dict[str, Any]) -> str | None:
    for kind in ("PredictorReady", "Ready"):
        condition = _condition(obj, kind)
        if condition and condition.get("status") == "False" and condition.get("reason") in (
            "RevisionFailed", "RevisionMissing", "ContainerMissing", "ProgressDeadlineExceeded",
        ):
            return f"{condition.get('reason')}: {condition.get('message', '')}".strip()
    return None


# --- the rollout -------------------------------------------------------------------------------


class ClusterServing:
    """The Kubernetes calls a rollout makes; ``custom`` and ``core`` are the client's API objects."""

    def __init__(self, namespace: str, custom: Any = None, core: Any = None, networking: Any = None,
                 apps: Any = None):
        if custom is None or core is None:
            default_custom, default_core = _default_apis()
            custom, core = custom or default_custom, core or default_core
            from kubernetes import client

            networking = networking or client.NetworkingV1Api()
            apps = apps or client.AppsV1Api()
        self.namespace, self.custom, self.core = namespace, custom, core
        self.networking = networking  # None: NetworkPolicies are not applied (a caller's own API objects)
        self.apps = apps  # None: no log sink can be applied

    def apply_log_sink(self, manifests: list[dict[str, Any]]) -> None:
        """Create the sink's Deployment, Service and NetworkPolicy, or bring existing ones up to date."""
        from kubernetes.client.exceptions import ApiException

        if self.apps is None or self.networking is None:
            raise ServingError("serving.kserve.log_sink needs the apps/v1 and networking APIs, and this client "
                               "has none")
        for manifest in manifests:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            if kind == "NetworkPolicy":
                self.apply_network_policy(manifest)
                continue
            create, patch = {
                "Deployment": (self.apps.create_namespaced_deployment, self.apps.patch_namespaced_deployment),
                "Service": (self.core.create_namespaced_service, self.core.patch_namespaced_service),
            }[kind]
            try:
                create(self.namespace, manifest)
            except ApiException as err:
                if err.status != 409:
                    raise ServingError(f"could not create {kind} {self.namespace}/{name}: {err.status} "
                                       f"{err.reason}") from err
                self._call(f"update the log sink's {kind} beside", patch, name, self.namespace, manifest)

    def apply_network_policy(self, policy: dict[str, Any]) -> None:
        """Create the policy, or replace it when it exists."""
        from kubernetes.client.exceptions import ApiException

        if self.networking is None:
            return
        name = policy["metadata"]["name"]
        try:
            self.networking.create_namespaced_network_policy(self.namespace, policy)
        except ApiException as err:
            if err.status != 409:
                raise ServingError(f"could not create NetworkPolicy {self.namespace}/{name}: {err.status} "
                                   f"{err.reason}") from err
            self._call("replace the NetworkPolicy of", self.networking.replace_namespaced_network_policy, name,
                       self.namespace, policy)

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise ServingError(f"could not read InferenceService {self.namespace}/{name}: {err.status} {err.reason}") from err

    def create(self, manifest: dict[str, Any]) -> None:
        self._call("create", self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, manifest)

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self._call("patch", self.custom.patch_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name, body)

    def _call(self, what: str, method: Callable, *args: Any) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            method(*args)
        except ApiException as err:
            raise ServingError(f"could not {what} the InferenceService in {self.namespace}: {err.status} "
                               f"{err.reason}: {getattr(err, 'body', '')}") from err

    def revision_metrics(self, revision: str, model: str) -> dict[str, MetricsSnapshot]:
        """Each running pod's counters for ``model`` in ``revision``, read through the pod proxy."""
        from kubernetes.client.exceptions import ApiException

        from kfops.core.rollout import parse_metrics

        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"{REVISION_LABEL}={revision}")
        found: dict[str, MetricsSnapshot] = {}
        for pod in pods.items:
            if (pod.status.phase or "") != "Running":
                continue
            try:
                text = self.core.connect_get_namespaced_pod_proxy_with_path(
                    f"{pod.metadata.name}:{PORT}", self.namespace, "metrics"
                )
            except ApiException as err:
                log.warning("metrics of pod %s unreadable: %s %s", pod.metadata.name, err.status, err.reason)
                continue
            found[pod.metadata.name] = parse_metrics(text, model)
        return found


def _default_apis() -> tuple[Any, Any]:
    from kubernetes import client

    from kfops.adapters.kube import load_kube_config

    load_kube_config(ServingError)
    return client.CustomObjectsApi(), client.CoreV1Api()


def rollout(
    cfg: KfopsConfig,
    version: str,
    *,
    cluster: ClusterServing | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_decision: Callable[[RolloutDecision], None] | None = None,
) -> dict[str, Any]:
    """Serve ``version`` on the cluster: create, update in place, or canary then promote/roll back.

    Returns ``{"action": "created"|"unchanged"|"promoted"|"updated", "revision", "url", ...}``.
    Raises :class:`ServingError` after a rollback, so the pipeline step fails visibly while the
    stable revision keeps all traffic.
    """
    from kfops.core.rollout import RolloutAction, analyse_canary, windows_from

    namespace = cfg.cluster.serving_namespace or cfg.cluster.namespace
    if not namespace:
        raise ConfigError("no namespace to deploy into", hint="set cluster.serving_namespace (or cluster.namespace)")
    cluster = cluster or ClusterServing(namespace)
    name = service_name(cfg)
    where = f"InferenceService {namespace}/{name}"
    existing = cluster.get(name)
    timeout = cfg.serving.kserve.ready_timeout_s

    sink = render_log_sink(cfg, namespace=namespace) if cfg.serving.kserve.log_sink else None  # refused: nothing applied
    cluster.apply_network_policy(render_network_policy(cfg, namespace=namespace))
    if sink:  # before the InferenceService, so its logger has somewhere to post
        cluster.apply_log_sink(sink)
    if existing is None:
        cluster.create(render_inference_service(cfg, version, namespace=namespace))
        obj, revision = _wait_revision(cluster, name, None, timeout, clock, sleep, where)
        log.info("%s created, serving version %s (%s)", where, version, revision)
        return _result("created", obj, version, revision)

    status = predictor_status(existing)
    stable = status.get("latestRolledoutRevision") or status.get("latestReadyRevision")
    served = ((existing.get("metadata") or {}).get("annotations") or {}).get(VERSION_ANNOTATION)
    if served == str(version) and (_condition(existing, "Ready") or {}).get("status") == "True":
        return _result("unchanged", existing, version, stable)

    # A canary needs a stable revision to compare with and to fall back to; without one, update in place.
    canary = cfg.serving.kserve.canary and stable is not None
    percent = cfg.serving.canary.traffic_percent if canary else None
    cluster.patch(name, _spec_patch(render_inference_service(cfg, version, namespace=namespace, canary_percent=percent)))
    try:
        obj, revision = _wait_revision(cluster, name, stable, timeout, clock, sleep, where)
    except ServingError as err:
        if canary:
            _roll_back(cluster, name, served)
        raise ServingError(f"{err}; traffic stays on {stable} (version {served})") from err
    if not canary:
        return _result("updated", obj, version, revision)

    model = cfg.registry.model_name

    assert stable is not None  # canary is only on with a stable revision

    def scrape():
        return cluster.revision_metrics(revision, model), cluster.revision_metrics(stable, model)

    try:
        decision = analyse_canary(windows_from(scrape), cfg.serving.canary, clock=clock, sleep=sleep,
                                  on_decision=on_decision or _log_decision)
    except Exception:
        _roll_back(cluster, name, served)  # no evidence is not a pass
        raise
    if decision.action is RolloutAction.PROMOTE:
        cluster.patch(name, {"spec": {"predictor": {"canaryTrafficPercent": None}}})
        log.info("%s: promoted %s (version %s) to 100%%: %s", where, revision, version, "; ".join(decision.reasons))
        return {**_result("promoted", cluster.get(name) or obj, version, revision), "decision": decision.summary()}
    _roll_back(cluster, name, served)
    raise ServingError(
        f"{where}: canary {revision} (version {version}) rolled back: {'; '.join(decision.reasons)}",
        hint=f"all traffic is back on {stable} (version {served}); fix the model, then deploy again",
    )


def _spec_patch(manifest: dict[str, Any]) -> dict[str, Any]:
    # A merge patch replaces lists (the container) whole and keeps fields kfops does not own.
    return {"metadata": {"annotations": manifest["metadata"]["annotations"]}, "spec": manifest["spec"]}


def _roll_back(cluster: ClusterServing, name: str, stable_version: str | None) -> None:
    annotations = {VERSION_ANNOTATION: stable_version} if stable_version else {}
    cluster.patch(name, {"metadata": {"annotations": annotations}, "spec": {"predictor": {"canaryTrafficPercent": 0}}})


def _wait_revision(
    cluster: ClusterServing, name: str, previous: str | None, timeout_s: float,
    clock: Callable[[], float], sleep: Callable[[float], None], where: str,
) -> tuple[dict[str, Any], str]:
    deadline = clock() + timeout_s
    while True:
        obj = cluster.get(name)
        if obj is None:
            raise ServingError(f"{where} disappeared while it was being rolled out")
        revision = _new_revision_ready(obj, previous)
        if revision:
            return obj, revision
        failed = _revision_failed(obj)
        if failed:
            raise ServingError(f"{where}: the new revision failed: {failed}")
        if clock() >= deadline:
            raise ServingError(f"{where}: the new revision was not Ready within {timeout_s:g}s "
                               "(serving.kserve.ready_timeout_s)")
        sleep(5.0)


def _result(action: str, obj: dict[str, Any], version: str, revision: str | None) -> dict[str, Any]:
    status = obj.get("status") or {}
    return {"action": action, "version": str(version), "revision": revision, "url": status.get("url"),
            "traffic": predictor_status(obj).get("traffic")}


def _log_decision(decision: RolloutDecision) -> None:
    log.info("canary: %s (%s)", decision.action, "; ".join(decision.reasons))
