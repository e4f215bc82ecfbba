"""A warm parent for kfp.local's subprocess tasks: one process per task, without the cold imports.

Under kfp.local's SubprocessRunner every task of a local run is a new Python process that imports
kfp, pandas, Great Expectations, Feast, MLflow, XGBoost... again: on a 2-core machine most of
what a local run costs over the same steps in one process. A *task zygote* is a process started
with the run that imports those modules once, in the order the pipeline's tasks need them, and
forks each task's process from that warm state. Each task is still a process of its own, started
by the compiled YAML's own command (``sh -c '... python3 -m kfp.dsl.executor_main ...'``):

- kfp.local runs that command as before; the ``python3`` in it is
  :mod:`kfops.adapters.kfp_zygote_launcher` (kfp.local replaces ``python3`` with the interpreter it
  runs tasks with, and :func:`serving_tasks` gives it the launcher). The launcher sends its
  arguments, environment, working folder, umask and stdin/stdout/stderr to the zygote.
- The zygote forks a supervisor, which forks the task: ``runpy`` runs ``kfp.dsl.executor_main``
  with those arguments, as ``python3 -m`` would, in that folder with that environment and those
  standard streams. The supervisor waits for the task and sends its wait status to the launcher,
  which exits the same way (the same code, or killed by the same signal). The zygote is never the
  task's parent, so it keeps importing while tasks run.
- Everything stays in the run's process group: killing the group (``kill -9`` of a run, an OOM
  kill) takes the zygote and the tasks with it. A launcher that dies takes its task with it (the
  supervisor sees the connection close); SIGTERM, SIGHUP, SIGQUIT and SIGUSR1/2 sent to the
  launcher reach the task.
- The zygote refuses (the launcher then runs the real interpreter, cold, as without a zygote) when
  it has a second thread (fork is only safe single-threaded), when the task's environment differs
  from the zygote's in a variable read as a process starts (``PYTHON*``, ``LD_*``, thread-pool and
  locale settings), or when the command is anything but ``-m kfp.dsl.executor_main``. Without
  ``os.fork`` (not Linux) or with ``KFOPS_ZYGOTE=0`` there is no zygote at all.

Only the way a task's process starts changes: the compiled YAML, the task boundaries, the files
each task reads and writes and the Docker runner path are untouched.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

SOCKET_ENV = "KFOPS_ZYGOTE_SOCKET"
SWITCH_ENV = "KFOPS_ZYGOTE"  # "0": never start one
LAUNCHER_SOURCE = Path(__file__).with_name("kfp_zygote_launcher.py")
MODULE = "kfp.dsl.executor_main"
# Read when a process starts (interpreter flags, loader, native thread pools, locale): a task
# whose environment differs here from the zygote's gets a cold process of its own instead.
# kfp.dsl imports less with _KFP_RUNTIME=true, which the compiled command sets for the executor.
STARTUP_PREFIXES = ("PYTHON", "LD_", "OMP_", "OPENBLAS_", "MKL_", "KMP_", "GOMP_", "MALLOC_", "LC_", "LANG",
                    "_KFP_RUNTIME")
KFP_RUNTIME = {"_KFP_RUNTIME": "true"}
TASK_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
                     if hasattr(signal, name))  # all of them on Linux, the only place a zygote runs
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
MAX_SHEBANG = 250


def fork_available() -> str | None:
    """None when a zygote can run here, else why not."""
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return f"{SWITCH_ENV}=0"
    if not sys.platform.startswith("linux"):
        return f"fork after imports is only safe on Linux (this is {sys.platform})"
    if not hasattr(os, "fork") or not hasattr(socket, "send_fds") or not hasattr(socket, "AF_UNIX"):
        return "no os.fork or no Unix sockets with file descriptor passing"
    return None


def startup_environment(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith(STARTUP_PREFIXES)}


# Native threads that libraries start at import and that are safe across fork: jemalloc's
# background thread (pyarrow) and OpenBLAS's pool (numpy), which pthread_atfork handlers stop
# before a fork and start again when needed. OpenBLAS's threads carry the process's own name.
FORK_SAFE_THREADS = ("jemalloc_bg_thd",)


def fork_hazard() -> str | None:
    """None when forking this process now is safe, else the threads that make it unsafe."""
    import threading

    if threading.active_count() > 1:
        others = [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()]
        return f"Python threads running ({', '.join(others)})"
    try:
        tasks = os.listdir("/proc/self/task")
        names = [Path(f"/proc/self/task/{task}/comm").read_text().strip() for task in tasks]
    except OSError:
        return None
    own = Path("/proc/self/comm").read_text().strip()
    unknown = sorted(name for name in names if name != own and name not in FORK_SAFE_THREADS)
    if unknown:
        return f"native threads running ({', '.join(unknown)})"
    if names.count(own) > (os.cpu_count() or 1) + 1:  # the main thread and at most an OpenBLAS pool
        return f"{names.count(own) - 1} unnamed native threads running"
    return None


# -- the zygote process --------------------------------------------------------------------------


class Zygote:
    """The server side: preload, then fork a supervised task for each launcher that asks."""

    def __init__(self, listener: socket.socket, log: TextIO = sys.stderr) -> None:
        self.listener = listener  # bound and listening already: launchers queue from the run's start
        self.log = log
        self.started = time.perf_counter()
        self.parent = os.getppid()
        self.env = startup_environment(dict(os.environ))
        self.refusal: str | None = None  # once set, every request is refused with it
        self.forked = 0
        self.refused = 0

    def say(self, text: str) -> None:
        self.log.write(f"zygote: +{time.perf_counter() - self.started:.1f}s {text}\n")
        self.log.flush()

    def preload(self, entries: Sequence[str], serve_after: int = 0) -> None:
        """Import each ``module`` (or call ``module:function``), serving requests between two once
        the first ``serve_after`` are in (those every task imports: waiting for them costs a task nothing)."""
        for index, entry in enumerate(entries):
            if index >= serve_after:
                self.serve(block=False)
            if self.refusal is not None:
                return
            started = time.perf_counter()
            try:
                module_name, _, function = entry.partition(":")
                module = __import__(module_name, fromlist=["_"])
                if function:
                    getattr(module, function)()
            except Exception as err:  # a task that needs it imports it itself and fails there, as before
                self.say(f"preload {entry} failed: {type(err).__name__}: {err}")
                continue
            self.say(f"preloaded {entry} in {time.perf_counter() - started:.2f}s")
            if (hazard := fork_hazard()) is not None:
                self.refusal = f"{hazard} after preloading {entry}: forking is not safe"
                self.say(self.refusal)

    def serve_forever(self) -> None:
        while os.getppid() == self.parent:
            self.serve(block=True, timeout=1.0)

    def serve(self, block: bool, timeout: float = 1.0) -> None:
        import select

        while True:
            self.reap()
            ready, _, _ = select.select([self.listener], [], [], timeout if block else 0)
            if not ready:
                return
            conn, _ = self.listener.accept()
            with conn:
                self.handle(conn)
            if block:
                return

    def reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass

    def handle(self, conn: socket.socket) -> None:
        import struct

        try:
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        except OSError:
            return
        try:
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            try:
                work = json.loads(message)
                reason = self.refusal or self.check(work, uid, len(fds))
            except (ValueError, TypeError, AttributeError) as err:
                work, reason = {}, f"unreadable request: {err}"
            if reason is not None:
                self.refused += 1
                self.say(f"refused a task: {reason}")
                with contextlib.suppress(OSError):
                    conn.send(b"refused " + reason.encode()[:200])
                return
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            # The preloaded modules' objects leave the collector's generations: a task's collections
            # then walk its own objects only, as in a new interpreter, and leave the shared pages shared.
            gc.freeze()
            supervisor = os.fork()
            if supervisor == 0:
                supervise(conn, self.listener, work, fds)  # never returns
            self.forked += 1
            self.say(f"forked task process {supervisor} (its supervisor): {' '.join(work['argv'][-2:])}")
        finally:
            for fd in fds:
                os.close(fd)

    def check(self, work: dict[str, Any], uid: int, fds: int) -> str | None:
        if uid != os.getuid():
            return f"peer uid {uid} is not this user's"
        if fds != 3:
            return "no stdin, stdout and stderr came with the request"
        if work.get("argv", [])[:2] != ["-m", MODULE]:
            return f"only '-m {MODULE}' is forked"
        if startup_environment(work.get("env", {})) != self.env:
            return "the task's start-up environment (PYTHON*, LD_*, thread pools, locale) differs from the zygote's"
        return None


def supervise(conn: socket.socket, listener: socket.socket, work: dict[str, Any], fds: list[int]) -> None:
    """In the supervisor (a child of the zygote): fork the task, forward signals, report its end."""
    import select

    try:
        listener.close()
        for number in TASK_SIGNALS:  # signals to the group reach the task itself: it decides, this reports
            signal.signal(number, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        task = os.fork()
        if task == 0:
            conn.close()
            run_task(work, fds)  # never returns
        for fd in fds:
            os.close(fd)
        try:
            conn.send(b"pid %d" % task)
        except OSError:  # the launcher is already gone: so goes its task
            os.kill(task, signal.SIGKILL)
            os.waitpid(task, 0)
            raise
        try:
            ended: Any = os.pidfd_open(task)
        except (AttributeError, OSError):
            ended = None
        while True:
            waited, status = os.waitpid(task, os.WNOHANG)
            if waited:
                with contextlib.suppress(OSError):
                    conn.send(b"exit %d" % status)
                break
            ready, _, _ = select.select([conn] + ([ended] if ended is not None else []), [], [],
                                        None if ended is not None else 0.02)
            if conn in ready:
                message = conn.recv(64)
                if not message:  # the launcher is gone: so goes its task
                    with contextlib.suppress(OSError):
                        os.kill(task, signal.SIGKILL)
                elif message.startswith(b"signal "):
                    with contextlib.suppress(OSError, ValueError):
                        os.kill(task, int(message.split()[1]))
    finally:
        os._exit(0)


def run_task(work: dict[str, Any], fds: list[int]) -> None:
    """In the task's process: become ``python3 -m kfp.dsl.executor_main ARGS`` and exit like it."""
    code: Any = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(work["cwd"])
        os.umask(work["umask"])
        os.environ.clear()
        os.environ.update(work["env"])
        _fresh_process_state(work["cwd"])
        code = _run_module(work["argv"][1], work["argv"][2:])
    finally:
        _exit(code)


