"""The inference log: every prediction's inputs, features, output, model version and time.

Layout (Hive-style partitions by UTC date, one parquet file per flush and model version)::

    <log_dir>/date=2024-05-01/part-20240501T101500-4242-000017-9f86d081.parquet

Columns: ``timestamp`` (UTC), ``request_id``, ``model_name``, ``model_version``, ``input_kind``
(``features`` or ``raw``), ``input`` (a raw request row as JSON; null for feature
vectors, whose input is the feature columns), one column per model feature as the model saw it
(categoricals as the strings sent, unknown ones included; numbers as float32, the model's input
precision), ``probability`` and ``label``.

The deploy step's smoke test (request ids starting ``kfops-deploy-check-``) is kept in files named
``check-*.parquet`` beside them: on the record, but not traffic, so the drift check and
``kfops status`` (which read ``part-*`` files only) do not count it.

The request path only appends a record (the float32 matrix it already built for the model, plus
the categorical strings); a background thread turns records into columns and writes a file
every ``flush_interval_s`` (or ``flush_rows`` rows), under a temporary name first so readers
never see half a file.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import logging
import os
import shutil
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kfops.core.files import atomic_output
from kfops.core.tables import read_parquet

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

BASE_COLUMNS = ("timestamp", "request_id", "model_name", "model_version", "input_kind", "input")
OUTPUT_COLUMNS = ("probability", "label")
PARTITION_PREFIX = "date="
TRAFFIC_FILE_PREFIX = "part-"
DEPLOY_CHECK_FILE_PREFIX = "check-"
DEPLOY_CHECK_ID_PREFIX = "kfops-deploy-check-"
CONVERT_ROWS = 2048


@dataclass(slots=True)
class LogRecord:
    """One request of ``len(probabilities)`` rows."""

    timestamp: float
    request_id: str
    model_name: str
    model_version: str
    input_kind: str
    feature_names: Sequence[str]
    matrix: np.ndarray  # rows x features, float32: what the model scored
    categorical: Mapping[str, Sequence]  # the raw strings of the categorical features
    probabilities: np.ndarray
    threshold: float
    raw_input: Mapping[str, Sequence] | None = None  # a raw request's columns, as sent

    @property
    def rows(self) -> int:
        return len(self.probabilities)


class InferenceLogWriter:
    """Collects records from the request path; a background thread converts them to Arrow every
    ``convert_interval_s`` (so few Python objects live long enough to burden the garbage
    collector) and writes a file per model version every ``flush_interval_s``."""

    def __init__(
        self,
        log_dir: Path,
        *,
        flush_interval_s: float = 10.0,
        flush_rows: int = 50_000,
        max_pending_rows: int = 1_000_000,
        convert_interval_s: float = 0.25,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ):
        self.log_dir = Path(log_dir)
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.max_pending_rows = max_pending_rows
        self.convert_interval_s = min(convert_interval_s, flush_interval_s)
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._pending: list[LogRecord] = []
        self._pending_rows = 0  # appended and not yet written (or dropped)
        self._tables: dict[tuple, list[pa.Table]] = defaultdict(list)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._sequence = itertools.count()

    def start(self) -> InferenceLogWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kfops-inference-log", daemon=True)
            self._thread.start()
        return self

    def append(self, record: LogRecord) -> bool:
        """Queue a record; False (and counted as dropped) when the writer is too far behind."""
        with self._lock:
            dropped = self._pending_rows + record.rows > self.max_pending_rows or self._closed.is_set()
            if not dropped:
                self._pending.append(record)
                self._pending_rows += record.rows
        if dropped:
            self._count(self._on_dropped, record.rows)
            return False
        return True

    def flush(self) -> list[Path]:
        """Write everything queued so far; returns the files written."""
        with self._write_lock:
            self._convert()
            tables, self._tables = self._tables, defaultdict(list)
            written: list[Path] = []
            for (day, *_, deploy_check), parts in tables.items():
                table = parts[0] if len(parts) == 1 else _concat(parts)
                prefix = DEPLOY_CHECK_FILE_PREFIX if deploy_check else TRAFFIC_FILE_PREFIX
                try:
                    written.append(write_table(self.log_dir, day, table, self._sequence, prefix))
                except OSError as err:
                    log.error("inference log: could not write %d rows under %s: %s", table.num_rows, self.log_dir, err)
                    self._count(self._on_dropped, table.num_rows)
                else:
                    self._count(self._on_written, table.num_rows)
                self._release(table.num_rows)
        return written

    def close(self) -> None:
        """Flush what is queued and stop the thread; later appends are dropped."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.flush()

    def _convert(self) -> None:
        """Pending records -> Arrow tables per (date, model, version, kind); caller holds _write_lock."""
        with self._lock:
            records, self._pending = self._pending, []
        for key, group in group_records(records).items():
            try:
                table = records_table(group)
            except (ValueError, TypeError) as err:  # Arrow could not take a value: drop, say so, go on
                rows = sum(r.rows for r in group)
                log.error("inference log: dropped %d rows of %s: %s", rows, key[1:], err)
                self._count(self._on_dropped, rows)
                self._release(rows)
            else:
                self._tables[key].append(table)

    def _release(self, rows: int) -> None:
        with self._lock:
            self._pending_rows -= rows

    @staticmethod
    def _count(callback: Callable[[int], None] | None, rows: int) -> None:
        if callback is not None:
            callback(rows)

    def _run(self) -> None:
        last_write = time.monotonic()
        while not self._closed.is_set():
            self._wake.wait(self.convert_interval_s)
            with self._write_lock:
                self._convert()
            if time.monotonic() - last_write >= self.flush_interval_s or self._pending_rows >= self.flush_rows:
                self.flush()
                last_write = time.monotonic()


