"""Online serving against the real Redis (and a SQL registry on the real PostgreSQL), as on a cluster.

Each test uses its own Feast project, so runs never see each other's keys; teardown deletes them.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pytest

from tests.unit.test_features_store import (
    DAY,
    entity_rows,
    same,
    tiny_config,
    tiny_tables,
    utc,
)

pytestmark = pytest.mark.integration

MOMENT = f"{DAY}T12:05Z"
KEYS = [{"origin": "EWR", "carrier": "UA", "tailnum": "N101UA"},
        {"origin": "JFK", "carrier": "AA", "tailnum": "UNKNOWN"}]


def _prepare(cfg):
    from kfops.adapters import feast_store as features
    from kfops.datasets.flights.features import write_feature_sources

    sources = cfg.feast_dir / "sources"
    write_feature_sources(tiny_tables(), sources)
    return sources, features.apply_definitions(cfg, sources)


@pytest.fixture
def redis_store(redis_url, tmp_path):
    import redis

    cfg = tiny_config(tmp_path, online_store="redis", redis_connection=redis_url)
    sources, store = _prepare(cfg)
    yield cfg, sources, store
    store.teardown()
    host, port = redis_url.split(":")
    client = redis.Redis(host=host, port=int(port))
    leftover = list(client.scan_iter(b"*" + cfg.features.project.encode()))
    if leftover:  # teardown missed some: delete them so the next run starts clean
        client.delete(*leftover)


@pytest.fixture
def postgres_registry(postgres_dsn):
    """A throwaway database for the Feast SQL registry, dropped afterwards."""
    import psycopg2

    name = f"kfops_feast_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(postgres_dsn)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _assert_online_matches_historical(cfg, sources, store):
    from kfops.adapters.feast_store import (
        OnlineFeatureReader,
        build_training_set,
        feature_names,
        materialize,
    )

    materialize(cfg, dt.datetime(2013, 1, 9, tzinfo=dt.UTC), utc(MOMENT).to_pydatetime(), store=store)
    historical = build_training_set(
        entity_rows(*[(f"row{i}", MOMENT, k["origin"], k["carrier"], k["tailnum"]) for i, k in enumerate(KEYS)]),
        cfg, sources, store=store)
    reader = OnlineFeatureReader(cfg, store)
    as_of = utc(MOMENT).to_pydatetime()
    online = reader.read(KEYS, as_of=as_of)
    names = feature_names(cfg)
    assert list(online.columns) == names
    for i, key in enumerate(KEYS):
        one = reader.read_one(key, as_of=as_of)
        for name in names:
            assert same(online.loc[i, name], historical.loc[i, name]), (i, name)
            assert same(one[name], historical.loc[i, name]), (i, name)
    return online


def reader_without_as_of(cfg, store):
    from kfops.adapters.feast_store import OnlineFeatureReader

    return OnlineFeatureReader(cfg, store).read_one(KEYS[1])


def test_redis_online_features_match_the_historical_join(redis_store):
    cfg, sources, store = redis_store
    online = _assert_online_matches_historical(cfg, sources, store)
    assert online.loc[0, "carrier_flights_7d"] == 3.0 and online.loc[0, "temp"] == 50.0
    assert online.loc[1, "manufacturer"] is None  # no such plane: missing, not an error
    assert math.isnan(online.loc[1, "temp"])  # JFK's 09:00 reading is past its 3 h TTL at 12:05
    assert reader_without_as_of(cfg, store)["temp"] == 41.0  # the store itself keeps it


@pytest.fixture
def cluster_store(postgres_registry, redis_url, tmp_path):
    """The cluster shape: SQL registry on PostgreSQL, Redis online."""
    cfg = tiny_config(tmp_path, online_store="redis", redis_connection=redis_url, registry=postgres_registry)
    sources, store = _prepare(cfg)
    yield cfg, sources, store
    store.teardown()


def test_sql_registry_on_postgres_with_redis_online(cluster_store):
    from kfops.adapters import feast_store as features

    cfg, sources, store = cluster_store
    # A second store, like a model server in another pod, sees what the first registered.
    other = features.feature_store(cfg)
    assert sorted(v.name for v in other.list_feature_views()) == [
        "carrier_delay_stats", "origin_delay_stats", "plane_attributes", "weather_hourly"]
    _assert_online_matches_historical(cfg, sources, store)
