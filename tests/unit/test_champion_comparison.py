"""The gate scores the champion only on test rows it did not train on (kfops.core.evaluation):
in-sample rows flattered it, so a challenger was refused for a loss that was not there."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from kfops.config import KfopsConfig
from kfops.core.evaluation import champion_training_span, gate, seen_in_training
from kfops.steps.evaluate import _unseen_by_champion

ZONE = "America/New_York"


def test_the_span_runs_from_the_window_start_through_the_last_trained_event():
    tags = {"kfops.window": "2013-01-01,2013-12-31", "kfops.trained_through": "2013-11-04T22:00:00+00:00"}
    start, through = champion_training_span(tags, ZONE)
    assert start == pd.Timestamp("2013-01-01 05:00", tz="UTC")  # New York midnight
    assert through == pd.Timestamp("2013-11-04 22:00", tz="UTC")


def test_without_the_trained_through_tag_the_whole_window_counts_as_seen():
    _, through = champion_training_span({"kfops.window": "2013-01-01,2013-03-31"}, ZONE)
    assert through == pd.Timestamp("2013-04-01 04:00", tz="UTC") - pd.Timedelta(microseconds=1)
    assert champion_training_span({}, ZONE) is None
    assert champion_training_span({"kfops.window": "soon,later"}, ZONE) is None


def test_rows_before_the_window_or_after_the_last_trained_event_are_unseen():
    span = (pd.Timestamp("2013-02-01", tz="UTC"), pd.Timestamp("2013-02-20", tz="UTC"))
    stamps = ["2013-01-31 00:00:00", "2013-02-01 00:00:00", "2013-02-20 00:00:00", "2013-02-20 00:00:01"]
    times = pd.Series(pd.to_datetime(stamps, utc=True))
    assert seen_in_training(times, span).tolist() == [False, True, True, False]


def frame(days: pd.DatetimeIndex, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    test = pd.DataFrame({"event_timestamp": days})
    return test, rng.integers(0, 2, len(test))


def champion(through: str) -> SimpleNamespace:
    return SimpleNamespace(version="1", tags={"kfops.window": "2013-01-01,2013-01-31", "kfops.trained_through": through})


def test_a_champion_that_saw_part_of_the_test_split_is_compared_on_the_rest():
    test, y = frame(pd.date_range("2013-01-20", periods=600, freq="h", tz="UTC"))
    unseen, note, refusal = _unseen_by_champion(test, y, champion("2013-01-25T00:00:00+00:00"), KfopsConfig(), 200)
    assert refusal is None and unseen.sum() == 600 - 5 * 24 - 1
    assert note.startswith("NOTE champion v1 compared on the 479 of 600 test rows it did not train on")


def test_too_few_unseen_rows_refuse_naming_the_overlap_and_the_way_out():
    test, y = frame(pd.date_range("2013-01-20", periods=300, freq="h", tz="UTC"))
    _, note, refusal = _unseen_by_champion(test, y, champion("2013-01-30T00:00:00+00:00"), KfopsConfig(), 200)
    assert note is None and not refusal.passed and refusal.name == "champion:unseen_rows"
    assert "trained on 241 of the 300 test rows" in refusal.detail and "the 59 it did not see are too few" in refusal.detail
    assert "kfops promote --force" in refusal.detail
    verdict = gate({"roc_auc": 0.9}, KfopsConfig().evaluate.gate, None, behaviour=[refusal], champion_version="1")
    assert not verdict.blessed and not any("no champion yet" in r for r in verdict.reasons)


def test_a_champion_trained_before_the_test_split_is_compared_on_every_row():
    test, y = frame(pd.date_range("2013-03-01", periods=300, freq="h", tz="UTC"))
    unseen, note, refusal = _unseen_by_champion(test, y, champion("2013-01-25T00:00:00+00:00"), KfopsConfig(), 200)
    assert unseen.all() and note is None and refusal is None


def test_the_improvement_is_measured_on_the_rows_both_were_scored_on():
    cfg = KfopsConfig().evaluate.gate
    verdict = gate({"roc_auc": 0.70}, cfg, {"roc_auc": 0.72}, champion_version="1",
                   challenger_vs_champion={"roc_auc": 0.74})
    assert verdict.blessed and "gain over champion v1: +0.0200" in " ".join(verdict.reasons)
