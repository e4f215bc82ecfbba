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
        entity_types = {e.name: e.dtype for e in self.entities}
        data: dict[str, pd.Series] = {}
        for key in view.keys:
            data[key] = _cast(table[key], entity_types[key], f"{view.source_table}.{key}")
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


def parse_timestamps(values: pd.Series) -> pd.Series:
    """UTC nanosecond timestamps from datetimes or strings in any mix of formats; naive values are
    taken as UTC, unreadable ones become NaT (so a suite's null check names the column)."""
    import pandas as pd

    if not (pd.api.types.is_datetime64_any_dtype(values.dtype) or isinstance(values.dtype, pd.DatetimeTZDtype)):
        values = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")


def _cast(values: pd.Series, dtype: str, where: str) -> pd.Series:
    import pandas as pd

    if dtype == "string":
        return values.astype(object).where(values.notna(), None).map(lambda v: v if v is None else str(v))
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
