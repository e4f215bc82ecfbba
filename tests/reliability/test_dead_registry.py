"""A registry that cannot be reached is an infrastructure error (exit 3) with a hint, reported
after one bounded check instead of minutes of MLflow's engine and HTTP retries (which ended in
exit 1, "unexpected OperationalError")."""

from __future__ import annotations

import uuid

import pytest

from kfops.cli import main
from kfops.errors import EXIT_INFRA
from tests.conftest import free_port

pytestmark = pytest.mark.reliability


def kfops_history(tracking_uri: str, tmp_path, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["history", "--set", f"registry.tracking_uri={tracking_uri}", "--set", f"data_dir={tmp_path}"])
    return exited.value.code, capsys.readouterr().err


def test_missing_postgres_database(postgres_dsn, tmp_path, capsys):
    database = f"kfops_missing_{uuid.uuid4().hex[:8]}"
    uri = postgres_dsn.replace("postgresql://", "postgresql+psycopg2://").rsplit("/", 1)[0] + f"/{database}"
    code, err = kfops_history(uri, tmp_path, capsys)
    assert code == EXIT_INFRA
    assert f'database "{database}" does not exist' in err and "hint: check registry.tracking_uri" in err


def test_postgres_on_a_dead_port(tmp_path, capsys):
    code, err = kfops_history(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/mlflow", tmp_path, capsys)
    assert code == EXIT_INFRA and "Connection refused" in err and "hint:" in err


def test_mlflow_server_on_a_dead_port(tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    code, err = kfops_history(uri, tmp_path, capsys)
    assert code == EXIT_INFRA
    assert f"the MLflow tracking server {uri} is unreachable" in err and "tracking server is up" in err
