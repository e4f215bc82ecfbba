"""register under concurrency and kill -9, through the step function on the embedded store.

The gate judges a challenger against the @champion it saw. Concurrent runs that all saw "no
champion" must not take turns replacing each other with auto_promote; and a register killed
between creating the version and moving its aliases is finished by the next one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pandas as pd
import pytest

from kfops.adapters import mlflow_registry as registry
from kfops.config import KfopsConfig
from kfops.serving.local import process
from kfops.serving.local.process import server_status, stop_server
from kfops.steps.register import register
from tests.conftest import REPO_ROOT, free_port
from tests.integration.conftest import synthetic_frame
from tests.support.example import example_config

pytestmark = pytest.mark.reliability

REGISTER = """
import os, signal, sys, time
from pathlib import Path
from kfops.adapters import mlflow_registry as registry
from kfops.steps.register import register

config_file, run_id, work, pipeline_run, mode = sys.argv[1:6]
work, config = Path(work), Path(config_file).read_text()
if mode == "kill-before-alias":  # kill -9 right after the version exists, before any alias moves
    registry.move_alias = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
go = work / "go"
while mode == "together" and not go.exists():
    time.sleep(0.01)
register(config, run_id, work / f"verdict-{run_id}.json", work / "none.json", work / "none.json", pipeline_run)
if mode == "together":  # then deploy, as the pipeline's next step does
    from kfops.steps.deploy import deploy
    print(deploy(config)["version"])
