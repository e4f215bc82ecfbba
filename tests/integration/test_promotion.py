"""Promotion through the MLflow REST API (what the UI calls) redeploys the endpoint within the bound,
and `kfops rollback` puts the previous champion back — against the production-profile MLflow server."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from kfops.adapters import mlflow_registry as registry
from kfops.cli import main
from kfops.errors import KfopsError
from kfops.runners.promotion import promote, rollback
from tests.conftest import free_port
from tests.integration.conftest import log_registered_model, stop
from tests.support.example import example_config, write_example_config

pytestmark = pytest.mark.integration
FOLLOW_BOUND_S = 30  # the documented bound: the endpoint follows @champion within 30 s by default
KFOPS = str(Path(sys.executable).with_name("kfops"))


def served_version(url: str, name: str) -> str | None:
    try:
        response = httpx.get(f"{url}/v2/models/{name}", timeout=2)
    except httpx.HTTPError:
        return None
    return (response.json().get("versions") or [None])[0] if response.status_code == 200 else None


def wait_for_version(url: str, name: str, version: str, bound_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < bound_s:
        if served_version(url, name) == version:
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"{url} did not serve v{version} within {bound_s}s (serves v{served_version(url, name)})")


def test_alias_moved_through_rest_api_redeploys_and_rollback_restores(production_mlflow, tmp_path):
    name = f"promo-{uuid.uuid4().hex[:8]}"
    port = free_port()
    overrides = [f"data_dir={tmp_path / 'state'}", f"registry.tracking_uri={production_mlflow['tracking_uri']}",
                 f"registry.model_name={name}", f"registry.experiment={name}", f"serving.http_port={port}"]
    cfg = example_config(
        {"data_dir": str(tmp_path / "state"), "serving": {"http_port": port},
         "registry": {"tracking_uri": production_mlflow["tracking_uri"], "model_name": name, "experiment": name}}
    ).resolve(tmp_path)
    v1 = log_registered_model(cfg, tmp_path, "run-1")
    v2 = log_registered_model(cfg, tmp_path, "run-2", seed=1)
    registry.move_alias(cfg, registry.CHAMPION, v1.version, reason="first champion", who="tester")

    set_args = [arg for item in overrides for arg in ("--set", item)]
    command = [KFOPS, "deploy", "--watch", "--interval", "1", "--max-seconds", "240", *set_args]
    log = tmp_path / "watch.log"
    with open(log, "w") as out:
        watcher = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # First deployment includes the server's start-up; the bound applies to alias moves.
        wait_for_version(url, name, str(v1.version), 120)

        moved = httpx.post(f"{production_mlflow['tracking_uri']}/api/2.0/mlflow/registered-models/alias",
                           json={"name": name, "alias": "champion", "version": str(v2.version)}, timeout=10)
        assert moved.status_code == 200, moved.text
        wait_for_version(url, name, str(v2.version), FOLLOW_BOUND_S)

        trail = registry.audit_trail(cfg)
        assert trail[-1]["who"] == "mlflow-ui"
        assert (trail[-1]["from_version"], trail[-1]["to_version"]) == (str(v1.version), str(v2.version))

        done = subprocess.run([KFOPS, "rollback", "--reason", "canary errors", *set_args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"v{v2.version} -> v{v1.version}" in done.stdout
        wait_for_version(url, name, str(v1.version), FOLLOW_BOUND_S)

        history = subprocess.run([KFOPS, "history", *set_args], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
        assert history.returncode == 0, history.stderr
        lines = history.stdout.strip().splitlines()
        assert len(lines) == 3 and "rollback: canary errors" in lines[-1] and "mlflow-ui" in lines[1]
    finally:
        stop(watcher)
        from kfops.serving.local.process import stop_server

        stop_server(cfg)
        print(log.read_text()[-2000:])


def test_rollback_moves_champion_back_and_refuses_when_the_trail_cannot_say(tmp_path):
    """The rollback the CLI runs, called directly, on the embedded SQLite store."""
    cfg = example_config(data_dir=tmp_path / "state").resolve(tmp_path)
    # Before any model is registered: an empty trail and a refusal, not MLflow's "not found".
    assert registry.audit_trail(cfg) == []
    with pytest.raises(KfopsError, match="no previous champion"):
        rollback(cfg, reason="nothing registered yet")
    v1 = log_registered_model(cfg, tmp_path, "run-1")
    v2 = log_registered_model(cfg, tmp_path, "run-2", seed=1)
    with pytest.raises(KfopsError, match="no previous champion"):
        rollback(cfg, reason="nothing to go back to")

    assert promote(cfg, str(v1.version), reason="first")["from_version"] is None
    with pytest.raises(KfopsError, match="no previous champion"):  # a first champion has no predecessor
        rollback(cfg, reason="too early")
    event = promote(cfg, str(v2.version), reason="better")
    assert (event["from_version"], event["to_version"]) == (str(v1.version), str(v2.version))
    with pytest.raises(KfopsError, match=f"v{v2.version} already holds @champion"):  # no "v2 -> v2" entry
        promote(cfg, str(v2.version), reason="again")
    assert registry.audit_trail(cfg)[-1]["to_version"] == str(v2.version)

    event = rollback(cfg, reason="canary errors")
    assert (event["from_version"], event["to_version"]) == (str(v2.version), str(v1.version))
    assert str(registry.champion(cfg).version) == str(v1.version)
    last = registry.audit_trail(cfg)[-1]
    assert last["reason"] == "rollback: canary errors" and last["forced"]

    # @champion moved without an audit entry: the trail no longer says what came before it.
    registry.client(cfg).set_registered_model_alias(cfg.registry.model_name, registry.CHAMPION, str(v2.version))
    with pytest.raises(KfopsError, match="does not say which champion came before"):
        rollback(cfg, reason="unknown past")


def test_a_version_that_does_not_exist_is_exit_2_in_every_command(production_mlflow, tmp_path, monkeypatch, capsys):
    """`promote 99` and `lineage 99` exited 2 but `predict --model-uri models:/m/99` exited 3, as if
    the registry had failed; one answer for one mistake, naming what is missing."""
    name = f"missing-{uuid.uuid4().hex[:8]}"
    settings = {"data_dir": str(tmp_path / "state"),
                "registry": {"tracking_uri": production_mlflow["tracking_uri"], "model_name": name, "experiment": name}}
    cfg = example_config(settings).resolve(tmp_path)
    log_registered_model(cfg, tmp_path, "run-1")
    write_example_config(tmp_path / "kfops.yaml", settings)
    monkeypatch.chdir(tmp_path)
    rows = tmp_path / "rows.csv"
    rows.write_text("carrier,precip,distance\nUA,0.1,500\n")
    for args, named in [
        (("promote", "99"), "has no version 99"),
        (("lineage", "99"), "has no version 99"),
        (("serve", "start", "--version", "99", "--port", str(free_port())), "has no version 99"),
        (("serve", "canary", "--version", "99"), "has no version 99"),  # before any server starts
        (("predict", "-i", str(rows), "-o", str(tmp_path / "out.parquet"), "--model-uri", f"models:/{name}/99"),
         f"models:/{name}/99"),
        (("predict", "-i", str(rows), "-o", str(tmp_path / "out.parquet"), "--model-uri", f"models:/{name}@nope"),
         f"models:/{name}@nope"),
    ]:
        with pytest.raises(SystemExit) as exited:  # the console entry point, in this process
            main(list(args))
        stderr = capsys.readouterr().err
        assert exited.value.code == 2, (args, exited.value.code, stderr)
        assert named in stderr and "Traceback" not in stderr, (args, stderr)
    assert not (tmp_path / "out.parquet").exists()
