"""Retrain-trigger evidence: DeLong, CBPE, calibration, weighted drift, and the label-delay guarantee."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from kfops.config import KfopsConfig
from kfops.core.drift import ColumnDrift
from kfops.core.model import FeatureSpec
from kfops.core.monitoring import (
    SIGNALS_VERSION,
    calibrate,
    calibration_error,
    delong_roc_auc,
    difference_interval,
    expected_roc_auc,
    expected_roc_auc_interval,
    fit_calibrator,
    hide_unknown_labels,
    label_free_track_record,
    labelled_mask,
    model_profile,
    require_profile,
    retrain_signals,
    weighted_drift,
)
from kfops.errors import DataError
from tests.support.example import example_config


def _scored(n: int, seed: int, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, signal * y + rng.normal(size=n)


def test_delong_auc_is_sklearns_and_its_se_matches_a_seeded_bootstrap():
    y, s = _scored(3000, 0)
    auc, se = delong_roc_auc(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    rng = np.random.default_rng(1)
    boot = [roc_auc_score(y[i], s[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(300))]
    assert se == pytest.approx(np.std(boot), rel=0.2)
    with pytest.raises(DataError, match="two rows of each class"):
        delong_roc_auc([1, 1, 0], [0.1, 0.2, 0.3])


def test_the_difference_interval_adds_the_variances_of_independent_samples():
    diff, low, high = difference_interval(0.70, 0.003, 0.74, 0.004, 0.95)
    assert diff == pytest.approx(-0.04)
    assert high - diff == pytest.approx(diff - low) == pytest.approx(1.959964 * 0.005, rel=1e-5)


def test_cbpe_expects_the_auc_that_calibrated_labels_realise():
    rng = np.random.default_rng(2)
    p = rng.beta(2, 5, 20_000)
    estimate = expected_roc_auc(p, p)
    realised = [roc_auc_score(rng.random(p.size) < p, p) for _ in range(20)]
    assert estimate == pytest.approx(np.mean(realised), abs=0.005)
    assert expected_roc_auc([0.9, 0.8, 0.2, 0.1], [1.0, 1.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert expected_roc_auc([0.5] * 4, [0.5] * 4) == pytest.approx(0.5)  # one tie: the diagonal


def test_platt_calibration_repairs_distorted_scores():
    rng = np.random.default_rng(3)
    p = rng.beta(2, 5, 20_000)
    y = rng.random(p.size) < p
    distorted = p**3
    calibrator = fit_calibrator(y, distorted)
    assert calibration_error(y, distorted) > 0.1
    assert calibration_error(y, calibrate(calibrator, distorted)) < 0.02
    assert np.array_equal(calibrate({"method": "none"}, distorted), distorted)
    with pytest.raises(DataError, match="unknown calibrator"):
        calibrate({"method": "magic"}, distorted)


def _distorted_window(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Miscalibrated scores, and labels drawn from the true probability, which is Platt-shaped in
    the score (sigmoid(1.5 logit(score) + 0.7)): the calibration CBPE assumes holds."""
    scores = rng.beta(2, 5, n)
    p = 1 / (1 + np.exp(-(1.5 * np.log(scores / (1 - scores)) + 0.7)))
    return scores, rng.random(n) < p


def test_the_cbpe_interval_covers_the_realised_auc_when_the_calibration_holds():
    """Calibrate on 2,000 labelled rows, estimate a fresh window of 3,000 from the same process: over
    200 such trials the 90% interval holds the realised AUC about 90% of the time (binomial 95%
    range for 200 trials: 0.85 to 0.94)."""
    rng = np.random.default_rng(21)
    covered = []
    for _ in range(200):
        calibration_scores, calibration_y = _distorted_window(rng, 2_000)
        scores, y = _distorted_window(rng, 3_000)
        calibrator = fit_calibrator(calibration_y, calibration_scores)
        low, high = expected_roc_auc_interval(scores, calibrator, 0.90, seed=int(rng.integers(1 << 30)))
        assert low < expected_roc_auc(scores, calibrate(calibrator, scores)) < high
        covered.append(low <= roc_auc_score(y, scores) <= high)
    assert 0.85 <= np.mean(covered) <= 0.94


