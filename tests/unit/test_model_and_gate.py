import re

import numpy as np
import pandas as pd
import pytest

from kfops.config import GateConfig, TrainConfig
from kfops.core.evaluation import (
    Check,
    behavioural_checks,
    calibration,
    choose_threshold,
    classification_metrics,
    gate,
)
from kfops.core.model import (
    FeatureSpec,
    load_model,
    predict_proba,
    read_meta,
    save_model,
)
from kfops.errors import DataError
from kfops.training import train_model


def synthetic(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "carrier": rng.choice(["AA", "UA", "DL", "B6"], n),
        "precip": rng.exponential(0.05, n),
        "distance": rng.uniform(100, 2500, n),
        "flight": rng.integers(1, 5000, n),
    })
    logit = -1.5 + 6 * frame["precip"] + (frame["carrier"] == "B6") * 0.8 + rng.normal(0, 0.5, n)
    frame["label"] = (logit > 0).astype(int)
    return frame


@pytest.fixture(scope="module")
def trained():
    frame = synthetic()
    spec = FeatureSpec.fit(frame, ["carrier", "precip", "distance"], ["carrier"])
    cfg = TrainConfig(xgboost={"n_estimators": 60, "nthread": 1})
    result = train_model(frame.iloc[:2000], frame.iloc[2000:], spec, cfg, work_dir=None)
    return frame, spec, result


def test_spec_encodes_unknown_categories_as_missing():
    spec = FeatureSpec(columns=["carrier", "distance"], categorical={"carrier": ["AA", "UA"]})
    matrix = spec.encode(pd.DataFrame({"carrier": ["UA", "ZZ", None], "distance": [1.0, "2", None]}))
    assert matrix.dtype == np.float32
    assert matrix[0, 0] == 1 and np.isnan(matrix[1, 0]) and np.isnan(matrix[2, 0])
    assert matrix[1, 1] == 2.0 and np.isnan(matrix[2, 1])
    with pytest.raises(DataError, match="lacks feature column"):
        spec.encode(pd.DataFrame({"carrier": ["AA"]}))


def test_xgboost_learns_and_round_trips_without_pickle(trained, tmp_path):
    frame, _spec, result = trained
    proba = predict_proba(result.model, frame.iloc[2000:])
    metrics = classification_metrics(frame["label"].iloc[2000:].to_numpy(), proba, 0.5)["scalars"]
    assert metrics["roc_auc"] > 0.8
    folder = save_model(result.model, tmp_path / "model", metadata={"k": "v"})
    assert sorted(p.name for p in folder.iterdir()) == ["kfops_model.json", "model.ubj"]
    assert read_meta(folder)["trainer"] == "xgboost"
    again = load_model(folder)
    np.testing.assert_allclose(predict_proba(again, frame.head(100)), predict_proba(result.model, frame.head(100)))


def test_one_class_training_data_is_refused(trained):
    frame, spec, _ = trained
    only_zero = frame[frame["label"] == 0]
    with pytest.raises(DataError, match="zero rows of class 1"):
        train_model(only_zero, frame, spec, TrainConfig(), work_dir=None)


def test_threshold_and_calibration():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.2, 0.8, 0.7, 0.4, 0.3])
    assert choose_threshold(y, p) == pytest.approx(0.4)
    calib = calibration(y, p, bins=2)
    assert calib["count"] == [4, 2]
    # bin 1: predicted 0.25 vs observed 0.25; bin 2: predicted 0.75 vs observed 1.0, weight 2/6.
    assert calib["ece"] == pytest.approx(0.25 * 2 / 6)


def test_behavioural_checks_pass_for_a_sane_model(trained):
    frame, _, result = trained
    checks = {c.name: c for c in behavioural_checks(result.model, frame, ["flight"], ["precip"])}
    assert checks["invariance:flight"].passed
    assert checks["direction:precip"].passed


