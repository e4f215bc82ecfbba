"""The task zygote of local runs: a task forked from it ends the way a cold ``python3`` task does.

Each test runs kfp's real executor (``python3 -m kfp.dsl.executor_main``) on a small component,
once through the launcher a zygote serves and once with the real interpreter, and compares what
the task's parent sees: exit status, output, files. The zygote is real (a process that preloads
kfp's executor and forks); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kfops.adapters import kfp_zygote
from kfops.adapters.kfp_zygote import SOCKET_ENV, fork_available, fork_hazard, serving_tasks

pytestmark = pytest.mark.skipif(fork_available() is not None, reason=f"no task zygote here: {fork_available()}")

# What kfp writes to ephemeral_component.py for a lightweight component: the function, undecorated.
COMPONENT = '''
import kfp
from kfp import dsl
from kfp.dsl import *
from typing import *

def act() -> str:
    import os
    import signal
    import sys
    import tempfile
    import time

    with open(os.environ["ZYGOTE_TEST_PID"], "w") as out:
        out.write(str(os.getpid()))
    action = os.environ["ZYGOTE_TEST_ACTION"]
    print(f"task says: cwd={os.getcwd()} tmp={tempfile.gettempdir()} argv0={sys.argv[0]}", flush=True)
    if action == "raise":
        raise ValueError("boom from the task")
    if action == "exit3":
        sys.exit(3)
    if action == "kill9":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "sleep":
        time.sleep(120)
    return "done"
'''


def _task(tmp: Path, python: str, action: str, env: dict[str, str], name: str) -> tuple[subprocess.Popen, Path, Path]:
    """Start ``python -m kfp.dsl.executor_main`` as kfp.local's command does, for the ``act`` component."""
    work = tmp / name
    work.mkdir()
    module = work / "ephemeral_component.py"
    module.write_text(COMPONENT)
    executor_input = {"inputs": {}, "outputs": {"parameters": {"Output": {"outputFile": str(work / "Output")}},
                                                "outputFile": str(work / "executor_output.json")}}
    command = [python, "-m", "kfp.dsl.executor_main", "--component_module_path", str(module),
               "--executor_input", json.dumps(executor_input), "--function_to_execute", "act"]
    pid_file = work / "pid"
    task_env = {**env, "_KFP_RUNTIME": "true", "ZYGOTE_TEST_ACTION": action, "ZYGOTE_TEST_PID": str(pid_file),
                "TMPDIR": str(work)}
    process = subprocess.Popen(command, cwd=work, env=task_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    return process, pid_file, work


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    out, _ = process.communicate(timeout=120)
    return process.returncode, out


@pytest.fixture
def zygote(tmp_path):
    """A running zygote (preloading kfp's executor), its launcher and the environment tasks get."""
    scratch = tmp_path / "run"
    scratch.mkdir()
    env = dict(os.environ)
    log = scratch / "report.txt"
    with open(log, "w") as report, serving_tasks(scratch, ["kfp.dsl.executor"], env, log=report) as socket_path:
        assert socket_path is not None
        yield str(scratch / "python-task"), {**env, SOCKET_ENV: socket_path}


def _forked(process: subprocess.Popen, pid_file: Path) -> bool:
    """The launcher hands the task to a forked process; a cold start execs in the launcher's own process."""
    return int(pid_file.read_text()) != process.pid


@pytest.mark.parametrize(("action", "code", "says"), [
    ("return", 0, "task says: cwd="),
    ("raise", 1, "ValueError: boom from the task"),
    ("exit3", 3, "task says"),
    ("kill9", -signal.SIGKILL, "task says"),
])
def test_a_forked_task_ends_like_a_cold_one(zygote, tmp_path, action, code, says):
    launcher, env = zygote
    cold, cold_pid, cold_work = _task(tmp_path, sys.executable, action, env, "cold")
    warm, warm_pid, warm_work = _task(tmp_path, launcher, action, env, "warm")
    (cold_code, cold_out), (warm_code, warm_out) = _finish(cold), _finish(warm)
    assert not _forked(cold, cold_pid)
    assert _forked(warm, warm_pid), "the task did not come from the zygote"
    assert cold_code == warm_code == code, warm_out[-3000:]
    assert says in cold_out and says in warm_out, warm_out[-2000:]
    # The task ran where the command ran, with its $TMPDIR and python3 -m's argv[0].
    assert f"cwd={warm_work} tmp={warm_work} argv0=" in warm_out
    assert "executor_main.py" in warm_out.split("argv0=", 1)[1].splitlines()[0]
    if code == 0:
        assert json.loads((warm_work / "executor_output.json").read_text()) == \
            json.loads((cold_work / "executor_output.json").read_text())
        assert "[KFP Executor" in warm_out  # executor_main's own logging went to the task's stdout


def test_killing_the_launcher_kills_its_task(zygote, tmp_path):
    launcher, env = zygote
    process, pid_file, _ = _task(tmp_path, launcher, "sleep", env, "warm")
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    task = int(pid_file.read_text())
    assert task != process.pid
    process.kill()
    process.communicate()
    while _alive(task) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(task), f"task {task} outlived its launcher"


def test_a_signal_sent_to_the_launcher_reaches_the_task(zygote, tmp_path):
    launcher, env = zygote
    process, pid_file, _ = _task(tmp_path, launcher, "sleep", env, "warm")
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    code, _ = _finish(process)
    assert code == -signal.SIGTERM


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_different_start_up_environment_gets_a_cold_process(zygote, tmp_path):
    launcher, env = zygote
    other = {**env, "PYTHONHASHSEED": "123" if env.get("PYTHONHASHSEED") != "123" else "321"}
    process, pid_file, _ = _task(tmp_path, launcher, "return", other, "warm")
    code, out = _finish(process)
    assert code == 0, out[-2000:]
    assert not _forked(process, pid_file)


def test_without_a_zygote_the_launcher_runs_the_real_interpreter(zygote, tmp_path):
    launcher, env = zygote
    env.pop(SOCKET_ENV)
    process, pid_file, _ = _task(tmp_path, launcher, "raise", env, "warm")
    code, out = _finish(process)
    assert code == 1 and "ValueError: boom from the task" in out
    assert not _forked(process, pid_file)


def test_a_zygote_with_a_thread_refuses_and_tasks_start_cold(tmp_path):
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n")
    scratch = tmp_path / "run"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path[1:]])}
    with open(scratch / "report.txt", "w") as report, \
            serving_tasks(scratch, ["starts_a_thread"], env, log=report) as socket_path:
        assert socket_path is not None
        env = {**env, SOCKET_ENV: socket_path}
        deadline = time.monotonic() + 60
        while "forking is not safe" not in (scratch / "zygote.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        process, pid_file, _ = _task(tmp_path, str(scratch / "python-task"), "return", env, "warm")
        code, out = _finish(process)
    assert code == 0, out[-2000:]
    assert not _forked(process, pid_file)
    assert "Python threads running" in (scratch / "report.txt").read_text()


def test_fork_hazard_names_a_running_python_thread():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="busy-helper")
    thread.start()
    try:
        assert "busy-helper" in (fork_hazard() or "")
    finally:
        stop.set()
        thread.join()


