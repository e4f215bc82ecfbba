"""Request decoding, validation and response encoding for the V1 and V2 (Open Inference) protocols.

Two request shapes are accepted, one per request:

* a **feature vector**: every column of the model's ``FeatureSpec`` (categoricals as strings,
  numbers as numbers; ``null`` means missing);
* a **raw flight**: ``carrier``, ``origin``, ``dest``, ``distance``, ``sched_dep`` (local New York
  time, ISO 8601) and optionally ``tailnum`` and ``flight``; the server derives the request-time
  features and fetches the rest from the online feature store.

V1 carries rows: ``{"instances": [{...}, ...]}``. V2 carries one tensor per column:
``{"inputs": [{"name": "origin", "datatype": "BYTES", "shape": [n], "data": [...]}, ...]}``.
Both decode to the same columnar :class:`ParsedRequest`. Every client mistake raises a
:class:`RequestError` carrying its HTTP status and a message that names the problem.
Pure Python and numpy: no pandas, no KServe, so the hot path stays cheap.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson

if TYPE_CHECKING:
    import numpy as np

    from kfops.core.model import FeatureSpec

FEATURES = "features"
FLIGHT = "flight"

FLIGHT_REQUIRED = ("carrier", "origin", "dest", "distance", "sched_dep")
FLIGHT_OPTIONAL = ("tailnum", "flight")
FLIGHT_STRINGS = ("carrier", "origin", "dest", "tailnum", "sched_dep")
# The keys the online store is queried by (Feast entities of the flights feature views).
ENTITY_KEYS = ("origin", "carrier", "tailnum")

NEW_YORK = ZoneInfo("America/New_York")
MAX_STRING_CHARS = 256
MAX_ABS_NUMBER = 3.4e38  # float32 range: larger values would silently become infinity
MIN_YEAR, MAX_YEAR = 1900, 2100  # pandas timestamps cannot hold arbitrary years
MAX_FLIGHT_NUMBER = 1_000_000

V2_NUMERIC_TYPES = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)
V2_INTEGER_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
V2_TYPES = V2_NUMERIC_TYPES | {"BOOL", "BYTES"}
V2_DATATYPES = {t: t for t in V2_TYPES} | {t.lower(): t for t in V2_TYPES}
V2_INPUT_KEYS = frozenset({"name", "shape", "datatype", "data", "parameters"})
V2_BODY_KEYS = frozenset({"id", "inputs", "outputs", "parameters"})
V1_BODY_KEYS = frozenset({"instances"})
OUTPUT_NAMES = ("probability", "label")


class RequestError(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``; the server stays up."""

    status = 400
    reason = "invalid_input"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MalformedJSON(RequestError):
    reason = "malformed_json"


class PayloadTooLarge(RequestError):
    status = 413
    reason = "payload_too_large"


class UnknownEntity(RequestError):
    """The online store has no features at all for an entity of the request."""

    status = 422
    reason = "unknown_entity"


class LookupUnavailable(RequestError):
    """Raw flights were sent to a server started without an online feature lookup."""

    reason = "no_online_lookup"


class UnsupportedMediaType(RequestError):
    """A body declared as something other than JSON (``text/plain``, a form)."""

    status = 415
    reason = "unsupported_media_type"


class DependencyUnavailable(RequestError):
    """Not the client's mistake: a store the request needs (the online feature store) failed or
    timed out. Answered 503 so clients retry; the server logs it at a bounded rate."""

    status = 503
    reason = "dependency_unavailable"


JSON_MEDIA_TYPES = ("application/json", "application/cloudevents+json")


def check_json_content_type(value: str | None) -> None:
    """Refuse a declared non-JSON body (415). No Content-Type at all is taken as JSON."""
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media in JSON_MEDIA_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(f"Content-Type {media!r} is not JSON; send the body as "
                               "application/json")


@dataclass
class ParsedRequest:
    """A validated request: one list of Python scalars per column, ``rows`` long."""

    kind: str
    columns: dict[str, list]
    rows: int
    protocol: str = "v1"
    request_id: str | None = None
    outputs: tuple[str, ...] = OUTPUT_NAMES


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise MalformedJSON(
            f"request body is not valid JSON ({err}); NaN and Infinity are not JSON: send null for a missing value"
        ) from err


# ---------------------------------------------------------------------------------------------
# Shapes and values


def _names(keys) -> str:
    return ", ".join(f"'{k}'" for k in sorted(keys))


def _shape_hint(spec: FeatureSpec) -> str:
    return (
        f"send either all {len(spec.columns)} model features ({', '.join(spec.columns)}) "
        f"or a raw flight ({', '.join(FLIGHT_REQUIRED)}, optional {', '.join(FLIGHT_OPTIONAL)})"
    )


