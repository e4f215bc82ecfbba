"""kfops' inference-log sink on a cluster (`serving.kserve.log_sink`): the Deployment, Service and
NetworkPolicy rendered beside the InferenceService, and the rollout that applies them.

Kubernetes is not available here. Each manifest goes through the Kubernetes client's own models
(generated from the API server's OpenAPI), so a misspelt or misplaced field is lost on the way
and fails the round trip; the InferenceService is checked against KServe's CRD; the sink's
arguments are parsed by the sink's own parser. tests/integration/test_containers.py runs the
rendered container in the serving image.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from kfops.adapters.kserve_cluster import (
    ISVC_POD_LABEL,
    VERSION,
    ClusterServing,
    log_sink_name,
    render_inference_service,
    render_log_sink,
    rollout,
)
from kfops.config import load_config
from kfops.errors import ConfigError
from kfops.serving.sidecars.log_sink import build_parser
from tests.support.crds import ISVC_CRD, openapi_schema, validate
from tests.unit.test_inference_service import ScriptedKServe, cluster_config

NAMESPACE = "kfops-serving"
MODELS = {"Deployment": "V1Deployment", "Service": "V1Service", "NetworkPolicy": "V1NetworkPolicy"}
pytestmark = pytest.mark.usefixtures("private_prometheus_values")


def sink_config(*overrides: str):
    return cluster_config("serving.kserve.logger_url=null", "serving.kserve.log_sink=true",
                          "state.store=s3://kfops-data/kfops-state", *overrides)


def through_client_models(manifest: dict) -> dict:
    """The manifest as the Kubernetes client's model of its kind reads and writes it back."""
    from kubernetes.client import ApiClient

    api = ApiClient()
    model = api._ApiClient__deserialize(manifest, MODELS[manifest["kind"]])
    return api.sanitize_for_serialization(model)


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {m["kind"]: m for m in manifests}


def test_each_manifest_is_a_valid_object_of_its_kind():
    manifests = render_log_sink(sink_config(), namespace=NAMESPACE)
    assert [m["kind"] for m in manifests] == ["Deployment", "Service", "NetworkPolicy"]
    for manifest in manifests:
        assert through_client_models(manifest) == manifest, manifest["kind"]
        assert manifest["metadata"]["namespace"] == NAMESPACE


def test_only_the_inference_services_pods_may_post_to_the_sink():
    objects = by_kind(render_log_sink(sink_config(), namespace=NAMESPACE))
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    policy = objects["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert all(pod_labels.get(k) == v for k, v in policy["podSelector"]["matchLabels"].items())  # it selects the sink
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {ISVC_POD_LABEL: "flights-delay"}}}]  # and nobody else
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    # The Service and the Deployment find the same pods; one replica holds both halves of an event pair.
    selector = objects["Deployment"]["spec"]["selector"]["matchLabels"]
    assert objects["Service"]["spec"]["selector"] == selector and all(pod_labels[k] == v for k, v in selector.items())
    assert objects["Deployment"]["spec"]["replicas"] == 1


