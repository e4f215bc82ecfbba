"""The serving core with a real (tiny) XGBoost model: both request shapes, the online lookup,
unknown entities, hot swap, the inference log, and KServe's own data plane path."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from kfops.core.model import load_model, predict_proba
from kfops.core.requests import RawSchema
from kfops.datasets.flights import request_features
from kfops.datasets.flights.serving import RAW_FLIGHT
from kfops.serving.protocol import payloads
from kfops.serving.protocol.payloads import (
    LookupUnavailable,
    UnknownEntity,
)
from kfops.serving.runtime.engine import InferenceEngine
from kfops.serving.runtime.inference_log import InferenceLogWriter, read_inference_logs
from kfops.serving.runtime.loading import ModelSource, load_source
from kfops.serving.runtime.lookup import InMemoryLookup
from tests.support.example import example_config
from tests.support.serving_models import (
    ONLINE_FEATURES,
    build_tiny_model,
    synthetic_features,
)

RAW = RawSchema.of(RAW_FLIGHT)


def decode_v1(body, spec):
    return payloads.decode_v1(body, spec, RAW)


def decode_v2(body, spec):
    return payloads.decode_v2(body, spec, RAW)


FLIGHTS = [
    {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N1", "distance": 1400, "sched_dep": "2013-01-01T05:15"},
    {"carrier": "AA", "origin": "JFK", "dest": "MIA", "tailnum": "N2", "distance": 1089, "sched_dep": "2013-06-10T17:40"},
    {"carrier": "DL", "origin": "LGA", "dest": "ATL", "tailnum": None, "distance": 762, "sched_dep": "2013-12-24T21:05"},
]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return build_tiny_model(root / "a", seed=0), build_tiny_model(root / "b", seed=1, rounds=10)


def lookup_tables() -> InMemoryLookup:
    rows = synthetic_features(3, seed=5)
    weather = rows[["temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]].assign(
        origin=["EWR", "JFK", "LGA"])
    planes = rows[["plane_age", "seats", "engines", "manufacturer", "plane_type"]].iloc[:2].assign(tailnum=["N1", "N2"])
    carriers = rows[["carrier_delay_rate_7d", "carrier_flights_7d"]].assign(carrier=["UA", "AA", "DL"])
    origins = rows[["origin_delay_rate_7d", "origin_flights_7d"]].assign(origin=["EWR", "JFK", "LGA"])
    weather = weather.merge(origins, on="origin")
    return InMemoryLookup({"origin": weather, "tailnum": planes, "carrier": carriers})


def expected_for_flights(model_dir, flights) -> np.ndarray:
    derived = request_features(pd.DataFrame(flights).assign(flight=0))
    online = lookup_tables()(derived[["origin", "carrier", "tailnum"]].to_dict("records"))
    model = load_model(model_dir)
    return predict_proba(model, pd.concat([derived, online], axis=1))


def engine_for(model_dir, **kwargs) -> InferenceEngine:
    return InferenceEngine("flights", load_source(ModelSource(model_dir=model_dir)), builder=RAW_FLIGHT, **kwargs)


async def gather(engine, requests):
    return await asyncio.gather(*(engine.infer(r, f"r{i}") for i, r in enumerate(requests)), return_exceptions=True)


def test_feature_vectors_score_like_the_model_in_process(model_dirs):
    frame = synthetic_features(12, seed=9).drop(columns="label")
    requests = [decode_v1({"instances": [row]}, load_model(model_dirs[0]).spec)
                for row in frame.to_dict("records")]
    results = asyncio.run(gather(engine_for(model_dirs[0]), requests))
    got = np.concatenate([r.probabilities for r in results])
    np.testing.assert_allclose(got, predict_proba(load_model(model_dirs[0]), frame), rtol=0, atol=1e-7)


def test_raw_flights_get_request_features_and_online_features(model_dirs):
    spec = load_model(model_dirs[0]).spec
    engine = engine_for(model_dirs[0], lookup=lookup_tables())
    requests = [decode_v1({"instances": [f]}, spec) for f in FLIGHTS]
    results = asyncio.run(gather(engine, requests))
    got = np.concatenate([r.probabilities for r in results])
    np.testing.assert_allclose(got, expected_for_flights(model_dirs[0], FLIGHTS), rtol=0, atol=1e-7)


def test_an_entity_without_online_features_fails_only_its_request(model_dirs):
    spec = load_model(model_dirs[0]).spec
    engine = engine_for(model_dirs[0], lookup=lookup_tables())
    unknown = {**FLIGHTS[0], "carrier": "ZZ", "origin": "XYZ", "tailnum": "N404"}
    results = asyncio.run(gather(engine, [decode_v1({"instances": [f]}, spec) for f in (FLIGHTS[0], unknown)]))
    assert results[0].probabilities.shape == (1,)
    assert isinstance(results[1], UnknownEntity) and results[1].status == 422
    assert "origin='XYZ'" in results[1].message and "carrier='ZZ'" in results[1].message
    assert "older than their view's TTL" in results[1].message
    assert "the request's time is the one dataset.request_builder derives" in results[1].message  # sched_dep


def test_raw_flights_without_a_lookup_are_refused(model_dirs):
    spec = load_model(model_dirs[0]).spec
    with pytest.raises(LookupUnavailable, match="no online feature lookup"):
        asyncio.run(engine_for(model_dirs[0]).infer(decode_v1({"instances": [FLIGHTS[0]]}, spec), "r"))


def test_hot_swap_keeps_in_flight_requests_on_their_version(model_dirs):
    engine = engine_for(model_dirs[0])
    old = engine.current
    new = load_source(ModelSource(model_dir=model_dirs[1]))
    assert old.version != new.version
    rows = synthetic_features(2, seed=3).drop(columns="label").to_dict("records")

    async def scenario():
        before = asyncio.ensure_future(engine.infer(decode_v1({"instances": [rows[0]]}, old.spec), "a"))
        await asyncio.sleep(0)  # `before` has taken its snapshot and is waiting in the batch
        assert engine.swap(new) is old
        after = await engine.infer(decode_v1({"instances": [rows[1]]}, new.spec), "b")
        return await before, after

    before, after = asyncio.run(scenario())
    assert before.version == old.version and after.version == new.version
    expected = predict_proba(load_model(model_dirs[0]), pd.DataFrame(rows[:1]))
    np.testing.assert_allclose(before.probabilities, expected, atol=1e-7)


def test_predictions_are_logged_and_read_back(model_dirs, tmp_path):
    spec = load_model(model_dirs[0]).spec
    writer = InferenceLogWriter(tmp_path / "logs", flush_interval_s=3600).start()
    engine = engine_for(model_dirs[0], lookup=lookup_tables(), log_writer=writer)
    rows = synthetic_features(2, seed=4).drop(columns="label").to_dict("records")
    asyncio.run(gather(engine, [decode_v1({"instances": rows}, spec), decode_v1({"instances": FLIGHTS[:2]}, spec)]))
    engine.close()  # flushes
    logged = read_inference_logs(tmp_path / "logs")
    assert len(logged) == 4
    assert list(logged.columns[:6]) == ["timestamp", "request_id", "model_name", "model_version", "input_kind",
                                        "input"]
    assert set(logged["input_kind"]) == {"features", "raw"}
    assert set(logged["model_version"]) == {engine.current.version}
    flights = logged[logged["input_kind"] == "raw"].reset_index(drop=True)
    assert flights["origin"].tolist() == ["EWR", "JFK"] and flights["dep_hour"].tolist() == [5.0, 17.0]
    assert '"sched_dep":"2013-01-01T05:15:00"' in flights.loc[0, "input"]
    assert set(ONLINE_FEATURES) <= set(logged.columns)
    assert logged["probability"].between(0, 1).all() and set(logged["label"]) <= {0, 1}


def test_kserve_data_plane_path_answers_like_the_fast_path(model_dirs):
    """KfopsModel's preprocess/predict/postprocess, called the way KServe's routes call it."""
    from kserve.protocol.infer_type import InferInput, InferRequest

    from kfops.serving.kserve.predictor import KfopsModel
    from kfops.serving.protocol.payloads import v2_response

    model = KfopsModel("flights", ModelSource(model_dir=model_dirs[0]))
    assert model.load() and model.ready
    spec = model.inference.current.spec
    row = synthetic_features(1, seed=6).drop(columns="label").to_dict("records")[0]
    expected = predict_proba(load_model(model_dirs[0]), pd.DataFrame([row]))

    v1, _ = asyncio.run(model({"instances": [row]}, headers={}))
    assert v1["predictions"][0]["probability"] == pytest.approx(float(expected[0]), abs=1e-7)
    assert v1["model_version"] == model.version

    inputs = [InferInput(name=c, shape=[1], datatype="BYTES" if c in spec.categorical else "FP64", data=[row[c]])
              for c in spec.columns]
    response, _ = asyncio.run(model(InferRequest("flights", inputs, request_id="q1"), headers={}))
    rest, _ = response.to_rest()
    parsed = decode_v2({"inputs": [i.to_dict() for i in inputs]}, spec)
    fast = v2_response(expected, model.inference.current.threshold, "flights", model.version, "q1", parsed.outputs)
    assert rest["id"] == "q1" and rest["model_version"] == model.version
    assert rest["outputs"][1] == fast["outputs"][1]
    assert rest["outputs"][0]["data"] == pytest.approx(fast["outputs"][0]["data"], abs=1e-7)
    model.stop()


class RecordingReader:
    """Stands in for kfops.adapters.feast_store.OnlineFeatureReader: answers with the as_of it was asked for."""

    def __init__(self):
        self.calls = []

    def read(self, rows, as_of=None):
        self.calls.append((len(rows), as_of))
        per_row = as_of if isinstance(as_of, list) else [as_of] * len(rows)
        return pd.DataFrame({"origin_seen": [r["origin"] for r in rows], "as_of": per_row})


def test_feast_lookup_counts_ttls_back_from_each_request_event_time():
    import datetime as dt

    from kfops.serving.runtime.lookup import FeastLookup

    early, late = pd.Timestamp("2013-01-01T10:00Z"), pd.Timestamp("2013-01-02T10:00Z")
    rows = [{"origin": "EWR", "event_timestamp": late}, {"origin": "JFK", "event_timestamp": early},
            {"origin": "LGA", "event_timestamp": late}]
    reader = RecordingReader()
    got = FeastLookup(example_config(), "event", reader=reader)(rows)
    assert got["origin_seen"].tolist() == ["EWR", "JFK", "LGA"]  # back in request order
    assert got["as_of"].tolist() == [late.to_pydatetime(), early.to_pydatetime(), late.to_pydatetime()]
    assert [n for n, _ in reader.calls] == [3]  # one read for the batch, each row with its own as-of

    reader = RecordingReader()
    FeastLookup(example_config(), "now", reader=reader)(rows)
    assert len(reader.calls) == 1 and reader.calls[0][1].tzinfo == dt.UTC
    reader = RecordingReader()
    FeastLookup(example_config(), "none", reader=reader)(rows)
    assert reader.calls == [(3, None)]