def group_records(records: list[LogRecord]) -> dict[tuple, list[LogRecord]]:
    """Records by (UTC date, model, version, input kind, deploy check or traffic): one file each."""
    groups: dict[tuple, list[LogRecord]] = defaultdict(list)
    for record in records:
        day = dt.datetime.fromtimestamp(record.timestamp, dt.UTC).date()
        deploy_check = record.request_id.startswith(DEPLOY_CHECK_ID_PREFIX)
        groups[(day, record.model_name, record.model_version, record.input_kind, deploy_check)].append(record)
    return groups


def write_table(log_dir: Path, day: dt.date, table: pa.Table, sequence, prefix: str = TRAFFIC_FILE_PREFIX) -> Path:
    """One parquet file in a log folder."""
    import pyarrow.parquet as pq

    folder = Path(log_dir) / f"{PARTITION_PREFIX}{day.isoformat()}"
    name = _file_name(prefix, sequence)
    with atomic_output(folder / name) as temporary:
        pq.write_table(table, temporary)
    return folder / name


def _file_name(prefix: str, sequence: Any) -> str:
    """A new file's name. It carries a random part: time, pid and a writer's sequence repeat for
    two writers of one process (a server and a batch job) in the same second, for containers
    (pid 1 each) sharing a folder, and for log sink replicas on S3, and a repeated name would
    replace the rows already there."""
    import uuid

    return (f"{prefix}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{next(sequence):06d}"
            f"-{uuid.uuid4().hex[:8]}.parquet")


def _concat(tables: list[pa.Table]) -> pa.Table:
    import pyarrow as pa

    return pa.concat_tables(tables, promote_options="default")


def records_table(records: list[LogRecord]) -> pa.Table:
    """Records of one model version and input kind as one Arrow table."""
    # Arrow holds the GIL while it converts a list: convert in slices so the request thread gets
    # the GIL back every few hundred microseconds instead of once per flush.
    slices, rows = [], 0
    start = 0
    for i, record in enumerate(records):
        rows += record.rows
        if rows >= CONVERT_ROWS or i == len(records) - 1:
            slices.append(_records_table(records[start:i + 1]))
            start, rows = i + 1, 0
    return slices[0] if len(slices) == 1 else _concat(slices)


