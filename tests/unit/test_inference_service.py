"""The KServe InferenceService: rendered manifests against the upstream CRD, and the canary rollout.

Kubernetes is not available here. The rollout runs against a scripted API server that keeps
one InferenceService, applies merge patches the way the API server does, validates every body
against the real CRD schema, and plays KServe's part (revisions, traffic split). Pods expose
real Prometheus text from the server's own collectors.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest

from kfops.adapters.kserve_cluster import (
    CONTAINER,
    VERSION,
    VERSION_ANNOTATION,
    ClusterServing,
    render_inference_service,
    rollout,
)
from kfops.config import CONFIG_JSON_ENV, KfopsConfig, load_config
from kfops.errors import ConfigError, ServingError
from kfops.serving.runtime.metrics import ServingMetrics
from tests.support.crds import ISVC_CRD, openapi_schema, validate

MODEL = "flights-delay"
pytestmark = pytest.mark.usefixtures("private_prometheus_values")


def cluster_config(*overrides: str) -> KfopsConfig:
    return load_config(None, [
        "registry.tracking_uri=http://mlflow.kfops.svc:5000", "cluster.serving_namespace=kfops-serving",
        "cluster.serving_service_account=kfops-serving", "cluster.serving_image=ghcr.io/acme/kfops-serving:1.2.3",
        "serving.kserve.logger_url=http://kfops-inference-log.kfops-serving.svc", "serving.kserve.max_replicas=8",
        "serving.canary.bake_s=60", "serving.canary.min_requests=200", "serving.canary.poll_s=10",
        "serving.canary.timeout_s=600", *overrides,
    ], environ={})  # fmt: skip


@pytest.fixture(scope="module")
def isvc_schema() -> dict:
    return openapi_schema(ISVC_CRD, VERSION)


# --- rendering ---------------------------------------------------------------------------------


def test_first_deploy_manifest_matches_the_crd(isvc_schema):
    cfg = cluster_config("serving.kserve.container_concurrency=64")
    manifest = render_inference_service(cfg, "7")
    validate(manifest, isvc_schema)

    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == (MODEL, "kfops-serving")
    assert meta["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert meta["annotations"][VERSION_ANNOTATION] == "7"
    predictor = manifest["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 8)
    assert (predictor["scaleMetric"], predictor["scaleTarget"], predictor["containerConcurrency"]) == ("rps", 1000, 64)
    assert predictor["logger"] == {"mode": "all", "url": "http://kfops-inference-log.kfops-serving.svc"}
    assert predictor["serviceAccountName"] == "kfops-serving"
    (container,) = predictor["containers"]
    # The predictor runs the slim serving image, not the pipeline image.
    assert container["name"] == CONTAINER and container["image"] == "ghcr.io/acme/kfops-serving:1.2.3"
    assert container["command"] == ["python", "-m", "kfops.serving"]
    args = container["args"]
    assert args[args.index("--model-uri") + 1] == "models:/flights-delay/7"
    assert args[args.index("--tracking-uri") + 1] == "http://mlflow.kfops.svc:5000"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert "--no-inference-log" in args  # the KServe logger carries the inference log on a cluster
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert KfopsConfig.from_json(env[CONFIG_JSON_ENV]) == cfg  # the server reads the same config


def test_the_serving_entry_point_parses_the_rendered_arguments(monkeypatch):
    from kfops.serving.__main__ import parser

    (container,) = render_inference_service(cluster_config(), "7")["spec"]["predictor"]["containers"]
    args = parser().parse_args(container["args"])
    assert (args.model_uri, args.host, args.http_port, args.no_inference_log) == ("models:/flights-delay/7", "0.0.0.0",
                                                                                  8080, True)


def test_canary_update_manifest_matches_the_crd(isvc_schema):
    manifest = render_inference_service(cluster_config("serving.canary.traffic_percent=20"), "8", canary_percent=20)
    validate(manifest, isvc_schema)
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 20


def test_without_a_logger_the_server_keeps_its_own_log(isvc_schema):
    manifest = render_inference_service(cluster_config("serving.kserve.logger_url=null"), "7")
    validate(manifest, isvc_schema)
    assert "logger" not in manifest["spec"]["predictor"]
    assert "--no-inference-log" not in manifest["spec"]["predictor"]["containers"][0]["args"]


def test_the_transformer_option_splits_the_lookup_into_its_own_container(isvc_schema):
    manifest = render_inference_service(cluster_config("serving.kserve.transformer=true"), "7")
    validate(manifest, isvc_schema)
    predictor, transformer = manifest["spec"]["predictor"], manifest["spec"]["transformer"]
    args = predictor["containers"][0]["args"]
    assert args[args.index("--online-lookup") + 1] == "none"  # the predictor takes feature vectors only
    (container,) = transformer["containers"]
    assert container["command"] == ["python", "-m", "kfops.serving.kserve.transformer"]
    assert container["args"][container["args"].index("--online-lookup") + 1] == "feast"
    assert container["image"] == predictor["containers"][0]["image"]
    assert (transformer["minReplicas"], transformer["maxReplicas"]) == (1, 8)


def test_the_schema_check_catches_a_bad_manifest(isvc_schema):
    import jsonschema

    manifest = render_inference_service(cluster_config(), "7")
    bad = copy.deepcopy(manifest)
    bad["spec"]["predictor"]["scaleMetric"] = "latency"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, isvc_schema)
    pruned = copy.deepcopy(manifest)
    pruned["spec"]["predictor"]["canaryPercent"] = 10
    with pytest.raises(AssertionError, match="canaryPercent"):
        validate(pruned, isvc_schema)


@pytest.mark.parametrize("overrides, message", [
    (["registry.tracking_uri=null"], "cannot read the local registry"),
    (["serving.kserve.name=Flights_Delay"], "not a DNS-1035 label"),
])  # fmt: skip
def test_settings_a_cluster_cannot_use_are_refused_before_applying(overrides, message):
    with pytest.raises(ConfigError, match=message):
        render_inference_service(cluster_config(*overrides), "7")


def test_min_replicas_above_max_is_a_config_error():
    with pytest.raises(ConfigError, match="min_replicas"):
        cluster_config("serving.kserve.min_replicas=9")


# --- a scripted API server playing KServe ------------------------------------------------------


def merge_patch(target, patch):
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class Revision:
    def __init__(self, name: str, behaviour: str):
        from prometheus_client import CollectorRegistry

        self.name, self.behaviour = name, behaviour
        self.registry = CollectorRegistry()
        self.metrics = ServingMetrics(self.registry)

    def serve(self, n: int) -> None:
        code, latency = {"healthy": ("200", 0.003), "erroring": ("500", 0.003), "slow": ("200", 0.4)}[self.behaviour]
        for i in range(n):
            failed = self.behaviour == "erroring" and i % 5 == 0  # one request in five fails
            self.metrics.requests.labels(MODEL, "v2", code if failed else "200").inc()
            self.metrics.latency.labels(MODEL, "v2").observe(latency)


class ScriptedKServe:
    """CustomObjectsApi + CoreV1Api for one namespace, with KServe's revision and traffic bookkeeping."""

    def __init__(self, schema: dict, behaviours: list[str], fail_new_revision: bool = False, rps: float = 20.0):
        self.schema, self.behaviours, self.fail_new_revision, self.rps = schema, list(behaviours), fail_new_revision, rps
        self.obj: dict | None = None
        self.revisions: list[Revision] = []
        self.rolled_out: str | None = None
        self.calls: list[tuple[str, dict]] = []
        self.now = 0.0

    # CustomObjectsApi
    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        from kubernetes.client.exceptions import ApiException

        if self.obj is None:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.obj)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        validate(body, self.schema)
        self.calls.append(("create", body))
        self.obj = copy.deepcopy(body)
        self._new_revision()

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append(("patch", body))
        before = self.obj["spec"]["predictor"]
        self.obj = merge_patch(self.obj, body)
        validate(self.obj, self.schema)
        after = self.obj["spec"]["predictor"]
        def strip(p):
            return {k: v for k, v in p.items() if k != "canaryTrafficPercent"}
        if strip(before) != strip(after):
            self._new_revision()
        elif "canaryTrafficPercent" not in after:  # promoted
            self.rolled_out = self.revisions[-1].name
        self._update_status()

    # CoreV1Api
    def list_namespaced_pod(self, namespace, label_selector):
        revision = label_selector.split("=", 1)[1]
        return SimpleNamespace(items=[SimpleNamespace(metadata=SimpleNamespace(name=f"{revision}-pod"),
                                                      status=SimpleNamespace(phase="Running"))])

    def connect_get_namespaced_pod_proxy_with_path(self, name, namespace, path):
        from prometheus_client import generate_latest

        assert path == "metrics" and name.endswith(":8080")
        (revision,) = [r for r in self.revisions if name.startswith(f"{r.name}-pod")]
        return generate_latest(revision.registry).decode()

    # KServe's side
    def _new_revision(self):
        name = f"{MODEL}-predictor-{len(self.revisions) + 1:05d}"
        self.revisions.append(Revision(name, self.behaviours.pop(0)))
        if self.rolled_out is None:
            self.rolled_out = name
        self._update_status()

    def _update_status(self):
        latest = self.revisions[-1].name
        failed = self.fail_new_revision and latest != self.rolled_out
        percent = self.obj["spec"]["predictor"].get("canaryTrafficPercent")
        if latest == self.rolled_out or percent is None:
            traffic = [{"revisionName": latest, "percent": 100, "latestRevision": True}]
        else:
            traffic = [{"revisionName": self.rolled_out, "percent": 100 - percent, "tag": "prev"},
                       {"revisionName": latest, "percent": percent, "tag": "latest", "latestRevision": True}]
        self.obj["status"] = {
            "url": f"http://{MODEL}.kfops-serving.example.com",
            "conditions": [{"type": "Ready", "status": "False" if failed else "True",
                            **({"reason": "RevisionFailed", "message": "container exited"} if failed else {})}],
            "components": {"predictor": {
                "latestCreatedRevision": latest,
                "latestReadyRevision": self.rolled_out if failed else latest,
                "latestRolledoutRevision": self.rolled_out,
                "traffic": [t for t in traffic if t["percent"] > 0] or traffic,
            }},
        }

    def traffic_share(self) -> dict[str, int]:
        return {t["revisionName"]: t["percent"] for t in self.obj["status"]["components"]["predictor"]["traffic"]}

    # The clock of the rollout: time passes and users send requests, split as KServe routes them.
    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for revision in self.revisions:
            share = self.traffic_share().get(revision.name, 0)
            revision.serve(int(self.rps * seconds * share / 100))


