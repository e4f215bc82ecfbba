"""The drift step's record of a check: one MLflow run (on a SQLite store under data_dir), the
decision, and the report, verdict and decision files."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from kfops.errors import DataError
from kfops.steps.drift_check import (
    DECISION_ARTIFACT,
    ERROR_TAG,
    POLICY_STATE_FILE,
    REPORT_ARTIFACT,
    VERDICT_ARTIFACT,
    record_check,
)
from tests.support.example import example_config


@pytest.fixture(scope="module")
def checked():
    from kfops.core.drift import DriftConfig, check_drift

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"temp": rng.normal(30, 5, 500), "wind": rng.normal(10, 2, 500)})
    current = pd.DataFrame({"temp": rng.normal(80, 5, 500), "wind": rng.normal(10, 2, 500)})
    return reference, current, check_drift(reference, current, DriftConfig())


def _record(cfg, checked, tmp_path, signals=None):
    reference, current, result = checked
    return record_check(cfg, reference, current, result, signals or {}, None, {"kfops.pipeline_run": "run-1"},
                        {"pipeline_run": "run-1"}, dt.datetime(2013, 7, 31, tzinfo=dt.UTC), None,
                        tmp_path / "out" / "report", tmp_path / "out" / "verdict", tmp_path / "out" / "decision")


def _drift_runs(cfg):
    from kfops.adapters import mlflow_registry as registry

    client = registry.client(cfg)
    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    return client, client.search_runs([experiment.experiment_id], "tags.`kfops.kind` = 'drift_check'")


def test_a_check_logs_its_report_and_verdict_under_names_the_mlflow_ui_previews(tmp_path, checked):
    cfg = example_config(data_dir=str(tmp_path), **{"retrain": {"mode": "drift", "debounce": 1}})
    record = _record(cfg, checked, tmp_path)

    client, runs = _drift_runs(cfg)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    logged = {item.path for item in client.list_artifacts(runs[0].info.run_id, "drift")}
    assert logged == {REPORT_ARTIFACT, VERDICT_ARTIFACT, DECISION_ARTIFACT}
    assert REPORT_ARTIFACT == "drift/report.html" and VERDICT_ARTIFACT == "drift/verdict.json"
    # The decision names the report by the URI it was logged at.
    assert record["drift_report"] == f"{runs[0].info.artifact_uri}/{REPORT_ARTIFACT}"
    assert json.loads((tmp_path / "out" / "decision").read_text())["drift_report"] == record["drift_report"]
    assert runs[0].data.tags["kfops.retrain_code"] == record["code"] == "drift_confirmed"


def test_a_check_that_fails_after_logging_ends_its_run_failed_and_says_why(tmp_path, checked):
    cfg = example_config(data_dir=str(tmp_path))
    (tmp_path / POLICY_STATE_FILE).write_text("[1]")  # the policy refuses the history after the run started
    with pytest.raises(DataError, match="not a kfops retrain history"):
        _record(cfg, checked, tmp_path)

    _, runs = _drift_runs(cfg)
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "not a kfops retrain history" in runs[0].data.tags[ERROR_TAG]
    assert "kfops.retrain_code" not in runs[0].data.tags


def test_a_refused_shadow_challengers_reason_names_the_gate_checks_it_failed():
    """The audit's case: 'does not pass the evaluate gate' alone did not say which check failed."""
    from kfops.config import GateConfig
    from kfops.core.evaluation import gate
    from kfops.core.retrain_policy import DriftSummary, RetrainPolicy, decide
    from kfops.training.challenger import gate_failures

    verdict = gate({"roc_auc": 0.6361}, GateConfig(min_roc_auc=0.65, max_slice_regression=0.05, min_improvement=-0.1),
                   {"roc_auc": 0.66}, {"carrier": {"B6": {"roc_auc": 0.60}, "AA": {"roc_auc": 0.7}}},
                   {"carrier": {"B6": {"roc_auc": 0.7085}, "AA": {"roc_auc": 0.7}}})
    assert not verdict.blessed
    failed = gate_failures(verdict.reasons)
    assert failed.startswith("floor:roc_auc: roc_auc 0.6361, needs >= 0.65; slices:max_regression: worst slice "
                             "carrier=B6 drops roc_auc by 0.1085"), failed
    assert "improvement" not in failed  # it passed

    shadow = {"reference_roc_auc": 0.70, "challenger_blessed": 0.0, "challenger_roc_auc": 0.6361,
              "challenger_champion_roc_auc": 0.66, "challenger_gain": -0.0239, "challenger_rows": 5000.0}
    policy = RetrainPolicy(mode="performance", triggers=["challenger"], debounce=1)
    decision = decide([], DriftSummary(drift=False, signals=shadow, notes={"challenger": failed}),
                      dt.datetime(2013, 7, 31, tzinfo=dt.UTC), policy)
    assert not decision.retrain
    assert "does not pass the evaluate gate (floor:roc_auc: roc_auc 0.6361, needs >= 0.65; " in decision.reason


