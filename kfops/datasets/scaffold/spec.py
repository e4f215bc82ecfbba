"""What `kfops init` is told: the raw tables, the entity keys, the label. Parsed and checked here.

``--table PATH[:timestamp=COLUMN][,name=NAME]``: a parquet or CSV file; its name is the file's stem
unless given; ``timestamp`` is the column saying when a row became known (none: static facts).

``--label`` takes one of two forms:

- ``NAME = TABLE [where CONDITION] within DURATION [on KEY[,KEY]]``: a label computed from a later
  table: 1 when a row of TABLE (matching CONDITION, a pandas query) with the same KEY comes after
  the event and at most DURATION after it (``30d``, ``12h``, ``2w``, ``90min``). KEY defaults to
  the columns the events table and TABLE share (not timestamps).
- ``NAME = CONDITION``: a condition on the events table's own columns (a pandas expression such as
  ``delay_min > 15``); the columns it reads are outcomes, refused as features.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kfops.config import is_uri
from kfops.datasets import TABLE_SUFFIXES
from kfops.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LATER = re.compile(
    r"^(?P<table>[A-Za-z_]\w*)(?:\s+where\s+(?P<condition>.+?))?\s+within\s+(?P<amount>\d+)\s*(?P<unit>min|h|d|w)"
    r"(?:\s+on\s+(?P<on>[\w\s,]+))?$",
    re.IGNORECASE,
)
_UNITS = {"min": dt.timedelta(minutes=1), "h": dt.timedelta(hours=1), "d": dt.timedelta(days=1),
          "w": dt.timedelta(weeks=1)}


@dataclass(frozen=True)
class TableSpec:
    name: str
    path: Path | str  # a file here, or an object-store URI (s3://bucket/key)
    timestamp: str | None = None

    @property
    def file_name(self) -> str:
        return PurePosixPath(str(self.path)).name


@dataclass(frozen=True)
class LabelSpec:
    """The label: from a later table (``table`` set) or a condition on the events table."""

    name: str
    text: str
    table: str | None = None
    condition: str | None = None
    horizon: dt.timedelta | None = None
    on: tuple[str, ...] = ()

    @property
    def horizon_text(self) -> str:
        return _duration_text(self.horizon) if self.horizon else ""


@dataclass
class InitSpec:
    """Everything `kfops init` needs, checked against the tables' columns by the profiler."""

    tables: list[TableSpec]
    entities: list[str]
    label: LabelSpec
    events: str | None = None
    row_id: str | None = None
    forbid: list[str] = field(default_factory=list)
    project: str | None = None
    dayfirst: bool | None = None
    """How to read dates such as 03/04/2024 in every table: None reads them only where no value is ambiguous."""
    http_port: int = 8080
    """The local model server's port (serving.http_port): another project's server may hold 8080."""


def table_name(path: Path | str) -> str:
    name = PurePosixPath(str(path)).name
    for suffix in TABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    raise ConfigError(f"table file {path} is neither parquet nor CSV", hint=f"use one of {', '.join(TABLE_SUFFIXES)}")


def parse_table(text: str) -> TableSpec:
    """``orders.parquet:timestamp=ordered_at`` (also ``,name=orders``) into a TableSpec."""
    path_text, options = text, ""
    # The options follow the last ':' that is followed by key=value pairs (a Windows drive has none).
    match = re.match(r"^(?P<path>.+?):(?P<options>(?:\w+=[^,:]*)(?:,\w+=[^,:]*)*)$", text)
    # 'stores.csv,name=shops': the usage's [,name=NAME] written without a timestamp before it.
    match = match or re.match(r"^(?P<path>.+?\.(?:parquet|csv(?:\.gz|\.zip)?)),(?P<options>(?:timestamp|name)=[^,:]*"
                              r"(?:,\w+=[^,:]*)*)$", text, re.IGNORECASE)
    if match:
        path_text, options = match.group("path"), match.group("options")
    values: dict[str, str] = {}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key not in ("timestamp", "name"):
            raise ConfigError(f"--table {text}: unknown option '{key}'", hint="options are timestamp=COLUMN and name=NAME")
        values[key] = value.strip()
    path: Path | str = path_text if is_uri(path_text) else Path(path_text).expanduser()
    name = values.get("name") or table_name(path)
    if not _NAME.match(name):
        raise ConfigError(f"--table {text}: table name '{name}' is not an identifier", hint="give name=NAME")
    return TableSpec(name=name, path=path, timestamp=values.get("timestamp") or None)


def parse_label(text: str) -> LabelSpec:
    name, sep, expression = text.partition("=")
    name, expression = name.strip(), expression.strip()
    if not sep or not _NAME.match(name) or not expression or expression.startswith("="):
        raise ConfigError(
            f"--label '{text}' must look like 'NAME = TABLE [where CONDITION] within DURATION [on KEY]' "
            "or 'NAME = CONDITION'",
            hint="e.g. --label 'returned = returns within 30d on order_id' or --label 'late = delay_min > 15'",
        )
    later = _LATER.match(expression)
    if later is None:
        return LabelSpec(name=name, text=text, condition=expression)
    horizon = int(later.group("amount")) * _UNITS[later.group("unit").lower()]
    if horizon <= dt.timedelta(0):
        raise ConfigError(f"--label '{text}': the horizon must be longer than zero")
    on = tuple(k.strip() for k in (later.group("on") or "").split(",") if k.strip())
    return LabelSpec(name=name, text=text, table=later.group("table"), condition=later.group("condition"),
                     horizon=horizon, on=on)


def _duration_text(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
