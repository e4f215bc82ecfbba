"""Batch scoring: a parquet or CSV file of feature rows in, a parquet file of predictions out.

Streams the input as Arrow record batches of up to ``chunk_rows`` rows (memory stays flat for any
file size), encodes each straight from Arrow (:func:`kfops.serving.protocol.encoding.encode_arrow`, the
same matrix as :meth:`FeatureSpec.encode`) and scores it with the model's native, multi-threaded
predict. The output holds the input's non-feature columns (ids, timestamps,
labels: what you join back on), then ``probability`` and ``prediction`` (0/1 at the model's
threshold; the names MLflow's pyfunc of the same model uses, so a ``label`` column can ride along).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kfops.core.files import atomic_output
from kfops.core.tables import NOT_UTF8_HINT
from kfops.errors import DataError
from kfops.progress import progress

if TYPE_CHECKING:
    import pyarrow as pa

    from kfops.core.model import TabularModel
    from kfops.serving.local.batch_log import BatchPredictionLog
    from kfops.serving.local.raw_scoring import RawCompleter

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".csv.bz2")
OUTPUTS = ("probability", "prediction")


@dataclass
class BatchResult:
    output_path: Path
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _batches(path: Path, chunk_rows: int, categorical: list[str]) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches; a file its suffix's reader cannot read is a DataError naming it."""
    import pyarrow as pa

    try:
        yield from _read_batches(path, chunk_rows, categorical)
    except (pa.ArrowException, ValueError, UnicodeDecodeError) as err:
        if isinstance(err, DataError):
            raise
        if path.name.lower().endswith(CSV_SUFFIXES):
            _refuse_other_delimiters(path)
            if isinstance(err, UnicodeDecodeError) or "invalid UTF8" in str(err):
                raise DataError(f"{path} is not UTF-8 text: {err}", hint=NOT_UTF8_HINT) from None
        raise DataError(f"cannot read {path}: {err}",
                        hint="the file must be what its suffix says: .parquet, or .csv with a header row") from err


def _refuse_other_delimiters(path: Path) -> None:
    """A CSV file whose header reads as one column holding ';', a tab or '|': said as such."""
    import pandas as pd

    from kfops.core.tables import check_csv_columns

    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        header = pd.read_csv(path, nrows=0)
        check_csv_columns(header, path)


def _read_batches(path: Path, chunk_rows: int, categorical: list[str]) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    name = path.name.lower()
    if name.endswith(".parquet") or path.is_dir():
        import pyarrow.dataset as ds

        # Categoricals as Arrow dictionaries: encoding looks each distinct value up once.
        parquet = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=set(categorical)))
        yield from ds.dataset(path, format=parquet).to_batches(batch_size=chunk_rows)
    elif name.endswith(".csv.zip"):  # Arrow reads no zip archives: pandas does, chunk by chunk
        import pandas as pd

        for chunk in pd.read_csv(path, chunksize=chunk_rows, dtype={c: "string" for c in categorical}):
            yield pa.RecordBatch.from_pandas(chunk, preserve_index=False)
    elif name.endswith(CSV_SUFFIXES):
        from pyarrow import csv

        # Categoricals stay text: a code like "01" must not become the number 1.
        reader = csv.open_csv(path, read_options=csv.ReadOptions(block_size=64 << 20),
                              convert_options=csv.ConvertOptions(column_types={c: pa.string() for c in categorical}))
        for block in reader:  # blocks of 64 MiB: sliced (no copy) to chunk_rows, as parquet is read
            for start in range(0, block.num_rows, chunk_rows):
                yield block.slice(start, chunk_rows)
    else:
        raise DataError(f"cannot read {path}: expected .parquet or .csv (optionally .gz/.zip/.bz2)")


def _row_count(path: Path) -> int | None:
    """The rows of a parquet file or folder, from its footers (no data read); None for CSV."""
    if not (path.name.lower().endswith(".parquet") or path.is_dir()):
        return None
    import pyarrow.dataset as ds

    try:
        return int(ds.dataset(path, format="parquet").count_rows())
    except (OSError, ValueError):  # unreadable: the read says why, with the file's name
        return None


