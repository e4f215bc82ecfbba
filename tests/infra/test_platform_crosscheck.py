"""What kfops renders and calls, checked against what the platform Terraform installs and grants.

The reference on each side is independent of kfops' own expectations:
- Terraform as written, parsed with python-hcl2;
- upstream metadata vendored under tests/infra/upstream/ (chart names and versions, KServe's
  deployment modes, the pinned KFP manifests' pipeline-runner Role, the Trainer chart's runtimes);
- the Kubernetes calls kfops really makes, recorded from the deploy and TrainJob code paths run
  against the scripted API servers of the unit tests (which validate every body against the CRDs).
"""

from __future__ import annotations

import importlib.util
import re
from typing import ClassVar

import pytest
import yaml

from tests.conftest import REPO_ROOT, services_required
from tests.infra.terraform_tree import INFRA_ROOT, TERRAFORM_ROOT, load_dir

if importlib.util.find_spec("hcl2") is None:
    reason = "python-hcl2 is missing; it is in the dev extra: pip install -e '.[dev]'"
    if services_required():
        pytest.fail(f"{reason} (KFOPS_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.infra

PLATFORM_MODULE = TERRAFORM_ROOT / "modules" / "platform"
UPSTREAM = REPO_ROOT / "tests" / "infra" / "upstream"


def platform():
    return load_dir(PLATFORM_MODULE)


def releases() -> dict[str, dict]:
    return {name: body for (kind, name), body in platform().typed("resource").items() if kind == "helm_release"}


def pinned(release: dict) -> str:
    return str(platform().variable_default(release["version"]))


def platform_local(name: str):
    for block in platform().blocks.get("locals", []):
        if name in block:
            return block[name]
    raise KeyError(name)


def chart_yaml(relative: str) -> dict:
    return yaml.safe_load((UPSTREAM / relative).read_text())


def upstream_env(relative: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (UPSTREAM / relative).read_text().split())


# --- charts and versions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "release, metadata",
    [
        ("kserve", "kserve/kserve-resources.Chart.yaml"),
        ("kserve_crd", "kserve/kserve-crd.Chart.yaml"),
        ("kubeflow_trainer", "kubeflow-trainer/Chart.yaml"),
        ("mlflow", "mlflow-chart/Chart.yaml"),
        ("cluster_autoscaler", "cluster-autoscaler/Chart.yaml"),
    ],
)
def test_each_chart_is_one_upstream_publishes_at_that_version(release, metadata):
    body, chart = releases()[release], chart_yaml(metadata)
    assert body["chart"] == chart["name"], f"helm_release.{release}: upstream publishes '{chart['name']}'"
    assert pinned(body) == str(chart["version"]), f"helm_release.{release}: pinned {pinned(body)}, upstream {chart['version']}"


def test_cluster_autoscaler_matches_the_eks_version():
    """The chart's autoscaler must be the cluster's Kubernetes minor (the autoscaler's own rule)."""
    app_version = str(chart_yaml("cluster-autoscaler/Chart.yaml")["appVersion"])
    eks_default = load_dir(INFRA_ROOT).variables["kubernetes_version"]["default"]
    assert app_version.rsplit(".", 1)[0] == eks_default, f"autoscaler {app_version} on EKS {eks_default}"


def test_kubeflow_pipelines_manifests_are_a_published_release():
    published = (UPSTREAM / "kubeflow-pipelines" / "pipeline-install-config.appVersion.txt").read_text().split(":")[1].strip()
    assert platform().variables["kfp_version"]["default"] == published


def test_knative_versions_are_the_ones_kserve_installs_with():
    deps = upstream_env("kserve/kserve-deps.env")
    variables = platform().variables
    assert variables["knative_operator_version"]["default"] == deps["KNATIVE_OPERATOR_VERSION"]
    assert variables["knative_serving_version"]["default"] == deps["KNATIVE_SERVING_VERSION"]
    assert variables["kserve_chart_version"]["default"] == deps["KSERVE_VERSION"]
    operator = releases()["knative_operator"]
    # The release job fills in `version: {{ version }}`; the name is what the asset is called after.
    chart = (UPSTREAM / "knative-operator" / "Chart.yaml").read_text()
    assert re.search(r"^name: knative-operator$", chart, re.MULTILINE)
    assert "knative-operator-${var.knative_operator_version}.tgz" in operator["chart"]


# --- serving mode -------------------------------------------------------------------------------


