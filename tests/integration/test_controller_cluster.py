"""The controller's cluster path: a signed alias webhook leads to the KServe canary rollout, under a
Kubernetes Lease, against the scripted API server the deploy tests use (tests/unit/test_inference_service.py).

The registry is the embedded one (MLflow on SQLite); the InferenceService and the Lease live in the
scripted API server, which validates every InferenceService body against the real CRD and plays
KServe's revisions and traffic split.
"""

from __future__ import annotations

import copy
import json
import time
import uuid

import pytest

from kfops.adapters import mlflow_registry as registry
from kfops.adapters.kserve_cluster import VERSION_ANNOTATION, ClusterServing, rollout
from kfops.adapters.kube import KubeLease
from kfops.core.webhook import sign
from kfops.runners.controller import STATUS_TAG, Controller, kube_lease
from tests.integration.conftest import log_registered_model
from tests.support.example import example_config
from tests.unit.test_inference_service import MODEL, ScriptedKServe, cluster_config, isvc_schema  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("private_prometheus_values")]
SECRET = "cluster-test-secret"


class ScriptedLeases:
    """CoordinationV1Api's Lease calls for one namespace, with the API server's optimistic concurrency."""

    def __init__(self):
        self.leases: dict[str, dict] = {}
        self.writes: list[dict] = []

    def read_namespaced_lease(self, name, namespace):
        from kubernetes.client.exceptions import ApiException

        if name not in self.leases:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.leases[name])

    def create_namespaced_lease(self, namespace, body):
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        if name in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        self._store(name, body)

    def replace_namespaced_lease(self, name, namespace, body):
        from kubernetes.client.exceptions import ApiException

        if body["metadata"].get("resourceVersion") != self.leases[name]["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self._store(name, body)

    def _store(self, name, body):
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(len(self.writes) + 1)
        self.leases[name] = body
        self.writes.append(copy.deepcopy(body))


def signed(name: str, version: str) -> tuple[dict, bytes]:
    body = json.dumps({"entity": "model_version_alias", "action": "created", "timestamp": "2026-01-01T00:00:00Z",
                       "data": {"name": name, "alias": "champion", "version": version}}).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    return {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": sign(SECRET, delivery, stamp, body)}, body


@pytest.fixture
def setting(tmp_path, isvc_schema):  # noqa: F811
    cfg = example_config({"data_dir": str(tmp_path / "state"),
                                      "registry": {"model_name": MODEL}}).resolve(tmp_path)
    v1 = str(log_registered_model(cfg, tmp_path, "run-1").version)
    v2 = str(log_registered_model(cfg, tmp_path, "run-2", seed=1).version)
    registry.move_alias(cfg, registry.CHAMPION, v1, reason="first", who="tester")
    api, leases = ScriptedKServe(isvc_schema, ["healthy", "healthy"]), ScriptedLeases()
    cluster_cfg = cluster_config()
    cluster = ClusterServing(cluster_cfg.cluster.serving_namespace, custom=api, core=api)

    def roll(_cfg, version):
        return rollout(cluster_cfg, version, cluster=cluster, clock=api.clock, sleep=api.sleep)

    def served(_cfg):
        return ((api.obj or {}).get("metadata") or {}).get("annotations", {}).get(VERSION_ANNOTATION)

    def lease(_cfg, timeout_s):
        return kube_lease(_cfg, timeout_s, lease=KubeLease("kfops-serving", f"kfops-rollout-{MODEL}", "controller-0",
                                                           duration_s=30, api=leases))

    controller = Controller(cfg, SECRET, rollout=roll, served=served, lease=lease, lease_timeout_s=1.0).start()
    yield {"cfg": cfg, "v1": v1, "v2": v2, "api": api, "leases": leases, "controller": controller}
    controller.stop(timeout_s=30)


def test_a_webhook_rolls_the_new_version_out_as_a_canary_under_the_lease(setting):
    cfg, api, leases, controller = setting["cfg"], setting["api"], setting["leases"], setting["controller"]
    controller.reconcile()  # on start: nothing serves yet, so the InferenceService is created
    assert controller.wait_idle(60)
    assert api.calls[0][0] == "create" and api.obj["metadata"]["annotations"][VERSION_ANNOTATION] == setting["v1"]

    registry.client(cfg).set_registered_model_alias(MODEL, "champion", setting["v2"])  # what the UI does
    status, answer = controller.handle(*signed(MODEL, setting["v2"]))
    assert status == 202, answer
    assert controller.wait_idle(60)

    assert controller.outcomes[-1] == {"version": setting["v2"], "action": "deployed", "from": setting["v1"]}
    assert api.calls[1][1]["spec"]["predictor"]["canaryTrafficPercent"] == 10  # it went out as a canary
    assert api.traffic_share() == {f"{MODEL}-predictor-00002": 100}
    assert registry.model_version(cfg, version=setting["v2"]).tags[STATUS_TAG] == "serving"
    assert registry.model_version(cfg, version=setting["v1"]).tags[STATUS_TAG] == "replaced"
    last = registry.audit_trail(cfg)[-1]
    assert (last["from_version"], last["to_version"], last["via"]) == (setting["v1"], setting["v2"], "webhook")
    # The Lease was taken for each rollout and given back after it.
    holders = [w["spec"]["holderIdentity"] for w in leases.writes]
    assert "controller-0" in holders and holders[-1] is None


def test_a_lease_held_by_another_controller_keeps_this_one_from_rolling_out(setting):
    leases, api, controller = setting["leases"], setting["api"], setting["controller"]
    leases.create_namespaced_lease("kfops-serving", KubeLease(
        "kfops-serving", f"kfops-rollout-{MODEL}", "controller-1", duration_s=3600)._body(0, holder="controller-1"))
    controller.reconcile()
    assert controller.wait_idle(60)

    assert api.calls == [] and controller.outcomes == []
    assert leases.leases[f"kfops-rollout-{MODEL}"]["spec"]["holderIdentity"] == "controller-1"
