"""The Open Inference Protocol's binary tensor extension against the real model server: tritonclient's
HTTP client (a third-party client, with its defaults) for binary and JSON inputs and outputs, and
malformed binary bodies sent raw, which must all be 400s that name the problem, never a 5xx."""

from __future__ import annotations

import http.client
import json
import struct
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kfops.config import load_config
from kfops.core.model import load_model
from kfops.serving.local.process import start_server, stop_server
from tests.conftest import free_port
from tests.support.serving_models import build_tiny_model, synthetic_features, tally_fuzzed_response

tritonclient_http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is a dev dependency")

pytestmark = pytest.mark.integration

NAME = "binmodel"
INTEGER_FEATURES = ("dep_hour", "day_of_week", "month", "days_to_holiday")  # sent as INT64
INFER = f"/v2/models/{NAME}/infer"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("binary")
    model_dir = build_tiny_model(root / "data" / "model", seed=3)
    cfg = load_config(None, [f"data_dir={root / 'data'}", f"serving.http_port={free_port()}",
                             "serving.startup_timeout_s=120"], environ={})
    status = start_server(cfg, model_dir=model_dir, name=NAME, online_lookup="none", extra_args=["--no-inference-log"])
    http = httpx.Client(base_url=status["url"], timeout=30, trust_env=False)
    triton = tritonclient_http.InferenceServerClient(urlsplit(status["url"]).netloc, network_timeout=30)
    try:
        yield {"status": status, "http": http, "triton": triton, "spec": load_model(model_dir).spec}
    finally:
        triton.close()
        http.close()
        stop_server(cfg, NAME)


def rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """Feature columns as a client would hold them: text as objects, FP32 numbers, INT64 integers."""
    frame = synthetic_features(n, seed)
    out = {}
    for column in frame.columns.drop("label"):
        values = frame[column].to_numpy()
        if values.dtype == object:
            out[column] = values.astype(object)
        elif column in INTEGER_FEATURES:
            out[column] = values.astype(np.int64)
        else:
            out[column] = values.astype(np.float32)
    return out


def triton_inputs(columns: dict[str, np.ndarray], binary: bool | set[str]) -> list:
    inputs = []
    for name, values in columns.items():
        datatype = {"O": "BYTES", "i": "INT64", "f": "FP32"}[values.dtype.kind]
        tensor = tritonclient_http.InferInput(name, [len(values)], datatype)
        as_binary = binary if isinstance(binary, bool) else name in binary
        tensor.set_data_from_numpy(values, binary_data=as_binary)
        inputs.append(tensor)
    return inputs


def json_answer(server, columns: dict[str, np.ndarray]) -> dict:
    """The same rows through the plain JSON V2 route: the reference every binary answer must equal."""
    body = {"inputs": [{"name": name, "shape": [len(values)],
                        "datatype": {"O": "BYTES", "i": "INT64", "f": "FP32"}[values.dtype.kind],
                        "data": values.tolist()} for name, values in columns.items()]}
    response = server["http"].post(INFER, json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    return {"probability": np.array(outputs["probability"]["data"]), "label": np.array(outputs["label"]["data"])}


def output_was_binary(result, name: str) -> bool:
    return "binary_data_size" in (result.get_output(name).get("parameters") or {})


def test_tritonclient_defaults_binary_inputs_and_binary_outputs(server):
    columns = rows(7, seed=11)
    expected = json_answer(server, columns)
    result = server["triton"].infer(NAME, triton_inputs(columns, binary=True))  # no outputs named: all binary
    assert output_was_binary(result, "probability") and output_was_binary(result, "label")
    np.testing.assert_array_equal(result.as_numpy("probability"), expected["probability"])
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    assert result.as_numpy("probability").dtype == np.float64 and result.as_numpy("label").dtype == np.int64


def test_json_inputs_with_binary_outputs(server):
    columns = rows(3, seed=12)
    expected = json_answer(server, columns)
    outputs = [tritonclient_http.InferRequestedOutput("label", binary_data=True)]
    result = server["triton"].infer(NAME, triton_inputs(columns, binary=False), outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert output_was_binary(result, "label")
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])


