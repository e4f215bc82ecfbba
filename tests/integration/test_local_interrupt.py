"""Ctrl-C during a local run: SIGINT to the whole process group (what a terminal sends), to a real
`kfops` process running a tiny compiled pipeline whose one task waits. kfp.local's task dies of
the same signal; the run must end as interrupted (exit 130), not as a failed task (exit 1), and
the local scheduler must stop instead of going on to its next run.

Two ways the process may hold SIGINT: Python's handler (a terminal), or ignored (a background job
of a script, as `cmd &` starts it): the task dies either way, so both must read as interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.example import write_example_config

pytestmark = pytest.mark.integration

# `kfops <argv>` with the pipelines compiled from one waiting task instead of kfops' own.
DRIVER = '''
import sys

from kfp import compiler, dsl
from kfp.dsl import Artifact, Output

from kfops.cli import main
from kfops.runners import local


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def wait(table: Output[Artifact]):
    import os
    import pathlib
    import time

    pathlib.Path(os.environ["KFOPS_TEST_MARKER"]).write_text(str(os.getpid()))
    time.sleep(600)


@dsl.pipeline(name="tiny-wait")
def tiny_wait():
    wait()


def compile_tiny(cfg, name, output):
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(tiny_wait, str(output))
    return output


local.compile_pipeline = compile_tiny
sys.exit(main(sys.argv[1:]))
'''
STARTUP_S = 240  # a cold 2-core machine imports kfp, pandas and the zygote's preloads first


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie is dead, waiting for whoever reaps it


def _interrupt(tmp_path: Path, *argv: str, ignore_sigint: bool) -> tuple[subprocess.CompletedProcess, int]:
    """Start `kfops argv`, wait for the task to run, send SIGINT to the process group; the outcome and the task's pid."""
    marker = tmp_path / "task.pid"
    driver = tmp_path / "driver.py"  # a file: kfp reads a component's source from it
    driver.write_text(DRIVER)
    config = write_example_config(tmp_path / "kfops.yaml", {"data_dir": str(tmp_path / "state")})
    env = {**os.environ, "KFOPS_TEST_MARKER": str(marker), "KFOPS_PROGRESS": "plain"}
    command = [sys.executable, str(driver), *argv, "-c", str(config)]
    if ignore_sigint:  # as `cmd &` in a script starts it: SIGINT ignored, inherited through exec
        command = ["sh", "-c", 'trap "" INT; exec "$0" "$@"', *command]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)  # a group of its own, as a shell gives
    try:
        deadline = time.monotonic() + STARTUP_S
        while not (marker.is_file() and marker.read_text()) and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.is_file() and process.poll() is None, process.communicate(timeout=60)
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    task = int(marker.read_text())
    deadline = time.monotonic() + 30
    while _alive(task) and time.monotonic() < deadline:
        time.sleep(0.1)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), task


@pytest.mark.parametrize(("pipeline", "ignore_sigint"), [("retraining", False), ("training", True)])
def test_ctrl_c_ends_a_run_as_interrupted_not_failed(tmp_path, pipeline, ignore_sigint):
    done, task = _interrupt(tmp_path, "run", pipeline, ignore_sigint=ignore_sigint)
    assert done.returncode == 130, (done.stdout, done.stderr)
    assert f"interrupted: pipeline '{pipeline}' stopped in task 'wait'" in done.stderr, done.stderr
    assert "failed" not in done.stderr
    assert not _alive(task), "the task outlived the run"
    (log,) = (tmp_path / "state" / "logs").glob(f"{pipeline}-*.log")
    assert "kfops: task 'wait' interrupted" in log.read_text() and "kfops: interrupted" in log.read_text()
    record = json.loads((tmp_path / "state" / "runs" / f"{log.stem}.json").read_text())  # `kfops runs list`
    assert record["state"] == "interrupted" and record["failed_task"] == "wait" and record["ended_at"]


def test_ctrl_c_stops_the_local_scheduler_during_a_run(tmp_path):
    done, task = _interrupt(tmp_path, "schedule", "retraining", "--local", "--cron", "* * * * * *", "--max-runs", "3",
                            ignore_sigint=True)
    assert done.returncode == 130, (done.stdout, done.stderr)
    assert "stopped (interrupted): 1 runs, 0 failed" in done.stdout and "interrupted" in done.stderr
    assert not _alive(task)
    log = tmp_path / "state" / "scheduler" / "retraining.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("run_started") == 1 and "run_failed" not in kinds, kinds
    assert kinds[-2:] == ["run_interrupted", "stopped"] and events[-1]["reason"] == "interrupted"