def classify(names, spec: FeatureSpec, where: str = "request") -> str:
    """Which request shape a set of field names is; raises naming missing and unknown fields."""
    names = set(names)
    if "sched_dep" in names:
        kind, required, allowed = FLIGHT, set(FLIGHT_REQUIRED), set(FLIGHT_REQUIRED) | set(FLIGHT_OPTIONAL)
    else:
        kind, required = FEATURES, set(spec.columns)
        allowed = required
    missing, unknown = required - names, names - allowed
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing field(s) {_names(missing)}")
        if unknown:
            parts.append(f"unknown field(s) {_names(unknown)}")
        what = "a raw flight" if kind == FLIGHT else "a feature vector"
        raise RequestError(f"{where}: {'; '.join(parts)} for {what}: {_shape_hint(spec)}")
    return kind


def _type_name(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", str: "string", list: "array", dict: "object"}.get(
        type(value), "number"
    )


def _number(value: Any, where: str, *, nullable: bool) -> float | int | None:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value) or abs(value) > MAX_ABS_NUMBER:
            raise RequestError(f"{where}: {value!r} is out of range (finite numbers up to {MAX_ABS_NUMBER:g})")
        return value
    if kind is int:
        if abs(value) > MAX_ABS_NUMBER:
            raise RequestError(f"{where}: {value} is out of range (finite numbers up to {MAX_ABS_NUMBER:g})")
        return value
    if value is None and nullable:
        return None
    expected = "a number or null" if nullable else "a number"
    raise RequestError(f"{where}: expected {expected}, got {_type_name(value)}")


def _string(value: Any, where: str, *, nullable: bool) -> str | None:
    if type(value) is str:
        if len(value) > MAX_STRING_CHARS:
            raise RequestError(f"{where}: string longer than {MAX_STRING_CHARS} characters")
        return value
    if value is None and nullable:
        return None
    expected = "a string or null" if nullable else "a string"
    raise RequestError(f"{where}: expected {expected}, got {_type_name(value)}")


def local_departure(value: Any, where: str) -> dt.datetime:
    """Parse ``sched_dep`` to a naive New York local time that exists exactly once on the clock."""
    text = _string(value, where, nullable=False)
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise RequestError(
            f"{where}: {text!r} is not an ISO 8601 date-time such as '2013-06-01T17:30' (New York local time)"
        ) from err
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(NEW_YORK).replace(tzinfo=None)
    if not MIN_YEAR <= stamp.year <= MAX_YEAR:
        raise RequestError(f"{where}: year {stamp.year} is outside {MIN_YEAR}..{MAX_YEAR}")
    aware = stamp.replace(tzinfo=NEW_YORK)
    if aware.astimezone(dt.UTC).astimezone(NEW_YORK).replace(tzinfo=None) != stamp:
        raise RequestError(f"{where}: {text!r} does not exist in New York local time (the clocks jump forward)")
    if aware.utcoffset() != stamp.replace(tzinfo=NEW_YORK, fold=1).utcoffset():
        # request_features localizes naive local times, which cannot place the repeated hour.
        raise RequestError(
            f"{where}: {text!r} is ambiguous in New York local time (the hour the clocks fall back repeats)"
        )
    return stamp


def validate_columns(kind: str, columns: dict[str, list], spec: FeatureSpec, labels: list[str]) -> None:
    """Check and normalise every value in place; ``labels[i]`` names row i in error messages."""
    if kind == FEATURES:
        for name in spec.columns:
            values = columns[name]
            if name in spec.categorical:
                for i, value in enumerate(values):
                    if type(value) is str and len(value) <= MAX_STRING_CHARS:
                        continue
                    _string(value, f"{labels[i]} field '{name}'", nullable=True)
            else:
                for i, value in enumerate(values):
                    kind_of = type(value)
                    if kind_of is float and math.isfinite(value) and abs(value) <= MAX_ABS_NUMBER:
                        continue
                    _number(value, f"{labels[i]} field '{name}'", nullable=True)
        return
    for name in ("carrier", "origin", "dest"):
        for i, value in enumerate(columns[name]):
            if _string(value, f"{labels[i]} field '{name}'", nullable=False) == "":
                raise RequestError(f"{labels[i]} field '{name}': must not be empty")
    if "tailnum" in columns:
        for i, value in enumerate(columns["tailnum"]):
            _string(value, f"{labels[i]} field 'tailnum'", nullable=True)
    for i, value in enumerate(columns["distance"]):
        number = _number(value, f"{labels[i]} field 'distance'", nullable=False)
        if number < 0:
            raise RequestError(f"{labels[i]} field 'distance': must be >= 0, got {number}")
    if "flight" in columns:
        for i, value in enumerate(columns["flight"]):
            if type(value) is not int or not 0 <= value <= MAX_FLIGHT_NUMBER:
                raise RequestError(
                    f"{labels[i]} field 'flight': expected an integer 0..{MAX_FLIGHT_NUMBER}, got {value!r}"
                )
    columns["sched_dep"] = [local_departure(v, f"{labels[i]} field 'sched_dep'") for i, v in
                            enumerate(columns["sched_dep"])]


