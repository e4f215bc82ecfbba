"""Terraform outputs -> kfops cluster profile.

``terraform -chdir=infra/terraform/envs/aws-dev/platform output -json > outputs.json`` gives
every output as ``{"value": ..., "type": ..., "sensitive": ...}``. :func:`profile_from_terraform_outputs`
maps those values onto the sections of :class:`kfops.config.KfopsConfig`; :func:`render_profile`
writes them as YAML that :func:`kfops.config.load_config` accepts, with the facts that have no
config key (region, buckets, service-account roles) as comments. Nothing runs Terraform here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from kfops.errors import ConfigError

OUTPUTS_FILENAME = "outputs.json"
PLATFORM_ROOT = "infra/terraform/envs/aws-dev/platform"
EXPORT_HINT = f"run `terraform -chdir={PLATFORM_ROOT} output -json > {OUTPUTS_FILENAME}` after the platform apply"

# Outputs of the platform root that the profile is built from. tests/infra checks that the
# Terraform root declares each of them, so renaming one there fails CI rather than a user.
REQUIRED_OUTPUTS = (
    "region",
    "cluster_name",
    "kfp_endpoint",
    "kfp_namespace",
    "pipeline_root",
    "mlflow_tracking_uri",
    "mlflow_artifact_location",
    "buckets",
    "feast_registry",
    "redis",
    "gpu_node_selector",
    "gpu_toleration",
    "service_accounts",
    "serving_namespace",
    "images",
)
# The platform root's `images` output (ECR repositories at the pinned tag) -> cluster config fields.
IMAGE_KINDS = {"cpu": "image", "gpu": "gpu_image", "serving": "serving_image"}
BUCKET_PURPOSES = ("pipeline_root", "data", "feast_offline", "mlflow_artifacts")
OBJECT_STORE_SCHEMES = ("s3://", "gs://")
REDIS_CONNECTION_ENV = "KFOPS__FEATURES__REDIS_CONNECTION"
STATE_PREFIX = "kfops-state"  # under the data bucket: state.store


def load_outputs(path: Path | str) -> dict[str, Any]:
    """Read ``terraform output -json`` from a file, or from ``outputs.json`` inside a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / OUTPUTS_FILENAME
    if not path.is_file():
        raise ConfigError(f"no Terraform outputs at {path}", hint=EXPORT_HINT)
    try:
        outputs = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not JSON: {err}", hint=EXPORT_HINT) from err
    if not isinstance(outputs, dict) or not outputs:
        raise ConfigError(f"{path} holds no Terraform outputs (expected a JSON object of outputs)", hint=EXPORT_HINT)
    return outputs


def output_values(outputs: dict[str, Any]) -> dict[str, Any]:
    """The required outputs' values; refuses missing, malformed and sensitive ones."""
    missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
    if missing:
        raise ConfigError(
            f"Terraform outputs lack {', '.join(missing)}",
            hint=f"export the outputs of the platform root ({PLATFORM_ROOT}), not the infra root; {EXPORT_HINT}",
        )
    values = {}
    for name in REQUIRED_OUTPUTS:
        entry = outputs[name]
        if not isinstance(entry, dict) or "value" not in entry:
            raise ConfigError(
                f"output '{name}' is not in `terraform output -json` form ({{\"value\": ...}})", hint=EXPORT_HINT
            )
        # A profile is a file people share and commit; a secret must never end up in it.
        if entry.get("sensitive"):
            raise ConfigError(f"output '{name}' is marked sensitive; kfops will not copy it into a profile")
        values[name] = entry["value"]
    return values


