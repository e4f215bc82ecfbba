"""The real model server as a background process on 127.0.0.1: both protocols and request
shapes, health, /metrics, batching, hot swap under load, inference logs, bad input (including a
5,000-request fuzz run), and start-up failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kfops.config import load_config
from kfops.core.model import load_model, predict_proba
from kfops.datasets.flights import request_features
from kfops.errors import ConfigError, KfopsError, ServingError
from kfops.serving.local.process import control_headers, reload_server, server_status, start_server, stop_server
from kfops.serving.runtime.inference_log import read_inference_logs
from tests.conftest import free_port
from tests.support.serving_models import build_tiny_model, synthetic_features, tally_fuzzed_response

pytestmark = pytest.mark.integration

NAME = "flights"
POLL_LIMIT_S = 60  # upper bound on waiting for the background log writer; not a timing assertion
FLIGHT = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N1", "distance": 1400,
          "sched_dep": "2013-01-01T05:15", "flight": 1545}


def lookup_frames() -> dict[str, pd.DataFrame]:
    rows = synthetic_features(3, seed=5)
    weather = rows[["temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib",
                    "origin_delay_rate_7d", "origin_flights_7d"]].assign(origin=["EWR", "JFK", "LGA"])
    planes = rows[["plane_age", "seats", "engines", "manufacturer", "plane_type"]].iloc[:2].assign(tailnum=["N1", "N2"])
    carriers = rows[["carrier_delay_rate_7d", "carrier_flights_7d"]].assign(carrier=["UA", "AA", "DL"])
    return {"origin": weather, "tailnum": planes, "carrier": carriers}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    # Under data_dir: the default reload root, the only place a model_dir reload may load from.
    model_a = build_tiny_model(root / "data" / "model_a", seed=0)
    model_b = build_tiny_model(root / "data" / "model_b", seed=1, rounds=10)
    lookups = root / "lookups"
    lookups.mkdir()
    for key, frame in lookup_frames().items():
        frame.to_parquet(lookups / f"{key}.parquet", index=False)
    cfg = load_config(None, [f"data_dir={root / 'data'}", f"serving.http_port={free_port()}",
                             "serving.max_payload_bytes=200000", "serving.startup_timeout_s=120"], environ={})
    status = start_server(cfg, model_dir=model_a, name=NAME, online_lookup=f"parquet:{lookups}",
                          extra_args=["--inference-log-flush-s", "0.5"])
    http = httpx.Client(base_url=status["url"], timeout=30, trust_env=False)
    try:
        yield {"cfg": cfg, "status": status, "http": http, "model_a": model_a, "model_b": model_b}
    finally:
        http.close()
        stop_server(cfg, NAME)


def feature_rows(n: int, seed: int) -> list[dict]:
    return synthetic_features(n, seed).drop(columns="label").to_dict("records")


def v2_body(rows: list[dict], spec) -> dict:
    return {"inputs": [
        {"name": c, "datatype": "BYTES" if c in spec.categorical else "FP64", "shape": [len(rows)],
         "data": [r[c] for r in rows]} for c in spec.columns]}


def flight_v2(flight: dict) -> dict:
    kinds = {"distance": "FP64", "flight": "INT64"}
    return {"inputs": [{"name": k, "datatype": kinds.get(k, "BYTES"), "shape": [1], "data": [v]}
                       for k, v in flight.items()]}


def expected_flight_probability(model_dir, flight: dict) -> float:
    derived = request_features(pd.DataFrame([flight]))
    frames = lookup_frames()
    row = derived.iloc[0]
    online = {}
    for key, table in frames.items():
        match = table[table[key] == row[key]].drop(columns=key)
        online.update(match.iloc[0].to_dict() if len(match) else dict.fromkeys(match.columns))
    features = pd.concat([derived, pd.DataFrame([online])], axis=1)
    return float(predict_proba(load_model(model_dir), features)[0])


def served_version(server) -> str:
    return server["http"].get(f"/v2/models/{NAME}").json()["versions"][0]


def assert_alive(server) -> None:
    response = server["http"].get(f"/v2/models/{NAME}/ready")
    assert response.status_code == 200 and response.json() == {"name": NAME, "ready": True}


# --- health, protocols, shapes -------------------------------------------------------------------


def test_health_readiness_and_metadata(server):
    http = server["http"]
    assert http.get("/").json() == {"status": "alive"}
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get(f"/v1/models/{NAME}").json() == {"name": NAME, "ready": True}
    assert_alive(server)
    meta = http.get(f"/v2/models/{NAME}").json()
    assert meta["versions"][0].startswith("local-") and meta["platform"] == "kfops-xgboost"
    assert [i["name"] for i in meta["inputs"]] == load_model(server["model_a"]).spec.columns
    raw = meta["parameters"]["raw_request"]  # what a raw request holds: dataset.request_builder's fields
    assert raw["name"] == "a raw flight" and raw["online_lookup"] is True
    assert {f["name"] for f in raw["fields"] if f["required"]} == {"carrier", "origin", "dest", "distance", "sched_dep"}
    status = server_status(server["cfg"], NAME)
    assert status["healthy"] and status["pid"] == server["status"]["pid"]
    assert status["url"].startswith("http://127.0.0.1:") and status["model_version"] == meta["versions"][0]


def test_v1_and_v2_with_feature_vectors_match_in_process_predictions(server):
    model = load_model(server["model_a"])
    rows = feature_rows(3, seed=30)
    expected = predict_proba(model, pd.DataFrame(rows))
    v1 = server["http"].post(f"/v1/models/{NAME}:predict", json={"instances": rows})
    assert v1.status_code == 200
    assert [p["probability"] for p in v1.json()["predictions"]] == pytest.approx(expected.tolist(), abs=1e-7)
    v2 = server["http"].post(f"/v2/models/{NAME}/infer", json=v2_body(rows, model.spec) | {"id": "req-1"})
    assert v2.status_code == 200
    body = v2.json()
    assert body["id"] == "req-1" and body["model_name"] == NAME
    assert body["outputs"][0]["name"] == "probability"
    assert body["outputs"][0]["data"] == pytest.approx(expected.tolist(), abs=1e-7)
    assert body["outputs"][1]["data"] == [int(p >= model.threshold) for p in body["outputs"][0]["data"]]


def test_v1_and_v2_with_raw_flights_use_request_and_online_features(server):
    expected = expected_flight_probability(server["model_a"], FLIGHT)
    v1 = server["http"].post(f"/v1/models/{NAME}:predict", json={"instances": [FLIGHT]})
    assert v1.status_code == 200, v1.text
    assert v1.json()["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-7)
    v2 = server["http"].post(f"/v2/models/{NAME}/infer", json=flight_v2(FLIGHT))
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"][0] == pytest.approx(expected, abs=1e-7)


def test_the_versioned_v2_route_serves_the_current_version_only(server):
    version = served_version(server)
    ok = server["http"].post(f"/v2/models/{NAME}/versions/{version}/infer", json=flight_v2(FLIGHT))
    assert ok.status_code == 200
    other = server["http"].post(f"/v2/models/{NAME}/versions/nope/infer", json=flight_v2(FLIGHT))
    assert other.status_code == 404 and "not served here" in other.json()["error"]


def test_a_gzipped_request_is_answered_like_the_plain_one(server):
    """Clients that compress large batches (Content-Encoding: gzip) got 400 'not JSON'."""
    import gzip

    import orjson

    rows = feature_rows(50, seed=31)
    plain = server["http"].post(f"/v1/models/{NAME}:predict", json={"instances": rows})
    packed = server["http"].post(f"/v1/models/{NAME}:predict", content=gzip.compress(orjson.dumps({"instances": rows})),
                                 headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert plain.status_code == packed.status_code == 200, packed.text
    assert packed.json() == plain.json()
    refused = server["http"].post(f"/v1/models/{NAME}:predict", content=b"\x1f\x8b not gzip",
                                  headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert refused.status_code == 400 and "is not valid gzip" in refused.json()["error"]
    assert_alive(server)


# --- bad input ---------------------------------------------------------------------------------------

BIG = b'{"instances": [' + b'{"a": 1},' * 30000 + b'{"a": 1}]}'


def _chunks(data: bytes):
    for i in range(0, len(data), 65536):
        yield data[i:i + 65536]


BAD_REQUESTS = [
    ("malformed JSON", f"/v1/models/{NAME}:predict", b'{"instances": [', 400, "not valid JSON"),
    ("NaN", f"/v1/models/{NAME}:predict", b'{"instances": [{"distance": NaN}]}', 400, "NaN"),
    ("missing field", f"/v1/models/{NAME}:predict",
     json.dumps({"instances": [{k: v for k, v in FLIGHT.items() if k != "origin"}]}).encode(), 400,
     "missing field(s) 'origin'"),
    ("unknown field", f"/v1/models/{NAME}:predict", json.dumps({"instances": [FLIGHT | {"dep_delay": 5}]}).encode(),
     400, "unknown field(s) 'dep_delay'"),
    ("wrong type", f"/v1/models/{NAME}:predict", json.dumps({"instances": [FLIGHT | {"distance": "far"}]}).encode(),
     400, "field 'distance': expected a number"),
    ("not an object", f"/v2/models/{NAME}/infer", b"[1, 2, 3]", 400, "must be a JSON object"),
    ("empty body", f"/v2/models/{NAME}/infer", b"", 400, "not valid JSON"),
    ("unknown model v1", "/v1/models/nope:predict", json.dumps({"instances": [FLIGHT]}).encode(), 404, "nope"),
    ("unknown model v2", "/v2/models/nope/infer", json.dumps(flight_v2(FLIGHT)).encode(), 404, "nope"),
    ("no online features", f"/v1/models/{NAME}:predict",
     json.dumps({"instances": [FLIGHT | {"origin": "XYZ", "carrier": "ZZ", "tailnum": "N404"}]}).encode(), 422,
     "no features for carrier='ZZ', origin='XYZ', tailnum='N404'"),  # named by the lookup's join keys
    ("oversized", f"/v1/models/{NAME}:predict", BIG, 413, "exceeds the limit of 200000 bytes"),
]


@pytest.mark.parametrize(("what", "path", "body", "status", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_naming_the_problem_and_the_server_stays_up(server, what, path, body, status, message):
    response = server["http"].post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert_alive(server)


def test_requests_to_unknown_models_neither_flood_nor_forge_the_log(server):
    """Each such request used to log KServe's 20-line traceback, and a name holding an encoded
    newline wrote a line of the attacker's choosing into the log."""
    log_file = Path(server["status"]["log_file"])
    before = log_file.read_text().count("\n")
    forged = "x%0A2026-12-06 23:59:59,000 1 kfops.serving.kserve.predictor INFO swapped version 1 -> 666"
    for i in range(30):
        answer = server["http"].post(f"/v1/models/nope{i}:predict", json={"instances": [FLIGHT]})
        assert answer.status_code == 404 and f"'nope{i}' is not served here (served: {NAME})" in answer.json()["error"]
    assert server["http"].get("/v2/models/nope").status_code == 404
    answer = server["http"].post(f"/v1/models/{forged}:predict", json={"instances": [FLIGHT]})
    assert answer.status_code == 404 and "\n" not in answer.json()["error"]
    time.sleep(0.5)
    logged = log_file.read_text()
    assert logged.count("\n") - before < 10 and "-> 666" not in logged
    assert_alive(server)