def _fresh_process_state(cwd: str) -> None:
    """Undo what the zygote's own start left that a new ``python3 -m`` would not have."""
    import logging
    import tempfile

    tempfile.tempdir = None  # from $TMPDIR again
    sys.path[0] = cwd  # python3 -m puts the working folder first
    for number in (*TASK_SIGNALS, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    root = logging.getLogger()
    for handler in list(root.handlers):  # a new interpreter's root logger has none
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    if "numpy" in sys.modules:  # the legacy global generator would be the zygote's in every task
        sys.modules["numpy"].random.seed()
    from kfops.errors import install_hint_printer

    install_hint_printer()  # a failed task's KfopsError hint, under its traceback, for `kfops run`


def _run_module(module: str, args: list[str]) -> Any:
    import runpy

    sys.argv = [module, *args]
    sys.modules.pop(module, None)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        return -signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        return 1
    return 0


def _exit(code: Any) -> None:
    """Finish the way an interpreter does (threads, atexit, streams), then leave without the zygote's cleanup."""
    import atexit
    import threading

    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]  # wait for non-daemon threads, as at exit
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    if code == -signal.SIGINT:  # an uncaught KeyboardInterrupt: die of SIGINT, as python3 does
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m kfops.adapters.kfp_zygote FD N [PRELOAD...]``: serve on the listening socket ``FD``
    (inherited from the run) until the run's process ends."""
    args = list(sys.argv[1:] if argv is None else argv)
    _die_with_parent()
    zygote = Zygote(socket.socket(fileno=int(args[0])))

    def stop(_number: int, _frame: Any) -> None:
        zygote.say(f"stopped: {zygote.forked} task(s) forked, {zygote.refused} refused (started cold)")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    zygote.say(f"pid {os.getpid()} serving on {zygote.listener.getsockname()}")
    started = time.perf_counter()
    zygote.preload(args[2:], serve_after=int(args[1]))
    zygote.say(f"preload done in {time.perf_counter() - started:.1f}s, {zygote.forked} task(s) forked meanwhile")
    zygote.serve_forever()


