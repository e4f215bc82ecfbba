"""Reading parquet files and folders, and checking CSV files, into pandas.

``pd.read_parquet`` opens a local file itself and hands pyarrow the Python file object; pyarrow
reads it on its I/O threads, and a process that exits right after such a read aborts now and
then ("terminate called without an active exception", exit 134; apache/arrow#34314: about one
exit in eight on pyarrow 24 and 25 here). Given a filesystem, pandas passes the path instead and
pyarrow reads it natively, which has never aborted. Every parquet read in kfops goes through here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd


def read_parquet(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A parquet file or folder as a DataFrame, read by path. URIs (``s3://...``) go to pandas as they are."""
    import pandas as pd

    location = os.fspath(path)
    if "://" in location:
        return pd.read_parquet(location, columns=columns)
    from pyarrow.fs import LocalFileSystem

    return pd.read_parquet(os.path.abspath(location), columns=columns, filesystem=LocalFileSystem())


OTHER_CSV_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def check_csv_columns(frame: pd.DataFrame, location: str | Path) -> pd.DataFrame:
    """``frame`` as pandas read a CSV file; a :class:`DataError` when the header came out as one
    column holding another delimiter (a ';'-separated export, with decimal commas as like as not),
    which would otherwise surface as a missing column, or as one text column of every value."""
    from kfops.errors import DataError

    if len(frame.columns) == 1:
        header = str(frame.columns[0])
        found = [name for mark, name in OTHER_CSV_DELIMITERS.items() if mark in header]
        if found:
            raise DataError(
                f"{location} reads as one column, {header[:120]!r}: it looks {found[0]}-separated, and kfops "
                "reads comma-separated CSV",
                hint="write it comma-separated with '.' decimals, or as parquet (e.g. pd.read_csv(f, sep=';', "
                     "decimal=',').to_parquet(...))")
    return frame


NOT_UTF8_HINT = ("save it as UTF-8 (a spreadsheet's 'CSV UTF-8'; iconv -f cp1252 -t utf-8 in.csv > out.csv), "
                 "or as parquet")


def read_csv(source: Any, location: str | Path, **options: Any) -> pd.DataFrame:
    """``pd.read_csv(source, **options)`` checked by :func:`check_csv_columns`; a file that is not
    UTF-8 (a spreadsheet's 'CSV' export in Windows-1252: 'Zürich' as byte 0xfc) is a DataError that
    says so, and how to convert it, instead of the codec's bare message."""
    import pandas as pd

    from kfops.errors import DataError

    try:
        frame = pd.read_csv(source, **options)
    except UnicodeDecodeError as err:
        raise DataError(f"{location} is not UTF-8 text: it holds byte {err.object[err.start:err.start + 1]!r} "
                        f"({err.reason})",
                        hint=NOT_UTF8_HINT) from None
    return check_csv_columns(frame, location)


def zero_padded_columns(text: pd.DataFrame) -> list[str]:
    """Columns of ``text`` (a CSV read as text) whose values all spell whole numbers, some with a
    leading zero ('02134', '007'): postcodes, account numbers and codes, which a number would change
    ('02134' read as 2134 no longer matches the '02134' a client sends)."""
    padded = []
    for column in text.columns:
        values = text[column].dropna().astype(str)
        # A leading zero first: most columns have none, and the whole-column check is then skipped.
        if len(values) and values.str.match(r"-?0[0-9]").any() and values.str.fullmatch(r"-?[0-9]+").all():
            padded.append(str(column))
    return padded