def test_head_answers_like_get_without_a_body(server):
    for path in ("/", "/v2/health/live", "/v2/health/ready", f"/v2/models/{NAME}/ready", "/metrics"):
        get, head = server["http"].get(path), server["http"].head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
    assert server["http"].head("/v2/models/nope").status_code == 404


def test_an_oversized_body_without_content_length_is_cut_off(server):
    response = server["http"].post(f"/v1/models/{NAME}:predict", content=_chunks(BIG))
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]
    assert_alive(server)


# --- metrics and batching ------------------------------------------------------------------------


def metric(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
        if not labels and line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in /metrics")


def test_metrics_cover_requests_latency_batches_errors_and_version(server):
    http = server["http"]
    http.post(f"/v1/models/{NAME}:predict", json={"instances": [FLIGHT]})
    http.post(f"/v1/models/{NAME}:predict", content=b"{")
    text = http.get("/metrics").text
    assert metric(text, "kfops_serving_requests_total", model=NAME, protocol="v1", code="200") >= 1
    assert metric(text, "kfops_serving_requests_total", model=NAME, protocol="v1", code="400") >= 1
    assert metric(text, "kfops_serving_errors_total", model=NAME, reason="malformed_json") >= 1
    assert metric(text, "kfops_serving_request_seconds_count", model=NAME, protocol="v1") >= 2
    assert metric(text, "kfops_serving_request_seconds_bucket", model=NAME, protocol="v1", le="+Inf") >= 2
    assert metric(text, "kfops_serving_batch_rows_count", model=NAME, stage="lookup") >= 1
    assert metric(text, "kfops_serving_model_info", model=NAME, version=served_version(server)) == 1.0


def test_concurrent_single_row_requests_share_model_calls(server):
    rows = feature_rows(64, seed=40)
    before = server["http"].get("/metrics").text
    url = server["status"]["url"]

    async def fire():
        async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False,
                                     limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(client.post(f"/v1/models/{NAME}:predict", json={"instances": [r]})
                                          for r in rows))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 64
    expected = predict_proba(load_model(server["model_a"]), pd.DataFrame(rows))
    got = [r.json()["predictions"][0]["probability"] for r in responses]
    assert got == pytest.approx(expected.tolist(), abs=1e-7)  # each answer went back to its own request
    after = server["http"].get("/metrics").text
    rows_scored = (metric(after, "kfops_serving_batch_rows_sum", model=NAME, stage="model")
                   - metric(before, "kfops_serving_batch_rows_sum", model=NAME, stage="model"))
    calls = (metric(after, "kfops_serving_batch_rows_count", model=NAME, stage="model")
             - metric(before, "kfops_serving_batch_rows_count", model=NAME, stage="model"))
    assert rows_scored == 64 and calls < 64


