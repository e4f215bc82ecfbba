"""RBAC cross-check: the controller's Role grants exactly the Kubernetes calls a rollout makes.

The calls are read from the code that makes them (the InferenceService rollout and the Lease); a
new call without its rule, or a rule no call needs, fails here.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.terraform_tree import TERRAFORM_ROOT

pytestmark = pytest.mark.infra
CONTROLLER_TF = TERRAFORM_ROOT / "modules" / "platform" / "controller.tf"
ROLLOUT_CODE = [REPO_ROOT / "kfops" / "adapters" / "kserve_cluster.py", REPO_ROOT / "kfops" / "adapters" / "kube.py"]
# kubernetes client method -> (API group, resource, verb)
CALLS = {
    "get_namespaced_custom_object": ("serving.kserve.io", "inferenceservices", "get"),
    "create_namespaced_custom_object": ("serving.kserve.io", "inferenceservices", "create"),
    "patch_namespaced_custom_object": ("serving.kserve.io", "inferenceservices", "patch"),
    "list_namespaced_pod": ("", "pods", "list"),
    "connect_get_namespaced_pod_proxy_with_path": ("", "pods/proxy", "get"),
    "read_namespaced_lease": ("coordination.k8s.io", "leases", "get"),
    "create_namespaced_lease": ("coordination.k8s.io", "leases", "create"),
    "replace_namespaced_lease": ("coordination.k8s.io", "leases", "update"),
    "create_namespaced_network_policy": ("networking.k8s.io", "networkpolicies", "create"),
    "replace_namespaced_network_policy": ("networking.k8s.io", "networkpolicies", "update"),
    "create_namespaced_deployment": ("apps", "deployments", "create"),
    "patch_namespaced_deployment": ("apps", "deployments", "patch"),
    "create_namespaced_service": ("", "services", "create"),
    "patch_namespaced_service": ("", "services", "patch"),
}


def calls_in_code() -> set[tuple[str, str, str]]:
    names = set()
    for path in ROLLOUT_CODE:
        names |= set(re.findall(r"\.(\w+_namespaced_\w+)\b", path.read_text()))
    unknown = names - CALLS.keys()
    assert not unknown, f"map these Kubernetes calls to their RBAC rule in CALLS: {sorted(unknown)}"
    return {CALLS[name] for name in names}


def granted_by_role() -> set[tuple[str, str, str]]:
    text = CONTROLLER_TF.read_text()
    role = text[text.index('resource "kubernetes_role_v1" "controller"'):]
    role = role[:role.index('\nresource "')]
    granted = set()
    for block in re.findall(r"rule \{(.*?)\}", role, re.S):
        groups = re.findall(r'"([^"]*)"', re.search(r"api_groups\s*=\s*\[(.*?)\]", block).group(1))
        resources = re.findall(r'"([^"]*)"', re.search(r"resources\s*=\s*\[(.*?)\]", block).group(1))
        verbs = re.findall(r'"([^"]*)"', re.search(r"verbs\s*=\s*\[(.*?)\]", block).group(1))
        granted |= {(g, r, v) for g in groups for r in resources for v in verbs}
    return granted


def test_the_controller_role_grants_exactly_what_a_rollout_calls():
    assert granted_by_role() == calls_in_code()


def test_the_cross_check_notices_a_missing_rule():
    granted = granted_by_role() - {("coordination.k8s.io", "leases", "update")}
    assert granted != calls_in_code()
