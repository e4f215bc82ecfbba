"""Profile a table into Great Expectations checks, each with a ``meta.why`` that says what was inferred.

About four checks in five of a raw-table suite follow from the data: the column set, each column's
type, its nulls, its range (observed, widened by :data:`WIDEN`) and, for a column with few values,
the set of them. The suite format is the one kfops reads (:mod:`kfops.adapters.gx_validation`):
GE's suite JSON, ``$PARAMETER`` bounds kfops fills per run, and a ``meta.kfops`` block.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

NUMBER_TYPES = ["int64", "int32", "Int64", "float64", "float32", "Float64"]
TIMESTAMP_TYPE = "datetime64[ns, UTC]"
WIDEN = 0.10  # observed ranges are widened by this share of the observed span, each side
MAX_CATEGORIES = 30  # a string column with at most this many values gets a value set
NULL_SLACK = 2.0  # an observed null share p allows up to NULL_SLACK * p
ID_SHARE = 0.95  # an int column with at least this share of distinct values may be a row number
# Named as an id: transaction_id, id, "Transaction ID", orderId (not "paid").
ID_NAME = re.compile(r"(?:^|[^A-Za-z0-9])(?:id|Id|ID)$|[a-z0-9](?:Id|ID)$")


@dataclass
class ColumnProfile:
    name: str
    kind: str  # string, int, float, bool, timestamp, other
    rows: int
    nulls: int
    minimum: Any = None
    maximum: Any = None
    values: list[Any] | None = None  # the distinct values when there are few
    distinct: int = 0
    unique: bool = False
    pandas_dtype: str = ""
    monotone: bool = False  # an int column whose values only grow (or only shrink) down the table
    infinite: int = 0  # +-inf values of a float column: kept out of its range, so validation refuses them
    time_text: bool = False  # a string column of many values whose sampled values all read as date-times
    not_numbers: list[str] | None = None  # a string column of numbers but for these few markers ('n.a.', '-')

    @property
    def null_share(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    @property
    def id_like(self) -> bool:
        """A string column with a value per row or so (an id, a free text): no use as a category; or
        an int column that numbers the rows (near-unique, and named as an id or counting up): a
        model would learn the row's place in time from it, not anything about the row."""
        present = self.rows - self.nulls
        if self.kind == "string":
            return self.distinct > MAX_CATEGORIES and self.distinct > 0.5 * present
        if self.kind == "int" and present and self.distinct >= ID_SHARE * present:
            return ID_NAME.search(self.name) is not None or (self.monotone and self.distinct > MAX_CATEGORIES)
        return False

    @property
    def uninformative(self) -> str | None:
        """Why no model can learn from the column, or None: it has no value at all, or one value and
        no nulls (a column with one value and some nulls still tells present from missing)."""
        if self.rows and self.nulls == self.rows:
            return "no value"
        if self.distinct == 1 and not self.nulls:
            return f"one value, {self.values[0]!r}" if self.values else "one value"
        return None

    @property
    def dtype(self) -> str:
        """The FeatureSet dtype of the column (a timestamp or other kind has none)."""
        return {"string": "string", "int": "int", "float": "float", "bool": "bool"}.get(self.kind, "")


@dataclass
class TableProfile:
    name: str
    rows: int
    columns: dict[str, ColumnProfile] = field(default_factory=dict)


def profile_table(name: str, frame: pd.DataFrame) -> TableProfile:
    import numpy as np
    import pandas as pd

    profile = TableProfile(name=name, rows=len(frame))
    for column in frame.columns:
        series = frame[column]
        present = series.dropna()
        kind = _kind(series)
        item = ColumnProfile(name=str(column), kind=kind, rows=len(series), nulls=int(series.isna().sum()),
                             pandas_dtype=_timestamp_dtype(series) if kind == "timestamp" else str(series.dtype))
        ranged = present
        if kind == "float":
            ranged = present[np.isfinite(present.to_numpy(dtype=np.float64))]
            item.infinite = len(present) - len(ranged)
        if kind in ("int", "float", "timestamp") and len(ranged):
            item.minimum, item.maximum = ranged.min(), ranged.max()
        if kind in ("string", "bool", "int") and len(present):
            distinct = pd.unique(present.astype(str) if kind == "string" else present)
            item.distinct = len(distinct)
            if kind in ("string", "bool") and item.distinct <= MAX_CATEGORIES:
                item.values = sorted(distinct.tolist(), key=str)
        else:
            item.distinct = int(present.nunique())
        item.unique = bool(len(present)) and not item.nulls and int(present.nunique()) == len(present)
        if kind == "string" and item.distinct > MAX_CATEGORIES:
            item.time_text = _reads_as_times(present)
            item.not_numbers = None if item.time_text else _number_markers(present)
        if kind == "int":
            item.monotone = bool(present.is_monotonic_increasing or present.is_monotonic_decreasing)
        profile.columns[str(column)] = item
    return profile


def _reads_as_times(values: pd.Series, sample: int = 200) -> bool:
    """Whether a sample of a string column's values all read as date-times ('2024-03-01T09:30Z')."""
    import warnings

    import pandas as pd

    picked = values.astype(str).drop_duplicates().head(sample)
    if not picked.str.contains(r"[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}").all():  # a date in each
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(pd.to_datetime(picked, errors="coerce", utc=True, format="mixed").notna().all())


