"""Dataset plug-ins. ``flights`` (2013 NYC flights) is the example; a project brings its own
through ``dataset.*`` in kfops.yaml. Nothing outside this package knows any dataset.

A plug-in reads its raw files with :func:`read_table_file`, so the same loader reads a folder on a
laptop and an object store (``dataset.source_dir: s3://bucket/prefix``) in a pod.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from kfops.config import is_uri
from kfops.core.tables import read_csv, read_parquet
from kfops.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd

TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".csv.zip")
_CSV_COMPRESSION = {".csv": None, ".csv.gz": "gzip", ".csv.zip": "zip"}


def join_location(folder: str | Path, name: str) -> str | Path:
    """``name`` inside ``folder``, a local folder or an object-store prefix (``s3://bucket/prefix``)."""
    if is_uri(folder):
        return f"{str(folder).rstrip('/')}/{name.lstrip('/')}"
    return Path(folder) / name


def read_table_file(location: str | Path, text_columns: Iterable[str] = ()) -> pd.DataFrame:
    """A raw table from a parquet or CSV file (``.csv.gz``, ``.csv.zip`` too): a local path or an
    ``s3://bucket/key``. ``text_columns`` of a CSV are read as text, as they are written: '02134'
    stays '02134' (a parquet file keeps its own types).

    S3 is read with boto3's usual credentials (environment, web identity in a pod);
    ``AWS_ENDPOINT_URL`` points it at any S3-compatible server. A missing file, or another
    format, is a :class:`DataError` naming the location.
    """
    name = str(location).split("?")[0].lower()
    suffix = next((s for s in TABLE_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise DataError(f"cannot read raw table '{location}': only {', '.join(TABLE_SUFFIXES)} files are read",
                        hint="convert it, or read it in the dataset plug-in's own code")
    if not is_uri(location):
        path = Path(location).expanduser()
        if not path.is_file():
            raise DataError(f"raw table file '{path}' does not exist", hint="check dataset.source_dir")
        if suffix == ".parquet":
            return decimals_as_floats(read_parquet(path))
        return read_csv(path, location, dtype=dict.fromkeys(text_columns, str) or None)
    data = _object_bytes(str(location))
    if suffix == ".parquet":
        from kfops.adapters.state_store import parquet_frame

        return decimals_as_floats(parquet_frame(data))
    return read_csv(io.BytesIO(data), location, compression=_CSV_COMPRESSION[suffix],
                    dtype=dict.fromkeys(text_columns, str) or None)


def decimals_as_floats(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet DECIMAL columns (money from a warehouse export) as floats: pandas gives them as
    ``decimal.Decimal`` objects, which read as text of a value per row, not as numbers."""
    import decimal

    for column in frame.columns:
        if frame[column].dtype == object:
            present = frame[column].dropna()
            if len(present) and isinstance(present.iloc[0], decimal.Decimal):
                try:
                    frame[column] = frame[column].astype("float64")
                except (TypeError, ValueError, decimal.InvalidOperation):  # mixed with text: left as it is
                    continue
    return frame


def _object_bytes(uri: str) -> bytes:
    scheme = uri.partition("://")[0]
    if scheme != "s3":
        raise ConfigError(f"cannot read '{uri}': kfops reads raw files from local folders and s3:// only",
                          hint="set dataset.source_dir to a folder or an s3://bucket/prefix")
    from kfops.adapters import s3

    return s3.read_uri(uri)
