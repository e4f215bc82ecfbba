"""Canary analysis: promote a new model version or roll it back, from its live traffic (pure).

Both rollouts use it. On a cluster, :mod:`kfops.adapters.kserve_cluster` reads the pods of
two KServe revisions; locally, :mod:`kfops.serving.local.canary` reads two server processes behind a
traffic split. Each side scrapes the servers' Prometheus text (:func:`parse_metrics`), takes
the difference since the canary started (:func:`traffic_window`) and asks :func:`decide`.

The decision fails closed: a canary is promoted only after ``bake_s`` of healthy traffic with at
least ``min_requests`` requests; too little traffic by ``timeout_s`` is a rollback, not a pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfops.config import CanaryConfig

REQUESTS = "kfops_serving_requests_total"
LATENCY_BUCKET = "kfops_serving_request_seconds_bucket"


@dataclass(frozen=True)
class MetricsSnapshot:
    """Cumulative counters of one server process for one model, as scraped."""

    responses: Mapping[str, float] = field(default_factory=dict)  # HTTP status code -> count
    latency_buckets: Mapping[float, float] = field(default_factory=dict)  # upper bound (s) -> cumulative count

    @property
    def total(self) -> float:
        return float(sum(self.responses.values()))


def parse_metrics(text: str, model: str) -> MetricsSnapshot:
    """Responses by status code and the latency histogram of ``model``, summed over protocols."""
    from prometheus_client.parser import text_string_to_metric_families

    responses: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == REQUESTS:
                code = sample.labels.get("code", "")
                responses[code] = responses.get(code, 0.0) + sample.value
            elif sample.name == LATENCY_BUCKET:
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return MetricsSnapshot(responses=responses, latency_buckets=buckets)


@dataclass(frozen=True)
class TrafficWindow:
    """What one side of the rollout answered since the canary started."""

    responses: Mapping[str, float] = field(default_factory=dict)
    latency_buckets: Mapping[float, float] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return round(sum(self.responses.values()))

    def _count(self, first_digit: str) -> int:
        return round(sum(v for code, v in self.responses.items() if code.startswith(first_digit)))

    @property
    def server_errors(self) -> int:
        return self._count("5")

    @property
    def client_errors(self) -> int:
        return self._count("4")

    @property
    def error_rate(self) -> float:
        return self.server_errors / self.requests if self.requests else 0.0

    @property
    def client_error_rate(self) -> float:
        return self.client_errors / self.requests if self.requests else 0.0

    def latency_quantile_ms(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q``: never optimistic. None: no data."""
        bounds = sorted(self.latency_buckets)
        if not bounds:
            return None
        total = self.latency_buckets[bounds[-1]]
        if total <= 0:
            return None
        for bound in bounds:
            if self.latency_buckets[bound] >= q * total:
                return bound * 1000.0
        return math.inf


def traffic_window(before: Mapping[str, MetricsSnapshot], after: Mapping[str, MetricsSnapshot]) -> TrafficWindow:
    """Sum of per-source differences (a source is a process or pod, by name).

    A source that is new, or whose counters went down (it restarted), counts from zero.
    """
    responses: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for source, now in after.items():
        then = before.get(source)
        restarted = then is not None and now.total < then.total
        base = MetricsSnapshot() if then is None or restarted else then
        for code, value in now.responses.items():
            responses[code] = responses.get(code, 0.0) + max(value - base.responses.get(code, 0.0), 0.0)
        for bound, value in now.latency_buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + max(value - base.latency_buckets.get(bound, 0.0), 0.0)
    return TrafficWindow(responses=responses, latency_buckets=buckets)


