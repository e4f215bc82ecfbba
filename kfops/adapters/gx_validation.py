"""Data contracts: Great Expectations suites run against the raw tables and the training set.

Each table's contract is a reviewable JSON file, ``<validation.suites_dir>/<table>.json``, in GE's
suite format. Bounds that change from run to run are GE suite parameters
(``{"$PARAMETER": "window_start"}``), resolved here from the config and the previous run's stats:

- ``window_start`` / ``window_end``: UTC instants of the local midnights that bound
  dataset.start..dataset.end in ``validation.window_timezone`` (end exclusive).
- ``context_start`` / ``context_end``: the window widened to whole UTC days, plus
  ``meta.kfops.context_days`` either side (tables such as weather that are joined as of an
  earlier time).
- ``fresh_after``: window_end minus ``meta.kfops.max_staleness_hours``; the newest row must be
  newer than this.
- ``min_rows`` / ``max_rows``: volume. Without a previous run, at least the suite's minimum
  (``meta.kfops.volume``); with one, rows per day within ``validation.volume_band`` of it.
- ``label_rate_min`` / ``label_rate_max``: ``validation.label_rate_band``.

An expectation with ``"meta": {"when_column_present": true}`` is skipped when its column is
absent, so one suite fits the entity frame with or without joined features.

Great Expectations is imported lazily; one ephemeral context is shared by every call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from kfops.core.files import json_safe
from kfops.core.tables import read_csv, read_parquet
from kfops.errors import ConfigError, DataError, ValidationFailed

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig

TRAINING_SET = "training_set"
ABSENT_TABLE = "expect_table_to_be_present"  # kfops's own check: a listed table was not produced
_ORDER_KEY = "kfops_order"
_WHEN_PRESENT_KEY = "when_column_present"
# Keys of an expectation's kwargs that say where it looks, not what it expects.
_DOMAIN_KWARGS = ("batch_id", "column", "column_list", "column_A", "column_B", "result_format")


# --- suite metadata -------------------------------------------------------------------------


class _VolumeMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_day: Literal["window", "context"] | None = Field(
        None, description="Normalise rows by the days of the window (or of the context span); none: by run."
    )
    min_rows_per_day: float | None = Field(None, ge=0)
    min_rows: int | None = Field(None, ge=0)


class SuiteMeta(BaseModel):
    """The ``meta.kfops`` block of a suite file: what GE itself has no place for."""

    model_config = ConfigDict(extra="forbid")

    volume: _VolumeMeta = Field(default_factory=_VolumeMeta)
    context_days: int = Field(0, ge=0, description="Days either side of the window a context table spans.")
    max_staleness_hours: float | None = Field(
        None, ge=0, description="The newest row may be this much older than the window end; none: anywhere in it."
    )


@dataclass(frozen=True)
class Suite:
    """A suite file, checked: its expectations as plain dicts (GE's JSON form) and kfops metadata."""

    name: str
    path: Path
    expectations: tuple[dict, ...]
    meta: SuiteMeta

    def datetime_columns(self) -> list[str]:
        """Columns the suite types as timestamps (so a CSV reader knows what to parse)."""
        return [
            e["kwargs"]["column"]
            for e in self.expectations
            if e["type"] == "expect_column_type_to_be" and str(e["kwargs"].get("type_", "")).startswith("datetime64")
        ]

    def text_columns(self) -> list[str]:
        """Columns the suite types as strings: a CSV reader keeps their text ('02134' is not 2134)."""
        return [e["kwargs"]["column"] for e in self.expectations
                if e["type"] == "expect_column_type_to_be" and e["kwargs"].get("type_") in ("object", "str", "string")]


def suite_path(cfg: KfopsConfig, table: str) -> Path:
    return Path(cfg.validation.suites_dir) / f"{table}.json"


def load_suite(path: Path) -> Suite:
    """Read and check a suite file; any expectation GE cannot build is a ConfigError (GE would drop it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"no expectation suite at {path}",
            hint="create it (copy one from expectations/) or remove the table from validation.tables",
        )
    stat = path.stat()
    return _load_suite_cached(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _load_suite_cached(path: Path, _mtime_ns: int, _size: int) -> Suite:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"expectation suite {path} is not readable JSON: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("expectations"), list):
        raise ConfigError(f"expectation suite {path} needs a top-level object with an 'expectations' list")
    try:
        meta = SuiteMeta.model_validate((raw.get("meta") or {}).get("kfops") or {})
    except PydanticValidationError as err:
        raise ConfigError(f"expectation suite {path}: bad meta.kfops block: {err}") from err
    _register_kfops_expectations()
    from great_expectations.exceptions import GreatExpectationsError
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    expectations = []
    for index, item in enumerate(raw["expectations"]):
        if not isinstance(item, dict) or "type" not in item:
            raise ConfigError(f"expectation suite {path}: expectation #{index} needs a 'type'")
        # Keep GE's optional keys (notes, description, severity); kfops owns kwargs/meta copies.
        entry = {**item, "kwargs": dict(item.get("kwargs") or {}), "meta": dict(item.get("meta") or {})}
        try:
            ExpectationConfiguration(**entry).to_domain_obj()
        except (GreatExpectationsError, TypeError, ValueError) as err:  # pydantic.v1 errors are ValueErrors
            raise ConfigError(f"expectation suite {path}: expectation #{index} ({entry['type']}) is invalid: {err}") from err
        entry["meta"][_ORDER_KEY] = index
        expectations.append(entry)
    return Suite(name=str(raw.get("name") or path.stem), path=path, expectations=tuple(expectations), meta=meta)


# --- Great Expectations plumbing ------------------------------------------------------------


@functools.cache
def _register_kfops_expectations() -> None:
    """Define (and so register with GE) the one expectation GE lacks: columns that must be absent."""
    from great_expectations.expectations.expectation import BatchExpectation

    class ExpectTableColumnsToNotContain(BatchExpectation):
        """Expect none of ``column_set`` among the table's columns (leakage, retired columns)."""

        column_set: list[str]

        metric_dependencies: ClassVar[tuple[str, ...]] = ("table.columns",)
        success_keys: ClassVar[tuple[str, ...]] = ("column_set",)
        args_keys: ClassVar[tuple[str, ...]] = ("column_set",)

        def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine=None) -> dict:
            present = sorted(set(metrics["table.columns"]) & set(self.column_set))
            return {"success": not present, "result": {"observed_value": present}}