def test_the_cbpe_interval_carries_the_calibrators_own_uncertainty():
    rng = np.random.default_rng(22)
    scores, _ = _distorted_window(rng, 5_000)
    few = fit_calibrator(*reversed(_distorted_window(rng, 300)))
    many = fit_calibrator(*reversed(_distorted_window(rng, 30_000)))
    assert np.asarray(few["covariance"]).shape == (2, 2)
    width = {name: np.subtract(*reversed(expected_roc_auc_interval(scores, cal, 0.95)))
             for name, cal in (("few", few), ("many", many))}
    # Without a covariance (a stored calibrator of an older model) only the labels' chance is left.
    fixed = {key: value for key, value in many.items() if key != "covariance"}
    only_labels = np.subtract(*reversed(expected_roc_auc_interval(scores, fixed, 0.95)))
    assert width["few"] > 1.5 * width["many"] and width["many"] >= only_labels > 0
    assert expected_roc_auc_interval(scores, many, 0.95) == expected_roc_auc_interval(scores, many, 0.95)  # seeded
    with pytest.raises(DataError, match="confidence"):
        expected_roc_auc_interval(scores, many, 1.5)


def test_the_label_free_interval_widens_to_what_the_estimate_missed_before(tmp_path):
    now = {"estimated_roc_auc_label_free": 0.70, "estimated_roc_auc_label_free_low": 0.69,
           "estimated_roc_auc_label_free_high": 0.71, "estimated_roc_auc": 0.70, "estimated_roc_auc_low": 0.69,
           "estimated_roc_auc_high": 0.71, "estimated_recalibrated": 0.0}
    past = [{"estimated_roc_auc_label_free": e, "observed_roc_auc": 0.65} for e in (0.66, 0.62, 0.70, 0.655)]
    assert label_free_track_record(now, past[:2], 0.95) == {}  # too short a record to say anything
    assert label_free_track_record(now, [{"estimated_roc_auc_label_free": 0.9}] * 5, 0.95) == {}  # never observed
    widened = label_free_track_record(now, past, 0.95)
    margin = float(np.quantile([0.01, 0.03, 0.05, 0.005], 0.95))
    assert widened["estimated_label_free_margin"] == pytest.approx(margin) and widened["estimated_label_free_record"] == 4
    assert widened["estimated_roc_auc_label_free_low"] == pytest.approx(0.70 - margin)
    assert widened["estimated_roc_auc_label_free_high"] == pytest.approx(0.70 + margin)
    assert widened["estimated_roc_auc_low"] == widened["estimated_roc_auc_label_free_low"]  # the same estimate
    # With the window's labels the triggers' estimate keeps its own (narrow) interval.
    recalibrated = label_free_track_record({**now, "estimated_recalibrated": 1.0}, past, 0.95)
    assert "estimated_roc_auc_low" not in recalibrated
    # A record that missed by less than chance does not narrow the interval.
    small = label_free_track_record(now, [{"estimated_roc_auc_label_free": 0.651, "observed_roc_auc": 0.65}] * 3, 0.95)
    assert (small["estimated_roc_auc_label_free_low"], small["estimated_roc_auc_label_free_high"]) == (0.69, 0.71)

    # The drift step reads the record from the retrain policy's state, where decide() keeps each check's evidence.
    from kfops.adapters.state_store import state_store
    from kfops.core.retrain_policy import DriftSummary, decide_and_record_in
    from kfops.steps.drift_check import POLICY_STATE_FILE, past_signals

    cfg = example_config(data_dir=str(tmp_path))
    assert past_signals(cfg) == []
    for day, signals in enumerate(past, start=1):
        decide_and_record_in(state_store(cfg), POLICY_STATE_FILE, DriftSummary(drift=False, signals=signals),
                             dt.datetime(2013, 2, day, tzinfo=dt.UTC), cfg.retrain)
    assert past_signals(cfg) == past


def _column(name: str, drifted: bool) -> ColumnDrift:
    return ColumnDrift(column=name, type="numerical", test="wasserstein", test_name="w", score=0.2 if drifted else 0.01,
                       score_kind="distance", threshold=0.1, drifted=drifted)


def test_weighted_drift_counts_importance_not_columns():
    importance = {"temp": 0.05, "dep_hour": 0.6, "carrier": 0.35}
    columns = [_column("temp", True), _column("dep_hour", False), _column("carrier", True), _column("id", True)]
    share, parts = weighted_drift(columns, importance)
    assert share == pytest.approx(0.40) and list(parts) == ["carrier", "temp"]  # 3 of 4 columns drifted
    assert weighted_drift(columns, {})[0] == 0.0


def test_labels_exist_only_label_delay_after_the_event():
    at = pd.Timestamp("2013-03-01 00:00", tz="America/New_York")
    times = pd.Series(pd.to_datetime(["2013-02-27 23:00", "2013-02-28 00:00", "2013-02-28 00:01"]).tz_localize(
        "America/New_York"))
    assert labelled_mask(times, at, dt.timedelta(days=1)).tolist() == [True, True, False]
    frame = pd.DataFrame({"t": times, "label": [1, 0, 1]})
    seen = hide_unknown_labels(frame, "label", "t", at, dt.timedelta(days=1))
    assert seen["label"].isna().tolist() == [False, False, True] and frame["label"].notna().all()
    with pytest.raises(DataError, match="no time zone"):
        labelled_mask(times, dt.datetime(2013, 3, 1), dt.timedelta(0))


