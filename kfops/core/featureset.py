"""A feature is declared once: one :class:`FeatureSet` in a dataset's plug-in module, and the rest follows.

Without it a feature's name is written three times: in the sources writer (the parquet columns),
in the Feast definitions (the FeatureView schema) and in ``features.feature_refs``. With it:

- ``FEATURES.write_sources(tables, source_dir)`` is the sources writer: one parquet file per view,
  holding exactly the declared keys, ``event_timestamp`` and features, cast to their declared types;
- ``kfops.adapters.feast_definitions.feast_objects(FEATURES, source_dir)`` is the body of
  ``definitions.build``: the entities and FeatureViews, schema and TTL from the declaration;
- ``features.feature_set: <module>:FEATURES`` in kfops.yaml makes ``features.feature_refs`` (when
  not written) and the categorical features follow from it (see :func:`load_feature_set`).

Pure data and pandas; nothing here imports Feast (that is the adapter's job).

Example::

    FEATURES = FeatureSet(
        entities=[Entity("customer_id", "string")],
        views=[View("customers", keys=["customer_id"], table="customers", timestamp="signup_at",
                    features=[Feature("segment", "string"), Feature("age", "float")])],
    )
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kfops.core.files import atomic_output, import_object
from kfops.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

Dtype = Literal["string", "int", "float", "bool"]
DTYPES: tuple[str, ...] = ("string", "int", "float", "bool")
EVENT_TIMESTAMP = "event_timestamp"
# A row of a table without a timestamp (static facts) holds from here on.
STATIC_TIMESTAMP = "2000-01-01T00:00:00Z"
_PANDAS_DTYPES = {"string": "object", "int": "int64", "float": "float64", "bool": "bool"}


def _check_dtype(where: str, dtype: str) -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"{where}: dtype '{dtype}' is not one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class Feature:
    """One feature: its name (the model's column), type, and the source column it is read from."""

    name: str
    dtype: Dtype = "float"
    column: str | None = None  # default: the feature's own name
    description: str = ""

    def __post_init__(self) -> None:
        _check_dtype(f"feature '{self.name}'", self.dtype)

    @property
    def source_column(self) -> str:
        return self.column or self.name


@dataclass(frozen=True)
class Entity:
    """A join key the features are looked up by (at training and at serving)."""

    name: str
    dtype: Literal["string", "int"] = "string"
    description: str = ""


@dataclass(frozen=True)
class View:
    """Features read from one raw table, keyed by entities, as of a timestamp column.

    ``timestamp`` None: the table holds static facts, stamped :data:`STATIC_TIMESTAMP`.
    ``ttl`` None or zero: a row never expires; else the join leaves a feature missing when the
    latest row is older than ``ttl``.
    """

    name: str
    keys: list[str]
    features: list[Feature]
    table: str | None = None  # default: the view's name
    timestamp: str | None = None
    ttl: dt.timedelta | None = None
    description: str = ""

    @property
    def source_table(self) -> str:
        return self.table or self.name

    def columns(self) -> list[str]:
        """The columns of the view's source file, in order."""
        return [*self.keys, EVENT_TIMESTAMP, *(f.name for f in self.features)]


@dataclass(frozen=True)
class FeatureSet:
    """The one declaration of a dataset's Feast features."""

    entities: list[Entity]
    views: list[View] = field(default_factory=list)

    def __post_init__(self) -> None:
        known = {e.name for e in self.entities}
        names: dict[str, str] = {}
        for view in self.views:
            unknown = [k for k in view.keys if k not in known]
            if unknown:
                raise ConfigError(f"view '{view.name}' is keyed by {', '.join(unknown)}, not declared as an entity")
            for feature in view.features:
                if feature.name in names:
                    raise ConfigError(
                        f"feature '{feature.name}' is declared in views '{names[feature.name]}' and '{view.name}'",
                        hint="model columns are named by feature alone: give one of them another name "
                        "(Feature(name=..., column=...))",
                    )
                names[feature.name] = view.name

    def feature_refs(self) -> list[str]:
        """``view:feature`` for every declared feature: what ``features.feature_refs`` lists."""
        return [f"{view.name}:{feature.name}" for view in self.views for feature in view.features]

    def categorical(self) -> list[str]:
        """The string features: treated as categories by the trainers."""
        return [f.name for view in self.views for f in view.features if f.dtype == "string"]

    def view(self, name: str) -> View:
        for view in self.views:
            if view.name == name:
                return view
        raise ConfigError(f"no view '{name}' in the feature set (views: {', '.join(v.name for v in self.views)})")

    def source_frame(self, view: View, table: pd.DataFrame) -> pd.DataFrame:
        """The view's offline source from its raw table: declared columns, declared types, UTC time."""
        import pandas as pd

        wanted = [*view.keys, *(f.source_column for f in view.features), *([view.timestamp] if view.timestamp else [])]
        missing = [c for c in dict.fromkeys(wanted) if c not in table.columns]
        if missing:
            raise DataError(f"table '{view.source_table}' lacks column(s) {', '.join(missing)} that view "
                            f"'{view.name}' declares", hint="fix the FeatureSet declaration or the loader")
        # A row without a key can never be joined (and Feast refuses a null key): left out, said so.
        keyless = table[view.keys].isna().any(axis=1)
        if keyless.any():
            print(f"featureset: view '{view.name}': {int(keyless.sum()):,} of {len(table):,} row(s) of table "
                  f"'{view.source_table}' have no {' / '.join(view.keys)} and are left out", flush=True)
            table = table[~keyless]
        data: dict[str, pd.Series] = {}
        for key in view.keys:
            data[key] = self.entity_column(key, table[key], f"{view.source_table}.{key}")
        if view.timestamp:
            stamps = parse_timestamps(table[view.timestamp])
            if stamps.isna().any():
                raise DataError(f"table '{view.source_table}': {int(stamps.isna().sum())} row(s) have no valid "
                                f"'{view.timestamp}' timestamp")
            data[EVENT_TIMESTAMP] = stamps
        else:
            data[EVENT_TIMESTAMP] = pd.Series(pd.Timestamp(STATIC_TIMESTAMP), index=table.index)
        for feature in view.features:
            data[feature.name] = _cast(table[feature.source_column], feature.dtype,
                                       f"{view.source_table}.{feature.source_column}")
        frame = pd.DataFrame(data)[view.columns()]
        # One row per keys and time: of repeated ones the last written wins (as Feast would).
        return frame.drop_duplicates([*view.keys, EVENT_TIMESTAMP], keep="last").reset_index(drop=True)

    def entity_column(self, name: str, values: pd.Series, where: str | None = None) -> pd.Series:
        """Key values as the sources hold them, so that the entity frame and the sources agree:
        canonical text (:func:`canonical_keys`: 237, 237.0 and '237' are all '237') unless the
        entity is declared int. A key no entity declares is text. Missing keys stay missing.

        The entity builder passes its key columns through this (``FEATURES.entity_column(key, ...)``)."""
        import pandas as pd

        declared = {e.name: e.dtype for e in self.entities}.get(name, "string")
        if declared == "string":
            return canonical_keys(values)
        try:
            numbers = pd.to_numeric(values, errors="raise")
        except (TypeError, ValueError) as err:
            raise DataError(f"{where or name} cannot be read as int: {err}") from err
        if (numbers.dropna() % 1 != 0).any():
            raise DataError(f"{where or name} is declared int but holds fractions", hint="declare the entity string")
        return numbers.astype("int64" if numbers.notna().all() else "Int64")

    def write_sources(
        self, tables: dict[str, pd.DataFrame], source_dir: Path, frames: dict[str, pd.DataFrame] | None = None
    ) -> dict[str, Path]:
        """Write each view's source as ``<source_dir>/<view>.parquet``; returns the paths by view.

        ``frames`` gives a view's rows ready made (a derived view, such as a rolling aggregate,
        computed by the plug-in): the same columns and casts are applied to them, as to a raw
        table holding the declared columns under their feature names.
        """
        source_dir = Path(source_dir).expanduser().resolve()
        source_dir.mkdir(parents=True, exist_ok=True)
        frames = frames or {}
        paths = {}
        for view in self.views:
            if view.name in frames:
                plain = View(view.name, view.keys, [Feature(f.name, f.dtype) for f in view.features],
                             timestamp=EVENT_TIMESTAMP, ttl=view.ttl)
                frame = self.source_frame(plain, frames[view.name])
            elif view.source_table in tables:
                frame = self.source_frame(view, tables[view.source_table])
            else:
                raise DataError(f"view '{view.name}' reads table '{view.source_table}', which the loader did not "
                                f"return (tables: {', '.join(sorted(tables))})")
            path = source_dir / f"{view.name}.parquet"
            with atomic_output(path) as partial:
                # Microseconds: duckdb (Feast's offline store here) cannot cast nanosecond TIMESTAMPTZ.
                frame.astype({EVENT_TIMESTAMP: "datetime64[us, UTC]"}).to_parquet(partial, index=False)
            paths[view.name] = path
        return paths


def canonical_key(value: object) -> str | None:
    """One key as text, written one way whatever type it came in: an integral number as its
    digits (237, 237.0 and numpy's 237 are all '237'), other text as it is ('007' stays '007':
    a zero-padded code is another key than 7), missing (None, NaN, NA) as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if math.isnan(number):
            return None
        # A float key column is what pandas makes of integer ids once one is missing: 237.0 is 237.
        return str(int(number)) if number.is_integer() else repr(number)
    text = str(value)
    return None if text in ("NaT", "<NA>") else text


def canonical_keys(values: pd.Series) -> pd.Series:
    """:func:`canonical_key` of every value: an object column of text, None where missing.

    The one spelling of a key column: the sources writer, the entity frame and the server's
    lookups all use it, so that a float column (237.0) and an int one (237) still join."""
    import pandas as pd

    texts = values.astype(object)
    if pd.api.types.infer_dtype(texts, skipna=True) in ("string", "empty"):  # text already: checked in C
        return texts.where(texts.notna(), None)
    return pd.Series([canonical_key(v) for v in texts], index=values.index, dtype=object, name=values.name)


def parse_timestamps(values: pd.Series, dayfirst: bool | None = None) -> pd.Series:
    """UTC nanosecond timestamps from datetimes, text or epoch numbers; naive values are taken as
    UTC, values the column's format does not read become NaT (so a suite's null check names the column).

    One reading per column, never row by row:

    - text: ISO 8601 (any UTC offsets, 'Z', or none), else the one format that reads the most
      values ('%d/%m/%Y %H:%M', ...). A column that reads both day first and month first
      (every day <= 12) raises a DataError naming both readings; ``dayfirst`` settles it. A
      value with a first field over 12 settles it too: the month-first format does not read it.
    - numbers (or text of digits): epoch seconds, milliseconds, microseconds or nanoseconds,
      told apart by magnitude, or 8-digit dates (20240102); anything else raises a DataError.
    """
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values.dtype) or isinstance(values.dtype, pd.DatetimeTZDtype):
        return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")
    name = str(values.name) if values.name is not None else "timestamp"
    if pd.api.types.is_bool_dtype(values.dtype):
        raise DataError(f"column '{name}' holds booleans, not timestamps")
    if pd.api.types.is_numeric_dtype(values.dtype):
        return _epoch_timestamps(values, name)
    present = values.dropna()
    if not present.empty and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return _epoch_timestamps(pd.to_numeric(values, errors="coerce"), name)
    text = values.astype(object).where(values.notna(), None).map(lambda v: v if v is None else str(v).strip())
    known = text.dropna()
    if not known.empty and known.str.fullmatch(r"-?\d+(\.\d+)?").all():
        return _epoch_timestamps(pd.to_numeric(text, errors="coerce"), name)
    return _text_timestamps(text, name, dayfirst).astype("datetime64[ns, UTC]")


# Where a value at its magnitude counts from 1970: the bands are 1000x apart, so a 2020s time in
# seconds (1.7e9) is never read as milliseconds (1.7e12). Under 1e8 (1973 in seconds) is no epoch time.
_EPOCH_UNITS = ((1e8, 1e11, "s"), (1e11, 1e14, "ms"), (1e14, 1e17, "us"), (1e17, float("inf"), "ns"))


def _epoch_timestamps(numbers: pd.Series, name: str) -> pd.Series:
    import pandas as pd

    present = numbers.dropna()
    if present.empty:
        return pd.Series(pd.NaT, index=numbers.index, dtype="datetime64[ns, UTC]", name=numbers.name)
    integral = bool((present % 1 == 0).all())
    if integral and present.between(19000101, 29991231).all():  # 8-digit dates, 20240102
        stamps = pd.to_datetime(numbers.astype("Int64").astype(str), format="%Y%m%d", utc=True, errors="coerce")
        if stamps.notna().sum() == len(present):
            return stamps.astype("datetime64[ns, UTC]")
    low, high = float(present.abs().min()), float(present.abs().max())
    for floor, ceiling, unit in _EPOCH_UNITS:
        if floor <= low and high < ceiling:
            stamps = pd.to_datetime(numbers.astype("int64") if integral and len(present) == len(numbers) else numbers,
                                    unit=unit, utc=True)
            return stamps.astype("datetime64[ns, UTC]")
    raise DataError(
        f"column '{name}' holds numbers from {present.min():g} to {present.max():g}, which are not epoch times "
        "of one unit (seconds from 1e8, milliseconds from 1e11, microseconds from 1e14, nanoseconds from 1e17)",
        hint="write the times as ISO 8601 text (2024-01-02T10:00:00Z) or as epoch numbers of one unit",
    )


_OFFSET = r"(?:\d[+-]\d\d:?\d\d|\d[Zz]|UTC)$"  # how a time with a UTC offset ends (on its last 9 characters)
_ISO = "ISO 8601"
_SAMPLE = 2000  # distinct values a format is tried on before it reads the whole column


def _text_timestamps(text: pd.Series, name: str, dayfirst: bool | None) -> pd.Series:
    """Each distinct text read once (a column repeats its dates), with the column's one format."""
    import pandas as pd

    codes, distinct = pd.factorize(text)
    if not len(distinct):
        return pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]", name=text.name)
    stamps = _read_distinct(pd.Series(distinct, dtype=object), name, dayfirst).array
    return pd.Series(stamps.take(codes, allow_fill=True), index=text.index, name=text.name)  # -1 (null): NaT


