"""Reading parquet files and folders into pandas.

``pd.read_parquet`` opens a local file itself and hands pyarrow the Python file object; pyarrow
reads it on its I/O threads, and a process that exits right after such a read aborts now and
then ("terminate called without an active exception", exit 134; apache/arrow#34314: about one
exit in eight on pyarrow 24 and 25 here). Given a filesystem, pandas passes the path instead and
pyarrow reads it natively, which has never aborted. Every parquet read in kfops goes through here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

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
