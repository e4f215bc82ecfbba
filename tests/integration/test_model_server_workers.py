"""``serving.workers``: several server processes on one port (SO_REUSEPORT) under a supervisor that
forwards signals and fails as a whole when a worker dies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from kfops.config import load_config
from kfops.serving.local.process import control_headers, port_in_use, server_status, start_server, stop_server
from tests.conftest import free_port
from tests.support.serving_models import build_tiny_model, synthetic_features

pytestmark = pytest.mark.integration

NAME = "workers"
WAIT_LIMIT_S = 60  # an upper bound on waiting for processes to exit; not a timing assertion


def listening_workers(pid: int, port: int, expected: int = 2) -> set[int]:
    """The supervisor's child processes that listen on ``port``, once ``expected`` do (the server is
    ready when its first worker is; the others may still be loading the model)."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while True:
        found = set()
        for child in psutil.Process(pid).children():
            connections = getattr(child, "net_connections", None) or child.connections  # psutil < 6
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in connections("tcp")):
                found.add(child.pid)
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def wait_gone(pids: set[int]) -> set[int]:
    deadline = time.monotonic() + WAIT_LIMIT_S
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.2)
    return alive


@pytest.fixture
def cfg(tmp_path):
    port = free_port()
    return load_config(None, [f"data_dir={tmp_path / 'data'}", f"serving.http_port={port}", "serving.workers=2",
                              "serving.startup_timeout_s=120"], environ={})


def v1_body(n: int = 3) -> dict:
    return {"instances": synthetic_features(n, seed=2).drop(columns="label").to_dict("records")}


def test_two_workers_share_the_port_and_a_http_reload_restarts_instead(cfg, tmp_path):
    first = build_tiny_model(tmp_path / "data" / "a", seed=0)
    second = build_tiny_model(tmp_path / "data" / "b", seed=1, rounds=10)
    status = start_server(cfg, model_dir=first, name=NAME, online_lookup="none")
    try:
        port = cfg.serving.http_port
        workers = listening_workers(status["pid"], port)
        assert len(workers) == 2
        with httpx.Client(base_url=status["url"], trust_env=False, timeout=30) as http:
            answers = [http.post(f"/v1/models/{NAME}:predict", json=v1_body()) for _ in range(20)]
            assert {r.status_code for r in answers} == {200}
            reload = http.post(f"/v1/models/{NAME}/reload", json={}, headers=control_headers(cfg, NAME))
            assert reload.status_code == 409 and "SIGHUP" in reload.json()["error"]
            # kfops serve with another model: the HTTP swap is refused, so the server is restarted.
            swapped = start_server(cfg, model_dir=second, name=NAME, online_lookup="none")
            assert swapped["pid"] != status["pid"]
            assert wait_gone(workers) == set()
            new = http.post(f"/v1/models/{NAME}:predict", json=v1_body())
        assert new.status_code == 200
        assert new.json()["predictions"] != answers[0].json()["predictions"]
        assert len(listening_workers(swapped["pid"], port)) == 2
    finally:
        stop_server(cfg, NAME)
    assert server_status(cfg, NAME)["running"] is False


def test_a_worker_that_dies_takes_the_server_down(cfg, tmp_path):
    model = build_tiny_model(tmp_path / "data" / "a", seed=0)
    status = start_server(cfg, model_dir=model, name=NAME, online_lookup="none")
    try:
        workers = listening_workers(status["pid"], cfg.serving.http_port)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert wait_gone({status["pid"], *workers}) == set()
        assert not port_in_use(cfg.serving.host, cfg.serving.http_port)
        log = Path(status["log_file"]).read_text()
        assert f"(pid {victim}) exited with -9; the other workers were stopped" in log
    finally:
        stop_server(cfg, NAME)


def test_sighup_reloads_every_worker_and_sigterm_stops_them_all(cfg, tmp_path):
    model = build_tiny_model(tmp_path / "data" / "a", seed=0)
    status = start_server(cfg, model_dir=model, name=NAME, online_lookup="none")
    try:
        workers = listening_workers(status["pid"], cfg.serving.http_port)
        assert len(workers) == 2
        os.kill(status["pid"], signal.SIGHUP)
        log = Path(status["log_file"])
        deadline = time.monotonic() + WAIT_LIMIT_S
        reloaded: set[int] = set()
        while reloaded != workers and time.monotonic() < deadline:
            # the log format is "<date> <time> <pid> <logger> <level> <message>"
            reloaded = {int(line.split()[2]) for line in log.read_text().splitlines() if "SIGHUP reload of" in line}
            time.sleep(0.2)
        assert reloaded == workers
    finally:
        stop_server(cfg, NAME)
    assert wait_gone({status["pid"], *workers}) == set()