# --- hot swap ------------------------------------------------------------------------------------


def test_hot_swap_under_load_drops_no_request(server):
    http, pid = server["http"], server["status"]["pid"]
    old = served_version(server)
    rows = feature_rows(1, seed=50)
    seen: list[tuple[int, str | None]] = []
    swapped = threading.Event()
    after_swap = 0

    def client_loop():
        nonlocal after_swap
        with httpx.Client(base_url=server["status"]["url"], timeout=30, trust_env=False) as client:
            while after_swap < 50:
                response = client.post(f"/v1/models/{NAME}:predict", json={"instances": rows})
                seen.append((response.status_code, response.json().get("model_version")))
                if swapped.is_set():
                    after_swap += 1

    loop = threading.Thread(target=client_loop)
    loop.start()
    while len(seen) < 20:
        time.sleep(0.01)
    reload = http.post(f"/v1/models/{NAME}/reload", json={"model_dir": str(server["model_b"])},
                       headers=control_headers(server["cfg"], NAME))
    swapped.set()
    loop.join(timeout=120)
    assert reload.status_code == 200, reload.text
    new = reload.json()["version"]
    assert reload.json()["previous_version"] == old and new != old
    assert {status for status, _ in seen} == {200}
    versions = [v for _, v in seen]
    first_new = versions.index(new)
    assert set(versions[:first_new]) == {old} and set(versions[first_new:]) == {new}
    # start_server on a running name hot-swaps too: same process, model A back.
    status = start_server(server["cfg"], model_dir=server["model_a"], name=NAME)
    assert status["pid"] == pid and status["model_version"] == old


