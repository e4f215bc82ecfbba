"""Concurrent first use of one data dir: several processes create the SQLite MLflow store (its
schema migration) and the experiment at the same moment. Each must succeed, and the store must
be left whole: at the head alembic revision, with no half-applied migration's temporary tables."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from kfops.config import KfopsConfig
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.reliability

WORKER = """
import json, sys, time
from pathlib import Path
from kfops.adapters import mlflow_registry as registry
from kfops.config import KfopsConfig

data_dir, go = Path(sys.argv[1]), Path(sys.argv[2])
cfg = KfopsConfig(data_dir=data_dir).resolve(data_dir.parent)
while not go.exists():  # all workers start their first touch of the store together
    time.sleep(0.01)
print(json.dumps({"experiment_id": registry.ensure_experiment(cfg)}))
"""


def test_four_processes_create_one_store_and_one_experiment(tmp_path):
    data_dir, go = tmp_path / "state", tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(data_dir), str(go)], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    go.touch()
    results = [(worker.wait(timeout=300), *worker.communicate()) for worker in workers]

    assert [code for code, _, _ in results] == [0, 0, 0, 0], [err[-2000:] for _, _, err in results]
    ids = {json.loads(out.strip().splitlines()[-1])["experiment_id"] for _, out, _ in results}
    assert len(ids) == 1
    with sqlite3.connect(data_dir / "mlflow" / "mlflow.db") as db:
        tables = {name for (name,) in db.execute("select name from sqlite_master where type='table'")}
        revisions = db.execute("select version_num from alembic_version").fetchall()
        experiments = db.execute("select count(*) from experiments where name=?",
                                 (KfopsConfig().registry.experiment,)).fetchone()[0]
    assert not [t for t in tables if t.startswith("_alembic_tmp")]
    assert revisions == [(_head_revision(),)]
    assert experiments == 1


def _head_revision() -> str:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    return ScriptDirectory.from_config(_get_alembic_config("sqlite://")).get_current_head()


KILLED_WHILE_CREATING = """
import os, signal, sys
from pathlib import Path
from mlflow.store.db import utils
from kfops.adapters import mlflow_registry as registry
from kfops.config import KfopsConfig

real_upgrade = utils._upgrade_db
def upgrade_then_die(engine):  # the process is killed in the middle of MLflow creating its tables
    real_upgrade(engine)
    os.kill(os.getpid(), signal.SIGKILL)
utils._upgrade_db = upgrade_then_die
data_dir = Path(sys.argv[1])
registry.ensure_experiment(KfopsConfig(data_dir=data_dir).resolve(data_dir.parent))
"""


def test_a_process_killed_while_creating_the_store_leaves_none_behind(tmp_path):
    """kill -9 of a task during its first MLflow call left a half-migrated SQLite file ('duplicate
    column name: deleted_time') that broke every later run on the data dir."""
    from kfops.adapters import mlflow_registry as registry

    data_dir = tmp_path / "data"
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_CREATING, str(data_dir)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    cfg = KfopsConfig(data_dir=data_dir).resolve(tmp_path)
    assert not list(data_dir.rglob("mlflow.db"))  # only the staging file, under another name
    assert registry.ensure_experiment(cfg)  # the next run creates the store whole
    assert list(data_dir.rglob("mlflow.db"))