"""


def trained_run(cfg: KfopsConfig, tmp_path, seed: int, champion_seen: str | None) -> str:
    """A training run with a logged model (as the train step leaves it) and a blessed verdict judged
    against ``champion_seen``; returns the run id."""
    from kfops.config import TrainConfig
    from kfops.core.model import FeatureSpec, predict_proba, save_model
    from kfops.training import train_model

    frame = synthetic_frame(seed=seed)
    spec = FeatureSpec.fit(frame, ["carrier", "precip", "distance"], ["carrier"])
    result = train_model(frame.iloc[:1000], frame.iloc[1000:], spec, TrainConfig(xgboost={"n_estimators": 5}), None)
    folder = save_model(result.model, tmp_path / f"model-{seed}")
    with registry.start_run(cfg, registry.ensure_experiment(cfg)) as run:
        example = frame[spec.columns].head(3)
        proba = predict_proba(result.model, example)
        run.set_tag("kfops.model_uri", run.log_model(
            folder, example, pd.DataFrame({"probability": proba, "prediction": (proba > .5) * 1})))
    verdict = {"blessed": True, "metrics": {"roc_auc": 0.6 + seed / 100},
               "verdict": {"blessed": True, "reasons": ["PASS floor"], "champion_version": champion_seen}}
    (tmp_path / f"verdict-{run.run_id}.json").write_text(json.dumps(verdict))
    return run.run_id


def run_register(cfg_file, run_id, tmp_path, pipeline_run, mode) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", REGISTER, str(cfg_file), run_id, str(tmp_path), pipeline_run, mode],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def cfg(tmp_path):
    cfg = example_config(data_dir=tmp_path / "state", registry={"auto_promote": True},
                      serving={"http_port": free_port(), "startup_timeout_s": 120}).resolve(tmp_path)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    yield cfg
    stop_server(cfg)


def champion_moves(cfg) -> list[tuple[str | None, str]]:
    return [(e["from_version"], e["to_version"]) for e in registry.audit_trail(cfg)
            if e.get("action") == "alias" and e["alias"] == registry.CHAMPION]


def test_concurrent_register_and_deploy_keep_the_first_champion_and_one_server(cfg, tmp_path):
    # Four runs all judged "no champion yet"; they register and deploy at the same moment.
    runs = [trained_run(cfg, tmp_path, seed, champion_seen=None) for seed in range(4)]
    workers = [run_register(tmp_path / "cfg.json", run_id, tmp_path, f"run-{i}", "together")
               for i, run_id in enumerate(runs)]
    (tmp_path / "go").touch()
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0, 0], [err[-2000:] for _, err in outputs]

    # One bootstrap; the other three were judged against no champion, so none replaced it.
    moves = champion_moves(cfg)
    assert len(moves) == 1 and moves[0][0] is None
    assert str(registry.champion(cfg).version) == moves[0][1]
    refused = [e for e in registry.audit_trail(cfg) if e.get("action") == "promotion_refused"]
    assert len(refused) == 3 and all(e["champion"] == moves[0][1] for e in refused)
    versions = registry.client(cfg).search_model_versions(f"name='{cfg.registry.model_name}'")
    assert sorted(v.tags[registry.REGISTER_STATE_TAG] for v in versions) == ["done"] * 4
    assert str(registry.model_version(cfg, alias=registry.CHALLENGER).version) == "4"

    # Every deploy served the champion, all in one tracked server: the pid that listens.
    assert {out.strip().splitlines()[-1] for out, _ in outputs} == {moves[0][1]}
    status = server_status(cfg)
    assert status["healthy"] and status["model_version"] == moves[0][1]
    assert process.listening_pid(cfg.serving.host, cfg.serving.http_port) == status["pid"]


def test_a_verdict_against_an_old_champion_does_not_promote(cfg, tmp_path):
    first = trained_run(cfg, tmp_path, 0, champion_seen=None)
    register(cfg, first, tmp_path / f"verdict-{first}.json", tmp_path / "x", tmp_path / "x", "run-a")
    second = trained_run(cfg, tmp_path, 1, champion_seen="1")
    stale = trained_run(cfg, tmp_path, 2, champion_seen="1")  # judged against v1 too, registers after v2 won
    assert register(cfg, second, tmp_path / f"verdict-{second}.json", tmp_path / "x", tmp_path / "x",
                    "run-b")["promoted"]
    result = register(cfg, stale, tmp_path / f"verdict-{stale}.json", tmp_path / "x", tmp_path / "x", "run-c")
    assert not result["promoted"] and "judged this version against v1, but @champion is v2" in result["promotion"]
    assert champion_moves(cfg) == [(None, "1"), ("1", "2")]


@pytest.mark.parametrize("rerun", ["same task (a retry)", "next pipeline run"])
def test_kill_between_version_and_alias_then_rerun_finishes_it(cfg, tmp_path, rerun):
    run_id = trained_run(cfg, tmp_path, 0, champion_seen=None)
    killed = run_register(tmp_path / "cfg.json", run_id, tmp_path, "run-a", "kill-before-alias")
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    [orphan] = registry.client(cfg).search_model_versions(f"name='{cfg.registry.model_name}'")
    assert registry.champion(cfg) is None and registry.model_version(cfg, alias=registry.CHALLENGER) is None
    assert orphan.tags.get(registry.REGISTER_STATE_TAG) == "pending"

    if rerun == "same task (a retry)":
        result = register(cfg, run_id, tmp_path / f"verdict-{run_id}.json", tmp_path / "x", tmp_path / "x", "run-a")
        assert result == {"model_name": cfg.registry.model_name, "version": "1", "created": False, "promoted": True,
                          "promotion": "bootstrap: no champion existed"}
    else:
        later = trained_run(cfg, tmp_path, 1, champion_seen=None)
        result = register(cfg, later, tmp_path / f"verdict-{later}.json", tmp_path / "x", tmp_path / "x", "run-b")
        assert result["version"] == "2" and not result["promoted"]

    finished = registry.model_version(cfg, version=1)
    assert finished.tags[registry.REGISTER_STATE_TAG] == "done"
    assert str(registry.champion(cfg).version) == "1"
    trail = [(e["alias"], e["to_version"]) for e in registry.audit_trail(cfg) if e.get("action") == "alias"]
    assert trail[:2] == [("challenger", "1"), ("champion", "1")]
    assert len(trail) == len(set(trail))  # each move recorded once
