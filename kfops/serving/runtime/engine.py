"""The serving core, free of HTTP and KServe: validated request in, probabilities out.

Two batched paths share one model snapshot per request:

* feature vectors are encoded on the request path (:class:`RowEncoder`) and scored in inline
  batches on the event loop (one XGBoost call per batch);
* raw requests are batched into a worker thread that derives the request-time features (the
  dataset's :class:`~kfops.core.requests.RequestBuilder`, ``dataset.request_builder``), reads the
  rest from the online store in one lookup, encodes and scores.

The raw request's fields come from the builder; without one, from the online lookup's feature
views (:func:`raw_schema_for`): their join keys plus the model features no view provides.

A request keeps the :class:`LoadedModel` it started with, so a hot swap never mixes one
version's encoding with another's weights, and requests in progress finish on the old version.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kfops.core.requests import EVENT_TIMESTAMP, DefaultRequest, RawSchema, RequestSpec, default_builder
from kfops.errors import ServingError
from kfops.serving.protocol.payloads import (
    FEATURES,
    DependencyUnavailable,
    LookupUnavailable,
    ParsedRequest,
    RequestError,
    UnknownEntity,
)
from kfops.serving.runtime.batching import AdaptiveBatcher
from kfops.serving.runtime.inference_log import LogRecord

if TYPE_CHECKING:
    import pandas as pd

    from kfops.core.model import FeatureSpec
    from kfops.serving.runtime.inference_log import InferenceLogWriter
    from kfops.serving.runtime.loading import LoadedModel
    from kfops.serving.runtime.lookup import OnlineLookup
    from kfops.serving.runtime.metrics import ServingMetrics


@dataclass
class Prediction:
    probabilities: np.ndarray
    version: str
    threshold: float


class InferenceEngine:
    def __init__(
        self,
        name: str,
        loaded: LoadedModel,
        *,
        max_batch_size: int = 256,
        max_latency_s: float = 0.002,
        lookup: OnlineLookup | None = None,
        builder: RequestSpec = None,
        log_writer: InferenceLogWriter | None = None,
        metrics: ServingMetrics | None = None,
    ):
        self.name = name
        self._current = loaded
        self._lookup = lookup
        self._builder = builder
        self._schemas: dict[int, tuple[FeatureSpec, RawSchema | None]] = {}
        self._log_writer = log_writer
        self._metrics = metrics
        self._lookup_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfops-lookup")
        if metrics is not None:
            model_rows = metrics.batch_rows.labels(name, "model").observe
            lookup_rows = metrics.batch_rows.labels(name, "lookup").observe
            self._count_rows = metrics.predictions.labels(name).inc
            metrics.set_version(name, loaded.version)
        else:
            model_rows = lookup_rows = self._count_rows = None
        self._model_batcher = AdaptiveBatcher(
            self._score_batch, max_batch_size=max_batch_size, max_latency_s=max_latency_s, on_batch=model_rows
        )
        self._raw_batcher = AdaptiveBatcher(
            self._raw_batch, max_batch_size=max_batch_size, max_latency_s=max_latency_s,
            executor=self._lookup_pool, on_batch=lookup_rows,
        )

    @property
    def current(self) -> LoadedModel:
        return self._current

    @property
    def has_lookup(self) -> bool:
        return self._lookup is not None

    def raw_schema(self, spec: FeatureSpec) -> RawSchema | None:
        """The raw request this server takes for a model (None: feature vectors only)."""
        cached = self._schemas.get(id(spec))
        if cached is not None and cached[0] is spec:
            return cached[1]
        schema = raw_schema_for(spec, self._builder, self._lookup)
        if len(self._schemas) > 8:
            self._schemas.clear()
        self._schemas[id(spec)] = (spec, schema)
        return schema

    def describe_raw(self, spec: FeatureSpec) -> dict[str, Any] | None:
        """The raw request's fields for the model metadata; None when unknown or not known yet
        (a Feast registry not read yet is not read for this)."""
        if (self._builder is None or isinstance(self._builder, DefaultRequest)) and not getattr(
                self._lookup, "ready", True):
            return None
        try:
            schema = self.raw_schema(spec)
        except DependencyUnavailable:
            return None
        if schema is None:
            return None
        return {"name": schema.name, "online_lookup": self._lookup is not None, "fields": [
            {"name": f.name, "kind": f.kind, "required": f.required, "nullable": f.nullable}
            for f in schema.builder.fields]}

    def raw_source(self, spec: FeatureSpec) -> RawSchema | Callable[[], RawSchema | None] | None:
        """For the decoders: the schema if known, else a function that resolves it on first need."""
        cached = self._schemas.get(id(spec))
        if cached is not None and cached[0] is spec:
            return cached[1]
        return lambda: self.raw_schema(spec)

    def swap(self, loaded: LoadedModel) -> LoadedModel:
        """Serve ``loaded`` from the next request on; returns the previous snapshot."""
        previous, self._current = self._current, loaded
        if self._metrics is not None:
            self._metrics.set_version(self.name, loaded.version, previous.version)
        return previous

    async def infer(self, parsed: ParsedRequest, request_id: str) -> Prediction:
        snapshot = self._current
        if parsed.kind == FEATURES:
            matrix = snapshot.encoder.encode(parsed.columns, parsed.rows)
            probabilities = await self._model_batcher.submit((snapshot, matrix), parsed.rows)
            categorical = {c: parsed.columns[c] for c in snapshot.categorical_columns}
            raw_input = None
        else:
            if self._lookup is None:
                schema = self.raw_schema(snapshot.spec)
                raise LookupUnavailable(
                    "this server has no online feature lookup, so it cannot complete "
                    f"{schema.name if schema else 'a raw request'}: send all of the model's features, "
                    "or start the server with --online-lookup feast"
                )
            probabilities, matrix, categorical = await self._raw_batcher.submit((snapshot, parsed), parsed.rows)
            raw_input = parsed.columns
        if self._count_rows is not None:
            self._count_rows(parsed.rows)
        if self._log_writer is not None:
            self._log_writer.append(LogRecord(
                timestamp=time.time(), request_id=request_id, model_name=self.name,
                model_version=snapshot.version, input_kind=parsed.kind, feature_names=snapshot.spec.columns,
                matrix=matrix, categorical=categorical, probabilities=probabilities,
                threshold=snapshot.threshold, raw_input=raw_input,
            ))
        return Prediction(probabilities=probabilities, version=snapshot.version, threshold=snapshot.threshold)

    def close(self) -> None:
        self._lookup_pool.shutdown(wait=True, cancel_futures=True)
        if self._log_writer is not None:
            self._log_writer.close()

    # -- batch functions ------------------------------------------------------------------------

    @staticmethod
    def _score_batch(items: list[tuple[LoadedModel, np.ndarray]]) -> list[np.ndarray]:
        results: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
        for snapshot, positions in _by_snapshot(items):
            matrices = [items[i][1] for i in positions]
            matrix = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
            probabilities = np.asarray(snapshot.model.predict_proba_encoded(matrix), dtype=np.float64)
            for i, part in zip(positions, _split(probabilities, [len(m) for m in matrices]), strict=True):
                results[i] = part if np.isfinite(part).all() else _non_finite(snapshot)
        return results

    def _raw_batch(self, items: list[tuple[LoadedModel, ParsedRequest]]) -> list[Any]:
        results: list[Any] = [None] * len(items)
        for snapshot, positions in _by_snapshot(items):
            for i, result in zip(positions, self._score_raw(snapshot, [items[i][1] for i in positions]), strict=True):
                results[i] = result
        return results

    def _score_raw(self, snapshot: LoadedModel, requests: list[ParsedRequest]) -> list[Any]:
        schema = self.raw_schema(snapshot.spec)
        assert schema is not None and self._lookup is not None  # decoded as raw, checked in infer
        completed = complete_raw(requests, snapshot.spec, schema, self._lookup, snapshot.version)
        # Columns as lists through the request encoder: the same matrix as FeatureSpec.encode on the
        # joined frame (tested), without building and re-reading that frame for every batch.
        matrix = snapshot.encoder.encode(completed.columns, completed.rows)
        probabilities = np.asarray(snapshot.model.predict_proba_encoded(matrix), dtype=np.float64)
        categorical = {c: completed.columns[c] for c in snapshot.categorical_columns}
        results: list[Any] = []
        for (start, stop), problem in zip(completed.slices, completed.problems, strict=True):
            if problem is not None:
                results.append(problem)
            elif not np.isfinite(probabilities[start:stop]).all():
                results.append(_non_finite(snapshot))
            else:
                results.append((probabilities[start:stop], matrix[start:stop],
                                {c: values[start:stop] for c, values in categorical.items()}))
        return results


def lookup_join_keys(lookup: Any) -> list[str] | None:
    """The join keys a lookup reads by (the feature views' entities), if it says."""
    keys = getattr(lookup, "join_keys", None)
    return None if keys is None else list(keys)


def raw_schema_for(spec: FeatureSpec, builder: RequestSpec, lookup: Any) -> RawSchema | None:
    """The dataset's raw request: the builder's fields, else the lookup's join keys plus the model
    features its views do not provide (and the event time field). None without either (feature
    vectors only)."""
    if builder is not None and not isinstance(builder, DefaultRequest):
        return RawSchema.of(builder)
    if lookup is None:
        return None
    try:
        keys = lookup_join_keys(lookup)
        provided = getattr(lookup, "feature_names", None)
    except Exception as err:  # Feast's registry unreadable: the store's fault, as for a failed read
        raise DependencyUnavailable(
            f"the online feature store's views could not be read ({type(err).__name__}: {str(err)[:200]}); retry later"
        ) from err
    if keys is None or provided is None:
        return None
    time_field = builder.time_field if isinstance(builder, DefaultRequest) else EVENT_TIMESTAMP
    return RawSchema.of(default_builder(keys, spec.columns, list(provided), list(spec.categorical), time_field))


@dataclass
class CompletedRows:
    """Raw requests turned into model feature columns: one list per column over all requests' rows."""

    columns: dict[str, list]
    rows: int
    slices: list[tuple[int, int]]  # each request's rows
    problems: list[UnknownEntity | None]  # per request: an entity the store does not know
    event_times: list[dt.datetime] | None = None  # each row's, as its features were read at


def complete_raw(
    requests: list[ParsedRequest],
    spec: FeatureSpec,
    schema: RawSchema,
    lookup: OnlineLookup,
    version: str = "",
) -> CompletedRows:
    """Derive the request-time features of raw requests and read the rest from the online store.

    Shared by the in-process path and the transformer (:mod:`kfops.serving.kserve.transformer`).
    Optional fields a request left out take their default. Categoricals come back as text or
    None, numbers as numbers (NaN when missing).
    """
    sizes = [r.rows for r in requests]
    rows = sum(sizes)
    raw: dict[str, list] = {}
    for field in schema.builder.fields:
        name = field.name
        if len(requests) == 1:
            values = requests[0].columns.get(name)
            raw[name] = list(values) if values is not None else [field.default] * rows
        else:
            raw[name] = [v for r in requests for v in r.columns.get(name, [field.default] * r.rows)]
    derived = schema.builder.derive(raw, rows)
    merged = {**raw, **derived.columns}
    keys = lookup_join_keys(lookup)
    if keys is None:  # a plain callable: its keys are the declared key fields, else every raw field
        keys = [f.name for f in schema.builder.fields if f.kind == "key"] or list(raw)
    absent_keys = [k for k in keys if k not in merged]
    if absent_keys:
        raise ServingError(
            f"{schema.name} gives no value for join key(s) {', '.join(absent_keys)} of the feature views",
            hint="declare them as raw fields of dataset.request_builder, or derive them",
        )
    event_times = derived.event_times
    if event_times is None:
        event_times = [dt.datetime.now(dt.UTC)] * rows
    elif len(event_times) != rows:
        raise ServingError(f"{schema.name}: derive returned {len(event_times)} event times for {rows} rows")
    names = [*keys, EVENT_TIMESTAMP]
    entity_rows = [dict(zip(names, values, strict=True)) for values in zip(*(merged[k] for k in keys), event_times, strict=True)]
    try:
        online, frame = _lookup_columns(lookup, entity_rows)
    except RequestError:  # the request's own mistake (a key its view's type cannot take), not the store's
        raise
    except Exception as err:  # Redis down or paused past its timeout, a Feast failure: the store's fault
        raise DependencyUnavailable(
            f"the online feature store failed ({type(err).__name__}: {str(err)[:200]}); retry later"
        ) from err
    returned = len(frame) if frame is not None else next((len(v) for v in online.values() if len(v) != rows), rows)
    if returned != rows:
        raise ServingError(f"the online lookup returned {returned} rows for {rows} entities")
    from_store = [c for c in spec.columns if c not in merged]
    missing = [c for c in from_store if c not in online]
    if missing:
        raise ServingError(
            f"the online store does not provide feature(s) {', '.join(missing)} that model "
            f"version {version} needs", hint="check features.feature_refs against the model's features",
        )
    if not from_store:
        absent = np.zeros(rows, bool)
    elif frame is not None:
        absent = frame[from_store].isna().all(axis=1).to_numpy()
    else:  # read_columns: None or NaN when missing
        absent = np.array([all(v is None or (isinstance(v, float) and v != v) for v in row)
                           for row in zip(*(online[c] for c in from_store), strict=True)], bool)
    columns = {c: (merged[c] if c in merged else online[c]) for c in spec.columns}
    for c in spec.columns:
        if c in spec.categorical:
            columns[c] = [v if isinstance(v, str) else _as_category(v) for v in columns[c]]
    slices, problems, start = [], [], 0
    time_field = getattr(schema.builder, "event_field", None)
    when = (f"a request without {time_field} is for now: send one to ask about a past moment" if time_field
            else "the request's time is the one dataset.request_builder derives from its fields")
    for size in sizes:
        stop = start + size
        slices.append((start, stop))
        bad = np.flatnonzero(absent[start:stop])
        if bad.size:
            row = entity_rows[start + int(bad[0])]
            named = ", ".join(f"{k}={row[k]!r}" for k in keys)
            problems.append(UnknownEntity(
                f"row {int(bad[0])}: the online feature store has no features for {named}; "
                "check the codes, or materialize the store (kfops features materialize); features older "
                f"than their view's TTL at the request's time count as missing ({when})"
            ))
        else:
            problems.append(None)
        start = stop
    return CompletedRows(columns=columns, rows=rows, slices=slices, problems=problems, event_times=event_times)


def _lookup_columns(lookup: OnlineLookup, entity_rows: list[dict]) -> tuple[dict[str, list], pd.DataFrame | None]:
    """The lookup's features as plain lists: through its ``columns`` (the Feast lookup, no pandas)
    where it has one, else from the DataFrame it returns (given back too, for its missing values)."""
    columns = getattr(lookup, "columns", None)
    if callable(columns):
        return columns(entity_rows), None
    frame = lookup(entity_rows).reset_index(drop=True)
    return {c: frame[c].tolist() for c in frame.columns}, frame


def _as_category(value: Any) -> str | None:
    """A stored categorical as FeatureSpec.encode reads it: text, with null and NaN missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _non_finite(snapshot: LoadedModel) -> ServingError:
    # A broken artifact, not a client mistake: a 500 that canary analysis counts against the model.
    return ServingError(f"model version {snapshot.version} returned a non-finite probability",
                        hint="the model artifact is broken; roll back to the previous version")


def _by_snapshot(items: list[tuple[Any, Any]]) -> list[tuple[Any, list[int]]]:
    """Group item positions by model snapshot (one group except right after a hot swap)."""
    first = items[0][0]
    if all(item[0] is first for item in items):
        return [(first, list(range(len(items))))]
    groups: dict[int, tuple[Any, list[int]]] = {}
    for i, (snapshot, _) in enumerate(items):
        groups.setdefault(id(snapshot), (snapshot, []))[1].append(i)
    return list(groups.values())


def _split(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    if len(sizes) == 1:
        return [values]
    return np.split(values, np.cumsum(sizes)[:-1])
