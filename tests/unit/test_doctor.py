"""`kfops doctor`: what a compiled pipeline asks of a cluster that kfp.local does not do."""

# No `from __future__ import annotations`: KFP reads real annotations of the toy component.

from kfp import compiler, dsl, kubernetes

from kfops.adapters.kfp_local import compile_pipeline
from kfops.cluster.doctor import (
    WARN,
    inspect_pipeline,
    load_pipeline_spec,
    summary_line,
)
from kfops.config import KfopsConfig


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
    cfg = KfopsConfig().model_copy(deep=True)
    cfg.cluster.gpus_per_node = 1
    spec = load_pipeline_spec(compile_pipeline(cfg, "training", tmp_path / "training.yaml"))
    findings = inspect_pipeline(spec, expected_images={cfg.cluster.image, cfg.cluster.gpu_image})
    train = _by_kind(findings, "train")
    assert {"accelerator", "node_selector", "toleration"} <= set(train)
    assert train["accelerator"].detail == f"1 x {cfg.cluster.accelerator_type}"
    assert train["node_selector"].detail == "kfops.io/node-pool=gpu"
    # Every other task runs in the configured CPU image with caching off: nothing to say.
    assert {f.task for f in findings} == {"train"}


def test_training_pipeline_on_cpu_is_clean(tmp_path):
    cfg = KfopsConfig()
    spec = load_pipeline_spec(compile_pipeline(cfg, "training", tmp_path / "training.yaml"))
    assert inspect_pipeline(spec, expected_images={cfg.cluster.image, cfg.cluster.gpu_image}) == []
    # The same YAML checked against another registry flags every task's image.
    foreign = inspect_pipeline(spec, expected_images={"registry.example.com/kfops:9"})
    assert {f.kind for f in foreign} == {"image"}
    assert {f.task for f in foreign} >= {"ingest", "validate", "featurize", "train", "evaluate",
                                         "condition-1/register", "condition-1/deploy"}


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