def kserve_modes() -> dict[str, str]:
    """Every deployment-mode spelling KServe accepts -> the mode it means (legacy names folded)."""
    text = (UPSTREAM / "kserve" / "deployment-modes.go.txt").read_text()
    constants = dict(re.findall(r"^\s*(\w+)\s+DeploymentModeType = \"(\w+)\"", text, re.MULTILINE))
    modes = {value: value for value in constants.values()}
    for name, value in constants.items():
        if name.startswith("Legacy"):
            modes[value] = constants[name.removeprefix("Legacy").replace("Serverless", "Knative").replace(
                "RawDeployment", "Standard")]
    return modes


def installed_mode() -> str:
    """The mode the KServe release installs: local.kserve_deployment_mode (its values reference it)."""
    return platform_local("kserve_deployment_mode")


def test_the_platform_installs_kserve_in_the_mode_deploy_renders():
    from kfops.adapters.kserve_cluster import render_inference_service
    from kfops.config import load_config

    modes = kserve_modes()
    mode = installed_mode()
    assert mode in modes, f"KServe has no deployment mode '{mode}'"
    kserve = releases()["kserve"]
    assert re.search(r"deploymentMode\s*=\s*local\.kserve_deployment_mode", str(kserve["values"])), (
        "the KServe release must install the mode in local.kserve_deployment_mode"
    )
    cfg = load_config(None, ["registry.tracking_uri=http://mlflow.mlflow.svc:5000", "cluster.serving_namespace=s"],
                      environ={})
    for canary in (None, 10):
        manifest = render_inference_service(cfg, "1", canary_percent=canary)
        rendered = manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        assert modes.get(rendered) == modes[mode], f"deploy renders {rendered}, the platform installs {mode}"
        if "canaryTrafficPercent" in manifest["spec"]["predictor"]:
            # KServe splits traffic between revisions only in Knative mode.
            assert modes[rendered] == "Knative"


def test_knative_mode_has_knative_serving_installed_first():
    if kserve_modes()[installed_mode()] != "Knative":
        pytest.skip("the platform installs KServe in Standard mode")
    kserve = releases()["kserve"]
    assert "${helm_release.knative_serving}" in kserve["depends_on"]
    serving = releases()["knative_serving"]
    chart = PLATFORM_MODULE / serving["chart"].removeprefix("${path.module}/")
    rendered = (chart / "templates" / "knative-serving.yaml").read_text()
    assert "kind: KnativeServing" in rendered and "kourier" in rendered
    # KServe must not expect Istio when the network layer is Kourier.
    assert re.search(r"disableIstioVirtualHost\s*=\s*true", str(kserve["values"]))


# --- kfp-launcher ------------------------------------------------------------------------------


def test_kfp_launcher_has_one_owner_the_upstream_manifests():
    upstream = yaml.safe_load((UPSTREAM / "kubeflow-pipelines" / "kfp-launcher-configmap.yaml").read_text())
    assert (upstream["kind"], upstream["metadata"]["name"]) == ("ConfigMap", "kfp-launcher")
    created = [
        name for (kind, name), body in platform().typed("resource").items()
        if kind.startswith("kubernetes_config_map") and "kfp-launcher" in str(body.get("metadata"))
    ]
    assert not created, f"the upstream KFP manifests already create kfp-launcher; Terraform creates it too: {created}"
    overlay = platform().typed("data")[("kustomization_overlay", "kfp")]
    targets = [patch["target"][0] for patch in overlay.get("patches", [])]
    assert {"kind": "ConfigMap", "name": "kfp-launcher"} in targets, "patch the upstream kfp-launcher instead"


# --- RBAC -------------------------------------------------------------------------------------


class Recorder:
    """Wraps a scripted API and records (API group, resource, verb) of each Kubernetes call."""

    CUSTOM = re.compile(r"^(get|create|patch|delete|replace|list)_namespaced_custom_object$")
    VERBS: ClassVar[dict[str, str]] = {"replace": "update"}
    WORKLOAD = re.compile(r"^(create|patch|replace)_namespaced_(deployment|service|network_policy)$")
    RESOURCES: ClassVar[dict[str, tuple[str, str]]] = {
        "deployment": ("apps", "deployments"), "service": ("", "services"),
        "network_policy": ("networking.k8s.io", "networkpolicies")}

    def __init__(self, api):
        self.api, self.calls = api, set()

    def __getattr__(self, method):
        target = getattr(self.api, method)

        def call(*args, **kwargs):
            if match := self.CUSTOM.match(method):
                group, _, namespace, plural = args[:4]
                verb = match.group(1)
                self.calls.add((namespace, group, plural, self.VERBS.get(verb, verb)))
            elif method == "list_namespaced_pod":
                self.calls.add((args[0], "", "pods", "list"))
            elif method == "connect_get_namespaced_pod_proxy_with_path":
                self.calls.add((args[1], "", "pods/proxy", "get"))
            elif match := self.WORKLOAD.match(method):
                verb, kind = match.groups()
                namespace = args[0] if verb == "create" else args[1]
                group, resource = self.RESOURCES[kind]
                self.calls.add((namespace, group, resource, self.VERBS.get(verb, verb)))
            else:
                raise AssertionError(f"unclassified Kubernetes call {method}: add it to the recorder")
            return target(*args, **kwargs)

        return call


