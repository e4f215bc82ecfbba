"""The hot-path RowEncoder must give bit-identical matrices to FeatureSpec.encode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfops.core.model import FeatureSpec
from kfops.serving.protocol.encoding import RowEncoder
from kfops.serving.protocol.payloads import decode_v1
from tests.support.serving_models import CATEGORICAL, COLUMNS, synthetic_features

SPEC = FeatureSpec.fit(synthetic_features(300), COLUMNS, CATEGORICAL)


def assert_same_matrix(columns: dict[str, list], rows: int) -> None:
    fast = RowEncoder(SPEC).encode(columns, rows)
    reference = SPEC.encode(pd.DataFrame(columns))
    assert fast.dtype == np.float32 and fast.shape == (rows, len(SPEC.columns))
    assert fast.flags.c_contiguous
    # Bit-for-bit, NaN where NaN: compare the raw bytes.
    assert fast.tobytes() == reference.tobytes()


def test_realistic_rows_encode_identically():
    frame = synthetic_features(500, seed=11).drop(columns="label")
    assert_same_matrix(frame.to_dict("list"), len(frame))


def test_rows_decoded_from_a_request_encode_like_the_dataframe_of_those_rows():
    rows = synthetic_features(20, seed=12).drop(columns="label").to_dict("records")
    rows[0]["origin"] = "XXX"  # unknown category -> NaN
    rows[1]["temp"] = None  # missing -> NaN
    rows[2]["manufacturer"] = None
    parsed = decode_v1({"instances": rows}, SPEC)
    fast = RowEncoder(SPEC).encode(parsed.columns, parsed.rows)
    assert fast.tobytes() == SPEC.encode(pd.DataFrame(rows)).tobytes()
    assert np.isnan(fast[0, SPEC.columns.index("origin")]) and np.isnan(fast[1, SPEC.columns.index("temp")])


def _value(column: str):
    if column in SPEC.categorical:
        return st.one_of(st.sampled_from(SPEC.categorical[column]), st.text(max_size=6), st.none())
    return st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-3.4e38, max_value=3.4e38),
        st.integers(min_value=-(2**53), max_value=2**53),
        st.none(),
    )


@pytest.mark.slow  # 100 examples over every column: 11-14 s on 2 busy cores
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=st.data(), rows=st.integers(min_value=1, max_value=6))
def test_any_valid_values_encode_identically(data, rows):
    columns = {c: data.draw(st.lists(_value(c), min_size=rows, max_size=rows), label=c) for c in SPEC.columns}
    assert_same_matrix(columns, rows)


def _arrow_matches_pandas(frame: pd.DataFrame, coerce: bool = False) -> None:
    import pyarrow as pa

    from kfops.serving.protocol.encoding import encode_arrow

    table = pa.Table.from_pandas(frame, preserve_index=False)
    reference = SPEC.encode(table.to_pandas())
    assert encode_arrow(table, SPEC, coerce=coerce).tobytes() == reference.tobytes()
    for batch in table.to_batches(max_chunksize=7):  # record batches too, as the batch scorer reads them
        assert encode_arrow(batch, SPEC, coerce=coerce).tobytes() == SPEC.encode(batch.to_pandas()).tobytes()


def test_arrow_encoder_matches_the_spec_on_realistic_data():
    frame = synthetic_features(300, seed=13).drop(columns="label")
    frame.loc[::7, "origin"] = None
    frame.loc[::11, "dest"] = "NEW"
    frame.loc[::5, "temp"] = np.nan
    frame["dep_hour"] = frame["dep_hour"].astype("Int64")
    frame.loc[3, "dep_hour"] = pd.NA  # an integer column with a null
    _arrow_matches_pandas(frame)


def test_arrow_encoder_handles_dictionaries_and_falls_back_to_the_spec_for_unusual_types():
    frame = synthetic_features(40, seed=14).drop(columns="label")
    frame["distance"] = frame["distance"].astype(str)  # numbers stored as text
    frame.loc[0, "distance"] = "far"  # -> NaN when coercing, as pandas.to_numeric(errors="coerce") says
    frame["month"] = frame["month"] > 6  # booleans
    frame.loc[1, "origin"] = None
    frame.loc[2, "origin"] = "ZZZ"  # unknown to the model
    frame["origin"] = frame["origin"].astype("category")  # an Arrow dictionary
    frame["dest"] = frame["dest"].astype("category")
    _arrow_matches_pandas(frame, coerce=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=st.data(), rows=st.integers(min_value=1, max_value=6))
def test_arrow_encoder_matches_the_spec_on_any_valid_values(data, rows):
    columns = {c: data.draw(st.lists(_value(c), min_size=rows, max_size=rows), label=c) for c in SPEC.columns}
    frame = pd.DataFrame(columns)
    for name in SPEC.columns:
        if name not in SPEC.categorical:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    _arrow_matches_pandas(frame)


def test_a_single_row_takes_its_own_path_to_the_same_bytes():
    rows = synthetic_features(3, seed=13).drop(columns="label").to_dict("records")
    rows[0]["origin"], rows[1]["temp"], rows[2]["manufacturer"] = "XXX", None, None
    for row in rows:
        parsed = decode_v1({"instances": [row]}, SPEC)
        assert RowEncoder(SPEC).encode(parsed.columns, 1).tobytes() == SPEC.encode(pd.DataFrame([row])).tobytes()