def _read_distinct(values: pd.Series, name: str, dayfirst: bool | None) -> pd.Series:
    import warnings

    import pandas as pd
    from pandas.tseries.api import guess_datetime_format

    empty = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if values.empty:
        return empty

    def read(form: str, part: pd.Series) -> pd.Series:
        if form != _ISO:
            return pd.to_datetime(part, format=form, utc=True, errors="coerce")
        # Values with an offset and naive ones are read apart: pandas reads a naive value that
        # follows an offset one in that offset, where naive means UTC here.
        stamps = pd.Series(pd.NaT, index=part.index, dtype="datetime64[ns, UTC]")
        aware = part.str[-9:].str.contains(_OFFSET, regex=True)
        for group in (aware, ~aware):
            if group.any():
                stamps[group] = pd.to_datetime(part[group], format="ISO8601", utc=True, errors="coerce")
        return stamps

    def allowed(form: str | None) -> bool:
        return form is not None and not _year_day_month(form) and (
            dayfirst is None or _day_first(form) in (None, dayfirst))

    sample = values.iloc[:: max(1, len(values) // _SAMPLE)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pandas' advice on dayfirst: both orders are tried here
        guessed = [guess_datetime_format(v, dayfirst=first) for v in sample.iloc[:50] for first in (False, True)]
    # Rank the formats on the sample; the best ones then read every value, so that one value
    # anywhere (a day over 12) tells day first from month first.
    if read(_ISO, sample).notna().all():
        iso = read(_ISO, values)
        if iso.notna().all():  # year first: never ambiguous
            return iso
    tried: dict[str, int] = {}
    for forms in ([_ISO, *guessed], _SHORT_YEAR_FORMATS):  # pandas guesses no two-digit year ('02/01/24')
        for form in dict.fromkeys(f for f in forms if allowed(f)):
            tried.setdefault(form, int(read(form, sample).notna().sum()))
        if max(tried.values()) == len(sample):
            break
    most = max(tried.values())
    readings = {form: read(form, values) for form, count in tried.items() if count == most and count > 0}
    best = max((int(r.notna().sum()) for r in readings.values()), default=0)
    top = [(form, reading) for form, reading in readings.items() if int(reading.notna().sum()) == best]
    chosen_form, chosen = top[0] if top else ("no format", empty.copy())
    for form, reading in top[1:]:
        _refuse_two_readings(name, values, chosen_form, chosen, form, reading)
    rest = chosen.isna()
    if rest.any():
        # Values the column's format does not read ('2 Jan 2024 10am'): pandas' reading value by
        # value, taken only where day first and month first agree (a year first is never day first).
        left = values[rest]
        year_first = left.str.match(r"\d{4}[-/.]")
        orders = [False, True] if dayfirst is None else [dayfirst]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            read_as = {first: pd.to_datetime(left, format="mixed", dayfirst=first, utc=True, errors="coerce")
                       for first in orders}
        month, day = read_as[orders[0]], read_as[orders[-1]].where(~year_first, read_as[orders[0]])
        _refuse_two_readings(name, left, "value by value, month first", month, "value by value, day first", day)
        chosen[rest] = month
    return chosen


def _refuse_two_readings(name: str, values: pd.Series, form: str, stamps: pd.Series, other: str,
                         others: pd.Series) -> None:
    """Raise when two readings of a column both read a value and disagree on it."""
    differ = (stamps != others) & stamps.notna() & others.notna()
    if differ.any():
        row = differ.idxmax()
        raise DataError(
            f"column '{name}' reads two ways: '{values[row]}' is {stamps[row]:%Y-%m-%d %H:%M} as {form} "
            f"and {others[row]:%Y-%m-%d %H:%M} as {other}, and no value tells day first from month first",
            hint="write the times as ISO 8601 (2024-01-02T10:00:00); or tell kfops init --day-first or "
            "--month-first (it writes DAYFIRST into the dataset module), or pass dayfirst=True or False to "
            "parse_timestamps in your own loader",
        )


_SHORT_YEAR_FORMATS = [f"{first}{sep}{second}{sep}%y{time}" for first, second in (("%d", "%m"), ("%m", "%d"))
                       for sep in "/-." for time in ("", " %H:%M", " %H:%M:%S")]


def _day_first(form: str) -> bool | None:
    """Whether a strftime format puts the day before the month (None: it lacks one of them)."""
    if "%d" not in form or "%m" not in form:
        return None
    return form.index("%d") < form.index("%m")


def _year_day_month(form: str) -> bool:
    # '%Y/%d/%m': what pandas guesses day first for '2024/01/02'; no one writes dates so.
    return form.startswith("%Y") and _day_first(form) is True


def _cast(values: pd.Series, dtype: str, where: str) -> pd.Series:
    import pandas as pd

    if dtype == "string":
        # The keys' spelling for text features too: a category read as 3.0 is the '3' a request sends.
        return canonical_keys(values)
    if dtype == "int" and values.isna().any():
        raise DataError(f"{where} has missing values but is declared int", hint="declare it float")
    try:
        if dtype in ("int", "float"):
            return pd.to_numeric(values, errors="raise").astype(_PANDAS_DTYPES[dtype])
        return values.astype(_PANDAS_DTYPES[dtype])
    except (TypeError, ValueError) as err:
        raise DataError(f"{where} cannot be read as {dtype}: {err}") from err


def load_feature_set(spec: str, search_path: Path | None = None) -> FeatureSet:
    """The FeatureSet named by ``module:NAME``: ``module.py`` in ``search_path`` (the project folder)
    loaded by path when it is there, else an importable module."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"features.feature_set '{spec}' must look like module:NAME")
    found = import_object(spec, search_path=search_path)
    if not isinstance(found, FeatureSet):
        raise ConfigError(f"{spec} is a {type(found).__name__}, not a kfops.core.featureset.FeatureSet")
    return found