def deploy_calls(namespace: str) -> set[tuple]:
    """A first deploy, then a canary that is promoted, as the deploy step runs them, with kfops'
    log sink beside the InferenceService (its Deployment, Service and NetworkPolicies)."""
    from kfops.adapters.kserve_cluster import VERSION, ClusterServing, rollout
    from tests.support.crds import ISVC_CRD, openapi_schema
    from tests.unit.test_inference_service import ScriptedKServe
    from tests.unit.test_log_sink_manifests import ScriptedWorkloads, sink_config

    api = ScriptedKServe(openapi_schema(ISVC_CRD, VERSION), ["healthy", "healthy"])
    recorder, workloads = Recorder(api), Recorder(ScriptedWorkloads())
    cfg = sink_config(f"cluster.serving_namespace={namespace}")
    cluster = ClusterServing(namespace, custom=recorder, core=_Either(recorder, workloads), networking=workloads,
                             apps=workloads)
    rollout(cfg, "7", cluster=cluster, clock=api.clock, sleep=api.sleep)
    rollout(cfg, "8", cluster=cluster, clock=api.clock, sleep=api.sleep)
    return recorder.calls | workloads.calls


class _Either:
    """CoreV1Api split between two scripted servers: Services to one, pods to the other."""

    def __init__(self, pods, services):
        self.pods, self.services = pods, services

    def __getattr__(self, method):
        return getattr(self.services if method.endswith("_namespaced_service") else self.pods, method)


def trainjob_calls(namespace: str) -> set[tuple]:
    """A TrainJob that completes, and one that times out (and is deleted)."""
    from kfops.adapters.trainjob import submit_and_wait
    from kfops.errors import TrainingError
    from tests.unit.test_trainjob import ScriptedTrainJobs, _condition

    manifest = {"metadata": {"name": "kfops-train"}, "spec": {}}
    done = Recorder(ScriptedTrainJobs([{"conditions": [_condition("Complete")]}]))
    submit_and_wait(manifest, namespace, timeout_s=60, poll_s=0, api=done)
    stuck = Recorder(ScriptedTrainJobs([{"conditions": []}]))
    with pytest.raises(TrainingError):
        submit_and_wait(manifest, namespace, timeout_s=0, poll_s=0, api=stuck)
    return done.calls | stuck.calls


def rules_of(role: dict) -> list[dict]:
    return [
        {"groups": set(rule["api_groups"]), "resources": set(rule["resources"]), "verbs": set(rule["verbs"])}
        for rule in role["rule"]
    ]


def terraform_grants() -> dict[str, list[dict]]:
    """Rules by namespace of every Role Terraform binds to the pipeline-runner service account."""
    resources = platform().typed("resource")
    grants: dict[str, list[dict]] = {}
    for (kind, name), binding in resources.items():
        if kind != "kubernetes_role_binding_v1":
            continue
        subjects = binding["subject"]
        if not any(subject["name"] == "${local.pipeline_sa.name}" for subject in subjects):
            continue
        role_name = re.fullmatch(r"\$\{kubernetes_role_v1\.(\w+)\.metadata\[0\]\.name\}", binding["role_ref"][0]["name"])
        assert role_name, f"binding {name} must reference a Role of this module"
        role = resources[("kubernetes_role_v1", role_name.group(1))]
        namespace = role["metadata"][0]["namespace"]
        grants.setdefault(namespace, []).extend(rules_of(role))
    return grants


def upstream_pipeline_runner_rules() -> list[dict]:
    role = yaml.safe_load((UPSTREAM / "kubeflow-pipelines" / "pipeline-runner-role.yaml").read_text())
    return [
        {"groups": set(rule["apiGroups"]), "resources": set(rule["resources"]), "verbs": set(rule["verbs"])}
        for rule in role["rules"]
    ]


