"""Planted secrets against the real stores: found where they are needed, nowhere else.

- A Redis started here with ``--requirepass`` is reached by the Feast online store with the
  password from the environment only.
- A kfp.local training run whose Redis password and Postgres password (in the tracking URI) come
  from ``KFOPS__`` variables: the MLflow run's params and tags, the compiled YAML and the task
  logs hold neither, and the run tracked into Postgres (the password did reach the steps).
- The local model server: its config file holds no secret and is owner-only, its command line
  and state file hold none, and it gets the secrets through its environment.
- ``kfops status`` on an empty Postgres database shows no password and creates no table.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from kfops.config import load_config
from tests.conftest import REPO_ROOT, free_port, need, port_open

pytestmark = pytest.mark.integration

REDIS_PASSWORD = f"planted-redis-{uuid.uuid4().hex[:10]}"
PG_PASSWORD = f"planted-pg-{uuid.uuid4().hex[:10]}"


def leaks(text: str) -> list[str]:
    return [secret for secret in (REDIS_PASSWORD, PG_PASSWORD) if secret in text]


def wait_port(port: int, process: subprocess.Popen, attempts: int = 200) -> None:
    import time

    for _ in range(attempts):
        if port_open("127.0.0.1", port):
            return
        if process.poll() is not None:
            raise AssertionError(f"redis-server exited with {process.returncode}")
        time.sleep(0.05)
    raise AssertionError(f"redis-server did not listen on {port}")


@pytest.fixture
def protected_redis(tmp_path):
    """A redis-server of our own on a free port, requiring REDIS_PASSWORD."""
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD, "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def fresh_database(postgres_dsn):
    """An empty database on the local PostgreSQL (trust auth: any password is accepted), dropped afterwards."""
    import psycopg2

    name = f"kfops_secrets_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(postgres_dsn)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def table_count(database: str) -> int:
    import psycopg2

    with psycopg2.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as connection, connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        return int(cur.fetchone()[0])


def tracking_uri(database: str) -> str:
    return f"postgresql+psycopg2://postgres:{PG_PASSWORD}@127.0.0.1:5432/{database}"


# --- Feast on a password-protected Redis ----------------------------------------------------------


def test_feast_reaches_a_password_protected_redis_with_the_password_from_the_environment(tmp_path, protected_redis):
    import redis

    from kfops.config import KfopsConfig
    from tests.integration.test_feast_online_redis import _assert_online_matches_historical, _prepare

    connection = f"127.0.0.1:{protected_redis}"
    project = f"kfops_test_{uuid.uuid4().hex[:8]}"
    written = load_config(None, [f"data_dir={tmp_path}", "features.online_store=redis",
                                 f"features.redis_connection={connection}", f"features.project={project}"],
                          environ={"KFOPS__FEATURES__REDIS_PASSWORD": REDIS_PASSWORD})
    serialised = written.to_json()
    assert leaks(serialised) == []
    # Where a step runs: the config as the pipeline carries it, and the password from the environment.
    cfg = KfopsConfig.from_json(serialised).resolve(REPO_ROOT).with_secrets(
        {"KFOPS__FEATURES__REDIS_PASSWORD": REDIS_PASSWORD})
    sources, store = _prepare(cfg)
    try:
        _assert_online_matches_historical(cfg, sources, store)
    finally:
        store.teardown()
    with pytest.raises(redis.exceptions.AuthenticationError):  # the password was needed, not decorative
        redis.Redis(host="127.0.0.1", port=protected_redis).ping()


# --- kfops status on an empty database ------------------------------------------------------------


def test_status_on_an_empty_postgres_database_shows_no_password_and_creates_no_table(
        tmp_path, monkeypatch, capsys, fresh_database):
    """issue 18: `kfops status` on an empty Postgres database created 65 MLflow tables there and
    printed postgresql+psycopg2://postgres:<password>@..."""
    from kfops.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KFOPS__REGISTRY__TRACKING_URI", tracking_uri(fresh_database))
    monkeypatch.setenv("KFOPS__DATA_DIR", str(tmp_path / ".kfops"))
    try:
        main(["status"])
    except SystemExit as exited:
        assert exited.code in (0, None), capsys.readouterr()
    shown = capsys.readouterr()
    output = shown.out + shown.err
    assert f"postgres:***@127.0.0.1:5432/{fresh_database}" in output
    assert leaks(output) == []
    assert table_count(fresh_database) == 0


