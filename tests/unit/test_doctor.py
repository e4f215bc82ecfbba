"""`kfops doctor`: what a compiled pipeline asks of a cluster that kfp.local does not do."""

# No `from __future__ import annotations`: KFP reads real annotations of the toy component.

import pytest
from kfp import compiler, dsl, kubernetes

from kfops.adapters.kfp_local import compile_pipeline
from kfops.cluster.doctor import (
    WARN,
    inspect_pipeline,
    load_pipeline_spec,
    summary_line,
)
from tests.conftest import REPO_ROOT
from tests.support.example import example_config


@dsl.component(base_image="python:3.11")
def _step(x: int) -> int:
    return x + 1


def _compile(pipeline, tmp_path):
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return load_pipeline_spec(path)


def _by_kind(findings, task):
    return {f.kind: f for f in findings if f.task == task}


def test_plain_pipeline_with_caching_off_has_no_findings(tmp_path):
    @dsl.pipeline(name="plain")
    def plain(x: int = 1):
        _step(x=x).set_caching_options(False)

    findings = inspect_pipeline(_compile(plain, tmp_path), expected_images={"python:3.11"})
    assert findings == []
    assert summary_line(findings).startswith("no differences")


def test_every_cluster_only_setting_is_reported(tmp_path):
    @dsl.pipeline(name="loaded")
    def loaded(x: int = 1):
        task = (_step(x=x).set_cpu_request("500m").set_cpu_limit("2").set_memory_limit("4G")
                .set_retry(3, backoff_duration="10s").set_env_variable("MODE", "fast"))
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(2)
        kubernetes.add_node_selector(task, label_key="pool", label_value="gpu")
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        with dsl.If(task.output == 2):
            _step(x=task.output).set_caching_options(False)

    findings = inspect_pipeline(_compile(loaded, tmp_path), expected_images={"ghcr.io/me/image:1"})
    step = _by_kind(findings, "step")
    assert set(step) == {"resources", "accelerator", "retries", "env", "caching", "node_selector", "toleration",
                         "image"}
    assert step["accelerator"].detail == "2 x nvidia.com/gpu"
    assert "500m" in step["resources"].detail and "4G" in step["resources"].detail
    assert step["node_selector"].detail == "pool=gpu"
    assert step["toleration"].detail.startswith("nvidia.com/gpu Exists")
    assert step["env"].detail == "MODE=fast" and step["env"].severity != WARN
    assert "3 retries" in step["retries"].detail
    # The task inside the condition is found too: wrong image, caching off so no caching finding.
    nested = _by_kind(findings, "condition-1/step-2")
    assert set(nested) == {"image"}
    summary = summary_line(findings)
    assert summary.startswith("local and cluster runs can differ here:")
    for kind in ("accelerator", "caching", "image", "node_selector", "resources", "toleration"):
        assert kind in summary


def test_training_pipeline_on_gpus_flags_the_train_task(tmp_path):
    cfg = example_config().model_copy(deep=True)
    cfg.cluster.gpus_per_node = 1
    spec = load_pipeline_spec(compile_pipeline(cfg, "training", tmp_path / "training.yaml"))
    findings = inspect_pipeline(spec, expected_images={cfg.cluster.image, cfg.cluster.gpu_image})
    train = _by_kind(findings, "exit-handler-1/train")  # inside the exit handler that tells the run's end
    assert {"accelerator", "node_selector", "toleration"} <= set(train)
    assert train["accelerator"].detail == f"1 x {cfg.cluster.accelerator_type}"
    assert train["node_selector"].detail == "kfops.io/node-pool=gpu"
    # Every other task runs in the configured CPU image with caching off: nothing to say.
    assert {f.task for f in findings} == {"exit-handler-1/train"}


def test_training_pipeline_on_cpu_is_clean(tmp_path):
    cfg = example_config()
    spec = load_pipeline_spec(compile_pipeline(cfg, "training", tmp_path / "training.yaml"))
    assert inspect_pipeline(spec, expected_images={cfg.cluster.image, cfg.cluster.gpu_image}) == []
    # The same YAML checked against another registry flags every task's image.
    foreign = inspect_pipeline(spec, expected_images={"registry.example.com/kfops:9"})
    assert {f.kind for f in foreign} == {"image"}
    assert {f.task for f in foreign} >= {"training-end", *(f"exit-handler-1/{task}" for task in (
        "ingest", "validate", "featurize", "train", "evaluate", "condition-2/register", "condition-2/deploy"))}


