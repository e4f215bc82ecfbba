"""The local canary, for real: a stable and a canary server process behind the traffic split.

Clients send requests to the split while the rollout watches both servers' /metrics. A canary
whose model artifact is broken (it scores NaN for part of the rows, so the server answers 500)
is rolled back; a healthy one is promoted by hot-swapping the stable server.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from kfops.config import load_config
from kfops.errors import ServingError
from kfops.serving.local.canary import rollout_log, run_local_canary, split_url
from kfops.serving.local.process import server_status, start_server, stop_server
from kfops.serving.sidecars.split import TrafficSplit
from tests.conftest import free_port
from tests.integration.test_model_server import feature_rows, v2_body
from tests.support.serving_models import build_tiny_model

pytestmark = pytest.mark.integration
NAME = "flights-delay"


def break_model(good: Path, broken: Path) -> Path:
    """A copy whose first tree has NaN in half of its leaves: it loads, then fails on real rows."""
    import xgboost as xgb

    from kfops.training.xgb import WEIGHTS_FILE

    shutil.copytree(good, broken)
    booster = xgb.Booster()
    booster.load_model(str(good / WEIGHTS_FILE))
    raw = json.loads(booster.save_raw("json"))
    tree = raw["learner"]["gradient_booster"]["model"]["trees"][0]
    leaves = [i for i, left in enumerate(tree["left_children"]) if left == -1]
    for leaf in leaves[: len(leaves) // 2]:
        tree["split_conditions"][leaf] = tree["base_weights"][leaf] = float("nan")
    broken_booster = xgb.Booster()
    broken_booster.load_model(bytearray(json.dumps(raw).encode()))
    broken_booster.save_model(str(broken / WEIGHTS_FILE))
    return broken


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("canary-models")
    stable = build_tiny_model(root / "stable", seed=0)
    return {"stable": stable, "healthy": build_tiny_model(root / "healthy", seed=1, rounds=10),
            "broken": break_model(stable, root / "broken")}


@pytest.fixture
def cfg(tmp_path, models):
    cfg = load_config(None, [
        f"data_dir={tmp_path / 'data'}", f"serving.http_port={free_port()}", "serving.startup_timeout_s=120",
        f"serving.canary.canary_port={free_port()}", f"serving.canary.split_port={free_port()}",
        "serving.canary.traffic_percent=30", "serving.canary.bake_s=2", "serving.canary.min_requests=60",
        "serving.canary.poll_s=0.5", "serving.canary.timeout_s=90", "serving.canary.max_p99_ms=1000",
        "serving.canary.max_p99_ratio=20", "serving.canary.latency_slack_ms=50",
        # a promotion hot-swaps the stable server, which reloads only from its reload roots
        f"serving.reload_roots=[{models['stable'].parent}]",
    ], environ={})  # fmt: skip
    start_server(cfg, model_dir=models["stable"], name=NAME, online_lookup="none")
    yield cfg
    stop_server(cfg, NAME)


class Clients:
    """Users sending single-row V2 requests to the split for as long as the rollout lasts."""

    def __init__(self, cfg, spec_folder: Path):
        from kfops.core.model import load_model

        self.url = f"{split_url(cfg)}/v2/models/{NAME}/infer"
        self.bodies = [v2_body([row], load_model(spec_folder).spec) for row in feature_rows(200, seed=3)]
        self.seen: Counter = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30, trust_env=False) as http:
            i = 0
            while not self.stop.is_set():
                try:
                    response = http.post(self.url, json=self.bodies[i % len(self.bodies)])
                except httpx.TransportError:  # the split is not up yet, or already gone
                    self.stop.wait(0.05)
                    continue
                self.seen[(response.headers.get("x-kfops-backend"), response.status_code)] += 1
                i += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=60)


def served_version(cfg) -> str:
    return server_status(cfg, NAME)["model_version"]


def test_a_broken_canary_is_rolled_back_and_the_stable_version_keeps_serving(cfg, models):
    before = served_version(cfg)
    decisions = []
    with Clients(cfg, models["stable"]) as clients, pytest.raises(ServingError, match="rolled back") as err:
        run_local_canary(cfg, model_dir=models["broken"], name=NAME, online_lookup="none",
                         on_decision=decisions.append)

    assert "server errors" in str(err.value)
    assert decisions[-1].action == "rollback" and decisions[-1].canary.server_errors > 0
    assert clients.seen[("canary", 500)] > 0, clients.seen  # users really met the broken canary
    assert not any(status >= 500 for (backend, status) in clients.seen if backend == "stable"), clients.seen
    # The stable server never changed and still answers; the canary process and the split are gone.
    assert served_version(cfg) == before
    assert not server_status(cfg, NAME, instance=f"{NAME}-canary")["running"]
    with httpx.Client(trust_env=False) as http:
        with pytest.raises(httpx.TransportError):
            http.get(f"{split_url(cfg)}/-/split", timeout=2)
        ok = http.post(f"{server_status(cfg, NAME)['url']}/v2/models/{NAME}/infer", json=clients.bodies[0])
    assert ok.status_code == 200
    (entry,) = [json.loads(line) for line in rollout_log(cfg).read_text().splitlines()]
    assert entry["action"] == "rolled_back" and entry["stable_version"] == before


def test_a_healthy_canary_is_promoted_by_a_hot_swap_of_the_stable_server(cfg, models):
    stable_pid = server_status(cfg, NAME)["pid"]
    with Clients(cfg, models["stable"]) as clients:
        outcome = run_local_canary(cfg, model_dir=models["healthy"], name=NAME, online_lookup="none")

    assert outcome["action"] == "promoted", outcome
    assert outcome["decision"]["canary"]["requests"] >= 60
    status = server_status(cfg, NAME)
    assert status["model_version"] == outcome["canary_version"] != outcome["stable_version"]
    assert status["pid"] == stable_pid  # swapped in place, not restarted
    assert clients.seen[("canary", 200)] > 0 and clients.seen[("stable", 200)] > 0
    assert not any(code >= 500 for (_, code) in clients.seen), clients.seen


def test_a_canary_needs_a_stable_server(tmp_path, models):
    cfg = load_config(None, [f"data_dir={tmp_path / 'data'}", f"serving.http_port={free_port()}"], environ={})
    with pytest.raises(ServingError, match="no healthy stable server"):
        run_local_canary(cfg, model_dir=models["healthy"], name=NAME, online_lookup="none")


def test_the_split_spreads_the_exact_share_evenly():
    split = TrafficSplit("http://stable", "http://canary", 30)
    picks = [split.choose() for _ in range(100)]
    assert picks.count("canary") == 30
    assert max(len(run) for run in "".join("c" if p == "canary" else "s" for p in picks).split("c")) <= 3
    split.canary_percent = 0
    assert {split.choose() for _ in range(50)} == {"stable"}


def test_the_cli_reports_a_rollback_in_one_line_with_exit_code_3(cfg, models, tmp_path):
    import subprocess

    from tests.unit.test_cli import KFOPS

    config_file = tmp_path / "kfops.yaml"
    config_file.write_text(cfg.model_dump_json())  # JSON is YAML
    before = served_version(cfg)
    with Clients(cfg, models["stable"]):
        result = subprocess.run([KFOPS, "serve", "canary", "--config", str(config_file), "--model-dir",
                                 str(models["broken"]), "--name", NAME, "--online-lookup", "none"],
                                capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "rollback:" in result.stdout
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "rolled back" in error and "Traceback" not in result.stderr
    assert served_version(cfg) == before


def test_a_terminated_canary_stops_its_server_and_split_and_a_leftover_split_is_cleared(cfg, models, tmp_path):
    """`kill` of a running canary left the canary server and the split listening, and the next
    canary failed on the split's port; a split left by a SIGKILLed canary is stopped at the next."""
    import os
    import signal
    import subprocess
    import time

    from kfops.serving.local.canary import canary_port, start_split, stop_leftover_split
    from kfops.serving.local.process import port_in_use
    from tests.unit.test_cli import KFOPS

    config_file = tmp_path / "kfops.yaml"
    config_file.write_text(cfg.model_copy(update={"serving": cfg.serving.model_copy(update={
        "canary": cfg.serving.canary.model_copy(update={"timeout_s": 600, "min_requests": 10**6})})}).model_dump_json())
    host, split_port = cfg.serving.host, cfg.serving.canary.split_port
    canary = subprocess.Popen([KFOPS, "serve", "canary", "--config", str(config_file), "--model-dir",
                               str(models["healthy"]), "--name", NAME, "--online-lookup", "none"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not port_in_use(host, split_port) and time.monotonic() < deadline and canary.poll() is None:
            time.sleep(0.2)
        assert port_in_use(host, split_port) and port_in_use(host, canary_port(cfg))
        os.kill(canary.pid, signal.SIGTERM)
        _, stderr = canary.communicate(timeout=120)
    finally:
        if canary.poll() is None:
            canary.kill()
    assert canary.returncode == 130 and "interrupted" in stderr, stderr
    assert not port_in_use(host, split_port) and not port_in_use(host, canary_port(cfg))
    assert json.loads(rollout_log(cfg).read_text().splitlines()[-1])["action"] == "aborted"
    assert server_status(cfg, NAME)["healthy"]

    stable = server_status(cfg, NAME)["url"]
    left = start_split(cfg, stable, stable, 0)  # as a canary that was SIGKILLed leaves it
    assert port_in_use(host, split_port)
    assert stop_leftover_split(cfg, on_event=lambda line: None)
    assert not port_in_use(host, split_port) and left.wait(timeout=10) is not None


def test_a_split_interrupted_before_it_answers_is_stopped(tmp_path, monkeypatch):
    """A `kill` of the canary that landed after the split bound its port but before it answered
    left the split listening (CI hit it): the half-started split is stopped before the interrupt
    goes on."""
    import time

    from kfops.serving.local import canary
    from kfops.serving.local.process import port_in_use

    cfg = load_config(None, [f"data_dir={tmp_path / 'data'}", f"serving.canary.split_port={free_port()}"],
                      environ={})
    host, port = cfg.serving.host, cfg.serving.canary.split_port

    def interrupted_once_listening(client, url, **kwargs):  # the readiness probe meets the `kill`
        deadline = time.monotonic() + 60
        while not port_in_use(host, port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert port_in_use(host, port)
        raise KeyboardInterrupt

    monkeypatch.setattr(httpx.Client, "get", interrupted_once_listening)
    with pytest.raises(KeyboardInterrupt):
        canary.start_split(cfg, "http://127.0.0.1:9", "http://127.0.0.1:9", 10)
    assert not port_in_use(host, port)
    assert not (cfg.data_dir / "serving" / "canary" / "split.json").exists()