def test_the_report_shows_the_decision_its_code_and_the_thresholds(tmp_path, checked):
    cfg = example_config(data_dir=str(tmp_path), **{"retrain": {"mode": "drift", "debounce": 2, "cooldown": "3d"}})
    record = _record(cfg, checked, tmp_path)
    page = (tmp_path / "out" / "report").read_text()
    decision = page[page.index("kfops-retrain-decision"):page.index("kfops-drift-verdict")]
    assert record["code"] == "debounce" and "<code>debounce</code>" in decision and "no retrain" in decision
    assert "drift in 1 consecutive check(s); 2 needed (debounce)" in decision
    assert "<td>cooldown</td><td>3d</td>" in decision and "<td>debounce</td><td>2</td>" in decision
    assert "observed_tolerance" not in decision  # drift mode does not decide with it


def test_policy_settings_show_what_each_mode_decides_with():
    from kfops.core.retrain_policy import RetrainPolicy, policy_settings

    assert policy_settings(RetrainPolicy(mode="never")) == {"mode": "never"}
    performance = policy_settings(RetrainPolicy())
    assert performance["triggers"] == "challenger, estimated" and performance["period"] == "30d"
    assert performance["min_roc_auc"] == "none" and "estimated_tolerance" in performance


# A check window that overlaps the champion's own data window.

def _flights_like(days: list[str]) -> pd.DataFrame:
    cfg = example_config()
    times = pd.to_datetime(days).tz_localize("America/New_York").tz_convert("UTC")  # as the flights loader
    frame = pd.DataFrame({c: np.zeros(len(days)) for c in cfg.feature_columns})
    frame[cfg.dataset.label] = [1, 0] * (len(days) // 2)
    frame[cfg.dataset.event_timestamp] = times
    return frame


def test_rows_of_the_champions_data_window_are_left_out_of_the_evidence():
    from kfops.steps.drift_check import out_of_sample

    cfg = example_config()
    champion = (dt.date(2013, 1, 1), dt.date(2013, 3, 31))
    # 23:30 New York on March 31 is April 1 in UTC: still the champion's row (its loader cuts local days).
    frame = _flights_like(["2013-03-15 10:00", "2013-03-31 23:30", "2013-04-01 08:00", "2013-04-15 12:00",
                           "2013-04-20 08:00", "2013-04-30 22:00"])
    kept, in_sample = out_of_sample(frame, cfg, champion)
    assert in_sample == 3  # March 15, March 31 late, and April 1 morning (a day's margin: fail closed)
    assert list(kept[cfg.dataset.event_timestamp].dt.day) == [15, 20, 1]  # April 15, 20, May 1 02:00 UTC
    untouched, none = out_of_sample(frame.iloc[3:], cfg, champion)
    assert none == 0 and len(untouched) == 3


def test_in_sample_evidence_yields_no_performance_trigger_and_says_so():
    """The audit's case: a window inside the champion's showed observed AUC 0.81 against its test 0.70.
    Left out, no rows are evidence: the triggers stay quiet and the reason says why."""
    from kfops.core.monitoring import retrain_signals
    from kfops.core.retrain_policy import DriftSummary, RetrainPolicy, decide

    profile = {"reference": {"roc_auc": 0.70, "roc_auc_se": 0.01}, "calibration": {"method": "none"}}
    signals = retrain_signals(profile, np.empty(0), np.empty(0), min_labelled_rows=10)
    assert signals["observed_rows"] == 0 and "observed_roc_auc" not in signals and "estimated_diff" not in signals
    note = "5000 of 5000 rows of the window 2013-02-01..2013-02-28 fall in the champion's data window"
    policy = RetrainPolicy(mode="performance", triggers=["observed", "estimated"], debounce=1)
    decision = decide([], DriftSummary(drift=False, signals={**signals, "in_sample_rows": 5000.0},
                                       notes={"in_sample": note}), dt.datetime(2013, 3, 2, tzinfo=dt.UTC), policy)
    assert not decision.retrain and decision.code == "no_signal"
    assert decision.reason.startswith(f"no trigger fired: {note}; observed: too few labelled rows (0)")
    assert decision.signals["in_sample_rows"] == 5000.0


def test_a_check_of_columns_named_as_mlflow_refuses_keys_is_logged(tmp_path):
    """A `kfops init` project with a column 'Amount ($)' failed every retraining run: the drift step
    logged the metric `column_score.Amount ($)`, which MLflow refuses."""
    from kfops.core.drift import DriftConfig, check_drift

    rng = np.random.default_rng(1)
    names = ["Amount ($)", "Amount (€)", "ratio a/b", "../up"]
    reference = pd.DataFrame({name: rng.normal(30, 5, 400) for name in names})
    current = pd.DataFrame({name: rng.normal(60, 5, 400) for name in names})
    cfg = example_config(data_dir=str(tmp_path), **{"retrain": {"mode": "drift", "debounce": 1}})
    record = _record(cfg, (reference, current, check_drift(reference, current, DriftConfig())), tmp_path)

    _, runs = _drift_runs(cfg)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and record["retrain"]
    scores = {key: value for key, value in runs[0].data.metrics.items() if key.startswith("column_score.")}
    assert len(scores) == 4  # one per column, the two that map to one key told apart
    assert sorted(scores.values()) == sorted(value for key, value in record["metrics"].items()
                                             if key.startswith("column_score."))
