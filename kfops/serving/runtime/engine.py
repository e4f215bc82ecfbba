"""The serving core, free of HTTP and KServe: validated request in, probabilities out.

Two batched paths share one model snapshot per request:

* feature vectors are encoded on the request path (:class:`RowEncoder`) and scored in inline
  batches on the event loop (one XGBoost call per batch);
* raw flights are batched into a worker thread that derives the request-time features
  (:func:`kfops.datasets.flights.request_features`), reads the rest from the online store in one
  lookup, encodes with :meth:`FeatureSpec.encode` and scores.

A request keeps the :class:`LoadedModel` it started with, so a hot swap never mixes one
version's encoding with another's weights, and in-flight requests finish on the old version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kfops.errors import ServingError
from kfops.serving.protocol.payloads import (
    ENTITY_KEYS,
    FEATURES,
    DependencyUnavailable,
    LookupUnavailable,
    ParsedRequest,
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
        derive: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
        log_writer: InferenceLogWriter | None = None,
        metrics: ServingMetrics | None = None,
    ):
        self.name = name
        self._current = loaded
        self._lookup = lookup
        self._derive = derive
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
        self._flight_batcher = AdaptiveBatcher(
            self._flight_batch, max_batch_size=max_batch_size, max_latency_s=max_latency_s,
            executor=self._lookup_pool, on_batch=lookup_rows,
        )

    @property
    def current(self) -> LoadedModel:
        return self._current

    @property
    def has_lookup(self) -> bool:
        return self._lookup is not None

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
                raise LookupUnavailable(
                    "this server has no online feature lookup, so it cannot complete a raw flight: "
                    "send all of the model's features, or start the server with --online-lookup feast"
                )
            probabilities, matrix, categorical = await self._flight_batcher.submit((snapshot, parsed), parsed.rows)
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

    def _flight_batch(self, items: list[tuple[LoadedModel, ParsedRequest]]) -> list[Any]:
        results: list[Any] = [None] * len(items)
        for snapshot, positions in _by_snapshot(items):
            for i, result in zip(positions, self._score_flights(snapshot, [items[i][1] for i in positions]), strict=True):
                results[i] = result
        return results

    def _score_flights(self, snapshot: LoadedModel, requests: list[ParsedRequest]) -> list[Any]:
        completed = complete_flights(requests, snapshot.spec, self._derive, self._lookup, snapshot.version)
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


@dataclass
class CompletedFlights:
    """Raw flights turned into model feature columns: one list per column over all requests' rows."""

    columns: dict[str, list]
    rows: int
    slices: list[tuple[int, int]]  # each request's rows
    problems: list[UnknownEntity | None]  # per request: an entity the store does not know


def complete_flights(
    requests: list[ParsedRequest],
    spec: FeatureSpec,
    derive: Callable[[pd.DataFrame], pd.DataFrame] | None,
    lookup: OnlineLookup,
    version: str = "",
) -> CompletedFlights:
    """Derive the request-time features of raw flights and read the rest from the online store.

    Shared by the in-process path and the transformer (:mod:`.transformer`). Categoricals come
    back as text or None, numbers as numbers (NaN when missing).
    """
    import pandas as pd

    if derive is None:
        from kfops.datasets.flights import request_features as derive
    sizes = [r.rows for r in requests]
    raw = pd.DataFrame({
        name: [v for r in requests for v in r.columns.get(name, [default] * r.rows)]
        for name, default in (("carrier", None), ("origin", None), ("dest", None), ("tailnum", None),
                              ("distance", None), ("sched_dep", None), ("flight", 0))
    })
    derived = derive(raw).reset_index(drop=True)
    keys = derived[[k for k in (*ENTITY_KEYS, "event_timestamp") if k in derived.columns]].to_dict("records")
    try:
        online = lookup(keys)
    except Exception as err:  # Redis down or paused past its timeout, a Feast failure: the store's fault
        raise DependencyUnavailable(
            f"the online feature store failed ({type(err).__name__}: {str(err)[:200]}); retry later"
        ) from err
    if len(online) != len(keys):
        raise ServingError(f"the online lookup returned {len(online)} rows for {len(keys)} entities")
    online = online.reset_index(drop=True)
    from_store = [c for c in spec.columns if c not in derived.columns]
    missing = [c for c in from_store if c not in online.columns]
    if missing:
        raise ServingError(
            f"the online store does not provide feature(s) {', '.join(missing)} that model "
            f"version {version} needs", hint="check features.feature_refs against the model's features",
        )
    absent = online[from_store].isna().all(axis=1).to_numpy() if from_store else np.zeros(len(keys), bool)
    columns = {c: (derived[c] if c in derived.columns else online[c]).tolist() for c in spec.columns}
    for c in spec.columns:
        if c in spec.categorical:
            columns[c] = [v if isinstance(v, str) else _as_category(v) for v in columns[c]]
    slices, problems, start = [], [], 0
    for size in sizes:
        stop = start + size
        slices.append((start, stop))
        bad = np.flatnonzero(absent[start:stop])
        if bad.size:
            row = keys[start + int(bad[0])]
            named = ", ".join(f"{k}={row[k]!r}" for k in ENTITY_KEYS if k in row)
            problems.append(UnknownEntity(
                f"row {int(bad[0])}: the online feature store has no features for {named}; "
                "check the codes, or materialize the store (kfops features materialize)"
            ))
        else:
            problems.append(None)
        start = stop
    return CompletedFlights(columns=columns, rows=len(keys), slices=slices, problems=problems)


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
