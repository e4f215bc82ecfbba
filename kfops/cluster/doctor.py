"""What a compiled pipeline asks of a cluster that ``kfp.local`` does not do (or does differently).

Pure: :func:`inspect_pipeline` reads the IR (the dicts of the compiled YAML documents) and returns
findings; nothing is contacted. What kfp.local 2.17's SubprocessRunner does, from its source:
it ignores images, resources, accelerators and the Kubernetes platform spec; it honours
environment variables and retry policies; it caches only when ``local.init(enable_caching=True)``,
which ``kfops run`` does not set, while a cluster caches every task unless told not to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from kfops.core.redaction import redact_env
from kfops.errors import ConfigError

WARN, INFO = "warn", "info"


@dataclass(frozen=True)
class Finding:
    task: str
    kind: str
    detail: str
    local: str
    cluster: str
    severity: str = WARN

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def load_pipeline_spec(path: Path) -> dict[str, Any]:
    """The compiled YAML as one dict: the pipeline spec plus ``platforms`` from the second document."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read compiled pipeline {path}: {err}") from err
    if not documents or "pipelineInfo" not in documents[0]:
        raise ConfigError(f"{path} is not a compiled KFP pipeline (no pipelineInfo)",
                          hint="compile one with `kfops compile training -o training.yaml`")
    spec = dict(documents[0])
    for extra in documents[1:]:
        spec.update({k: v for k, v in extra.items() if k == "platforms"})
    return spec


