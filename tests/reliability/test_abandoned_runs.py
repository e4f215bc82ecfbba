"""An MLflow run a killed task left RUNNING is marked FAILED by the next run: at once when it is
an earlier attempt of the same step of the same pipeline run, else after registry.abandoned_run_hours."""

from __future__ import annotations

import os
import time

import pytest

from kfops.adapters import mlflow_registry as registry
from tests.support.example import example_config

pytestmark = pytest.mark.reliability


def test_runs_left_running_are_failed_by_the_next_run(tmp_path):
    cfg = example_config(data_dir=tmp_path / "state", registry={"abandoned_run_hours": 1}).resolve(tmp_path)
    experiment_id = registry.ensure_experiment(cfg)
    mlflow_client = registry.client(cfg)
    # What a kill -9 inside `with start_run(...)` leaves: runs created and never terminated.
    killed = mlflow_client.create_run(experiment_id, run_name="train-run-a").info.run_id
    old = mlflow_client.create_run(experiment_id, run_name="train-run-old",
                                   start_time=int((time.time() - 2 * 3600) * 1000)).info.run_id
    concurrent = mlflow_client.create_run(experiment_id, run_name="train-run-b").info.run_id

    with registry.start_run(cfg, experiment_id, run_name="train-run-a") as retried:
        pass

    status = {run_id: mlflow_client.get_run(run_id) for run_id in (killed, old, concurrent, retried.run_id)}
    assert status[killed].info.status == "FAILED" and "new attempt of train-run-a" in status[killed].data.tags[
        registry.ABANDONED_TAG]
    assert status[old].info.status == "FAILED" and "abandoned_run_hours" in status[old].data.tags[registry.ABANDONED_TAG]
    assert status[concurrent].info.status == "RUNNING"  # another pipeline run, still young: not ours to end
    assert status[retried.run_id].info.status == "FINISHED"


def test_a_run_whose_process_was_killed_on_this_host_is_failed_at_once(tmp_path):
    """A local `kfops run` killed with -9 mid-step, then run again (another pipeline run): its run
    is over at once, because its owner process is gone; a run whose owner still lives is left."""
    import socket
    import subprocess
    import sys

    cfg = example_config(data_dir=tmp_path / "state").resolve(tmp_path)
    experiment_id = registry.ensure_experiment(cfg)
    mlflow_client = registry.client(cfg)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # a pid that has exited
    host = socket.gethostname()
    killed = mlflow_client.create_run(experiment_id, run_name="train-run-killed", tags={
        registry.OWNER_HOST_TAG: host, registry.OWNER_PID_TAG: gone}).info.run_id
    alive = mlflow_client.create_run(experiment_id, run_name="evaluate-run-live", tags={
        registry.OWNER_HOST_TAG: host, registry.OWNER_PID_TAG: str(os.getpid())}).info.run_id
    elsewhere = mlflow_client.create_run(experiment_id, run_name="train-run-pod", tags={
        registry.OWNER_HOST_TAG: "another-pod", registry.OWNER_PID_TAG: gone}).info.run_id

    with registry.start_run(cfg, experiment_id, run_name="train-run-next") as next_run:
        tags = mlflow_client.get_run(next_run.run_id).data.tags
        assert (tags[registry.OWNER_HOST_TAG], tags[registry.OWNER_PID_TAG]) == (host, str(os.getpid()))

    assert mlflow_client.get_run(killed).info.status == "FAILED"
    assert "is gone" in mlflow_client.get_run(killed).data.tags[registry.ABANDONED_TAG]
    assert mlflow_client.get_run(alive).info.status == "RUNNING"
    assert mlflow_client.get_run(elsewhere).info.status == "RUNNING"  # another host's process: only age decides
