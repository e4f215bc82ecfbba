"""Multi-node torch training as a Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1).

:func:`render_trainjob` builds the manifest (pure); :func:`submit_and_wait` creates it with the
Kubernetes ``CustomObjectsApi`` and follows its status conditions until ``Complete`` or ``Failed``.

The job runs against the ``torch-distributed`` ClusterTrainingRuntime (the platform Terraform
installs it), whose torch policy hands the topology to torchrun through
``PET_NNODES``/``PET_NPROC_PER_NODE``/``PET_NODE_RANK``/``PET_MASTER_ADDR``/``PET_MASTER_PORT``.
Each node runs :mod:`kfops.training.trainjob_node`: it downloads the job folder that
:func:`kfops.training.torch_trainer.prepare_job` wrote from S3 (the nodes share no disk), runs
torchrun over :mod:`kfops.training.ddp_worker`, and sends the model, ``result.json`` and the
checkpoints back to S3, where :func:`train_torch_on_cluster` reads them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import ClusterConfig, TorchConfig
    from kfops.core.model import FeatureSpec
    from kfops.training import TrainResult

log = logging.getLogger(__name__)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_RUNTIME = "torch-distributed"
# Names inside the torch-distributed runtime that the patch below targets.
NODE_JOB = "node"
NODE_CONTAINER = "node"
PATCH_MANAGER = "kfops.io/trainjob"
JOB_VOLUME = "kfops-job"
NODE_JOB_DIR = "/tmp/kfops-job"  # each node's scratch copy of the job (an emptyDir would do as well)
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def worker_command(job_uri: str, job_dir: str = NODE_JOB_DIR) -> list[str]:
    """Each node: fetch the job from S3, torchrun (topology from the runtime's PET_* variables), upload."""
    return ["python", "-m", "kfops.training.trainjob_node", "--job-uri", job_uri, "--job-dir", job_dir]


def render_trainjob(
    name: str,
    job_uri: str,
    torch_cfg: TorchConfig,
    cluster_cfg: ClusterConfig,
    *,
    namespace: str | None = None,
    runtime: str = DEFAULT_RUNTIME,
    env: dict[str, str] | None = None,
    service_account: str | None = None,
    active_deadline_s: int | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The TrainJob manifest for ``torch_cfg.num_nodes`` x ``torch_cfg.nproc_per_node`` ranks.

    The nodes exchange the job through ``job_uri`` (``s3://...``). GPUs:
    ``cluster_cfg.gpus_per_node`` > 0 requests that many ``cluster_cfg.accelerator_type`` per node,
    runs ``cluster_cfg.gpu_image`` and patches the node pods with the GPU node selector and
    toleration (``spec.runtimePatches``, the v2.3 way to override pod fields). A
    ``service_account`` (one whose cloud identity reaches the bucket) is set on the node pods.
    """
    if len(name) > 63 or not _NAME.match(name):
        raise ConfigError(
            f"TrainJob name '{name}' is not a DNS-1035 label",
            hint="use at most 63 lowercase letters, digits and '-', starting with a letter",
        )
    gpus = cluster_cfg.gpus_per_node
    if gpus and torch_cfg.nproc_per_node > gpus:
        raise ConfigError(
            f"torch.nproc_per_node={torch_cfg.nproc_per_node} but cluster.gpus_per_node={gpus}",
            hint="DDP runs one process per GPU: lower torch.nproc_per_node or raise cluster.gpus_per_node",
        )
    if not job_uri.startswith("s3://"):
        raise ConfigError(
            f"job_uri '{job_uri}' is not an s3:// folder; the nodes of a TrainJob share no disk",
            hint="set cluster.pipeline_root to an s3:// URI: the job travels under it",
        )

    trainer: dict[str, Any] = {
        "image": cluster_cfg.gpu_image if gpus else cluster_cfg.image,
        "command": worker_command(job_uri),
        "numNodes": torch_cfg.num_nodes,
        "numProcPerNode": torch_cfg.nproc_per_node,
        "env": [{"name": k, "value": str(v)} for k, v in {"PYTHONUNBUFFERED": "1", **(env or {})}.items()],
    }
    if gpus:
        trainer["resourcesPerNode"] = {"limits": {cluster_cfg.accelerator_type: str(gpus)}}

    pod_spec: dict[str, Any] = {}
    if gpus:
        pod_spec["nodeSelector"] = dict(cluster_cfg.gpu_node_selector)
        pod_spec["tolerations"] = [
            {"key": cluster_cfg.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}
        ]
    if service_account:
        pod_spec["serviceAccountName"] = service_account

    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": runtime},
        "trainer": trainer,
    }
    if pod_spec:
        spec["runtimePatches"] = [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {"name": NODE_JOB, "template": {"spec": {"template": {"spec": pod_spec}}}}
                            ]
                        }
                    }
                },
            }
        ]
    if active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = int(active_deadline_s)

    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/managed-by": "kfops", **(labels or {})}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": "TrainJob", "metadata": metadata, "spec": spec}


def _condition_is(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def submit_and_wait(
    manifest: dict[str, Any],
    namespace: str,
    timeout_s: float,
    poll_s: float = 10.0,
    api: Any = None,
    on_condition: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Create the TrainJob and poll it until it completes; return its last state.

    Each condition that appears or changes is logged (and passed to ``on_condition``). Raises
    :class:`TrainingError` when the job reports ``Failed``, disappears, or is not done within
    ``timeout_s`` (it is then deleted, so it does not hold GPUs for nobody). ``api`` is a
    ``kubernetes.client.CustomObjectsApi``; by default one is built from in-cluster config or
    the local kubeconfig.
    """
    from kubernetes.client.exceptions import ApiException

    if api is None:
        api = _default_api()
    name = manifest["metadata"]["name"]
    where = f"TrainJob {namespace}/{name}"
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as err:
        if err.status == 409:
            raise TrainingError(f"{where} already exists", hint=f"delete it (kubectl -n {namespace} delete trainjob "
                                f"{name}) or submit under a new name") from err  # fmt: skip
        raise TrainingError(f"could not create {where}: {err.status} {err.reason}") from err
    log.info("%s submitted", where)

    deadline = time.monotonic() + timeout_s
    seen: dict[str, tuple] = {}
    while True:
        try:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                raise TrainingError(f"{where} disappeared while it was running") from err
            log.warning("%s: status read failed (%s %s); retrying", where, err.status, err.reason)
            obj = None
        if obj is not None:
            for condition in (obj.get("status") or {}).get("conditions") or []:
                state = (condition.get("status"), condition.get("reason"), condition.get("message"))
                if seen.get(condition.get("type")) != state:
                    seen[condition.get("type")] = state
                    log.info("%s: %s=%s %s %s", where, condition.get("type"), *state)
                    if on_condition is not None:
                        on_condition(condition)
            failed = _condition_is(obj, "Failed")
            if failed:
                raise TrainingError(
                    f"{where} failed: {failed.get('reason')}: {failed.get('message')}",
                    hint=f"kubectl -n {namespace} describe trainjob {name}; the ranks' logs name the failing rank",
                )
            if _condition_is(obj, "Complete"):
                log.info("%s complete", where)
                return obj
        if time.monotonic() >= deadline:
            try:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as err:
                log.warning("%s: could not delete after the timeout: %s %s", where, err.status, err.reason)
            raise TrainingError(
                f"{where} did not finish within {timeout_s:g}s and was deleted",
                hint="raise the timeout, or check the job's pods for scheduling problems (no GPU node free?)",
            )
        time.sleep(poll_s)


def _default_api() -> Any:
    from kubernetes import client

    from kfops.adapters.kube import load_kube_config

    load_kube_config(TrainingError)
    return client.CustomObjectsApi()


def trainjob_name(pipeline_run: str) -> str:
    """A DNS-1035 name, stable for one pipeline run (a retried step finds its job, and its checkpoints)."""
    import hashlib

    slug = re.sub(r"[^a-z0-9-]+", "-", pipeline_run.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(pipeline_run.encode()).hexdigest()[:8]
    return f"kfops-train-{slug}-{digest}" if slug else f"kfops-train-{digest}"


def train_torch_on_cluster(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    spec: FeatureSpec,
    torch_cfg: TorchConfig,
    cluster_cfg: ClusterConfig,
    job_dir: Path,
    name: str,
    namespace: str,
    timeout_s: float,
    poll_s: float = 10.0,
    job_uri: str | None = None,
    api: Any = None,
    on_condition: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """``train_torch`` for several nodes: upload the job to S3, run it as a TrainJob, read rank 0's result back.

    ``job_uri`` defaults to ``<cluster.pipeline_root>/kfops-trainjobs/<name>``. The TrainJob's
    conditions are logged (and passed to ``on_condition``) while it runs.
    """
    from kfops.adapters import s3
    from kfops.training.torch_trainer import (
        clear_outputs,
        collect_result,
        failure_error,
        plan_launch,
        prepare_job,
    )

    if job_uri is None:
        root = cluster_cfg.pipeline_root or ""
        if not root.startswith("s3://"):
            raise ConfigError(
                f"torch.num_nodes={torch_cfg.num_nodes} needs cluster.pipeline_root on S3 (got {root or 'none'})",
                hint="the nodes of a TrainJob share no disk; the job, its checkpoints and the model travel "
                     "through s3://<bucket>/... (kfops config from-terraform sets it)",
            )
        job_uri = f"{root.rstrip('/')}/kfops-trainjobs/{name}"
    plan = plan_launch(torch_cfg, gpu_count=cluster_cfg.gpus_per_node, cpu_count=None)
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(job_dir)
    # A retried step resumes: the checkpoints of an earlier attempt come back first.
    s3.download_dir(f"{job_uri}/checkpoints", job_dir / "checkpoints")
    prepare_job(train, validation, spec, torch_cfg, job_dir, plan, world_size=torch_cfg.num_nodes * plan.nproc)
    for stale in ("result.json", "model", "failures"):
        bucket, prefix = s3.split_s3_uri(f"{job_uri}/{stale}")
        for key in [*s3.list_keys(bucket, prefix), prefix]:
            s3.s3_client().delete_object(Bucket=bucket, Key=key)
    uploaded = s3.upload_dir(job_dir, job_uri)
    log.info("TrainJob %s: job (%d files) uploaded to %s", name, uploaded, job_uri)
    manifest = render_trainjob(name, job_uri, torch_cfg, cluster_cfg, namespace=namespace,
                               service_account=cluster_cfg.service_account)
    try:
        submit_and_wait(manifest, namespace, timeout_s=timeout_s, poll_s=poll_s, api=api, on_condition=on_condition)
    except TrainingError as err:
        _fetch_outputs(job_uri, job_dir)
        if any((job_dir / "failures").glob("rank_*.json")):
            # The ranks' own records name the one that broke; the TrainJob's condition does not.
            raise failure_error(job_dir, 1, torch_cfg.rank_timeout_s) from err
        raise
    _fetch_outputs(job_uri, job_dir)
    return collect_result(job_dir, spec, torch_cfg)


def _fetch_outputs(job_uri: str, job_dir: Path) -> None:
    from kfops.adapters import s3

    for folder in ("model", "failures", "checkpoints"):
        s3.download_dir(f"{job_uri}/{folder}", job_dir / folder)
    bucket, prefix = s3.split_s3_uri(job_uri)
    if f"{prefix}/result.json" in set(s3.list_keys(bucket, prefix)):
        (job_dir / "result.json").write_bytes(s3.get_object(bucket, f"{prefix}/result.json"))