class RolloutAction(StrEnum):
    WAIT = "wait"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class RolloutDecision:
    action: RolloutAction
    reasons: tuple[str, ...]
    elapsed_s: float
    canary: TrafficWindow
    stable: TrafficWindow | None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record of the decision and the evidence behind it."""
        return {
            "action": str(self.action), "reasons": list(self.reasons), "elapsed_s": round(self.elapsed_s, 1),
            "canary": _describe(self.canary), "stable": _describe(self.stable) if self.stable else None,
        }


def _describe(window: TrafficWindow) -> dict[str, Any]:
    return {"requests": window.requests, "server_errors": window.server_errors,
            "client_errors": window.client_errors, "p99_ms": window.latency_quantile_ms(0.99)}


def decide(
    canary: TrafficWindow, stable: TrafficWindow | None, elapsed_s: float, policy: CanaryConfig
) -> RolloutDecision:
    """Promote, roll back or keep waiting, from the traffic both versions answered so far.

    Errors roll back as soon as there are more of them than the error budget of ``min_requests``
    (or of the requests seen, when more) allows, so a broken canary is caught early. Latency
    and the extra-4xx check wait for ``min_requests``. Promotion needs ``bake_s`` elapsed as well.
    """

    def verdict(action: RolloutAction, *reasons: str) -> RolloutDecision:
        return RolloutDecision(action, tuple(reasons), elapsed_s, canary, stable)

    failures: list[str] = []
    budget = policy.max_error_rate * max(canary.requests, policy.min_requests)
    if canary.server_errors > budget:
        failures.append(
            f"{canary.server_errors} server errors in {canary.requests} canary requests "
            f"({canary.error_rate:.1%}; at most {policy.max_error_rate:.1%} allowed)"
        )
    judged = canary.requests >= policy.min_requests
    if judged:
        failures.extend(_client_error_excess(canary, stable, policy))
        failures.extend(_latency_failures(canary, stable, policy))
    if failures:
        return verdict(RolloutAction.ROLLBACK, *failures)

    if judged and elapsed_s >= policy.bake_s:
        p99 = canary.latency_quantile_ms(0.99)
        return verdict(
            RolloutAction.PROMOTE,
            f"healthy for {elapsed_s:.0f}s over {canary.requests} requests: {canary.error_rate:.2%} server errors, "
            f"p99 <= {_ms(p99)}",
        )
    if elapsed_s >= policy.timeout_s:
        return verdict(
            RolloutAction.ROLLBACK,
            f"too little traffic to judge the canary: {canary.requests} of {policy.min_requests} requests "
            f"in {elapsed_s:.0f}s (timeout {policy.timeout_s:g}s); not promoting without evidence",
        )
    waiting = []
    if not judged:
        waiting.append(f"{canary.requests}/{policy.min_requests} requests")
    if elapsed_s < policy.bake_s:
        waiting.append(f"{elapsed_s:.0f}/{policy.bake_s:g}s baked")
    return verdict(RolloutAction.WAIT, "waiting: " + ", ".join(waiting))


def _client_error_excess(canary: TrafficWindow, stable: TrafficWindow | None, policy: CanaryConfig) -> list[str]:
    # Clients send bad requests to both versions alike; only the canary's excess is its fault.
    baseline = stable.client_error_rate if stable is not None and stable.requests else 0.0
    excess = canary.client_error_rate - baseline
    if excess > policy.max_error_rate:
        return [(f"canary answered {canary.client_error_rate:.1%} of requests with a 4xx versus "
                f"{baseline:.1%} for the stable version")]
    return []


def _latency_failures(canary: TrafficWindow, stable: TrafficWindow | None, policy: CanaryConfig) -> list[str]:
    p99 = canary.latency_quantile_ms(0.99)
    if p99 is None:
        return ["the canary reported no latency histogram"]
    if p99 > policy.max_p99_ms:
        return [f"canary p99 latency {_ms(p99)} exceeds {policy.max_p99_ms:g} ms"]
    if stable is not None and stable.requests >= policy.min_requests:
        stable_p99 = stable.latency_quantile_ms(0.99)
        if stable_p99 is not None and p99 > stable_p99 * policy.max_p99_ratio and p99 > stable_p99 + policy.latency_slack_ms:
            return [(f"canary p99 latency {_ms(p99)} is over {policy.max_p99_ratio:g}x the stable version's "
                    f"{_ms(stable_p99)}")]
    return []


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:g} ms"


Observe = Callable[[], tuple[TrafficWindow, TrafficWindow | None]]


def analyse_canary(
    observe: Observe,
    policy: CanaryConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_decision: Callable[[RolloutDecision], None] | None = None,
) -> RolloutDecision:
    """Poll ``observe`` every ``policy.poll_s`` until :func:`decide` promotes or rolls back.

    ``observe`` returns the canary's and the stable version's traffic since the rollout began.
    An exception from ``observe`` propagates: the caller rolls back (fail closed).
    """
    started = clock()
    while True:
        canary, stable = observe()
        decision = decide(canary, stable, clock() - started, policy)
        if on_decision is not None:
            on_decision(decision)
        if decision.action is not RolloutAction.WAIT:
            return decision
        sleep(policy.poll_s)


def windows_from(
    scrape: Callable[[], tuple[dict[str, MetricsSnapshot], dict[str, MetricsSnapshot]]],
) -> Observe:
    """An ``observe`` that scrapes (canary sources, stable sources) now and diffs against the first scrape."""
    baseline_canary, baseline_stable = scrape()

    def observe() -> tuple[TrafficWindow, TrafficWindow | None]:
        canary, stable = scrape()
        stable_window = traffic_window(baseline_stable, stable) if stable or baseline_stable else None
        return traffic_window(baseline_canary, canary), stable_window

    return observe

