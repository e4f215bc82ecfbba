"""A signal that raises KeyboardInterrupt for a block, so the block's cleanup runs as on Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def raising_interrupt(number: int, received: list[int] | None = None) -> Iterator[None]:
    """For the block, signal ``number`` raises KeyboardInterrupt (and is noted in ``received``),
    whatever handler the process had (a background job starts ignoring SIGINT). Only the main
    thread can set a handler: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, _frame: Any) -> None:
        if received is not None:
            received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(number, interrupted)
    try:
        yield
    finally:
        signal.signal(number, previous)