def _number_markers(values: pd.Series, share: float = 0.95, most: int = 5) -> list[str] | None:
    """The few distinct values that keep a column of numbers text ('n.a.', '-', 'unknown'): None
    unless at least ``share`` of the values are numbers and at most ``most`` distinct ones are not."""
    import pandas as pd

    text = values.astype(str)
    numbers = pd.to_numeric(text, errors="coerce")
    others = text[numbers.isna()]
    if others.empty or len(others) > (1 - share) * len(text) or others.nunique() > most:
        return None
    return sorted(others.unique().tolist())


def _timestamp_dtype(series: pd.Series) -> str:
    """The dtype validation sees: time-zone-aware columns are compared at nanoseconds."""
    import pandas as pd

    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return f"datetime64[ns, {series.dtype.tz}]"
    return str(series.dtype)


def _kind(series: pd.Series) -> str:
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype | pd.CategoricalDtype):
        return "string"
    return "other"


def expect(kind: str, why: str | None = None, when_present: bool = False, **kwargs: Any) -> dict:
    meta: dict[str, Any] = {"why": why} if why else {}
    if when_present:  # skipped when the column is absent (the entity frame before the feature join)
        meta["when_column_present"] = True
    return {"type": f"expect_{kind}", "kwargs": kwargs, "meta": meta}


def param(name: str) -> dict:
    return {"$PARAMETER": name}


def _number(value: float, kind: str) -> float | int:
    if kind == "int":
        return int(value)
    return float(f"{value:.6g}")


def widened(item: ColumnProfile) -> tuple[float | int, float | int, str]:
    """The observed range widened by WIDEN of its span, kept at 0 when nothing was negative."""
    low, high = float(item.minimum), float(item.maximum)
    span = high - low or abs(high) or 1.0
    lo, hi = low - WIDEN * span, high + WIDEN * span
    floor_note = ""
    if low >= 0 > lo:
        lo, floor_note = 0.0, "; never negative, so the floor stays 0"
    if item.kind == "int":
        lo, hi = math.floor(lo), math.ceil(hi)
    infinite_note = (f"; the {item.infinite:,} infinite value(s) observed are outside it, so validation refuses "
                     "them until they are cleaned" if item.infinite else "")
    why = (f"min observed {_number(low, item.kind)}, max observed {_number(high, item.kind)} over "
           f"{item.rows - item.nulls - item.infinite:,} values, widened {WIDEN:.0%} of the span{floor_note}"
           f"{infinite_note}")
    return _number(lo, item.kind), _number(hi, item.kind), why


def null_check(item: ColumnProfile, table_rows: int, when_present: bool = False) -> dict:
    if not item.nulls:
        return expect("column_values_to_not_be_null", f"no nulls in {table_rows:,} rows", when_present, column=item.name)
    share = item.null_share
    mostly = max(0.0, math.floor((1 - NULL_SLACK * share) * 100) / 100)
    return expect("column_values_to_not_be_null",
                  f"{share:.1%} null observed ({item.nulls:,} of {table_rows:,} rows); up to "
                  f"{NULL_SLACK:g}x that is allowed", when_present, column=item.name, mostly=mostly)


def column_checks(item: ColumnProfile, table: str, when_present: bool = False, nulls: bool = True) -> list[dict]:
    """Type, nulls, range or value set of one column, as profiled."""
    checks: list[dict] = []
    where = f"{table}.{item.name}"
    if item.kind == "string":
        checks.append(expect("column_type_to_be", f"{where} holds strings (object column); a numeric dtype here "
                             "means the column was mis-parsed", when_present, column=item.name, type_="object"))
    elif item.kind in ("int", "float"):
        checks.append(expect("column_values_to_be_in_type_list", f"{where} is numeric ({item.kind} observed)",
                             when_present, column=item.name, type_list=NUMBER_TYPES))
    elif item.kind == "timestamp":
        why = (f"{where}: UTC timestamps; naive or string timestamps would shift joins" if item.pandas_dtype
               == TIMESTAMP_TYPE else f"{where}: {item.pandas_dtype} timestamps, as observed")
        checks.append(expect("column_type_to_be", why, when_present, column=item.name,
                             type_=item.pandas_dtype or TIMESTAMP_TYPE))
    if nulls:
        checks.append(null_check(item, item.rows, when_present))
    if item.kind in ("int", "float") and item.minimum is not None:
        low, high, why = widened(item)
        checks.append(expect("column_values_to_be_between", why, when_present, column=item.name,
                             min_value=low, max_value=high))
    elif item.kind in ("string", "bool") and item.values is not None and not item.id_like:
        shown = [v.item() if hasattr(v, "item") else v for v in item.values]
        checks.append(expect("column_values_to_be_in_set",
                             f"the {len(shown)} value(s) observed over {item.rows - item.nulls:,} rows; a new value "
                             "fails until it is added here", when_present, column=item.name, value_set=shown))
    return checks


def rows_check() -> dict:
    return expect("table_row_count_to_be_between",
                  "volume: min_rows/max_rows come from meta.kfops.volume, the config band and the previous run",
                  min_value=param("min_rows"), max_value=param("max_rows"))


def columns_check(names: list[str], exact: bool, why: str) -> dict:
    return expect("table_columns_to_match_set", why, column_set=names, exact_match=exact)


def suite(name: str, notes: str, meta: dict, expectations: list[dict]) -> dict:
    return {"name": name, "notes": notes, "meta": {"kfops": meta}, "expectations": expectations}