class _Model:
    """A real TabularModel: the logistic of dep_hour/24 - 0.5 plus a fixed shift."""

    trainer, threshold = "stub", 0.5

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec

    def predict_proba_encoded(self, matrix: np.ndarray) -> np.ndarray:
        column = self.spec.columns.index("dep_hour")
        return 1 / (1 + np.exp(-(matrix[:, column] / 6 - 2)))

    def save_weights(self, folder) -> None:
        """The stub has no weights; kfops_model.json (with the profile) is all a check reads."""


def _month(cfg: KfopsConfig, month: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 3000
    start = pd.Timestamp(2013, month, 1, tz=cfg.validation.window_timezone)
    frame = pd.DataFrame({c: rng.normal(size=n) for c in cfg.feature_columns})
    for c in cfg.features.categorical:
        frame[c] = rng.choice(["a", "b", "c"], n)
    frame["dep_hour"] = rng.integers(5, 23, n).astype(float)
    p = 1 / (1 + np.exp(-(frame["dep_hour"] / 6 - 2)))
    frame[cfg.dataset.label] = (rng.random(n) < p).astype(int)
    frame[cfg.dataset.event_timestamp] = start + pd.to_timedelta(np.sort(rng.uniform(0, 27.9, n)), unit="D")
    frame["_backtest_month"] = f"2013-{month:02d}"
    return frame


def test_the_backtest_never_uses_a_label_before_it_exists(tmp_path):
    """The guarantee, through the backtest's own check: labels of the rows newer than check time
    minus label_delay can be anything; the evidence and the drift verdict do not change."""
    from kfops.runners.backtest import ModelBank, Trained, check_time

    cfg = example_config(retrain={"label_delay": "5d"})
    jan, feb = _month(cfg, 1, 0), _month(cfg, 2, 1)
    model = _Model(FeatureSpec.fit(jan, cfg.feature_columns, cfg.features.categorical, label="label"))
    profile = model_profile(model, jan.iloc[:1500], jan.iloc[1500:], "label")
    cutoff = check_time("2013-02", cfg) - dt.timedelta(days=5)
    unknown = (feb[cfg.dataset.event_timestamp] > cutoff).to_numpy()
    assert 0 < unknown.sum() < len(feb)
    flipped = feb.copy()
    flipped.loc[unknown, "label"] = 1 - flipped.loc[unknown, "label"]

    evidence = []
    for current in (feb, flipped):
        bank = ModelBank(cfg, {"2013-01": jan, "2013-02": current}, work_dir=tmp_path)
        bank._trained["2013-01"] = Trained("2013-01", model, {}, profile)
        drift, signals, realised = bank.check("2013-01", "2013-02")
        evidence.append((signals, drift.performance.roc_auc, realised))
    (signals, drift_auc, realised), (signals_flipped, drift_auc_flipped, realised_flipped) = evidence
    assert signals == signals_flipped and drift_auc == drift_auc_flipped
    assert signals["observed_rows"] == (~unknown).sum()
    assert realised != realised_flipped  # the realised AUC (what the policy is judged by) sees every label


def test_a_label_delay_longer_than_a_month_trains_on_the_latest_labelled_month(tmp_path):
    """A 35-day label delay (returns, chargebacks) leaves a month unlabelled at its own check: the
    retrain after it trains on the latest month whose labels exist by then, with only those labels;
    no shadow challenger is trained (as the drift step, too few labelled rows), and with no earlier
    month the backtest says what is missing."""
    from kfops.runners.backtest import ModelBank, check_time, replay

    cfg = example_config(retrain={"label_delay": "35d"})
    jan, feb, mar = _month(cfg, 1, 0), _month(cfg, 2, 1), _month(cfg, 3, 2)
    bank = ModelBank(cfg, {"2013-01": jan, "2013-02": feb, "2013-03": mar}, work_dir=tmp_path)
    assert bank.labelled_rows("2013-03") == 0 and not bank.has_shadow("2013-03")
    assert bank.source_month("2013-03") == "2013-02" and bank.source_month("2013-02") == "2013-01"
    cutoff = check_time("2013-03", cfg) - dt.timedelta(days=35)
    rows = bank.training_rows("2013-03")
    assert 0 < len(rows) < len(feb) and (rows[cfg.dataset.event_timestamp] <= cutoff).all()
    later = (feb[cfg.dataset.event_timestamp] > cutoff).to_numpy()
    flipped = feb.copy()
    flipped.loc[later, "label"] = 1 - flipped.loc[later, "label"]
    again = ModelBank(cfg, {"2013-01": jan, "2013-02": flipped, "2013-03": mar}, work_dir=tmp_path / "again")
    pd.testing.assert_frame_equal(again.training_rows("2013-03"), rows)  # no label before it exists
    with pytest.raises(DataError, match=r"no month up to 2013-01 has 200 rows whose labels exist at "
                                        r"2013-01's check \(retrain.label_delay 5w\)"):
        bank.source_month("2013-01")
    # A delay of a day keeps a month's own rows, as before.
    daily = ModelBank(example_config(retrain={"label_delay": "1d"}), bank.by_month, work_dir=tmp_path / "daily")
    assert daily.source_month("2013-03") == "2013-03" and daily.has_shadow("2013-03")

    quick = example_config(retrain={"label_delay": "35d", "triggers": ["challenger"]},
                           train={"xgboost": {"n_estimators": 20}})
    replayed = ModelBank(quick, bank.by_month, work_dir=tmp_path / "replay")
    replayed.gate = lambda *args: pytest.fail(f"a shadow challenger was judged: {args}")
    result = replay(quick, pd.concat([jan, feb, mar]), ["2013-03"], "2013-02", ["default"], tmp_path / "replay",
                    bank=replayed)
    (march,) = result.months
    assert march.champion_month == "2013-02" and not march.retrained and march.triggered_by == ""
    assert result.sources == {"2013-02": "2013-01"}  # the initial champion: January's labelled rows


def test_a_month_with_one_label_class_trains_no_model_and_the_replay_goes_on(tmp_path):
    """A month whose labels are all 0 (no churn that month) trains no model. As a month without
    labels: its check has no shadow challenger, a retrain after it trains on the latest month that
    can be trained on, each month's line says why, and the replay goes on. Only when the initial
    champion cannot be trained does the backtest stop, naming the month."""
    from kfops.runners.backtest import ModelBank, replay

    cfg = example_config(retrain={"label_delay": "1d", "triggers": ["challenger"]},
                         train={"xgboost": {"n_estimators": 5}})
    jan, feb, mar = _month(cfg, 1, 0), _month(cfg, 2, 1), _month(cfg, 3, 2)
    feb["label"] = 0
    bank = ModelBank(cfg, {"2013-01": jan, "2013-02": feb, "2013-03": mar}, work_dir=tmp_path)
    assert bank.untrainable("2013-02") == "the train split has zero rows of class 1 in 'label'"
    assert not bank.has_shadow("2013-02") and bank.source_month("2013-02") == "2013-01"
    assert bank.untrainable("2013-03") is None and bank.source_month("2013-03") == "2013-03"

    result = replay(cfg, pd.concat([jan, feb, mar]), ["2013-02", "2013-03"], "2013-01", ["default", "monthly"],
                    tmp_path, bank=bank)
    assert [(row.policy, row.month) for row in result.months] == [
        ("default", "2013-02"), ("default", "2013-03"), ("monthly", "2013-02"), ("monthly", "2013-03")]
    shadowless, retrained = result.month("default", "2013-02"), result.month("monthly", "2013-02")
    assert shadowless.roc_auc is None and not shadowless.retrained
    assert shadowless.describe().endswith("(2013-02 trains no model: the train split has zero rows of class 1 in "
                                          "'label'; no shadow challenger)")
    assert retrained.retrained and retrained.gate  # judged: a model trained on January's rows
    assert retrained.note.endswith("; the retrain trained on 2013-01")
    assert result.month("default", "2013-03").note == ""  # both classes: as before

    with pytest.raises(DataError, match=r"no model can be trained for it \(2013-02: the train split has zero "
                                        r"rows of class 1 in 'label'\)"):
        replay(cfg, pd.concat([feb, mar]), ["2013-03"], "2013-02", ["never"], tmp_path / "from-february")


def test_a_training_set_keeps_only_the_labels_that_are_final():
    from kfops.core.monitoring import final_labels_only

    as_of = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    frame = pd.DataFrame({"t": pd.to_datetime(["2024-04-01", "2024-05-02", "2024-05-03", "2024-05-20"], utc=True),
                          "label": [1, 0, 0, 0]})
    kept = final_labels_only(frame, "t", as_of, dt.timedelta(days=30))
    # May 2 is 30 days old on June 1: final; from May 3 on, a return may still come.
    assert kept["t"].tolist() == frame["t"].iloc[:2].tolist()
    assert final_labels_only(frame, "t", as_of, dt.timedelta(0)) is frame
    with pytest.raises(DataError, match=r"no row of the window has a final label at 2024-06-01 00:00 UTC: "
                                        r"labels are final 10w after the event"):
        final_labels_only(frame, "t", as_of, dt.timedelta(weeks=10))


def test_signals_and_the_profile_say_what_they_lack():
    cfg = example_config()
    jan = _month(cfg, 1, 0)
    model = _Model(FeatureSpec.fit(jan, cfg.feature_columns, cfg.features.categorical, label="label"))
    profile = model_profile(model, jan.iloc[:1500], jan.iloc[1500:], "label")
    assert profile["reference"]["split"] == "test" and profile["calibration"]["error_calibrated"] < 0.03
    assert max(profile["importance"]["values"], key=profile["importance"]["values"].get) == "dep_hour"
    scores = model.predict_proba_encoded(model.spec.encode(jan))
    no_labels = retrain_signals(profile, scores, np.full(len(jan), np.nan))
    assert "estimated_roc_auc" in no_labels and "observed_roc_auc" not in no_labels and no_labels["observed_rows"] == 0
    assert abs(no_labels["estimated_roc_auc"] - roc_auc_score(jan["label"], scores)) < 0.02
    assert require_profile({"monitoring": profile}) is profile
    with pytest.raises(DataError, match="no monitoring profile"):
        require_profile({"pipeline_run": "x"})


def test_the_pipelines_drift_step_decides_with_the_same_function_on_the_same_evidence(tmp_path):
    """The retraining pipeline's step reads the profile saved with the champion, hides labels
    the same way, and the default policy decides with decide(): as the backtest does."""
    from kfops.core.drift import check_drift
    from kfops.core.model import save_model
    from kfops.core.monitoring import PROFILE_KEY
    from kfops.core.retrain_policy import DriftSummary, decide
    from kfops.core.windows import drift_frame
    from kfops.runners.backtest import ModelBank, Trained, check_time
    from kfops.steps.drift_check import champion_signals

    cfg = example_config(retrain={"label_delay": "2d"})
    jan, feb = _month(cfg, 1, 0), _month(cfg, 2, 1)
    model = _Model(FeatureSpec.fit(jan, cfg.feature_columns, cfg.features.categorical, label="label"))
    profile = model_profile(model, jan.iloc[:1500], jan.iloc[1500:], "label")
    folder = save_model(model, tmp_path / "champion", metadata={PROFILE_KEY: profile})
    at = check_time("2013-02", cfg)
    current = drift_frame(hide_unknown_labels(feb, "label", cfg.dataset.event_timestamp, at, "2d"), cfg)
    result = check_drift(drift_frame(jan, cfg), current, cfg.drift, model=model)
    signals, missing, importance = champion_signals(cfg, model, folder, current, result)
    assert missing is None and importance == profile["importance"]["values"]

    bank = ModelBank(cfg, {"2013-01": jan, "2013-02": feb}, work_dir=tmp_path)
    bank._trained["2013-01"] = Trained("2013-01", model, {}, profile)
    _, backtest_signals, _ = bank.check("2013-01", "2013-02")
    assert signals == pytest.approx(backtest_signals)
    step = decide([], DriftSummary.from_result(result, signals=signals), at, cfg.retrain)
    replayed = decide([], DriftSummary.from_result(result, signals=backtest_signals), at, cfg.retrain)
    assert (step.retrain, step.code, step.triggered_by) == (replayed.retrain, replayed.code, replayed.triggered_by)
    assert step.mode == "performance" and step.signals == signals

    save_model(model, tmp_path / "old", metadata={"pipeline_run": "x"})  # trained before profiles existed
    old_signals, why, _ = champion_signals(cfg, model, tmp_path / "old", current, result)
    assert old_signals == {} and "no monitoring profile" in why


def test_the_drift_report_lists_every_column_with_its_importance_and_the_evidence():
    from kfops.core.drift import check_drift
    from kfops.reports.drift import _banner

    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"temp": rng.normal(size=2000), "dep_hour": rng.normal(size=2000),
                              "id": rng.normal(size=2000)})
    current = reference.assign(temp=reference["temp"] + 2)
    result = check_drift(reference, current)
    banner = _banner(result, 100, 100, importance={"dep_hour": 0.9, "temp": 0.1},
                     signals={"weighted_drift_share": 0.1, "estimated_roc_auc": 0.7})
    assert all(f"<td>{c}</td>" in banner for c in ("temp", "dep_hour", "id")) and banner.count("<tr><td>") == 3
    assert "importance to the champion" in banner and "<td>90.0%</td>" in banner and "<td>0.0%</td>" in banner
    assert "weighted_drift_share: 0.1000" in banner


