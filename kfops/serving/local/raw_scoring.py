"""Batch scoring of raw rows: the server's raw-request path over a file.

A raw row is what a client sends the server (``dataset.request_builder``: the entity keys and
the request-time inputs). Each chunk of the file is checked field by field as the server checks
a request (the same messages, naming the file's row), its request features are derived by the
same builder, and the feature views are joined **point-in-time from the offline sources**, as the
training pipeline joined them (:func:`kfops.adapters.feast_store.build_training_set`), at each
row's event time. So scoring last month's rows again gives the features they had then, which
the online store (latest values only) cannot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from kfops.config import KfopsConfig
    from kfops.core.model import FeatureSpec
    from kfops.core.requests import RawSchema


ROW_ID = "__kfops_row"


class OfflineLookup:
    """The feature views' values at each entity row's event time, from the offline sources.

    The definitions are applied to a Feast registry and online store of its own, in a scratch
    folder: scoring reads, and must not point the project's (or a cluster's shared) registry at
    these sources, nor touch its online store."""

    def __init__(self, cfg: KfopsConfig, source_dir: Path | None):
        import tempfile

        from kfops.adapters import feast_store

        self.source_dir = source_dir
        self.store = None
        self.join_keys: list[str] = []
        self.integer_keys: set[str] = set()
        self.feature_names: list[str] = []
        self.cfg = cfg
        if source_dir is None:  # a dataset without feature views: every feature is in the row
            return
        self._scratch = tempfile.TemporaryDirectory(prefix="kfops-predict-feast-")
        self.cfg = cfg.model_copy(update={
            "data_dir": Path(self._scratch.name),  # feast_dir: the registry, its lock, the online store
            "features": cfg.features.model_copy(update={"registry": None, "online_store": "sqlite"}),
            # The join keys rows apart by an id: one of its own, which no key or feature is called.
            "dataset": cfg.dataset.model_copy(update={"row_id": ROW_ID}),
        })
        self.store = feast_store.apply_definitions(self.cfg, source_dir)
        self.join_keys = feast_store.view_join_keys(self.cfg, self.store)
        self.integer_keys = feast_store.integer_join_keys(self.cfg, self.store)  # once, not per chunk
        self.feature_names = feast_store.feature_names(self.cfg)

    def __call__(self, entity_rows: list[dict[str, Any]]) -> pd.DataFrame:
        import pandas as pd

        from kfops.adapters.feast_store import build_training_set, typed_join_keys
        from kfops.core.requests import EVENT_TIMESTAMP
        from kfops.serving.protocol.payloads import RequestError

        if self.source_dir is None:
            return pd.DataFrame(index=range(len(entity_rows)))
        dataset = self.cfg.dataset
        # Keys as the sources hold them: a client sends '17' for an int key, and the join needs 17.
        try:
            keys = typed_join_keys(self.integer_keys, {k: [row[k] for row in entity_rows] for k in self.join_keys})
        except DataError as err:
            raise RequestError(str(err)) from None
        entities = pd.DataFrame({ROW_ID: range(len(entity_rows)),
                                 dataset.event_timestamp: [row[EVENT_TIMESTAMP] for row in entity_rows], **keys})
        joined = build_training_set(entities, self.cfg, self.source_dir, self.store)
        return joined[self.feature_names].reset_index(drop=True)


def raw_schema(cfg: KfopsConfig, spec: FeatureSpec, lookup: OfflineLookup) -> RawSchema:
    """The server's raw request for this model: the builder's fields, else the views' join keys plus
    the model features no view provides."""
    from kfops.core.requests import load_request_builder
    from kfops.serving.runtime.engine import raw_schema_for

    builder = load_request_builder(cfg.dataset.request_builder, cfg.resolved_against, cfg.dataset.request_time_field)
    schema = raw_schema_for(spec, builder, lookup)
    assert schema is not None  # the lookup names its keys and features
    return schema


class RawCompleter:
    """A chunk of raw rows -> the model's feature columns (``predict_file(complete=...)``)."""

    def __init__(self, cfg: KfopsConfig, spec: FeatureSpec, source_dir: Path | None, input_name: str,
                 event_times: bool = False):
        """``event_times``: each completed chunk also holds its rows' event times
        (:data:`~kfops.serving.local.batch_log.EVENT_TIME`), for a log stamped with them."""
        self.spec = spec
        self.event_times = event_times
        self.lookup = OfflineLookup(cfg, source_dir)
        self.schema = raw_schema(cfg, spec, self.lookup)
        self.input_name = input_name
        # The builder's optional time field when the file has no such column: every row is then
        # scored as of now, which a backfill of past rows must be told (set by the first chunk).
        self.time_field_absent: str | None = None

    @property
    def string_fields(self) -> list[str]:
        """Fields read as text whatever they look like ('01' stays '01', a date stays its text); keys
        too, so a zero-padded id ('02134') matches the sources' text (an int key is typed from it)."""
        return [f.name for f in self.schema.builder.fields if f.kind in ("string", "key")]

    def __call__(self, batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        import pyarrow as pa

        from kfops.serving.protocol.payloads import RAW, ParsedRequest, RequestError, validate_columns
        from kfops.serving.runtime.engine import complete_raw

        names = set(batch.schema.names)
        missing = sorted(self.schema.required - names)
        if missing:
            raise DataError(f"{self.input_name} lacks column(s) {', '.join(missing)} of {self.schema.hint()}",
                            hint="a raw row holds what a client sends the server; other columns are kept as they are")
        fields = [f.name for f in self.schema.builder.fields if f.name in names]
        if first_row == 0:
            time_field = getattr(self.schema.builder, "event_field", None)
            if time_field is not None and time_field in self.schema.by_name and time_field not in names:
                self.time_field_absent = time_field
        columns = {name: _python_values(batch.column(name), self.schema.by_name[name].kind) for name in fields}
        labels = [f"row {first_row + i}" for i in range(batch.num_rows)]  # the file's row numbers
        try:
            validate_columns(RAW, columns, self.spec, labels, raw=self.schema)
            completed = complete_raw([ParsedRequest(RAW, columns, batch.num_rows)], self.spec, self.schema,
                                     self.lookup)
        except RequestError as err:
            raise DataError(f"{self.input_name}: {err}", hint=f"each row must be {self.schema.hint()}") from None
        self._check_known(completed.columns, columns, first_row)
        features = {c: completed.columns[c] for c in self.spec.columns}
        if self.event_times:
            from kfops.serving.local.batch_log import EVENT_TIME

            # Inferred, then cast: 5x faster than converting to the nanosecond type directly.
            features[EVENT_TIME] = pa.array(completed.event_times).cast(pa.timestamp("ns", tz="UTC"))
        return pa.RecordBatch.from_pydict(features)

    def _check_known(self, features: dict[str, list], raw: dict[str, list], first_row: int) -> None:
        """A row no view has features for has keys the sources do not know: refused, as the server does."""
        from_views = [c for c in self.spec.columns if c in set(self.lookup.feature_names) and c not in raw]
        if not from_views:
            return
        for i, values in enumerate(zip(*(features[c] for c in from_views), strict=True)):
            if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
                keys = ", ".join(f"{k}={raw[k][i]!r}" for k in self.lookup.join_keys if k in raw)
                raise DataError(
                    f"{self.input_name} row {first_row + i}: the offline feature sources have no features for "
                    f"{keys or 'its entity keys'} at its event time",
                    hint="check the codes; features older than their view's TTL at the row's time count as "
                         "missing; pass --sources with sources that cover the rows' times")


def _python_values(column: pa.Array | pa.ChunkedArray, kind: str) -> list:
    """A column as Python values, as a JSON client sends them: timestamps and dates as ISO text;
    numbers as numbers where the file holds them as text (a CSV column with one bad value is all
    text), so that the check names the row whose value is not a number."""
    import pyarrow as pa

    values = column.to_pylist()
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return [None if v is None else v.isoformat() for v in values]
    if kind in ("number", "integer") and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return [_number_or_text(v) for v in values]
    return values


def _number_or_text(value: str | None) -> int | float | str | None:
    if value is None:
        return None
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            continue
    return value