def profile_from_terraform_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """Map ``terraform output -json`` of the platform root to a kfops config overlay.

    The overlay's keys are sections of ``kfops.config.KfopsConfig`` (cluster, registry, features, state).
    The Redis connection string carries no password: pods get the full one from the Kubernetes
    Secret named in ``redis.auth_k8s_secret`` (see :func:`profile_notes`).
    """
    values = output_values(outputs)
    kfp_endpoint = _text(values, "kfp_endpoint")
    if not kfp_endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"output kfp_endpoint '{kfp_endpoint}' is not an http(s) URL")
    pipeline_root = _object_store_uri(values, "pipeline_root")
    artifact_location = _object_store_uri(values, "mlflow_artifact_location")
    feast_registry = _object_store_uri(values, "feast_registry")
    buckets = _buckets(values)

    selector = values["gpu_node_selector"]
    if not isinstance(selector, dict) or not selector or not all(isinstance(v, str) for v in selector.values()):
        raise ConfigError("output gpu_node_selector must be a non-empty map of label -> value")
    toleration = _mapping(values, "gpu_toleration", ("key", "effect"))
    if toleration["effect"] != "NoSchedule":
        raise ConfigError(
            f"output gpu_toleration has effect '{toleration['effect']}'; kfops tolerates NoSchedule GPU taints only"
        )

    redis = _mapping(values, "redis", ("host", "port", "tls"))
    accounts = _mapping(values, "service_accounts", ("pipeline_runner", "kserve"))
    pipeline_account = _mapping(accounts, "pipeline_runner", ("namespace", "name"), label="service_accounts.")
    serving_account = _mapping(accounts, "kserve", ("namespace", "name"), label="service_accounts.")
    images = _mapping(values, "images", tuple(IMAGE_KINDS))
    for kind in IMAGE_KINDS:
        if not isinstance(images[kind], str) or ":" not in images[kind].rsplit("/", 1)[-1]:
            raise ConfigError(f"output images.{kind} '{images[kind]}' is not an image reference with a tag")

    return {
        "cluster": {
            "kfp_host": kfp_endpoint,
            **{field: str(images[kind]) for kind, field in IMAGE_KINDS.items()},
            "namespace": _text(values, "kfp_namespace"),
            "pipeline_root": pipeline_root,
            "gpu_node_selector": dict(selector),
            "gpu_toleration_key": str(toleration["key"]),
            "service_account": str(pipeline_account["name"]),
            "serving_namespace": _text(values, "serving_namespace"),
            "serving_service_account": str(serving_account["name"]),
            **({"log_sink_service_account": str(_mapping(accounts, "log_sink", ("namespace", "name"),
                                                         label="service_accounts.")["name"])}
               if "log_sink" in accounts else {}),
        },
        "registry": {
            "tracking_uri": _text(values, "mlflow_tracking_uri"),
            "artifact_location": artifact_location,
        },
        "features": {
            "online_store": "redis",
            "redis_connection": redis_connection(redis),
            "registry": feast_registry,
        },
        # The pipeline runner writes the data bucket: retrain decisions, validation baselines, drift references.
        "state": {"store": f"s3://{buckets['data']}/{STATE_PREFIX}"},
    }


def redis_connection(redis: dict[str, Any]) -> str:
    """Feast's ``host:port[,ssl=true]`` connection string (no password)."""
    connection = f"{redis['host']}:{int(redis['port'])}"
    return connection + (",ssl=true" if redis["tls"] else "")


def profile_notes(outputs: dict[str, Any]) -> list[str]:
    """Facts from the outputs that have no config key, as lines for the profile's header."""
    values = output_values(outputs)
    buckets = _buckets(values)
    redis = values["redis"]
    secret = redis.get("auth_k8s_secret") or {}
    lines = [f"region: {values['region']}, cluster: {values['cluster_name']}"]
    kubeconfig = (outputs.get("update_kubeconfig_command") or {}).get("value")
    if kubeconfig:
        lines.append(f"kubectl: {kubeconfig}")
    lines.append("buckets: " + ", ".join(f"{purpose}={buckets[purpose]}" for purpose in BUCKET_PURPOSES))
    for workload, account in sorted(values["service_accounts"].items()):
        role = account.get("role_arn", "")
        lines.append(f"service account {workload}: {account['namespace']}/{account['name']} {role}".rstrip())
    if secret:
        lines.append(
            f"Redis AUTH: in-cluster pods set {REDIS_CONNECTION_ENV} from Secret {secret.get('name')} "
            f"key {secret.get('connection_string_key', 'connection_string')} (the line below has no password)"
        )
    lines.append("MLflow tracking URI is in-cluster; from a laptop: kubectl -n mlflow port-forward svc/mlflow 5000 "
                 "and KFOPS__REGISTRY__TRACKING_URI=http://127.0.0.1:5000")
    return lines


def render_profile(overlay: dict[str, Any], notes: list[str], source: str) -> str:
    """The profile YAML: a generated-file header, the notes as comments, then the overlay."""
    header = [f"# kfops cluster profile, generated by `kfops config from-terraform` from {source}.",
              "# Regenerate it after a Terraform apply instead of editing it.", "#"]
    header += [f"# {line}" for line in notes]
    body = yaml.safe_dump(overlay, sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n\n" + body


def merge_overlay(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` laid over it, section by section (overlay wins)."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def _text(values: dict[str, Any], name: str) -> str:
    value = values[name]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"output {name} must be a non-empty string, got {value!r}")
    return value


def _object_store_uri(values: dict[str, Any], name: str) -> str:
    value = _text(values, name)
    if not value.startswith(OBJECT_STORE_SCHEMES):
        raise ConfigError(f"output {name} '{value}' is not an object-store URI ({' or '.join(OBJECT_STORE_SCHEMES)})")
    return value


def _mapping(values: dict[str, Any], name: str, keys: tuple[str, ...], label: str = "") -> dict[str, Any]:
    value = values.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"output {label}{name} must be a map with {', '.join(keys)}, got {value!r}")
    absent = [key for key in keys if value.get(key) in (None, "")]
    if absent:
        raise ConfigError(f"output {label}{name} lacks {', '.join(absent)}")
    return value


def _buckets(values: dict[str, Any]) -> dict[str, str]:
    buckets = _mapping(values, "buckets", BUCKET_PURPOSES)
    return {purpose: str(buckets[purpose]) for purpose in BUCKET_PURPOSES}
