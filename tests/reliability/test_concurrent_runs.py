"""Four `kfops run training` at once on one data dir and one port, with registry.auto_promote: they
must end with a consistent registry (nothing RUNNING, nothing half-registered), every move of
@champion judged against the champion it replaced (no gate bypass), and one tracked model server,
healthy, serving @champion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from kfops.config import load_config
from tests.conftest import REPO_ROOT, free_port

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

KFOPS = Path(sys.executable).parent / "kfops"
RUNS = 4


def _servers_of(data: Path) -> list[psutil.Process]:
    return [proc for proc in psutil.process_iter(["cmdline"])
            if "kfops.serving" in " ".join(proc.info.get("cmdline") or []) and str(data) in " ".join(proc.info["cmdline"])]


def test_four_concurrent_runs_on_one_data_dir(tmp_path):
    data, port = tmp_path / "data", free_port()
    settings = [f"data_dir={data}", "dataset.start=2013-01-01", "dataset.end=2013-01-21", "registry.auto_promote=true",
                "train.xgboost.n_estimators=30", "evaluate.gate.min_roc_auc=0.5", "evaluate.behavioural_checks=false",
                f"serving.http_port={port}", "serving.startup_timeout_s=300"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KFOPS")}, "KFOPS_PROGRESS": "plain"}
    command = [str(KFOPS), "run", "training", "--config", str(REPO_ROOT / "kfops.yaml")]
    for item in settings:
        command += ["--set", item]
    # Different seeds give different models, so the gate has real decisions to make.
    runs = [subprocess.Popen([*command, "--set", f"train.seed={seed}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for seed in range(RUNS)]
    try:
        outputs = [run.communicate(timeout=1500)[0] for run in runs]
        # 0: blessed (registered, maybe promoted); 4: refused by the gate. A crash (1) or a store error (3) is not.
        codes = [run.returncode for run in runs]
        assert set(codes) <= {0, 4}, [(code, out[-3000:]) for code, out in zip(codes, outputs, strict=True)]
        # Each run reports its own pipeline run (and exits by its own gate), not the first one started.
        reported = [line.split()[-1] for out in outputs for line in out.splitlines() if "pipeline run " in line]
        assert len(reported) == RUNS and len(set(reported)) == RUNS, reported
        assert any(run.returncode == 0 for run in runs), "\n\n".join(out[-2500:] for out in outputs)

        from kfops.adapters import mlflow_registry as registry

        cfg = load_config(REPO_ROOT / "kfops.yaml", settings, environ={})
        client = registry.client(cfg)
        experiment = client.get_experiment_by_name(cfg.registry.experiment)
        assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
        versions = {str(v.version): v for v in client.search_model_versions(f"name = '{cfg.registry.model_name}'")}
        assert all(v.tags.get(registry.REGISTER_STATE_TAG) in (None, "done") for v in versions.values())

        # No gate bypass: each move of @champion went to a version judged against the one it replaced.
        trail = registry.audit_trail(cfg)
        moves = [e for e in trail if e.get("action") == "alias" and e.get("alias") == registry.CHAMPION]
        assert moves
        for move in moves:
            judged = versions[str(move["to_version"])].tags.get(registry.JUDGED_TAG)
            if judged is not None:  # a version registered by this kfops carries what it was judged against
                assert judged == (str(move["from_version"]) if move["from_version"] else "none"), (move, judged)
        champion = registry.model_version(cfg, alias=registry.CHAMPION)

        # One tracked server, serving @champion.
        servers = _servers_of(data)
        assert len(servers) == 1, [p.info["cmdline"] for p in servers]
        from kfops.serving.local.process import server_status

        status = server_status(cfg)
        assert status["healthy"] and status["pid"] == servers[0].pid
        meta = httpx.get(f"{status['url']}/v2/models/{cfg.registry.model_name}", timeout=30, trust_env=False).json()
        assert str(meta["versions"][0]) == str(champion.version)
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
        subprocess.run([str(KFOPS), "serve", "stop", "--config", str(REPO_ROOT / "kfops.yaml"), "--set", f"data_dir={data}",
                        "--set", f"serving.http_port={port}"], cwd=tmp_path, env=env, capture_output=True, check=False,
                       timeout=120)
        for proc in _servers_of(data):
            proc.kill()
