"""featurize with features.materialize_online: the online store holds the window's last features,
up to the end of the window's last day in its time zone (the demo's serving time)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from tests.unit.test_features_store import DAY, tiny_config, tiny_tables, utc


def test_materialize_window_reaches_the_end_of_the_last_local_day(tmp_path):
    from kfops.adapters.feast_store import OnlineFeatureReader
    from kfops.datasets.flights.features import write_feature_sources
    from kfops.steps.featurize import materialize_window

    tables = tiny_tables()
    # 21:00 in New York on DAY is 02:00 UTC the day after: inside the window, after UTC midnight.
    evening = tables["weather"].iloc[[0]].assign(time_hour=utc(f"{DAY}T00:00Z") + pd.Timedelta(hours=26), temp=60.0)
    after = evening.assign(time_hour=evening["time_hour"] + pd.Timedelta(hours=4), temp=70.0)  # 01:00 the next day
    tables["weather"] = pd.concat([tables["weather"], evening, after], ignore_index=True)
    cfg = tiny_config(tmp_path / "data")
    day = dt.date.fromisoformat(DAY)
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"start": day, "end": day})})
    assert cfg.validation.window_timezone == "America/New_York"
    sources = cfg.feast_dir / "sources"
    write_feature_sources(tables, sources)

    loaded = materialize_window(cfg, sources)

    assert loaded["weather_hourly"] == 2  # EWR and JFK
    reader = OnlineFeatureReader(cfg)
    row = reader.read_one({"origin": "EWR", "carrier": "UA", "tailnum": "N101UA"})
    assert row["temp"] == 60.0  # the evening's reading; not 50 (UTC midnight), nor 70 (after the window)


def test_an_earlier_window_does_not_set_the_online_store_back(tmp_path, capsys):
    """A run on an earlier window (refused by the gate, even) reloaded the store with older rows: the
    champion, still serving, then read features from the past (0.178 became 0.641 for one flight)."""
    from kfops.adapters.feast_store import OnlineFeatureReader
    from kfops.datasets.flights.features import write_feature_sources
    from kfops.steps.featurize import materialize_window

    tables = tiny_tables()
    later = tables["weather"].iloc[[0]].assign(time_hour=utc(f"{DAY}T00:00Z") + pd.Timedelta(hours=30), temp=70.0)
    tables["weather"] = pd.concat([tables["weather"], later], ignore_index=True)
    cfg = tiny_config(tmp_path / "data")
    day = dt.date.fromisoformat(DAY)
    window = {"start": day, "end": day + dt.timedelta(days=1)}
    sources = cfg.feast_dir / "sources"
    write_feature_sources(tables, sources)
    assert materialize_window(cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update=window)}), sources)

    earlier = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"start": day, "end": day})})
    assert materialize_window(earlier, sources) == {}
    assert "already holds features up to" in capsys.readouterr().out
    row = OnlineFeatureReader(cfg).read_one({"origin": "EWR", "carrier": "UA", "tailnum": "N101UA"})
    assert row["temp"] == 70.0  # the later window's reading stays