def test_a_bad_reload_keeps_serving_the_old_version(server):
    version = served_version(server)
    missing = server["cfg"].data_dir / "definitely" / "not" / "here"
    response = server["http"].post(f"/v1/models/{NAME}/reload", json={"model_dir": str(missing)},
                                   headers=control_headers(server["cfg"], NAME))
    assert response.status_code == 400
    assert f"still serving version {version}" in response.json()["error"]
    assert served_version(server) == version
    assert server["http"].post(f"/v1/models/{NAME}:predict", json={"instances": [FLIGHT]}).status_code == 200


def test_sighup_reloads_from_the_current_source(server):
    import os
    import signal

    def swapped() -> float:
        text = server["http"].get("/metrics").text
        try:
            return metric(text, "kfops_serving_reloads_total", model=NAME, outcome="swapped")
        except AssertionError:
            return 0.0

    before, version = swapped(), served_version(server)
    os.kill(server["status"]["pid"], signal.SIGHUP)
    deadline = time.monotonic() + POLL_LIMIT_S
    while swapped() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert swapped() == before + 1
    assert served_version(server) == version  # same folder, same content, same version
    assert_alive(server)


# --- inference log -------------------------------------------------------------------------------


def test_predictions_reach_the_inference_log(server):
    marker = f"log-check-{time.time_ns()}"
    response = server["http"].post(f"/v1/models/{NAME}:predict", json={"instances": [FLIGHT]},
                                   headers={"x-request-id": marker})
    assert response.status_code == 200
    deadline = time.monotonic() + POLL_LIMIT_S
    logged = pd.DataFrame()
    while time.monotonic() < deadline:
        logged = read_inference_logs(server["cfg"].inference_log_dir)
        if marker in set(logged.get("request_id", [])):
            break
        time.sleep(0.2)
    row = logged[logged["request_id"] == marker]
    assert len(row) == 1, "the request never reached the inference log"
    row = row.iloc[0]
    assert row["input_kind"] == "raw" and row["model_version"] == served_version(server)
    assert json.loads(row["input"])["origin"] == "EWR" and row["dep_hour"] == 5.0
    assert row["probability"] == pytest.approx(response.json()["predictions"][0]["probability"])
    assert {"temp", "plane_age", "carrier_delay_rate_7d"} <= set(logged.columns)


