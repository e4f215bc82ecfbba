"""Cron expressions, checked once for both schedulers that read them.

`kfops schedule --local` reads a cron with croniter; a KFP recurring run with robfig/cron, which
wants six fields, seconds first (:func:`to_kfp_cron`). :func:`check_cron` accepts what both read
the same way and refuses, naming the cron, what either would refuse or misread: a wrong number of
fields, a value out of range, croniter's extensions robfig/cron lacks (``L``, ``W``, ``#``, day of
week 7), and a date that never comes (``0 0 30 2 *``), which croniter only finds out at the first tick.
Times are UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from kfops.errors import ConfigError

if TYPE_CHECKING:
    from croniter import croniter

CRON_HINT = ("5 fields 'min hour dom month dow' (e.g. '0 3 * * *'), or 6 with seconds first ('*/30 * * * * *'), "
             "in UTC; or one of @hourly, @daily, @weekly, @monthly, @yearly")
# What croniter and robfig/cron both know.
DESCRIPTORS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_CRONITER_ONLY = re.compile(r"^(\d*L|L?W|\d+W)$", re.IGNORECASE)  # last day, nearest weekday


def _refuse(expression: str, problem: str) -> ConfigError:
    return ConfigError(f"invalid cron '{expression}': {problem}", hint=CRON_HINT)


def check_cron(expression: str, now: dt.datetime | None = None) -> str:
    """``expression`` with single spaces (descriptors in lower case) if both schedulers read it
    and it fires at some time after ``now``; else a :class:`ConfigError` naming it."""
    from croniter import CroniterBadDateError

    text = " ".join(expression.split())
    if text.startswith("@"):
        text = text.lower()
        if text not in DESCRIPTORS:
            raise _refuse(expression, f"unknown descriptor (known: {', '.join(sorted(DESCRIPTORS))})")
    else:
        fields = text.split(" ")
        if len(fields) not in (5, 6):
            raise _refuse(expression, f"{len(fields)} fields; a cron has 5 fields (min hour dom month dow) or 6 (seconds first)")
        problem = _kfp_unreadable(fields[-5:])
        if problem:
            raise _refuse(expression, problem)
    schedule = cron_iterator(text, now or dt.datetime.now(dt.UTC))
    try:
        schedule.get_next()
    except CroniterBadDateError as err:
        raise _refuse(expression, "it never fires (no such date, e.g. February 30 or April 31)") from err
    return text


def cron_iterator(expression: str, start: dt.datetime) -> croniter:
    """croniter over ``expression`` from ``start``: six fields put seconds first (robfig/cron's order)."""
    from croniter import croniter

    six = not expression.startswith("@") and len(expression.split()) == 6
    try:
        return croniter(expression, start, ret_type=dt.datetime, second_at_beginning=six)
    except (ValueError, KeyError) as err:
        raise _refuse(expression, str(err)) from err


def to_kfp_cron(expression: str) -> str:
    """KFP's scheduler (robfig/cron) wants 6 fields, seconds first: prepend ``0`` to a 5-field cron.

    Checked first (:func:`check_cron`); descriptors and 6-field expressions pass through.
    """
    text = check_cron(expression)
    return text if text.startswith("@") or len(text.split(" ")) == 6 else "0 " + text


def _kfp_unreadable(fields: list[str]) -> str | None:
    """What robfig/cron would refuse in ``min hour dom month dow`` although croniter reads it."""
    if any("#" in field for field in fields):
        return "'#' (nth weekday of the month) is croniter's; KFP's scheduler does not read it"
    for field in fields:
        for part in re.split(r"[,/-]", field):
            if _CRONITER_ONLY.match(part):
                return f"'{part}' (last day, nearest weekday) is croniter's; KFP's scheduler does not read it"
    for part in fields[-1].split(","):
        if any(int(number) > 6 for number in re.findall(r"\d+", part.split("/")[0])):
            return "day of week is 0-6 (or SUN-SAT) for KFP's scheduler: write 0, not 7, for Sunday"
    return None
