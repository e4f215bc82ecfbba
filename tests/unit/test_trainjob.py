"""Kubeflow Trainer TrainJob: the rendered manifest against the upstream CRD, and the polling loop."""

from __future__ import annotations

import copy
import logging

import pytest

from kfops.adapters.trainjob import (
    GROUP,
    PLURAL,
    VERSION,
    render_trainjob,
    submit_and_wait,
    trainjob_name,
    worker_command,
)
from kfops.config import ClusterConfig, TorchConfig
from kfops.errors import ConfigError, TrainingError
from tests.support.crds import (
    TORCH_RUNTIME,
    TRAINJOB_CRD,
    load_yaml,
    openapi_schema,
    pruned_fields,
    validate,
)

GPU_CLUSTER = ClusterConfig(gpus_per_node=4, gpu_node_selector={"kfops.io/node-pool": "gpu"})
TORCH = TorchConfig(num_nodes=2, nproc_per_node=4)


@pytest.fixture(scope="module")
def trainjob_schema() -> dict:
    return openapi_schema(TRAINJOB_CRD, VERSION)


def test_gpu_trainjob_matches_the_crd(trainjob_schema):
    manifest = render_trainjob(
        "flights-torch-r1", "s3://kfops-dev/pipeline-root/kfops-trainjobs/r1", TORCH, GPU_CLUSTER, namespace="kfops",
        env={"KFOPS_RUN": "r1"}, service_account="pipeline-runner", active_deadline_s=3600,
    )  # fmt: skip
    validate(manifest, trainjob_schema)

    spec = manifest["spec"]
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and manifest["kind"] == "TrainJob"
    assert spec["runtimeRef"] == {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": "torch-distributed"}
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["image"] == GPU_CLUSTER.gpu_image
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "4"}}
    # Each node runs the node entry point, which runs torchrun with the runtime's PET_* topology.
    assert trainer["command"] == worker_command("s3://kfops-dev/pipeline-root/kfops-trainjobs/r1")
    assert trainer["command"][:3] == ["python", "-m", "kfops.training.trainjob_node"]
    assert {"name": "KFOPS_RUN", "value": "r1"} in trainer["env"]

    (patch,) = spec["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node"
    assert pod["nodeSelector"] == {"kfops.io/node-pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "pipeline-runner"  # its cloud identity reaches the bucket


def test_the_patch_targets_names_that_exist_in_the_torch_runtime():
    runtime = load_yaml(TORCH_RUNTIME)
    assert runtime["metadata"]["name"] == "torch-distributed"
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    containers = job["template"]["spec"]["template"]["spec"]["containers"]
    assert job["name"] == "node" and [c["name"] for c in containers] == ["node"]


def test_cpu_trainjob_matches_the_crd_without_gpu_fields(trainjob_schema):
    manifest = render_trainjob("flights-cpu", "s3://b/job", TorchConfig(num_nodes=3, nproc_per_node=2), ClusterConfig())
    validate(manifest, trainjob_schema)
    assert manifest["spec"]["trainer"]["image"] == ClusterConfig().image
    assert "resourcesPerNode" not in manifest["spec"]["trainer"]
    assert "runtimePatches" not in manifest["spec"]


def test_the_schema_check_catches_a_bad_manifest(trainjob_schema):
    """The checks above can fail: a wrong type and an undeclared field are both reported."""
    import jsonschema

    manifest = render_trainjob("flights-torch", "s3://b/job", TORCH, GPU_CLUSTER)
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["trainer"]["numProcPerNode"] = "auto"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(trainjob_schema).validate(wrong_type)
    typo = copy.deepcopy(manifest)
    typo["spec"]["trainer"]["numProcsPerNode"] = 4
    assert pruned_fields(typo, trainjob_schema) == [".spec.trainer.numProcsPerNode"]


@pytest.mark.parametrize(
    ("name", "torch_cfg", "job_dir", "message"),
    [
        ("Flights_Torch", TORCH, "s3://b/job", "DNS-1035"),
        ("x" * 64, TORCH, "s3://b/job", "DNS-1035"),
        ("flights", TorchConfig(nproc_per_node=8), "s3://b/job", "nproc_per_node=8 but cluster.gpus_per_node=4"),
        ("flights", TORCH, "/mnt/job", "share no disk"),
    ],
)
def test_bad_trainjob_settings_are_refused_before_submitting(name, torch_cfg, job_dir, message):
    with pytest.raises(ConfigError, match=message):
        render_trainjob(name, job_dir, torch_cfg, GPU_CLUSTER)


class ScriptedTrainJobs:
    """A stand-in for CustomObjectsApi that replays scripted TrainJob statuses, one per poll."""

    def __init__(self, statuses: list[dict], on_create=None):
        self.statuses = list(statuses)
        self.on_create = on_create
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.polls = 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, plural) == (GROUP, VERSION, PLURAL)
        self.created.append(body)
        if self.on_create is not None:
            self.on_create(body)
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.polls += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"metadata": {"name": name, "namespace": namespace}, "status": status}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append(name)