# --- fuzz ----------------------------------------------------------------------------------------

FUZZ_REQUESTS = 5000
FUZZ_PER_EXAMPLE = 10  # requests per hypothesis example: its per-example overhead is the cost
# Flat strategies: hypothesis spends ~1 ms per draw, recursive JSON ~5 ms; 5,000 requests must stay quick.
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
VALUES = SCALARS | st.lists(SCALARS, max_size=3)
FIELDS = [*FLIGHT, "temp", "origin", "instances", "inputs", "outputs", "id", "shape", "datatype", "data", "name"]
PATHS = st.sampled_from([f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"] * 4
                        + ["/v1/models/other:predict", f"/v2/models/{NAME}/versions/x/infer"])


def _near_valid(args) -> bytes:
    protocol, dropped, replaced, datatype, shape, copies = args
    row = dict(FLIGHT)
    for name in dropped:
        row.pop(name, None)
    row.update(replaced)
    if protocol == "v1":
        body = {"instances": [row] * copies}
    else:
        body = {"inputs": [{"name": k, "datatype": datatype if k in replaced else "BYTES", "shape": shape,
                            "data": v if isinstance(v, list) else [v]} for k, v in row.items()]}
    return json.dumps(body).encode()  # json.dumps writes NaN/Infinity for non-finite floats


def bad_requests():
    """Bodies wrong in many ways: raw bytes, arbitrary JSON, and near-valid requests with fields
    dropped, added or replaced (NaN and Infinity included), to either route."""
    near_valid = st.tuples(
        st.sampled_from(["v1", "v2"]), st.lists(st.sampled_from(FIELDS), max_size=2),
        st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3),
        st.sampled_from(["BYTES", "FP64", "INT64", "BOOL", "FP32", "X"]),
        st.sampled_from([[1], [2], [1, 1], [0], [-1], [1, 2]]), st.integers(1, 3),
    ).map(_near_valid)
    any_json = (VALUES | st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3)).map(
        lambda v: json.dumps(v).encode())
    return st.tuples(PATHS, st.binary(max_size=200) | any_json | near_valid)


def test_fuzz_thousands_of_bad_requests_never_get_a_5xx(server):
    import http.client
    from urllib.parse import urlsplit

    statuses: dict[int, int] = {}
    address = urlsplit(server["status"]["url"])
    # One persistent keep-alive connection; the stdlib client costs the least CPU per request.
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)

    @settings(max_examples=FUZZ_REQUESTS // FUZZ_PER_EXAMPLE, phases=[Phase.generate], deadline=None,
              database=None, suppress_health_check=list(HealthCheck))
    @given(requests=st.lists(bad_requests(), min_size=FUZZ_PER_EXAMPLE, max_size=FUZZ_PER_EXAMPLE))
    def send(requests):
        for path, body in requests:
            connection.request("POST", path, body=body, headers={"content-type": "application/json"})
            tally_fuzzed_response(connection.getresponse(), statuses, (path, body[:300]))

    try:
        send()
    finally:
        connection.close()
    assert sum(statuses.values()) >= FUZZ_REQUESTS
    assert sum(n for code, n in statuses.items() if 400 <= code < 500) > FUZZ_REQUESTS * 0.8
    assert_alive(server)
    assert server["http"].post(f"/v1/models/{NAME}:predict", json={"instances": [FLIGHT]}).status_code == 200


# --- start-up failure --------------------------------------------------------------------------------


def test_a_server_that_cannot_start_raises_with_its_log_tail(server, tmp_path):
    cfg = load_config(None, [f"data_dir={tmp_path}", f"serving.http_port={free_port()}"], environ={})
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ServingError) as caught:
        start_server(cfg, model_dir=tmp_path / "empty_model", name="broken", online_lookup="none")
    message = str(caught.value)
    assert "exited with code 2" in message and "kfops_model.json is missing" in message
    assert server_status(cfg, "broken")["running"] is False


