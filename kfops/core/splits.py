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
    """train / validation / test by event time, never at random; a timestamp never spans two splits.

    A column of ``frame`` already named :data:`SPLIT_COLUMN` (a feature called 'split') is a
    DataError: the split would replace it, and validation then fail on values it never held."""
    import numpy as np
    import pandas as pd

    from kfops.errors import DataError

    if SPLIT_COLUMN in frame.columns:
        raise DataError(f"the training set already has a column named '{SPLIT_COLUMN}', the name of the "
                        "train/validation/test split kfops adds",
                        hint=f"rename that column in the entity builder or the feature view (a request feature "
                        f"'{SPLIT_COLUMN}' in features.request_features, say)")

    times = frame[cfg.dataset.event_timestamp]
    cut_train = times.quantile(cfg.split.train_fraction)
    cut_val = times.quantile(cfg.split.train_fraction + cfg.split.validation_fraction)
    split = np.where(times <= cut_train, "train", np.where(times <= cut_val, "validation", "test"))
    return pd.Series(split, index=frame.index, name=SPLIT_COLUMN)


# ROC AUC, and DeLong's standard error of it, need this many rows of each class in a split.
MIN_CLASS_ROWS = 2


def check_split_classes(frame: pd.DataFrame, cfg: KfopsConfig) -> None:
    """Raise a DataError for a split of ``frame`` (by :data:`SPLIT_COLUMN`) with too few rows of a class.

    Training needs both classes in train and validation, and the evaluate gate an AUC on test; a
    short window or a rare label leaves a split without positives. Asked once the training set is
    built, so the error names the split, its rows and its days before anything is trained.
    """
    from kfops.errors import DataError

    label, times = cfg.dataset.label, cfg.dataset.event_timestamp
    for name in ("train", "validation", "test"):
        part = frame[frame[SPLIT_COLUMN] == name]
        counts = part[label].value_counts()
        short = [(cls, int(counts.get(cls, 0))) for cls in (1, 0) if counts.get(cls, 0) < MIN_CLASS_ROWS]
        if not short:
            continue
        days = f", {part[times].min():%Y-%m-%d}..{part[times].max():%Y-%m-%d}" if len(part) else ""
        found = " and ".join(f"{count} row(s) of class {cls}" for cls, count in short)
        raise DataError(
            f"the {name} split ({len(part):,} rows{days}) has {found} in '{label}': a model needs "
            f"{MIN_CLASS_ROWS} rows of each class in every split, to learn, to choose its threshold and to be "
            f"judged (ROC AUC) (label rate {frame[label].mean():.3f} over {len(frame):,} rows)",
            hint=f"widen the window (dataset.start/dataset.end), or give the {name} split a larger share of it "
            f"(split.train_fraction {cfg.split.train_fraction}, split.validation_fraction "
            f"{cfg.split.validation_fraction}; test takes the rest)",
        )
