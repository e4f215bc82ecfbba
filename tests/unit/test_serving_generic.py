"""Serving knows no dataset: a raw request for a dataset unlike flights (two entities, one
request-time input) goes through the same decoders and engine, with and without a request
builder plug-in, and importing the serving package loads nothing of the flights example."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfops.config import XGBoostConfig
from kfops.core.model import FeatureSpec, load_model, predict_proba, save_model
from kfops.core.requests import (
    DefaultRequest,
    DerivedRows,
    RawField,
    RawSchema,
    default_builder,
    load_request_builder,
)
from kfops.errors import ConfigError
from kfops.serving.protocol.payloads import (
    FEATURES,
    RAW,
    LookupUnavailable,
    RequestError,
    UnknownEntity,
    decode_v1,
    decode_v2,
)
from kfops.serving.runtime.engine import InferenceEngine, complete_raw
from kfops.serving.runtime.loading import ModelSource, load_source
from kfops.serving.runtime.lookup import InMemoryLookup

REPO = Path(__file__).resolve().parents[2]
STORES = ["S1", "S2", "S3"]
ITEMS = [10, 11, 12, 13]
COLUMNS = ["price", "price_band", "store_region", "store_footfall", "item_popularity"]
CATEGORICAL = ["store_region"]
VIEW_FEATURES = ["store_region", "store_footfall", "item_popularity"]


def price_band(price: float) -> int:
    return int(math.log10(price + 1))


@dataclass
class ShopRequest:
    """A shop's raw request: two entity keys and the price; the band is derived."""

    name: str = "a raw basket line"
    fields: tuple[RawField, ...] = field(default_factory=lambda: (
        RawField("store_id", "key", non_empty=True),
        RawField("item_id", "key"),
        RawField("price", "number", minimum=0),
    ))

    def derive(self, columns: dict[str, list], rows: int) -> DerivedRows:
        return DerivedRows(columns={"price_band": [price_band(p) for p in columns["price"]]})


SHOP = ShopRequest()


def store_table() -> pd.DataFrame:
    return pd.DataFrame({"store_id": STORES, "store_region": ["north", "south", "north"],
                         "store_footfall": [120.0, 800.0, 40.0]})


def item_table() -> pd.DataFrame:
    return pd.DataFrame({"item_id": ITEMS, "item_popularity": [0.1, 0.9, 0.5, 0.3]})


def lookup() -> InMemoryLookup:
    return InMemoryLookup({"store_id": store_table(), "item_id": item_table()})


def build_shop_model(folder: Path) -> Path:
    from kfops.training.xgb import train_xgboost

    rng = np.random.default_rng(0)
    rows = 800
    frame = pd.DataFrame({"store_id": rng.choice(STORES, rows), "item_id": rng.choice(ITEMS, rows),
                          "price": rng.uniform(0, 500, rows).round(2)})
    frame["price_band"] = [price_band(p) for p in frame["price"]]
    frame = frame.merge(store_table(), on="store_id").merge(item_table(), on="item_id")
    frame["label"] = ((frame["price"] / 500 + frame["item_popularity"] + rng.normal(0, 0.3, rows)) > 0.9).astype(int)
    spec = FeatureSpec.fit(frame, COLUMNS, CATEGORICAL)
    params = XGBoostConfig(n_estimators=10, max_depth=3, early_stopping_rounds=10, device="cpu", nthread=1)
    result = train_xgboost(frame.iloc[:600], frame.iloc[600:], spec, params, seed=0)
    return save_model(result.model, folder)


@pytest.fixture(scope="module")
def shop_model(tmp_path_factory) -> Path:
    return build_shop_model(tmp_path_factory.mktemp("shop") / "model")


LINES = [{"store_id": "S1", "item_id": 10, "price": 12.5}, {"store_id": "S2", "item_id": 13, "price": 250.0},
         {"store_id": "S3", "item_id": 11, "price": 0.0}]


def expected(model_dir: Path, lines: list[dict]) -> np.ndarray:
    frame = pd.DataFrame(lines)
    frame["price_band"] = [price_band(p) for p in frame["price"]]
    frame = frame.merge(store_table(), on="store_id", how="left").merge(item_table(), on="item_id", how="left")
    return predict_proba(load_model(model_dir), frame)