def _condition(kind: str, status: str = "True", reason: str = "JobsCreationSucceeded", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip


def test_submit_and_wait_follows_conditions_until_complete(caplog):
    """Contract test of our polling loop against scripted statuses, not of a real cluster."""
    created = _condition("Created", message="Succeeded to create Jobs")
    api = ScriptedTrainJobs([
        {},
        {"conditions": [created]},
        {"conditions": [created]},
        {"conditions": [created, _condition("Complete", reason="JobsCompleted", message="jobs completed")]},
    ])  # fmt: skip
    seen = []
    manifest = render_trainjob("flights-torch", "s3://b/job", TORCH, GPU_CLUSTER, namespace="kfops")
    with caplog.at_level(logging.INFO, logger="kfops.adapters.trainjob"):
        final = submit_and_wait(manifest, "kfops", timeout_s=60, poll_s=0, api=api, on_condition=seen.append)
    assert api.created == [manifest]
    assert api.polls == 4
    assert [c["type"] for c in seen] == ["Created", "Complete"]  # each change reported once
    assert _condition("Complete", reason="JobsCompleted", message="jobs completed") in final["status"]["conditions"]
    assert "TrainJob kfops/flights-torch: Complete=True JobsCompleted" in caplog.text


def test_submit_and_wait_raises_on_failed():
    """Contract test of our polling loop: a Failed condition becomes a TrainingError with its reason."""
    failed = _condition("Failed", reason="JobFailed", message="rank 3 exited with code 1")
    api = ScriptedTrainJobs([{"conditions": [_condition("Created")]}, {"conditions": [failed]}])
    manifest = render_trainjob("flights-torch", "s3://b/job", TORCH, GPU_CLUSTER)
    with pytest.raises(TrainingError, match="kfops/flights-torch failed: JobFailed: rank 3 exited with code 1"):
        submit_and_wait(manifest, "kfops", timeout_s=60, poll_s=0, api=api)


def test_submit_and_wait_gives_up_and_deletes_after_the_timeout():
    """Contract test of our polling loop: a job that never finishes is deleted, not waited on forever."""
    suspended = _condition("Suspended", reason="Suspended", message="waiting for quota")
    api = ScriptedTrainJobs([{"conditions": [suspended]}])
    manifest = render_trainjob("flights-torch", "s3://b/job", TORCH, GPU_CLUSTER)
    with pytest.raises(TrainingError, match="did not finish within 0s and was deleted"):
        submit_and_wait(manifest, "kfops", timeout_s=0, poll_s=0, api=api)
    assert api.deleted == ["flights-torch"]


def test_an_existing_job_of_the_same_name_is_refused():
    from kubernetes.client.exceptions import ApiException

    class Conflict(ScriptedTrainJobs):
        def create_namespaced_custom_object(self, *args, **kwargs):
            raise ApiException(status=409, reason="AlreadyExists")

    manifest = render_trainjob("flights-torch", "s3://b/job", TORCH, GPU_CLUSTER)
    with pytest.raises(TrainingError, match="already exists"):
        submit_and_wait(manifest, "kfops", timeout_s=60, poll_s=0, api=Conflict([{}]))


def test_trainjob_names_are_dns_labels_stable_per_pipeline_run(trainjob_schema):
    name = trainjob_name("kfops-training-20260501-103000-Ab_C")
    assert name == trainjob_name("kfops-training-20260501-103000-Ab_C") != trainjob_name("another-run")
    assert len(name) <= 63 and name.startswith("kfops-train-")
    validate(render_trainjob(name, "s3://b/job", TORCH, GPU_CLUSTER), trainjob_schema)
    assert len(trainjob_name("x" * 300)) <= 63


def test_the_train_step_runs_several_nodes_as_a_trainjob(monkeypatch, tmp_path):
    """num_nodes > 1 no longer raises in the pod: the step hands the split to train_torch_on_cluster."""
    from kfops.adapters import trainjob
    from kfops.config import load_config
    from kfops.steps import train as train_step

    calls = []
    monkeypatch.setattr(trainjob, "train_torch_on_cluster", lambda *args, **kwargs: calls.append((args, kwargs)) or "r")
    cfg = load_config(None, ["train.trainer=torch", "train.torch.num_nodes=2", "cluster.namespace=kubeflow",
                             "train.torch.trainjob_timeout_s=900", "cluster.pipeline_root=s3://b/root"], environ={})
    assert train_step.fit(cfg, "train", "validation", "spec", tmp_path, "run-1") == "r"
    ((args, kwargs),) = calls
    assert args[:5] == ("train", "validation", "spec", cfg.train.torch, cfg.cluster)
    assert kwargs["namespace"] == "kubeflow" and kwargs["timeout_s"] == 900
    assert kwargs["name"] == trainjob_name("run-1") and callable(kwargs["on_condition"])

    no_namespace = load_config(None, ["train.trainer=torch", "train.torch.num_nodes=2"], environ={})
    with pytest.raises(ConfigError, match=r"cluster\.namespace"):
        train_step.fit(no_namespace, "train", "validation", "spec", tmp_path, "run-1")
