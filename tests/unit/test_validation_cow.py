"""Validation runs Great Expectations under pandas copy-on-write on a consolidated frame (so GE's
per-expectation row filters stop copying the whole frame); the outcomes must be exactly those of
GE's default mode, failures, counts and example rows included."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest

from kfops.adapters import gx_validation
from kfops.adapters.gx_validation import validate_tables, validate_training_set
from tests.support.validation_data import corrupt_distance, make_config, two_week_entity_frame, two_week_tables


def fragmented(frame: pd.DataFrame) -> pd.DataFrame:
    """The same frame with one block per column, as a join's output is."""
    out = frame[[frame.columns[0]]].copy()
    for column in frame.columns[1:]:
        out[column] = frame[column].to_numpy(copy=True)
    return out


@pytest.fixture(scope="module")
def cfg():
    return make_config()


def results_both_ways(monkeypatch, run):
    with monkeypatch.context() as patch:
        patch.setattr(gx_validation, "_copy_on_write", contextlib.nullcontext)
        default = run().to_dict()
    return default, run().to_dict()


def test_raw_tables_with_failures_give_the_same_outcomes(cfg, monkeypatch):
    tables = two_week_tables()
    flights = corrupt_distance(tables["flights"])
    flights.loc[flights.index[10:110], "tailnum"] = "not a tail"  # fails the regex (mostly 0.999), among nulls
    tables = {**tables, "flights": fragmented(flights)}
    before = tables["flights"].copy()
    default, fast = results_both_ways(monkeypatch, lambda: validate_tables(tables, cfg))
    assert not fast["success"]
    assert {(f["expectation"], f["column"]) for f in fast["failures"]} >= {
        ("expect_column_values_to_match_regex", "tailnum")}
    assert any(f["examples"] for f in fast["failures"])
    assert fast == default
    pd.testing.assert_frame_equal(tables["flights"], before)  # the caller's data is untouched
    assert not pd.get_option("mode.copy_on_write")  # and pandas' mode is restored


def test_joined_training_set_with_missing_features_gives_the_same_outcomes(cfg, monkeypatch):
    entity = two_week_entity_frame()
    rng = np.random.default_rng(0)
    temp = rng.normal(50, 10, len(entity))
    temp[rng.random(len(entity)) < 0.1] = np.nan  # missing features: GE filters these rows out
    temp[:4] = 500.0
    joined = fragmented(entity.assign(temp=temp, humid=rng.uniform(10, 90, len(entity))))
    default, fast = results_both_ways(monkeypatch, lambda: validate_training_set(joined, cfg))
    failure = next(f for f in fast["failures"] if f["column"] == "temp")
    assert failure["unexpected_count"] == 4
    assert [row["temp"] for row in failure["examples"]] == [500.0] * len(failure["examples"])
    assert fast == default
