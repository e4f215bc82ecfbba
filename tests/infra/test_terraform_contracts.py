"""Offline contract tests of infra/terraform, parsed with python-hcl2.

They catch what `terraform validate` would (undeclared variables and references, missing
outputs) without providers or network, plus kfops-specific contracts: the outputs the CLI
reads, the GPU node pool's taint and label, pinned versions, no secrets in the tree.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from kfops.cluster.terraform_outputs import REQUIRED_OUTPUTS
from kfops.config import ClusterConfig
from tests.conftest import services_required
from tests.infra.terraform_tree import (
    INFRA_ROOT,
    MODULE_META_ARGUMENTS,
    PLATFORM_ROOT,
    TERRAFORM_ROOT,
    load_dir,
    module_source_dir,
    terraform_dirs,
)

if importlib.util.find_spec("hcl2") is None:
    reason = "python-hcl2 is missing; it is in the dev extra: pip install -e '.[dev]'"
    if services_required():
        pytest.fail(f"{reason} (KFOPS_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.infra

EKS_MODULE = TERRAFORM_ROOT / "modules" / "aws" / "eks"
PLATFORM_MODULE = TERRAFORM_ROOT / "modules" / "platform"
SAMPLE_OUTPUTS = TERRAFORM_ROOT / "examples" / "outputs.sample.json"
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")


def _module_calls() -> list[tuple[Path, str, dict]]:
    return [
        (tf_dir, name, call) for tf_dir in terraform_dirs() for name, call in load_dir(tf_dir).module_calls.items()
    ]


def _call_id(item: tuple[Path, str, dict]) -> str:
    return f"{item[0].relative_to(TERRAFORM_ROOT)}:module.{item[1]}"


def test_tree_has_the_expected_layout():
    relative = {str(path.relative_to(TERRAFORM_ROOT)) for path in terraform_dirs()}
    expected = {f"modules/aws/{name}" for name in ("network", "eks", "storage", "mlflow_db", "feast_online", "workload_iam")}
    expected |= {"modules/platform", "envs/aws-dev/infra", "envs/aws-dev/platform"}
    assert expected <= relative


@pytest.mark.parametrize("item", _module_calls(), ids=_call_id)
def test_module_call_passes_declared_and_required_variables(item):
    caller, name, call = item
    source_dir = module_source_dir(caller, call["source"])
    assert source_dir is not None and source_dir.is_dir(), f"module.{name}: source {call['source']} is not a local module"
    variables = load_dir(source_dir).variables
    passed = set(call) - MODULE_META_ARGUMENTS
    undeclared = passed - set(variables)
    required = {var for var, spec in variables.items() if "default" not in spec}
    assert not undeclared, f"module.{name} passes variables {source_dir.name} does not declare: {sorted(undeclared)}"
    assert required <= passed, f"module.{name} misses required variables: {sorted(required - passed)}"


@pytest.mark.parametrize("tf_path", terraform_dirs(), ids=lambda p: str(p.relative_to(TERRAFORM_ROOT)))
def test_references_resolve(tf_path):
    tf_dir = load_dir(tf_path)
    text = tf_dir.text
    problems = []
    problems += [f"var.{v}" for v in set(re.findall(r"\bvar\.(\w+)", text)) - set(tf_dir.variables)]
    problems += [f"local.{v}" for v in set(re.findall(r"\blocal\.(\w+)", text)) - tf_dir.locals]
    data_sources = {f"{kind}.{name}" for kind, name in tf_dir.typed("data")}
    problems += [f"data.{v}" for v in set(re.findall(r"\bdata\.(\w+\.\w+)", text)) - data_sources]
    resources = {f"{kind}.{name}" for kind, name in tf_dir.typed("resource")}
    used = set(re.findall(r"(?<![\w.\"/-])((?:aws|kubernetes|helm|kustomization|random)_\w+\.\w+)", text))
    problems += sorted(used - resources)
    for module_name, output_name in set(re.findall(r"\bmodule\.(\w+)\.(\w+)", text)):
        call = tf_dir.module_calls.get(module_name)
        if call is None:
            problems.append(f"module.{module_name}")
            continue
        source_dir = module_source_dir(tf_path, call["source"])
        if source_dir is not None and output_name not in load_dir(source_dir).outputs:
            problems.append(f"module.{module_name}.{output_name} (no such output)")
    assert not problems, f"{tf_path.relative_to(TERRAFORM_ROOT)} references undeclared: {sorted(problems)}"


def test_platform_root_declares_every_output_the_cli_reads():
    declared = set(load_dir(PLATFORM_ROOT).outputs)
    assert set(REQUIRED_OUTPUTS) <= declared, f"missing outputs: {sorted(set(REQUIRED_OUTPUTS) - declared)}"


def test_platform_root_reads_only_outputs_the_infra_root_declares():
    platform = load_dir(PLATFORM_ROOT)
    assert "data.terraform_remote_state.infra.outputs" in platform.text
    read = set(re.findall(r"\blocal\.infra\.(\w+)", platform.text))
    declared = set(load_dir(INFRA_ROOT).outputs)
    assert read, "the platform root should read the infra root's outputs"
    assert read <= declared, f"platform reads infra outputs that do not exist: {sorted(read - declared)}"


def test_kubernetes_providers_do_not_depend_on_resources_of_the_same_apply():
    platform = load_dir(PLATFORM_ROOT)
    providers = {name: body for block in platform.blocks["provider"] for name, body in block.items()}
    assert {"kubernetes", "helm", "kustomization"} <= set(providers)
    for name in ("kubernetes", "helm", "kustomization"):
        rendered = json.dumps(providers[name])
        assert "data.aws_eks_cluster" in rendered or "local.kube_exec" in rendered
        assert not re.search(r"\baws_eks_cluster\.", rendered.replace("data.aws_eks_cluster", "")), name
    assert not platform.typed("resource"), "the platform root only wires modules; resources belong in modules"


def test_sample_outputs_cover_every_platform_output():
    sample = json.loads(SAMPLE_OUTPUTS.read_text())
    assert set(sample) == set(load_dir(PLATFORM_ROOT).outputs)
    assert all({"value", "type", "sensitive"} <= set(entry) for entry in sample.values())


def test_gpu_node_group_is_tainted_labelled_and_scales_from_zero():
    eks = load_dir(EKS_MODULE)
    node_group = eks.typed("resource")[("aws_eks_node_group", "gpu")]
    assert "NVIDIA" in node_group["ami_type"]
    taint = node_group["taint"][0]
    taint_default = eks.variables["gpu_taint"]["default"]
    assert (taint["key"], taint["value"], taint["effect"]) == (
        "${var.gpu_taint.key}",
        "${var.gpu_taint.value}",
        "${var.gpu_taint.effect}",
    )
    assert taint_default == {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
    assert eks.variables["gpu_node_label"]["default"] == {"key": "kfops.io/node-pool", "value": "gpu"}
    assert node_group["labels"] == "${local.gpu_labels}"
    assert re.search(r"\(var\.gpu_node_label\.key\)\s*=\s*var\.gpu_node_label\.value", eks.text)
    scaling = node_group["scaling_config"][0]
    assert scaling["min_size"] == 0 and scaling["desired_size"] == 0
    for tag in (
        "k8s.io/cluster-autoscaler/enabled",
        "k8s.io/cluster-autoscaler/node-template/label/${var.gpu_node_label.key}",
        "k8s.io/cluster-autoscaler/node-template/taint/${var.gpu_taint.key}",
        "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu",
    ):
        assert f'"{tag}"' in eks.text, f"GPU node-template tag {tag} is missing"
    assert ("aws_autoscaling_group_tag", "gpu_node_template") in eks.typed("resource")
    # The infra root keeps the defaults, which are what kfops pipelines select and tolerate.
    assert not {"gpu_taint", "gpu_node_label"} & set(load_dir(INFRA_ROOT).module_calls["eks"])
    defaults = ClusterConfig()
    assert defaults.gpu_node_selector == {"kfops.io/node-pool": "gpu"}
    assert defaults.gpu_toleration_key == taint_default["key"]


def test_eks_cluster_encrypts_secrets_logs_and_defaults_to_a_private_endpoint():
    eks = load_dir(EKS_MODULE)
    cluster = eks.typed("resource")[("aws_eks_cluster", "this")]
    assert cluster["encryption_config"][0]["resources"] == ["secrets"]
    assert eks.variables["endpoint_public_access"]["default"] is False
    assert cluster["vpc_config"][0]["endpoint_private_access"] is True
    assert {"api", "audit", "authenticator"} <= set(eks.variables["cluster_log_types"]["default"])


@pytest.mark.parametrize("tf_path", terraform_dirs(), ids=lambda p: str(p.relative_to(TERRAFORM_ROOT)))
def test_terraform_and_provider_versions_are_pinned(tf_path):
    blocks = load_dir(tf_path).terraform_blocks()
    assert blocks, "every module and root declares a terraform block"
    assert any("required_version" in block for block in blocks)
    providers = {name: spec for block in blocks for entry in block.get("required_providers", []) for name, spec in entry.items()}
    assert providers, "required_providers is missing"
    for name, spec in providers.items():
        assert "/" in spec["source"], f"{name}: source must be namespace/name"
        assert spec["version"].startswith("~>"), f"{name}: pin with a pessimistic constraint (~>), got {spec['version']}"


def test_helm_charts_are_pinned_to_exact_versions():
    platform = load_dir(PLATFORM_MODULE)
    releases = {name: body for (kind, name), body in platform.typed("resource").items() if kind == "helm_release"}
    assert {"cert_manager", "nvidia_device_plugin", "kserve", "kubeflow_trainer", "mlflow", "external_secrets"} <= set(releases)
    for name, release in releases.items():
        chart = release["chart"]
        if chart.startswith("${path.module}/"):
            chart_yaml = PLATFORM_MODULE / chart.removeprefix("${path.module}/") / "Chart.yaml"
            assert EXACT_VERSION.match(_chart_version(chart_yaml)), f"{name}: local chart needs an exact version"
            continue
        if "repository" not in release:
            # A chart published as a release asset: the URL itself names the pinned version.
            assert chart.startswith("https://") and chart.endswith(".tgz"), f"helm_release.{name}: chart {chart}"
            pins = re.findall(r"\$\{var\.(\w+)\}", chart)
            assert pins, f"helm_release.{name}: {chart} does not name a pinned version"
            assert all(EXACT_VERSION.match(platform.variables[pin]["default"]) for pin in pins), name
            continue
        assert release["repository"].startswith(("https://", "oci://")), name
        version = platform.variable_default(release.get("version", ""))
        assert EXACT_VERSION.match(str(version)), f"helm_release.{name}: version {version!r} is not an exact version"


def test_kubeflow_pipelines_manifests_are_pinned_to_a_release_tag():
    platform = load_dir(PLATFORM_MODULE)
    overlays = {name: body for (kind, name), body in platform.typed("data").items() if kind == "kustomization_overlay"}
    assert overlays
    for name, overlay in overlays.items():
        for resource in overlay["resources"]:
            assert resource.endswith("?ref=${var.kfp_version}"), f"{name}: {resource} is not pinned"
    assert EXACT_VERSION.match(platform.variables["kfp_version"]["default"])


@pytest.mark.parametrize("item", _module_calls(), ids=_call_id)
def test_module_sources_are_local_or_version_pinned(item):
    _, name, call = item
    source = call["source"]
    if source.startswith(("./", "../")):
        return
    pinned = "version" in call or "?ref=" in source
    assert pinned, f"module.{name}: remote source {source} needs a version or ?ref="


SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "literal credential": re.compile(
        r"^\s*\"?[\w-]*(password|passwd|secret_key|access_key|auth_token|api_key|token)\"?\s*=\s*\"(?!\$\{|\{\{)[^\"]+\"",
        re.IGNORECASE | re.MULTILINE,
    ),
}


def _tracked_infra_files() -> list[Path]:
    suffixes = {".tf", ".tfvars", ".hcl", ".json", ".yaml", ".example", ".md"}
    return sorted(
        path
        for path in TERRAFORM_ROOT.rglob("*")
        if path.is_file() and path.suffix in suffixes and ".terraform" not in path.parts
    )


@pytest.mark.parametrize("path", _tracked_infra_files(), ids=lambda p: str(p.relative_to(TERRAFORM_ROOT)))
def test_no_hardcoded_secrets(path):
    text = path.read_text()
    found = [label for label, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    assert not found, f"{path.relative_to(TERRAFORM_ROOT)} looks like it holds a secret: {found}"


def test_secret_pattern_catches_a_literal_password():
    assert SECRET_PATTERNS["literal credential"].search('  password = "hunter2hunter2"\n')
    assert SECRET_PATTERNS["literal credential"].search('auth_token = "abc"')
    assert not SECRET_PATTERNS["literal credential"].search("  auth_token = random_password.auth_token.result\n")
    # References and template placeholders are not literals.
    assert not SECRET_PATTERNS["literal credential"].search('  password = "{{ .password }}"\n')


def test_database_and_cache_keep_their_secrets_out_of_terraform_variables():
    db = load_dir(TERRAFORM_ROOT / "modules" / "aws" / "mlflow_db").typed("resource")[("aws_db_instance", "this")]
    assert db["manage_master_user_password"] is True and "password" not in db
    assert db["storage_encrypted"] is True and db["iam_database_authentication_enabled"] is True
    assert db["publicly_accessible"] is False
    cache = load_dir(TERRAFORM_ROOT / "modules" / "aws" / "feast_online")
    group = cache.typed("resource")[("aws_elasticache_replication_group", "this")]
    assert group["transit_encryption_enabled"] is True and group["at_rest_encryption_enabled"] is True
    assert group["auth_token"] == "${random_password.auth_token.result}"
    for tf_path in terraform_dirs():
        for name in load_dir(tf_path).variables:
            assert not re.search(r"(password|auth_token|secret_key)$", name), f"{tf_path}: variable {name} invites a secret"


def _chart_version(chart_yaml: Path) -> str:
    import yaml

    return str(yaml.safe_load(chart_yaml.read_text())["version"])