def _records_table(records: list[LogRecord]) -> pa.Table:
    import orjson
    import pyarrow as pa

    first = records[0]
    sizes = [r.rows for r in records]
    columns: dict[str, Any] = {
        "timestamp": pa.array(np.repeat(np.array([int(r.timestamp * 1e9) for r in records], dtype=np.int64), sizes),
                              type=pa.timestamp("ns", tz="UTC")),
        "request_id": pa.array(np.repeat(np.array([r.request_id for r in records], dtype=object), sizes),
                               type=pa.string()),
        "model_name": pa.array([first.model_name] * sum(sizes), type=pa.string()),
        "model_version": pa.array([first.model_version] * sum(sizes), type=pa.string()),
        "input_kind": pa.array([first.input_kind] * sum(sizes), type=pa.string()),
    }
    if first.raw_input is None:
        columns["input"] = pa.nulls(sum(sizes), type=pa.string())
    else:
        columns["input"] = pa.array([
            orjson.dumps(dict(zip(r.raw_input, values, strict=True)), option=orjson.OPT_SERIALIZE_NUMPY).decode()
            for r in records for values in zip(*r.raw_input.values(), strict=True)
        ], type=pa.string())
    matrix = np.concatenate([r.matrix for r in records]) if len(records) > 1 else first.matrix
    for j, name in enumerate(first.feature_names):
        if name in columns or name in OUTPUT_COLUMNS:
            continue  # a feature named like a log column would overwrite it
        if name in first.categorical:
            values = [v for r in records for v in r.categorical[name]]
            columns[name] = pa.array(values, type=pa.string(), from_pandas=True)  # NaN -> null
        else:
            columns[name] = pa.array(np.ascontiguousarray(matrix[:, j]), type=pa.float32())
    probabilities = np.concatenate([r.probabilities for r in records]).astype(np.float64, copy=False)
    columns["probability"] = pa.array(probabilities)
    columns["label"] = pa.array((probabilities >= first.threshold).astype(np.int8))
    return pa.table(columns)


def _as_utc(value: Any) -> pd.Timestamp:
    import pandas as pd

    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def read_inference_logs(log_dir: Path | str, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Logged predictions with ``start <= timestamp < end`` (naive times are UTC), oldest first.

    ``log_dir`` is a folder or an ``s3://bucket/prefix`` (the cluster's log sink,
    :mod:`.log_sink`). A missing or empty log gives an empty frame with the base columns, so a
    drift job can tell "nothing served yet" from an error and decide for itself.
    """
    import pandas as pd

    lo = _as_utc(start) if start is not None else None
    hi = _as_utc(end) if end is not None else None
    frames = []
    if str(log_dir).startswith("s3://"):

        frames = read_s3_log_files(str(log_dir), lo.date() if lo is not None else None,
                                   hi.date() if hi is not None else None)
    root = Path(log_dir)
    if not frames and not str(log_dir).startswith("s3://"):
        for _day, files in log_files_by_day(root, lo.date() if lo is not None else None,
                                            hi.date() if hi is not None else None):
            frames.extend(read_parquet(path) for path in files)
    if not frames:
        empty = {name: pd.Series(dtype="object") for name in BASE_COLUMNS}
        empty["timestamp"] = pd.Series(dtype="datetime64[ns, UTC]")
        empty["probability"] = pd.Series(dtype="float64")
        empty["label"] = pd.Series(dtype="int64")
        return pd.DataFrame(empty)
    frame = pd.concat(frames, ignore_index=True, sort=False)
    keep = np.ones(len(frame), dtype=bool)
    if lo is not None:
        keep &= (frame["timestamp"] >= lo).to_numpy()
    if hi is not None:
        keep &= (frame["timestamp"] < hi).to_numpy()
    frame = frame[keep].sort_values("timestamp", kind="stable").reset_index(drop=True)
    ordered = [*BASE_COLUMNS, *[c for c in frame.columns if c not in BASE_COLUMNS and c not in OUTPUT_COLUMNS],
               *OUTPUT_COLUMNS]
    return frame[ordered]


def log_files_by_day(log_dir: Path, first_day: dt.date | None = None,
                     last_day: dt.date | None = None) -> Iterator[tuple[dt.date, list[Path]]]:
    """A log folder's traffic files per UTC date partition in [first_day, last_day] (None: open),
    oldest first; deploy checks' files are left out."""
    root = Path(log_dir)
    for folder in sorted(root.glob(f"{PARTITION_PREFIX}*")) if root.is_dir() else []:
        try:
            day = dt.date.fromisoformat(folder.name[len(PARTITION_PREFIX):])
        except ValueError:
            continue  # not one of ours
        if (first_day is None or day >= first_day) and (last_day is None or day <= last_day):
            yield day, sorted(folder.glob(f"{TRAFFIC_FILE_PREFIX}*.parquet"))


