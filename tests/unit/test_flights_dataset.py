import datetime as dt

import numpy as np
import pandas as pd
import pytest

from kfops.datasets.flights import (
    LEAKAGE_COLUMNS,
    build_entity_frame,
    load_tables,
    request_features,
)
from kfops.errors import DataError
from tests.support.example import example_config


@pytest.fixture(scope="module")
def two_weeks():
    cfg = example_config(dataset={"start": dt.date(2013, 3, 1), "end": dt.date(2013, 3, 14)})
    return cfg, load_tables(cfg)


def test_window_selects_local_dates(two_weeks):
    _cfg, tables = two_weeks
    flights = tables["flights"]
    days = pd.to_datetime(flights[["year", "month", "day"]])
    assert days.min() == pd.Timestamp("2013-03-01") and days.max() == pd.Timestamp("2013-03-14")
    assert str(flights["time_hour"].dt.tz) == "UTC"
    assert tables["weather"]["time_hour"].min() >= pd.Timestamp("2013-02-28", tz="UTC")


def test_entity_frame_has_no_leakage_and_unique_ids(two_weeks):
    cfg, tables = two_weeks
    frame = build_entity_frame(tables, cfg)
    assert not set(LEAKAGE_COLUMNS) & set(frame.columns)
    assert frame["flight_id"].is_unique
    operated = tables["flights"]["arr_delay"].notna()
    assert len(frame) == int(operated.sum())
    expected_rate = (tables["flights"].loc[operated, "arr_delay"] > 15).mean()
    assert frame["label"].mean() == pytest.approx(expected_rate)
    assert frame["event_timestamp"].is_monotonic_increasing


def test_event_time_is_scheduled_departure_in_utc(two_weeks):
    cfg, tables = two_weeks
    frame = build_entity_frame(tables, cfg).set_index("flight_id")
    row = tables["flights"].query("carrier == 'UA' and arr_delay == arr_delay").iloc[0]
    key = f"2013-03-{row['day']:02d}_UA{row['flight']}_{row['origin']}_{row['sched_dep_time']:04d}"
    local = pd.Timestamp(2013, 3, int(row["day"]), int(row["hour"]), int(row["minute"]), tz="America/New_York")
    assert frame.loc[key, "event_timestamp"] == local.tz_convert("UTC")


def test_request_features_match_the_entity_frame(two_weeks):
    cfg, tables = two_weeks
    frame = build_entity_frame(tables, cfg).head(50)
    flights = tables["flights"].set_index(
        tables["flights"]["year"].astype(str) + "-03-" + tables["flights"]["day"].map("{:02d}".format)
        + "_" + tables["flights"]["carrier"] + tables["flights"]["flight"].astype(str) + "_"
        + tables["flights"]["origin"] + "_" + tables["flights"]["sched_dep_time"].astype(str).str.zfill(4))
    raw = flights.loc[frame["flight_id"]]
    request = pd.DataFrame({
        "carrier": raw["carrier"].values, "origin": raw["origin"].values, "dest": raw["dest"].values,
        "tailnum": raw["tailnum"].values, "distance": raw["distance"].values, "flight": raw["flight"].values,
        "sched_dep": [f"2013-03-{d:02d}T{h:02d}:{m:02d}:00"
                      for d, h, m in zip(raw["day"], raw["hour"], raw["minute"], strict=True)],
    })
    derived = request_features(request)
    for column in ("dep_hour", "day_of_week", "month", "days_to_holiday", "distance", "carrier"):
        assert list(derived[column]) == list(frame[column]), column
    assert list(derived["event_timestamp"]) == list(frame["event_timestamp"])


def test_empty_window_and_missing_tables_fail_clearly(tmp_path):
    cfg = example_config(dataset={"start": dt.date(2014, 6, 1), "end": dt.date(2014, 6, 30)})
    with pytest.raises(DataError, match="no flights between 2014-06-01 and 2014-06-30"):
        load_tables(cfg)
    with pytest.raises(DataError, match="input table 'flights' not found"):
        load_tables(example_config(dataset={"source_dir": tmp_path}))
    (tmp_path / "flights.csv").write_bytes(b"\x00\xff\xfe garbage")
    with pytest.raises(DataError):
        load_tables(example_config(dataset={"source_dir": tmp_path}))


def test_entity_frame_refuses_tables_without_operated_flights(two_weeks):
    cfg, tables = two_weeks
    cancelled = tables["flights"].assign(arr_delay=float("nan"))
    with pytest.raises(DataError, match="no operated flights"):
        build_entity_frame({**tables, "flights": cancelled}, cfg)
    with pytest.raises(DataError, match="lacks column"):
        build_entity_frame({**tables, "flights": tables["flights"].drop(columns=["dest"])}, cfg)


def test_days_to_holiday_per_distinct_day_equals_the_row_by_holiday_matrix():
    from kfops.datasets.flights import US_HOLIDAYS, days_to_nearest_holiday

    rng = np.random.default_rng(0)
    days = (np.datetime64("2012-11-01") + rng.integers(0, 3 * 365, 20_000)).astype("datetime64[ns]")
    holidays = np.array(US_HOLIDAYS, dtype="datetime64[D]")
    brute = np.minimum(np.abs(days.astype("datetime64[D]")[:, None] - holidays[None, :]).astype(int).min(axis=1), 30)
    got = days_to_nearest_holiday(days)
    assert got.shape == days.shape
    np.testing.assert_array_equal(got, brute)
    assert got.min() == 0 and got.max() == 30  # on a holiday, and far from any