def require_input(path: Path) -> Path:
    """``path``, which must exist: checked before a model is fetched or features prepared for it."""
    if not path.exists():
        raise DataError(f"input file {path} does not exist")
    return path


def predict_file(
    model: TabularModel | Path | str,
    input_path: Path | str,
    output_path: Path | str,
    *,
    chunk_rows: int = 250_000,
    threads: int | None = None,
    keep_columns: list[str] | None = None,
    coerce: bool = False,
    complete: RawCompleter | None = None,
    log: BatchPredictionLog | None = None,
) -> BatchResult:
    """Score every row of ``input_path`` into ``output_path`` (parquet); returns rows and time.

    ``model`` is a loaded model or a model folder. ``keep_columns`` (default: every input
    column that is not a model feature) are copied to the output beside the predictions. A
    numeric feature holding text that is not a number is a DataError naming the row and column,
    and nothing is written, unless ``coerce`` (such values then score as missing).

    With ``complete`` the rows are raw rows (:mod:`kfops.serving.local.raw_scoring`): each chunk
    is checked and completed to the model's features first, and every input column is kept.
    With ``log`` the predictions are appended to the inference log once the output is complete.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfops.core.model import load_model
    from kfops.serving.protocol.encoding import encode_arrow
    from kfops.serving.runtime.loading import limit_threads

    if not isinstance(model, (str, Path)):
        loaded = model
    else:
        loaded = load_model(Path(model))
    limit_threads(loaded, threads or os.cpu_count() or 1)
    input_path, output_path = Path(input_path), Path(output_path)
    require_input(input_path)
    if chunk_rows < 1:
        raise DataError("chunk_rows must be >= 1")
    if keep_columns is not None and set(keep_columns) & set(OUTPUTS):
        raise DataError(f"keep_columns may not include {' or '.join(OUTPUTS)}: the output has its own")
    spec = loaded.spec
    writer = None
    rows = 0
    started = time.perf_counter()
    text_columns = complete.string_fields if complete is not None else [c for c in spec.columns if c in spec.categorical]
    source = _batches(input_path, chunk_rows, text_columns)

    offset = 0

    def read_and_encode():
        nonlocal offset
        for batch in source:
            if batch.num_rows:
                start, offset = offset, offset + batch.num_rows
                features = batch if complete is None else complete(batch, start)
                return batch, features, encode_arrow(features, spec, coerce=coerce, row_offset=start)
        return None

    # Written under a temporary name beside the output, which it replaces only once complete.
    with atomic_output(output_path) as temporary, progress("predict", total=_row_count(input_path), unit="row") as bar:
        try:
            # Arrow reads and encodes the next batch (GIL released) while XGBoost scores this one;
            # in this context, so that a step inside (the raw rows' join) reports under this bar.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfops-batch-read") as reader:
                upcoming = reader.submit(contextvars.copy_context().run, read_and_encode)
                while (item := upcoming.result()) is not None:
                    upcoming = reader.submit(contextvars.copy_context().run, read_and_encode)
                    batch, features, matrix = item
                    if keep_columns is None:
                        keep = [c for c in batch.schema.names
                                if (complete is not None or c not in spec.columns) and c not in OUTPUTS]
                    else:
                        keep = keep_columns
                        absent = [c for c in keep if c not in batch.schema.names]
                        if absent:
                            raise DataError(f"{input_path} lacks column(s) {', '.join(absent)} asked for in keep_columns")
                    probability = np.asarray(loaded.predict_proba_encoded(matrix), dtype=np.float64)
                    columns = {name: batch.column(name) for name in keep}
                    columns["probability"] = pa.array(probability)
                    columns["prediction"] = pa.array((probability >= loaded.threshold).astype(np.int8))
                    if log is not None:
                        log.add(batch, features, matrix, probability)
                    table = pa.table(columns)
                    if writer is None:
                        writer = pq.ParquetWriter(temporary, table.schema)
                    writer.write_table(table)
                    rows += batch.num_rows
                    bar.advance(batch.num_rows)
        except BaseException:
            if log is not None:
                log.close()  # nothing staged reaches the log
            raise
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise DataError(f"{input_path} holds no rows")
    if log is not None:
        log.publish()
    return BatchResult(output_path=output_path, rows=rows, seconds=time.perf_counter() - started)
