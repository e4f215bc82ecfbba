"""Would the server take the rows the model was tested on, and see them as training did?

The evaluate step asks this before anything is registered: a feature whose values a JSON client
cannot send (a boolean category refused by the request checks), or that the server encodes
differently (a category code training never saw), is found on the test split instead of at the
deploy's smoke test, after the alias moved, or in production.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from kfops.core.model import FeatureSpec


def request_parity_problem(spec: FeatureSpec, frame: pd.DataFrame, rows: int = 200) -> str | None:
    """None when the first ``rows`` rows of ``frame``, sent as a client sends JSON (V1 instances),
    pass the server's request checks and encode to the matrix training encodes; else what differs."""
    from kfops.serving.protocol.encoding import RowEncoder
    from kfops.serving.protocol.payloads import RequestError, decode_v1

    sample = frame[spec.columns].head(rows)
    if sample.empty:
        return None
    for name in spec.numeric:  # the server declares a numeric input FP64: a client sends 1/0, not true/false
        if sample[name].dtype == bool or str(sample[name].dtype) == "boolean":
            sample = sample.assign(**{name: sample[name].astype("Int64")})
    # Through JSON text as a client's request is, with every float at full precision (pandas'
    # to_json keeps 10 digits, which the server would then read as another number).
    records = sample.astype(object).where(sample.notna(), None).to_dict(orient="records")
    instances = json.loads(json.dumps(records, default=_json_value))
    try:
        parsed = decode_v1({"instances": instances}, spec)
    except RequestError as err:
        return (f"the server refuses a test row as a client would send it: {err.message} (a categorical "
                "feature is sent as a JSON string: make the column text in the entity builder, e.g. astype(str))")
    served = RowEncoder(spec).encode(parsed.columns, parsed.rows)
    trained = spec.encode(sample)
    differs = ~((served == trained) | (np.isnan(served) & np.isnan(trained)))
    if differs.any():
        row, column = (int(i) for i in np.argwhere(differs)[0])
        name = spec.columns[column]
        return (f"the server encodes feature '{name}' unlike training: test row {row} value "
                f"{sample.iloc[row][name]!r} is {served[row, column]} served, {trained[row, column]} trained "
                f"({int(differs[:, column].sum())} of {len(sample)} rows differ)")
    return None


def _json_value(value: object) -> object:
    """What a JSON client sends for a value json cannot write itself: numpy scalars as numbers or
    booleans, timestamps as ISO 8601 text."""
    if isinstance(value, np.generic):
        return value.item()
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    return str(value)