def test_no_zygote_where_fork_is_unavailable_or_switched_off(tmp_path, monkeypatch):
    monkeypatch.setattr(kfp_zygote.sys, "platform", "darwin")
    assert "only safe on Linux" in (fork_available() or "")
    monkeypatch.undo()
    monkeypatch.setenv("KFOPS_ZYGOTE", "0")
    from io import StringIO

    report = StringIO()
    from kfp.local import subprocess_task_handler

    before = subprocess_task_handler.environment
    with serving_tasks(tmp_path, ["kfp.dsl.executor"], dict(os.environ), log=report) as socket_path:
        assert socket_path is None
        assert subprocess_task_handler.environment is before  # kfp.local runs sys.executable, as without kfops
    assert "KFOPS_ZYGOTE=0" in report.getvalue()
    assert not (tmp_path / "python-task").exists()


def test_no_task_is_forked_before_what_every_task_imports(tmp_path):
    scratch = tmp_path / "run"
    scratch.mkdir()
    env = dict(os.environ)
    with open(scratch / "report.txt", "w") as report, \
            serving_tasks(scratch, ["kfp.dsl.executor", "pandas"], env, log=report, serve_after=2) as socket_path:
        process, pid_file, _ = _task(tmp_path, str(scratch / "python-task"), "return", {**env, SOCKET_ENV: socket_path},
                                     "warm")  # asks at once, while the zygote is still importing
        code, out = _finish(process)
    assert code == 0, out[-2000:]
    assert _forked(process, pid_file)
    lines = (scratch / "report.txt").read_text().splitlines()
    pandas_in = next(i for i, line in enumerate(lines) if "preloaded pandas" in line)
    forked = next(i for i, line in enumerate(lines) if "forked task process" in line)
    assert pandas_in < forked, lines
