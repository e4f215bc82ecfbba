"""Request decoding and validation: both request shapes, both protocols, and every client mistake
answered with a RequestError that names the problem."""

from __future__ import annotations

import datetime as dt
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfops.core.model import FeatureSpec
from kfops.core.requests import RawField, RawSchema
from kfops.datasets.flights.serving import RAW_FLIGHT
from kfops.serving.protocol import payloads
from kfops.serving.protocol.payloads import (
    FEATURES,
    RAW,
    MalformedJSON,
    RequestError,
    parse_json,
    v1_response,
    v2_response,
)
from tests.support.serving_models import CATEGORICAL, COLUMNS, synthetic_features

SPEC = FeatureSpec.fit(synthetic_features(300), COLUMNS, CATEGORICAL)
FLIGHTS = RawSchema.of(RAW_FLIGHT)
FLIGHT_REQUIRED = sorted(FLIGHTS.required)
FLIGHT_OPTIONAL = sorted(FLIGHTS.allowed - FLIGHTS.required)


def decode_v1(body, spec, raw=FLIGHTS):
    """The decoders with the flights raw request, as a server configured with it decodes."""
    return payloads.decode_v1(body, spec, raw)


def decode_v2(body, spec, raw=FLIGHTS):
    return payloads.decode_v2(body, spec, raw)


def feature_row(seed: int = 1) -> dict:
    return synthetic_features(1, seed).drop(columns="label").to_dict("records")[0]


def flight_row(**changes) -> dict:
    row = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228", "distance": 1400,
           "sched_dep": "2013-01-01T05:15", "flight": 1545}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


def v2_body(row: dict, rows: int = 1) -> dict:
    inputs = []
    for name, value in row.items():
        datatype = "BYTES" if isinstance(value, str) else ("INT64" if isinstance(value, int) else "FP64")
        inputs.append({"name": name, "datatype": datatype, "shape": [rows], "data": [value] * rows})
    return {"inputs": inputs}


def error_of(decode, body) -> str:
    with pytest.raises(RequestError) as caught:
        decode(body, SPEC)
    return caught.value.message


# --- the two shapes ------------------------------------------------------------------------------


def test_v1_feature_vectors_decode_to_columns():
    rows = [feature_row(1), feature_row(2)]
    parsed = decode_v1({"instances": rows}, SPEC)
    assert parsed.kind == FEATURES and parsed.rows == 2 and parsed.protocol == "v1"
    assert parsed.columns["origin"] == [rows[0]["origin"], rows[1]["origin"]]
    assert parsed.columns["temp"] == [rows[0]["temp"], rows[1]["temp"]]


def test_v2_feature_tensors_decode_to_the_same_columns_as_v1():
    row = feature_row(3)
    v1 = decode_v1({"instances": [row, row]}, SPEC)
    v2 = decode_v2(v2_body(row, rows=2), SPEC)
    assert v2.kind == FEATURES and v2.protocol == "v2"
    assert v2.columns == v1.columns


def test_nulls_are_missing_values_in_a_feature_vector():
    row = feature_row() | {"temp": None, "manufacturer": None}
    parsed = decode_v1({"instances": [row]}, SPEC)
    assert parsed.columns["temp"] == [None] and parsed.columns["manufacturer"] == [None]


def test_raw_flight_decodes_with_sched_dep_as_new_york_local_time():
    parsed = decode_v1({"instances": [flight_row()]}, SPEC)
    assert parsed.kind == RAW
    assert parsed.columns["sched_dep"] == [dt.datetime(2013, 1, 1, 5, 15)]


def test_sched_dep_with_an_offset_is_converted_to_new_york_time():
    parsed = decode_v1({"instances": [flight_row(sched_dep="2013-07-01T12:00:00Z")]}, SPEC)
    assert parsed.columns["sched_dep"] == [dt.datetime(2013, 7, 1, 8, 0)]  # EDT is UTC-4


def test_tailnum_and_flight_are_optional_for_a_raw_flight():
    parsed = decode_v1({"instances": [flight_row(tailnum=..., flight=...)]}, SPEC)
    assert parsed.kind == RAW and "tailnum" not in parsed.columns


def test_v2_raw_flight_and_nested_row_major_data():
    body = v2_body(flight_row(), rows=2)
    for tensor in body["inputs"]:
        tensor["shape"] = [2, 1]
        tensor["data"] = [[v] for v in tensor["data"]]
    parsed = decode_v2(body, SPEC)
    assert parsed.kind == RAW and parsed.rows == 2 and parsed.columns["carrier"] == ["UA", "UA"]


def test_v2_keeps_the_request_id_and_requested_outputs():
    body = v2_body(feature_row()) | {"id": "req-7", "outputs": [{"name": "label"}]}
    parsed = decode_v2(body, SPEC)
    assert parsed.request_id == "req-7" and parsed.outputs == ("label",)


# --- mistakes, each with a message that names it -------------------------------------------------


@pytest.mark.parametrize("body", [b"{", b"NaN", b'{"instances": [{"temp": Infinity}]}', b"1e999", b"\xff\xfe"])
def test_malformed_json_nan_and_infinity_are_rejected(body):
    with pytest.raises(MalformedJSON, match="not valid JSON"):
        parse_json(body)


