"""The Open Inference Protocol's binary tensor data extension (REST), for the fast path.

A request with the ``Inference-Header-Content-Length: N`` header is ``N`` bytes of JSON (the usual
V2 request, where an input may carry ``"parameters": {"binary_data_size": S}`` instead of
``data``) followed by each such input's ``S`` bytes, in input order: little-endian, row major, no
padding; BOOL one byte (0 or 1); BYTES one 4-byte little-endian length then the bytes, per
element. tritonclient's HTTP client sends its inputs this way by default.

:func:`decode_request` turns such a body into the JSON-shaped request that
:func:`kfops.serving.protocol.payloads.decode_v2` takes (every binary input gets its ``data``
list), so everything after the boundary is the same for both encodings. Binary float NaN is a
missing value (JSON's ``null``): binary has no other way to send one. Every malformed body is a
:class:`RequestError` (400) that names the problem.

Outputs: ``"parameters": {"binary_data": true}`` on a requested output, or
``"parameters": {"binary_data_output": true}`` on the request (what tritonclient sends when it
names no outputs), ask for binary outputs, in a JSON or a binary request alike.
:func:`binary_outputs` reads which, :func:`encode_response` writes the response: the JSON header
(each binary output with ``binary_data_size`` instead of ``data``) then the bytes, and the
header length to answer in ``Inference-Header-Content-Length``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from kfops.serving.protocol.payloads import MalformedJSON, RequestError, parse_json

HEADER = b"inference-header-content-length"
CONTENT_TYPE = (b"content-type", b"application/octet-stream")

# Datatype -> little-endian numpy dtype (BYTES is variable-length: see _bytes_elements).
DTYPES = {
    "BOOL": "|b1", "UINT8": "|u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "|i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
FLOATS = frozenset({"FP16", "FP32", "FP64"})
DATATYPES = {name: name for name in [*DTYPES, "BYTES"]} | {name.lower(): name for name in [*DTYPES, "BYTES"]}
LENGTH = struct.Struct("<I")
NO_BINARY_OUTPUTS: frozenset[str] = frozenset()


def header_length(value: str, body_size: int) -> int:
    """The JSON header's size from ``Inference-Header-Content-Length``; 400 unless it fits the body."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()):  # refuses a sign, a fraction, "" and "²" (a digit to isdigit)
        raise RequestError(f"Inference-Header-Content-Length {value!r} is not a non-negative integer")
    size = int(text)
    if size == 0:
        raise RequestError("Inference-Header-Content-Length is 0: the JSON inference header is missing")
    if size > body_size:
        raise RequestError(f"Inference-Header-Content-Length {size} is past the end of the "
                           f"{body_size}-byte body")
    return size


def decode_request(body: bytes, json_size: int) -> Any:
    """A binary-extension body -> the JSON-shaped V2 request (binary inputs get their ``data``).

    ``json_size`` comes from :func:`header_length`. Checks what decode_v2 cannot: each
    ``binary_data_size`` against the datatype, shape and the bytes left, BYTES length prefixes,
    and that the inputs' sizes add up to the body exactly.
    """
    try:
        request = parse_json(body[:json_size])
    except MalformedJSON as err:
        raise MalformedJSON(f"the inference header (the first {json_size} bytes, per "
                            f"Inference-Header-Content-Length) is not JSON: {err.message}") from None
    if type(request) is not dict:
        return request  # decode_v2 names the problem
    inputs = request.get("inputs")
    if type(inputs) is not list:
        if json_size != len(body):
            raise RequestError(f"{len(body) - json_size} byte(s) after the JSON inference header, "
                               "but no input has parameters.binary_data_size")
        return request
    offset = json_size
    decoded = []
    for index, item in enumerate(inputs):
        parameters = item.get("parameters") if type(item) is dict else None
        if type(parameters) is not dict or "binary_data_size" not in parameters:
            decoded.append(item)  # a JSON input (or a malformed one: decode_v2 says why)
            continue
        size = parameters["binary_data_size"]
        name = item.get("name")
        where = f"input '{name}'" if type(name) is str and name else f"input {index}"
        if type(size) is not int or size < 0:
            raise RequestError(f"{where}: parameters.binary_data_size must be a non-negative integer, got {size!r}")
        if "data" in item:
            raise RequestError(f"{where}: has both 'data' and parameters.binary_data_size; send one")
        if offset + size > len(body):
            raise RequestError(f"{where}: binary_data_size {size} runs past the end of the body "
                               f"({len(body) - offset} byte(s) left after the inputs before it)")
        data = _tensor(where, item.get("datatype"), item.get("shape"), memoryview(body)[offset:offset + size])
        offset += size
        rest = {k: v for k, v in parameters.items() if k != "binary_data_size"}
        tensor = {k: v for k, v in item.items() if k != "parameters"}
        tensor["data"] = data
        if rest:
            tensor["parameters"] = rest
        decoded.append(tensor)
    if offset != len(body):
        raise RequestError(f"{len(body) - offset} byte(s) after the last binary input: the inputs' "
                           "binary_data_size values do not add up to the body")
    return {**request, "inputs": decoded}


