"""The feature store adapter: Feast built from the kfops config, with no feature_store.yaml.

Generic: what the features are lives in the definitions module (``features.definitions`` inside
``features.repo_path``) and in ``features.feature_refs``; nothing here knows about a particular dataset.

- :func:`feature_store` builds a ``feast.FeatureStore`` (duckdb offline store; SQLite or Redis
  online store; file, S3 or SQL registry).
- :func:`apply_definitions` loads the definitions by file path and applies them (idempotent).
- :func:`build_training_set` joins the features point-in-time onto an entity frame (Feast's
  semantics; by default with merge_asof on the registered sources, or through Feast itself).
- :func:`materialize` and :func:`online_features` load and read the online store for serving;
  :class:`OnlineFeatureReader` is the low-latency path for one request at a time.

Feature columns come back named by feature (no view prefix), numeric features as float64 (NaN
when missing or expired) and string features as object (None when missing), the same offline
and online, so a model sees the same types at training and at serving.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from kfops.adapters import sqlite_timestamps
from kfops.core.files import file_lock, import_callable
from kfops.core.redaction import redact_uri
from kfops.core.tables import read_parquet
from kfops.errors import ConfigError, DataError, ValidationFailed

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore, FeatureView, FileSource

    from kfops.config import KfopsConfig

EVENT_TIMESTAMP = "event_timestamp"  # the column name Feast looks for in an entity frame
# A row older than any event: static views (no TTL) are materialized from here.
BEGINNING_OF_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SQL_SCHEMES = ("postgresql", "mysql", "sqlite", "mssql")


# --- store -------------------------------------------------------------------------------------


def import_feast():
    """Import feast without typeguard's import-time instrumentation (~5 s of each import).

    Feast decorates classes with typeguard's ``@typechecked``, which recompiles every method
    when the module loads. It only adds run-time type assertions, which ``python -O`` skips too;
    kfops skips them the same way, for this import only.
    """
    import sys

    if "feast" in sys.modules:
        return sys.modules["feast"]
    import typeguard

    def skip_instrumentation(target=None, **_options):
        return target if target is not None else (lambda inner: inner)

    original = typeguard.typechecked
    typeguard.typechecked = skip_instrumentation
    try:
        import feast
        import feast.infra.online_stores.sqlite  # registers Feast's converter now, not mid-run
    finally:
        typeguard.typechecked = original
    sqlite_timestamps.install()
    return feast



def registry_config(cfg: KfopsConfig) -> str | dict[str, Any]:
    """The Feast ``registry`` setting for ``cfg.features.registry`` (file, object store or SQL)."""
    registry = cfg.features.registry
    if registry is None:
        return str(cfg.feast_dir / "registry.db")
    scheme = registry.split("://", 1)[0].split("+", 1)[0] if "://" in registry else ""
    if scheme in _SQL_SCHEMES:
        # Feast rewrites a bare postgresql:// to psycopg 3; kfops ships psycopg2.
        path = re.sub(r"^postgresql://", "postgresql+psycopg2://", registry)
        return {"registry_type": "sql", "path": path, "cache_ttl_seconds": 60,
                "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True}}
    if scheme:  # s3://, gs://, ...: a registry file in an object store
        return registry
    return str(Path(registry).expanduser().resolve())


def redis_with_timeouts(connection: str, timeout_s: float) -> str:
    """``connection`` with socket connect and read timeouts, unless it sets its own: redis-py waits
    forever by default, so a paused Redis would hang every lookup (and the request) with it."""
    present = {part.split("=", 1)[0].strip() for part in connection.split(",") if "=" in part}
    extra = [f"{key}={timeout_s:g}" for key in ("socket_timeout", "socket_connect_timeout") if key not in present]
    return ",".join([connection, *extra])


def online_store_config(cfg: KfopsConfig) -> dict[str, Any]:
    if cfg.features.online_store == "redis":
        return {"type": "redis",
                "connection_string": redis_with_timeouts(cfg.features.online_connection, cfg.features.redis_timeout_s)}
    return {"type": "sqlite", "path": str(cfg.feast_dir / "online.db")}


def feature_store(cfg: KfopsConfig, online_only: bool = False) -> FeatureStore:
    """A Feast store for ``cfg``: duckdb offline, SQLite or Redis online, registry per config.

    ``online_only``: for a reader of the online store (the model server), whose image has no
    duckdb: Feast's built-in file offline store stands in, and is never queried.
    """
    import_feast()
    from feast import FeatureStore, RepoConfig

    sqlite_timestamps.install()  # a library imported since (IPython) may have replaced it

    cfg.feast_dir.mkdir(parents=True, exist_ok=True)
    try:
        repo_config = RepoConfig(
            project=cfg.features.project,
            provider="local",
            registry=registry_config(cfg),
            offline_store={"type": "file" if online_only else "duckdb"},
            online_store=online_store_config(cfg),
            repo_path=Path(cfg.features.repo_path).resolve(),
            entity_key_serialization_version=3,
        )
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"invalid Feast settings in the features section: {redact_uri(str(err))}") from err
    return FeatureStore(config=repo_config)


# --- definitions -------------------------------------------------------------------------------


def load_definitions(cfg: KfopsConfig, source_dir: Path) -> list:
    """Import ``features.definitions`` (``module:function``) from ``features.repo_path`` by path.

    The module is not added to ``sys.modules`` nor its folder to ``sys.path``, so loading it
    twice, or from two repos, never mixes them up.
    """
    import_feast()
    module_name, _, function_name = cfg.features.definitions.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"features.definitions '{cfg.features.definitions}' must look like module:function")
    path = Path(cfg.features.repo_path) / (module_name.replace(".", "/") + ".py")
    if not path.is_file():  # import_callable would fall back to an ordinary import: never here
        raise ConfigError(
            f"feature definitions {path} do not exist",
            hint="set features.repo_path to the folder holding your definitions module",
        )
    try:
        build = import_callable(cfg.features.definitions, search_path=Path(cfg.features.repo_path))
    except ConfigError as err:  # chained to the ImportError when the module itself failed
        cause = err.__cause__
        if isinstance(cause, (ImportError, SyntaxError)):
            raise ConfigError(f"feature definitions {path} failed to import: {cause}") from cause
        raise ConfigError(f"{path} has no function '{function_name}'", hint="check features.definitions") from None
    objects = list(build(Path(source_dir).expanduser().resolve()))
    if not objects:
        raise ConfigError(f"{path}:{function_name} returned no Feast objects")
    return objects


REGISTRY_LOCK_TIMEOUT_S = 900.0


@contextlib.contextmanager
def registry_lock(cfg: KfopsConfig) -> Iterator[None]:
    """One process at a time applies, joins against or materializes this config's Feast store.

    Feast's file registry is rewritten in place (truncate, then write) by every apply and every
    materialization, so a concurrent reader can see it empty ("Entity ... does not exist"): two
    runs on one data dir take turns here instead. Re-entrant within a process.
    """
    with file_lock(cfg.feast_dir / "registry.lock", timeout_s=REGISTRY_LOCK_TIMEOUT_S,
                   what="the Feast registry, held by another run's featurize step"):
        yield


def apply_definitions(cfg: KfopsConfig, source_dir: Path, store: FeatureStore | None = None) -> FeatureStore:
    """Register the definitions (sources under ``source_dir``) and prepare the online store.

    Idempotent: applying the same definitions twice changes nothing. Refuses definitions that
    expose a column from ``features.forbidden_columns`` (known only after the event).
    """
    from feast import FeatureView, OnDemandFeatureView

    objects = load_definitions(cfg, source_dir)
    exposed = [f.name for o in objects if isinstance(o, FeatureView | OnDemandFeatureView) for f in o.features]
    assert_no_leakage(exposed, cfg.features.forbidden_columns, where="the feature definitions")
    store = store or feature_store(cfg)
    with registry_lock(cfg):
        store.apply(objects)
    return store


# --- leakage ------------------------------------------------------------------------------------


def assert_no_leakage(columns: Iterable[str], forbidden: Iterable[str], where: str = "the training set") -> None:
    """Fail when any column is known only after the event (exact name, case-insensitive)."""
    banned = {name.lower() for name in forbidden}
    found = sorted({c for c in columns if str(c).lower() in banned})
    if found:
        raise ValidationFailed(
            f"{where} hold(s) {', '.join(found)}, known only after the event (label leakage); "
            "remove them from the feature definitions / entity frame, or derive a feature from "
            "past events only and give it another name",
            failures=[{"expectation": "no_leakage", "column": c} for c in found],
        )


# --- features and their types -------------------------------------------------------------------


def feature_names(cfg: KfopsConfig) -> list[str]:
    """Column names of the features in ``features.feature_refs``, in order (view prefix dropped)."""
    names = []
    for ref in cfg.features.feature_refs:
        view, sep, name = ref.partition(":")
        if not sep or not view or not name:
            raise ConfigError(f"feature reference '{ref}' must look like view:feature")
        names.append(name)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(
            f"feature name(s) {', '.join(duplicated)} appear in more than one feature view",
            hint="columns are named by feature alone; rename one of them in the definitions",
        )
    return names


def _referenced_views(cfg: KfopsConfig, store: FeatureStore) -> list[FeatureView]:
    from feast.errors import FeatureViewNotFoundException

    views = []
    for view_name in dict.fromkeys(ref.split(":", 1)[0] for ref in cfg.features.feature_refs):
        try:
            views.append(store.get_feature_view(view_name))
        except FeatureViewNotFoundException as err:
            raise ConfigError(
                f"feature view '{view_name}' (in features.feature_refs) is not registered",
                hint="apply the definitions first (kfops features materialize) or fix features.feature_refs",
            ) from err
    return views


def view_join_keys(cfg: KfopsConfig, store: FeatureStore) -> list[str]:
    """The join keys of the feature views that ``features.feature_refs`` name, in order."""
    return _join_keys(_referenced_views(cfg, store))


def integer_join_keys(cfg: KfopsConfig, store: FeatureStore) -> set[str]:
    """The join keys the referenced feature views declare Int32 or Int64."""
    from feast.types import Int32, Int64

    return {col.name for view in _referenced_views(cfg, store) for col in view.entity_columns
            if col.dtype in (Int32, Int64)}


def typed_join_keys(integer: set[str], keys: Mapping[str, Sequence[Any]]) -> dict[str, pd.Series]:
    """Request key values as the feature views' sources hold them: a key in ``integer``
    (:func:`integer_join_keys`) as int64 (a client's '17' is 17), any other as canonical text
    (``kfops.core.featureset.canonical_keys``). A value an int key cannot take is a
    :class:`DataError` naming the key and the value."""
    import pandas as pd

    from kfops.core.featureset import canonical_keys

    typed: dict[str, pd.Series] = {}
    for name, values in keys.items():
        column = pd.Series(list(values), dtype=object)
        if name not in integer:
            typed[name] = canonical_keys(column)
            continue
        numbers = pd.to_numeric(column, errors="coerce")
        bad = column[(numbers.isna() & column.notna()) | (numbers % 1 != 0)]
        if len(bad):
            raise DataError(f"key '{name}' is an integer in the feature views, but row {bad.index[0]} holds "
                            f"{bad.iloc[0]!r}")
        typed[name] = numbers.astype("int64" if numbers.notna().all() else "Int64")
    return typed


def _join_keys(views: list[FeatureView]) -> list[str]:
    return list(dict.fromkeys(col.name for view in views for col in view.entity_columns))


def _numeric_features(cfg: KfopsConfig, views: list[FeatureView]) -> set[str]:
    from feast.types import Bool, Float32, Float64, Int32, Int64

    numeric_types = (Float32, Float64, Int32, Int64, Bool)
    wanted = set(feature_names(cfg))
    return {f.name for view in views for f in view.features if f.name in wanted and f.dtype in numeric_types}


def _typed(columns: Mapping[str, Any], names: list[str], numeric: set[str], index: Any = None) -> pd.DataFrame:
    """Numeric features as float64 (NaN = missing); the rest as object (None = missing)."""
    import numpy as np
    import pandas as pd

    data = {}
    for name in names:
        values = columns[name]
        if name in numeric and isinstance(values, list):  # online: Python values, None = missing
            data[name] = np.array(values, dtype="float64")
        elif name in numeric:
            data[name] = pd.to_numeric(values, errors="coerce").to_numpy("float64", na_value=np.nan)
        else:
            array = np.asarray(values, dtype=object)
            data[name] = np.where(pd.isna(array), None, array)  # type: ignore[call-overload]  # numpy's stubs refuse None
    return pd.DataFrame(data, index=index)


# --- offline ------------------------------------------------------------------------------------


def build_training_set(
    entity_df: pd.DataFrame,
    cfg: KfopsConfig,
    source_dir: Path,
    store: FeatureStore | None = None,
    engine: Literal["asof", "feast"] = "asof",
) -> pd.DataFrame:
    """The entity frame with every feature in ``features.feature_refs`` joined point-in-time.

    Each row gets, per feature view, the latest row at or before its event time and within the
    view's TTL (else missing). One output row per input row, in input order, keyed by
    ``dataset.row_id``; the definitions are applied first (sources under ``source_dir``).

    ``engine="feast"`` runs Feast's ``get_historical_features`` (duckdb offline store).
    ``engine="asof"`` (default) runs the same join as one ``pandas.merge_asof`` per view, on
    the sources and TTLs read from the Feast registry: about 10x faster on the full year, with
    identical output (tests and bench/featurize.py compare the two). Views it cannot read
    exactly as Feast does (not a local parquet FileSource, a field mapping, a created
    timestamp, a join key map) make it use Feast instead. The definitions are applied and the
    join made under :func:`registry_lock`: the registry is read throughout.
    """
    import pandas as pd

    row_id, event_col = cfg.require("dataset.row_id"), cfg.dataset.event_timestamp
    if entity_df is None or entity_df.empty:
        raise DataError("the entity frame is empty: no rows to join features onto",
                        hint="check the dataset window and the entity builder")
    for column in (row_id, event_col):
        if column not in entity_df.columns:
            raise DataError(f"the entity frame has no '{column}' column",
                            hint="set dataset.row_id / dataset.event_timestamp to its key and event-time columns")
    if entity_df[row_id].duplicated().any():
        raise DataError(f"the entity frame's row id '{row_id}' is not unique",
                        hint="give every row its own id; Feast would merge rows with equal keys and time")
    names = feature_names(cfg)
    clash = sorted(set(names) & set(entity_df.columns))
    if clash:
        raise DataError(f"the entity frame already has feature column(s) {', '.join(clash)}",
                        hint="drop them from the entity frame or rename the features")
    assert_no_leakage([*entity_df.columns, *names], cfg.features.forbidden_columns)
    if not cfg.features.feature_refs:
        # A dataset of one table: every feature is in the entity frame, there is nothing to join.
        return entity_df.reset_index(drop=True)

    with registry_lock(cfg):
        store = apply_definitions(cfg, source_dir, store)
        views = _referenced_views(cfg, store)
        join_keys = _join_keys(views)
        missing = [k for k in join_keys if k not in entity_df.columns]
        if missing:
            raise DataError(f"the entity frame lacks join key(s) {', '.join(missing)} that the feature views need",
                            hint="add them to the entity frame or drop those views from features.feature_refs")

        # Only the id, keys and time take part; the id keeps equal (keys, time) rows apart.
        request = pd.DataFrame({
            row_id: entity_df[row_id].to_numpy(),
            EVENT_TIMESTAMP: _as_utc(entity_df[event_col], event_col),
            **{k: entity_df[k].to_numpy() for k in join_keys},
        })
        if engine == "asof" and all(_asof_eligible(view) for view in views):
            joined = _asof_join(request, views, cfg)
        else:
            joined = store.get_historical_features(entity_df=request, features=list(cfg.features.feature_refs)).to_df()
        if len(joined) != len(request) or joined[row_id].duplicated().any():
            raise DataError(f"the point-in-time join returned {len(joined)} rows for {len(request)} entity rows",
                            hint="check that the feature sources have one row per entity and timestamp")
    joined = joined.set_index(row_id)
    features = _typed(joined, names, _numeric_features(cfg, views), index=joined.index)
    return entity_df.join(features, on=row_id)


def _asof_eligible(view: FeatureView) -> bool:
    from feast import FileSource

    source = view.batch_source
    return (
        isinstance(source, FileSource)
        and "://" not in source.path
        and Path(source.path).is_file()
        and not source.field_mapping
        and not source.created_timestamp_column
        and not view.projection.join_key_map
    )


def _asof_join(request: pd.DataFrame, views: list[FeatureView], cfg: KfopsConfig) -> pd.DataFrame:
    """Feast's point-in-time semantics with merge_asof: per view, the last row with the same keys
    and ``ts <= event``, and, when the view has a TTL, ``ts >= event - ttl`` (both inclusive)."""
    import pandas as pd

    from kfops.progress import progress

    wanted = cfg.features.refs_by_view
    feature_time = "__kfops_feature_ts"
    joined = request.assign(__kfops_order=range(len(request))).sort_values(EVENT_TIMESTAMP, kind="stable")
    with progress("features: point-in-time join", total=len(views), unit="view", every=1) as bar:
        for view in views:
            keys = [c.name for c in view.entity_columns]
            names = wanted[view.name]
            source = cast("FileSource", view.batch_source)  # _asof_eligible checked it
            stamp = source.timestamp_field
            rows = read_parquet(source.path, columns=[*keys, stamp, *names])
            rows = rows.rename(columns={stamp: feature_time})
            rows[feature_time] = _as_utc(rows[feature_time], f"{view.name}.{stamp}")
            # Stable sort: of rows with equal keys and time, the last one written wins.
            rows = rows.sort_values(feature_time, kind="stable")
            joined = pd.merge_asof(
                joined, rows, left_on=EVENT_TIMESTAMP, right_on=feature_time, by=keys, direction="backward",
                tolerance=pd.Timedelta(view.ttl) if view.ttl else None,
            ).drop(columns=feature_time)
            # How many rows found the view's features: a key spelled otherwise in the source
            # ('2134' and '02134') or a short TTL shows here as a low share, run after run.
            found = int(joined[names].notna().any(axis=1).sum())
            bar.advance(message=f"{view.name}: {len(names)} feature(s) on {len(joined):,} rows, found for "
                                f"{found:,} ({found / max(len(joined), 1):.0%})")
    return joined.sort_values("__kfops_order").drop(columns="__kfops_order").reset_index(drop=True)


def _as_utc(values: pd.Series, name: str) -> pd.Series:
    import pandas as pd

    try:
        stamps = pd.to_datetime(values)
    except (TypeError, ValueError) as err:
        raise DataError(f"the entity frame's '{name}' column is not a timestamp: {err}") from err
    if stamps.isna().any():
        raise DataError(f"the entity frame's '{name}' column has missing timestamps")
    # Naive times are taken as UTC, the convention of every kfops table.
    stamps = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    return stamps.astype("datetime64[ns, UTC]").reset_index(drop=True)


# --- online -------------------------------------------------------------------------------------


def materialize(
    cfg: KfopsConfig,
    start: dt.datetime,
    end: dt.datetime,
    store: FeatureStore | None = None,
) -> dict[str, int | None]:
    """Load the latest row per entity with a timestamp in [start, end] into the online store.

    Views with no TTL (static tables) are loaded from the beginning of time, since their rows
    never expire and may be stamped long before ``start``. Returns, per view, how many entities
    had a row to load (None where the source is not a local file).
    """
    start, end = _aware(start), _aware(end)
    if end < start:
        raise ConfigError(f"materialize end ({end}) is before start ({start})")
    if not cfg.features.feature_refs:
        return {}  # no feature views: a raw request carries every feature itself
    with registry_lock(cfg):
        return _materialize(cfg, start, end, store or feature_store(cfg))


def materialized_through(store: FeatureStore) -> dt.datetime | None:
    """How far every registered view's online rows already reach (the earliest of their latest
    materialization ends), or None when some view was never materialized."""
    ends = []
    for view in store.list_feature_views():
        intervals = list(view.materialization_intervals or [])
        if not intervals:
            return None
        ends.append(max(_aware(end) for _, end in intervals))
    return min(ends) if ends else None


def _materialize(cfg: KfopsConfig, start: dt.datetime, end: dt.datetime, store: FeatureStore) -> dict[str, int | None]:
    _duckdb_session_in_utc()
    views = store.list_feature_views()
    if not views:
        raise ConfigError("no feature views are registered", hint="apply the definitions first")
    static = [v.name for v in views if not v.ttl]
    timed = [v.name for v in views if v.ttl]
    if static:
        store.materialize(BEGINNING_OF_TIME, end, feature_views=static)
    if timed:
        store.materialize(start, end, feature_views=timed)
    return {v.name: _entities_in_window(v, BEGINNING_OF_TIME if v.name in static else start, end) for v in views}


def _duckdb_session_in_utc() -> None:
    """Feast bounds materialize by naive UTC times against stamps cast in duckdb's session time
    zone (the machine's); pin it to UTC so the window does not shift with the host's zone."""
    import ibis

    ibis.get_backend().raw_sql("SET TimeZone = 'UTC'")


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _entities_in_window(view: FeatureView, start: dt.datetime, end: dt.datetime) -> int | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = getattr(view.batch_source, "path", None)
    if not path or "://" in path or not Path(path).is_file():
        return None
    keys = [c.name for c in view.entity_columns]
    stamp = cast("FileSource", view.batch_source).timestamp_field
    table = pq.read_table(path, columns=[*keys, stamp])
    inside = pc.and_(pc.greater_equal(table[stamp], start), pc.less_equal(table[stamp], end))
    return table.filter(inside).group_by(keys).aggregate([]).num_rows


class OnlineFeatureReader:
    """Serving's read path: resolves views, join keys and types once, then reads per request.

    Build one per process and reuse it; ``read_one`` and ``read_columns`` skip pandas. The online
    store keeps the latest row per entity whatever its age. Pass ``as_of`` (the request's event
    time; for live traffic, now) to drop rows older than their view's TTL, as the historical join
    does, so serving sees what training saw.

    On Redis and SQLite the reader reads Feast's online layout itself (one round trip per batch,
    :mod:`kfops.adapters.feast_online`); on any other online store, or a layout it does not read
    (``mode`` says which), it calls Feast's ``get_online_features``. Both give the same values.
    ``direct=False`` forces Feast's call.
    """

    def __init__(self, cfg: KfopsConfig, store: FeatureStore | None = None, direct: bool = True):
        from kfops.adapters.feast_online import direct_reader

        self.store = store or feature_store(cfg, online_only=True)
        self.refs = list(cfg.features.feature_refs)
        self.names = feature_names(cfg)
        views = _referenced_views(cfg, self.store)
        self.join_keys = _join_keys(views)
        self.numeric = _numeric_features(cfg, views)
        self._by_view: dict[str, list[str]] = {}
        for ref, name in zip(self.refs, self.names, strict=True):
            self._by_view.setdefault(ref.split(":", 1)[0], []).append(name)
        self._ttl_by_view = {v.name: v.ttl.total_seconds() if v.ttl else None for v in views}
        self.ttl_seconds = {name: self._ttl_by_view[view] for view, names in self._by_view.items() for name in names}
        self._direct = direct_reader(self.store, views, self._by_view) if direct else None
        self.mode = "feast" if self._direct is None else str(self.store.config.online_store.type)

    def _keys(self, entity_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            return [{k: row[k] for k in self.join_keys} for row in entity_rows]
        except KeyError as err:
            raise self._lacks(err) from err

    def _lacks(self, err: KeyError) -> DataError:
        return DataError(f"an entity row lacks join key {err}; the feature views need {', '.join(self.join_keys)}")

    def _feast(self, entity_rows: list[dict[str, Any]], stamped: bool) -> tuple[dict[str, list], dict[str, list]]:
        """Feast's own call: the values per feature, and (when ``stamped``) the event times per view."""
        sqlite_timestamps.install()  # cheap, and a library imported since (IPython) may have replaced it
        response = self.store.get_online_features(features=self.refs, entity_rows=self._keys(entity_rows))
        values = response.to_dict(include_event_timestamps=stamped)
        stamps = {view: values[f"{names[0]}__ts"] for view, names in self._by_view.items()} if stamped else {}
        return values, stamps

    def _fetch(self, entity_rows: list[dict[str, Any]], as_of: dt.datetime | Sequence[dt.datetime] | None) -> dict[str, list]:
        """Per feature name, one Python value per entity row (None: missing, or past its view's TTL)."""
        from kfops.adapters.feast_online import Unsupported

        if not entity_rows:
            raise DataError("no entity rows to look up")
        nows = _epochs(as_of, len(entity_rows))
        if self._direct is None:
            values, stamps = self._feast(entity_rows, nows is not None)
        else:
            try:
                values, stamps = self._direct.read(entity_rows)
            except KeyError as err:
                raise self._lacks(err) from err
            except Unsupported:  # a key value Feast encodes its own way: let Feast read this batch
                values, stamps = self._feast(entity_rows, nows is not None)
        if nows is None:
            return values
        for view, names in self._by_view.items():
            ttl = self._ttl_by_view[view]
            if ttl is None:
                continue
            times = stamps[view]
            if isinstance(nows, float):
                expired = [i for i, stamp in enumerate(times) if nows - stamp > ttl]
            else:
                expired = [i for i, (stamp, now) in enumerate(zip(times, nows, strict=True)) if now - stamp > ttl]
            for name in names:
                column = values[name]
                for i in expired:
                    column[i] = None
        return values

    def read(self, entity_rows: list[dict[str, Any]], as_of: dt.datetime | Sequence[dt.datetime] | None = None) -> pd.DataFrame:
        """One row of features per entity row, in order; columns and types as offline.

        ``as_of`` is one time for all rows, or one per row (each request's event time): either
        way it is one read of the store, the TTLs applied per row afterwards.
        """
        return _typed(self._fetch(entity_rows, as_of), self.names, self.numeric)

    def read_columns(
        self, entity_rows: list[dict[str, Any]], as_of: dt.datetime | Sequence[dt.datetime] | None = None,
    ) -> dict[str, list[Any]]:
        """What :meth:`read` gives, as plain lists without pandas: per feature name one value per
        entity row, numeric features as float (NaN when missing), the rest as stored (None when missing)."""
        values = self._fetch(entity_rows, as_of)
        nan = float("nan")
        return {
            name: [nan if v is None else float(v) for v in values[name]] if name in self.numeric else values[name]
            for name in self.names
        }

    def read_one(self, entity_row: dict[str, Any], as_of: dt.datetime | None = None) -> dict[str, Any]:
        """The features of one entity row as a dict (numeric as float, NaN when missing)."""
        values = self._fetch([entity_row], as_of)
        return {n: _scalar(values[n][0], n in self.numeric) for n in self.names}