def test_the_container_runs_the_sink_on_the_configured_store_without_any_secret():
    cfg = sink_config("features.redis_connection=redis.kfops:6379,password=planted-redis-secret",
                      "registry.tracking_uri=http://user:planted-mlflow-secret@mlflow.kfops.svc:5000",
                      "cluster.log_sink_service_account=kfops-log-sink", "serving.kserve.logger_mode=request")
    objects = by_kind(render_log_sink(cfg, namespace=NAMESPACE))
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "kfops.serving.sidecars.log_sink"]
    args = build_parser().parse_args(container["args"])
    assert (args.store, args.host, args.port, args.mode) == (
        "s3://kfops-data/kfops-state/flights/inference_logs", "0.0.0.0", 8080, "request")
    assert container["image"] == cfg.cluster.serving_image
    assert pod["serviceAccountName"] == "kfops-log-sink" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    text = json.dumps(objects)
    assert "planted-redis-secret" not in text and "planted-mlflow-secret" not in text
    assert all("valueFrom" not in variable for variable in container["env"])  # it needs no secret at all
    # Its default account is the predictors' one.
    pod = by_kind(render_log_sink(sink_config(), namespace=NAMESPACE))["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kfops-serving"


def test_the_logger_posts_to_the_sinks_service_and_the_predictor_logs_nothing_itself():
    cfg = sink_config()
    manifest = render_inference_service(cfg, "7", namespace=NAMESPACE)
    validate(manifest, openapi_schema(ISVC_CRD, VERSION))
    predictor = manifest["spec"]["predictor"]
    service = by_kind(render_log_sink(cfg, namespace=NAMESPACE))["Service"]
    assert predictor["logger"] == {
        "mode": "all", "url": f"http://{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"}
    assert service["spec"]["ports"][0]["port"] == 80
    assert "--no-inference-log" in predictor["containers"][0]["args"]


@pytest.mark.parametrize(("overrides", "message"), [
    (("serving.kserve.logger_url=http://elsewhere",), "logger_url (http://elsewhere) names another"),
])
def test_a_sink_and_another_logger_url_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        sink_config(*overrides)


def test_a_sink_whose_store_is_a_folder_is_refused_before_anything_is_applied():
    cfg = load_config(None, ["registry.tracking_uri=http://mlflow.kfops.svc:5000", "serving.kserve.log_sink=true",
                             f"cluster.serving_namespace={NAMESPACE}"], environ={})
    with pytest.raises(ConfigError, match="a folder that its pod would lose") as refused:
        render_log_sink(cfg, namespace=NAMESPACE)
    assert "serving.inference_log_store" in refused.value.hint
    api = ScriptedKServe(openapi_schema(ISVC_CRD, VERSION), ["healthy"])
    workloads = ScriptedWorkloads()
    with pytest.raises(ConfigError):
        rollout(cfg, "7", cluster=ClusterServing(NAMESPACE, custom=api, core=api, networking=workloads, apps=workloads),
                clock=api.clock, sleep=api.sleep)
    assert api.calls == [] and workloads.objects == {}


class ScriptedWorkloads:
    """AppsV1Api, the Service calls of CoreV1Api and NetworkingV1Api for one namespace: create
    answers 409 for an object that exists, a patch merges into it; every body and every result goes
    through the client's model of its kind."""

    def __init__(self, core=None):
        self.objects: dict[tuple[str, str], dict] = {}
        self.log: list[tuple[str, str, str]] = []
        self.core = core  # the InferenceService's scripted API: to see which came first

    def _create(self, kind, namespace, body):
        from kubernetes.client.exceptions import ApiException

        assert body["metadata"]["namespace"] == namespace and through_client_models(body) == body
        key = (kind, body["metadata"]["name"])
        self.log.append(("create", kind, body["metadata"]["name"]))
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[key] = copy.deepcopy(body)

    def _patch(self, kind, name, namespace, body):
        self.log.append(("patch", kind, name))
        merged = {**self.objects[(kind, name)], **copy.deepcopy(body)}
        assert through_client_models(merged) == merged
        self.objects[(kind, name)] = merged

    def create_namespaced_deployment(self, namespace, body):
        self._create("Deployment", namespace, body)

    def patch_namespaced_deployment(self, name, namespace, body):
        self._patch("Deployment", name, namespace, body)

    def create_namespaced_service(self, namespace, body):
        self._create("Service", namespace, body)

    def patch_namespaced_service(self, name, namespace, body):
        self._patch("Service", name, namespace, body)

    def create_namespaced_network_policy(self, namespace, body):
        self._create("NetworkPolicy", namespace, body)

    def replace_namespaced_network_policy(self, name, namespace, body):
        self._patch("NetworkPolicy", name, namespace, body)

    # the InferenceService's own calls go to the scripted KServe, noting the order
    def __getattr__(self, method):
        if self.core is None:
            raise AttributeError(method)
        target = getattr(self.core, method)

        def call(*args, **kwargs):
            self.log.append((method, "InferenceService", ""))
            return target(*args, **kwargs)

        return call


def test_a_rollout_applies_the_sink_before_the_inference_service_and_updates_it_later():
    cfg = sink_config()
    api = ScriptedKServe(openapi_schema(ISVC_CRD, VERSION), ["healthy", "healthy"])
    workloads = ScriptedWorkloads(core=api)
    cluster = ClusterServing(NAMESPACE, custom=workloads, core=workloads, networking=workloads, apps=workloads)
    rollout(cfg, "7", cluster=cluster, clock=api.clock, sleep=api.sleep)
    sink = log_sink_name(cfg)
    assert set(workloads.objects) == {("Deployment", sink), ("Service", sink), ("NetworkPolicy", f"{sink}-ingress"),
                                      ("NetworkPolicy", "flights-delay-ingress")}
    first_isvc = workloads.log.index(("create_namespaced_custom_object", "InferenceService", ""))
    assert workloads.log.index(("create", "Deployment", sink)) < first_isvc
    assert api.obj["spec"]["predictor"]["logger"]["url"].startswith(f"http://{sink}.{NAMESPACE}.")

    # The next version: the sink's objects exist, so they are brought up to date, not recreated.
    workloads.log.clear()
    rollout(sink_config("cluster.serving_image=ghcr.io/acme/kfops-serving:1.2.4"), "8", cluster=cluster,
            clock=api.clock, sleep=api.sleep)
    assert ("patch", "Deployment", sink) in workloads.log and ("patch", "Service", sink) in workloads.log
    container = workloads.objects[("Deployment", sink)]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/acme/kfops-serving:1.2.4"


def test_without_the_option_no_sink_is_rendered_or_applied():
    cfg = cluster_config()  # a logger_url of the user's own
    api = ScriptedKServe(openapi_schema(ISVC_CRD, VERSION), ["healthy"])
    workloads = ScriptedWorkloads(core=api)
    rollout(cfg, "7", cluster=ClusterServing(NAMESPACE, custom=workloads, core=workloads, networking=workloads,
                                             apps=workloads), clock=api.clock, sleep=api.sleep)
    assert {kind for kind, _ in workloads.objects} == {"NetworkPolicy"}
    assert api.obj["spec"]["predictor"]["logger"]["url"] == cfg.serving.kserve.logger_url
