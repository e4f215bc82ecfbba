"""Request decoding, validation and response encoding for the V1 and V2 (Open Inference) protocols.

Two request shapes are accepted, one per request:

* a **feature vector**: every column of the model's ``FeatureSpec`` (categoricals as strings,
  numbers as numbers; ``null`` means missing);
* a **raw request**: the fields the dataset's :class:`~kfops.core.requests.RequestBuilder`
  declares (``dataset.request_builder``; by default the feature views' join keys plus the model
  features no view provides); the server derives the request-time features and fetches the rest
  from the online feature store.

The shape is decided from the field names: exactly the model's columns is a feature vector,
the declared raw fields (all required ones, no unknown one) a raw request; anything else is a
400 naming the missing and unknown fields of the nearer shape.

V1 carries rows: ``{"instances": [{...}, ...]}``. V2 carries one tensor per column:
``{"inputs": [{"name": "origin", "datatype": "BYTES", "shape": [n], "data": [...]}, ...]}``.
Both decode to the same columnar :class:`ParsedRequest`. Every client mistake raises a
:class:`RequestError` carrying its HTTP status and a message that names the problem.
Pure Python and numpy: no pandas, no KServe, so the hot path stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import numpy as np

    from kfops.core.model import FeatureSpec
    from kfops.core.requests import RawField, RawSchema

    # The raw schema, or a function giving it (None: this server takes feature vectors only).
    RawSource = RawSchema | Callable[[], RawSchema | None] | None

FEATURES = "features"
RAW = "raw"

MAX_STRING_CHARS = 256
MAX_ABS_NUMBER = 3.4e38  # float32 range: larger values would silently become infinity

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
    """Raw requests were sent to a server started without an online feature lookup."""

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


def _shape_hint(spec: FeatureSpec, raw: RawSchema | None) -> str:
    vector = f"all {len(spec.columns)} model features ({', '.join(spec.columns)})"
    if raw is None:
        return f"send {vector} (this server completes no raw requests)"
    return f"send either {vector} or {raw.hint()}"


def _raw_schema(raw: RawSource) -> RawSchema | None:
    return raw() if callable(raw) else raw


def classify(names, spec: FeatureSpec, raw: RawSource = None, where: str = "request") -> str:
    """Which request shape a set of field names is; raises naming missing and unknown fields."""
    names = set(names)
    features = set(spec.columns)
    if names == features:
        return FEATURES
    schema = _raw_schema(raw)
    if schema is not None and schema.required <= names <= schema.allowed:
        return RAW
    # The nearer shape (fewer missing + unknown fields) names the mistakes.
    shapes = [(FEATURES, features, features, "a feature vector")]
    if schema is not None:
        shapes.append((RAW, set(schema.required), set(schema.allowed), schema.name))
    _, required, allowed, what = min(shapes, key=lambda s: len(s[1] - names) + len(names - s[2]))
    missing, unknown = required - names, names - allowed
    parts = []
    if missing:
        parts.append(f"missing field(s) {_names(missing)}")
    if unknown:
        parts.append(f"unknown field(s) {_names(unknown)}")
    raise RequestError(f"{where}: {'; '.join(parts)} for {what}: {_shape_hint(spec, schema)}")


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
    if type(value) is bool:  # a boolean column is a category of "True"/"False", as training saw it
        return str(value)
    if value is None and nullable:
        return None
    expected = "a string or null" if nullable else "a string"
    raise RequestError(f"{where}: expected {expected}, got {_type_name(value)}")


def _key(value: Any, where: str) -> str | int:
    if type(value) is int:
        return value
    if type(value) is str:
        return _string(value, where, nullable=False)  # type: ignore[return-value]
    raise RequestError(f"{where}: expected a string or an integer, got {_type_name(value)}")


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _plainly_valid(field: RawField, value: Any) -> bool:
    """Whether ``value`` is a common valid value of ``field`` (a short string, an in-range number):
    those skip :func:`_check_raw_value` and the error label it needs. False is no verdict."""
    kind = field.kind
    kind_of = type(value)
    if kind_of is str:
        return (kind == "string" or kind == "key") and len(value) <= MAX_STRING_CHARS and (
            value != "" or not field.non_empty)
    if kind_of is float:
        if kind != "number" or not math.isfinite(value) or abs(value) > MAX_ABS_NUMBER:
            return False
    elif kind_of is int:
        if kind == "key":
            return True
        if kind == "string" or abs(value) > MAX_ABS_NUMBER:
            return False
    else:
        return False
    return (field.minimum is None or value >= field.minimum) and (field.maximum is None or value <= field.maximum)


def _check_raw_value(field: RawField, value: Any, where: str) -> None:
    """Raise the RequestError for a value of ``field`` that is not valid (``where`` names it)."""
    kind, nullable = field.kind, field.nullable
    if value is None and nullable:
        return
    if kind == "string":
        if _string(value, where, nullable=nullable) == "" and field.non_empty:
            raise RequestError(f"{where}: must not be empty")
        return
    if kind == "key":
        if _key(value, where) == "" and field.non_empty:
            raise RequestError(f"{where}: must not be empty")
        return
    if kind == "integer":
        if type(value) is not int or (field.minimum is not None and value < field.minimum) or (
                field.maximum is not None and value > field.maximum):
            bounds = f" {_bound(field.minimum)}..{_bound(field.maximum)}" if field.minimum is not None and \
                field.maximum is not None else ""
            raise RequestError(f"{where}: expected an integer{bounds}, got {value!r}")
        return
    number = _number(value, where, nullable=nullable)
    if field.minimum is not None and number < field.minimum:
        raise RequestError(f"{where}: must be >= {_bound(field.minimum)}, got {number}")
    if field.maximum is not None and number > field.maximum:
        raise RequestError(f"{where}: must be <= {_bound(field.maximum)}, got {number}")


def _raw_values(field: RawField, values: list, labels: list[str]) -> list:
    """Check one raw field's values (and parse them when the field says how)."""
    name = field.name
    for i, value in enumerate(values):
        if not _plainly_valid(field, value):
            _check_raw_value(field, value, f"{labels[i]} field '{name}'")
            if field.kind == "string" and type(value) is bool:
                values[i] = str(value)
    if field.parse is None:
        return values
    parsed = []
    for i, value in enumerate(values):
        if value is None:
            parsed.append(None)
            continue
        try:
            parsed.append(field.parse(value))
        except (ValueError, OverflowError) as err:
            raise RequestError(f"{labels[i]} field '{name}': {err}") from None
    return parsed


