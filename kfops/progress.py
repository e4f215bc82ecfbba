"""Progress of long steps: a rich bar on a terminal, plain log lines anywhere else.

::

    from kfops.progress import progress, track

    with progress("backtest", total=len(months), unit="month", every=1) as bar:
        for month in months:
            ...
            bar.advance(message=f"{month}: AUC {auc:.4f}")

    for epoch in track(range(epochs), "torch: training", unit="epoch"):
        ...

The mode comes from ``KFOPS_PROGRESS`` (``rich``, ``plain``, ``off``; unset or ``auto``: rich
when the stream is a terminal and ``CI`` is unset, plain otherwise), so CI and KFP pods get
plain lines.

* **rich**: a live bar on the stream; every ``every`` steps the step's message is printed above
  it, so the record stays on screen when the bar is gone.
* **plain**: one line every ``every`` steps (default: every 10% of ``total``) and one at the end
  if the last step was not reported, with counts, percent, elapsed time and what is left. A line
  goes to the ``kfops.progress`` logger when logging shows INFO there (as in a KFP pod, whose
  executor configures logging), else straight to the stream (as for the CLI).
* **off**: nothing.

A ``progress`` inside another one (training inside a backtest month) shares the outer display:
under rich it is a second bar that goes away when done; under plain it logs at DEBUG only, so
the outer lines are not drowned.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from kfops.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

ENV = "KFOPS_PROGRESS"
# A plain progress line (see Progress.line), wherever it sits in a log line: "name: 3/10 epochs (30%, ..."
PLAIN_LINE = re.compile(r"[\w][\w .:/-]*?: \d+(?:/\d+)? [a-z]+ \((?:\d+%, )?\d[\d.hms]*[,)].*$")
Mode = Literal["rich", "plain", "off"]
MODES: tuple[Mode, ...] = ("rich", "plain", "off")
DEFAULT_LINES = 10  # plain mode with a known total: about one line per 10%
T = TypeVar("T")

log = logging.getLogger("kfops.progress")
_active: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("kfops_progress", default=None)


def resolve_mode(mode: str | None = None, stream: IO[str] | None = None) -> Mode:
    """``mode`` if given, else ``$KFOPS_PROGRESS``, else rich on a terminal outside CI, else plain."""
    chosen = (mode or os.environ.get(ENV, "")).strip().lower()
    if chosen in MODES:
        return chosen  # type: ignore[return-value]
    if chosen not in ("", "auto"):
        raise ConfigError(f"{ENV}={chosen!r} is not a progress mode",
                          hint=f"set {ENV} to one of: auto, {', '.join(MODES)}")
    stream = stream if stream is not None else sys.stderr
    try:
        terminal = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        terminal = False
    if terminal and not os.environ.get("CI") and os.environ.get("TERM") != "dumb":
        return "rich"
    return "plain"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """A running report of one long step; get one from :func:`progress`."""

    def __init__(self, description: str, total: int | None, unit: str, every: int | None, completed: int,
                 mode: Mode, stream: IO[str] | None, logger: logging.Logger | None, nested: bool) -> None:
        if total is not None and total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = completed
        self.mode = mode
        self.nested = nested
        self.every = every if every is not None else (
            max(1, math.ceil(total / DEFAULT_LINES)) if total else 1)
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self._start_count = completed
        self._stream = stream
        self._logger = logger
        self._started = time.perf_counter()
        self._reported = completed  # the count of the last step that was reported
        self._rich: RichProgress | None = None
        self._task: TaskID | None = None

    # -- what callers use

    def advance(self, steps: int = 1, message: str | None = None) -> None:
        """``steps`` more done; ``message`` says what the last one gave (reported on the cadence)."""
        before = self.completed
        self.completed += steps
        crossed = self.completed // self.every > before // self.every or self.completed == self.total
        if self.mode == "rich" and self._rich is not None and self._task is not None:
            self._rich.update(self._task, advance=steps, status=message or "")
            if crossed and message and not self.nested:
                self._rich.console.print(f"  {message}", highlight=False, markup=False)
        elif self.mode == "plain" and crossed:
            self._emit(self.line(message))
        if crossed:
            self._reported = self.completed

    def finish(self, message: str) -> None:
        """Say how the step ended (e.g. early stopping), at whatever count it reached."""
        if self.mode == "rich" and self._rich is not None and self._task is not None:
            self._rich.update(self._task, status=message)
        elif self.mode == "plain":
            self._emit(self.line(message))
        self._reported = self.completed

    def status(self, text: str) -> None:
        """Replace the short status shown at the end of the bar (rich only; plain shows nothing)."""
        if self.mode == "rich" and self._rich is not None and self._task is not None:
            self._rich.update(self._task, status=text)

    def note(self, text: str) -> None:
        """A line of its own: above the bar (rich), a log line (plain)."""
        if self.mode == "rich" and self._rich is not None:
            self._rich.console.print(text, highlight=False, markup=False)
        elif self.mode == "plain":
            self._emit(text)

    def line(self, message: str | None = None) -> str:
        """The plain line for the current count: counts, percent, elapsed and estimated time left."""
        unit = self.unit if (self.completed if self.total is None else self.total) == 1 else f"{self.unit}s"
        count = f"{self.completed}/{self.total}" if self.total is not None else str(self.completed)
        elapsed = time.perf_counter() - self._started
        timing = [_duration(elapsed)]
        if self.total:
            timing.insert(0, f"{self.completed / self.total:.0%}")
            done_here = self.completed - self._start_count
            if done_here > 0 and self.completed < self.total:
                timing.append(f"~{_duration(elapsed / done_here * (self.total - self.completed))} left")
        text = f"{self.description}: {count} {unit} ({', '.join(timing)})"
        return f"{text} {message}" if message else text

    # -- plumbing

    def _emit(self, text: str) -> None:
        level = logging.DEBUG if self.nested else logging.INFO
        if self._logger is not None and self._logger.isEnabledFor(level) and self._logger.hasHandlers():
            self._logger.log(level, "%s", text)
        elif not self.nested:
            stream = self._stream if self._stream is not None else sys.stderr
            stream.write(text + "\n")
            stream.flush()

    def _finish(self) -> None:
        if self.mode == "plain" and self._reported != self.completed:
            self._emit(self.line("done"))


@contextlib.contextmanager
def progress(
    description: str,
    total: int | None = None,
    *,
    unit: str = "step",
    every: int | None = None,
    completed: int = 0,
    mode: str | None = None,
    stream: IO[str] | None = None,
    console: Console | None = None,
    logger: logging.Logger | None = None,
    use_logging: bool = True,
) -> Iterator[Progress]:
    """Report the progress of a long step; see the module docstring.

    ``total`` steps (None when unknown), of which ``completed`` are already done (a resumed run);
    ``every``: report every this many steps; ``mode``: rich, plain or off (default: from the
    environment and ``stream``); ``stream``: where the bar or the plain lines go when not logged
    (default stderr); ``console``: a rich Console to draw on (tests pass one writing to a file);
    ``logger``: where plain lines are logged (default ``kfops.progress``); ``use_logging=False``:
    plain lines always go to the stream (a display of other processes' logs must not feed itself).
    """
    outer = _active.get()
    logger = (logger or log) if use_logging else None
    if outer is not None:  # share the outer display (or its silence)
        chosen = outer.mode
    else:
        chosen = resolve_mode(mode, stream if stream is not None else (console.file if console else None))
    reporter = Progress(description, total, unit, every, completed, chosen, stream, logger,
                        nested=outer is not None)
    token = _active.set(reporter)
    try:
        if chosen != "rich":
            yield reporter
            reporter._finish()
            return
        if outer is not None and outer._rich is not None:
            reporter._rich = outer._rich
            reporter._task = outer._rich.add_task(description, total=total, completed=completed, unit=f"{unit}s",
                                                  status="")
            try:
                yield reporter
            finally:
                outer._rich.remove_task(reporter._task)
            return
        with _rich_progress(console, stream) as bar:
            reporter._rich = bar
            reporter._task = bar.add_task(description, total=total, completed=completed, unit=f"{unit}s", status="")
            yield reporter
    finally:
        _active.reset(token)


@contextlib.contextmanager
def _rich_progress(console: Console | None, stream: IO[str] | None) -> Iterator[RichProgress]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    console = console or Console(file=stream if stream is not None else sys.stderr)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}", markup=False))
    with RichProgress(*columns, console=console) as bar:
        yield bar


def track(iterable: Iterable[T], description: str, total: int | None = None, **options: Any) -> Iterator[T]:
    """Yield from ``iterable``, one step per item (``total`` defaults to its ``len``)."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with progress(description, total, **options) as bar:
        for item in iterable:
            yield item
            bar.advance()
