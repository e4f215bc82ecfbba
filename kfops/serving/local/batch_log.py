"""A batch run's predictions in the inference log, as the server logs what it serves.

A retraining run with ``drift.current_source=inference_logs`` checks what was served in its
window; with the predictions of batch jobs logged too, it sees those as well. Each chunk's rows
go in as the server writes a request's: the features as the model saw them, the raw row (for raw
rows), the probability and the predicted class, under one ``request_id`` per run
(``predict-<hex>``) and the time each chunk was scored.

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

from kfops.errors import ServiceUnavailable

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from kfops.core.model import FeatureSpec

UNREGISTERED = "unregistered"  # the version logged for a model scored from a folder
STORE_CLIENTS = ("botocore", "boto3", "urllib3")  # whose errors mean the S3 log store failed


class BatchPredictionLog:
    """Collects a batch run's chunks (:meth:`add`), then appends them to the log (:meth:`publish`)."""

    def __init__(self, location: Path | str, *, model_name: str, model_version: str, spec: FeatureSpec,
                 threshold: float, raw_fields: list[str] | None = None):
        self.location = location
        self.model_name = model_name
        self.model_version = model_version
        self.spec = spec
        self.threshold = threshold
        self.raw_fields = raw_fields  # None: the rows are feature rows
        self.request_id = f"predict-{uuid.uuid4().hex[:12]}"
        self._staging = tempfile.TemporaryDirectory(prefix="kfops-predict-log-")
        self._staged: list[tuple[dt.date, Path, int]] = []

    def add(self, rows: pa.RecordBatch, features: pa.RecordBatch, matrix: np.ndarray, probabilities: np.ndarray) -> None:
        """Stage one scored chunk: ``rows`` as read, ``features`` the model's columns, ``matrix``
        what the model scored."""
        import pyarrow.parquet as pq

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
        path = Path(self._staging.name) / f"{len(self._staged):06d}.parquet"
        pq.write_table(records_table([record]), path)
        self._staged.append((dt.datetime.fromtimestamp(record.timestamp, dt.UTC).date(), path, record.rows))

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
