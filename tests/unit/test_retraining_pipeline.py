"""The retraining pipeline compiles (golden), branches on the drift component's single output,
nests the whole training pipeline, and its drift step's pure parts behave."""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kfops.adapters.kfp_local import compile_pipeline
from kfops.config import KfopsConfig
from kfops.core.windows import drift_frame, parse_window, window_config
from kfops.errors import ConfigError, DataError
from kfops.steps.drift_check import drift_metrics, policy_state_path
from tests.support.example import example_config
from tests.unit.test_compile import GOLDEN, REPO, check_golden


def compiled(tmp_path, cfg=None) -> dict:
    path = compile_pipeline(cfg or example_config(), "retraining", tmp_path / "retraining.yaml")
    return yaml.safe_load(path.read_text())


def test_retraining_pipeline_matches_golden(tmp_path):
    produced = compile_pipeline(example_config(), "retraining", tmp_path / "retraining.yaml")
    check_golden(produced, GOLDEN / "retraining.yaml")


def test_drift_gates_the_nested_training_pipeline(tmp_path):
    spec = compiled(tmp_path)
    assert spec["pipelineInfo"]["name"] == "kfops-retraining"
    root = spec["root"]["dag"]["tasks"]
    # The outcome task is the exit handler: it runs however the check and the training end.
    assert set(root) == {"exit-handler-1", "retrain-outcome"}
    assert root["retrain-outcome"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert root["retrain-outcome"]["dependentTasks"] == ["exit-handler-1"]
    tasks = spec["components"][root["exit-handler-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(tasks) == {"run-window", "drift", "condition-2"}
    # kfp.local resolves only an output named `Output` in a condition: the drift step returns one bool.
    assert tasks["condition-2"]["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--drift-Output'] == true"
    branch = spec["components"][tasks["condition-2"]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(branch) == {"kfops-training", "link-trigger"}
    assert branch["link-trigger"]["dependentTasks"] == ["kfops-training"]
    nested = spec["components"][branch["kfops-training"]["componentRef"]["name"]]["dag"]["tasks"]
    assert {"ingest", "validate", "featurize", "train", "evaluate"} <= set(nested)
    # The nested training gets the outer `config` through the window task, so an override at
    # submit time reaches both, and a moving window (`window_days`) moves both.
    assert tasks["run-window"]["inputs"]["parameters"]["config"] == {"componentInputParameter": "pipelinechannel--config"}
    assert tasks["drift"]["inputs"]["parameters"]["config"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "run-window"}}
    for task in ("kfops-training", "link-trigger"):
        assert branch[task]["inputs"]["parameters"]["config"] == {
            "componentInputParameter": "pipelinechannel--run-window-Output"}
    # The exit handler settles the retrain in the state store the compiled config names.
    assert root["retrain-outcome"]["inputs"]["parameters"]["config"] == {"componentInputParameter": "config"}


def test_a_recurring_run_gets_its_schedule_time_where_the_kfp_driver_fills_it(tmp_path):
    """A KFP recurring run checked the window it was compiled with at every run. KFP 2.17's driver
    fills `{{$.pipeline_job_schedule_time_utc}}` only in a task input whose runtime value is that
    exact constant (upstream resolve.go, vendored): the window task must get it so."""
    import re

    upstream = REPO / "tests" / "infra" / "upstream" / "kubeflow-pipelines"
    filled = re.findall(r'case "(\{\{\$\.[a-z_]+\}\})":', (upstream / "driver-resolve.go.runtimeValue.txt").read_text())
    assert "{{$.pipeline_job_schedule_time_utc}}" in filled
    assert "Format(time.RFC3339)" in (upstream / "driver-main.go.scheduleTime.txt").read_text()
    spec = compiled(tmp_path)
    handler = spec["components"][spec["root"]["dag"]["tasks"]["exit-handler-1"]["componentRef"]["name"]]
    window = handler["dag"]["tasks"]["run-window"]
    constant = window["inputs"]["parameters"]["schedule_time"]["runtimeValue"]["constant"]
    assert constant in filled and constant == "{{$.pipeline_job_schedule_time_utc}}"
    assert window["inputs"]["parameters"]["window_days"] == {"componentInputParameter": "pipelinechannel--window_days"}
    assert spec["root"]["inputDefinitions"]["parameters"]["window_days"] == {
        "defaultValue": 0.0, "isOptional": True, "parameterType": "NUMBER_INTEGER"}


def test_the_window_task_moves_only_the_dataset_window():
    """What the driver hands the window task (RFC 3339 UTC) gives the local scheduler's window; 0
    keeps the compiled window; the JSON keeps its portable form (no path resolved, no secret)."""
    import json

    from kfp import dsl

    from kfops.steps.drift_check import scheduled_config

    cfg = example_config(validation={"window_timezone": "America/New_York"})
    compiled_json = cfg.portable().to_json()
    assert scheduled_config(compiled_json, 0, "2026-03-10T02:00:00Z") == compiled_json
    moved = json.loads(scheduled_config(compiled_json, 7, "2026-03-10T02:00:00Z"))
    # 02:00 UTC is still March 9th in New York: its last whole day is the 8th.
    assert (moved["dataset"]["start"], moved["dataset"]["end"]) == ("2026-03-02", "2026-03-08")
    assert {k: v for k, v in moved.items() if k != "dataset"} == {
        k: v for k, v in json.loads(compiled_json).items() if k != "dataset"}
    from kfops.core.windows import window_before

    local_tick = window_before(cfg, 7, dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC))
    assert local_tick.window == (dt.date(2026, 3, 2), dt.date(2026, 3, 8))
    # An older KFP backend leaves the placeholder unfilled: the window is taken from now.
    today = dt.datetime.now(dt.UTC)
    unresolved = json.loads(scheduled_config(compiled_json, 1, dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER))
    assert dt.date.fromisoformat(unresolved["dataset"]["end"]) in {
        (today - dt.timedelta(days=days)).date() for days in (0, 1, 2)}
    with pytest.raises(ConfigError, match="not an ISO 8601 time"):
        scheduled_config(compiled_json, 7, "yesterday")
    with pytest.raises(ConfigError, match="window_days -1 is negative"):
        scheduled_config(compiled_json, -1, "2026-03-10T02:00:00Z")


def test_config_is_the_default_and_the_current_window(tmp_path):
    cfg = window_config(example_config(), dt.date(2013, 7, 1), dt.date(2013, 7, 14))
    spec = compiled(tmp_path, cfg)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert KfopsConfig.from_json(params["config"]["defaultValue"]).dataset.start == dt.date(2013, 7, 1)
    assert params["reference_window"]["defaultValue"] == ""
    assert params["current_source"]["defaultValue"] == ""  # drift.current_source decides


def test_component_and_pipeline_modules_keep_real_annotations():
    for path in ("components/drift/component.py", "pipelines/retraining.py"):
        assert "from __future__ import annotations" not in (REPO / path).read_text(), path


def test_parse_window_reads_the_registry_tag_format():
    assert parse_window("2013-01-01,2013-01-14") == (dt.date(2013, 1, 1), dt.date(2013, 1, 14))
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        parse_window("2013-01-01")
    with pytest.raises(ConfigError, match="ends before"):
        parse_window("2013-02-01,2013-01-01")


def test_drift_frame_keeps_model_inputs_and_label_only():
    cfg = example_config()
    frame = pd.DataFrame({c: [1.0, 2.0] for c in cfg.feature_columns})
    frame["flight_id"] = ["a", "b"]
    frame["label"] = [0, 1]
    assert list(drift_frame(frame, cfg).columns) == [*cfg.feature_columns, "label"]
    with pytest.raises(DataError, match="temp"):
        drift_frame(frame.drop(columns=["temp"]), cfg)


def test_a_feature_named_as_the_drift_label_is_a_config_error_not_duplicate_columns():
    """A `kfops init` project's request feature 'label' (its label named otherwise) crashed the
    retraining's drift step with pandas' 'Duplicate column names found: [..., 'label', 'label']'."""
    cfg = example_config()
    feature = cfg.feature_columns[0]
    frame = pd.DataFrame({c: [1.0, 2.0] for c in cfg.feature_columns}).assign(label=[0, 1])
    clashing = cfg.model_copy(update={"drift": cfg.drift.model_copy(update={"label_column": feature})})
    with pytest.raises(ConfigError, match=rf"model feature\(s\) '{feature}' have the name of drift.label_column") as raised:
        drift_frame(frame, clashing)
    assert "set drift.label_column to the label ('label')" in raised.value.hint


def test_drift_metrics_cover_share_columns_predictions_and_performance():
    from kfops.core.drift import DriftConfig, check_drift

    rng = np.random.default_rng(0)
    n = 3000
    reference = pd.DataFrame({"temp": rng.normal(30, 5, n), "wind": rng.normal(10, 2, n)})
    current = pd.DataFrame({"temp": rng.normal(80, 5, n), "wind": rng.normal(10, 2, n)})
    for frame in (reference, current):
        frame["label"] = (rng.random(n) < 0.3).astype(int)
    result = check_drift(reference, current, DriftConfig(), model=lambda f: 1 / (1 + np.exp(-(f["temp"] - 50) / 10)))
    metrics = drift_metrics(result)
    assert metrics["drift"] == 1.0 and metrics["drifted_columns"] == 1.0 and metrics["drift_share"] == 0.5
    assert metrics["column_score.temp"] > 0.1 > metrics["column_score.wind"]
    assert metrics["prediction_drift"] == 1.0 and "current_roc_auc" in metrics


def test_policy_state_lives_under_data_dir():
    cfg = example_config(data_dir=Path("/tmp/somewhere"))
    assert policy_state_path(cfg) == Path("/tmp/somewhere/retrain_policy.json")
    assert KfopsConfig.from_json(cfg.to_json()).retrain == cfg.retrain
