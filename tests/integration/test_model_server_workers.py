"""``serving.workers``: several server processes on one port (SO_REUSEPORT) under a supervisor that
forwards signals and fails as a whole when a worker dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
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


def test_a_worker_that_does_not_stop_is_killed(cfg, tmp_path):
    """A stopped (SIGSTOP) worker cannot act on SIGTERM: the supervisor kills it after the grace period
    and some seconds for the inference log, instead of waiting on it for ever."""
    model = build_tiny_model(tmp_path / "data" / "a", seed=0)
    status = start_server(cfg, model_dir=model, name=NAME, online_lookup="none")
    try:
        workers = listening_workers(status["pid"], cfg.serving.http_port)
        victim, stuck = sorted(workers)
        os.kill(stuck, signal.SIGSTOP)
        os.kill(victim, signal.SIGKILL)
        assert wait_gone({status["pid"], *workers}) == set()
        log = Path(status["log_file"]).read_text()
        assert f"workers {stuck} did not stop within 30s of SIGTERM; killing them" in log
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


# A stop signal in the moments before uvicorn takes the signals over. KServe's own handler raised
# there (no running loop) or only unloaded the models while uvicorn served on: a worker told to
# stop because its sibling died never did. Each case sends SIGTERM to the server itself at one
# such moment; the server must exit cleanly and promptly.
STOP_DURING_STARTUP = textwrap.dedent("""
    import asyncio, os, signal, sys
    import kfops.serving.kserve.server as server
    from kfops.serving.__main__ import main

    def terminate():
        os.kill(os.getpid(), signal.SIGTERM)

    if sys.argv[1] == "before-loop":  # gc.freeze() runs after the handlers are set, before the loop
        freeze = server.gc.freeze
        server.gc.freeze = lambda: (terminate(), freeze())
    else:  # "loop-started": the loop's first callback, before uvicorn's serve() has run
        make_loop = server._loop_factory
        def loop_factory(event_loop):
            make = make_loop(event_loop) or asyncio.new_event_loop
            def new_loop():
                loop = make()
                loop.call_soon(terminate)
                return loop
            return new_loop
        server._loop_factory = loop_factory
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("moment", ["before-loop", "loop-started"])
def test_a_stop_signal_during_startup_stops_the_server(cfg, tmp_path, moment):
    model = build_tiny_model(tmp_path / "data" / "a", seed=0)
    config = tmp_path / "config.json"
    config.write_text(cfg.to_json())
    args = ["--model-dir", str(model), "--name", NAME, "--http-port", str(cfg.serving.http_port), "--workers", "1",
            "--config-json", str(config), "--online-lookup", "none", "--no-inference-log"]
    try:
        done = subprocess.run([sys.executable, "-c", STOP_DURING_STARTUP, moment, *args], capture_output=True,
                              text=True, timeout=WAIT_LIMIT_S, check=False)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the server went on serving after SIGTERM at {moment}:\n{(err.stderr or b'')[-2000:]!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not port_in_use(cfg.serving.host, cfg.serving.http_port)