def granted(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["groups"] and ({resource, "*"} & rule["resources"]) and ({verb, "*"} & rule["verbs"])
        for rule in rules
    )


KFP_NAMESPACE = "${local.kfp_namespace}"
SERVING_NAMESPACE = "${kubernetes_namespace_v1.serving.metadata[0].name}"


def test_every_call_of_deploy_and_trainjobs_is_granted_to_the_pipeline_runner():
    grants = terraform_grants()
    # Pipeline pods run as pipeline-runner in the KFP namespace; the upstream Role applies there.
    where = {
        "serving": (SERVING_NAMESPACE, grants.get(SERVING_NAMESPACE, [])),
        "kfp": (KFP_NAMESPACE, grants.get(KFP_NAMESPACE, []) + upstream_pipeline_runner_rules()),
    }
    calls = {("serving", *call[1:]) for call in deploy_calls("serving")}
    calls |= {("kfp", *call[1:]) for call in trainjob_calls("kfp")}
    assert {call[2] for call in calls} >= {"inferenceservices", "trainjobs", "pods/proxy", "deployments", "services",
                                           "networkpolicies"}
    missing = [call for call in sorted(calls) if not granted(where[call[0]][1], *call[1:])]
    assert not missing, f"Kubernetes calls kfops makes that no Role grants the pipeline-runner: {missing}"


def test_the_promotion_controller_can_watch_and_update_inferenceservices():
    rules = terraform_grants().get(SERVING_NAMESPACE, [])
    for verb in ("get", "list", "watch", "create", "patch", "update"):
        assert granted(rules, "serving.kserve.io", "inferenceservices", verb), verb


def test_the_upstream_pipeline_runner_alone_grants_neither_api_group():
    """Why the Roles above exist: the audit's finding, kept true against the vendored Role."""
    rules = upstream_pipeline_runner_rules()
    assert not granted(rules, "serving.kserve.io", "inferenceservices", "create")
    assert not granted(rules, "trainer.kubeflow.org", "trainjobs", "create")


# --- TrainJob runtime ---------------------------------------------------------------------------


def installed_runtimes() -> set[str]:
    """ClusterTrainingRuntimes the Trainer release installs, from its values and the chart's template."""
    template = (UPSTREAM / "kubeflow-trainer" / "_runtimes.tpl").read_text()
    files = dict(re.findall(
        r"\.Values\.runtimes\.(\w+)\.enabled \.Values\.runtimes\.defaultEnabled \}\}\s*\n---\s*\n"
        r"\{\{ tpl \(\.Files\.Get \"files/runtimes/([\w-]+)\.yaml\"",
        template,
    ))
    assert files, "the vendored _runtimes.tpl no longer maps values to runtime files"
    values = str(releases()["kubeflow_trainer"]["values"])
    if re.search(r"defaultEnabled\s*=\s*true", values):
        enabled = set(files)
    else:
        enabled = {key for key in files if re.search(rf"{key}\s*=\s*\{{\s*enabled\s*=\s*true", values)}
    names = set()
    for key in enabled:
        if files[key] == "torch-distributed":
            text = (UPSTREAM / "kubeflow-trainer" / "torch-distributed.yaml").read_text()
            names.add(re.search(r"^metadata:\n  name: ([\w-]+)", text, re.MULTILINE).group(1))
        else:
            names.add(files[key])  # the chart names each runtime after its file
    return names


def test_the_trainjob_runtime_ref_names_an_installed_runtime():
    from kfops.adapters.trainjob import render_trainjob
    from kfops.config import ClusterConfig, TorchConfig

    manifest = render_trainjob("kfops-train", "s3://b/job", TorchConfig(num_nodes=2), ClusterConfig())
    ref = manifest["spec"]["runtimeRef"]
    assert ref["kind"] == "ClusterTrainingRuntime"
    assert ref["name"] in installed_runtimes(), f"{ref['name']} is not installed by the Trainer release"
    assert platform_local("trainer_runtime") == ref["name"]


def test_vendored_files_are_listed_in_the_readme():
    readme = (UPSTREAM / "README.md").read_text()
    files = [path.relative_to(UPSTREAM).as_posix() for path in UPSTREAM.rglob("*") if path.is_file()]
    missing = [name for name in files if name != "README.md" and f"`{name}`" not in readme]
    assert not missing, f"vendored without a source note: {missing}"