@functools.cache
def _datasource():
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    _register_kfops_expectations()
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    return context.data_sources.add_pandas("kfops")


def _batch_definition(table: str):
    source = _datasource()
    try:
        asset = source.get_asset(table)
    except LookupError:
        asset = source.add_dataframe_asset(table)
        return asset.add_batch_definition_whole_dataframe("whole")
    return asset.get_batch_definition("whole")


# --- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    start: dt.date
    end: dt.date
    timezone: str

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def bounds(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        import pandas as pd

        def midnight(day: dt.date) -> pd.Timestamp:
            # Some zones skip or repeat midnight on a DST change: take the first instant of the day.
            local = pd.Timestamp(day).tz_localize(self.timezone, nonexistent="shift_forward", ambiguous=True)
            return local.tz_convert("UTC")

        return midnight(self.start), midnight(self.end + dt.timedelta(days=1))

    def to_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "days": self.days, "timezone": self.timezone}


def window_of(cfg: KfopsConfig) -> Window:
    start, end = cfg.window
    return Window(start, end, cfg.validation.window_timezone)


def _volume_days(meta: SuiteMeta, window: Window) -> int | None:
    if meta.volume.per_day == "window":
        return window.days
    if meta.volume.per_day == "context":
        return window.days + 2 * meta.context_days
    return None