def test_cbpe_recalibrates_on_the_windows_labelled_rows_when_the_stored_calibration_is_stale():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 1, 30_000)
    scores = 1 / (1 + np.exp(-z))  # the model's raw scores ...
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(2 * z - 1)))).astype(float)  # ... and a moved truth
    realised = roc_auc_score(y, scores)
    profile = {"reference": {"roc_auc": 0.75, "roc_auc_se": 0.01}, "calibration": {"method": "none"}}
    seen = np.where(np.arange(z.size) < 24_000, y, np.nan)  # the last rows' labels do not exist yet
    with_labels = retrain_signals(profile, scores, seen)
    assert with_labels["estimated_recalibrated"] == 1.0
    assert abs(with_labels["estimated_roc_auc"] - realised) < 0.01
    assert abs(with_labels["estimated_roc_auc_profile"] - realised) > 0.05  # the stale calibrator misses
    without = retrain_signals(profile, scores, np.full(z.size, np.nan))
    assert without["estimated_recalibrated"] == 0.0
    assert without["estimated_roc_auc"] == with_labels["estimated_roc_auc_profile"]


def test_the_backtest_cache_recomputes_signals_of_another_version_and_keeps_the_drift_check(tmp_path, monkeypatch):
    import pickle
    import shutil

    from kfops.runners.backtest import ModelBank, Trained

    cfg = example_config()
    jan, feb = _month(cfg, 1, 0), _month(cfg, 2, 1)
    model = _Model(FeatureSpec.fit(jan, cfg.feature_columns, cfg.features.categorical, label="label"))
    profile = model_profile(model, jan.iloc[:1500], jan.iloc[1500:], "label")
    bank = ModelBank(cfg, {"2013-01": jan, "2013-02": feb}, work_dir=tmp_path, cache_dir=tmp_path / "cache")
    bank._trained["2013-01"] = Trained("2013-01", model, {}, profile)
    drift, signals, realised = bank.check("2013-01", "2013-02")
    bank._checks[("2013-01", "2013-02")] = (drift, {"estimated_roc_auc": -1.0}, realised)  # an older version's
    bank.save()
    assert (tmp_path / "cache" / "signals_version").read_text() == str(SIGNALS_VERSION)
    (tmp_path / "cache" / "signals_version").write_text(str(SIGNALS_VERSION - 1))
    shutil.rmtree(tmp_path / "cache" / "models")  # the stub model cannot be loaded back; it is set below

    reloaded = ModelBank(cfg, {"2013-01": jan, "2013-02": feb}, work_dir=tmp_path, cache_dir=tmp_path / "cache")
    reloaded._trained["2013-01"] = Trained("2013-01", model, {}, profile)
    cached_drift = pickle.loads((tmp_path / "cache" / "checks.pkl").read_bytes())[("2013-01", "2013-02")][0]
    import kfops.core.drift

    def no_drift_check(*args, **kwargs):
        raise AssertionError("the cached drift check must be reused")

    monkeypatch.setattr(kfops.core.drift, "check_drift", no_drift_check)
    again, recomputed, realised_again = reloaded.check("2013-01", "2013-02")
    assert recomputed == signals and realised_again == realised
    assert again.drift == cached_drift.drift and again.performance.roc_auc == cached_drift.performance.roc_auc


