"""Several server processes on one port (``serving.workers``): a supervisor and forked workers.

The supervisor forks the workers first thing, before the model, the online lookup or any thread
exists, so each worker loads its own (nothing is shared after the fork but imported code). Each
binds the port with ``SO_REUSEPORT`` and the kernel spreads connections among them: one Python
event loop per core instead of one for the machine.

The supervisor serves nothing. It forwards SIGTERM, SIGINT, SIGQUIT and SIGHUP (reload every
worker from its source) to every worker; when one worker exits on its own it stops the others
(SIGTERM, then SIGKILL for any still there after the grace period and 20 s) and exits with an
error, so whatever started the server (``kfops serve``, a pod) sees it fail.
A worker whose supervisor dies is sent SIGTERM by the kernel (Linux ``PR_SET_PDEATHSIG``).

Each worker has its own ``/metrics`` (the worker that answers the scrape) and writes its own
inference-log files (their names carry the pid). The HTTP reload route would swap the model in
one worker only, so with more than one worker it answers 409; SIGHUP reloads them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

from kfops.errors import ServingError

log = logging.getLogger(__name__)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
EARLY_RELOAD = threading.Event()  # a worker got SIGHUP before its server could handle it


def fork_workers(count: int, stop_timeout_s: float = 30.0) -> int | None:
    """Fork ``count`` workers. In a worker: its index (go on and serve). In the supervisor: wait
    for them all and return None, or raise ServingError when one exited on its own (the others
    get SIGTERM, and SIGKILL if they are still there ``stop_timeout_s`` later)."""
    supervisor = os.getpid()
    children: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            _die_with(supervisor)
            # A SIGHUP before the server installs its handler would kill this worker (the default
            # action): keep it for the server to act on once it has started.
            signal.signal(signal.SIGHUP, lambda *_: EARLY_RELOAD.set())
            return index
        children[pid] = index
    log.info("serving with %d worker processes: %s", count, ", ".join(str(p) for p in children))
    stopping = False

    def forward(signum: int, _frame) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        # Ctrl-C reaches the workers from the terminal already; a second SIGINT would make uvicorn
        # skip its graceful shutdown (and the inference log's last flush), so they get SIGTERM.
        forwarded = signal.SIGTERM if signum == signal.SIGINT else signum
        for child in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, forwarded)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    failure = None
    kill_at = None
    while children:
        try:
            pid, status = _wait_any(kill_at)
        except ChildProcessError:
            break
        if pid == 0:  # the deadline passed: a worker that ignores SIGTERM must not keep the server up
            log.error("workers %s did not stop within %.0fs of SIGTERM; killing them",
                      ", ".join(str(p) for p in children), stop_timeout_s)
            for child in list(children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            kill_at = None
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if not stopping:  # a worker died by itself: the server is not whole any more
            failure = f"worker {index} (pid {pid}) exited with {code}; the other workers were stopped"
            log.error("%s", failure)
            forward(signal.SIGTERM, None)
            kill_at = time.monotonic() + stop_timeout_s
    if failure is not None:
        raise ServingError(failure, hint="see the worker's log lines above (each line carries its pid)")
    return None


def _wait_any(deadline: float | None) -> tuple[int, int]:
    """``os.wait()``, or (0, 0) once ``deadline`` (monotonic) has passed with no child exiting."""
    if deadline is None:
        return os.wait()
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid or time.monotonic() >= deadline:
            return pid, status
        time.sleep(0.05)


def _die_with(supervisor: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (Linux); exit if it is gone already."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != supervisor:
        os._exit(1)
