"""The local model server under concurrent starts, a failed replace and a lost state file: one
tracked server whose state names the pid that listens, a stop that frees the port, and a healthy
server that survives a replacement that cannot load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kfops.config import load_config
from kfops.errors import ServingError
from kfops.serving.local import process
from kfops.serving.local.process import server_status, start_server, stop_server
from tests.conftest import REPO_ROOT, free_port
from tests.support.serving_models import build_tiny_model

pytestmark = pytest.mark.reliability

NAME = "flights"

START = """
import json, sys, time
from pathlib import Path
from kfops.config import KfopsConfig
from kfops.serving.local.process import start_server

config, model_dir, go = Path(sys.argv[1]).read_text(), sys.argv[2], Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
status = start_server(KfopsConfig.from_json(config), model_dir=Path(model_dir), name="flights", online_lookup="none")
print(json.dumps({"pid": status["pid"]}))
"""


@pytest.fixture
def cfg(tmp_path, model):
    # The model folder is one a reload may load (serving.reload_roots): the later starts hot-swap it
    # into the running server instead of restarting it.
    cfg = load_config(None, [f"data_dir={tmp_path / 'data'}", f"serving.http_port={free_port()}",
                             "serving.startup_timeout_s=120",
                             f"serving.reload_roots=[{tmp_path / 'data'}, {model.parent}]"], environ={})
    yield cfg
    stop_server(cfg, NAME)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "model", seed=0)


def listening(cfg) -> int | None:
    return process.listening_pid(cfg.serving.host, cfg.serving.http_port)


def test_concurrent_starts_leave_one_tracked_server_and_stop_frees_the_port(cfg, model, tmp_path):
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    starters = [subprocess.Popen([sys.executable, "-c", START, str(tmp_path / "cfg.json"), str(model),
                                  str(tmp_path / "go")], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]
    (tmp_path / "go").touch()
    outputs = [starter.communicate(timeout=600) for starter in starters]
    assert [s.returncode for s in starters] == [0, 0, 0, 0], [err[-2000:] for _, err in outputs]

    # One server: the first start launched it, the others hot-swapped into it.
    pids = {json.loads(out.strip().splitlines()[-1])["pid"] for out, _ in outputs}
    status = server_status(cfg, NAME)
    assert pids == {status["pid"]} and status["healthy"]
    assert listening(cfg) == status["pid"]

    stopped = stop_server(cfg, NAME)
    assert stopped["stopped"] and stopped["pid"] == status["pid"]
    assert not process.port_in_use(cfg.serving.host, cfg.serving.http_port)
    assert server_status(cfg, NAME)["running"] is False


def test_a_replace_that_cannot_load_keeps_the_healthy_server(cfg, model, tmp_path):
    healthy = start_server(cfg, model_dir=model, name=NAME, online_lookup="none")
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ServingError, match="running one keeps serving") as caught:
        start_server(cfg, model_dir=tmp_path / "empty_model", name=NAME, online_lookup="none", replace=True)
    assert "kfops_model.json is missing" in str(caught.value)
    status = server_status(cfg, NAME)
    assert status["healthy"] and status["pid"] == healthy["pid"] == listening(cfg)
    assert status["model_source"] == healthy["model_source"]


def test_stop_finds_the_server_when_its_state_names_a_dead_pid(cfg, model):
    serving = start_server(cfg, model_dir=model, name=NAME, online_lookup="none")
    dead = subprocess.Popen(["true"])
    dead.wait()
    state_file = process.state_dir(cfg) / f"{NAME}.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "pid": dead.pid}))  # what the audit found after racing deploys

    stopped = stop_server(cfg, NAME)
    assert stopped["stopped"] and stopped["pid"] == serving["pid"]
    assert not process.port_in_use(cfg.serving.host, cfg.serving.http_port)
    assert not state_file.exists()