def test_the_backtest_cache_profiles_a_model_of_an_older_profile_revision_again(tmp_path, monkeypatch):
    """A cached model whose profile an older kfops computed is profiled again (its calibrators
    get what the current code stores) and its checks' signals are recomputed, not served stale."""
    import kfops.core.drift
    import kfops.core.model
    import kfops.core.monitoring
    from kfops.core.model import read_meta
    from kfops.runners.backtest import ModelBank, Trained
    from kfops.training.challenger import split_window

    cfg = example_config()
    by_month = {"2013-01": _month(cfg, 1, 0), "2013-02": _month(cfg, 2, 1)}
    model = _Model(FeatureSpec.fit(by_month["2013-01"], cfg.feature_columns, cfg.features.categorical, label="label"))
    bank = ModelBank(cfg, by_month, work_dir=tmp_path, cache_dir=tmp_path / "cache")
    parts = split_window(bank._labelled("2013-01"), cfg)
    current = model_profile(model, parts["validation"], parts["test"], "label", seed=cfg.drift.seed)
    older = {**current, "recent_calibration": {k: v for k, v in current["recent_calibration"].items() if k != "covariance"}}
    older.pop("revision")
    bank._trained["2013-01"] = Trained("2013-01", model, {}, older)
    _, stale_signals, _ = bank.check("2013-01", "2013-02")
    bank.save()
    monkeypatch.setattr(kfops.core.model, "load_model", lambda folder, *trust: model)  # the stub has no weights to load

    reloaded = ModelBank(cfg, by_month, work_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert reloaded._trained["2013-01"].profile == current
    monkeypatch.setattr(kfops.core.drift, "check_drift", lambda *a, **k: pytest.fail("the drift check is reused"))
    _, signals, _ = reloaded.check("2013-01", "2013-02")
    assert signals != stale_signals
    fresh = ModelBank(cfg, by_month, work_dir=tmp_path / "fresh")
    fresh._trained["2013-01"] = Trained("2013-01", model, {}, current)
    monkeypatch.undo()
    assert signals == fresh.check("2013-01", "2013-02")[1]
    reloaded.save()
    assert read_meta(tmp_path / "cache" / "models" / "2013-01")["metadata"]["monitoring"] == current

    # A profile of the current revision is loaded as it is.
    monkeypatch.setattr(kfops.core.model, "load_model", lambda folder, *trust: model)
    monkeypatch.setattr(kfops.core.monitoring, "model_profile", lambda *a, **k: pytest.fail("profiled again"))
    assert ModelBank(cfg, by_month, work_dir=tmp_path, cache_dir=tmp_path / "cache")._trained["2013-01"].profile == current


def _moved_truth(seed: int, n: int = 30_000) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores, and labels from a truth that moved away from them (the stored calibration is stale)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * z - 1)))).astype(float)
    return 1 / (1 + np.exp(-z)), y


