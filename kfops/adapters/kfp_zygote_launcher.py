"""The ``python3`` a kfp.local subprocess task runs when a task zygote serves the run.

kfops.adapters.kfp_zygote writes this file, after a ``#!<python> -IS`` line and a ``REAL_PYTHON``
line, into the run's scratch folder, and kfp.local puts its path where the compiled command says
``python3`` (it put ``sys.executable`` there before). It imports nothing of kfops (it starts in a
few milliseconds with ``-I -S``), and it is a process of the task like ``python3`` was: the task's
shell waits for it, and its exit status is the task's.

``python3 -m kfp.dsl.executor_main ARGS`` is sent to the zygote named by ``$KFOPS_ZYGOTE_SOCKET``
with this process's stdin, stdout and stderr, environment, working folder and umask; the zygote
forks a process that runs exactly that, and this process exits as that one did (same code, or
killed by the same signal). Anything else, no zygote, or a zygote that refuses: this process
becomes the real interpreter with the same arguments (``exec``), as before.
"""

import contextlib
import os
import signal
import socket
import sys

REAL_PYTHON = globals().get("REAL_PYTHON") or sys.executable  # the generated file sets it first
SOCKET_ENV = "KFOPS_ZYGOTE_SOCKET"
MODULE = "kfp.dsl.executor_main"
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def run_real_python():
    os.execv(REAL_PYTHON, [REAL_PYTHON, *sys.argv[1:]])


def request(args):
    import json

    umask = os.umask(0o022)
    os.umask(umask)
    return json.dumps({"argv": args, "env": dict(os.environ), "cwd": os.getcwd(), "umask": umask}).encode()


def exit_like(status):
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        os._exit(128 + number)  # a signal this process cannot die of
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main():
    path, args = os.environ.get(SOCKET_ENV), sys.argv[1:]
    if not path or args[:2] != ["-m", MODULE]:
        run_real_python()  # does not return (exec)
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(path)
        socket.send_fds(conn, [request(args)], [0, 1, 2])
        reply = conn.recv(256)
    except OSError:
        reply = b""
    if not reply.startswith(b"pid "):
        conn.close()
        run_real_python()  # refused, or no zygote: the task starts cold, as without one
    pid = int(reply.split()[1])

    def forward(number, _frame):
        with contextlib.suppress(OSError):
            conn.send(b"signal %d" % number)

    for number in FORWARDED:
        signal.signal(number, forward)
    # Ctrl-C reaches the whole process group, the task's process included: the task decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        message = conn.recv(256)
        if message.startswith(b"exit "):
            exit_like(int(message.split()[1]))
        if not message:  # the task's supervisor is gone without a word: so is the task
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            sys.stderr.write(f"kfops task zygote: the supervisor of task process {pid} died\n")
            os._exit(1)


if __name__ == "__main__":
    main()