def suite_parameters(
    suite: Suite, window: Window, cfg: KfopsConfig, previous_table: dict | None = None
) -> dict[str, Any]:
    """Values for every ``$PARAMETER`` the suites use, for one table of one run."""
    import pandas as pd

    window_start, window_end = window.bounds()
    day = pd.Timedelta(days=1)
    context_start = window_start.floor("D") - suite.meta.context_days * day
    context_end = window_end.ceil("D") + suite.meta.context_days * day
    staleness = suite.meta.max_staleness_hours
    fresh_after = window_start if staleness is None else max(window_start, window_end - pd.Timedelta(hours=staleness))
    min_rows, max_rows = _row_bounds(suite.meta, window, cfg.validation.volume_band, previous_table)
    label_low, label_high = cfg.validation.label_rate_band
    return {
        "window_start": window_start,
        "window_end": window_end,
        "context_start": context_start,
        "context_end": context_end,
        "fresh_after": fresh_after,
        "min_rows": min_rows,
        "max_rows": max_rows,
        "label_rate_min": label_low,
        "label_rate_max": label_high,
    }


def _row_bounds(meta: SuiteMeta, window: Window, band: float, previous: dict | None) -> tuple[int, int | None]:
    days = _volume_days(meta, window)
    if days is not None:
        floor = (meta.volume.min_rows_per_day or 0) * days
    else:
        floor = meta.volume.min_rows or 0
    min_rows = max(1, math.ceil(floor))  # an empty table never passes
    if not previous:
        return min_rows, None
    if days is not None and previous.get("rows_per_day"):
        expected = float(previous["rows_per_day"]) * days
    elif days is None and previous.get("rows"):
        expected = float(previous["rows"])
    else:
        return min_rows, None
    return max(min_rows, math.floor(expected * (1 - band))), math.ceil(expected * (1 + band))


def _previous_tables(previous: Any) -> dict[str, dict]:
    """Per-table stats of the previous run, from a ValidationResult, its JSON summary, or its stats."""
    if previous is None:
        return {}
    if isinstance(previous, ValidationResult):
        previous = previous.stats
    if not isinstance(previous, dict):
        raise DataError(f"previous validation stats must be a dict, got {type(previous).__name__}")
    if "stats" in previous and isinstance(previous["stats"], dict):
        previous = previous["stats"]
    tables = previous.get("tables", {})
    if not isinstance(tables, dict):
        raise DataError("previous validation stats have no 'tables' mapping; pass the 'stats' of a ValidationResult")
    return tables


# --- results ----------------------------------------------------------------------------------


@dataclass
class TableValidation:
    """One table against its suite: every expectation's outcome, in suite order."""

    table: str
    success: bool
    rows: int
    suite: str
    parameters: dict[str, Any]
    outcomes: list[dict]
    skipped: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[dict]:
        return [o for o in self.outcomes if not o["success"]]


@dataclass
class ValidationResult:
    """What a validate step produces; ``stats`` is what the next run passes back as ``previous``."""

    success: bool
    tables: dict[str, TableValidation]
    failures: list[dict]
    stats: dict
    window: dict

    @property
    def absent_tables(self) -> list[str]:
        return [f["table"] for f in self.failures if f["expectation"] == ABSENT_TABLE]

    @property
    def expectation_count(self) -> int:
        return sum(len(t.outcomes) for t in self.tables.values()) + len(self.absent_tables)

    def to_dict(self) -> dict:
        return json_safe(
            {
                "success": self.success,
                "window": self.window,
                "expectations": self.expectation_count,
                "failed": len(self.failures),
                "failures": self.failures,
                "stats": self.stats,
                "tables": {name: asdict(t) for name, t in self.tables.items()},
            }
        )


def _missing_table_failure(table: str) -> dict:
    return {
        "table": table,
        "expectation": ABSENT_TABLE,
        "column": None,
        "columns": [],
        "kwargs": {},
        "success": False,
        "observed_value": "absent",
        "unexpected_count": None,
        "unexpected_percent": None,
        "element_count": None,
        "examples": [],
        "details": None,
        "error": f"table '{table}' is listed in validation.tables but was not produced by the loader",
        "why": "every table listed in validation.tables must be present",
    }


def _table_stats(frame: pd.DataFrame, meta: SuiteMeta, window: Window, label: str | None) -> dict:
    import pandas as pd

    rows = len(frame)
    stats: dict[str, Any] = {"rows": rows}
    days = _volume_days(meta, window)
    if days is not None:
        stats["rows_per_day"] = rows / days
    if label and label in frame.columns and pd.api.types.is_numeric_dtype(frame[label]) and rows:
        stats["label_rate"] = float(frame[label].mean())
    return stats