def test_missing_and_unknown_fields_are_named():
    row = feature_row()
    del row["temp"]
    row["dep_delay"] = 3.0
    message = error_of(decode_v1, {"instances": [row]})
    assert "missing field(s) 'temp'" in message and "unknown field(s) 'dep_delay'" in message


def test_raw_flight_missing_a_required_field_is_named():
    message = error_of(decode_v1, {"instances": [flight_row(distance=...)]})
    assert "missing field(s) 'distance'" in message and "raw flight" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("temp", "warm", "field 'temp': expected a number or null, got string"),
        ("temp", True, "field 'temp': expected a number or null, got boolean"),
        ("temp", 1e39, "out of range"),
        ("origin", 3, "field 'origin': expected a string or null, got number"),
        ("origin", ["EWR"], "expected a string or null, got array"),
    ],
)
def test_wrong_types_in_a_feature_vector(field, value, expected):
    assert expected in error_of(decode_v1, {"instances": [feature_row() | {field: value}]})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"distance": -5}, "must be >= 0"),
        ({"distance": "far"}, "expected a number, got string"),
        ({"carrier": ""}, "must not be empty"),
        ({"flight": 1.5}, "expected an integer"),
        ({"sched_dep": "tomorrow"}, "not an ISO 8601 date-time"),
        ({"sched_dep": "2013-03-10T02:30"}, "does not exist in New York local time"),
        ({"sched_dep": "2013-11-03T01:30"}, "ambiguous in New York local time"),
        ({"sched_dep": "1200-01-01T10:00"}, "outside 1900..2100"),
        ({"sched_dep": "0001-01-01T00:00+05:00"}, "outside 1900..2100"),
        ({"tailnum": 5}, "field 'tailnum': expected a string or null"),
    ],
)
def test_wrong_values_in_a_raw_flight(changes, expected):
    assert expected in error_of(decode_v1, {"instances": [flight_row(**changes)]})


def test_the_repeated_hour_is_refused_even_with_an_offset():
    # request_features works in naive local time, where 01:30 on that day happens twice.
    message = error_of(decode_v1, {"instances": [flight_row(sched_dep="2013-11-03T01:30-04:00")]})
    assert "ambiguous" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], "must be a JSON object"),
        ({}, "'instances' must be a non-empty array"),
        ({"instances": []}, "'instances' must be a non-empty array"),
        ({"instances": [1]}, "instance 0 must be an object"),
        ({"instances": [{"temp": 1}], "extra": 1}, "unknown field(s) 'extra'"),
    ],
)
def test_v1_body_shape_mistakes(body, expected):
    assert expected in error_of(decode_v1, body)


def test_v1_rows_of_different_shapes_are_rejected():
    message = error_of(decode_v1, {"instances": [feature_row(), flight_row()]})
    assert "instance 1" in message


def test_v1_row_with_fewer_optional_fields_than_the_first_is_rejected():
    message = error_of(decode_v1, {"instances": [flight_row(), flight_row(flight=...)]})
    assert "instance 1" in message and "'flight'" in message


def _v2_with(change):
    body = v2_body(feature_row())
    change(body)
    return body


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b: b.update(inputs=[]), "'inputs' must be a non-empty array"),
        (lambda b: b["inputs"][0].pop("datatype"), "input 0: missing 'datatype'"),
        (lambda b: b["inputs"][0].update(datatype="FP128"), "unknown datatype"),
        (lambda b: b["inputs"][0].update(datatype="FP32"), "where BYTES (a string) is expected"),
        (lambda b: b["inputs"][3].update(datatype="BYTES"), "where a numeric datatype is expected"),
        (lambda b: b["inputs"][3].update(shape=[2]), "shape [2] says 2 values but 'data' holds 1"),
        (lambda b: b["inputs"][3].update(shape=[1, 2]), "'shape' must be [rows] or [rows, 1]"),
        (lambda b: b["inputs"][3].update(data=5), "'data' must be an array"),
        (lambda b: b["inputs"].append(dict(b["inputs"][0])), "appear more than once"),
        (lambda b: b["inputs"][4].update(datatype="INT64", data=[1.5]), "is not an integer"),
        (lambda b: b.update(id=5), "'id' must be a string"),
        (lambda b: b.update(outputs=[{"name": "logits"}]), "unknown output 'logits'"),
        (lambda b: b.update(instances=[]), "unknown field(s) 'instances'"),
    ],
)
def test_v2_mistakes(change, expected):
    assert expected in error_of(decode_v2, _v2_with(change))


def test_v2_inputs_with_different_row_counts_are_rejected():
    body = v2_body(feature_row(), rows=2)
    body["inputs"][1] = {**body["inputs"][1], "shape": [1], "data": body["inputs"][1]["data"][:1]}
    assert "has 1 rows but input 'origin' has 2" in error_of(decode_v2, body)


# --- responses -----------------------------------------------------------------------------------


