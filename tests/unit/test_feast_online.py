"""The direct online read's pieces that need no store: key encoding against Feast's, the choice of
reader, and a dead Redis raising (tests/integration/test_feast_online_direct.py
compares whole reads with Feast's on SQLite and Redis)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kfops.adapters import feast_store
from tests.conftest import free_port


@pytest.fixture(scope="module")
def feast():
    return feast_store.import_feast()


@pytest.mark.parametrize(("keys", "types", "row"), [
    (("origin",), ("STRING",), {"origin": "EWR"}),
    (("origin",), ("STRING",), {"origin": "Zürich ✈"}),
    (("user_id",), ("INT64",), {"user_id": -(2**40)}),
    (("user_id",), ("INT32",), {"user_id": 7}),
    (("blob",), ("BYTES",), {"blob": b"\x00\xff"}),
    (("region", "user_id"), ("STRING", "INT64"), {"user_id": 12, "region": "eu", "ignored": 1.5}),
    (("a", "b", "c"), ("STRING", "STRING", "INT64"), {"c": 3, "b": "y", "a": "x"}),
])
def test_key_encoding_matches_feast(feast, keys, types, row):
    import numpy as np
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    from kfops.adapters.feast_online import _BYTES, _INT32, _INT64, _STRING, KeyEncoder

    codes = {"STRING": _STRING, "INT64": _INT64, "INT32": _INT32, "BYTES": _BYTES}
    # Feast gets the join keys in the row's order, not sorted: it sorts them itself.
    unsorted = [k for k in row if k in keys]
    kinds = dict(zip(keys, types, strict=True))
    values = [python_values_to_proto_values([row[k]], getattr(ValueType, kinds[k]))[0] for k in unsorted]
    expected = serialize_entity_key(EntityKey(join_keys=unsorted, entity_values=values),
                                    entity_key_serialization_version=3)
    encoder = KeyEncoder(tuple(keys), tuple(codes[t] for t in types))
    assert encoder.encode(row) == expected
    ints = {k: np.int64(v) for k, v in row.items() if isinstance(v, int)}
    assert encoder.encode({**row, **ints}) == expected  # numpy integers encode as Python ints


def test_missing_and_unsupported_key_values():
    from kfops.adapters.feast_online import _INT64, _STRING, KeyEncoder, Unsupported

    encoder = KeyEncoder(("region", "user_id"), (_STRING, _INT64))
    assert encoder.encode({"region": None, "user_id": 1}) is None
    assert encoder.encode({"region": "eu", "user_id": float("nan")}) is None
    for odd in ("1", 1.0, True):
        with pytest.raises(Unsupported):
            encoder.encode({"region": "eu", "user_id": odd})
    for odd in (1.0, True, b"eu"):  # Feast gives '1.0' and 'True': not worth a fast path
        with pytest.raises(Unsupported):
            encoder.encode({"region": odd, "user_id": 1})


def test_an_integer_for_a_string_key_encodes_as_feast_converts_it():
    """A JSON client sends customer_id 237 for a string entity: Feast reads '237'; the direct
    reader used to hand such batches to Feast's slower lookup."""
    import numpy as np
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    from kfops.adapters.feast_online import _STRING, KeyEncoder

    encoder = KeyEncoder(("customer_id",), (_STRING,))
    for value in (237, np.int64(237), -5, 0):
        proto = python_values_to_proto_values([value], ValueType.STRING)[0]
        expected = serialize_entity_key(EntityKey(join_keys=["customer_id"], entity_values=[proto]),
                                        entity_key_serialization_version=3)
        assert encoder.encode({"customer_id": value}) == expected
        assert encoder.encode({"customer_id": str(value)}) == expected
    with pytest.raises(KeyError):
        encoder.encode({"region": "eu"})


def _view(feast, name, keys, ttl=None, join_key_map=None):
    import datetime as dt

    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    dtypes = {"user_id": (Int64, ValueType.INT64), "region": (String, ValueType.STRING),
              "score": (Float64, ValueType.DOUBLE)}
    entities = [Entity(name=k, join_keys=[k], value_type=dtypes[k][1]) for k in keys]
    view = FeatureView(name=name, entities=entities, ttl=ttl or dt.timedelta(0),
                       schema=[*(Field(name=k, dtype=dtypes[k][0]) for k in keys), Field(name="x", dtype=Float64)],
                       source=FileSource(path="/nowhere.parquet", timestamp_field="ts"))
    if join_key_map:
        view = view.with_join_key_map(join_key_map)
    return view


def test_layouts_sort_join_keys_and_refuse_what_they_cannot_read(feast):
    from kfops.adapters.feast_online import _INT64, _STRING, ViewLayout, view_layouts

    layouts = view_layouts([_view(feast, "v", ["user_id", "region"])], {"v": ["x"]}, versioned=False)
    assert layouts == [ViewLayout("v", ("region", "user_id"), (_STRING, _INT64), ("x",))]
    assert view_layouts([_view(feast, "v", ["user_id"])], {"v": ["x"]}, versioned=True) is None
    assert view_layouts([_view(feast, "v", ["user_id"], join_key_map={"user_id": "buyer"})], {"v": ["x"]},
                        versioned=False) is None
    assert view_layouts([_view(feast, "v", ["score"])], {"v": ["x"]}, versioned=False) is None  # a float key


