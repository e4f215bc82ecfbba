"""A hot-path encoder: validated request columns -> the model's float32 matrix, without pandas.

It must produce exactly what :meth:`kfops.core.model.FeatureSpec.encode` produces for the same values
(``tests/unit/test_serving_encoding.py`` checks bit-for-bit equality), so serving and training
cannot disagree. Categoricals map through a dict built once from the spec's vocabulary; unknown
values and nulls become NaN, as in ``FeatureSpec.encode``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from kfops.core.model import FeatureSpec

NAN = float("nan")


class RowEncoder:
    def __init__(self, spec: FeatureSpec):
        self.columns = list(spec.columns)
        # None for numeric columns, value -> code for categorical ones.
        self._vocab: list[dict[str, float] | None] = [
            {value: float(code) for code, value in enumerate(spec.categorical[name])}
            if name in spec.categorical else None
            for name in self.columns
        ]
        self._pairs = list(zip(self.columns, self._vocab, strict=True))

    def encode(self, columns: dict[str, list], rows: int) -> np.ndarray:
        """``columns`` holds one list per spec column (validated: str/None or number/None)."""
        if rows == 1:  # the common online request: one row, built directly in row-major order
            row = []
            for name, vocab in self._pairs:
                value = columns[name][0]
                if vocab is None:
                    row.append(NAN if value is None else float(value))
                else:
                    row.append(vocab.get(value, NAN))
            return np.array(row, dtype=np.float32).reshape(1, len(row))
        flat: list[float] = []
        extend = flat.extend
        for name, vocab in zip(self.columns, self._vocab, strict=True):
            values = columns[name]
            if vocab is None:
                extend([NAN if v is None else float(v) for v in values])
            else:
                get = vocab.get
                extend([get(v, NAN) for v in values])
        matrix = np.array(flat, dtype=np.float32).reshape(len(self.columns), rows)
        return np.ascontiguousarray(matrix.T)


NULL_TEXTS = frozenset({"", "nan", "na", "n/a", "null", "none"})


def encode_arrow(data: pa.Table | pa.RecordBatch, spec: FeatureSpec, *, coerce: bool = False,
                 row_offset: int = 0) -> np.ndarray:
    """Batch scoring's encoder: Arrow columns -> the model's matrix, without a pandas round trip.

    Same matrix as ``spec.encode(data.to_pandas())`` (tested): categoricals are looked up in the
    vocabulary as strings (null or unknown -> NaN), numbers go float64 -> float32 as pandas does.
    Columns of other types (numbers stored as text, categoricals stored as numbers) take
    ``FeatureSpec.encode``'s pandas path, so the rules stay in one place. A numeric feature
    stored as text that holds a value which is not a number is a DataError naming the row
    (counted from ``row_offset``) and the column, unless ``coerce`` (then it is missing).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [c for c in spec.columns if c not in data.schema.names]
    if missing:
        from kfops.errors import DataError

        raise DataError(f"input lacks feature column(s) {', '.join(missing)}")
    out = np.empty((data.num_rows, len(spec.columns)), dtype=np.float32)
    for j, name in enumerate(spec.columns):
        column = data.column(name)
        kind = column.type
        if name in spec.categorical and pa.types.is_dictionary(kind) and _is_text(kind.value_type):
            # Look the (small) dictionary up once, then map every row's index through it.
            vocab = pa.array(spec.categorical[name], type=kind.value_type)
            chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
            codes = [pc.take(pc.index_in(chunk.dictionary, value_set=vocab), chunk.indices) for chunk in chunks]
            out[:, j] = np.concatenate([c.to_numpy(zero_copy_only=False) for c in codes]) if codes else []
            continue
        if pa.types.is_dictionary(kind):
            column, kind = column.cast(kind.value_type), kind.value_type
        if name in spec.categorical and _is_text(kind):
            codes = pc.index_in(column, value_set=pa.array(spec.categorical[name], type=kind))
            out[:, j] = codes.to_numpy(zero_copy_only=False)  # null -> NaN
        elif name not in spec.categorical and (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            out[:, j] = column.to_numpy(zero_copy_only=False)  # nulls -> NaN (as float64)
        else:
            import pandas as pd

            values = column.to_pandas()
            if not coerce and name not in spec.categorical and _is_text(kind):
                _refuse_text_in_numbers(values, name, row_offset)
            frame = pd.DataFrame({name: values})
            out[:, j] = type(spec)([name], {k: v for k, v in spec.categorical.items() if k == name}).encode(frame)[:, 0]
    return out


def _refuse_text_in_numbers(values: Any, name: str, row_offset: int) -> None:
    import pandas as pd

    from kfops.errors import DataError

    numbers = pd.to_numeric(values, errors="coerce")
    text = values.astype("string").str.strip().str.lower()
    bad = numbers.isna() & values.notna() & ~text.isin(NULL_TEXTS)
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"row {row_offset + first}, column '{name}': {values.iloc[first]!r} is not a number "
            f"({int(bad.sum())} such value(s) in this chunk)",
            hint="fix the input, or pass --coerce to score such values as missing",
        )


def _is_text(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)