def test_responses_carry_probability_label_and_version():
    import numpy as np

    probabilities = np.array([0.2, 0.7])
    v1 = v1_response(probabilities, 0.5, "m", "3")
    assert v1 == {"predictions": [{"probability": 0.2, "label": 0}, {"probability": 0.7, "label": 1}],
                  "model_name": "m", "model_version": "3"}
    v2 = v2_response(probabilities, 0.5, "m", "3", "r1")
    assert v2["outputs"][0] == {"name": "probability", "datatype": "FP64", "shape": [2], "data": [0.2, 0.7]}
    assert v2["outputs"][1]["data"] == [0, 1] and v2["id"] == "r1" and v2["model_version"] == "3"


# --- property: nothing a client sends escapes as anything but a RequestError ---------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _mutations():
    names = [*COLUMNS, "sched_dep", "carrier", "flight", "inputs", "instances", "shape", "data", "datatype"]
    return st.fixed_dictionaries({
        "protocol": st.sampled_from(["v1", "v2"]),
        "base": st.sampled_from(["features", "flight"]),
        "drop": st.lists(st.sampled_from(names), max_size=2),
        "set": st.dictionaries(st.sampled_from(names), JSON_VALUES, max_size=3),
    })


def _mutated_body(m: dict):
    row = feature_row() if m["base"] == "features" else flight_row()
    for name in m["drop"]:
        row.pop(name, None)
    row.update(m["set"])
    if m["protocol"] == "v1":
        return {"instances": [row]}
    body = v2_body({k: v for k, v in row.items() if not isinstance(v, (dict, list))})
    for tensor in body["inputs"]:
        if tensor["name"] in m["set"]:
            tensor["data"] = m["set"][tensor["name"]]
    return body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(body=JSON_VALUES, mutation=_mutations())
def test_any_json_is_decoded_or_refused_with_a_request_error(body, mutation):
    for candidate in (body, _mutated_body(mutation)):
        for decode in (decode_v1, decode_v2):
            try:
                parsed = decode(orjson.loads(json.dumps(candidate)), SPEC)
            except RequestError as err:
                assert err.status == 400 and err.message
            else:
                assert parsed.rows >= 1
                if parsed.kind == FEATURES:
                    assert set(parsed.columns) == set(COLUMNS)
                else:
                    assert set(FLIGHT_REQUIRED) <= set(parsed.columns) <= {*FLIGHT_REQUIRED, *FLIGHT_OPTIONAL}


RAW_VALUE_KINDS = [
    payloads_field for kind in ("string", "number", "integer", "key") for payloads_field in (
        RawField("f", kind),
        RawField("f", kind, nullable=True, non_empty=True),
        RawField("f", kind, minimum=0, maximum=10),
        RawField("f", kind, minimum=-1.5),
    )
]
RAW_VALUES = [None, True, False, 0, 1, -1, 10, 11, 2**200, -(2**200), 0.0, 5.5, -1.5, -2.0, 10.5, 1e39, float("nan"),
              float("inf"), "", "x", "N123", "x" * 256, "x" * 257, [], {}, [1]]


@pytest.mark.parametrize("field", RAW_VALUE_KINDS, ids=lambda f: f"{f.kind}-{f.nullable}-{f.minimum}-{f.maximum}")
def test_raw_values_taken_without_the_full_check_are_ones_the_full_check_accepts(field):
    """The fast acceptance of common raw values never lets through what the full check refuses."""
    for value in RAW_VALUES:
        if payloads._plainly_valid(field, value):
            payloads._check_raw_value(field, value, "row 0 field 'f'")  # must not raise
    assert payloads._plainly_valid(RawField("f", "string"), "N123")
    assert payloads._plainly_valid(RawField("f", "number", minimum=0), 5.5)


def test_a_boolean_category_decodes_to_the_category_training_saw():
    """A bool column is categorical ("False"/"True" in the vocabulary, as FeatureSpec saw it), and a
    client sends JSON true/false: refusing it failed the deploy's smoke test, whose input example
    holds the training row's real booleans."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"weekend": [True, False, True], "amount": [1.0, 2.0, 3.0]})
    spec = FeatureSpec.fit(frame, ["weekend", "amount"], ["weekend"])
    assert spec.categorical["weekend"] == ["False", "True"]
    v1 = decode_v1({"instances": [{"weekend": True, "amount": 1.0}, {"weekend": False, "amount": 2.0}]}, spec)
    assert v1.columns["weekend"] == ["True", "False"]
    np.testing.assert_array_equal(spec.encode(pd.DataFrame(v1.columns)), spec.encode(frame.iloc[:2]))
    v2 = decode_v2({"inputs": [{"name": "weekend", "datatype": "BYTES", "shape": [2], "data": [True, False]},
                               {"name": "amount", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}]}, spec)
    assert v2.columns["weekend"] == ["True", "False"]
    from kfops.core.requests import PassThroughBuilder

    builder = PassThroughBuilder([RawField("customer_id", "key"), RawField("weekend", "string"),
                                  RawField("amount", "number")])
    raw = decode_v1({"instances": [{"weekend": False, "amount": 1.0, "customer_id": "C1"}]}, spec,
                    RawSchema.of(builder))
    assert raw.columns["weekend"] == ["False"]