# --- validation -------------------------------------------------------------------------------


def validate_frame(
    table: str,
    frame: pd.DataFrame,
    cfg: KfopsConfig,
    previous: Any = None,
    suite: Suite | None = None,
) -> tuple[TableValidation, dict]:
    """Validate one DataFrame against ``<suites_dir>/<table>.json``; returns the outcome and its stats."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"table '{table}' must be a pandas DataFrame, got {type(frame).__name__}")
    suite = suite or load_suite(suite_path(cfg, table))
    window = window_of(cfg)
    parameters = suite_parameters(suite, window, cfg, _previous_tables(previous).get(table))
    if not frame.index.is_unique:  # example rows are looked up by index label
        frame = frame.reset_index(drop=True)
    frame = _nanosecond_timestamps(frame)

    present = set(frame.columns)
    selected, skipped = [], []
    for item in suite.expectations:
        column = item["kwargs"].get("column")
        if item["meta"].get(_WHEN_PRESENT_KEY) and column is not None and column not in present:
            skipped.append(f"{item['type']}({column})")
        else:
            selected.append(item)

    from great_expectations.core import ExpectationSuite

    examples_wanted = max(1, cfg.validation.max_examples)  # GE needs at least 1
    # GE's pandas engine takes `df[df[column].notnull()]` of the whole frame for every column
    # expectation: a full copy each time (and, on a frame of many blocks such as a join's output,
    # a re-consolidation of every block too). Consolidated once, and with copy-on-write, a filter
    # that keeps every row copies nothing; results are the same (tests/unit/test_validation_cow.py).
    _consolidate(frame)
    with _copy_on_write():
        batch = _batch_definition(table).get_batch(batch_parameters={"dataframe": frame})
        # Two passes: BASIC (counts and observed values) for every expectation, then SUMMARY, which
        # also finds the failing rows' index, only for the failures. SUMMARY on everything costs
        # about twice as much on a year of the example data.
        gx_results = batch.validate(
            ExpectationSuite(name=suite.name, expectations=[_copy_item(i) for i in selected]),
            expectation_parameters=parameters,
            result_format={"result_format": "BASIC", "partial_unexpected_count": examples_wanted},
        ).results
        failed_orders = {r.expectation_config.meta.get(_ORDER_KEY) for r in gx_results if not r.success}
        if failed_orders and cfg.validation.max_examples:
            failed = [i for i in selected if i["meta"][_ORDER_KEY] in failed_orders]
            detailed = batch.validate(
                ExpectationSuite(name=suite.name, expectations=[_copy_item(i) for i in failed]),
                expectation_parameters=parameters,
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": examples_wanted},
            ).results
            gx_results = [r for r in gx_results if r.success] + list(detailed)

    outcomes = [_outcome(table, r, frame, present, cfg.validation.max_examples) for r in gx_results]
    outcomes.sort(key=lambda o: o.pop("_order"))
    stats = _table_stats(frame, suite.meta, window, cfg.dataset.label if table == TRAINING_SET else None)
    validation = TableValidation(
        table=table,
        success=all(o["success"] for o in outcomes),
        rows=len(frame),
        suite=str(suite.path),
        parameters=json_safe(parameters),
        outcomes=outcomes,
        skipped=skipped,
    )
    return validation, stats


def _copy_on_write() -> contextlib.AbstractContextManager:
    """pandas copy-on-write while GE runs (a test swaps it for a no-op to compare results)."""
    import pandas as pd

    return pd.option_context("mode.copy_on_write", True)


def _consolidate(frame: pd.DataFrame) -> None:
    """Merge the frame's blocks of one dtype in place (what pandas does before its first copy):
    values and columns are unchanged, and no second copy of the data is made."""
    consolidate = getattr(frame, "_consolidate_inplace", None)  # pandas' own, without a public name
    if callable(consolidate):
        consolidate()


def _nanosecond_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    """Resolution is no part of the contract (parquet may give us or ms): compare tz-aware columns at ns."""
    import pandas as pd

    coarse = [c for c, t in frame.dtypes.items() if isinstance(t, pd.DatetimeTZDtype) and t.unit != "ns"]
    if not coarse:
        return frame
    frame = frame.copy(deep=False)
    for column in coarse:
        frame[column] = frame[column].dt.as_unit("ns")
    return frame


def _copy_item(item: dict) -> dict:
    return {**item, "kwargs": dict(item["kwargs"]), "meta": dict(item["meta"])}


def _outcome(table: str, gx_result: Any, frame: pd.DataFrame, present: set[str], max_examples: int) -> dict:
    config = gx_result.expectation_config
    kwargs = dict(config.kwargs)
    meta = dict(config.meta or {})
    column = kwargs.get("column")
    columns = list(kwargs.get("column_list") or [c for c in (kwargs.get("column_A"), kwargs.get("column_B")) if c])
    if column is not None:
        columns = [column]
    result = dict(gx_result.result or {})
    error = _exception_message(gx_result.exception_info)
    missing = [c for c in columns if c not in present]
    if error and missing:
        error = f"column {', '.join(repr(c) for c in missing)} is missing"
    index = result.get("partial_unexpected_index_list") or []
    examples = []
    if max_examples and index and not gx_result.success:
        examples = frame.loc[list(index[:max_examples])].to_dict(orient="records")
    outcome = {
        "table": table,
        "expectation": config.type,
        "column": column if column is not None else (", ".join(columns) or None),
        "columns": columns,
        "kwargs": json_safe({k: v for k, v in kwargs.items() if k not in _DOMAIN_KWARGS}),
        "success": bool(gx_result.success),
        "observed_value": json_safe(result.get("observed_value")),
        "unexpected_count": result.get("unexpected_count"),
        "unexpected_percent": result.get("unexpected_percent"),
        "element_count": result.get("element_count"),
        "unexpected_values": json_safe(_infinities_named((result.get("partial_unexpected_list") or [])[:max_examples])),
        "examples": json_safe(_infinities_named(examples)),
        "details": json_safe(result.get("details")),
        "error": error,
        "why": meta.get("why"),
        "_order": meta.get(_ORDER_KEY, 0),
    }
    return outcome


def _infinities_named(value: Any) -> Any:
    """``inf`` and ``-inf`` as text: JSON has no infinity, and json_safe's null would show a failing
    infinite value as a missing one."""
    if isinstance(value, float) and math.isinf(value):
        return str(value)
    if isinstance(value, list):
        return [_infinities_named(item) for item in value]
    if isinstance(value, dict):
        return {key: _infinities_named(item) for key, item in value.items()}
    return value


def _exception_message(info: Any) -> str | None:
    """GE reports a raised exception either directly or keyed by the metric that raised it."""
    if not isinstance(info, dict) or not info:
        return None
    if "raised_exception" in info:
        if info.get("raised_exception"):
            return str(info.get("exception_message") or "raised an exception").splitlines()[0]
        return None
    for nested in info.values():
        message = _exception_message(nested)
        if message:
            return message
    return None


def validate_tables(
    tables: dict[str, pd.DataFrame], cfg: KfopsConfig, previous: Any = None
) -> ValidationResult:
    """Validate each table listed in ``cfg.validation.tables`` against its suite.

    A listed table that is absent from ``tables`` fails; a listed table without a suite file is a
    ConfigError (a contract that was asked for cannot silently pass). ``previous`` is the ``stats``
    of the previous run's result (or its JSON summary) and enables the volume band.
    """
    if not cfg.validation.tables:
        raise ConfigError(
            "validation.tables is empty, so nothing would be validated",
            hint="list the raw tables to check, e.g. validation.tables=[orders, customers]",
        )
    from kfops.progress import progress

    suites = {name: load_suite(suite_path(cfg, name)) for name in cfg.validation.tables}
    results: dict[str, TableValidation] = {}
    failures: list[dict] = []
    stats_tables: dict[str, dict] = {}
    with progress("validate", total=len(suites), unit="table", every=1) as bar:
        for name, suite in suites.items():
            if name not in tables:
                failures.append(_missing_table_failure(name))
                bar.advance(message=f"{name}: absent")
                continue
            validation, stats = validate_frame(name, tables[name], cfg, previous, suite=suite)
            results[name] = validation
            stats_tables[name] = stats
            failures.extend(validation.failures)
            passed = len(validation.outcomes) - len(validation.failures)
            bar.advance(message=f"{name}: {passed}/{len(validation.outcomes)} expectations passed")
    return _result(results, failures, stats_tables, cfg)


def validate_training_set(frame: pd.DataFrame, cfg: KfopsConfig, previous: Any = None) -> ValidationResult:
    """Validate the entity frame (optionally with joined features) against ``training_set.json``."""
    validation, stats = validate_frame(TRAINING_SET, frame, cfg, previous)
    return _result({TRAINING_SET: validation}, list(validation.failures), {TRAINING_SET: stats}, cfg)


def _result(results: dict, failures: list[dict], stats_tables: dict, cfg: KfopsConfig) -> ValidationResult:
    window = window_of(cfg).to_dict()
    stats: dict[str, Any] = {"window": window, "tables": json_safe(stats_tables)}
    rates = {n: s["label_rate"] for n, s in stats_tables.items() if "label_rate" in s}
    if rates:
        stats["label_rate"] = next(iter(rates.values())) if len(rates) == 1 else rates
    return ValidationResult(
        success=not failures and bool(results) and all(r.success for r in results.values()),
        tables=results,
        failures=failures,
        stats=stats,
        window=window,
    )


# --- reading files (CLI) ----------------------------------------------------------------------


def read_table_file(path: Path, suite: Suite | None = None) -> pd.DataFrame:
    """Read a parquet or CSV file, or a folder of parquet files (one table, e.g. partitioned); CSV
    columns the suite types as timestamps are parsed as UTC, and those it types as strings kept as text."""
    path = Path(path)
    if path.is_dir():
        if not any(p.is_file() for pattern in ("*.parquet", "*.pq") for p in path.rglob(pattern)):
            raise DataError(f"{path} is a folder without parquet files",
                            hint="pass a .parquet or .csv file, or a folder of .parquet files of one table")
        try:
            return read_parquet(path)
        except (OSError, ValueError) as err:
            raise DataError(f"the parquet files in {path} could not be read as one table: {err}") from err
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file", hint="pass a .parquet or .csv file, or a folder of .parquet files")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return read_parquet(path)
        if name.endswith((".csv", ".csv.zip", ".csv.gz", ".csv.bz2")):
            text = dict.fromkeys(suite.text_columns() if suite else [], str)
            frame = read_csv(path, path, dtype=text or None)
        else:
            raise DataError(f"data file {path} is neither parquet nor CSV", hint="use a .parquet or .csv file")
    except (OSError, ValueError) as err:
        raise DataError(f"data file {path} could not be read: {err}") from err
    for column in suite.datetime_columns() if suite else []:
        if column in frame.columns:
            frame[column] = _timestamps_or_text(frame[column])
    return frame


def _timestamps_or_text(values: pd.Series) -> pd.Series:
    """A CSV column the suite types as timestamps, read as kfops' loaders read one (one format per
    column, day first when a value says so: '27/03/2023'); left as text when any value does not
    parse, so the suite's type check reports it with examples. A column whose every value reads
    both day first and month first is refused, naming a value, rather than read one way by guess."""
    from kfops.core.featureset import parse_timestamps

    try:
        stamps = parse_timestamps(values.rename(str(values.name)))
    except (ValueError, TypeError, OverflowError):
        return values
    return values if (stamps.isna() & values.notna()).any() else stamps


def table_name_for(path: Path) -> str:
    """``orders.parquet`` / ``orders.csv.zip`` -> ``orders``."""
    name = Path(path).name
    return name.split(".", 1)[0]


# --- reporting --------------------------------------------------------------------------------


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def observed_text(outcome: dict) -> str:
    """One line saying what was seen, for the report, the CLI and the error message."""
    if outcome.get("error"):
        return f"error: {outcome['error']}"
    mismatched = (outcome.get("details") or {}).get("mismatched")
    if isinstance(mismatched, dict) and mismatched:  # column sets: say what differs, not all columns
        return "; ".join(f"{kind} {', '.join(map(str, cols))}" for kind, cols in sorted(mismatched.items()))
    count = outcome.get("unexpected_count")
    if count is not None:
        total = outcome.get("element_count")
        share = outcome.get("unexpected_percent")
        text = f"{count:,} unexpected"
        if total is not None:
            text += f" of {total:,}"
        if share is not None:
            text += f" ({share:.2f}% of non-null)"
        if outcome.get("unexpected_values"):
            text += ", e.g. " + _short(outcome["unexpected_values"][:3], 60)
        return text
    return _short(outcome.get("observed_value"), 120)


def expected_text(outcome: dict) -> str:
    return ", ".join(f"{k}={_short(v, 60)}" for k, v in outcome.get("kwargs", {}).items())


def _label(outcome: dict) -> str:
    column = f"({outcome['column']})" if outcome.get("column") else ""
    return f"{outcome['table']}.{outcome['expectation']}{column}"


def _example_text(row: dict, outcome: dict, limit: int = 160) -> str:
    # Failing columns first: they are what a reader looks for.
    first = [c for c in outcome.get("columns", []) if c in row]
    ordered = {c: row[c] for c in first} | {c: v for c, v in row.items() if c not in first}
    return _short(json.dumps(ordered, default=str), limit)


def broken_expectations(failures: list[dict], limit: int = 5, width: int = 300) -> str:
    """The broken expectations on one line: ``table.expectation(column) observed X``, the first
    ``limit`` of them within about ``width`` characters, then "and N more". One line because that
    is what reaches the person: `kfops run` shows a failed task's exception by its first line only."""
    shown: list[str] = []
    for outcome in failures[:limit]:
        item = f"{_label(outcome)} observed {_short(observed_text(outcome), 60)}"
        if shown and sum(len(text) + 2 for text in shown) + len(item) > width:
            break
        shown.append(item)
    more = len(failures) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


