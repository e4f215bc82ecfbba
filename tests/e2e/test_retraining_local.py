"""The retraining pipeline, compiled and run under kfp.local on real flights data.

A champion is trained on 2013-01-01..14 first. Checking that same window finds no drift and
skips training; checking July (summer weather, summer delays) finds drift, and the policy
(debounce 1) lets it retrain: the nested training pipeline runs on July and its run is tagged
with the drift report that caused it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfops.core.retrain_policy import PolicyState
from kfops.runners.local import run_locally
from kfops.steps.drift_check import TRIGGER_REPORT_TAG, policy_state_path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TRAINING_TASKS = {"ingest", "validate", "featurize", "train", "evaluate"}


@pytest.fixture(scope="module")
def retrain_overrides() -> list[str]:
    """This module checks the drift policy (debounce 1)."""
    return ["retrain.mode=drift", "retrain.debounce=1"]


def _decision(run) -> dict:
    return json.loads(Path(run.outputs["drift"]["decision"]).read_text())


def test_same_window_finds_no_drift_and_skips_training(config, champion):
    cfg = config("dataset.start=2013-01-01", "dataset.end=2013-01-14")
    run = run_locally(cfg, "retraining", on_event=lambda line: None)

    assert run.outputs["drift"]["Output"] is False
    assert not TRAINING_TASKS & set(run.outputs), f"training ran without drift: {sorted(run.outputs)}"
    decision = _decision(run)
    assert decision["retrain"] is False and decision["code"] == "no_drift"
    assert decision["reference_window"] == ["2013-01-01", "2013-01-14"]
    assert Path(run.outputs["drift"]["report"]).read_text().lower().count("evidently") > 0
    # The module's other test may have run first (random order) and left its own decision before this one.
    state = PolicyState.load(policy_state_path(cfg))
    assert [d.code for d in state.decisions].count("no_drift") == 1 and state.decisions[-1].code == "no_drift"
    # The champion's own window is in-sample: no row of it is performance evidence.
    assert decision["signals"]["in_sample_rows"] == decision["metrics"]["current_rows"]
    assert decision["signals"]["observed_rows"] == 0 and "champion's data window" in decision["in_sample"]
    assert "In-sample rows" in Path(run.outputs["drift"]["report"]).read_text()
    # The exit handler ran and found no retrain to settle.
    assert run.outputs["retrain-outcome"]["Output"] == "none" and state.decisions[-1].outcome is None


def test_july_drifts_and_retrains_on_the_new_window(config, champion):
    from kfops.adapters import mlflow_registry as registry

    cfg = config("dataset.start=2013-07-01", "dataset.end=2013-07-14")
    run = run_locally(cfg, "retraining", on_event=lambda line: None)

    assert run.outputs["drift"]["Output"] is True
    assert set(run.outputs) >= TRAINING_TASKS, f"training did not run: {sorted(run.outputs)}"
    decision = _decision(run)
    assert decision["retrain"] is True and decision["code"] == "drift_confirmed"
    assert decision["in_sample"] is None and "in_sample_rows" not in decision["signals"]
    assert decision["drift_report"].endswith("drift/report.html"), decision["drift_report"]  # previewed by MLflow
    weather = {"temp", "dewp", "humid"}
    verdict = json.loads(Path(run.outputs["drift"]["verdict"]).read_text())
    assert weather & {c["column"] for c in verdict["columns"] if c["drifted"]}

    # The retrained run trained on July and points back at the drift report that caused it.
    client = registry.client(cfg)
    tagged = run.outputs["link-trigger"]["Output"].split(",")
    assert tagged and tagged[0]
    trained = client.get_run(tagged[0])
    assert trained.data.tags["kfops.window"] == cfg.window_name
    assert trained.data.tags[TRIGGER_REPORT_TAG] == decision["drift_report"]
    versions = client.search_model_versions(f"name = '{cfg.registry.model_name}'")
    retrained = [v for v in versions if v.run_id == tagged[0]]
    if retrained:  # registered only when the gate blessed it
        assert retrained[0].tags[TRIGGER_REPORT_TAG] == decision["drift_report"]
    drift_run = client.get_run(decision["drift_run_id"])
    assert drift_run.data.metrics["drift"] == 1.0
    assert decision["drift_report"].startswith(drift_run.info.artifact_uri)

    # The no-drift test may or may not have run before this one (random order): this check's decision is the last.
    state = PolicyState.load(policy_state_path(cfg))
    assert [d.retrain for d in state.decisions].count(True) == 1 and state.decisions[-1].retrain
    assert state.decisions[-1].drift_report == decision["drift_report"]
    # Decided pending; the exit handler recorded that its training finished, so it counts.
    assert decision["outcome"] == "pending" and decision["pipeline_run"] == run.run_dir.name
    assert run.outputs["retrain-outcome"]["Output"] == "completed"
    assert state.decisions[-1].outcome == "completed" and state.last_retrain == state.decisions[-1]
