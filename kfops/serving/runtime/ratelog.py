"""Log a recurring failure once per interval, with how many times it happened in between.

A dead dependency fails every request; a traceback per request (thousands a second) floods the
log and costs more CPU than the requests. :class:`RateLimitedLog` writes the first occurrence of
each kind at once, then at most one line per ``interval_s`` carrying the count of the ones it held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (when last written, held back since)

    def warning(self, kind: str, message: str, *, exc_info: bool = False) -> bool:
        """Write ``message`` unless ``kind`` was written less than an interval ago; True if written.
        ``exc_info``: with the traceback of the exception being handled (once per interval, then)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last[0] < self.interval_s:
                self._last[kind] = (last[0], last[1] + 1)
                return False
            held = last[1] if last is not None else 0
            self._last[kind] = (now, 0)
        if held:
            message = f"{message} ({held} more like it in the last {self.interval_s:g}s not logged)"
        self._logger.warning("%s", message, exc_info=exc_info)
        return True
