"""Terraform outputs -> kfops cluster profile, and `kfops config from-terraform`.

Round trip on the sample `terraform output -json` of the platform root: outputs.json ->
profile YAML -> kfops.config.load_config -> the config carries the outputs' values.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kfops.cli.config_cmd import app
from kfops.cluster.terraform_outputs import load_outputs, profile_from_terraform_outputs
from kfops.config import load_config
from kfops.errors import ConfigError
from tests.infra.terraform_tree import TERRAFORM_ROOT

pytestmark = pytest.mark.infra

SAMPLE = TERRAFORM_ROOT / "examples" / "outputs.sample.json"


@pytest.fixture
def outputs() -> dict:
    return json.loads(SAMPLE.read_text())


def value(outputs: dict, name: str):
    return outputs[name]["value"]


def write_outputs(folder: Path, outputs: dict) -> Path:
    path = folder / "outputs.json"
    path.write_text(json.dumps(outputs))
    return path


def from_terraform(*args: str):
    return CliRunner().invoke(app, ["from-terraform", *args])


def test_round_trip_outputs_to_profile_to_config(tmp_path, outputs):
    profile = tmp_path / "kfops.cluster.yaml"
    result = from_terraform(str(SAMPLE), "--output", str(profile))
    assert result.exit_code == 0, result.output
    assert f"wrote {profile}" in result.output

    cfg = load_config(profile, environ={})
    redis = value(outputs, "redis")
    assert cfg.cluster.kfp_host == value(outputs, "kfp_endpoint")
    assert cfg.cluster.namespace == value(outputs, "kfp_namespace")
    assert cfg.cluster.pipeline_root == value(outputs, "pipeline_root")
    assert cfg.cluster.gpu_node_selector == value(outputs, "gpu_node_selector")
    assert cfg.cluster.gpu_toleration_key == value(outputs, "gpu_toleration")["key"]
    assert cfg.cluster.service_account == value(outputs, "service_accounts")["pipeline_runner"]["name"]
    assert cfg.cluster.serving_namespace == value(outputs, "serving_namespace")
    assert cfg.cluster.serving_service_account == value(outputs, "service_accounts")["kserve"]["name"]
    assert cfg.cluster.log_sink_service_account == value(outputs, "service_accounts")["log_sink"]["name"]
    assert cfg.registry.tracking_uri == value(outputs, "mlflow_tracking_uri")
    assert cfg.registry.artifact_location == value(outputs, "mlflow_artifact_location")
    assert cfg.features.online_store == "redis"
    assert cfg.features.redis_connection == f"{redis['host']}:{redis['port']},ssl=true"
    assert cfg.features.registry == value(outputs, "feast_registry")
    assert cfg.state.store == f"s3://{value(outputs, 'buckets')['data']}/kfops-state"
    # The images come from the ECR repositories Terraform creates, not the unpublished defaults.
    images = value(outputs, "images")
    assert (cfg.cluster.image, cfg.cluster.gpu_image, cfg.cluster.serving_image) == (
        images["cpu"], images["gpu"], images["serving"]
    )
    assert ".dkr.ecr." in cfg.cluster.image


def test_profile_header_documents_what_has_no_config_key(tmp_path, outputs):
    profile = tmp_path / "kfops.cluster.yaml"
    assert from_terraform(str(SAMPLE), "-o", str(profile)).exit_code == 0
    text = profile.read_text()
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "aws eks update-kubeconfig --region us-east-1 --name kfops-dev" in comments
    for bucket in value(outputs, "buckets").values():
        assert bucket in comments
    for account in value(outputs, "service_accounts").values():
        assert account["role_arn"] in comments
    assert "KFOPS__FEATURES__REDIS_CONNECTION" in comments and "feast-redis-auth" in comments
    assert "password=" not in text


def test_overlay_only_uses_config_sections(outputs):
    overlay = profile_from_terraform_outputs(outputs)
    assert set(overlay) == {"cluster", "registry", "features", "state"}


def test_load_outputs_accepts_a_folder_or_a_file(tmp_path, outputs):
    path = write_outputs(tmp_path, outputs)
    assert load_outputs(tmp_path) == outputs
    assert load_outputs(path) == outputs


def test_load_outputs_without_outputs_json_explains_the_export(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_outputs(tmp_path)
    assert "terraform" in caught.value.hint and "output -json" in caught.value.hint


def test_load_outputs_rejects_non_json(tmp_path):
    (tmp_path / "outputs.json").write_text("region = us-east-1\n")
    with pytest.raises(ConfigError, match="not JSON"):
        load_outputs(tmp_path)


def test_infra_root_outputs_are_refused_with_a_pointer_to_the_platform_root(outputs):
    infra_only = {name: entry for name, entry in outputs.items() if name not in ("kfp_endpoint", "mlflow_tracking_uri")}
    with pytest.raises(ConfigError, match="kfp_endpoint, mlflow_tracking_uri") as caught:
        profile_from_terraform_outputs(infra_only)
    assert "platform root" in caught.value.hint


def test_plain_values_instead_of_terraform_json_are_refused(outputs):
    plain = {name: entry["value"] for name, entry in outputs.items()}
    with pytest.raises(ConfigError, match="terraform output -json"):
        profile_from_terraform_outputs(plain)


def test_sensitive_output_is_never_copied(outputs):
    marked = copy.deepcopy(outputs)
    marked["redis"]["sensitive"] = True
    with pytest.raises(ConfigError, match="sensitive"):
        profile_from_terraform_outputs(marked)


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("kfp_endpoint", "internal-lb.elb.amazonaws.com", "http"),
        ("pipeline_root", "/tmp/pipeline-root", "object-store"),
        ("gpu_node_selector", {}, "gpu_node_selector"),
        ("gpu_toleration", {"key": "nvidia.com/gpu", "effect": "NoExecute"}, "NoSchedule"),
        ("service_accounts", {"mlflow": {"namespace": "mlflow", "name": "mlflow"}}, "pipeline_runner"),
    ],
)
def test_malformed_values_are_refused(outputs, name, bad, message):
    broken = copy.deepcopy(outputs)
    broken[name]["value"] = bad
    with pytest.raises(ConfigError, match=message):
        profile_from_terraform_outputs(broken)


def test_redis_without_tls_gets_no_ssl_flag(outputs):
    plain = copy.deepcopy(outputs)
    plain["redis"]["value"]["tls"] = False
    connection = profile_from_terraform_outputs(plain)["features"]["redis_connection"]
    assert connection == f"{value(outputs, 'redis')['host']}:6379"


def test_cli_refuses_to_overwrite_without_force(tmp_path):
    profile = tmp_path / "kfops.cluster.yaml"
    profile.write_text("project: mine\n")
    refused = from_terraform(str(SAMPLE), "-o", str(profile))
    assert isinstance(refused.exception, ConfigError)
    assert profile.read_text() == "project: mine\n"
    forced = from_terraform(str(SAMPLE), "-o", str(profile), "--force")
    assert forced.exit_code == 0, forced.output
    assert load_config(profile, environ={}).cluster.kfp_host == value(json.loads(SAMPLE.read_text()), "kfp_endpoint")


def test_cli_lays_the_cluster_settings_over_a_base_config(tmp_path, outputs):
    base = tmp_path / "kfops.yaml"
    base.write_text(yaml.safe_dump({"train": {"trainer": "torch"}, "cluster": {"gpus_per_node": 1, "kfp_host": "http://old"}}))
    profile = tmp_path / "kfops.cluster.yaml"
    result = from_terraform(str(SAMPLE), "--base", str(base), "-o", str(profile))
    assert result.exit_code == 0, result.output
    cfg = load_config(profile, environ={})
    assert cfg.train.trainer == "torch"
    assert cfg.cluster.gpus_per_node == 1
    assert cfg.cluster.kfp_host == value(outputs, "kfp_endpoint")


def test_cli_validates_before_writing(tmp_path):
    base = tmp_path / "kfops.yaml"
    base.write_text("cluster:\n  no_such_key: 1\n")
    profile = tmp_path / "kfops.cluster.yaml"
    result = from_terraform(str(SAMPLE), "--base", str(base), "-o", str(profile))
    assert isinstance(result.exception, ConfigError)
    assert "no_such_key" in str(result.exception)
    assert not profile.exists()
    assert list(tmp_path.iterdir()) == [base], "the staged file must be cleaned up"
