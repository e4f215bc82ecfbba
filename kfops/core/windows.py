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
    """A copy of ``cfg`` whose dataset window is [start, end] (validated, as ``--set`` would be)."""
    from kfops.config import DatasetConfig

    if end < start:
        raise ConfigError(f"window {start}..{end} ends before it starts")
    updated = cfg.model_copy(deep=True)
    updated.dataset = DatasetConfig.model_validate({**cfg.dataset.model_dump(), "start": start, "end": end})
    return updated


def moving_window(days: int, today: dt.date) -> tuple[dt.date, dt.date]:
    """The ``days`` whole days before ``today``: a run at 03:00 checks and trains on days that are over."""
    if days < 1:
        raise ConfigError(f"a window of {days} days holds no day", hint="pass --window-days 1 or more")
    end = today - dt.timedelta(days=1)
    return end - dt.timedelta(days=days - 1), end


def window_before(cfg: KfopsConfig, days: int, at: dt.datetime) -> KfopsConfig:
    """``cfg`` over the ``days`` whole days before the day of ``at`` in ``validation.window_timezone``.

    One rule for both schedulers: a local scheduler's tick and a KFP recurring run's schedule time
    (``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``) give the same window for the same time."""
    from zoneinfo import ZoneInfo

    at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    today = at.astimezone(ZoneInfo(cfg.validation.window_timezone)).date()
    return window_config(cfg, *moving_window(days, today))


def drift_frame(frame: pd.DataFrame, cfg: KfopsConfig) -> pd.DataFrame:
    """Only what the drift tests should see: the model's inputs, plus the label when present."""
    missing = [c for c in cfg.feature_columns if c not in frame.columns]
    if missing:
        raise DataError(f"the data lacks feature column(s) {', '.join(missing)}",
                        hint="build it with the configured loader and feature refs")
    clash = [name for name in (cfg.drift.label_column, cfg.drift.prediction_column) if name in cfg.feature_columns]
    if clash:  # the drift check would take a feature for the label or the score, or find the column twice
        raise ConfigError(
            f"model feature(s) {', '.join(repr(c) for c in clash)} have the name of drift.label_column "
            f"('{cfg.drift.label_column}') or drift.prediction_column ('{cfg.drift.prediction_column}')",
            hint=f"set drift.label_column to the label ({cfg.dataset.label!r}) and drift.prediction_column to a name "
            "no feature has")
    keep = [*cfg.feature_columns, *([cfg.drift.label_column] if cfg.drift.label_column in frame.columns else [])]
    return frame[keep].reset_index(drop=True)
