"""The corruption catalog: each way real data breaks must fail validation, and the failure must
name the expectation that caught it (and show example rows when rows are to blame)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from kfops.adapters.gx_validation import (
    TRAINING_SET,
    ValidationResult,
    format_failures,
    validate_tables,
    validate_training_set,
)
from tests.support.validation_data import (
    END,
    FLIGHT_KEY,
    corrupt_distance,
    make_config,
    two_week_entity_frame,
    two_week_tables,
)


@dataclass(frozen=True)
class Case:
    table: str
    corrupt: Callable[[pd.DataFrame], pd.DataFrame | None]  # None: the table is absent
    expectation: str
    column: str | None
    with_previous: bool = False


def _set(column: str, value, rows: slice = slice(0, 200)):
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame[column] = frame[column].astype(object) if isinstance(value, str) or value is None else frame[column]
        frame.loc[frame.index[rows], column] = value
        return frame

    return corrupt


def _null_share(column: str, share: float):
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        picked = np.random.default_rng(7).random(len(frame)) < share
        frame.loc[picked, column] = np.nan
        return frame

    return corrupt


def _shift(column: str, by: pd.Timedelta, rows: int = 10):
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[frame.index[-rows:], column] = frame[column].iloc[-rows:] + by
        return frame

    return corrupt


def _stale(frame: pd.DataFrame) -> pd.DataFrame:
    # The feed stopped four days before the window's end.
    local_day = pd.to_datetime(frame[["year", "month", "day"]])
    return frame[local_day <= pd.Timestamp(END - dt.timedelta(days=4))]


CATALOG = {
    "dropped_column": Case(
        "flights", lambda f: f.drop(columns="dep_delay"), "expect_table_columns_to_match_set", None
    ),
    "renamed_column": Case(
        "flights", lambda f: f.rename(columns={"dep_delay": "departure_delay"}), "expect_table_columns_to_match_set", None
    ),
    "numbers_as_strings": Case(
        "flights", lambda f: f.assign(distance=f["distance"].astype(str)), "expect_column_values_to_be_in_type_list",
        "distance",
    ),
    "weather_numbers_as_strings": Case(
        "weather", lambda f: f.assign(temp=f["temp"].map("{:.1f}".format)), "expect_column_values_to_be_in_type_list",
        "temp",
    ),
    "timestamps_as_strings": Case(
        "flights", lambda f: f.assign(time_hour=f["time_hour"].astype(str)), "expect_column_type_to_be", "time_hour"
    ),
    "null_burst_in_required_column": Case(
        "flights", _set("origin", None), "expect_column_values_to_not_be_null", "origin"
    ),
    "nulls_beyond_tolerance": Case(
        "flights", _null_share("dep_time", 0.3), "expect_column_values_to_not_be_null", "dep_time"
    ),
    "negative_distance": Case(
        "flights", corrupt_distance, "expect_column_values_to_be_between", "distance"
    ),
    "temperature_of_500": Case(
        "weather", _set("temp", 500.0, slice(0, 3)), "expect_column_values_to_be_between", "temp"
    ),
    "unknown_carrier": Case(
        "flights", _set("carrier", "ZZ", slice(0, 5)), "expect_column_values_to_be_in_set", "carrier"
    ),
    "unknown_origin": Case(
        "weather", _set("origin", "BOS", slice(0, 24)), "expect_column_values_to_be_in_set", "origin"
    ),
    "duplicated_flight_keys": Case(
        "flights", lambda f: pd.concat([f, f.iloc[100:120]], ignore_index=True),
        "expect_compound_columns_to_be_unique", ", ".join(FLIGHT_KEY),
    ),
    "duplicated_weather_hours": Case(
        "weather", lambda f: pd.concat([f, f.iloc[:5]], ignore_index=True),
        "expect_compound_columns_to_be_unique", "origin, time_hour",
    ),
    "duplicated_planes": Case(
        "planes", lambda f: pd.concat([f, f.iloc[:2]], ignore_index=True), "expect_column_values_to_be_unique", "tailnum"
    ),
    "timestamps_after_window": Case(
        "flights", _shift("time_hour", pd.Timedelta(days=30)), "expect_column_values_to_be_between", "time_hour"
    ),
    "timestamps_before_window": Case(
        "weather", _shift("time_hour", pd.Timedelta(days=-60)), "expect_column_values_to_be_between", "time_hour"
    ),
    "stale_feed": Case("flights", _stale, "expect_column_max_to_be_between", "time_hour"),
    "empty_table": Case("flights", lambda f: f.iloc[:0], "expect_table_row_count_to_be_between", None),
    "ten_percent_of_expected_volume": Case(
        "flights", lambda f: f.iloc[::10], "expect_table_row_count_to_be_between", None, with_previous=True
    ),
    "table_absent": Case("weather", lambda f: None, "expect_table_to_be_present", None),
    "training_leakage_column": Case(
        TRAINING_SET, lambda f: f.assign(arr_delay=0.0), "expect_table_columns_to_not_contain", None
    ),
    "training_label_not_binary": Case(
        TRAINING_SET, _set("label", 2, slice(0, 10)), "expect_column_values_to_be_in_set", "label"
    ),
    "training_label_constant": Case(
        TRAINING_SET, lambda f: f.assign(label=0), "expect_column_mean_to_be_between", "label"
    ),
    "training_duplicate_rows": Case(
        TRAINING_SET, lambda f: pd.concat([f, f.iloc[:3]], ignore_index=True), "expect_column_values_to_be_unique",
        "flight_id",
    ),
    "training_events_outside_window": Case(
        TRAINING_SET, _shift("event_timestamp", pd.Timedelta(days=-20)), "expect_column_values_to_be_between",
        "event_timestamp",
    ),
}


@pytest.fixture(scope="module")
def cfg():
    return make_config()


@pytest.fixture(scope="module")
def previous_stats(cfg) -> dict:
    """A clean run of the same window: what the volume band compares with."""
    clean = validate_tables(two_week_tables(), cfg)
    assert clean.success, format_failures(clean)
    return clean.stats


def _validate(case: Case, cfg, previous: dict | None) -> ValidationResult:
    if case.table == TRAINING_SET:
        return validate_training_set(case.corrupt(two_week_entity_frame()), cfg, previous=previous)
    only = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"tables": [case.table]})})
    frame = case.corrupt(two_week_tables()[case.table])
    return validate_tables({} if frame is None else {case.table: frame}, only, previous=previous)


@pytest.mark.parametrize("name", list(CATALOG))
def test_corruption_is_caught_by_the_named_expectation(name, cfg, previous_stats):
    case = CATALOG[name]
    result = _validate(case, cfg, previous_stats if case.with_previous else None)

    assert not result.success
    caught = [f for f in result.failures if (f["table"], f["expectation"], f["column"]) ==
              (case.table, case.expectation, case.column)]
    assert caught, f"{name}: expected {case.table}.{case.expectation}({case.column}) among\n{format_failures(result)}"
    failure = caught[0]
    if failure["unexpected_count"]:  # rows are to blame: the report shows some
        assert failure["examples"], f"{name}: no example rows for {failure['expectation']}"
        assert len(failure["examples"]) <= cfg.validation.max_examples


def test_ten_percent_volume_passes_without_a_previous_run(cfg):
    """Without a previous run only the configured minimum applies, which 10% of two weeks clears."""
    result = _validate(CATALOG["ten_percent_of_expected_volume"], cfg, previous=None)
    assert result.success, format_failures(result)


def test_missing_column_is_named_in_column_checks(cfg):
    result = _validate(CATALOG["dropped_column"], cfg, previous=None)
    errors = {f["expectation"]: f["error"] for f in result.failures if f["column"] == "dep_delay"}
    assert errors and all(e == "column 'dep_delay' is missing" for e in errors.values())