async def infer_all(engine: InferenceEngine, requests):
    return await asyncio.gather(*(engine.infer(r, f"r{i}") for i, r in enumerate(requests)), return_exceptions=True)


def test_a_plug_in_raw_request_is_completed_from_two_entities(shop_model):
    engine = InferenceEngine("shop", load_source(ModelSource(model_dir=shop_model)), lookup=lookup(), builder=SHOP)
    spec = engine.current.spec
    raw = engine.raw_source(spec)
    requests = [decode_v1({"instances": [line]}, spec, raw) for line in LINES]
    assert {r.kind for r in requests} == {RAW}
    results = asyncio.run(infer_all(engine, requests))
    engine.close()
    got = np.concatenate([r.probabilities for r in results])
    np.testing.assert_allclose(got, expected(shop_model, LINES), rtol=0, atol=1e-7)


def test_without_a_plug_in_the_raw_request_is_the_join_keys_plus_the_features_no_view_provides(shop_model):
    engine = InferenceEngine("shop", load_source(ModelSource(model_dir=shop_model)), lookup=lookup())
    spec = engine.current.spec
    schema = engine.raw_schema(spec)
    assert schema is not None and schema.required == {"store_id", "item_id", "price", "price_band"}
    assert schema.allowed == schema.required | {"event_timestamp"}
    described = engine.describe_raw(spec)
    assert described["name"] == "a raw request" and described["online_lookup"] is True
    assert [(f["name"], f["kind"], f["required"]) for f in described["fields"]] == [
        ("store_id", "key", True), ("item_id", "key", True), ("price", "number", True),
        ("price_band", "number", True), ("event_timestamp", "string", False)]
    lines = [line | {"price_band": price_band(line["price"])} for line in LINES]
    stamped = lines[0] | {"event_timestamp": "2024-05-01T10:00:00+02:00"}
    requests = [decode_v1({"instances": lines[1:]}, spec, engine.raw_source(spec)),
                decode_v1({"instances": [stamped]}, spec, engine.raw_source(spec))]
    assert requests[1].columns["event_timestamp"] == [dt.datetime(2024, 5, 1, 8, tzinfo=dt.UTC)]
    results = asyncio.run(infer_all(engine, requests))
    engine.close()
    got = np.concatenate([r.probabilities for r in results])
    np.testing.assert_allclose(got, expected(shop_model, [*LINES[1:], LINES[0]]), rtol=0, atol=1e-7)


def test_feature_vectors_still_decode_as_features(shop_model):
    spec = load_model(shop_model).spec
    row = {"price": 1.0, "price_band": 0, "store_region": "north", "store_footfall": 3.0, "item_popularity": 0.2}
    assert decode_v1({"instances": [row]}, spec, RawSchema.of(SHOP)).kind == FEATURES


def test_errors_name_the_datasets_own_fields(shop_model):
    spec = load_model(shop_model).spec
    raw = RawSchema.of(SHOP)
    with pytest.raises(RequestError) as caught:
        decode_v1({"instances": [{"store_id": "S1", "item_id": 10}]}, spec, raw)
    message = caught.value.message
    assert "missing field(s) 'price'" in message and "a raw basket line (store_id, item_id, price)" in message
    assert "flight" not in message and "sched_dep" not in message
    for line, problem in [({"price": -1}, "field 'price': must be >= 0"),
                          ({"store_id": ""}, "field 'store_id': must not be empty"),
                          ({"item_id": 1.5}, "field 'item_id': expected a string or an integer"),
                          ({"price": "cheap"}, "field 'price': expected a number, got string")]:
        with pytest.raises(RequestError, match=problem):
            decode_v1({"instances": [LINES[0] | line]}, spec, raw)
    with pytest.raises(RequestError, match="this server completes no raw requests"):
        decode_v1({"instances": [LINES[0]]}, spec, None)