def test_binary_inputs_with_json_outputs_and_some_inputs_json(server):
    columns = rows(5, seed=13)
    expected = json_answer(server, columns)
    half = set(list(columns)[::2])  # every other column binary, the rest JSON, in one request
    outputs = [tritonclient_http.InferRequestedOutput("probability", binary_data=False),
               tritonclient_http.InferRequestedOutput("label", binary_data=True)]
    result = server["triton"].infer(NAME, triton_inputs(columns, binary=half), outputs=outputs, request_id="abc")
    assert result.get_response()["id"] == "abc"
    assert not output_was_binary(result, "probability") and output_was_binary(result, "label")
    np.testing.assert_array_equal(result.as_numpy("probability"), expected["probability"])
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])


def test_binary_float_nan_is_a_missing_value_like_json_null(server):
    columns = rows(1, seed=14)
    columns["wind_gust"] = np.array([np.nan], dtype=np.float32)
    result = server["triton"].infer(NAME, triton_inputs(columns, binary=True))
    body = {"inputs": [{"name": n, "shape": [1], "datatype": "BYTES" if v.dtype == object else "FP64",
                        "data": [None if n == "wind_gust" else v.tolist()[0]]} for n, v in columns.items()]}
    expected = server["http"].post(INFER, json=body).json()["outputs"][0]["data"]
    np.testing.assert_array_equal(result.as_numpy("probability"), expected)


def test_tritonclient_gets_the_servers_400_message(server):
    columns = rows(1, seed=15)
    columns["origin"] = np.array([1.5], dtype=np.float32)  # a categorical sent as a number
    with pytest.raises(tritonclient_http.InferenceServerException, match=r"origin.*BYTES"):
        server["triton"].infer(NAME, triton_inputs(columns, binary=True))
    assert server["triton"].is_model_ready(NAME)


# --- malformed bodies, sent raw ------------------------------------------------------------------


def binary_body(columns: dict[str, np.ndarray]) -> tuple[dict, bytes]:
    """A valid binary request built by hand: (JSON header, concatenated tensor bytes)."""
    inputs, chunks = [], []
    for name, values in columns.items():
        if values.dtype == object:
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
            datatype = "BYTES"
        else:
            raw = values.astype(values.dtype.newbyteorder("<")).tobytes()
            datatype = "INT64" if values.dtype.kind == "i" else "FP32"
        inputs.append({"name": name, "datatype": datatype, "shape": [len(values)],
                       "parameters": {"binary_data_size": len(raw)}})
        chunks.append(raw)
    return {"inputs": inputs}, b"".join(chunks)


def post_raw(server, header: dict, tail: bytes, *, length: int | str | None = None, path: str = INFER):
    head = json.dumps(header).encode()
    length = len(head) if length is None else length
    return server["http"].post(path, content=head + tail, headers={"Inference-Header-Content-Length": str(length)})


def test_a_hand_built_binary_body_is_answered_in_json_unless_asked(server):
    columns = rows(2, seed=16)
    header, tail = binary_body(columns)
    response = post_raw(server, header, tail)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    np.testing.assert_array_equal(response.json()["outputs"][0]["data"], json_answer(server, columns)["probability"])


def test_binary_outputs_come_after_the_header_it_declares(server):
    columns = rows(2, seed=17)
    header, tail = binary_body(columns)
    header["parameters"] = {"binary_data_output": True}
    response = post_raw(server, header, tail)
    assert response.status_code == 200, response.text
    size = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:size])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sizes == [16, 16] and len(response.content) == size + 32
    probabilities = np.frombuffer(response.content[size:size + 16], "<f8")
    np.testing.assert_array_equal(probabilities, json_answer(server, columns)["probability"])


