"""The feature store on real Feast (duckdb offline, SQLite online) with hand-built raw tables.

One module-scoped store: Feast is slow to import and to apply, so the tests share it and only
read from it, except the online test which materializes (and runs last among the store tests).
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from kfops.config import KfopsConfig
from kfops.errors import DataError, ValidationFailed
from tests.support.example import example_config, write_example_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = "2013-01-10"
ENGINES = ("asof", "feast")
WEATHER_FEATURES = ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _flight(number, carrier, origin, departure, dep_delay, air_time, arr_delay, tailnum="N101UA"):
    departure = utc(departure)
    local = departure.tz_convert("America/New_York")
    return {
        "year": local.year, "month": local.month, "day": local.day,
        "dep_time": None if dep_delay is None else local.hour * 100 + local.minute,
        "sched_dep_time": local.hour * 100 + local.minute, "dep_delay": dep_delay,
        "arr_time": None, "sched_arr_time": 0, "arr_delay": arr_delay,
        "carrier": carrier, "flight": number, "tailnum": tailnum, "origin": origin, "dest": "ORD",
        "air_time": air_time, "distance": 719.0, "hour": local.hour, "minute": local.minute,
        "time_hour": departure.floor("h"),
    }


def tiny_tables() -> dict[str, pd.DataFrame]:
    """Raw tables (ingest contract) small enough to reason about by hand.

    UA flights from EWR; estimated arrival = departure + dep_delay + air_time + 30 min:
      C: dep 07:00, -5 + 50  -> arrives 08:15, on time
      A: dep 08:00,  0 + 60  -> arrives 09:30, delayed (arr_delay 30)
      B: dep 08:00, 120 + 60 -> arrives 11:30, delayed
      D: dep 08:30, cancelled -> never counted
    EWR temp is 40 at 09:00 and 50 from 10:00.
    """
    flights = pd.DataFrame([
        _flight(3, "UA", "EWR", f"{DAY}T07:00Z", -5.0, 50.0, -10.0),
        _flight(1, "UA", "EWR", f"{DAY}T08:00Z", 0.0, 60.0, 30.0),
        _flight(2, "UA", "EWR", f"{DAY}T08:00Z", 120.0, 60.0, 125.0, tailnum="N202UA"),
        _flight(4, "UA", "EWR", f"{DAY}T08:30Z", None, None, None),
        _flight(5, "AA", "JFK", f"{DAY}T09:00Z", 0.0, 100.0, 0.0, tailnum=None),
    ])
    flights["time_hour"] = flights["time_hour"].astype("datetime64[ns, UTC]")
    weather = pd.DataFrame([
        {"origin": origin, "time_hour": utc(f"{DAY}T{hour:02d}:00Z"), "temp": temp, "dewp": 20.0, "humid": 50.0,
         "wind_dir": 270.0, "wind_speed": 10.0, "wind_gust": None, "precip": 0.0, "pressure": 1010.0, "visib": 10.0}
        for origin, hour, temp in (("EWR", 9, 40.0), ("EWR", 10, 50.0), ("JFK", 9, 41.0))
    ])
    weather["time_hour"] = weather["time_hour"].astype("datetime64[ns, UTC]")
    for column in ("year", "month", "day", "hour"):
        weather[column] = getattr(weather["time_hour"].dt, column)
    planes = pd.DataFrame([
        {"tailnum": "N101UA", "year": 2003.0, "type": "Fixed wing multi engine", "manufacturer": "BOEING",
         "model": "737", "engines": 2, "seats": 149, "speed": None, "engine": "Turbo-fan"},
        {"tailnum": "N202UA", "year": None, "type": "Fixed wing multi engine", "manufacturer": "AIRBUS",
         "model": "A320", "engines": 2, "seats": 180, "speed": None, "engine": "Turbo-fan"},
    ])
    airlines = pd.DataFrame({"carrier": ["UA", "AA"], "name": ["United Air Lines Inc.", "American Airlines Inc."]})
    return {"flights": flights, "weather": weather, "planes": planes, "airlines": airlines}


def tiny_config(data_dir: Path, **features) -> KfopsConfig:
    cfg = example_config(data_dir=data_dir).resolve(REPO_ROOT)
    cfg.features = cfg.features.model_copy(update={"project": f"kfops_test_{uuid.uuid4().hex[:8]}", **features})
    return cfg


def entity_rows(*rows: tuple[str, str, str, str, str]) -> pd.DataFrame:
    """(flight_id, event time, origin, carrier, tailnum) -> an entity frame."""
    frame = pd.DataFrame(rows, columns=["flight_id", "event_timestamp", "origin", "carrier", "tailnum"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
    return a == b


@pytest.fixture(scope="module")
def store_setup(tmp_path_factory):
    from kfops.adapters import feast_store as features
    from kfops.datasets.flights.features import write_feature_sources

    data_dir = tmp_path_factory.mktemp("feast")
    cfg = tiny_config(data_dir)
    sources = cfg.feast_dir / "sources"
    write_feature_sources(tiny_tables(), sources)
    store = features.apply_definitions(cfg, sources)
    return cfg, sources, store


@pytest.mark.parametrize("engine", ENGINES)
def test_weather_joins_the_value_valid_at_the_event_and_expires_after_its_ttl(store_setup, engine):
    from kfops.adapters.feast_store import build_training_set

    cfg, sources, store = store_setup
    entities = entity_rows(
        ("before-change", f"{DAY}T09:59Z", "EWR", "UA", "N101UA"),
        ("after-change", f"{DAY}T10:01Z", "EWR", "UA", "N101UA"),
        ("ttl-edge", f"{DAY}T13:00Z", "EWR", "UA", "N101UA"),
        ("ttl-expired", f"{DAY}T13:01Z", "EWR", "UA", "N101UA"),
        ("before-any", f"{DAY}T08:59Z", "EWR", "UA", "N101UA"),
    )
    temp = build_training_set(entities, cfg, sources, store=store, engine=engine).set_index("flight_id")["temp"]
    assert temp["before-change"] == 40.0
    assert temp["after-change"] == 50.0
    assert temp["ttl-edge"] == 50.0
    assert math.isnan(temp["ttl-expired"])
    assert math.isnan(temp["before-any"])


@pytest.mark.parametrize("engine", ENGINES)
def test_rolling_delay_rate_counts_only_flights_arrived_before_the_event(store_setup, engine):
    from kfops.adapters.feast_store import build_training_set

    cfg, sources, store = store_setup
    entities = entity_rows(
        ("at-0805", f"{DAY}T08:05Z", "EWR", "UA", "N101UA"),  # row 08:00: nothing arrived yet
        ("at-1005", f"{DAY}T10:05Z", "EWR", "UA", "N101UA"),  # row 10:00: C (on time), A (late)
        ("at-1205", f"{DAY}T12:05Z", "EWR", "UA", "N101UA"),  # row 12:00: C, A and B (late)
    )
    frame = build_training_set(entities, cfg, sources, store=store, engine=engine).set_index("flight_id")
    assert frame.loc["at-0805", "carrier_flights_7d"] == 0
    assert math.isnan(frame.loc["at-0805", "carrier_delay_rate_7d"])
    assert frame.loc["at-1005", "carrier_flights_7d"] == 2
    assert frame.loc["at-1005", "carrier_delay_rate_7d"] == pytest.approx(0.5)
    assert frame.loc["at-1205", "carrier_flights_7d"] == 3
    assert frame.loc["at-1205", "carrier_delay_rate_7d"] == pytest.approx(2 / 3)
    assert frame.loc["at-1205", "origin_flights_7d"] == 3  # AA's JFK flight is another origin


@pytest.mark.parametrize("engine", ENGINES)
def test_training_set_keeps_input_rows_order_and_types(store_setup, engine):
    from kfops.adapters.feast_store import build_training_set, feature_names

    cfg, sources, store = store_setup
    entities = entity_rows(
        ("z-last-id-first", f"{DAY}T10:30Z", "EWR", "UA", "N202UA"),
        ("same-keys-and-time-1", f"{DAY}T10:30Z", "EWR", "UA", "N101UA"),
        ("same-keys-and-time-2", f"{DAY}T10:30Z", "EWR", "UA", "N101UA"),
        ("a-unknown-plane", f"{DAY}T09:30Z", "JFK", "AA", "UNKNOWN"),
    )
    entities["label"] = [1, 0, 0, 1]
    frame = build_training_set(entities, cfg, sources, store=store, engine=engine)

    assert list(frame["flight_id"]) == list(entities["flight_id"])
    assert list(frame.columns) == [*entities.columns, *feature_names(cfg)]
    assert frame.loc[1, feature_names(cfg)].equals(frame.loc[2, feature_names(cfg)])
    assert frame.loc[1, "plane_age"] == 10.0 and frame.loc[1, "manufacturer"] == "BOEING"
    assert math.isnan(frame.loc[0, "plane_age"]) and frame.loc[0, "seats"] == 180.0  # unknown build year
    assert frame.loc[3, "manufacturer"] is None and math.isnan(frame.loc[3, "seats"])
    assert frame.loc[3, "temp"] == 41.0
    for name in ("temp", "plane_age", "seats", "carrier_flights_7d"):
        assert frame[name].dtype == "float64", name
    for name in ("manufacturer", "plane_type"):
        assert frame[name].dtype == object, name


def test_asof_engine_returns_what_feast_returns(store_setup):
    from kfops.adapters.feast_store import _asof_eligible, build_training_set

    cfg, sources, store = store_setup
    assert all(_asof_eligible(view) for view in store.list_feature_views())  # else asof falls back to Feast
    times = pd.date_range(f"{DAY}T06:00Z", f"{DAY}T15:00Z", freq="17min")
    keys = [("EWR", "UA", "N101UA"), ("EWR", "UA", "N202UA"), ("JFK", "AA", "UNKNOWN"), ("LGA", "DL", "N1")]
    entities = entity_rows(*[(f"{i}-{j}", str(t), *k) for i, t in enumerate(times) for j, k in enumerate(keys)])
    entities = entities.sample(frac=1.0, random_state=0).reset_index(drop=True)
    asof = build_training_set(entities, cfg, sources, store=store, engine="asof")
    feast = build_training_set(entities, cfg, sources, store=store, engine="feast")
    pd.testing.assert_frame_equal(asof, feast)
    assert asof["temp"].notna().any() and asof["temp"].isna().any()  # both sides of the TTL are exercised


def test_training_set_refuses_bad_entity_frames(store_setup):
    from kfops.adapters.feast_store import build_training_set

    cfg, sources, store = store_setup
    good = entity_rows(("one", f"{DAY}T10:30Z", "EWR", "UA", "N101UA"))
    with pytest.raises(DataError, match="empty"):
        build_training_set(good.iloc[0:0], cfg, sources, store=store)
    with pytest.raises(DataError, match=r"join key.*tailnum"):
        build_training_set(good.drop(columns="tailnum"), cfg, sources, store=store)
    with pytest.raises(DataError, match="not unique"):
        build_training_set(pd.concat([good, good]), cfg, sources, store=store)
    with pytest.raises(DataError, match="'flight_id'"):
        build_training_set(good.drop(columns="flight_id"), cfg, sources, store=store)


def test_a_post_departure_column_in_the_training_set_is_refused(store_setup):
    from kfops.adapters.feast_store import build_training_set

    cfg, sources, store = store_setup
    leaky = entity_rows(("one", f"{DAY}T10:30Z", "EWR", "UA", "N101UA")).assign(dep_delay=12.0)
    with pytest.raises(ValidationFailed, match="dep_delay"):
        build_training_set(leaky, cfg, sources, store=store)


def test_feature_definitions_exposing_dep_delay_are_refused(store_setup, tmp_path):
    from kfops.adapters.feast_store import (
        apply_definitions,
        assert_no_leakage,
        load_definitions,
    )

    cfg, sources, _ = store_setup
    real = load_definitions(cfg, sources)
    exposed = [f.name for obj in real for f in getattr(obj, "features", [])]
    assert_no_leakage(exposed, cfg.features.forbidden_columns, where="the feature definitions")

    (tmp_path / "leaky.py").write_text(
        "import importlib.util\n"
        "from feast import Entity, FeatureView, Field\n"
        "from feast.types import Float64, String\n"
        f"spec = importlib.util.spec_from_file_location('real', {str(REPO_ROOT / 'feature_repo/definitions.py')!r})\n"
        "real = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(real)\n"
        "def build(source_dir):\n"
        "    objects = real.build(source_dir)\n"
        "    carrier = next(o for o in objects if isinstance(o, Entity) and o.name == 'carrier')\n"
        "    stats = next(o for o in objects if o.name == 'carrier_delay_stats')\n"
        "    leaky = FeatureView(name='carrier_leaky', entities=[carrier], source=stats.batch_source,\n"
        "                        schema=[Field(name='carrier', dtype=String), Field(name='dep_delay', dtype=Float64)])\n"
        "    return [*objects, leaky]\n"
    )
    leaky_cfg = cfg.model_copy(update={"features": cfg.features.model_copy(
        update={"repo_path": tmp_path, "definitions": "leaky:build"})})
    with pytest.raises(ValidationFailed, match="dep_delay"):
        apply_definitions(leaky_cfg, sources)


def test_definitions_load_by_path_without_touching_sys_path(store_setup):
    from kfops.adapters.feast_store import load_definitions

    cfg, sources, _ = store_setup
    before_path, before_modules = list(sys.path), set(sys.modules)
    objects = load_definitions(cfg, sources)
    assert sys.path == before_path
    assert not [m for m in set(sys.modules) - before_modules if "definitions" in m]
    names = {o.name for o in objects}
    assert {"origin", "tailnum", "carrier", "weather_hourly", "plane_attributes",
            "carrier_delay_stats", "origin_delay_stats"} <= names
    paths = [o.batch_source.path for o in objects if hasattr(o, "batch_source")]
    assert paths and all(Path(p).is_absolute() and Path(p).is_file() for p in paths)


def test_apply_is_idempotent(store_setup):
    from kfops.adapters.feast_store import apply_definitions

    cfg, sources, store = store_setup
    before = sorted((v.name, len(v.features)) for v in store.list_feature_views())
    again = apply_definitions(cfg, sources, store=store)
    assert sorted((v.name, len(v.features)) for v in again.list_feature_views()) == before
    assert len(before) == 4


def test_online_features_match_the_historical_join_after_materialize(store_setup):
    from kfops.adapters.feast_store import (
        OnlineFeatureReader,
        build_training_set,
        feature_names,
        materialize,
        online_features,
    )

    cfg, sources, store = store_setup
    moment = f"{DAY}T12:05Z"
    loaded = materialize(cfg, dt.datetime(2013, 1, 9, tzinfo=dt.UTC), utc(moment).to_pydatetime(), store=store)
    assert loaded["plane_attributes"] == 2  # static rows load whatever their timestamp
    assert loaded["weather_hourly"] == 2  # EWR and JFK

    keys = [{"origin": "EWR", "carrier": "UA", "tailnum": "N101UA"},
            {"origin": "EWR", "carrier": "UA", "tailnum": "N202UA", "dest": "ORD"},  # extra keys are ignored
            {"origin": "JFK", "carrier": "AA", "tailnum": "UNKNOWN"}]
    historical = build_training_set(
        entity_rows(*[(f"row{i}", moment, k["origin"], k["carrier"], k["tailnum"]) for i, k in enumerate(keys)]),
        cfg, sources, store=store)
    as_of = utc(moment).to_pydatetime()
    online = online_features(cfg, keys, store=store, as_of=as_of)

    names = feature_names(cfg)
    assert list(online.columns) == names
    assert (online.dtypes == historical[names].dtypes).all()
    for i in range(len(keys)):
        for name in names:
            assert same(online.loc[i, name], historical.loc[i, name]), (i, name)
    reader = OnlineFeatureReader(cfg, store)
    one = reader.read_one(keys[0], as_of=as_of)
    assert all(same(one[name], historical.loc[0, name]) for name in names)
    assert one["carrier_flights_7d"] == 3 and one["temp"] == 50.0
    # JFK's last reading (09:00) is past the 3 h TTL at 12:05: missing offline and, with as_of, online.
    assert math.isnan(online.loc[2, "temp"]) and math.isnan(historical.loc[2, "temp"])
    assert reader.read_one(keys[2])["temp"] == 41.0  # without as_of the store's latest row comes back
    # One read with an as-of per row (the server's batches): JFK's row is within TTL at 10:00.
    early = utc(f"{DAY}T10:00Z").to_pydatetime()
    per_row = reader.read([keys[2], keys[2]], as_of=[early, as_of])
    assert per_row["temp"].iloc[0] == 41.0 and math.isnan(per_row["temp"].iloc[1])


def test_cli_materialize_builds_sources_from_the_raw_snapshot(tmp_path):
    from typer.testing import CliRunner

    from kfops.cli.features import app

    cfg = tiny_config(tmp_path / "data")
    raw = cfg.data_dir / "raw" / cfg.window_name
    raw.mkdir(parents=True)
    for name, frame in tiny_tables().items():
        frame.to_parquet(raw / f"{name}.parquet", index=False)
    config_file = tmp_path / "kfops.yaml"
    write_example_config(config_file, data_dir=cfg.data_dir,
                         features={"repo_path": REPO_ROOT / "feature_repo", "project": cfg.features.project})
    runner = CliRunner()
    result = runner.invoke(app, ["materialize", "--config", str(config_file), "--start", "2013-01-09",
                                 "--end", "2013-01-10T12:05:00"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 feature sources" in result.output
    assert "carrier_delay_stats: 2 entities" in result.output
    assert (cfg.feast_dir / "sources" / "weather_hourly.parquet").is_file()

    looked_up = runner.invoke(app, ["get", "origin=EWR", "carrier=UA", "tailnum=N101UA", "--config", str(config_file)])
    assert looked_up.exit_code == 0, looked_up.output
    assert '"carrier_flights_7d": 3.0' in looked_up.output
