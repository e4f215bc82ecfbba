"""A batch run's predictions in the inference log, as the server logs what it serves.

A retraining run with ``drift.current_source=inference_logs`` checks what was served in its
window; with the predictions of batch jobs logged too, it sees those as well. Each chunk's rows
go in as the server writes a request's: the features as the model saw them, the raw row (for raw
rows), the probability and the predicted class, under one ``request_id`` per run
(``predict-<hex>``) and the time each chunk was scored, or with ``event_time_column`` each row's
own time: a backfill of past rows then lands in the days the rows are about, not in today's.

The chunks are staged in a scratch folder and reach the log only once the whole file has been
scored: a file refused at its last row adds nothing to the log.
"""

from __future__ import annotations

import datetime as dt
import itertools
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import DataError, ServiceUnavailable

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from kfops.core.model import FeatureSpec

UNREGISTERED = "unregistered"  # the version logged for a model scored from a folder
STORE_CLIENTS = ("botocore", "boto3", "urllib3")  # whose errors mean the S3 log store failed
# Beside the features a raw chunk completes to: each row's event time as the request builder
# derived it (the time its features were joined at). The model's encoder reads only its own columns.
EVENT_TIME = "__kfops_event_time"


class BatchPredictionLog:
    """Collects a batch run's chunks (:meth:`add`), then appends them to the log (:meth:`publish`)."""

    def __init__(self, location: Path | str, *, model_name: str, model_version: str, spec: FeatureSpec,
                 threshold: float, raw_fields: list[str] | None = None, event_time_column: str | None = None):
        """``event_time_column``: stamp each row with its own time, not the time it was scored: a raw
        row's event time as the request builder derived it, a feature row's value in that column
        (``dataset.event_timestamp``; naive times are UTC)."""
        self.location = location
        self.model_name = model_name
        self.model_version = model_version
        self.spec = spec
        self.threshold = threshold
        self.raw_fields = raw_fields  # None: the rows are feature rows
        self.event_time_column = event_time_column
        self._rows_added = 0
        self.request_id = f"predict-{uuid.uuid4().hex[:12]}"
        self._staging = tempfile.TemporaryDirectory(prefix="kfops-predict-log-")
        self._staged: list[tuple[dt.date, Path, int]] = []

    def add(self, rows: pa.RecordBatch, features: pa.RecordBatch, matrix: np.ndarray, probabilities: np.ndarray) -> None:
        """Stage one scored chunk: ``rows`` as read, ``features`` the model's columns, ``matrix``
        what the model scored."""
        from kfops.serving.protocol.payloads import FEATURES, RAW
        from kfops.serving.runtime.inference_log import LogRecord, records_table

        raw_input = None
        if self.raw_fields is not None:
            raw_input = {name: rows.column(name).to_pylist() for name in self.raw_fields if name in rows.schema.names}
        record = LogRecord(
            timestamp=time.time(), request_id=self.request_id, model_name=self.model_name,
            model_version=self.model_version, input_kind=FEATURES if raw_input is None else RAW,
            feature_names=self.spec.columns, matrix=matrix,
            categorical={name: _texts(features.column(name)) for name in self.spec.columns if name in self.spec.categorical},
            probabilities=probabilities, threshold=self.threshold, raw_input=raw_input,
        )
        first_row, self._rows_added = self._rows_added, self._rows_added + record.rows
        table = records_table([record])
        if self.event_time_column is None:
            self._stage(table, dt.datetime.fromtimestamp(record.timestamp, dt.UTC).date())
            return
        import numpy as np
        import pyarrow as pa

        times = self._event_times(rows, features, first_row)
        table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp",
                                 pa.array(times, type=pa.timestamp("ns", tz="UTC")))
        days = times.astype("datetime64[D]")
        for day in np.unique(days):  # each day's rows in that day's partition, where a window reads them
            self._stage(table.filter(pa.array(days == day)), day.astype(dt.date))

    def _event_times(self, rows: pa.RecordBatch, features: pa.RecordBatch, first_row: int) -> np.ndarray:
        """Each row's time as UTC ``datetime64[ns]``; a row without one is a DataError naming it."""
        import pandas as pd

        from kfops.core.featureset import parse_timestamps

        column = self.event_time_column
        if EVENT_TIME in features.schema.names:
            values = features.column(EVENT_TIME).to_pandas()
        elif column in rows.schema.names:
            values = parse_timestamps(pd.Series(rows.column(column).to_pandas(), name=column))
        else:
            raise DataError(f"the rows have no '{column}' column to stamp the inference log with",
                            hint="give each row its event time in that column (dataset.event_timestamp), "
                                 "or log them at the time they are scored (without the event-time option)")
        missing = values.isna().to_numpy()
        if missing.any():
            raise DataError(f"row {first_row + int(missing.argmax())}: no event time in '{column}' to log the row at",
                            hint="every logged row needs its time; nothing was logged")
        stamps: np.ndarray = pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        return stamps

    def _stage(self, table: pa.Table, day: dt.date) -> None:
        import pyarrow.parquet as pq

        path = Path(self._staging.name) / f"{len(self._staged):06d}.parquet"
        pq.write_table(table, path)
        self._staged.append((day, path, table.num_rows))

    @property
    def days(self) -> tuple[dt.date, dt.date] | None:
        """The first and last day the staged rows go to; None before any chunk."""
        days = [day for day, _, _ in self._staged]
        return (min(days), max(days)) if days else None

    def publish(self) -> int:
        """Append the staged chunks to the log (each staged file as it is); returns the rows logged.
        A failure names how many rows reached the log before it."""
        from kfops.serving.runtime.inference_log import copy_log_file

        sequence, logged = itertools.count(), 0
        try:
            for day, path, rows in self._staged:
                copy_log_file(self.location, day, path, sequence)
                logged += rows
        except Exception as err:
            if not isinstance(err, OSError) and not type(err).__module__.startswith(STORE_CLIENTS):
                raise  # not the store refusing: a bug, shown as one
            total = sum(rows for _, _, rows in self._staged)
            raise ServiceUnavailable(f"the inference log at {self.location} took {logged:,} of {total:,} rows "
                             f"({self.request_id}) before: {err}",
                             hint="the predictions file is complete; score again with the log reachable to log them") from err
        finally:
            self.close()
        return logged

    def close(self) -> None:
        self._staging.cleanup()


def _texts(column: Any) -> Any:
    """A categorical column's values as the strings the log keeps (null stays None), converted by
    Arrow: a Python loop over the values took most of a logged batch's time."""
    import pyarrow as pa

    return column.cast(pa.string()).to_numpy(zero_copy_only=False)
