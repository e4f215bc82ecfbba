"""Multi-node torch training as a Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1).

:func:`render_trainjob` builds the manifest (pure); :func:`submit_and_wait` creates it with the
Kubernetes ``CustomObjectsApi`` and follows its status conditions until ``Complete`` or ``Failed``.

The job runs against the ``torch-distributed`` ClusterTrainingRuntime, whose torch policy hands
the topology to torchrun through ``PET_NNODES``/``PET_NPROC_PER_NODE``/``PET_NODE_RANK``/
``PET_MASTER_ADDR``/``PET_MASTER_PORT``, so the command is plain torchrun over
:mod:`kfops.training.ddp_worker`. Every node must see the job folder that
:func:`kfops.training.torch_trainer.prepare_job` wrote (a shared volume, mounted through
``job_volume_claim``); rank 0 writes checkpoints, the model and ``result.json`` there.
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
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def worker_command(job_dir: str) -> list[str]:
    """torchrun reads the node topology from the runtime's PET_* variables."""
    return ["python", "-m", "torch.distributed.run", "--max-restarts=0",
            "--module", "kfops.training.ddp_worker", "--job-dir", job_dir]  # fmt: skip


def render_trainjob(
    name: str,
    job_dir: str,
    torch_cfg: TorchConfig,
    cluster_cfg: ClusterConfig,
    *,
    namespace: str | None = None,
    runtime: str = DEFAULT_RUNTIME,
    env: dict[str, str] | None = None,
    job_volume_claim: str | None = None,
    active_deadline_s: int | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The TrainJob manifest for ``torch_cfg.num_nodes`` x ``torch_cfg.nproc_per_node`` ranks.

    GPUs: ``cluster_cfg.gpus_per_node`` > 0 requests that many ``cluster_cfg.accelerator_type``
    per node, runs ``cluster_cfg.gpu_image`` and patches the node pods with the GPU node selector
    and toleration (``spec.runtimePatches``, the v2.3 way to override pod fields). With a
    ``job_volume_claim`` the PVC is mounted at ``job_dir`` on every node.
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
    if not job_dir.startswith("/"):
        raise ConfigError(f"job_dir '{job_dir}' must be an absolute path inside the container")

    trainer: dict[str, Any] = {
        "image": cluster_cfg.gpu_image if gpus else cluster_cfg.image,
        "command": worker_command(job_dir),
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
    if job_volume_claim:
        pod_spec["volumes"] = [{"name": JOB_VOLUME, "persistentVolumeClaim": {"claimName": job_volume_claim}}]
        pod_spec["containers"] = [
            {"name": NODE_CONTAINER, "volumeMounts": [{"name": JOB_VOLUME, "mountPath": job_dir}]}
        ]

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
    job_volume_claim: str | None = None,
    api: Any = None,
) -> TrainResult:
    """``train_torch`` for several nodes: write the job, run it as a TrainJob, read rank 0's result.

    ``job_dir`` must be the same shared folder here and in the TrainJob's pods (for example a
    ReadWriteMany PVC, passed as ``job_volume_claim``, mounted at the same path in both).
    """
    from kfops.training.torch_trainer import (
        clear_outputs,
        collect_result,
        plan_launch,
        prepare_job,
    )

    plan = plan_launch(torch_cfg, gpu_count=cluster_cfg.gpus_per_node, cpu_count=None)
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(job_dir)
    prepare_job(train, validation, spec, torch_cfg, job_dir, plan, world_size=torch_cfg.num_nodes * plan.nproc)
    manifest = render_trainjob(
        name, str(job_dir), torch_cfg, cluster_cfg, namespace=namespace, job_volume_claim=job_volume_claim
    )
    submit_and_wait(manifest, namespace, timeout_s=timeout_s, poll_s=poll_s, api=api)
    return collect_result(job_dir, spec, torch_cfg)
