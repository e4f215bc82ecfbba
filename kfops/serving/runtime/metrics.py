"""Prometheus metrics of the model server, served by KServe's ``/metrics`` next to its own.

Created on first use (never at import), once per registry, so several models in one process
share the collectors and tests can pass a private ``CollectorRegistry``.
"""

from __future__ import annotations

import threading
from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

_lock = threading.Lock()
_by_registry: dict[Any, ServingMetrics] = {}


class ServingMetrics:
    def __init__(self, registry: Any):
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "kfops_serving_requests", "Inference requests answered, by protocol and HTTP status code.",
            ["model", "protocol", "code"], registry=registry,
        )
        self.latency = Histogram(
            "kfops_serving_request_seconds", "Time from request received to response sent.",
            ["model", "protocol"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.batch_rows = Histogram(
            "kfops_serving_batch_rows", "Rows per model call (stage=model) or per online lookup (stage=lookup).",
            ["model", "stage"], buckets=BATCH_BUCKETS, registry=registry,
        )
        self.predictions = Counter(
            "kfops_serving_predictions", "Rows scored.", ["model"], registry=registry,
        )
        self.errors = Counter(
            "kfops_serving_errors", "Requests answered with an error, by reason.", ["model", "reason"],
            registry=registry,
        )
        self.model_info = Gauge(
            "kfops_serving_model_info", "1 for the model version being served.", ["model", "version"],
            registry=registry,
        )
        self.reloads = Counter(
            "kfops_serving_reloads", "Model hot-swaps, by outcome.", ["model", "outcome"], registry=registry,
        )
        self.log_rows = Counter(
            "kfops_serving_inference_log_rows", "Prediction rows written to the inference log.", registry=registry,
        )
        self.log_dropped = Counter(
            "kfops_serving_inference_log_dropped_rows",
            "Prediction rows dropped because the inference log writer fell too far behind.", registry=registry,
        )

    def set_version(self, model: str, version: str, previous: str | None = None) -> None:
        if previous is not None and previous != version:
            self.model_info.labels(model, previous).set(0)
        self.model_info.labels(model, version).set(1)


def serving_metrics(registry: Any = None) -> ServingMetrics:
    """The metrics bound to ``registry`` (default: prometheus_client's global REGISTRY)."""
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    with _lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = ServingMetrics(registry)
        return metrics
