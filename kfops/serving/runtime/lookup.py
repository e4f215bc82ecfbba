"""Online feature lookups for raw requests: a callable ``entity_rows -> DataFrame``.

The server gets one as a plain callable, so it can be swapped:

* ``feast`` (default): :class:`FeastLookup`, Feast's online store as configured in ``features``;
* ``parquet:DIR``: :class:`InMemoryLookup` over ``DIR/<entity key>.parquet`` tables (one row per
  key value), for demos, tests and air-gapped runs;
* ``none``: raw requests are refused with a 400 that says to send full feature vectors.

Entity rows carry the join keys and ``event_timestamp`` (the request's event time, UTC, as the
dataset's request builder derives it; else the request's own time field, ``event_timestamp`` unless
``dataset.request_time_field`` names another, or now). A
lookup returns one row per entity row, in order, with a column per feature it knows; unknown
entities come back as nulls (the server answers 422 when a row has no online feature). A lookup
also says which ``join_keys`` it reads by and which ``feature_names`` it provides: without a
request builder, the raw request is those keys plus the model features no view provides.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kfops.core.tables import read_parquet
from kfops.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig

OnlineLookup = Callable[[list[dict]], "pd.DataFrame"]


class InMemoryLookup:
    """Join feature tables keyed by one entity column each (the table's name: ``<key>.parquet``).

    Keys are compared as :func:`~kfops.core.featureset.canonical_keys` spells them, as the
    training join does: a request's 12 and "12" both find a table's 12 (or 12.0, or "12").
    """

    def __init__(self, tables: dict[str, pd.DataFrame]):
        from kfops.core.featureset import canonical_keys

        self._tables = {}
        for key, table in tables.items():
            if key not in table.columns:
                raise ConfigError(f"lookup table for '{key}' has no '{key}' column")
            keyed = table.assign(**{key: canonical_keys(table[key])}).dropna(subset=[key])
            if keyed[key].duplicated().any():
                raise ConfigError(f"lookup table for '{key}' has duplicate keys; keep the latest row per key")
            self._tables[key] = keyed.set_index(key)

    @classmethod
    def from_dir(cls, folder: Path) -> InMemoryLookup:

        folder = Path(folder)
        paths = sorted(folder.glob("*.parquet"))
        if not paths:
            raise ConfigError(f"no <entity>.parquet lookup tables in {folder}")
        return cls({path.stem: read_parquet(path) for path in paths})

    @property
    def feature_names(self) -> list[str]:
        return [c for table in self._tables.values() for c in table.columns]

    @property
    def join_keys(self) -> list[str]:
        return list(self._tables)

    def __call__(self, entity_rows: list[dict]) -> pd.DataFrame:
        import pandas as pd

        from kfops.core.featureset import canonical_key

        parts = []
        for key, table in self._tables.items():
            keys = [canonical_key(row.get(key)) for row in entity_rows]
            parts.append(table.reindex(keys).reset_index(drop=True))
        if not parts:
            return pd.DataFrame(index=range(len(entity_rows)))
        return pd.concat(parts, axis=1)


AS_OF_MODES = ("event", "now", "none")


class FeastLookup:
    """:class:`kfops.adapters.feast_store.OnlineFeatureReader`, built on first use (``import feast`` is slow).

    ``as_of`` says how old a stored row may be (each feature view's TTL, counted back from):

    * ``event`` (default): the request's event time (``event_timestamp``), as the point-in-time
      join did for training; one store read per batch, TTLs applied per row;
    * ``now``: the wall clock, for live traffic; one read per batch;
    * ``none``: no TTL, the latest row whatever its age (the online store's own behaviour).
    """

    def __init__(self, cfg: KfopsConfig, as_of: str = "event", reader=None):
        if as_of not in AS_OF_MODES:
            raise ConfigError(f"unknown online as-of mode '{as_of}'", hint=f"use one of {', '.join(AS_OF_MODES)}")
        self._cfg = cfg
        self._as_of = as_of
        self._reader = reader  # an OnlineFeatureReader; tests pass their own
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether the reader is built (the registry read), so join_keys answers at once."""
        return self._reader is not None

    def warm(self) -> None:
        """Build the reader now (the server calls this in a background thread at start)."""
        with self._lock:
            if self._reader is None:
                from kfops.adapters.feast_store import OnlineFeatureReader

                self._reader = OnlineFeatureReader(self._cfg)

    @property
    def join_keys(self) -> list[str]:
        """The feature views' join keys, from the Feast registry (builds the reader if needed)."""
        if self._reader is None:
            self.warm()
        return list(self._reader.join_keys)

    @property
    def feature_names(self) -> list[str]:
        """The features the views provide (``features.feature_refs``), by name."""
        if self._reader is None:
            self.warm()
        return list(self._reader.names)

    def __call__(self, entity_rows: list[dict]) -> pd.DataFrame:
        return self._reader.read(entity_rows, **self._as_of_for(entity_rows))

    def columns(self, entity_rows: list[dict]) -> dict[str, list]:
        """The same lookup without pandas: per feature one value per entity row (numeric as float,
        NaN when missing; the rest as stored, None when missing). See ``OnlineFeatureReader.read_columns``."""
        return self._reader.read_columns(entity_rows, **self._as_of_for(entity_rows))

    def _as_of_for(self, entity_rows: list[dict]) -> dict:
        """The reader's ``as_of`` for this batch, warming the reader on first use: none, now, or
        each row's own event time, so that its TTLs count back from it (one store read for the
        batch; a datetime per row, no conversion on this hot path)."""
        import datetime as dt

        if self._reader is None:
            self.warm()
        if self._as_of == "none":
            return {}
        if self._as_of == "now":
            return {"as_of": dt.datetime.now(dt.UTC)}
        return {"as_of": [row["event_timestamp"] for row in entity_rows]}


def build_lookup(spec: str, cfg: KfopsConfig, as_of: str = "event") -> OnlineLookup | None:
    """Turn ``feast``, ``parquet:DIR`` or ``none`` into a lookup (None for ``none``)."""
    if spec == "none":
        return None
    if spec == "feast" and not cfg.features.feature_refs:
        return None  # no feature views: a raw request carries every feature itself
    if spec == "feast":
        return FeastLookup(cfg, as_of)
    if spec.startswith("parquet:"):
        return InMemoryLookup.from_dir(Path(spec[len("parquet:"):]))
    raise ConfigError(f"unknown online lookup '{spec}'", hint="use feast, parquet:DIR or none")
