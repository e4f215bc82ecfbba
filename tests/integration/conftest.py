"""Real services for integration tests: an MLflow tracking server on PostgreSQL with S3 artifacts
on a loopback S3-compatible server (moto), and helpers to build small registered models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import free_port, need, port_open

BIN = Path(sys.executable).parent


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered:\n{tail}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{tail}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3-compatible server on 127.0.0.1, used through boto3 exactly like AWS S3."""
    need(shutil.which("moto_server", path=str(BIN)) is not None, "moto[server] is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/", 30, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


# Webhooks to the promotion controller on loopback over plain HTTP (an in-cluster controller needs
# the same two settings), a 1 s cache of the webhook list, and one key for the stored secrets.
WEBHOOK_SERVER_ENV = {"MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
                      "MLFLOW_WEBHOOK_CACHE_TTL": "1",
                      "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": "a2ZvcHMtdGVzdHMtb25seS13ZWJob29rLWtleS0zMmI="}
S3_CLIENT_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def _production_mlflow_server(s3_server, tmp_path_factory):
    """`mlflow server` with a PostgreSQL backend store and S3 artifacts, started once per session.

    The S3 settings go to the server process only; tests get them through ``production_mlflow``,
    so they never leak into tests that run after it (the suite runs in random order)."""
    import boto3
    import psycopg2

    need(port_open("127.0.0.1", 5432), "PostgreSQL is not listening on 127.0.0.1:5432")
    database = f"kfops_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{database}"')
    env = {**S3_CLIENT_ENV, "MLFLOW_S3_ENDPOINT_URL": s3_server, **WEBHOOK_SERVER_ENV}
    bucket = f"kfops-mlflow-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
             "--default-artifact-root", f"s3://{bucket}/artifacts", "--no-serve-artifacts"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, process, log)
        yield {"tracking_uri": f"http://127.0.0.1:{port}", "bucket": bucket, "s3": s3_server, "database": database}
    finally:
        stop(process)
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def production_mlflow(_production_mlflow_server, monkeypatch):
    """The session's production MLflow, with this test's process set up to write artifacts to its S3."""
    for key, value in {**S3_CLIENT_ENV, "MLFLOW_S3_ENDPOINT_URL": _production_mlflow_server["s3"]}.items():
        monkeypatch.setenv(key, value)
    return _production_mlflow_server


def synthetic_frame(n: int = 1500, seed: int = 0, flip: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "carrier": rng.choice(["AA", "UA", "DL"], n),
        "precip": rng.exponential(0.05, n),
        "distance": rng.uniform(100, 2500, n),
    })
    signal = 6 * frame["precip"] + (frame["carrier"] == "UA") * 0.7 - 1.2 + rng.normal(0, 0.4, n)
    frame["label"] = ((signal > 0) ^ flip).astype(int)
    return frame


def log_registered_model(cfg, tmp_path: Path, pipeline_run: str, seed: int = 0, blessed: bool = True):
    """Train a tiny XGBoost model, log it like the train step does, and register it; returns the version."""
    from kfops.adapters import mlflow_registry as registry
    from kfops.config import TrainConfig
    from kfops.core.model import FeatureSpec, predict_proba, save_model
    from kfops.training import train_model

    frame = synthetic_frame(seed=seed)
    spec = FeatureSpec.fit(frame, ["carrier", "precip", "distance"], ["carrier"])
    result = train_model(frame.iloc[:1000], frame.iloc[1000:], spec, TrainConfig(xgboost={"n_estimators": 20}), None)
    folder = save_model(result.model, tmp_path / f"model-{pipeline_run}")
    experiment_id = registry.ensure_experiment(cfg)
    with registry.start_run(cfg, experiment_id) as run:
        example = frame[spec.columns].head(3)
        proba = predict_proba(result.model, example)
        uri = run.log_model(folder, example, pd.DataFrame({"probability": proba, "prediction": (proba > .5) * 1}))
    tags = {registry.BLESSED_TAG: "true" if blessed else "false", "kfops.pipeline_run": pipeline_run}
    version, _ = registry.register_version(cfg, run.run_id, uri, tags, f"{pipeline_run}/register")
    return version