def _elements(where: str, shape: Any) -> int:
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise RequestError(f"{where}: 'shape' must be an array of non-negative integers, got {shape!r}")
    return math.prod(shape)


def _tensor(where: str, datatype: Any, shape: Any, raw: memoryview) -> list:
    canonical = DATATYPES.get(datatype) if type(datatype) is str else None
    if canonical is None:
        raise RequestError(f"{where}: unknown datatype {datatype!r}; use one of {', '.join(sorted(set(DATATYPES.values())))}")
    count = _elements(where, shape)
    if canonical == "BYTES":
        return _bytes_elements(where, raw, count)
    dtype = np.dtype(DTYPES[canonical])
    if len(raw) != count * dtype.itemsize:
        raise RequestError(f"{where}: binary_data_size {len(raw)} does not match shape {shape} of "
                           f"{canonical} ({count} x {dtype.itemsize} = {count * dtype.itemsize} bytes)")
    if canonical == "BOOL":
        octets = np.frombuffer(raw, dtype=np.uint8)
        if (octets > 1).any():
            raise RequestError(f"{where}: BOOL bytes must be 0 or 1")
        return (octets == 1).tolist()
    values = np.frombuffer(raw, dtype=dtype).tolist()
    if canonical in FLOATS:
        return [None if v != v else v for v in values]  # NaN: missing, as null is in JSON
    return values


def _bytes_elements(where: str, raw: memoryview, count: int) -> list:
    values = []
    offset, end = 0, len(raw)
    for i in range(count):
        if offset + 4 > end:
            raise RequestError(f"{where}: BYTES element {i} of {count}: its 4-byte length prefix runs past "
                               "binary_data_size")
        (length,) = LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise RequestError(f"{where}: BYTES element {i} declares {length} byte(s), past binary_data_size "
                               f"({end - offset} left)")
        try:
            values.append(str(raw[offset:offset + length], "utf-8"))
        except UnicodeDecodeError as err:
            raise RequestError(f"{where}: BYTES element {i} is not UTF-8 text ({err.reason})") from None
        offset += length
    if offset != end:
        raise RequestError(f"{where}: {end - offset} byte(s) left after its {count} BYTES element(s); "
                           "shape and binary_data_size disagree")
    return values


def binary_outputs(request: dict) -> frozenset[str]:
    """The output names to answer in binary (empty: answer JSON). ``request`` passed decode_v2."""
    parameters = request.get("parameters")
    outputs = request.get("outputs")
    if not parameters and outputs is None:
        return NO_BINARY_OUTPUTS  # the common JSON request: two lookups and out
    default = False
    if parameters:
        default = parameters.get("binary_data_output", False)
        if type(default) is not bool:
            raise RequestError(f"parameters.binary_data_output must be true or false, got {default!r}")
    if outputs is None:
        return frozenset({"probability", "label"}) if default else NO_BINARY_OUTPUTS
    names = set()
    for item in outputs:
        wanted = default
        options = item.get("parameters")
        if options is not None:
            if type(options) is not dict:
                raise RequestError(f"output '{item['name']}': 'parameters' must be an object")
            wanted = options.get("binary_data", default)
            if type(wanted) is not bool:
                raise RequestError(f"output '{item['name']}': parameters.binary_data must be true or false, "
                                   f"got {wanted!r}")
        if wanted:
            names.add(item["name"])
    return frozenset(names)


def encode_response(payload: dict, binary: frozenset[str]) -> tuple[bytes, int]:
    """A V2 response with the ``binary`` outputs as binary data: (body, JSON header size)."""
    chunks = []
    tensors = []
    for tensor in payload["outputs"]:
        if tensor["name"] not in binary:
            tensors.append(tensor)
            continue
        raw = np.asarray(tensor["data"], dtype=DTYPES[tensor["datatype"]]).tobytes()
        chunks.append(raw)
        head = {k: v for k, v in tensor.items() if k != "data"}
        head["parameters"] = {"binary_data_size": len(raw)}
        tensors.append(head)
    head = orjson.dumps({**payload, "outputs": tensors})
    return b"".join([head, *chunks]), len(head)


async def send_binary(send: Any, body: bytes, json_size: int) -> None:
    """A 200 whose body is a JSON header of ``json_size`` bytes and then binary outputs."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [CONTENT_TYPE, (b"inference-header-content-length", str(json_size).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
