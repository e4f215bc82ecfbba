"""The promotion controller's HTTP surface under hostile input: every delivery gets an answer, no
thread is held by a slow client, and no password reaches its log or its answers.

Its real rollouts (an MLflow server, alias moves, KServe on a scripted API server) run in
tests/integration/test_controller.py and test_controller_cluster.py.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import pytest

from kfops.config import load_config
from kfops.core.webhook import sign
from kfops.runners import controller as controller_module
from kfops.runners.controller import Controller, make_server, serve_in_background

SECRET = "whsecret"


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setattr(controller_module, "READ_TIMEOUT_S", 1.0)
    cfg = load_config(None, [f"data_dir={tmp_path}", "registry.model_name=m"], environ={})
    controller = Controller(cfg, SECRET, rollout=lambda cfg, version: {}, served=lambda cfg: None,
                            clock=lambda: 1_700_000_000.0)
    server = make_server(controller, "127.0.0.1", 0)
    serve_in_background(server)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield controller, url, server.server_address[1]
    server.shutdown()
    server.server_close()


def signed(body: bytes, delivery: str = "d-1", signature: str | None = None) -> dict[str, str]:
    stamp = "1700000000"
    return {"x-mlflow-delivery-id": delivery, "x-mlflow-timestamp": stamp, "content-type": "application/json",
            "x-mlflow-signature": signature or sign(SECRET, delivery, stamp, body)}


def event(data) -> bytes:
    return json.dumps({"entity": "model_version_alias", "action": "created", "data": data}).encode()


def test_malformed_deliveries_get_an_answer_not_a_dropped_connection(served):
    controller, url, _ = served
    body = event({"name": "m", "alias": "champion", "version": "2"})
    cases = [
        (signed(body, signature="v1,\u00e9\u00e9".encode().decode("latin-1")), body, 401, "does not match"),
        ({**signed(event("x"), "d-2")}, event("x"), 400, "'data' is str"),
        ({**signed(event(["x"]), "d-3")}, event(["x"]), 400, "'data' is list"),
        (signed(event({"name": "m", "alias": "champion", "version": {"a": 1}}), "d-4"),
         event({"name": "m", "alias": "champion", "version": {"a": 1}}), 400, "must be a version number"),
        (signed(event({"name": "m", "alias": "champion", "version": "\u0661"}), "d-5"),
         event({"name": "m", "alias": "champion", "version": "\u0661"}), 400, "must be a version number"),
    ]
    for headers, content, status, message in cases:  # a non-ASCII signature first: it raised TypeError
        raw = {name: value.encode("latin-1") for name, value in headers.items()}
        answer = httpx.post(f"{url}/webhooks/mlflow", headers=raw, content=content, timeout=10)
        assert answer.status_code == status and message in answer.json()["error"], (message, answer.text)
    assert controller._moves == []  # nothing malformed was queued
    good = httpx.post(f"{url}/webhooks/mlflow", headers=signed(body, "d-9"), content=body, timeout=10)
    assert good.status_code == 202 and good.json()["version"] == "2"
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert httpx.head(f"{url}/healthz", timeout=10).status_code == 200


def test_a_bad_content_length_is_a_400(served):
    _, _, port = served
    for length in ("abc", "-1"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(f"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
            assert conn.recv(200).startswith(b"HTTP/1.0 400"), length


def test_a_client_that_never_sends_its_body_is_cut_off(served):
    _, url, port = served
    before = threading.active_count()
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
    for conn in conns:
        conn.sendall(b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"a\"")
    answers = [conn.recv(200) for conn in conns]  # the read timeout (1 s here) answers each one
    assert all(answer.startswith(b"HTTP/1.0 408") for answer in answers), answers
    for conn in conns:
        conn.close()
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def test_a_failed_rollout_logs_no_password(tmp_path, caplog):
    uri = "http://admin:MlPw999@127.0.0.1:9"
    cfg = load_config(None, [f"data_dir={tmp_path}", "registry.model_name=m"], environ={})
    events: list[str] = []

    def failing(cfg, version):
        raise RuntimeError(f"API request to {uri}/api/2.0/mlflow/registered-models/get failed")

    controller = Controller(cfg, SECRET, rollout=failing, served=lambda cfg: "1", on_event=events.append)
    controller.process = lambda moves: failing(cfg, "2")  # the worker's failure path, without a registry
    controller_module.install_log_redaction()
    with caplog.at_level(logging.ERROR, logger="kfops.runners.controller"):
        controller.start()
        controller.submit(controller_module.Move("2", "webhook", "d-1"))
        assert controller.wait_idle(10)
        controller.stop()
    logged = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert "the rollout of" in logged and "RuntimeError" in logged
    assert "MlPw999" not in logged and "MlPw999" not in " ".join(events)
    assert "admin:***@127.0.0.1:9" in logged