def test_the_label_free_estimate_calibrates_on_the_latest_labelled_rows_before_the_window():
    scores, y = _moved_truth(11)
    recent_scores, recent_y = _moved_truth(12)  # the window before: the same moved truth, labelled
    realised = roc_auc_score(y, scores)
    profile = {"reference": {"roc_auc": 0.75, "roc_auc_se": 0.01}, "calibration": {"method": "none"},
               "recent_calibration": {"method": "none"}}
    no_labels = np.full(scores.size, np.nan)
    free = retrain_signals(profile, scores, no_labels, recent_labels=recent_y, recent_scores=recent_scores)
    assert free["estimated_label_free_rows"] == recent_y.size and free["estimated_recalibrated"] == 0.0
    assert free["estimated_roc_auc"] == free["estimated_roc_auc_label_free"]  # what the trigger acts on
    assert free["estimated_roc_auc_label_free_low"] < free["estimated_roc_auc_label_free"] \
        < free["estimated_roc_auc_label_free_high"]
    assert (free["estimated_roc_auc_low"], free["estimated_roc_auc_high"]) == \
        (free["estimated_roc_auc_label_free_low"], free["estimated_roc_auc_label_free_high"])
    assert abs(free["estimated_roc_auc_label_free"] - realised) < 0.01
    assert abs(free["estimated_roc_auc_profile"] - realised) > 0.05  # the stale calibrator misses
    # Too few labelled recent rows: the champion's recent (test split) calibrator, not the window's labels.
    few = retrain_signals(profile, scores, no_labels, recent_labels=recent_y[:50], recent_scores=recent_scores[:50])
    assert few["estimated_label_free_rows"] == 0.0
    assert few["estimated_roc_auc_label_free"] == expected_roc_auc(scores, scores)
    # With the window's own labels the estimate recalibrates on them; the label-free one is unchanged.
    seen = np.where(np.arange(scores.size) < 24_000, y, np.nan)
    labelled = retrain_signals(profile, scores, seen, recent_labels=recent_y, recent_scores=recent_scores)
    assert labelled["estimated_recalibrated"] == 1.0
    assert labelled["estimated_roc_auc_low"] <= realised <= labelled["estimated_roc_auc_high"]
    assert labelled["estimated_roc_auc_label_free"] == free["estimated_roc_auc_label_free"]