# ---------------------------------------------------------------------------------------------
# V1: {"instances": [{...}, ...]}


def decode_v1(body: Any, spec: FeatureSpec) -> ParsedRequest:
    if type(body) is not dict:
        raise RequestError(f"request body must be a JSON object with 'instances', got {_type_name(body)}")
    unknown = body.keys() - V1_BODY_KEYS
    if unknown:
        raise RequestError(f"unknown field(s) {_names(unknown)} in the request body; expected 'instances'")
    instances = body.get("instances")
    if type(instances) is not list or not instances:
        raise RequestError("'instances' must be a non-empty array of objects, one per row")
    first = instances[0]
    if type(first) is not dict:
        raise RequestError(f"instance 0 must be an object of field -> value, got {_type_name(first)}")
    kind = classify(first.keys(), spec, "instance 0")
    names = list(first.keys())
    columns: dict[str, list] = {name: [] for name in names}
    for i, instance in enumerate(instances):
        if type(instance) is not dict:
            raise RequestError(f"instance {i} must be an object of field -> value, got {_type_name(instance)}")
        if instance.keys() != first.keys():
            if classify(instance.keys(), spec, f"instance {i}") != kind:
                raise RequestError(f"instance {i} is a different shape than instance 0: send one shape per request")
            missing = set(names) - instance.keys()
            if missing:  # optional raw-flight fields present in one row but not another
                raise RequestError(f"instance {i}: missing field(s) {_names(missing)} that instance 0 has")
            extra = instance.keys() - set(names)
            raise RequestError(f"instance {i}: field(s) {_names(extra)} that instance 0 lacks")
        for name in names:
            columns[name].append(instance[name])
    rows = len(instances)
    labels = [f"instance {i}" for i in range(rows)]
    validate_columns(kind, columns, spec, labels)
    return ParsedRequest(kind=kind, columns=columns, rows=rows, protocol="v1")


# ---------------------------------------------------------------------------------------------
# V2 (Open Inference Protocol, REST): one tensor per column


def _flatten(data: list, where: str) -> list:
    """Row-major nested data ``[[v], [v], ...]`` to a flat list."""
    flat: list = []
    for item in data:
        if type(item) is not list:
            raise RequestError(f"{where}: 'data' mixes nested arrays and scalars")
        for value in item:
            if type(value) is list:
                raise RequestError(f"{where}: 'data' is nested deeper than [rows][1]")
            flat.append(value)
    return flat


def _v2_input(item: Any, index: int) -> tuple[str, str, int, list]:
    # The hot path of every V2 request (once per column): checks first, messages only on failure.
    if type(item) is not dict:
        raise RequestError(f"input {index} must be an object with name, datatype, shape and data")
    try:
        name, datatype, shape, data = item["name"], item["datatype"], item["shape"], item["data"]
    except KeyError as err:
        raise RequestError(f"input {index}: missing '{err.args[0]}'") from None
    if len(item) != 4:
        unknown = item.keys() - V2_INPUT_KEYS
        if unknown:
            raise RequestError(f"input {index}: unknown field(s) {_names(unknown)}")
        if item["parameters"] is not None and type(item["parameters"]) is not dict:
            raise RequestError(f"input {index}: 'parameters' must be an object")
    if type(name) is not str or not name:
        raise RequestError(f"input {index}: 'name' must be a non-empty string")
    canonical = V2_DATATYPES.get(datatype) if type(datatype) is str else None
    if canonical is None:
        raise RequestError(f"input '{name}': unknown datatype {datatype!r}; use one of {', '.join(sorted(V2_TYPES))}")
    if type(shape) is not list or not (
        (len(shape) == 1 or (len(shape) == 2 and type(shape[1]) is int and shape[1] == 1))
        and type(shape[0]) is int and shape[0] >= 0
    ):
        raise RequestError(f"input '{name}': 'shape' must be [rows] or [rows, 1], got {shape!r}")
    if type(data) is not list:
        raise RequestError(f"input '{name}': 'data' must be an array, got {_type_name(data)}")
    if data and type(data[0]) is list:
        data = _flatten(data, f"input '{name}'")
    if len(data) != shape[0]:
        raise RequestError(f"input '{name}': shape {shape} says {shape[0]} values but 'data' holds {len(data)}")
    return name, canonical, shape[0], data


