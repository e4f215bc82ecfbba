"""Canary analysis as a pure function of metrics: healthy, erroring, slow and quiet canaries.

The traffic is recorded into the server's real Prometheus collectors and scraped as text, so
parsing is tested against what the server actually exposes.
"""

from __future__ import annotations

import itertools

import pytest

from kfops.config import CanaryConfig
from kfops.core.rollout import (
    MetricsSnapshot,
    RolloutAction,
    TrafficWindow,
    analyse_canary,
    decide,
    parse_metrics,
    traffic_window,
    windows_from,
)
from kfops.serving.runtime.metrics import ServingMetrics

MODEL = "flights-delay"
pytestmark = pytest.mark.usefixtures("private_prometheus_values")
POLICY = CanaryConfig(bake_s=60, min_requests=200, max_error_rate=0.01, max_p99_ms=100, max_p99_ratio=1.5,
                      latency_slack_ms=5, poll_s=1, timeout_s=600)


class FakeServer:
    """One server process's real collectors; ``serve`` records answered requests."""

    def __init__(self):
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        self.metrics = ServingMetrics(self.registry)

    def serve(self, n: int, *, latency_s: float = 0.002, code: int = 200, model: str = MODEL) -> FakeServer:
        for _ in range(n):
            self.metrics.requests.labels(model, "v2", str(code)).inc()
            self.metrics.latency.labels(model, "v2").observe(latency_s)
        return self

    def scrape(self, model: str = MODEL) -> MetricsSnapshot:
        from prometheus_client import generate_latest

        return parse_metrics(generate_latest(self.registry).decode(), model)


def window(server: FakeServer, before: MetricsSnapshot | None = None) -> TrafficWindow:
    return traffic_window({"p": before} if before else {}, {"p": server.scrape()})


def test_parse_reads_codes_and_latency_of_one_model_only():
    server = FakeServer().serve(30, code=200).serve(2, code=500).serve(3, code=400, latency_s=0.03)
    server.serve(50, model="other-model")
    snapshot = server.scrape()
    assert snapshot.responses == {"200": 30.0, "500": 2.0, "400": 3.0}
    assert snapshot.latency_buckets[float("inf")] == 35
    assert snapshot.latency_buckets[0.002] == 32  # the 2 ms requests, cumulative


def test_window_is_the_difference_since_the_start_and_a_restart_counts_from_zero():
    server = FakeServer().serve(100)
    before = server.scrape()
    server.serve(40).serve(5, code=503)
    got = window(server, before)
    assert (got.requests, got.server_errors, got.client_errors) == (45, 5, 0)

    restarted = FakeServer().serve(7)
    got = traffic_window({"pod-a": before}, {"pod-a": restarted.scrape(), "pod-b": FakeServer().serve(3).scrape()})
    assert got.requests == 10


def test_p99_is_the_upper_bound_of_its_bucket_never_optimistic():
    server = FakeServer().serve(990, latency_s=0.0015).serve(10, latency_s=0.2)
    assert window(server).latency_quantile_ms(0.99) == pytest.approx(2.0)
    server.serve(1, latency_s=0.2)
    assert window(server).latency_quantile_ms(0.99) == pytest.approx(250.0)
    assert TrafficWindow().latency_quantile_ms(0.99) is None


def test_a_healthy_canary_waits_for_the_bake_time_then_is_promoted():
    canary = window(FakeServer().serve(400, latency_s=0.003).serve(1, code=500))
    stable = window(FakeServer().serve(3600, latency_s=0.003))
    early = decide(canary, stable, elapsed_s=30, policy=POLICY)
    assert early.action is RolloutAction.WAIT and "30/60s baked" in early.reasons[0]
    done = decide(canary, stable, elapsed_s=61, policy=POLICY)
    assert done.action is RolloutAction.PROMOTE, done.reasons
    assert "401 requests" in done.reasons[0]


def test_an_erroring_canary_is_rolled_back_before_the_sample_is_complete():
    canary = window(FakeServer().serve(20).serve(3, code=500))  # 3 errors > 1% of the 200-request budget
    decision = decide(canary, window(FakeServer().serve(200)), elapsed_s=5, policy=POLICY)
    assert decision.action is RolloutAction.ROLLBACK
    assert "3 server errors in 23 canary requests" in decision.reasons[0]


