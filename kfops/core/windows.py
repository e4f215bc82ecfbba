"""Data windows: parse ``START:END`` windows, a config narrowed to one, and the frame that the
drift check compares.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from kfops.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig


def parse_window(text: str) -> tuple[dt.date, dt.date]:
    """'2013-01-01,2013-01-14' (the format of the `kfops.window` registry tag) -> dates."""
    parts = [p.strip() for p in text.split(",")]
    try:
        start, end = (dt.date.fromisoformat(p) for p in parts)
    except ValueError as err:
        raise ConfigError(f"window '{text}' must be 'YYYY-MM-DD,YYYY-MM-DD'",
                          hint="e.g. reference_window='2013-01-01,2013-01-14'") from err
    if end < start:
        raise ConfigError(f"window '{text}' ends before it starts")
    return start, end


def window_config(cfg: KfopsConfig, start: dt.date, end: dt.date) -> KfopsConfig:
    """A copy of ``cfg`` whose dataset window is [start, end]."""
    updated = cfg.model_copy(deep=True)
    updated.dataset = cfg.dataset.model_copy(update={"start": start, "end": end})
    return updated


def drift_frame(frame: pd.DataFrame, cfg: KfopsConfig) -> pd.DataFrame:
    """Only what the drift tests should see: the model's inputs, plus the label when present."""
    missing = [c for c in cfg.feature_columns if c not in frame.columns]
    if missing:
        raise DataError(f"the data lacks feature column(s) {', '.join(missing)}",
                        hint="build it with the configured loader and feature refs")
    keep = [*cfg.feature_columns, *([cfg.drift.label_column] if cfg.drift.label_column in frame.columns else [])]
    return frame[keep].reset_index(drop=True)
