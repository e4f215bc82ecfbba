"""One process-wide SQLite ``timestamp`` converter that both Feast and IPython can live with.

``sqlite3.register_converter`` is global to the process, and two libraries kfops loads register
incompatible ones: Feast's SQLite online store stores Unix epochs and parses them with
``datetime.fromtimestamp(int(val))``; IPython's history (imported by Evidently's report) stores
ISO strings and parses with ``datetime.fromisoformat``. Whichever is imported last breaks the
other ("Invalid isoformat string: '1357812000'"). This converter reads both encodings, and the
Feast and Evidently adapters install it right after importing their library.
"""

from __future__ import annotations

import datetime as dt
import sqlite3


def parse_sqlite_timestamp(value: bytes) -> dt.datetime:
    """An epoch written by Feast (naive local time, as Feast's own converter returns) or an
    ISO 8601 string written by IPython and sqlite3's default adapter."""
    text = value.decode()
    try:
        return dt.datetime.fromtimestamp(int(text))
    except ValueError:
        return dt.datetime.fromisoformat(text)


def install() -> None:
    """Make :func:`parse_sqlite_timestamp` the process's ``timestamp`` converter (idempotent)."""
    sqlite3.register_converter("timestamp", parse_sqlite_timestamp)