def rolled(schema, behaviours, cfg=None, **kwargs):
    api = ScriptedKServe(schema, behaviours, **kwargs)
    cfg = cfg or cluster_config()
    cluster = ClusterServing(cfg.cluster.serving_namespace, custom=api, core=api)
    first = rollout(cfg, "7", cluster=cluster, clock=api.clock, sleep=api.sleep)
    assert first["action"] == "created" and first["revision"] == f"{MODEL}-predictor-00001"
    return api, cluster, cfg


def test_a_healthy_canary_is_promoted_after_the_bake_time(isvc_schema):
    api, cluster, cfg = rolled(isvc_schema, ["healthy", "healthy"])
    decisions = []
    result = rollout(cfg, "8", cluster=cluster, clock=api.clock, sleep=api.sleep, on_decision=decisions.append)

    assert result["action"] == "promoted" and result["revision"] == f"{MODEL}-predictor-00002"
    assert api.traffic_share() == {f"{MODEL}-predictor-00002": 100}
    canary_patch = api.calls[1][1]
    assert canary_patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert api.calls[-1] == ("patch", {"spec": {"predictor": {"canaryTrafficPercent": None}}})
    assert [d.action for d in decisions][-1] == "promote" and len(decisions) > 1  # it waited first
    assert result["decision"]["canary"]["requests"] >= cfg.serving.canary.min_requests
    assert api.obj["metadata"]["annotations"][VERSION_ANNOTATION] == "8"