def logged_rows_by_day(log_dir: Path, first_day: dt.date) -> dict[dt.date, int]:
    """Rows logged per UTC day from ``first_day`` on, in a log folder, from the files' footers
    (no data read)."""
    import pyarrow.parquet as pq

    return {day: sum(pq.ParquetFile(path).metadata.num_rows for path in files)
            for day, files in log_files_by_day(log_dir, first_day)}


# --- the log store: a folder or an s3:// prefix --------------------------------------------------


def write_log_table(store: str | Path, day: dt.date, table: Any, sequence: Any) -> str:
    """One parquet file of inference-log rows for ``day`` in a folder or under an s3:// prefix."""
    if not str(store).startswith("s3://"):
        return str(write_table(Path(store), day, table, sequence))
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return _put_new_s3_file(str(store), day, buffer.getvalue(), sequence)


def copy_log_file(store: str | Path, day: dt.date, parquet_file: Path, sequence: Any) -> str:
    """A parquet file of log rows written elsewhere (a batch run's staged chunk) into the log as it
    is, neither decoded nor encoded again."""
    if not str(store).startswith("s3://"):
        folder = Path(store) / f"{PARTITION_PREFIX}{day.isoformat()}"
        name = _file_name(TRAFFIC_FILE_PREFIX, sequence)
        with atomic_output(folder / name) as temporary:
            shutil.copyfile(parquet_file, temporary)
        return str(folder / name)
    return _put_new_s3_file(str(store), day, Path(parquet_file).read_bytes(), sequence)


def _put_new_s3_file(uri: str, day: dt.date, data: bytes, sequence: Any) -> str:
    """Put ``data`` under a new key of the day's partition: the put is conditional on the key being
    new, so a repeated name can never replace another writer's rows."""
    from kfops.adapters.state_store import store_at

    state = store_at(uri)
    for _ in range(5):  # a random part that repeats is next to impossible; a bound all the same
        key = f"{PARTITION_PREFIX}{day.isoformat()}/{_file_name(TRAFFIC_FILE_PREFIX, sequence)}"
        if state.write_if(key, data, None):
            return state.uri(key)
    raise OSError(f"no new key for an inference-log file under {state.location}")


def read_s3_log_files(uri: str, first_day: dt.date | None, last_day: dt.date | None) -> list[Any]:
    """DataFrames of the log files under an s3:// prefix whose date partition is in range."""
    from kfops.adapters.state_store import parquet_frame, store_at

    state = store_at(uri)
    frames = []
    for key in state.list_keys():
        parts = key.split("/")
        if len(parts) != 2 or not parts[0].startswith(PARTITION_PREFIX) or not parts[1].startswith(TRAFFIC_FILE_PREFIX):
            continue
        try:
            day = dt.date.fromisoformat(parts[0][len(PARTITION_PREFIX):])
        except ValueError:
            continue
        if (first_day and day < first_day) or (last_day and day > last_day):
            continue
        data = state.read(key)
        if data is not None:  # removed since it was listed (a retention rule)
            frames.append(parquet_frame(data))
    return frames