# --- the local model server -----------------------------------------------------------------------


def test_the_local_model_server_gets_secrets_only_through_its_environment(tmp_path, monkeypatch):
    """issue 18: serving/<name>.config.json held the password, with mode 0644."""
    from kfops.serving.local.process import _paths, start_server, stop_server
    from tests.support.serving_models import build_tiny_model

    model = build_tiny_model(tmp_path / "model", rounds=5)
    cfg = load_config(None, [f"data_dir={tmp_path / 'data'}", f"serving.http_port={free_port()}"],
                      environ={"KFOPS__FEATURES__REDIS_CONNECTION": f"127.0.0.1:6379,password={REDIS_PASSWORD}",
                               "KFOPS__REGISTRY__TRACKING_URI": tracking_uri("mlflow")})
    status = start_server(cfg, model_dir=model, name="secrets", online_lookup="none")
    try:
        paths = _paths(cfg, "secrets")
        assert stat.S_IMODE(paths["config"].stat().st_mode) == 0o600
        for path in paths.values():
            assert leaks(path.read_text()) == [], path
        pid = status["pid"]
        assert leaks(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")) == []
        environment = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        assert f"KFOPS__FEATURES__REDIS_CONNECTION=127.0.0.1:6379,password={REDIS_PASSWORD}" in environment
        assert f"KFOPS__REGISTRY__TRACKING_URI={tracking_uri('mlflow')}" in environment
    finally:
        stop_server(cfg, "secrets")


# --- a kfp.local run ------------------------------------------------------------------------------

WINDOW = ["dataset.start=2013-01-01", "dataset.end=2013-01-07"]
# Never blessed: register and deploy are not what this is about, and a short run is.
QUICK = ["train.xgboost.n_estimators=10", "evaluate.gate.min_roc_auc=1.01", "evaluate.behavioural_checks=false"]


@pytest.mark.slow
def test_a_local_run_logs_no_planted_secret(tmp_path, monkeypatch, fresh_database):
    """issue 18: a password given through KFOPS__ was in every task's log, 7 times per run."""
    from kfops.adapters import mlflow_registry as registry
    from kfops.errors import GateRefused, KfopsError
    from kfops.runners.local import run_locally

    monkeypatch.setenv("KFOPS__FEATURES__REDIS_PASSWORD", REDIS_PASSWORD)
    monkeypatch.setenv("KFOPS__REGISTRY__TRACKING_URI", tracking_uri(fresh_database))
    monkeypatch.setenv("KFOPS__DATA_DIR", str(tmp_path / ".kfops"))
    monkeypatch.chdir(REPO_ROOT)
    artifacts = f"registry.artifact_location={(tmp_path / 'artifacts').as_uri()}"  # not ./mlruns in the repo
    cfg = load_config(REPO_ROOT / "kfops.yaml", [*WINDOW, *QUICK, artifacts])
    assert cfg.features.redis_password is not None and PG_PASSWORD in cfg.tracking_uri
    lines: list[str] = []
    try:
        run_locally(cfg, "training", on_event=lines.append)
    except GateRefused:
        pass
    except KfopsError as err:  # the run's log says why; show it
        logs = "\n".join(p.read_text() for p in (cfg.data_dir / "logs").glob("*.log"))
        raise AssertionError(f"{err}\n{logs[-3000:]}") from err

    # The steps reached the database through the password-free config plus the environment.
    assert table_count(fresh_database) > 0
    mlflow_client = registry.client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.registry.experiment)
    runs = mlflow_client.search_runs([experiment.experiment_id])
    assert runs, "the run logged nothing to MLflow"
    for run in runs:
        logged = repr(run.data.params) + repr(run.data.tags)
        assert leaks(logged) == [], run.info.run_id

    texts = {str(p): p.read_text(errors="replace") for p in cfg.data_dir.rglob("*")
             if p.is_file() and p.suffix in (".log", ".yaml", ".json", ".txt", ".html")}
    texts["events"] = "\n".join(lines)
    assert any(p.endswith(".log") for p in texts) and any(p.endswith(".yaml") for p in texts)
    assert {where: leaks(text) for where, text in texts.items() if leaks(text)} == {}
    assert os.environ["KFOPS__FEATURES__REDIS_PASSWORD"] == REDIS_PASSWORD