@pytest.mark.parametrize("behaviour, reason", [("erroring", "server errors"), ("slow", "p99 latency")])
def test_an_unhealthy_canary_is_rolled_back(isvc_schema, behaviour, reason):
    api, cluster, cfg = rolled(isvc_schema, ["healthy", behaviour])
    with pytest.raises(ServingError, match=reason) as err:
        rollout(cfg, "8", cluster=cluster, clock=api.clock, sleep=api.sleep)

    assert "rolled back" in str(err.value) and f"{MODEL}-predictor-00001" in err.value.hint
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert api.traffic_share() == {f"{MODEL}-predictor-00001": 100}
    assert api.obj["metadata"]["annotations"][VERSION_ANNOTATION] == "7"


def test_a_canary_without_enough_traffic_is_rolled_back_at_the_timeout(isvc_schema):
    api, cluster, cfg = rolled(isvc_schema, ["healthy", "healthy"], rps=1.0)  # 0.1 rps reach the canary
    with pytest.raises(ServingError, match="too little traffic"):
        rollout(cfg, "8", cluster=cluster, clock=api.clock, sleep=api.sleep)
    assert api.now >= cfg.serving.canary.timeout_s
    assert api.traffic_share() == {f"{MODEL}-predictor-00001": 100}


def test_a_revision_that_never_becomes_ready_is_rolled_back(isvc_schema):
    api, cluster, cfg = rolled(isvc_schema, ["healthy", "healthy"], fail_new_revision=True)
    with pytest.raises(ServingError, match="RevisionFailed"):
        rollout(cfg, "8", cluster=cluster, clock=api.clock, sleep=api.sleep)
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_redeploying_the_served_version_changes_nothing(isvc_schema):
    api, cluster, cfg = rolled(isvc_schema, ["healthy"])
    calls = len(api.calls)
    assert rollout(cfg, "7", cluster=cluster, clock=api.clock, sleep=api.sleep)["action"] == "unchanged"
    assert len(api.calls) == calls


def test_without_canary_an_update_replaces_in_place(isvc_schema):
    api, cluster, cfg = rolled(isvc_schema, ["healthy", "healthy"], cfg=cluster_config("serving.kserve.canary=false"))
    result = rollout(cfg, "8", cluster=cluster, clock=api.clock, sleep=api.sleep)
    assert result["action"] == "updated"
    assert "canaryTrafficPercent" not in json.dumps(api.calls[1][1])


def test_deploy_step_goes_to_kserve_inside_a_pod_and_stays_local_elsewhere(monkeypatch):
    from kfops.steps.deploy import serving_target

    cfg = cluster_config()
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert serving_target(cfg) == "local"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert serving_target(cfg) == "kserve"
    assert serving_target(cluster_config("serving.target=local")) == "local"
