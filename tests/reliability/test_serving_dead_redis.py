"""The model server under load while its online store (a real Redis, started here on a free port)
is paused with SIGSTOP and then killed: every raw-flight request gets a JSON 503 or 504 within a
bounded time, the log says so once per interval instead of once per request, and the server
recovers when Redis does. Windows are a few seconds each."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest

from kfops.config import load_config
from kfops.serving.local.process import start_server, stop_server
from tests.conftest import REPO_ROOT, free_port, need, port_open
from tests.support.serving_models import build_tiny_model

NAME = "flights-redis"
WINDOW_S = 3.0  # how long each fault lasts under load
CLIENT_GUARD_S = 60  # a client-side guard against a hung request, not a timing assertion
FLIGHT = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228", "distance": 1400.0,
          "flight": 1545, "sched_dep": "2013-01-02T05:15"}


def start_redis(port: int, folder) -> subprocess.Popen:
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + CLIENT_GUARD_S
    while not port_open("127.0.0.1", port):
        assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    return process


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    from kfops.adapters import feast_store as features
    from kfops.datasets.flights import load_tables
    from kfops.datasets.flights.features import write_feature_sources

    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    root = tmp_path_factory.mktemp("dead_redis")
    redis_port = free_port()
    redis = {"process": start_redis(redis_port, root), "port": redis_port, "folder": root}
    cfg = load_config(None, [
        f"data_dir={root / 'data'}", f"serving.http_port={free_port()}", "serving.startup_timeout_s=180",
        "serving.request_timeout_s=2", "features.online_store=redis", f"features.redis_connection=127.0.0.1:{redis_port}",
        "features.redis_timeout_s=0.5", "dataset.start=2013-01-01", "dataset.end=2013-01-02",
        f"features.project=redis_{uuid.uuid4().hex[:8]}", f"features.repo_path={REPO_ROOT / 'feature_repo'}",
    ], environ={})
    tables = load_tables(cfg)
    sources = cfg.feast_dir / "sources"
    write_feature_sources(tables, sources)
    features.apply_definitions(cfg, sources)
    features.materialize(cfg, dt.datetime(2012, 12, 31, tzinfo=dt.UTC), dt.datetime(2013, 1, 3, tzinfo=dt.UTC))
    status = start_server(cfg, model_dir=build_tiny_model(root / "model", rounds=5), name=NAME, online_lookup="feast")
    try:
        yield {"cfg": cfg, "status": status, "redis": redis, "log": status["log_file"]}
    finally:
        stop_server(cfg, NAME)
        process = redis["process"]
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait()


class Load:
    """Four clients sending one raw flight per request until stopped; each outcome is recorded."""

    def __init__(self, url: str):
        self.url = url
        self.outcomes: list[tuple[float, int, str]] = []
        self.failures: list[str] = []  # client-side errors: a hung or dropped request
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(4)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=CLIENT_GUARD_S, trust_env=False) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(f"/v1/models/{NAME}:predict", json={"instances": [FLIGHT]})
                except httpx.HTTPError as err:
                    self.failures.append(f"{type(err).__name__}: {err}")
                    continue
                self.outcomes.append((time.monotonic(), response.status_code,
                                      response.headers.get("content-type", "")))
                if response.status_code >= 500:
                    assert response.json()["error"]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_GUARD_S * 2)

    def since(self, at: float) -> Counter:
        return Counter(status for when, status, _ in self.outcomes if when >= at)


def serving(url: str) -> int:
    with httpx.Client(timeout=CLIENT_GUARD_S, trust_env=False) as http:
        return http.post(f"{url}/v1/models/{NAME}:predict", json={"instances": [FLIGHT]}).status_code


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + CLIENT_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def log_lines(path: str, start: int) -> list[str]:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read().decode(errors="replace").splitlines()


def test_redis_paused_then_killed_under_load_gives_bounded_json_503s(redis_server):
    url, redis = redis_server["status"]["url"], redis_server["redis"]
    assert serving(url) == 200
    log_start = os.path.getsize(redis_server["log"])

    with Load(url) as load:
        wait_for(lambda: len(load.outcomes) >= 20, "no answers under load")
        # Paused: without socket timeouts every request would block for as long as the pause.
        os.kill(redis["process"].pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        time.sleep(WINDOW_S)
        os.kill(redis["process"].pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        wait_for(lambda: load.since(time.monotonic() - 0.5)[200] > 0, "no recovery after SIGCONT")
        # Killed: connection refused on every lookup.
        redis["process"].kill()
        redis["process"].wait()
        killed_at = time.monotonic()
        time.sleep(WINDOW_S)
        dead_until = time.monotonic()

    assert not load.failures, load.failures[:5]
    during_pause = Counter(s for when, s, _ in load.outcomes if paused_at + 1.0 <= when <= resumed_at)
    assert during_pause and set(during_pause) <= {503, 504}, during_pause
    while_dead = Counter(s for when, s, _ in load.outcomes if killed_at + 0.5 <= when <= dead_until)
    assert while_dead[503] > 10 and set(while_dead) == {503}, while_dead
    assert all(kind == "application/json" for _, s, kind in load.outcomes if s >= 500)

    lines = log_lines(redis_server["log"], log_start)
    assert not [line for line in lines if "Traceback" in line], lines[:20]
    failures = [line for line in lines if " 503: " in line or " 504: " in line]
    # One line per kind per 10 s interval: a handful for the whole test, not one per request.
    assert 1 <= len(failures) <= 6, failures
    assert sum(while_dead.values()) + sum(during_pause.values()) > 5 * len(failures)

    # Redis back (empty: it kept nothing), the server reads it again without a restart.
    redis["process"] = start_redis(redis["port"], redis["folder"])
    wait_for(lambda: serving(url) in (200, 422), "no recovery after Redis came back")