def test_behavioural_check_catches_a_model_that_uses_the_flight_number():
    frame = synthetic()
    frame["label"] = (frame["flight"] > 2500).astype(int)
    spec = FeatureSpec.fit(frame, ["flight", "precip"], [])
    result = train_model(frame.iloc[:2000], frame.iloc[2000:], spec, TrainConfig(xgboost={"n_estimators": 30}), None)
    checks = {c.name: c for c in behavioural_checks(result.model, frame, ["flight"], ["precip"])}
    assert not checks["invariance:flight"].passed


def test_gate_fails_closed_without_thresholds():
    empty = GateConfig(min_roc_auc=None, min_pr_auc=None, max_log_loss=None, min_improvement=None,
                       max_slice_regression=None)
    verdict = gate({"roc_auc": 0.99}, empty)
    assert not verdict.blessed
    assert "no thresholds configured" in verdict.reasons[0] or "no thresholds configured" in verdict.reasons[1]


def test_gate_floors_improvement_slices_and_behaviour():
    cfg = GateConfig(min_roc_auc=0.7, min_improvement=0.0, max_slice_regression=0.05)
    first = gate({"roc_auc": 0.75}, cfg)
    assert first.blessed and any("no champion" in r for r in first.reasons)
    assert not gate({"roc_auc": 0.65}, cfg).blessed
    worse = gate({"roc_auc": 0.74}, cfg, champion={"roc_auc": 0.75}, champion_version="1")
    assert not worse.blessed and any("FAIL improvement" in r for r in worse.reasons)
    slices_new = {"carrier": {"AA": {"rows": 500, "roc_auc": 0.60}}}
    slices_old = {"carrier": {"AA": {"rows": 500, "roc_auc": 0.72}}}
    regress = gate({"roc_auc": 0.80}, cfg, {"roc_auc": 0.75}, slices_new, slices_old)
    assert not regress.blessed and any("carrier=AA" in r for r in regress.reasons)
    bad_behaviour = gate({"roc_auc": 0.80}, cfg, behaviour=[Check("direction:precipitation", False, "x")])
    assert not bad_behaviour.blessed


def test_behavioural_checks_follow_config_and_fail_on_missing_columns(trained):
    frame, _, result = trained
    checks = {c.name: c for c in behavioural_checks(result.model, frame, invariant=["distance_typo"],
                                                     non_decreasing=[])}
    assert list(checks) == ["invariance:distance_typo"] and not checks["invariance:distance_typo"].passed


def test_slice_aucs_are_sklearns_for_every_value_ties_and_skips_included():
    """slice_metrics computes every slice at once from ranks: the same slices, rows and AUCs as one
    roc_auc_score per value, with tied scores, a missing value as its own slice, small and
    one-class slices left out."""
    from sklearn.metrics import roc_auc_score

    from kfops.core.evaluation import slice_metrics

    rng = np.random.default_rng(3)
    n = 6000
    frame = pd.DataFrame({"shop": rng.choice([f"S{i}" for i in range(40)] + [None], n),
                          "size": rng.choice([1, 2, 3], n)})
    frame.loc[:299, "shop"] = None  # a missing value is a slice of its own
    y = (rng.random(n) < 0.2).astype(int)
    y[frame["shop"].eq("S0").to_numpy()] = 0  # one class: no AUC
    proba = np.round(np.clip(0.2 + 0.3 * y + rng.normal(0, 0.25, n), 0, 1), 2)  # many ties
    got = slice_metrics(frame, y, proba, ["shop", "size", "absent"], min_rows=130)

    assert set(got) == {"shop", "size"}
    for column in ("shop", "size"):
        values = frame[column].astype(str).to_numpy()
        expected = {}
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() >= 130 and len(set(y[mask])) == 2:
                expected[value] = (int(mask.sum()), roc_auc_score(y[mask], proba[mask]))
        assert list(got[column]) == list(expected)  # the same slices, in the same order
        for value, (rows, auc) in expected.items():
            assert got[column][value]["rows"] == rows
            assert got[column][value]["roc_auc"] == pytest.approx(auc, abs=1e-12)
    assert "S0" not in got["shop"] and "None" in got["shop"]
    assert 0 < len(got["shop"]) < 41  # some shops have under 130 rows


