"""The binary tensor extension's decoding and encoding, on bodies built by hand (the real server and
tritonclient: tests/integration/test_model_server_binary.py)."""

from __future__ import annotations

import re
import struct

import numpy as np
import orjson
import pytest

from kfops.serving.protocol.binary import binary_outputs, decode_request, encode_response, header_length
from kfops.serving.protocol.payloads import RequestError


def body_of(inputs: list[tuple[dict, bytes]], **extra) -> tuple[bytes, int]:
    head = orjson.dumps({"inputs": [tensor for tensor, _ in inputs], **extra})
    return head + b"".join(raw for _, raw in inputs), len(head)


def tensor(name: str, datatype: str, shape: list, raw: bytes) -> tuple[dict, bytes]:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(raw)}}, raw


def strings(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_every_datatype_decodes_to_the_json_request_decode_v2_takes():
    body, size = body_of([
        tensor("a", "FP32", [2], np.array([1.5, np.nan], "<f4").tobytes()),
        tensor("b", "INT64", [2, 1], np.array([[-3], [2**40]], "<i8").tobytes()),
        tensor("c", "BYTES", [2], strings(b"EWR", "Zürich".encode())),
        tensor("d", "BOOL", [2], b"\x01\x00"),
        tensor("e", "FP16", [1], np.array([0.5], "<f2").tobytes()),
        tensor("f", "uint8", [3], b"\x00\x07\xff"),
        ({"name": "g", "datatype": "FP64", "shape": [1], "data": [2.0]}, b""),
    ], id="r1")
    request = decode_request(body, header_length(str(size), len(body)))
    assert request["id"] == "r1"
    data = {t["name"]: t["data"] for t in request["inputs"]}
    assert data == {"a": [1.5, None], "b": [-3, 2**40], "c": ["EWR", "Zürich"], "d": [True, False],
                    "e": [0.5], "f": [0, 7, 255], "g": [2.0]}
    assert all("parameters" not in t for t in request["inputs"])
    assert request["inputs"][1]["shape"] == [2, 1]


def test_other_input_parameters_are_kept():
    raw = np.array([1.0], "<f4").tobytes()
    head = {"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4, "x": 1}}
    body, size = body_of([(head, raw)])
    assert decode_request(body, size)["inputs"][0]["parameters"] == {"x": 1}


@pytest.mark.parametrize(("value", "size", "message"), [
    ("abc", 10, "not a non-negative integer"),
    ("-1", 10, "not a non-negative integer"),
    ("", 10, "not a non-negative integer"),
    ("\xb2", 10, "not a non-negative integer"),  # latin-1 superscript two: isdigit() but not int()
    ("0", 10, "is 0"),
    ("11", 10, "past the end of the 10-byte body"),
])
def test_bad_header_lengths(value, size, message):
    with pytest.raises(RequestError, match=message):
        header_length(value, size)


@pytest.mark.parametrize(("inputs", "tail", "message"), [
    ([tensor("a", "FP32", [2], b"\x00" * 4)], b"", "does not match shape"),
    ([tensor("a", "INT64", [1], b"\x00" * 8)], b"\x00", "1 byte(s) after the last binary input"),
    ([tensor("a", "FP32", [1], b"\x00" * 4)], None, "runs past the end of the body"),
    ([tensor("a", "COMPLEX", [1], b"\x00" * 4)], b"", "unknown datatype 'COMPLEX'"),
    ([tensor("a", "BYTES", [1], struct.pack("<I", 9) + b"abc")], b"", "declares 9 byte(s)"),
    ([tensor("a", "BYTES", [2], strings(b"ab"))], b"", "element 1 of 2: its 4-byte length prefix"),
    ([tensor("a", "BYTES", [1], strings(b"ab", b"c"))], b"", "left after its 1 BYTES element"),
    ([tensor("a", "BYTES", [1], strings(b"\xff\xfe"))], b"", "not UTF-8"),
    ([tensor("a", "BOOL", [1], b"\x02")], b"", "BOOL bytes must be 0 or 1"),
    ([tensor("a", "FP32", "1", b"\x00" * 4)], b"", "'shape' must be an array"),
    ([({"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": -4}}, b"")], b"",
     "binary_data_size must be a non-negative integer"),
    ([({"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0], "parameters": {"binary_data_size": 4}},
       b"\x00" * 4)], b"", "both 'data'"),
])
def test_malformed_binary_inputs_name_the_problem(inputs, tail, message):
    body, size = body_of(inputs)
    if tail is None:
        body = body[:-1]
    else:
        body += tail
    with pytest.raises(RequestError, match=re.escape(message)) as caught:
        decode_request(body, size)
    assert caught.value.status == 400


def test_a_header_that_is_not_json_says_so():
    with pytest.raises(RequestError, match=r"the inference header .* is not JSON"):
        decode_request(b'{"inputs": [' + b"\x00" * 8, 12)


def test_bytes_after_a_header_with_no_binary_inputs_are_refused():
    body, size = body_of([({"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0]}, b"")])
    assert decode_request(body, size)["inputs"][0]["data"] == [1.0]
    with pytest.raises(RequestError, match="after the last binary input"):
        decode_request(body + b"xx", size)


def test_which_outputs_are_binary():
    assert binary_outputs({"inputs": []}) == frozenset()
    assert binary_outputs({"parameters": {"binary_data_output": True}}) == {"probability", "label"}
    assert binary_outputs({"parameters": {"binary_data_output": True},
                           "outputs": [{"name": "label"}, {"name": "probability", "parameters": {"binary_data": False}}]}
                          ) == {"label"}
    assert binary_outputs({"outputs": [{"name": "label", "parameters": {"binary_data": True}}]}) == {"label"}
    with pytest.raises(RequestError, match="binary_data must be true or false"):
        binary_outputs({"outputs": [{"name": "label", "parameters": {"binary_data": 1}}]})
    with pytest.raises(RequestError, match="binary_data_output must be true or false"):
        binary_outputs({"parameters": {"binary_data_output": "true"}})


def test_binary_outputs_follow_their_json_header():
    payload = {"model_name": "m", "outputs": [
        {"name": "probability", "datatype": "FP64", "shape": [2], "data": [0.25, 0.75]},
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]},
    ]}
    body, size = encode_response(payload, frozenset({"label"}))
    head = orjson.loads(body[:size])
    assert head["outputs"][0]["data"] == [0.25, 0.75]
    assert head["outputs"][1] == {"name": "label", "datatype": "INT64", "shape": [2],
                                  "parameters": {"binary_data_size": 16}}
    assert np.frombuffer(body[size:], "<i8").tolist() == [0, 1]
    assert payload["outputs"][1]["data"] == [0, 1]  # the payload itself is left alone
