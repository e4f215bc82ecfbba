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
    assert set(tasks) == {"drift", "condition-2"}
    # kfp.local resolves only an output named `Output` in a condition: the drift step returns one bool.
    assert tasks["condition-2"]["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--drift-Output'] == true"
    branch = spec["components"][tasks["condition-2"]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(branch) == {"kfops-training", "link-trigger"}
    assert branch["link-trigger"]["dependentTasks"] == ["kfops-training"]
    nested = spec["components"][branch["kfops-training"]["componentRef"]["name"]]["dag"]["tasks"]
    assert {"ingest", "validate", "featurize", "train", "evaluate"} <= set(nested)
    # The nested training gets the outer `config`, so an override at submit time reaches both.
    config_input = branch["kfops-training"]["inputs"]["parameters"]["config"]
    assert config_input["componentInputParameter"] == "pipelinechannel--config"


def test_config_is_the_default_and_the_current_window(tmp_path):
    cfg = window_config(example_config(), dt.date(2013, 7, 1), dt.date(2013, 7, 14))
    spec = compiled(tmp_path, cfg)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert KfopsConfig.from_json(params["config"]["defaultValue"]).dataset.start == dt.date(2013, 7, 1)
    assert params["reference_window"]["defaultValue"] == ""
    assert params["current_source"]["defaultValue"] == "window"


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