def test_v2_raw_tensors_take_keys_as_bytes_or_integers(shop_model):
    spec = load_model(shop_model).spec
    raw = RawSchema.of(SHOP)
    body = {"inputs": [{"name": "store_id", "datatype": "BYTES", "shape": [2], "data": ["S1", "S2"]},
                       {"name": "item_id", "datatype": "INT64", "shape": [2], "data": [10, 11]},
                       {"name": "price", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}]}
    parsed = decode_v2(body, spec, raw)
    assert parsed.kind == RAW and parsed.columns["item_id"] == [10, 11]
    body["inputs"][2]["datatype"] = "BYTES"
    with pytest.raises(RequestError, match="input 'price': datatype BYTES where a numeric datatype"):
        decode_v2(body, spec, raw)
    body["inputs"][2]["datatype"] = "FP64"
    body["inputs"][0]["datatype"] = "FP32"
    with pytest.raises(RequestError, match="input 'store_id': datatype FP32 where BYTES or an integer"):
        decode_v2(body, spec, raw)


def test_an_unknown_entity_is_named_by_its_join_keys(shop_model):
    spec = load_model(shop_model).spec
    raw = RawSchema.of(SHOP)
    unknown = decode_v1({"instances": [{"store_id": "S9", "item_id": 99, "price": 5.0}]}, spec, raw)
    completed = complete_raw([decode_v1({"instances": LINES}, spec, raw), unknown], spec, raw, lookup())
    assert completed.problems[0] is None and isinstance(completed.problems[1], UnknownEntity)
    assert "store_id='S9', item_id=99" in completed.problems[1].message