def _tasks(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every container task, root DAG and nested (conditions, loops), as (task name, task spec)."""
    components = spec.get("components", {})

    def walk(dag: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, task in sorted(dag.get("tasks", {}).items()):
            component = components.get(task.get("componentRef", {}).get("name", ""), {})
            if "dag" in component:
                yield from walk(component["dag"], f"{prefix}{name}/")
            else:
                yield prefix + name, task

    yield from walk(spec.get("root", {}).get("dag", {}), "")


def _executor_label(spec: dict[str, Any], task: dict[str, Any]) -> str | None:
    component = spec.get("components", {}).get(task.get("componentRef", {}).get("name", ""), {})
    return component.get("executorLabel")


def inspect_pipeline(spec: dict[str, Any], expected_images: set[str] | None = None) -> list[Finding]:
    """Per-task settings that make a cluster run differ from a local one.

    ``expected_images``: the configured images (CPU and GPU); a task in any other image is flagged.
    Every task's image is otherwise ignored locally, so only unexpected ones are reported.
    """
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    platform = spec.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    findings: list[Finding] = []
    for task_name, task in _tasks(spec):
        label = _executor_label(spec, task)
        container = executors.get(label, {}).get("container", {}) if label else {}
        findings += _resource_findings(task_name, container.get("resources", {}))
        image = container.get("image")
        if image and expected_images is not None and image not in expected_images:
            findings.append(Finding(task_name, "image", f"runs in {image}, not a configured image "
                                    f"({', '.join(sorted(expected_images))})",
                                    "ignored: runs in this Python environment", f"pulls {image}"))
        for env in container.get("env", []):
            findings.append(Finding(task_name, "env", f"{env.get('name')}={redact_env(env.get('name'), env.get('value'))}",
                                    "set", "set (the value is baked into the YAML: is it right for the cluster?)",
                                    INFO))
        retry = task.get("retryPolicy")
        if retry and retry.get("maxRetryCount"):
            findings.append(Finding(task_name, "retries",
                                    f"up to {retry['maxRetryCount']} retries, backoff {retry.get('backoffDuration', '?')}",
                                    "re-runs the subprocess in place", "re-creates the pod (fresh container)", INFO))
        if task.get("cachingOptions", {}).get("enableCache"):
            findings.append(Finding(task_name, "caching", "caching enabled",
                                    "never reused (`kfops run` runs with caching off)",
                                    "may reuse an earlier result for the same inputs"))
        findings += _platform_findings(task_name, platform.get(label, {}) if label else {})
    return findings


def _resource_findings(task: str, resources: dict[str, Any]) -> list[Finding]:
    found = []
    asked = {key: resources[f"resource{key}"] if f"resource{key}" in resources else resources.get(key[0].lower() + key[1:])
             for key in ("CpuRequest", "CpuLimit", "MemoryRequest", "MemoryLimit")}
    asked = {k: v for k, v in asked.items() if v is not None}
    if asked:
        text = ", ".join(f"{k[:3].lower()} {k[3:].lower() if k.startswith('Cpu') else k[6:].lower()} {v}"
                         for k, v in asked.items())
        found.append(Finding(task, "resources", text, "ignored: shares this machine",
                             "scheduled with these requests; killed past the memory limit"))
    accelerator = resources.get("accelerator")
    if accelerator:
        kind = accelerator.get("resourceType") or accelerator.get("type")
        count = accelerator.get("resourceCount") or accelerator.get("count")
        found.append(Finding(task, "accelerator", f"{count} x {kind}", "ignored: uses whatever device is visible",
                             "waits for a node with that accelerator"))
    return found


def _platform_findings(task: str, config: dict[str, Any]) -> list[Finding]:
    found = []
    labels = config.get("nodeSelector", {}).get("labels", {})
    if labels:
        found.append(Finding(task, "node_selector", ", ".join(f"{k}={v}" for k, v in sorted(labels.items())),
                             "ignored", "runs only on matching nodes"))
    for toleration in config.get("tolerations", []):
        text = f"{toleration.get('key')} {toleration.get('operator', 'Equal')} {toleration.get('effect', '')}".strip()
        found.append(Finding(task, "toleration", text, "ignored", "may run on nodes tainted that way"))
    other = sorted(k for k in config if k not in {"nodeSelector", "tolerations"})
    for key in other:
        found.append(Finding(task, "kubernetes", key, "ignored", f"applied ({key})"))
    return found


def summary_line(findings: list[Finding]) -> str:
    kinds = sorted({f.kind for f in findings if f.severity == WARN})
    if not kinds:
        return "no differences that matter: local and cluster runs should behave alike"
    return "local and cluster runs can differ here: " + ", ".join(kinds)


def format_table(findings: list[Finding]) -> str:
    rows = [("TASK", "KIND", "SETTING", "LOCAL (kfp.local)", "CLUSTER")]
    rows += [(f.task, f.kind + ("" if f.severity == WARN else " (info)"), f.detail, f.local, f.cluster)
             for f in findings]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip()
                     for row in rows)


CONFIG_TASK = "(config)"
UNPUBLISHED_IMAGE_PREFIX = "ghcr.io/kfops/"  # the defaults: no registry publishes them


def inspect_config(cfg: Any, platform_versions: dict[str, Any] | None = None) -> list[Finding]:
    """What in a cluster config (and, given ``platform_versions``, the platform Terraform built) would fail there.

    ``cfg`` is a :class:`kfops.config.KfopsConfig`; ``platform_versions`` the ``platform_versions``
    output of the platform root (``kfops doctor --outputs outputs.json``). A config without
    ``cluster.kfp_host`` is a local one and gets no findings.
    """
    from kfops.adapters.kfp_api import cluster_config_problems
    from kfops.adapters.kserve_cluster import DEPLOYMENT_MODE

    cluster = cfg.cluster
    if not cluster.kfp_host:
        return []
    found = [Finding(CONFIG_TASK, "local_path", problem, "works: this machine's files",
                     "fails: a pod cannot read them") for problem in cluster_config_problems(cfg)]
    for key in ("image", "gpu_image", "serving_image"):
        image = getattr(cluster, key)
        if image.startswith(UNPUBLISHED_IMAGE_PREFIX):
            found.append(Finding(CONFIG_TASK, "image", f"cluster.{key}={image} is the default, which nothing publishes",
                                 "ignored", "ImagePullBackOff: push with `kfops build --push` and set it "
                                 "(`kfops config from-terraform` sets the ECR images)"))
    root = cluster.pipeline_root
    if not root or not root.startswith(("s3://", "gs://", "minio://")):
        found.append(Finding(CONFIG_TASK, "pipeline_root", f"cluster.pipeline_root={root}",
                             "<data_dir>/pipeline_root", "artifacts go to the cluster's kfp-launcher default, "
                             "or nowhere the pods share: set an object-store URI"))
    torch = cfg.train.torch
    if cfg.train.trainer == "torch" and torch.num_nodes > 1:
        if not (root or "").startswith("s3://"):
            found.append(Finding(CONFIG_TASK, "multi_node", f"train.torch.num_nodes={torch.num_nodes} with "
                                 f"cluster.pipeline_root={root}", "refused: one node only",
                                 "fails: the TrainJob's nodes exchange the job through s3://"))
        if not cluster.namespace:
            found.append(Finding(CONFIG_TASK, "multi_node", "train.torch.num_nodes > 1 without cluster.namespace",
                                 "refused: one node only", "fails: no namespace to create the TrainJob in"))
    log_store = str(cfg.inference_log_location)
    if cfg.serving.kserve.log_sink and not log_store.startswith("s3://"):
        found.append(Finding(CONFIG_TASK, "log_sink", f"serving.kserve.log_sink with the inference log at {log_store}",
                             "the server logs to this folder", "deploy refuses it: the sink's pod would lose the "
                             "folder; set serving.inference_log_store or state.store to s3://"))
    if platform_versions is not None:
        mode = platform_versions.get("kserve_mode")
        wanted = "Knative" if DEPLOYMENT_MODE in ("Knative", "Serverless") else "Standard"
        if mode is None or (mode in ("Serverless", "Knative")) != (wanted == "Knative"):
            found.append(Finding(CONFIG_TASK, "serving_mode",
                                 f"deploy renders {DEPLOYMENT_MODE} InferenceServices; the platform installed KServe "
                                 f"in {mode or 'an unknown mode (no kserve_mode output: an older platform apply)'}",
                                 "local ModelServer", "the InferenceService fails (Knative mode needs Knative Serving, "
                                 "and canaryTrafficPercent needs Knative revisions): re-apply the platform root"))
        if wanted == "Knative" and not platform_versions.get("knative_serving"):
            found.append(Finding(CONFIG_TASK, "serving_mode", "Knative mode, and the platform installed no "
                                 "Knative Serving", "local ModelServer",
                                 "KServe fails every InferenceService: 'Knative Serving is not available'"))
    return found
