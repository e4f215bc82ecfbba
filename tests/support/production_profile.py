"""The production profile on one machine, for the container test and bench/containers.py:
an MLflow tracking server on PostgreSQL with artifacts on S3 (a moto server), a Feast SQL registry
on PostgreSQL, and a Redis online store that asks for a password,
and kfops' own state (state.store) on the same S3. Everything listens on loopback;
the databases and the bucket are new and are dropped afterwards.

    with production_profile(tmp, redis_password=...) as profile:
        profile.overrides  # --set values that point kfops at the services
        profile.env        # what a task needs in its environment (S3 keys, the Redis password)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Profile:
    overrides: list[str]
    env: dict[str, str]
    redis: str
    tracking_uri: str
    processes: list[subprocess.Popen] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url_or_port: str | int, process: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited at start:\n{log.read_text()[-2000:]}")
        try:
            if isinstance(url_or_port, int):
                with socket.create_connection(("127.0.0.1", url_or_port), timeout=0.5):
                    return
            else:
                with urllib.request.urlopen(url_or_port, timeout=2):
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{process.args[0]} did not answer within {timeout_s:g} s:\n{log.read_text()[-2000:]}")


def _start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def production_profile(folder: Path, redis_password: str) -> Iterator[Profile]:
    import boto3
    import psycopg2

    folder.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:10]
    databases = [f"kfops_mlflow_{suffix}", f"kfops_feast_{suffix}"]
    admin = psycopg2.connect(POSTGRES)
    admin.autocommit = True
    processes: list[subprocess.Popen] = []
    try:
        for database in databases:
            admin.cursor().execute(f'CREATE DATABASE "{database}"')
        s3_port = free_port()
        processes.append(_start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], folder / "moto.log"))
        s3 = f"http://127.0.0.1:{s3_port}"
        _wait(f"{s3}/", processes[-1], folder / "moto.log")
        bucket = f"kfops-{suffix}"
        boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=bucket)
        s3_env = {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3, "AWS_ENDPOINT_URL_S3": s3}

        mlflow_port = free_port()
        processes.append(_start(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
             "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{databases[0]}",
             "--default-artifact-root", f"s3://{bucket}/artifacts", "--no-serve-artifacts"],
            folder / "mlflow.log", env={**os.environ, **s3_env}))
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        _wait(f"{tracking_uri}/health", processes[-1], folder / "mlflow.log")

        redis_port = free_port()
        processes.append(_start(
            [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(folder), "--requirepass", redis_password],
            folder / "redis.log"))
        _wait(redis_port, processes[-1], folder / "redis.log")
        redis = f"127.0.0.1:{redis_port}"

        overrides = [
            f"registry.tracking_uri={tracking_uri}",
            f"features.registry=postgresql+psycopg2://postgres@127.0.0.1:5432/{databases[1]}",
            "features.online_store=redis", f"features.redis_connection={redis}",
            "features.materialize_online=true", f"state.store=s3://{bucket}/kfops-state",
        ]
        env = {**s3_env, "KFOPS__FEATURES__REDIS_PASSWORD": redis_password}
        yield Profile(overrides, env, redis, tracking_uri, processes)
    finally:
        for process in reversed(processes):
            _stop(process)
        for database in databases:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