def failure_message(result: ValidationResult, max_example_rows: int = 3) -> str:
    lines = [f"data validation failed: {len(result.failures)} of {result.expectation_count} expectation(s) broken: "
             f"{broken_expectations(result.failures)}"]
    for outcome in result.failures:
        lines.append(f"  {_label(outcome)}: observed {observed_text(outcome)}")
        if outcome.get("kwargs"):
            lines.append(f"      expected {expected_text(outcome)}")
        for row in outcome.get("examples", [])[:max_example_rows]:
            lines.append(f"      example row: {_example_text(row, outcome)}")
    return "\n".join(lines)


def raise_if_failed(result: ValidationResult, summary_path: Path | str | None = None) -> None:
    """Fail closed: raise ValidationFailed (carrying the failures) unless every expectation passed."""
    if result.success:
        return
    message = failure_message(result)
    if not result.failures:
        message = "data validation did not pass: no table was validated"
    if summary_path is not None:
        message += f"\n  summary: {summary_path}"
    raise ValidationFailed(message, failures=result.failures, summary_path=None if summary_path is None else str(summary_path))


def format_failures(result: ValidationResult) -> str:
    """A plain-text table of the failing expectations (or one line saying all passed)."""
    names = ", ".join([*result.tables, *(f"{t} (absent)" for t in result.absent_tables)]) or "no tables"
    if result.success:
        return f"PASSED: all {result.expectation_count} expectations on {names}"
    rows = [("table", "expectation", "column", "expected", "observed")]
    for outcome in result.failures:
        rows.append((
            outcome["table"], outcome["expectation"], outcome.get("column") or "-",
            _short(expected_text(outcome), 48) or "-", observed_text(outcome),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"FAILED: {len(result.failures)} of {result.expectation_count} expectations broken on {names}"]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row[:4])) + "  " + row[4])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 8)
    return "\n".join(lines)