def _epochs(as_of: dt.datetime | Sequence[dt.datetime] | None, rows: int) -> float | list[float] | None:
    """``as_of`` as epoch seconds: one for all rows, one per row, or None (no TTL). Naive times are UTC."""
    if as_of is None:
        return None
    if isinstance(as_of, dt.datetime):
        return _epoch(as_of)
    if len(as_of) != rows:
        raise DataError(f"{len(as_of)} as-of times for {rows} entity rows")
    return [_epoch(moment) for moment in as_of]


def _epoch(moment: dt.datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _scalar(value: Any, numeric: bool) -> Any:
    if not numeric:
        return value
    return float("nan") if value is None else float(value)


def online_features(
    cfg: KfopsConfig,
    entity_rows: list[dict[str, Any]],
    store: FeatureStore | None = None,
    as_of: dt.datetime | None = None,
) -> pd.DataFrame:
    """The features for each entity row from the online store (one row per input row).

    Same columns and types as the features :func:`build_training_set` adds. Extra keys in the
    rows (e.g. a whole request) are ignored; the join keys the views need must be present.
    With ``as_of``, rows older than their view's TTL at that time are missing (see
    :class:`OnlineFeatureReader`). For serving, build an :class:`OnlineFeatureReader` once instead.
    """
    return OnlineFeatureReader(cfg, store).read(entity_rows, as_of=as_of)