def _check_datatype(name: str, datatype: str, kind: str, spec: FeatureSpec) -> None:
    if kind == FEATURES:
        wants_string = name in spec.categorical
    else:
        wants_string = name in FLIGHT_STRINGS
    if wants_string and datatype != "BYTES":
        raise RequestError(f"input '{name}': datatype {datatype} where BYTES (a string) is expected")
    if not wants_string and datatype not in V2_NUMERIC_TYPES:
        raise RequestError(f"input '{name}': datatype {datatype} where a numeric datatype is expected")
    if kind == FLIGHT and name == "flight" and datatype not in V2_INTEGER_TYPES:
        raise RequestError(f"input 'flight': datatype {datatype} where an integer datatype is expected")


def decode_v2(body: Any, spec: FeatureSpec) -> ParsedRequest:
    if type(body) is not dict:
        raise RequestError(f"request body must be a JSON object with 'inputs', got {_type_name(body)}")
    unknown = body.keys() - V2_BODY_KEYS
    if unknown:
        raise RequestError(f"unknown field(s) {_names(unknown)} in the request body; expected 'inputs'")
    request_id = body.get("id")
    if request_id is not None and type(request_id) is not str:
        raise RequestError("'id' must be a string")
    if body.get("parameters") is not None and type(body["parameters"]) is not dict:
        raise RequestError("'parameters' must be an object")
    outputs = _requested_outputs(body.get("outputs"))
    inputs = body.get("inputs")
    if type(inputs) is not list or not inputs:
        raise RequestError("'inputs' must be a non-empty array of tensors, one per column")
    decoded = [_v2_input(item, i) for i, item in enumerate(inputs)]
    names = [d[0] for d in decoded]
    if len(set(names)) != len(names):
        duplicated = {n for n in names if names.count(n) > 1}
        raise RequestError(f"input(s) {_names(duplicated)} appear more than once")
    kind = classify(names, spec, "inputs")
    rows = decoded[0][2]
    if rows == 0:
        raise RequestError("inputs hold zero rows; send at least one")
    columns: dict[str, list] = {}
    for name, datatype, count, data in decoded:
        if count != rows:
            raise RequestError(f"input '{name}' has {count} rows but input '{decoded[0][0]}' has {rows}")
        _check_datatype(name, datatype, kind, spec)
        if datatype in V2_INTEGER_TYPES:
            for value in data:
                if type(value) is not int and value is not None:
                    raise RequestError(f"input '{name}': datatype {datatype} but {value!r} is not an integer")
        columns[name] = data
    validate_columns(kind, columns, spec, [f"row {i}" for i in range(rows)])
    return ParsedRequest(kind=kind, columns=columns, rows=rows, protocol="v2", request_id=request_id,
                         outputs=outputs)


def _requested_outputs(outputs: Any) -> tuple[str, ...]:
    if outputs is None:
        return OUTPUT_NAMES
    if type(outputs) is not list or not outputs:
        raise RequestError("'outputs' must be a non-empty array of {\"name\": ...}")
    names = []
    for item in outputs:
        name = item.get("name") if type(item) is dict else None
        if name not in OUTPUT_NAMES:
            raise RequestError(f"unknown output {name!r}; this model produces {', '.join(OUTPUT_NAMES)}")
        names.append(name)
    return tuple(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------
# Responses


def v1_response(probabilities: np.ndarray, threshold: float, model_name: str, version: str) -> dict:
    probs = probabilities.tolist()
    return {
        "predictions": [{"probability": p, "label": int(p >= threshold)} for p in probs],
        "model_name": model_name,
        "model_version": version,
    }


def v2_response(
    probabilities: np.ndarray, threshold: float, model_name: str, version: str, request_id: str,
    outputs: tuple[str, ...] = OUTPUT_NAMES,
) -> dict:
    probs = probabilities.tolist()
    rows = len(probs)
    tensors = []
    for name in outputs:
        if name == "probability":
            tensors.append({"name": "probability", "datatype": "FP64", "shape": [rows], "data": probs})
        else:
            tensors.append({"name": "label", "datatype": "INT64", "shape": [rows],
                            "data": [int(p >= threshold) for p in probs]})
    return {"model_name": model_name, "model_version": version, "id": request_id, "outputs": tensors}


def error_body(message: str) -> dict:
    return {"error": message}