def test_doctor_command_prints_the_table_and_summary(tmp_path, capsys):
    from kfops.cli import main

    code = 0
    try:
        main(["doctor", "--pipeline", "training", "--set", "cluster.gpus_per_node=1",
              "--set", f"data_dir={tmp_path}"])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr().out
    assert code in (0, None), out
    assert "accelerator" in out and "node_selector" in out and "toleration" in out
    assert "local and cluster runs can differ here:" in out


# --- what a cluster config would break ------------------------------------------------------------


def _cluster_cfg(*overrides: str):
    from kfops.config import load_config

    return load_config(None, ["cluster.kfp_host=http://kfp.example", *overrides], environ={})


GOOD_CLUSTER = (
    "registry.tracking_uri=http://mlflow.mlflow.svc:5000", "features.registry=s3://b/feast/registry.db",
    "cluster.pipeline_root=s3://b/pipeline-root", "cluster.namespace=kubeflow",
    "cluster.image=1.dkr.ecr.us-east-1.amazonaws.com/k/kfops:0.1.0",
    "cluster.gpu_image=1.dkr.ecr.us-east-1.amazonaws.com/k/kfops-gpu:0.1.0",
    "cluster.serving_image=1.dkr.ecr.us-east-1.amazonaws.com/k/kfops-serving:0.1.0",
    "state.store=s3://b/kfops-state",
)
PLATFORM = {"kserve_mode": "Knative", "knative_serving": "1.21.1"}


def test_a_complete_cluster_profile_has_no_config_findings():
    from kfops.cluster.doctor import inspect_config

    assert inspect_config(_cluster_cfg(*GOOD_CLUSTER), PLATFORM) == []
    assert inspect_config(_cluster_cfg(*GOOD_CLUSTER, "train.trainer=torch", "train.torch.num_nodes=2"), PLATFORM) == []
    assert inspect_config(_cluster_cfg(*GOOD_CLUSTER, "serving.kserve.log_sink=true"), PLATFORM) == []
    from kfops.config import load_config

    assert inspect_config(load_config(None, [], environ={}), {}) == []  # a local config: nothing to say


@pytest.mark.parametrize(
    ("overrides", "platform", "kind", "words"),
    [
        (("registry.tracking_uri=sqlite:///mlflow.db",), PLATFORM, "local_path", "registry.tracking_uri"),
        (("cluster.image=ghcr.io/kfops/kfops:0.1.0",), PLATFORM, "image", "cluster.image"),
        (("cluster.pipeline_root=/tmp/root",), PLATFORM, "pipeline_root", "/tmp/root"),
        (("train.trainer=torch", "train.torch.num_nodes=2", "cluster.pipeline_root=gs://b/r"), PLATFORM,
         "multi_node", "num_nodes=2"),
        ((), {"kserve_mode": "Standard", "knative_serving": None}, "serving_mode", "Standard"),
        ((), {"kserve_mode": "Knative"}, "serving_mode", "no Knative Serving"),
        ((), {}, "serving_mode", "unknown mode"),
        (("serving.kserve.log_sink=true", "state.store=null"), PLATFORM, "log_sink", "serving.kserve.log_sink"),
    ],
)
def test_each_cluster_config_problem_is_reported(overrides, platform, kind, words):
    from kfops.cluster.doctor import inspect_config

    findings = inspect_config(_cluster_cfg(*GOOD_CLUSTER, *overrides), platform)
    assert any(f.kind == kind and words in f.detail for f in findings), findings


def test_doctor_reads_the_platform_from_terraform_outputs(tmp_path, capsys):
    import json

    from kfops.cli import main

    sample = json.loads((REPO_ROOT / "infra" / "terraform" / "examples" / "outputs.sample.json").read_text())
    sample["platform_versions"]["value"]["kserve_mode"] = "Standard"
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(sample))
    args = ["doctor", "--pipeline", "training", "--outputs", str(outputs), "--set", f"data_dir={tmp_path}"]
    for item in GOOD_CLUSTER:
        args += ["--set", item]
    try:
        main([*args, "--set", "cluster.kfp_host=http://kfp.example"])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    out = capsys.readouterr().out
    assert "serving_mode" in out and "installed KServe in Standard" in out