def test_a_few_errors_within_budget_do_not_roll_back():
    canary = window(FakeServer().serve(20).serve(2, code=500))  # 2 <= 1% of 200
    assert decide(canary, None, elapsed_s=5, policy=POLICY).action is RolloutAction.WAIT


def test_a_canary_answering_more_4xx_than_stable_is_rolled_back_but_shared_4xx_are_not():
    stable = window(FakeServer().serve(950).serve(50, code=400))  # clients send 5% bad requests
    same = window(FakeServer().serve(190).serve(10, code=400))
    assert decide(same, stable, elapsed_s=61, policy=POLICY).action is RolloutAction.PROMOTE
    worse = window(FakeServer().serve(160).serve(40, code=422))
    decision = decide(worse, stable, elapsed_s=61, policy=POLICY)
    assert decision.action is RolloutAction.ROLLBACK and "4xx" in decision.reasons[0]


def test_a_slow_canary_is_rolled_back_on_the_absolute_ceiling():
    canary = window(FakeServer().serve(250, latency_s=0.2))
    decision = decide(canary, None, elapsed_s=61, policy=POLICY)
    assert decision.action is RolloutAction.ROLLBACK
    assert "p99 latency 250 ms exceeds 100 ms" in decision.reasons[0]


def test_a_canary_much_slower_than_stable_is_rolled_back_even_under_the_ceiling():
    stable = window(FakeServer().serve(1000, latency_s=0.004))
    canary = window(FakeServer().serve(300, latency_s=0.04))
    decision = decide(canary, stable, elapsed_s=61, policy=POLICY)
    assert decision.action is RolloutAction.ROLLBACK
    assert "over 1.5x the stable version's 5 ms" in decision.reasons[0]


def test_a_bucket_step_within_the_slack_is_not_a_slowdown():
    stable = window(FakeServer().serve(1000, latency_s=0.0009))  # p99 bucket 1 ms
    canary = window(FakeServer().serve(300, latency_s=0.0025))  # p99 bucket 3 ms: 3x, but only 2 ms more
    assert decide(canary, stable, elapsed_s=61, policy=POLICY).action is RolloutAction.PROMOTE


def test_too_little_traffic_is_a_rollback_at_the_timeout_not_a_pass():
    canary = window(FakeServer().serve(50))
    assert decide(canary, None, elapsed_s=300, policy=POLICY).action is RolloutAction.WAIT
    decision = decide(canary, None, elapsed_s=600, policy=POLICY)
    assert decision.action is RolloutAction.ROLLBACK and "too little traffic" in decision.reasons[0]


def test_the_decision_summary_carries_the_evidence():
    canary = window(FakeServer().serve(20).serve(5, code=500))
    summary = decide(canary, None, elapsed_s=3, policy=POLICY).summary()
    assert summary["action"] == "rollback"
    assert summary["canary"] == {"requests": 25, "server_errors": 5, "client_errors": 0, "p99_ms": 2.0}


def test_analyse_canary_polls_until_a_verdict():
    canary_server, stable_server = FakeServer(), FakeServer()
    ticks = itertools.count()
    clock_values: list[float] = []

    def clock() -> float:
        value = next(ticks) * 20.0
        clock_values.append(value)
        return value

    def scrape():
        return {"canary": canary_server.scrape()}, {"stable": stable_server.scrape()}

    observe = windows_from(scrape)
    canary_server.serve(500)  # traffic before the baseline scrape would not count; this is after it

    def traffic(_seconds: float) -> None:
        canary_server.serve(30)
        stable_server.serve(300)

    seen = []
    decision = analyse_canary(observe, POLICY, clock=clock, sleep=traffic, on_decision=seen.append)
    assert decision.action is RolloutAction.PROMOTE
    assert [d.action for d in seen[:-1]] == [RolloutAction.WAIT] * (len(seen) - 1)
    assert decision.canary.requests >= POLICY.min_requests and decision.elapsed_s >= POLICY.bake_s


def test_bake_longer_than_timeout_is_refused():
    with pytest.raises(ValueError, match="bake_s"):
        CanaryConfig(bake_s=100, timeout_s=50)