def test_the_lookup_gets_each_rows_event_time_and_the_join_keys():
    seen = []

    def recording(rows):
        seen.extend(rows)
        return pd.DataFrame({"store_region": ["north"] * len(rows), "store_footfall": [1.0] * len(rows),
                             "item_popularity": [0.5] * len(rows)})

    spec = FeatureSpec(columns=COLUMNS, categorical={"store_region": ["north"]})
    builder = default_builder(["store_id", "item_id"], COLUMNS, VIEW_FEATURES, CATEGORICAL)
    raw = RawSchema.of(builder)
    line = LINES[0] | {"price_band": 1}
    before = dt.datetime.now(dt.UTC)
    requests = [decode_v1({"instances": [line | {"event_timestamp": "2024-01-02T03:04:05Z"}]}, spec, raw),
                decode_v1({"instances": [line]}, spec, raw)]
    completed = complete_raw(requests, spec, raw, recording)
    assert completed.rows == 2 and completed.columns["price"] == [12.5, 12.5]
    assert [set(r) for r in seen] == [{"store_id", "item_id", "event_timestamp"}] * 2
    assert seen[0]["event_timestamp"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert seen[1]["event_timestamp"] >= before  # no event time sent: now
    with pytest.raises(RequestError, match="field 'event_timestamp': 'soon' is not an ISO 8601"):
        decode_v1({"instances": [line | {"event_timestamp": "soon"}]}, spec, raw)


def test_the_raw_requests_event_time_is_named_by_the_config():
    """A `kfops init` project's orders say when they happened in `ordered_at`; its raw request took
    that time only as `event_timestamp`, so an order sent as the table holds it was refused, and one
    renamed by hand was easy to get wrong. dataset.request_time_field names the field."""
    seen = []

    def recording(rows):
        seen.extend(rows)
        return pd.DataFrame({"store_region": ["north"] * len(rows), "store_footfall": [1.0] * len(rows),
                             "item_popularity": [0.5] * len(rows)})

    recording.join_keys = ["store_id", "item_id"]
    recording.feature_names = VIEW_FEATURES
    spec = FeatureSpec(columns=COLUMNS, categorical={"store_region": ["north"]})
    from kfops.serving.runtime.engine import raw_schema_for

    raw = raw_schema_for(spec, DefaultRequest("ordered_at"), recording)
    assert raw.allowed - raw.required == {"ordered_at"}
    line = LINES[0] | {"price_band": 1}
    parsed = decode_v1({"instances": [line | {"ordered_at": "2024-01-02T03:04:05+01:00"}]}, spec, raw)
    complete_raw([parsed], spec, raw, recording)
    assert seen[0]["event_timestamp"] == dt.datetime(2024, 1, 2, 2, 4, 5, tzinfo=dt.UTC)
    unknown = complete_raw([parsed], spec, raw, lambda rows: pd.DataFrame(
        dict.fromkeys(VIEW_FEATURES, [None] * len(rows)))).problems[0]
    assert "(a request without ordered_at is for now: send one to ask about a past moment)" in unknown.message
    with pytest.raises(RequestError, match=r"unknown field.*'event_timestamp'.*optional ordered_at"):
        decode_v1({"instances": [line | {"event_timestamp": "2024-01-02T03:04:05Z"}]}, spec, raw)
    with pytest.raises(ConfigError, match=r"dataset\.request_time_field 'price' is also a key or a feature"):
        default_builder(["store_id", "item_id"], COLUMNS, VIEW_FEATURES, CATEGORICAL, event_field="price")


def test_a_raw_request_without_a_lookup_is_refused_by_name(shop_model):
    engine = InferenceEngine("shop", load_source(ModelSource(model_dir=shop_model)), builder=SHOP)
    spec = engine.current.spec
    parsed = decode_v1({"instances": [LINES[0]]}, spec, engine.raw_source(spec))
    with pytest.raises(LookupUnavailable, match="cannot complete a raw basket line"):
        asyncio.run(engine.infer(parsed, "r"))
    assert engine.describe_raw(spec)["online_lookup"] is False
    no_raw = InferenceEngine("shop", engine.current)  # neither a builder nor a lookup: feature vectors only
    assert no_raw.raw_schema(spec) is None and no_raw.describe_raw(spec) is None
    no_raw.close()
    engine.close()


def test_request_builder_specs_are_resolved_or_refused_with_the_reason():
    assert load_request_builder(None) == DefaultRequest("event_timestamp")
    assert load_request_builder(None, time_field="ordered_at") == DefaultRequest("ordered_at")
    assert load_request_builder(f"{__name__}:SHOP") is SHOP
    assert isinstance(load_request_builder(f"{__name__}:ShopRequest"), ShopRequest)  # a class is instantiated
    with pytest.raises(ConfigError, match="must look like module:attr"):
        load_request_builder("no_colon")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_x'"):
        load_request_builder("no_such_module_x:B")
    with pytest.raises(ConfigError, match="is not a request builder"):
        load_request_builder(f"{__name__}:COLUMNS")


def test_the_flights_plug_in_derives_what_training_derives():
    from kfops.datasets.flights import request_features
    from kfops.datasets.flights.serving import RAW_FLIGHT, local_departure

    rows = [{"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": None, "distance": 1400, "flight": 0,
             "sched_dep": "2013-01-01T05:15"},
            {"carrier": "AA", "origin": "JFK", "dest": "MIA", "tailnum": "N2", "distance": 1089, "flight": 7,
             "sched_dep": "2013-07-03T23:59"},
            {"carrier": "DL", "origin": "LGA", "dest": "ATL", "tailnum": "N3", "distance": 762, "flight": 9,
             "sched_dep": "2013-12-24T21:05"}]
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    columns["sched_dep"] = [local_departure(t) for t in columns["sched_dep"]]
    derived = RAW_FLIGHT.derive(columns, len(rows))
    reference = request_features(pd.DataFrame(rows))
    merged = {**columns, **derived.columns}
    for name in ("origin", "dest", "carrier", "tailnum", "flight", "distance", "dep_hour", "day_of_week", "month",
                 "days_to_holiday"):
        assert list(merged[name]) == reference[name].tolist(), name
    assert derived.event_times == [t.to_pydatetime() for t in reference["event_timestamp"]]


def test_the_flights_plug_in_cached_derivation_matches_training_on_every_day_of_a_year():
    """The per-departure cache (parse and derived features) gives training's values, cold and warm,
    across holidays and both daylight-saving changes; a bad departure fails on every call."""
    from kfops.datasets.flights import request_features
    from kfops.datasets.flights.serving import RAW_FLIGHT, cached_local_departure, local_departure

    day = dt.date(2013, 1, 1)
    texts = [f"{day + dt.timedelta(days=i)}T{(5 + 7 * i) % 24:02d}:{(13 * i) % 60:02d}" for i in range(365)]
    rows = [{"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N1", "distance": 1400, "flight": 0,
             "sched_dep": text} for text in texts]
    reference = request_features(pd.DataFrame(rows))
    for _ in range(2):  # the second pass reads the caches
        columns = {k: [r[k] for r in rows] for k in rows[0]}
        columns["sched_dep"] = [cached_local_departure(t) for t in texts]
        assert columns["sched_dep"] == [local_departure(t) for t in texts]
        derived = RAW_FLIGHT.derive(columns, len(rows))
        for name in ("dep_hour", "day_of_week", "month", "days_to_holiday"):
            assert derived.columns[name] == reference[name].tolist(), name
        assert derived.event_times == [t.to_pydatetime() for t in reference["event_timestamp"]]
    for _ in range(2):
        with pytest.raises(ValueError, match="does not exist in New York local time"):
            cached_local_departure("2013-03-10T02:30")


def test_importing_serving_loads_no_flights_module(shop_model, tmp_path):
    """In a fresh interpreter (other tests' imports cannot hide it): the serving package, its
    server, transformer and sidecars, and a non-flights raw request through the engine."""
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(REPO)!r})
        import kfops.serving
        import kfops.serving.kserve.server, kfops.serving.kserve.transformer, kfops.serving.kserve.front
        import kfops.serving.sidecars.log_sink, kfops.serving.sidecars.split
        import kfops.serving.local.process, kfops.serving.local.batch_scoring
        from kfops.serving.protocol.payloads import decode_v1
        from kfops.serving.runtime.engine import InferenceEngine
        from kfops.serving.runtime.loading import ModelSource, load_source
        from tests.unit.test_serving_generic import LINES, lookup
        engine = InferenceEngine("shop", load_source(ModelSource(model_dir={str(shop_model)!r})), lookup=lookup())
        spec = engine.current.spec
        line = dict(LINES[0], price_band=1)
        result = asyncio.run(engine.infer(decode_v1({{"instances": [line]}}, spec, engine.raw_source(spec)), "r"))
        engine.close()
        print(json.dumps({{"rows": len(result.probabilities),
                          "flights": sorted(m for m in sys.modules if m.startswith("kfops.datasets"))}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"rows": 1, "flights": []}


def test_an_unreadable_feature_registry_fails_raw_requests_with_503_and_spares_feature_vectors(shop_model):
    from kfops.serving.protocol.payloads import DependencyUnavailable

    class DownLookup:
        ready = True

        @property
        def join_keys(self):
            raise ConnectionError("registry at s3://bucket/registry.db unreachable")

        def __call__(self, rows):
            raise AssertionError("not reached")

    engine = InferenceEngine("shop", load_source(ModelSource(model_dir=shop_model)), lookup=DownLookup())
    spec = engine.current.spec
    row = {"price": 1.0, "price_band": 0, "store_region": "north", "store_footfall": 3.0, "item_popularity": 0.2}
    assert decode_v1({"instances": [row]}, spec, engine.raw_source(spec)).kind == FEATURES
    with pytest.raises(DependencyUnavailable, match=r"views could not be read .*ConnectionError") as caught:
        decode_v1({"instances": [LINES[0]]}, spec, engine.raw_source(spec))
    assert caught.value.status == 503
    assert engine.describe_raw(spec) is None
    engine.close()


def test_the_feast_lookup_reports_the_registrys_join_keys_and_features(shop_model):
    from kfops.config import KfopsConfig
    from kfops.serving.runtime.lookup import FeastLookup

    class Reader:  # what OnlineFeatureReader resolves from the registry
        join_keys = ("store_id", "item_id")
        names = VIEW_FEATURES

    cold = FeastLookup(KfopsConfig())
    assert not cold.ready
    engine = InferenceEngine("shop", load_source(ModelSource(model_dir=shop_model)), lookup=cold)
    assert engine.describe_raw(engine.current.spec) is None  # the registry is not read for metadata
    engine.close()

    warm = FeastLookup(KfopsConfig(), reader=Reader())
    assert warm.ready and warm.join_keys == ["store_id", "item_id"] and warm.feature_names == VIEW_FEATURES
    engine = InferenceEngine("shop", load_source(ModelSource(model_dir=shop_model)), lookup=warm)
    schema = engine.raw_schema(engine.current.spec)
    assert schema.required == {"store_id", "item_id", "price", "price_band"}
    engine.close()