def test_slice_reason_speaks_of_a_drop_only_when_roc_auc_fell():
    cfg = GateConfig(min_roc_auc=0.7, min_improvement=0.0, max_slice_regression=0.05)
    champion_slices = {"carrier": {"AA": {"rows": 500, "roc_auc": 0.72}}}

    def slice_reason(challenger_auc: float) -> tuple[bool, str]:
        verdict = gate({"roc_auc": 0.80}, cfg, {"roc_auc": 0.75},
                       {"carrier": {"AA": {"rows": 500, "roc_auc": challenger_auc}}}, champion_slices)
        check = next(c for c in verdict.checks if c["name"] == "slices:max_regression")
        return check["passed"], check["detail"]

    passed, detail = slice_reason(0.60)  # fell by 0.12
    assert not passed
    assert "carrier=AA drops roc_auc by 0.1200" in detail and "allowed drop 0.05" in detail
    assert "-0.12" not in detail

    passed, detail = slice_reason(0.8751)  # rose by 0.1551: no drop to speak of
    assert passed
    assert "drops" not in detail and "by -" not in detail
    assert "roc_auc changes by +0.1551" in detail and "allowed drop 0.05" in detail

    passed, detail = slice_reason(0.70)  # fell, within the allowance
    assert passed and "drops roc_auc by 0.0200" in detail


def test_a_failed_floor_does_not_read_as_a_true_statement():
    """'FAIL floor:roc_auc: roc_auc=0.5925 >= 0.65' read as if 0.5925 were at least 0.65."""
    from kfops.core.evaluation import gate

    verdict = gate({"roc_auc": 0.5925}, GateConfig(min_roc_auc=0.65, min_improvement=None), None)
    assert verdict.reasons[-1] == "FAIL floor:roc_auc: roc_auc 0.5925, needs >= 0.65"


@pytest.mark.slow  # matplotlib
def test_the_slice_figure_shows_the_largest_slices_of_a_column_of_many():
    """A gate sliced by 2,000 merchants drew 2,000 bars (17 s, unreadable): the 30 with the most rows."""
    from kfops.reports.plots import MAX_SLICE_BARS, evaluation_figures

    rng = np.random.default_rng(0)
    y, proba = rng.random(500) < 0.3, rng.random(500)
    metrics = classification_metrics(y.astype(int), proba, 0.5, 10)
    many = {f"M{i:03d}": {"rows": 100 + i, "roc_auc": 0.7} for i in range(200)}
    figures = evaluation_figures(y.astype(int), proba, None, metrics, {"merchant": many, "channel": {"web": {
        "rows": 90, "roc_auc": 0.6}}}, None)
    merchant_axes, channel_axes = figures["slices"].axes
    assert [t.get_text() for t in merchant_axes.get_xticklabels()] == [f"M{i:03d}" for i in range(170, 200)]
    assert merchant_axes.get_title() == f"ROC AUC by merchant: the {MAX_SLICE_BARS} of 200 values with the most rows"
    assert len(merchant_axes.patches) == MAX_SLICE_BARS
    assert channel_axes.get_title() == "ROC AUC by channel" and len(channel_axes.patches) == 1


def test_a_numeric_feature_holding_infinities_is_refused_by_name():
    """XGBoost refused inf with its own error from deep in the train step, while the torch model read it
    as missing: every path encodes through the spec, which now names the column instead."""
    spec = FeatureSpec(columns=["distance", "carrier"], categorical={"carrier": ["AA", "UA"]})
    frame = pd.DataFrame({"distance": [1.0, np.nan, 3.0], "carrier": ["AA", "XX", None]})
    assert np.isnan(spec.encode(frame)[1]).all()  # missing and unseen stay NaN
    for bad, shown in ((np.inf, "inf"), (-np.inf, "-inf"), (1e39, "1e+39")):  # 1e39 overflows float32
        expected = rf"feature 'distance' holds 1 infinite value.*the first is {re.escape(shown)} at row 2"
        with pytest.raises(DataError, match=expected):
            spec.encode(frame.assign(distance=[1.0, np.nan, bad]))