def test_the_profile_keeps_a_calibrator_of_the_test_split_for_the_label_free_estimate():
    cfg = example_config()
    jan = _month(cfg, 1, 0)
    model = _Model(FeatureSpec.fit(jan, cfg.feature_columns, cfg.features.categorical, label="label"))
    profile = model_profile(model, jan.iloc[:1500], jan.iloc[1500:], "label")
    test = jan.iloc[1500:]
    expected = fit_calibrator(test["label"], model.predict_proba_encoded(model.spec.encode(test)))
    assert profile["recent_calibration"] == {**expected, "fitted_on": "test"}
    scores = model.predict_proba_encoded(model.spec.encode(jan))
    signals = retrain_signals(profile, scores, np.full(len(jan), np.nan))
    assert signals["estimated_roc_auc_label_free"] == expected_roc_auc(
        scores, calibrate(profile["recent_calibration"], scores))


def test_the_recent_window_is_the_one_before_less_what_the_champion_trained_on():
    from kfops.steps.drift_check import recent_window

    march = (dt.date(2013, 3, 1), dt.date(2013, 3, 31))
    assert recent_window(march, (dt.date(2012, 12, 1), dt.date(2012, 12, 31))) == (dt.date(2013, 1, 29),
                                                                                   dt.date(2013, 2, 28))
    assert recent_window(march, (dt.date(2013, 1, 1), dt.date(2013, 1, 31))) == (dt.date(2013, 2, 1),
                                                                                 dt.date(2013, 2, 28))
    assert recent_window(march, (dt.date(2013, 1, 1), dt.date(2013, 2, 10))) == (dt.date(2013, 2, 11),
                                                                                 dt.date(2013, 2, 28))
    assert recent_window(march, (dt.date(2013, 2, 1), dt.date(2013, 2, 28))) is None


