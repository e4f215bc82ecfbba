"""The serve CLI and the process helpers that need no running server; imports stay light."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from kfops.cli.serve import app
from kfops.config import load_config
from kfops.errors import ConfigError, ServingError
from kfops.serving.local.process import (
    _source_for,
    server_status,
    start_server,
    stop_server,
)
from kfops.serving.runtime.loading import ModelSource
from tests.conftest import REPO_ROOT
from tests.support.serving_models import build_tiny_model, synthetic_features

runner = CliRunner()


def cfg_for(tmp_path, *extra):
    return load_config(None, [f"data_dir={tmp_path}", *extra], environ={})


def test_cli_and_client_modules_import_no_heavy_library():
    code = (
        "import sys, kfops.cli.serve, kfops.serving.local.process, kfops.serving.local.client, "
        "kfops.serving.local.batch_scoring, "
        "kfops.serving.runtime.inference_log, kfops.serving.protocol.payloads, kfops.serving.runtime.engine; "
        "print([m for m in ('kserve', 'xgboost', 'mlflow', 'feast', 'torch', 'pandas', 'fastapi') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["start", "stop", "status", "canary", "predict-one", "predict"])
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_status_and_stop_without_a_server(tmp_path):
    result = runner.invoke(app, ["status", "--json", "--set", f"data_dir={tmp_path}"])
    assert result.exit_code == 0
    assert json.loads(result.output) | {"log_file": None} == {
        "name": "flights-delay", "running": False, "healthy": False, "pid": None, "url": None,
        "model_version": None, "log_file": None}
    result = runner.invoke(app, ["stop", "--set", f"data_dir={tmp_path}"])
    assert result.exit_code == 0 and "nothing to stop" in result.output


def test_predict_command_scores_a_file(tmp_path):
    model_dir = build_tiny_model(tmp_path / "model")
    synthetic_features(50, seed=2).to_parquet(tmp_path / "in.parquet", index=False)
    result = runner.invoke(app, ["predict", "--input", str(tmp_path / "in.parquet"), "--output",
                                 str(tmp_path / "out.parquet"), "--model-dir", str(model_dir),
                                 "--set", f"data_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert "scored 50 rows" in result.output
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 50


def test_predict_refuses_text_in_a_numeric_column_unless_told_to_coerce(tmp_path):
    model_dir = build_tiny_model(tmp_path / "model")
    frame = synthetic_features(20, seed=2).astype({"seats": "object"})
    frame.loc[:, "seats"] = [str(v) for v in frame["seats"]]
    frame.loc[7, "seats"] = "many"
    frame.to_csv(tmp_path / "in.csv", index=False)
    arguments = ["predict", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.parquet"),
                 "--model-dir", str(model_dir), "--set", f"data_dir={tmp_path}"]
    refused = runner.invoke(app, arguments)
    assert refused.exit_code != 0 and not (tmp_path / "out.parquet").exists()
    assert "row 7, column 'seats': 'many' is not a number" in str(refused.exception)
    coerced = runner.invoke(app, [*arguments, "--coerce"])
    assert coerced.exit_code == 0, coerced.output
    assert "scored 20 rows" in coerced.output


def test_the_model_source_follows_the_arguments_then_the_config(tmp_path):
    cfg = cfg_for(tmp_path, "serving.model_alias=staging")
    assert _source_for(cfg, tmp_path, None, None, None) == ModelSource(model_dir=tmp_path.resolve())
    assert _source_for(cfg, None, None, "4", None).model_uri == "models:/flights-delay/4"
    alias = _source_for(cfg, None, None, None, None)
    assert alias.model_uri == "models:/flights-delay@staging" and alias.tracking_uri == cfg.tracking_uri
    with pytest.raises(ServingError, match="give one of"):
        _source_for(cfg, tmp_path, "models:/m/1", None, None)
    with pytest.raises(ConfigError, match="is not models:/"):
        ModelSource(model_uri="runs:/abc/model", tracking_uri="sqlite:///x.db")


def test_start_refuses_a_port_someone_else_listens_on(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = cfg_for(tmp_path)
        with pytest.raises(ServingError, match=f"127.0.0.1:{port} is already in use"):
            start_server(cfg, model_dir=tmp_path, port=port)
    assert server_status(cfg)["running"] is False
    assert stop_server(cfg)["stopped"] is False


def test_servers_do_not_inherit_feasts_prometheus_multiprocess_dir(monkeypatch, tmp_path):
    from kfops.serving.local.process import server_environment

    import_feast_like = {"PROMETHEUS_MULTIPROCESS_DIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for key, value in import_feast_like.items():
        monkeypatch.setenv(key, value)
    env = server_environment()
    assert not set(import_feast_like) & set(env)
    assert env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == os.environ["PATH"]