def test_moving_a_server_to_a_taken_or_impossible_port_leaves_it_serving(server):
    """A restart on another port used to stop the healthy server first, then find the port taken."""
    import socket

    cfg, before = server["cfg"], server_status(server["cfg"], NAME)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServingError, match=rf"127.0.0.1:{port} is already in use.*is untouched"):
            start_server(cfg, model_dir=server["model_a"], name=NAME, port=port, online_lookup="none")
    for bad in (0, -1, 70000):
        with pytest.raises(ConfigError, match=f"port {bad} is not a TCP port"):
            start_server(cfg, model_dir=server["model_a"], name=NAME, port=bad, online_lookup="none")
    after = server_status(cfg, NAME)
    assert after["running"] and after["healthy"] and after["pid"] == before["pid"]
    assert_alive(server)


def test_stop_ends_the_process_and_flushes_the_inference_log(tmp_path, server):
    from kfops.serving.local.client import smoke_test
    from kfops.serving.runtime.inference_log import DEPLOY_CHECK_ID_PREFIX, logged_rows_by_day

    cfg = load_config(None, [f"data_dir={tmp_path}", f"serving.http_port={free_port()}"], environ={})
    # The default flush interval (10 s) is longer than this test: only the shutdown flush writes.
    status = start_server(cfg, model_dir=server["model_b"], name="second", online_lookup="none")
    assert status["healthy"] and status["pid"] != server["status"]["pid"]
    rows = feature_rows(2, seed=70)
    smoke_test(status["url"], "second", feature_rows(1, seed=71))  # as deploy does: not traffic
    with httpx.Client(base_url=status["url"], trust_env=False, timeout=30) as http:
        response = http.post("/v1/models/second:predict", json={"instances": rows}, headers={"x-request-id": "last"})
    assert response.status_code == 200
    stopped = stop_server(cfg, "second")
    assert stopped["stopped"] and stopped["pid"] == status["pid"]
    assert server_status(cfg, "second")["running"] is False
    assert stop_server(cfg, "second")["stopped"] is False
    logged = read_inference_logs(cfg.inference_log_dir)
    assert logged["request_id"].tolist() == ["last", "last"]
    assert logged["input"].isna().all() and logged["input_kind"].tolist() == ["features", "features"]
    # The deploy check is on the record, in a file of its own, and counts as no traffic.
    assert sum(logged_rows_by_day(cfg.inference_log_dir, dt.date(2000, 1, 1)).values()) == 2
    checks = [pd.read_parquet(path) for path in Path(cfg.inference_log_dir).glob("date=*/check-*.parquet")]
    assert len(checks) == 1 and len(checks[0]) == 1
    assert checks[0]["request_id"].iloc[0].startswith(DEPLOY_CHECK_ID_PREFIX)


# --- registry ------------------------------------------------------------------------------------


def test_serves_the_champion_from_the_mlflow_registry_and_passes_the_smoke_test(tmp_path, server):
    """The deploy path: a registered pyfunc version behind @champion, loaded from its native weights
    by the running server (start_server on a running name hot-swaps), then the smoke test."""
    from kfops.adapters import mlflow_registry as registry
    from kfops.serving.local.client import smoke_test

    # The server's own registry and registered model: a reload may load nothing else (another
    # tracking server would get the server's credentials).
    cfg = server["cfg"]
    name = cfg.registry.model_name
    example = synthetic_features(2, seed=60).drop(columns="label")
    probabilities = predict_proba(load_model(server["model_b"]), example)
    with registry.start_run(cfg, registry.ensure_experiment(cfg)) as run:
        uri = run.log_model(server["model_b"], example,
                            pd.DataFrame({"probability": probabilities, "prediction": probabilities >= 0.5}))
    version = registry.register_version(cfg, run.run_id, uri, {}, "model-server-test")[0].version
    registry.client(cfg).set_registered_model_alias(name, "champion", version)

    status = start_server(cfg, model_uri=f"models:/{name}@champion", name=NAME)
    try:
        assert status["pid"] == server["status"]["pid"] and status["model_version"] == str(version)
        assert status["model_source"]["model_uri"] == f"models:/{name}@champion"
        response = smoke_test(status["url"], NAME, example.to_dict("records"))
        assert response["model_version"] == str(version)
        assert response["outputs"][0]["data"] == pytest.approx(probabilities.tolist(), abs=1e-7)
        # A version that does not exist is the caller's mistake (exit 2), not a server failure (exit 3).
        with pytest.raises(KfopsError) as refused:
            reload_server(cfg, NAME, model_version="999")
        assert not isinstance(refused.value, ServingError) and refused.value.exit_code == 2
        assert "HTTP 400" in str(refused.value) and "999" in str(refused.value)
        assert served_version(server) == str(version)
    finally:
        start_server(server["cfg"], model_dir=server["model_a"], name=NAME)