def test_the_backtests_label_free_estimate_uses_no_label_of_the_checked_month(tmp_path):
    """March checked against the January model: its label-free estimate calibrates on February
    (labels that exist at March's check), never on March's own labels."""
    from kfops.runners.backtest import ModelBank, Trained

    cfg = example_config()
    jan, feb, mar = _month(cfg, 1, 0), _month(cfg, 2, 1), _month(cfg, 3, 2)
    model = _Model(FeatureSpec.fit(jan, cfg.feature_columns, cfg.features.categorical, label="label"))
    profile = model_profile(model, jan.iloc[:1500], jan.iloc[1500:], "label")

    def label_free(months: dict[str, pd.DataFrame]) -> dict[str, float]:
        bank = ModelBank(cfg, months, work_dir=tmp_path)
        bank._trained["2013-01"] = Trained("2013-01", model, {}, profile)
        return bank.check("2013-01", "2013-03")[1]

    base = label_free({"2013-01": jan, "2013-02": feb, "2013-03": mar})
    flipped_march = mar.assign(label=1 - mar["label"])
    flipped_february = feb.assign(label=1 - feb["label"])
    assert base["estimated_label_free_rows"] == len(feb)
    assert label_free({"2013-01": jan, "2013-02": feb, "2013-03": flipped_march})[
        "estimated_roc_auc_label_free"] == base["estimated_roc_auc_label_free"]
    assert label_free({"2013-01": jan, "2013-02": flipped_february, "2013-03": mar})[
        "estimated_roc_auc_label_free"] != base["estimated_roc_auc_label_free"]
    # February checked against the January model: nothing between them, the test split calibrates.
    bank = ModelBank(cfg, {"2013-01": jan, "2013-02": feb}, work_dir=tmp_path)
    bank._trained["2013-01"] = Trained("2013-01", model, {}, profile)
    assert bank.check("2013-01", "2013-02")[1]["estimated_label_free_rows"] == 0.0


def test_the_drift_steps_shadow_challenger_is_the_backtests_challenger(tmp_path):
    """The `challenger` trigger's evidence: the drift step trains and judges a shadow challenger on
    the window's labelled rows exactly as the backtest trains and judges the month's challenger."""
    from kfops.runners.backtest import ModelBank, Trained, check_time
    from kfops.steps.drift_check import window_challenger
    from kfops.training.challenger import challenger_signals

    cfg = example_config(retrain={"label_delay": "2d"})
    jan, feb = _month(cfg, 1, 0), _month(cfg, 2, 1)
    model = _Model(FeatureSpec.fit(jan, cfg.feature_columns, cfg.features.categorical, label="label"))
    profile = model_profile(model, jan.iloc[:1500], jan.iloc[1500:], "label")
    at = check_time("2013-02", cfg)
    seen = hide_unknown_labels(feb, "label", cfg.dataset.event_timestamp, at, "2d")
    step, failed = window_challenger(cfg, model, seen, tmp_path / "shadow")
    assert step["challenger_rows"] == seen["label"].notna().sum() < len(feb)

    bank = ModelBank(cfg, {"2013-01": jan, "2013-02": feb}, work_dir=tmp_path / "bank")
    bank._trained["2013-01"] = Trained("2013-01", model, {}, profile)
    blessed, judged = bank.gate("2013-02", "2013-01")
    assert step == pytest.approx(challenger_signals(blessed, judged, bank.labelled_rows("2013-02")))
    assert step["challenger_blessed"] == float(blessed)
    assert bool(failed) is not blessed  # a refused shadow names the gate checks it failed

    strict = example_config(retrain={"label_delay": "2d", "min_labelled_rows": 10_000})
    assert window_challenger(strict, model, seen, tmp_path / "shadow2") == ({}, "")  # too few labels: no evidence