@pytest.mark.parametrize(("store", "expected"), [
    ({"type": "redis", "redis_type": "redis", "connection_string": "127.0.0.1:1"}, "RedisReader"),
    ({"type": "redis", "redis_type": "redis_cluster", "connection_string": "127.0.0.1:1"}, None),
    ({"type": "sqlite", "path": "/tmp/online.db"}, "SqliteReader"),
    ({"type": "postgres"}, None),
    ({"type": "dynamodb"}, None),
])
def test_feast_stays_for_stores_read_otherwise(feast, store, expected):
    from pathlib import Path

    from kfops.adapters.feast_online import direct_reader

    config = SimpleNamespace(entity_key_serialization_version=3, project="p", repo_path=Path("/tmp"),
                             registry=SimpleNamespace(enable_online_feature_view_versioning=False),
                             online_store=SimpleNamespace(**store))
    reader = direct_reader(SimpleNamespace(config=config), [_view(feast, "v", ["user_id"])], {"v": ["x"]})
    assert (type(reader).__name__ if reader else None) == expected
    old_keys = SimpleNamespace(**{**vars(config), "entity_key_serialization_version": 2})
    assert direct_reader(SimpleNamespace(config=old_keys), [_view(feast, "v", ["user_id"])], {"v": ["x"]}) is None


def test_redis_client_takes_feast_options_and_a_dead_redis_raises(feast):
    import redis

    from kfops.adapters.feast_online import _INT64, RedisReader, ViewLayout, redis_client

    connection = feast_store.redis_with_timeouts(f"127.0.0.1:{free_port()},db=3,password=s3cret", 0.5)
    client = redis_client(connection)
    options = client.connection_pool.connection_kwargs
    assert (options["db"], options["password"], options["socket_timeout"]) == (3, "s3cret", 0.5)
    reader = RedisReader([ViewLayout("v", ("user_id",), (_INT64,), ("x",))], client, "p")
    with pytest.raises(redis.exceptions.ConnectionError):  # the engine answers 503
        reader.read([{"user_id": 1}])


def _resp(*items) -> bytes:
    parts = [b"*%d\r\n" % len(items)]
    for item in items:
        parts.append(b"$-1\r\n" if item is None else b"$%d\r\n%s\r\n" % (len(item), item))
    return b"".join(parts)


def test_hmget_replies_parse_with_binary_values_nulls_and_split_reads():
    from kfops.adapters.feast_online import _parse_array, _read_replies

    first = [b"\r\n$3\r\n*1\r\n", None, b"", b"\x00" * 70_000]
    second = [None, b"x"]
    data = _resp(*first) + _resp(*second) + b"*2\r\n_\r\n$1\r\ny\r\n"  # a RESP3 null too
    assert _parse_array(data, 0) == (first, len(_resp(*first)))
    for cut in range(len(data)):  # an incomplete reply is never taken for a whole one
        parsed = _parse_array(data[:cut], 0)
        assert parsed is None or parsed[1] <= cut

    class Socket:  # hands the bytes over in small pieces, as a slow network would
        def __init__(self, payload: bytes, size: int):
            self.chunks = [payload[i:i + size] for i in range(0, len(payload), size)]

        def recv(self, _):
            return self.chunks.pop(0) if self.chunks else b""

    for size in (1, 7, 4096, 1 << 20):
        assert _read_replies(Socket(data, size), 3) == [first, second, [None, b"y"]]


def test_hmget_reply_errors():
    import redis

    from kfops.adapters.feast_online import _parse_array, _read_replies

    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        _parse_array(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", 0)
    with pytest.raises(redis.exceptions.ResponseError, match="unexpected"):
        _parse_array(b":1\r\n", 0)

    class Closing:
        def __init__(self, payload):
            self.payload = [payload]

        def recv(self, _):
            return self.payload.pop() if self.payload else b""

    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        _read_replies(Closing(_resp(b"a")[:-3]), 1)
    with pytest.raises(redis.exceptions.ConnectionError, match="more than"):
        _read_replies(Closing(_resp(b"a") + _resp(b"b")), 1)


def test_feast_lookup_columns_reads_without_pandas_with_the_as_of_of_its_mode():
    import datetime as dt

    from kfops.config import KfopsConfig
    from kfops.serving.runtime.lookup import FeastLookup

    class Reader:
        def __init__(self):
            self.calls = []

        def read_columns(self, rows, as_of=None):
            self.calls.append(as_of)
            return {"temp": [1.0] * len(rows)}

    stamp = dt.datetime(2013, 1, 2, 10, tzinfo=dt.UTC)
    rows = [{"origin": "EWR", "event_timestamp": stamp}, {"origin": "JFK", "event_timestamp": stamp}]
    for mode, check in (("event", lambda a: a == [stamp, stamp]), ("now", lambda a: a.tzinfo == dt.UTC),
                        ("none", lambda a: a is None)):
        reader = Reader()
        assert FeastLookup(KfopsConfig(), mode, reader=reader).columns(rows) == {"temp": [1.0, 1.0]}
        assert len(reader.calls) == 1 and check(reader.calls[0]), (mode, reader.calls)
