"""Put a KFP task on GPU nodes: accelerator type and count, node selector, toleration, GPU image.

Pure: it edits the task object before compilation; no cluster is contacted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfops.errors import ConfigError

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

    from kfops.config import ClusterConfig


def apply_gpu_scheduling(task: PipelineTask, cluster_cfg: ClusterConfig) -> PipelineTask:
    """Request ``cluster_cfg.gpus_per_node`` GPUs for ``task`` and pin it to the GPU pool.

    With ``gpus_per_node == 0`` the task is returned unchanged (CPU nodes, CPU image).

    Sets:
      * the accelerator type and limit (``resources.accelerator`` in the compiled YAML);
      * a ``nodeSelector`` entry per ``cluster_cfg.gpu_node_selector`` item and a
        ``NoSchedule`` toleration for ``cluster_cfg.gpu_toleration_key`` (kfp-kubernetes
        platform config);
      * the container image to ``cluster_cfg.gpu_image``. KFP 2.17 has no public setter for a
        task's image, but the compiler reads ``task.container_spec.image`` for each task's own
        executor, so setting it there is what lands in ``deploymentSpec``.
    """
    if cluster_cfg.gpus_per_node == 0:
        return task
    from kfp import kubernetes

    if task.container_spec is None:
        raise ConfigError(
            f"task '{task.name}' is not a container task, so it cannot be given GPUs",
            hint="apply GPU scheduling to the train component's task, not to a pipeline or importer",
        )
    task.set_accelerator_type(cluster_cfg.accelerator_type)
    task.set_accelerator_limit(cluster_cfg.gpus_per_node)
    for key, value in cluster_cfg.gpu_node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    kubernetes.add_toleration(task, key=cluster_cfg.gpu_toleration_key, operator="Exists", effect="NoSchedule")
    task.container_spec.image = cluster_cfg.gpu_image
    return task