def malformed_cases(columns: dict[str, np.ndarray]) -> dict[str, tuple]:
    """name -> (header, tail, Inference-Header-Content-Length or None, text the 400 must name)."""
    header, tail = binary_body(columns)
    head_size = len(json.dumps(header).encode())

    def changed(index: int, **fields) -> dict:
        copy = json.loads(json.dumps(header))
        copy["inputs"][index].update(fields)
        return copy

    strings = [i for i, t in enumerate(header["inputs"]) if t["datatype"] == "BYTES"]
    floats = [i for i, t in enumerate(header["inputs"]) if t["datatype"] == "FP32"]
    first_bytes = sum(t["parameters"]["binary_data_size"] for t in header["inputs"][:strings[0]])
    overrun = bytearray(tail)
    struct.pack_into("<I", overrun, first_bytes, 10_000)  # first BYTES element claims 10,000 bytes
    not_utf8 = bytearray(tail)
    not_utf8[first_bytes + 4] = 0xFF
    float_size = header["inputs"][floats[0]]["parameters"]["binary_data_size"]
    return {
        "header past the body": (header, tail, head_size + len(tail) + 1, "past the end"),
        "header not a number": (header, tail, "12x", "not a non-negative integer"),
        "negative header": (header, tail, "-5", "not a non-negative integer"),
        "zero header": (header, tail, 0, "is 0"),
        "header cuts the JSON": (header, tail, head_size - 3, "not JSON"),
        "body cut short": (header, tail[:-3], None, "past the end of the body"),
        "trailing bytes": (header, tail + b"\x00\x00", None, "after the last binary input"),
        "wrong size for FP32": (changed(floats[0], parameters={"binary_data_size": float_size - 4}), tail, None,
                                "does not match shape"),
        "unknown datatype": (changed(floats[0], datatype="FP128"), tail, None, "unknown datatype"),
        "BYTES length overruns": (header, bytes(overrun), None, "past binary_data_size"),
        "BYTES not UTF-8": (header, bytes(not_utf8), None, "not UTF-8"),
        "size not an integer": (changed(floats[0], parameters={"binary_data_size": "8"}), tail, None,
                                "non-negative integer"),
        "data and binary size": (changed(floats[0], data=[1.0, 2.0]), tail, None, "both 'data'"),
        "negative shape": (changed(floats[0], shape=[-2]), tail, None, "non-negative integers"),
    }


def test_malformed_binary_bodies_are_400s_that_name_the_problem(server):
    columns = rows(2, seed=18)
    failures = []
    for case, (header, tail, length, expected) in malformed_cases(columns).items():
        response = post_raw(server, header, tail, length=length)
        if response.status_code != 400 or expected not in response.json().get("error", ""):
            failures.append((case, response.status_code, response.text[:300]))
    assert not failures
    assert server["triton"].is_server_live()


def test_binary_requests_to_v1_and_bad_output_flags_are_400s(server):
    header, tail = binary_body(rows(1, seed=19))
    v1 = post_raw(server, header, tail, path=f"/v1/models/{NAME}:predict")
    assert v1.status_code == 400 and "V2" in v1.json()["error"]
    flagged = dict(header, outputs=[{"name": "label", "parameters": {"binary_data": "yes"}}])
    response = post_raw(server, flagged, tail)
    assert response.status_code == 400 and "binary_data must be true or false" in response.json()["error"]
    flagged = dict(header, parameters={"binary_data_output": 1})
    response = post_raw(server, flagged, tail)
    assert response.status_code == 400 and "binary_data_output" in response.json()["error"]


def test_fuzz_mutated_binary_bodies_never_get_a_5xx(server):
    """Valid binary bodies with bytes flipped, cut or inserted, and header lengths moved."""
    header, tail = binary_body(rows(2, seed=20))
    body = json.dumps(header).encode() + tail
    head_size = len(json.dumps(header).encode())
    address = urlsplit(server["status"]["url"])
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    statuses: dict[int, int] = {}

    @settings(max_examples=300, phases=[Phase.generate], deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(position=st.integers(0, len(body) - 1), value=st.integers(0, 255),
           action=st.sampled_from(["flip", "cut", "insert"]), shift=st.integers(-40, 40))
    def send(position, value, action, shift):
        if action == "flip":
            mutated = body[:position] + bytes([value]) + body[position + 1:]
        elif action == "cut":
            mutated = body[:position] + body[position + 1 + value % 8:]
        else:
            mutated = body[:position] + bytes([value]) * (1 + value % 4) + body[position:]
        connection.request("POST", INFER, body=mutated,
                           headers={"Inference-Header-Content-Length": str(head_size + shift)})
        tally_fuzzed_response(connection.getresponse(), statuses, (action, position, value, shift))

    try:
        send()
    finally:
        connection.close()
    assert statuses.get(400, 0) > 0
    assert server["triton"].is_server_live()
