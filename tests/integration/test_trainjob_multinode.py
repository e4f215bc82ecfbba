"""Multi-node torch training as a TrainJob, end to end on this machine.

The Kubernetes API is a scripted stand-in that validates the TrainJob against the vendored CRD
and checks its runtimeRef names the runtime the platform installs; it then plays Kubeflow
Trainer's part: it starts one process per node running the TrainJob's own command, with the
``PET_*`` variables the torch runtime sets, and reports conditions from their exit codes. The
job, the checkpoints and the model travel through a real S3-compatible server (moto), as on
the cluster. So the two local "nodes" run the same entry point (kfops.training.trainjob_node ->
torchrun -> ddp_worker) the TrainJob's pods run.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid

import pytest

from kfops.adapters.trainjob import VERSION, train_torch_on_cluster
from kfops.config import ClusterConfig, TorchConfig
from kfops.errors import TrainingError
from tests.conftest import free_port
from tests.integration.conftest import S3_CLIENT_ENV
from tests.support.crds import TORCH_RUNTIME, TRAINJOB_CRD, load_yaml, openapi_schema, validate

pytestmark = pytest.mark.integration


class ScriptedTrainer:
    """CustomObjectsApi for TrainJobs; runs each created job's nodes as local processes."""

    def __init__(self, workdir, extra_env: dict[str, str] | None = None):
        self.schema = openapi_schema(TRAINJOB_CRD, VERSION)
        self.runtime = load_yaml(TORCH_RUNTIME)["metadata"]["name"]
        self.workdir, self.extra_env = workdir, extra_env or {}
        self.jobs: dict[str, dict] = {}
        self.nodes: dict[str, list[subprocess.Popen]] = {}

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        validate(body, self.schema)
        assert body["spec"]["runtimeRef"]["name"] == self.runtime
        name = body["metadata"]["name"]
        self.jobs[name] = copy.deepcopy(body)
        trainer = body["spec"]["trainer"]
        command = [sys.executable if part == "python" else part for part in trainer["command"]]
        port = free_port()
        env_from_spec = {item["name"]: item["value"] for item in trainer.get("env", [])}
        self.nodes[name] = []
        for node_rank in range(trainer["numNodes"]):
            env = {
                **os.environ, **env_from_spec, **self.extra_env,
                "PET_NNODES": str(trainer["numNodes"]), "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
                "PET_NODE_RANK": str(node_rank), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port),
            }  # fmt: skip
            # Each node has its own disk: point the job dir at a folder of its own.
            node_command = [*command[: command.index("--job-dir") + 1], str(self.workdir / f"node{node_rank}")]
            self.nodes[name].append(subprocess.Popen(node_command, env=env, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL))
        return self.jobs[name]

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        codes = [node.poll() for node in self.nodes[name]]
        if any(code not in (None, 0) for code in codes):
            conditions = [{"type": "Failed", "status": "True", "reason": "JobFailed", "message": "a node exited"}]
        elif all(code == 0 for code in codes):
            conditions = [{"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": ""}]
        else:
            conditions = [{"type": "Created", "status": "True", "reason": "JobsCreationSucceeded", "message": ""}]
        return {**self.jobs[name], "status": {"conditions": conditions}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.stop()

    def stop(self):
        for nodes in self.nodes.values():
            for node in nodes:
                if node.poll() is None:
                    node.kill()
                node.wait()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    import boto3

    for key, value in {**S3_CLIENT_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    bucket = f"kfops-trainjob-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


def _data():
    from kfops.core.model import FeatureSpec
    from tests.unit.test_torch_trainer import CATEGORICAL, FEATURES, flights_like

    frame = flights_like(600)
    train, validation = frame.iloc[:512], frame.iloc[512:]
    return train, validation, FeatureSpec.fit(train, FEATURES, CATEGORICAL)


def test_two_nodes_train_through_a_trainjob_and_the_model_comes_back_from_s3(s3_bucket, tmp_path):
    import boto3

    train, validation, spec = _data()
    torch_cfg = TorchConfig(num_nodes=2, nproc_per_node=1, epochs=1, batch_size=64, hidden=[8], num_threads=1)
    cluster_cfg = ClusterConfig(pipeline_root=f"s3://{s3_bucket}/pipeline-root", service_account="pipeline-runner")
    api = ScriptedTrainer(tmp_path / "nodes")
    seen = []
    try:
        result = train_torch_on_cluster(
            train, validation, spec, torch_cfg, cluster_cfg, tmp_path / "step", name="kfops-train-r1",
            namespace="kubeflow", timeout_s=300, poll_s=0.2, api=api, on_condition=seen.append,
        )  # fmt: skip
    finally:
        api.stop()
    assert result.params["world_size"] == 2 and result.params["num_nodes"] == 2
    assert 0.0 < result.metrics["validation_auc"] < 1.0
    assert result.model.predict_proba_encoded(spec.encode(validation)).shape == (len(validation),)
    assert [c["type"] for c in seen][-1] == "Complete"  # the status was reported while waiting
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]]
    prefix = "pipeline-root/kfops-trainjobs/kfops-train-r1/"
    assert f"{prefix}job.json" in keys and f"{prefix}result.json" in keys
    assert any(k.startswith(f"{prefix}checkpoints/") for k in keys), "rank 0's checkpoints are kept on S3"
    # Each node had its own disk; only node 0 wrote the model.
    assert (tmp_path / "nodes" / "node0" / "model").is_dir() and not (tmp_path / "nodes" / "node1" / "model").exists()


def test_a_rank_that_fails_on_another_node_is_named(s3_bucket, tmp_path):
    train, validation, spec = _data()
    torch_cfg = TorchConfig(num_nodes=2, nproc_per_node=1, epochs=1, batch_size=64, hidden=[8], num_threads=1,
                            rank_timeout_s=5)
    cluster_cfg = ClusterConfig(pipeline_root=f"s3://{s3_bucket}/root")
    api = ScriptedTrainer(tmp_path / "nodes", extra_env={"KFOPS_TEST_CRASH_RANK": "1"})
    try:
        with pytest.raises(TrainingError, match="rank 1"):
            train_torch_on_cluster(
                train, validation, spec, torch_cfg, cluster_cfg, tmp_path / "step", name="kfops-train-r2",
                namespace="kubeflow", timeout_s=300, poll_s=0.2, api=api,
            )  # fmt: skip
    finally:
        api.stop()


def test_without_an_s3_pipeline_root_multi_node_is_a_config_error(tmp_path):
    from kfops.errors import ConfigError

    train, validation, spec = _data()
    with pytest.raises(ConfigError, match=r"cluster\.pipeline_root on S3"):
        train_torch_on_cluster(train, validation, spec, TorchConfig(num_nodes=2), ClusterConfig(), tmp_path,
                               name="kfops-train-x", namespace="kubeflow", timeout_s=10, api=object())