def validate_columns(kind: str, columns: dict[str, list], spec: FeatureSpec, labels: list[str],
                     raw: RawSource = None) -> None:
    """Check and normalise every value in place; ``labels[i]`` names row i in error messages."""
    if kind == FEATURES:
        for name in spec.columns:
            values = columns[name]
            if name in spec.categorical:
                for i, value in enumerate(values):
                    if type(value) is str and len(value) <= MAX_STRING_CHARS:
                        continue
                    values[i] = _string(value, f"{labels[i]} field '{name}'", nullable=True)
            else:
                for i, value in enumerate(values):
                    kind_of = type(value)
                    if kind_of is float and math.isfinite(value) and abs(value) <= MAX_ABS_NUMBER:
                        continue
                    _number(value, f"{labels[i]} field '{name}'", nullable=True)
        return
    schema = _raw_schema(raw)
    assert schema is not None  # classify returned RAW
    for name, values in columns.items():
        columns[name] = _raw_values(schema.by_name[name], values, labels)


# ---------------------------------------------------------------------------------------------
# V1: {"instances": [{...}, ...]}


def decode_v1(body: Any, spec: FeatureSpec, raw: RawSource = None) -> ParsedRequest:
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
    kind = classify(first.keys(), spec, raw, "instance 0")
    names = list(first.keys())
    columns: dict[str, list] = {name: [] for name in names}
    for i, instance in enumerate(instances):
        if type(instance) is not dict:
            raise RequestError(f"instance {i} must be an object of field -> value, got {_type_name(instance)}")
        if instance.keys() != first.keys():
            if classify(instance.keys(), spec, raw, f"instance {i}") != kind:
                raise RequestError(f"instance {i} is a different shape than instance 0: send one shape per request")
            missing = set(names) - instance.keys()
            if missing:  # optional raw fields present in one row but not another
                raise RequestError(f"instance {i}: missing field(s) {_names(missing)} that instance 0 has")
            extra = instance.keys() - set(names)
            raise RequestError(f"instance {i}: field(s) {_names(extra)} that instance 0 lacks")
        for name in names:
            columns[name].append(instance[name])
    rows = len(instances)
    labels = [f"instance {i}" for i in range(rows)]
    validate_columns(kind, columns, spec, labels, raw)
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


def _check_datatype(name: str, datatype: str, kind: str, spec: FeatureSpec, raw: RawSource) -> None:
    if kind == FEATURES:
        wants_string = name in spec.categorical
    else:
        field_kind = _raw_schema(raw).by_name[name].kind  # type: ignore[union-attr]
        if field_kind == "key":
            if datatype != "BYTES" and datatype not in V2_INTEGER_TYPES:
                raise RequestError(f"input '{name}': datatype {datatype} where BYTES or an integer datatype is "
                                   "expected")
            return
        if field_kind == "integer" and datatype not in V2_INTEGER_TYPES:
            raise RequestError(f"input '{name}': datatype {datatype} where an integer datatype is expected")
        wants_string = field_kind == "string"
    if wants_string and datatype != "BYTES":
        raise RequestError(f"input '{name}': datatype {datatype} where BYTES (a string) is expected")
    if not wants_string and datatype not in V2_NUMERIC_TYPES:
        raise RequestError(f"input '{name}': datatype {datatype} where a numeric datatype is expected")


def decode_v2(body: Any, spec: FeatureSpec, raw: RawSource = None) -> ParsedRequest:
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
    kind = classify(names, spec, raw, "inputs")
    if kind == RAW:
        raw = _raw_schema(raw)
    rows = decoded[0][2]
    if rows == 0:
        raise RequestError("inputs hold zero rows; send at least one")
    columns: dict[str, list] = {}
    for name, datatype, count, data in decoded:
        if count != rows:
            raise RequestError(f"input '{name}' has {count} rows but input '{decoded[0][0]}' has {rows}")
        _check_datatype(name, datatype, kind, spec, raw)
        if datatype in V2_INTEGER_TYPES:
            for value in data:
                if type(value) is not int and value is not None:
                    raise RequestError(f"input '{name}': datatype {datatype} but {value!r} is not an integer")
        columns[name] = data
    validate_columns(kind, columns, spec, [f"row {i}" for i in range(rows)], raw)
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
