"""The model server's and the traffic split's control plane, as an attacker on the same host
would try it: every state-changing route without the token, with a wrong one, and with the right
one; reloads that try to leave the server's registry or reload roots; a reload of a version that
does not exist; slow clients; bodies that are not JSON."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from kfops.config import load_config
from kfops.serving.local import canary
from kfops.serving.local.process import _read_state, control_headers, start_server, stop_server
from tests.conftest import free_port
from tests.support.serving_models import build_tiny_model, synthetic_features

NAME = "guarded"
GUARD_S = 60  # deadlock guards for socket reads, not timing assertions


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    root = tmp_path_factory.mktemp("control_plane")
    data = root / "data"
    cfg = load_config(None, [f"data_dir={data}", f"serving.http_port={free_port()}", "serving.model_repository=true",
                             f"serving.canary.split_port={free_port()}", "serving.startup_timeout_s=120"], environ={})
    models = {"a": build_tiny_model(data / "models" / "a", seed=0, rounds=5),
              "b": build_tiny_model(data / "models" / "b", seed=1, rounds=5),
              "outside": build_tiny_model(root / "outside", seed=2, rounds=5)}
    status = start_server(cfg, model_dir=models["a"], name=NAME, online_lookup="none",
                          extra_args=["--read-timeout-s", "1"])
    split = canary.start_split(cfg, status["url"], status["url"], 0)
    http = httpx.Client(base_url=status["url"], timeout=GUARD_S, trust_env=False)
    try:
        yield {"cfg": cfg, "status": status, "http": http, "models": models, "split_url": canary.split_url(cfg)}
    finally:
        http.close()
        canary.stop_split(split)
        stop_server(cfg, NAME)


def served_version(guarded) -> str:
    return guarded["http"].get(f"/v2/models/{NAME}").json()["versions"][0]


def control_routes(guarded) -> list[tuple[str, dict]]:
    url = guarded["status"]["url"]
    return [
        (f"{url}/v1/models/{NAME}/reload", {"model_dir": str(guarded["models"]["b"])}),
        (f"{url}/v2/repository/models/{NAME}/unload", {}),
        (f"{url}/v2/repository/models/{NAME}/load", {}),
        (f"{guarded['split_url']}/-/split", {"canary_percent": 100}),
    ]


def test_the_local_token_lives_only_in_the_owner_only_state_file(guarded):
    state_file = guarded["cfg"].data_dir / "serving" / f"{NAME}.json"
    assert state_file.stat().st_mode & 0o777 == 0o600
    token = _read_state(guarded["cfg"], NAME)["token"]
    assert len(token) >= 32
    assert token not in (guarded["cfg"].data_dir / "serving" / f"{NAME}.config.json").read_text()
    command_line = Path(f"/proc/{guarded['status']['pid']}/cmdline").read_bytes()
    assert token.encode() not in command_line  # other users can read a command line, not an environment
    assert (guarded["cfg"].data_dir / "serving" / "canary" / "split.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token", "Basic Zm9vOmJhcg=="])
def test_every_control_route_is_refused_without_the_token(guarded, authorization):
    version = served_version(guarded)
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(timeout=GUARD_S, trust_env=False) as http:
        for url, body in control_routes(guarded):
            response = http.post(url, json=body, headers=headers)
            assert response.status_code == 401, (url, response.text)
            assert response.headers["content-type"] == "application/json" and response.json()["error"]
            assert response.headers["www-authenticate"].startswith("Bearer")
        share = http.get(f"{guarded['split_url']}/-/split").json()["canary_percent"]
    assert served_version(guarded) == version  # nothing swapped
    assert share == 0  # nothing re-routed
    assert guarded["http"].get(f"/v2/models/{NAME}/ready").status_code == 200  # nothing unloaded


def test_with_the_token_every_control_route_is_accepted(guarded):
    cfg = guarded["cfg"]
    server, split = control_headers(cfg, NAME), canary.split_headers(cfg)
    http = guarded["http"]
    before = served_version(guarded)
    swapped = http.post(f"/v1/models/{NAME}/reload", json={"model_dir": str(guarded["models"]["b"])}, headers=server)
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["previous_version"] == before != swapped.json()["version"]
    back = http.post(f"/v1/models/{NAME}/reload", json={"model_dir": str(guarded["models"]["a"])}, headers=server)
    assert back.status_code == 200 and served_version(guarded) == before
    # The repository routes pass the token check and reach KServe; a name it does not serve keeps ours loaded.
    for action in ("load", "unload"):
        response = http.post(f"/v2/repository/models/not-served-here/{action}", headers=server)
        assert response.status_code != 401 and "not-served-here" in response.json()["error"], response.text
    with httpx.Client(timeout=GUARD_S, trust_env=False) as client:
        moved = client.post(f"{guarded['split_url']}/-/split", json={"canary_percent": 40}, headers=split)
        assert moved.status_code == 200 and moved.json()["canary_percent"] == 40
        assert client.post(f"{guarded['split_url']}/-/split", json={"canary_percent": 0},
                           headers=split).status_code == 200


def test_the_model_repository_is_off_unless_turned_on(tmp_path, guarded):
    cfg = load_config(None, [f"data_dir={tmp_path}", f"serving.http_port={free_port()}"], environ={})
    status = start_server(cfg, model_dir=guarded["models"]["outside"], name="plain", online_lookup="none")
    try:
        with httpx.Client(base_url=status["url"], timeout=GUARD_S, trust_env=False) as http:
            response = http.post("/v2/repository/models/plain/unload", headers=control_headers(cfg, "plain"))
            assert response.status_code == 404 and "model repository extension is off" in response.json()["error"]
            assert http.get("/v2/models/plain/ready").status_code == 200
    finally:
        stop_server(cfg, "plain")


def test_a_reload_cannot_leave_the_servers_registry_or_reload_roots(guarded):
    http, headers = guarded["http"], control_headers(guarded["cfg"], NAME)
    version = served_version(guarded)
    refused = [
        {"model_uri": f"models:/{guarded['cfg'].registry.model_name}/1", "tracking_uri": "http://127.0.0.1:9/"},
        {"model_uri": "models:/someone-elses-model/1"},
        {"model_dir": str(guarded["models"]["outside"])},  # a valid model, but outside data_dir
        {"model_dir": str(guarded["cfg"].data_dir / ".." / "outside")},
    ]
    for body in refused:
        response = http.post(f"/v1/models/{NAME}/reload", json=body, headers=headers)
        assert response.status_code == 403, (body, response.text)
    assert served_version(guarded) == version


def test_reloading_a_version_that_does_not_exist_is_a_json_error_the_cli_shows(guarded, tmp_path):
    from tests.unit.test_cli import KFOPS

    http, headers = guarded["http"], control_headers(guarded["cfg"], NAME)
    version = served_version(guarded)
    response = http.post(f"/v1/models/{NAME}/reload", json={"model_version": "999"}, headers=headers)
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert f"still serving version {version}" in error and "models:/flights-delay/999" in error
    config_file = tmp_path / "kfops.yaml"
    config_file.write_text(json.dumps(json.loads(guarded["cfg"].to_json())))  # JSON is YAML
    # The caller's mistake, not a failing server: exit 2, as `kfops promote 999` (it was 3).
    for command, named in ((["serve", "reload", "--version", "999"], "models:/flights-delay/999"),
                           (["serve", "start", "--version", "999", "--online-lookup", "none"], "has no version 999")):
        result = subprocess.run([KFOPS, *command, "--config", str(config_file), "--name", NAME],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stdout + result.stderr
        assert named in result.stderr and "Internal Server Error" not in result.stderr
        assert "Traceback" not in result.stderr
    assert served_version(guarded) == version


def test_a_text_plain_body_is_a_415(guarded):
    rows = synthetic_features(1, seed=3).drop(columns="label").to_dict("records")
    response = guarded["http"].post(f"/v1/models/{NAME}:predict", content=json.dumps({"instances": rows}),
                                    headers={"content-type": "text/plain"})
    assert response.status_code == 415 and "is not JSON" in response.json()["error"]
    assert guarded["http"].post(f"/v1/models/{NAME}:predict", json={"instances": rows}).status_code == 200


def test_slow_clients_are_disconnected_instead_of_holding_connections(guarded):
    host, port = guarded["cfg"].serving.host, guarded["status"]["url"].rsplit(":", 1)[1]
    partial = [b"", b"POST /v1/models/guarded:predict HTTP/1.1\r\nHost: x\r\n",  # silent; headers never end
               b"POST /v1/models/guarded:predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
               b"content-length: 1000\r\n\r\n{\"instances\": ["]  # the body never ends
    sockets = []
    for i in range(30):
        sock = socket.create_connection((host, int(port)), timeout=GUARD_S)
        if partial[i % 3]:
            sock.sendall(partial[i % 3])
        sockets.append(sock)
    try:
        for sock in sockets:
            with contextlib.suppress(ConnectionResetError):  # closed, unanswered, either way
                assert sock.recv(65536) == b""
    finally:
        for sock in sockets:
            sock.close()
    rows = synthetic_features(1, seed=4).drop(columns="label").to_dict("records")
    assert guarded["http"].post(f"/v1/models/{NAME}:predict", json={"instances": rows}).status_code == 200