def _die_with_parent() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# -- the run's side -------------------------------------------------------------------------------


@contextlib.contextmanager
def serving_tasks(scratch: Path, preload: Sequence[str], env: dict[str, str],
                  log: TextIO | None = None, serve_after: int = 0) -> Iterator[str | None]:
    """For the block, kfp.local's subprocess tasks start from a zygote that preloads ``preload``.

    Yields the zygote's socket path (also put in ``env`` under ``KFOPS_ZYGOTE_SOCKET``, for the
    tasks), or None when there is none here (see :func:`fork_available`); tasks then start cold.
    ``env`` is the environment the tasks will have; tasks are forked once the first ``serve_after``
    entries of ``preload`` are imported (a task that asks earlier waits). The zygote's own lines go to
    ``<scratch>/zygote.log`` and, when the block ends, to ``log``.
    """
    reason = fork_available()
    socket_path = str(scratch / "zygote.sock")
    python = sys.executable
    if reason is None and len(socket_path) > MAX_SOCKET_PATH:
        reason = f"socket path too long: {socket_path}"
    if reason is None and len(f"#!{python} -IS") > MAX_SHEBANG:
        reason = f"interpreter path too long for a #! line: {python}"
    if reason is not None:
        if log is not None:
            log.write(f"zygote: none ({reason}): each task starts a cold interpreter\n")
        yield None
        return
    launcher = scratch / "python-task"
    launcher.write_text(f"#!{python} -IS\nREAL_PYTHON = {python!r}\n" + LAUNCHER_SOURCE.read_text())
    launcher.chmod(0o700)
    zygote_log = scratch / "zygote.log"
    env = {**env, **KFP_RUNTIME, SOCKET_ENV: socket_path}  # the zygote imports kfp as the executor does
    # Bound here, so a task that starts before the zygote has imported anything waits in its queue.
    with open(zygote_log, "w") as out, socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(socket_path)
        listener.listen(16)
        process = subprocess.Popen(
            [python, "-c", "from kfops.adapters.kfp_zygote import main; main()", str(listener.fileno()),
             str(serve_after), *preload],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=scratch,
            pass_fds=[listener.fileno()],
        )
    try:
        with _tasks_launched_by(str(launcher)):
            yield socket_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not None:
            with contextlib.suppress(OSError):
                log.write(zygote_log.read_text())


@contextlib.contextmanager
def _tasks_launched_by(launcher: str) -> Iterator[None]:
    """kfp.local's SubprocessRunner (``use_venv=False``, no pip install) runs ``launcher`` as ``python3``."""
    from kfp.local import subprocess_task_handler as handler

    original = handler.environment

    @contextlib.contextmanager
    def environment(use_venv: bool, runner_config: Any = None, has_pip_install: bool = False) -> Iterator[str]:
        if use_venv or has_pip_install:
            with original(use_venv, runner_config=runner_config, has_pip_install=has_pip_install) as python:
                yield python
        else:
            yield launcher

    handler.environment = environment
    try:
        yield
    finally:
        handler.environment = original


if __name__ == "__main__":
    main()
