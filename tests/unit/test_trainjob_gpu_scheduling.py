"""GPU scheduling of a KFP task, checked in the compiled pipeline YAML (no cluster needed)."""

from __future__ import annotations

import pytest
import yaml

from kfops.adapters.kfp_gpu import apply_gpu_scheduling
from kfops.config import ClusterConfig

CPU_IMAGE = "ghcr.io/kfops/kfops:0.1.0"


def _compile(tmp_path, cluster_cfg: ClusterConfig) -> tuple[dict, dict]:
    from kfp import compiler, dsl

    @dsl.container_component
    def train_op():
        return dsl.ContainerSpec(image=CPU_IMAGE, command=["python", "-m", "kfops"], args=["train"])

    @dsl.pipeline(name="gpu-scheduling")
    def pipeline():
        train = train_op().set_display_name("train")
        apply_gpu_scheduling(train, cluster_cfg)
        train_op().set_display_name("same component, left on CPU")

    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    documents = list(yaml.safe_load_all(path.read_text()))
    platform = documents[1]["platforms"]["kubernetes"] if len(documents) > 1 else {}
    return documents[0], platform


def test_compiled_pipeline_puts_the_train_task_on_gpu_nodes(tmp_path):
    cluster = ClusterConfig(
        gpus_per_node=2,
        accelerator_type="nvidia.com/gpu",
        gpu_node_selector={"kfops.io/node-pool": "gpu", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        gpu_toleration_key="nvidia.com/gpu",
        gpu_image="ghcr.io/kfops/kfops-gpu:0.1.0",
    )
    spec, platform = _compile(tmp_path, cluster)
    executors = spec["deploymentSpec"]["executors"]
    gpu, cpu = executors["exec-train-op"]["container"], executors["exec-train-op-2"]["container"]

    assert gpu["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert gpu["resources"]["accelerator"]["resourceCount"] == "2"
    assert gpu["image"] == "ghcr.io/kfops/kfops-gpu:0.1.0"
    # The image and GPUs belong to the task, not to the component it shares with the other task.
    assert cpu["image"] == CPU_IMAGE and "resources" not in cpu

    k8s = platform["deploymentSpec"]["executors"]
    assert k8s["exec-train-op"]["nodeSelector"]["labels"] == cluster.gpu_node_selector
    assert k8s["exec-train-op"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "exec-train-op-2" not in k8s


def test_no_gpus_leaves_the_task_as_it_was(tmp_path):
    spec, platform = _compile(tmp_path, ClusterConfig(gpus_per_node=0))
    container = spec["deploymentSpec"]["executors"]["exec-train-op"]["container"]
    assert container["image"] == CPU_IMAGE and "resources" not in container
    assert platform == {}


def test_a_task_without_a_container_is_refused():
    from kfops.errors import ConfigError

    class NotAContainer:
        name = "importer"
        container_spec = None

    with pytest.raises(ConfigError, match="not a container task"):
        apply_gpu_scheduling(NotAContainer(), ClusterConfig(gpus_per_node=1))
