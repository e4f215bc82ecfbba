"""Content hashes of tables and the time-based train/validation/test split.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig


SPLIT_COLUMN = "split"


def table_hash(tables: dict[str, pd.DataFrame]) -> str:
    """Content hash of the tables: equal data, equal hash, whatever the file encoding."""
    import pandas as pd

    digest = hashlib.sha256()
    for name in sorted(tables):
        frame = tables[name]
        digest.update(name.encode())
        digest.update(",".join(map(str, frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def split_by_time(frame: pd.DataFrame, cfg: KfopsConfig) -> pd.Series:
    """train / validation / test by event time, never at random; a timestamp never spans two splits."""
    import numpy as np
    import pandas as pd

    times = frame[cfg.dataset.event_timestamp]
    cut_train = times.quantile(cfg.split.train_fraction)
    cut_val = times.quantile(cfg.split.train_fraction + cfg.split.validation_fraction)
    split = np.where(times <= cut_train, "train", np.where(times <= cut_val, "validation", "test"))
    return pd.Series(split, index=frame.index, name=SPLIT_COLUMN)
