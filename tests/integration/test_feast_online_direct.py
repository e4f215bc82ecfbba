"""The direct online read (kfops.adapters.feast_online) agrees with Feast's get_online_features.

A small synthetic feature repo (not the flights example): a view on a composite key (an int64 and
a text join key) with every scalar type and a 2 h TTL, a static view on the int key, a view on
the text key with a 1 day TTL. It is materialized into SQLite and into the real Redis, each under
its own Feast project (Redis keys are deleted at teardown), then applied again with one more
feature that was never materialized (a missing field). Every test reads the same store with the
direct reader and with Feast's call, and compares them cell by cell and stamp by stamp.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import textwrap
import uuid
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import need, port_open

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
USERS = list(range(1, 41))
REGIONS = ["eu", "us", "ap"]
ACTIVITY_TTL = dt.timedelta(hours=2)
REGION_TTL = dt.timedelta(days=1)
REFS = ["user_activity:clicks", "user_activity:score", "user_activity:spend", "user_activity:active",
        "user_activity:segment", "user_activity:rank", "user_profile:age", "user_profile:tier",
        "region_stats:region_rate"]
NEW_REF = "user_profile:nickname"  # added after materialization: never stored

DEFINITIONS = textwrap.dedent('''
    from datetime import timedelta
    from pathlib import Path


    def _objects(source_dir, with_nickname):
        from feast import Entity, FeatureView, Field, FileSource, ValueType
        from feast.types import Bool, Float32, Float64, Int32, Int64, String

        def source(name):
            return FileSource(name=name, path=str(Path(source_dir) / f"{name}.parquet"),
                              timestamp_field="event_timestamp")

        user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
        region = Entity(name="region", join_keys=["region"], value_type=ValueType.STRING)
        activity = FeatureView(
            name="user_activity", entities=[user, region], ttl=timedelta(hours=2), source=source("activity"),
            schema=[Field(name="user_id", dtype=Int64), Field(name="region", dtype=String),
                    Field(name="clicks", dtype=Int64), Field(name="score", dtype=Float32),
                    Field(name="spend", dtype=Float64), Field(name="active", dtype=Bool),
                    Field(name="segment", dtype=String), Field(name="rank", dtype=Int32)])
        profile_fields = [Field(name="user_id", dtype=Int64), Field(name="age", dtype=Int32),
                          Field(name="tier", dtype=String)]
        if with_nickname:
            profile_fields.append(Field(name="nickname", dtype=String))
        profile = FeatureView(name="user_profile", entities=[user], ttl=timedelta(0), source=source("profile"),
                              schema=profile_fields)
        regional = FeatureView(
            name="region_stats", entities=[region], ttl=timedelta(days=1), source=source("regional"),
            schema=[Field(name="region", dtype=String), Field(name="region_rate", dtype=Float64)])
        return [user, region, activity, profile, regional]


    def build(source_dir):
        return _objects(source_dir, with_nickname=False)


    def build_with_nickname(source_dir):
        return _objects(source_dir, with_nickname=True)
''')


def write_sources(folder: Path, rng: random.Random) -> None:
    """Random rows (1 to 3 per entity, some values null) for most entities: a few never appear."""
    folder.mkdir(parents=True, exist_ok=True)
    activity = []
    for user in USERS[:-4]:
        for region in REGIONS:
            if rng.random() < 0.15:
                continue
            for _ in range(rng.randint(1, 3)):
                activity.append({
                    "user_id": user, "region": region,
                    "event_timestamp": T0 + dt.timedelta(minutes=rng.randint(0, 600)),
                    "clicks": rng.randint(0, 50), "score": rng.random(),
                    "spend": None if rng.random() < 0.2 else round(rng.uniform(0, 100), 2),
                    "active": rng.random() < 0.5, "segment": None if rng.random() < 0.2 else rng.choice("abc"),
                    "rank": rng.randint(-5, 5),
                })
    frame = pd.DataFrame(activity)
    frame["score"] = frame["score"].astype("float32")
    frame["rank"] = frame["rank"].astype("int32")
    frame.to_parquet(folder / "activity.parquet", index=False)
    profile = pd.DataFrame([{"user_id": u, "event_timestamp": T0 - dt.timedelta(days=30),
                             "age": rng.randint(18, 80), "tier": rng.choice(["gold", "silver"])}
                            for u in USERS[:-6]])
    profile["age"] = profile["age"].astype("int32")
    profile.to_parquet(folder / "profile.parquet", index=False)
    pd.DataFrame([{"region": r, "event_timestamp": T0 + dt.timedelta(hours=h), "region_rate": rng.random()}
                  for r in REGIONS[:2] for h in (0, 5)]).to_parquet(folder / "regional.parquet", index=False)


def _config(tmp: Path, online_store: str, repo: Path):
    from kfops.config import KfopsConfig

    cfg = KfopsConfig(data_dir=tmp / "data").resolve(REPO_ROOT)
    extra = {"redis_connection": "127.0.0.1:6379"} if online_store == "redis" else {}
    cfg.features = cfg.features.model_copy(update={
        "project": f"kfops_direct_{uuid.uuid4().hex[:8]}", "repo_path": repo, "definitions": "synthetic:build",
        "feature_refs": REFS, "online_store": online_store, **extra,
    })
    return cfg


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def online(request, tmp_path_factory):
    """(cfg, store) with the synthetic views materialized, then one never-materialized feature added."""
    from kfops.adapters import feast_store

    if request.param == "redis":
        need(port_open("127.0.0.1", 6379), "Redis is not listening on 127.0.0.1:6379")
    tmp = tmp_path_factory.mktemp(f"direct-{request.param}")
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "synthetic.py").write_text(DEFINITIONS)
    write_sources(tmp / "sources", random.Random(17))
    cfg = _config(tmp, request.param, repo)
    store = feast_store.apply_definitions(cfg, tmp / "sources")
    feast_store.materialize(cfg, T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=11), store=store)
    cfg.features = cfg.features.model_copy(update={"definitions": "synthetic:build_with_nickname",
                                                   "feature_refs": [*REFS, NEW_REF]})
    store = feast_store.apply_definitions(cfg, tmp / "sources", store=store)
    yield cfg, store
    store.teardown()
    if request.param == "redis":
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379)
        leftover = list(client.scan_iter(b"*" + cfg.features.project.encode()))
        if leftover:
            client.delete(*leftover)


def readers(cfg, store):
    from kfops.adapters.feast_store import OnlineFeatureReader

    direct = OnlineFeatureReader(cfg, store)
    feast = OnlineFeatureReader(cfg, store, direct=False)
    assert direct.mode == cfg.features.online_store and feast.mode == "feast"
    return direct, feast


def random_rows(rng: random.Random, count: int) -> list[dict]:
    """Known and unknown users and regions, repeats included, each with an event time."""
    return [{"user_id": rng.choice([*USERS, 99, 1000]), "region": rng.choice([*REGIONS, "xx"]),
             "event_timestamp": T0 + dt.timedelta(minutes=rng.randint(-90, 900))} for _ in range(count)]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_same_columns(a: dict, b: dict, names) -> None:
    for name in names:
        assert len(a[name]) == len(b[name]), name
        for i, (x, y) in enumerate(zip(a[name], b[name], strict=True)):
            assert same(x, y), (name, i, x, y)


def test_raw_values_and_stamps_match_get_online_features(online):
    """The layout read itself: per feature the same Python values, per view the same stamps."""
    cfg, store = online
    direct, _ = readers(cfg, store)
    rows = random_rows(random.Random(1), 120)
    keys = [{"user_id": r["user_id"], "region": r["region"]} for r in rows]
    expected = store.get_online_features(features=cfg.features.feature_refs, entity_rows=keys).to_dict(
        include_event_timestamps=True)
    values, stamps = direct._direct.read(rows)
    names = [ref.split(":")[1] for ref in cfg.features.feature_refs]
    assert_same_columns(values, expected, names)
    for name in names:
        view = next(ref.split(":")[0] for ref in cfg.features.feature_refs if ref.endswith(f":{name}"))
        assert stamps[view] == expected[f"{name}__ts"], name
    assert any(v is not None for v in values["clicks"]) and any(v is None for v in values["clicks"])
    assert all(v is None for v in values["nickname"])  # the never-materialized field


@pytest.mark.parametrize("mode", ["event", "one", "none"])
def test_random_entities_agree_with_feast(online, mode):
    cfg, store = online
    direct, feast = readers(cfg, store)
    rng = random.Random({"event": 11, "one": 12, "none": 13}[mode])
    for size in (1, 5, 40):
        rows = random_rows(rng, size)
        as_of = {"event": [r["event_timestamp"] for r in rows],
                 "one": T0 + dt.timedelta(hours=rng.randint(0, 14)), "none": None}[mode]
        a = direct.read_columns(rows, as_of=as_of)
        b = feast.read_columns(rows, as_of=as_of)
        assert_same_columns(a, b, direct.names)
        pd.testing.assert_frame_equal(direct.read(rows, as_of=as_of), feast.read(rows, as_of=as_of))


def _stored_stamp(store, row: dict, view: str, feature: str) -> int:
    keys = [{k: row[k] for k in ("user_id", "region")}]
    response = store.get_online_features(features=[f"{view}:{feature}"], entity_rows=keys)
    return response.to_dict(include_event_timestamps=True)[f"{feature}__ts"][0]


def test_ttl_edges(online):
    """Kept exactly at the TTL, missing one second past it, in both readers; static views never expire."""
    cfg, store = online
    direct, feast = readers(cfg, store)
    row = next(r for r in random_rows(random.Random(3), 500)
               if _stored_stamp(store, r, "user_activity", "clicks") and r["region"] in REGIONS[:2])
    for view, feature, ttl in (("user_activity", "clicks", ACTIVITY_TTL), ("region_stats", "region_rate", REGION_TTL)):
        stamp = dt.datetime.fromtimestamp(_stored_stamp(store, row, view, feature), tz=dt.UTC)
        at_ttl, past_ttl = stamp + ttl, stamp + ttl + dt.timedelta(seconds=1)
        for reader in (direct, feast):
            assert not math.isnan(reader.read_one(row, as_of=at_ttl)[feature])
            assert math.isnan(reader.read_one(row, as_of=past_ttl)[feature])
            # per-row as_of, both edges in one batch; a naive time is UTC
            both = reader.read_columns([row, row], as_of=[at_ttl.replace(tzinfo=None), past_ttl])
            assert not math.isnan(both[feature][0]) and math.isnan(both[feature][1])
            assert reader.read_one(row, as_of=past_ttl + dt.timedelta(days=3650))["age"] == reader.read_one(row)["age"]
        assert_same_columns(direct.read_columns([row] * 2, as_of=[at_ttl, past_ttl]),
                            feast.read_columns([row] * 2, as_of=[at_ttl, past_ttl]), direct.names)


def test_missing_entities_and_fields(online):
    cfg, store = online
    direct, feast = readers(cfg, store)
    unknown = {"user_id": 1000, "region": "xx"}
    for reader in (direct, feast):
        one = reader.read_one(unknown, as_of=T0)
        assert all(math.isnan(one[n]) if n in reader.numeric else one[n] is None for n in reader.names)
        frame = reader.read([unknown, {"user_id": 2, "region": "eu"}])
        assert frame["nickname"].isna().all()  # applied, never materialized
        assert frame.loc[1, "age"] == frame.loc[1, "age"]  # user 2 has a profile


def test_missing_key_values_read_as_not_found(online):
    """Feast fails a whole batch on a None join key; the direct read answers the other rows."""
    cfg, store = online
    direct, feast = readers(cfg, store)
    good = {"user_id": 2, "region": "eu"}
    got = direct.read_columns([{"user_id": None, "region": "eu"}, good, {"user_id": 2, "region": float("nan")}])
    expected = feast.read_columns([good])
    for name in direct.names:
        assert same(got[name][1], expected[name][0]), name
    assert math.isnan(got["age"][0]) and got["age"][2] == expected["age"][0]  # the profile needs user_id only
    assert math.isnan(got["clicks"][0]) and math.isnan(got["clicks"][2])
    assert got["region_rate"][0] == expected["region_rate"][0] and math.isnan(got["region_rate"][2])


def test_a_row_without_a_join_key_is_a_data_error(online):
    from kfops.errors import DataError

    cfg, store = online
    for reader in readers(cfg, store):
        with pytest.raises(DataError, match="lacks join key 'region'"):
            reader.read_columns([{"user_id": 2}])


def test_a_connection_redis_dropped_is_replaced(online):
    """Redis restarted or timed the idle connection out: the next read opens a new one."""
    import redis

    cfg, store = online
    if cfg.features.online_store != "redis":
        pytest.skip("a Redis connection only")
    direct, feast = readers(cfg, store)
    rows = random_rows(random.Random(5), 20)
    before = direct.read_columns(rows, as_of=T0)
    pool = direct._direct.client.connection_pool
    connection = pool.get_connection()
    connection.send_command("CLIENT", "ID")
    connection_id = connection.read_response()
    pool.release(connection)
    assert redis.Redis(host="127.0.0.1", port=6379).client_kill_filter(_id=connection_id) == 1
    assert_same_columns(direct.read_columns(rows, as_of=T0), before, direct.names)
    assert_same_columns(before, feast.read_columns(rows, as_of=T0), direct.names)
