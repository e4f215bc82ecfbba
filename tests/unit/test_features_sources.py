"""The Feast offline sources computed from the raw tables (no Feast needed)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from kfops.datasets.flights import features as ff
from kfops.errors import DataError
from tests.support.example import example_config
from tests.unit.test_features_store import DAY, WEATHER_FEATURES, tiny_tables, utc


def stats_at(frame: pd.DataFrame, key: str, value: str, moment: str) -> pd.Series:
    rows = frame[(frame[key] == value) & (frame["event_timestamp"] == utc(moment))]
    assert len(rows) == 1
    return rows.iloc[0]


def test_rolling_rate_at_t_ignores_flights_arriving_at_or_after_t():
    stats = ff.delay_stats(tiny_tables()["flights"])["carrier_delay_stats"]
    # Estimated arrivals: C 08:15 (on time), A 09:30 (late), B 11:30 (late); D cancelled.
    assert stats_at(stats, "carrier", "UA", f"{DAY}T08:00Z")["carrier_flights_7d"] == 0
    assert np.isnan(stats_at(stats, "carrier", "UA", f"{DAY}T08:00Z")["carrier_delay_rate_7d"])
    assert stats_at(stats, "carrier", "UA", f"{DAY}T09:00Z")["carrier_flights_7d"] == 1
    assert stats_at(stats, "carrier", "UA", f"{DAY}T09:00Z")["carrier_delay_rate_7d"] == 0.0
    at_ten = stats_at(stats, "carrier", "UA", f"{DAY}T10:00Z")
    assert (at_ten["carrier_flights_7d"], at_ten["carrier_delay_rate_7d"]) == (2, 0.5)
    at_noon = stats_at(stats, "carrier", "UA", f"{DAY}T12:00Z")
    assert at_noon["carrier_flights_7d"] == 3
    assert at_noon["carrier_delay_rate_7d"] == pytest.approx(2 / 3)


def test_an_arrival_exactly_at_t_is_not_yet_counted_and_the_window_is_seven_days():
    arrivals = pd.DataFrame({
        "carrier": ["UA", "UA"],
        "origin": ["EWR", "EWR"],
        "arrival": [utc("2013-01-01T10:00Z"), utc("2013-01-01T10:30Z")],
        "delayed": [True, False],
    })
    grid = pd.DatetimeIndex([utc("2013-01-01T10:00Z"), utc("2013-01-01T11:00Z"),
                             utc("2013-01-08T10:30Z"), utc("2013-01-08T11:00Z")])
    stats = ff.rolling_delay_rates(arrivals, "carrier", ["UA", "DL"], grid)
    ua = stats[stats["carrier"] == "UA"].set_index("event_timestamp")
    assert list(ua["carrier_flights_7d"]) == [0, 2, 1, 0]  # [T-7d, T): in at T-7d, out at T
    assert list(ua["carrier_delay_rate_7d"].iloc[1:3]) == [0.5, 0.0]
    dl = stats[stats["carrier"] == "DL"]
    assert (dl["carrier_flights_7d"] == 0).all() and dl["carrier_delay_rate_7d"].isna().all()


def test_arrival_is_departure_plus_delay_air_time_and_taxi_buffer():
    arrivals = ff.estimated_arrivals(tiny_tables()["flights"])
    assert len(arrivals) == 4  # the cancelled flight has no outcome
    by_departure = arrivals.sort_values("arrival")
    assert list(by_departure["arrival"]) == [utc(f"{DAY}T08:15Z"), utc(f"{DAY}T09:30Z"), utc(f"{DAY}T11:10Z"),
                                             utc(f"{DAY}T11:30Z")]
    assert list(by_departure["delayed"]) == [False, True, False, True]


@pytest.mark.slow  # loads and processes the full year: 10-16 s on 2 busy cores
def test_sources_cover_every_flight_with_an_hour_old_stats_row_short_and_full_year(tmp_path):
    from kfops.datasets.flights import build_entity_frame, load_tables

    for start, end in ((dt.date(2013, 3, 1), dt.date(2013, 3, 14)), (dt.date(2013, 1, 1), dt.date(2013, 12, 31))):
        cfg = example_config(dataset={"start": start, "end": end})
        tables = load_tables(cfg)
        paths = ff.write_feature_sources(tables, tmp_path / cfg.window_name)
        assert set(paths) == set(ff.SOURCE_NAMES)
        entities = build_entity_frame(tables, cfg)
        for key in ("carrier", "origin"):
            stats = pd.read_parquet(paths[f"{key}_delay_stats"])
            assert str(stats["event_timestamp"].dtype) == "datetime64[us, UTC]"
            assert not stats.duplicated([key, "event_timestamp"]).any()
            events = entities[["event_timestamp", key]].sort_values("event_timestamp")
            events["event_timestamp"] = events["event_timestamp"].astype("datetime64[us, UTC]")
            latest = pd.merge_asof(events, stats.sort_values("event_timestamp"), on="event_timestamp", by=key,
                                   tolerance=pd.Timedelta(hours=1))
            assert latest[f"{key}_flights_7d"].notna().all(), (cfg.window_name, key)


def test_weather_and_plane_sources():
    tables = tiny_tables()
    weather = ff.weather_hourly(pd.concat([tables["weather"], tables["weather"].iloc[[0]].assign(temp=99.0)]))
    assert len(weather) == 3  # the repeated observation keeps the last reading
    assert weather.loc[weather["event_timestamp"] == utc(f"{DAY}T09:00Z")].set_index("origin").loc["EWR", "temp"] == 99
    assert list(weather.columns) == ["origin", "event_timestamp", *WEATHER_FEATURES]

    planes = ff.plane_attributes(tables["planes"]).set_index("tailnum")
    assert planes.loc["N101UA", "plane_age"] == 10.0 and np.isnan(planes.loc["N202UA", "plane_age"])
    assert planes.loc["N101UA", "plane_type"] == "Fixed wing multi engine"
    assert (planes["event_timestamp"] < utc("2013-01-01")).all()


def test_missing_tables_or_columns_are_data_errors(tmp_path):
    tables = tiny_tables()
    with pytest.raises(DataError, match="'weather'"):
        ff.write_feature_sources({k: v for k, v in tables.items() if k != "weather"}, tmp_path)
    with pytest.raises(DataError, match="air_time"):
        ff.write_feature_sources({**tables, "flights": tables["flights"].drop(columns="air_time")}, tmp_path)
