"""kill -9 at each step of a local `kfops run training`, then a run to the end: the state it leaves
is clean. Each killed run takes its whole process group (kfp.local and the task's process) the way
an OOM kill or a closed laptop lid does; the next run starts on what it left. The last run must
register and serve, and afterwards no MLflow run is left RUNNING, no version is half-registered,
exactly one model server of this data dir is alive and tracked, and `kfops serve stop` frees the port.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kfops.config import load_config
from tests.conftest import REPO_ROOT, free_port, port_open

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

STEPS = ("ingest", "validate", "featurize", "train", "evaluate", "register", "deploy")
KFOPS = Path(sys.executable).parent / "kfops"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _settings(data: Path, port: int) -> list[str]:
    return [f"data_dir={data}", "dataset.start=2013-01-01", "dataset.end=2013-01-21",
            "train.xgboost.n_estimators=30", "evaluate.gate.min_roc_auc=0.5", "evaluate.behavioural_checks=false",
            f"serving.http_port={port}"]


def _command(settings: list[str]) -> list[str]:
    command = [str(KFOPS), "run", "training", "--config", str(REPO_ROOT / "kfops.yaml")]
    for item in settings:
        command += ["--set", item]
    return command


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFOPS")}
    return {**env, "KFOPS_PROGRESS": "plain"}


def _run_killed_at(step: str, settings: list[str], data: Path, tmp: Path) -> None:
    """Start a run, wait until kfp.local starts ``step``, then SIGKILL the run's process group."""
    logs = data / "logs"
    before = set(logs.glob("training-*.log")) if logs.is_dir() else set()
    with open(tmp / f"killed-at-{step}.out", "w") as out:
        process = subprocess.Popen(_command(settings), cwd=tmp, env=_environment(), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the run ended before {step} started: {(tmp / f'killed-at-{step}.out').read_text()[-2000:]}")
            new = set(logs.glob("training-*.log")) - before if logs.is_dir() else set()
            text = _ANSI.sub("", new.pop().read_text(errors="replace")) if new else ""
            if re.search(rf"Executing task '?{step}'?", text):
                time.sleep(0.5)  # into the step's own work, not only its start
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"{step} never started within 600 s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _servers_of(data: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if "kfops.serving" in cmdline and str(data) in cmdline:
            found.append(proc)
    return found


def test_kill_9_at_each_step_then_a_run_to_the_end_leaves_a_clean_state(tmp_path):
    data, port = tmp_path / "data", free_port()
    settings = _settings(data, port)
    try:
        for step in STEPS:
            _run_killed_at(step, settings, data, tmp_path)
        final = subprocess.run(_command(settings), cwd=tmp_path, env=_environment(), capture_output=True, text=True,
                               timeout=900, check=False)
        assert final.returncode == 0, final.stdout[-4000:] + final.stderr[-2000:]

        from kfops.adapters import mlflow_registry as registry
        from kfops.serving.local.process import server_status

        cfg = load_config(REPO_ROOT / "kfops.yaml", settings, environ={})
        client = registry.client(cfg)
        experiment = client.get_experiment_by_name(cfg.registry.experiment)
        running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
        assert running == [], [(r.info.run_name, r.data.tags) for r in running]
        versions = client.search_model_versions(f"name = '{cfg.registry.model_name}'")
        assert versions, "nothing was registered"
        states = {v.version: v.tags.get("kfops.register_state") for v in versions}
        assert all(state in (None, "done") for state in states.values()), states
        champion = registry.model_version(cfg, alias=registry.CHAMPION)
        assert champion is not None

        servers = _servers_of(data)
        assert len(servers) == 1, [p.info["cmdline"] for p in servers]
        status = server_status(cfg)
        assert status["running"] and status["healthy"] and status["pid"] == servers[0].pid
    finally:
        stop = [str(KFOPS), "serve", "stop", "--config", str(REPO_ROOT / "kfops.yaml"),
                "--set", f"data_dir={data}", "--set", f"serving.http_port={port}"]
        stopped = subprocess.run(stop, cwd=tmp_path, env=_environment(), capture_output=True, text=True, check=False,
                                 timeout=120)
        left = _servers_of(data)
        for proc in left:  # never leave a server behind, whatever failed above
            proc.kill()
        psutil.wait_procs(left, timeout=30)
    assert not left, (stopped.stdout + stopped.stderr)[-2000:]
    assert not port_open("127.0.0.1", port), _listeners(port)


def _listeners(port: int) -> list[str]:
    """Who still listens on ``port`` (for the failure message)."""
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            with contextlib.suppress(psutil.Error):
                found.append(f"{conn.pid}: {' '.join(psutil.Process(conn.pid).cmdline())}")
    return found
