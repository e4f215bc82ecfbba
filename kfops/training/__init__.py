"""Trainers. ``train_model`` picks one from config; each returns a :class:`kfops.core.model.TabularModel`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import DataError, TrainingError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import TrainConfig
    from kfops.core.model import FeatureSpec, TabularModel


@dataclass
class TrainResult:
    model: TabularModel
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)


def check_trainable(frame: pd.DataFrame, label: str, name: str) -> None:
    if frame.empty:
        raise DataError(f"the {name} split has no rows", hint="widen dataset.start/dataset.end")
    counts = frame[label].value_counts()
    for cls in (0, 1):
        if counts.get(cls, 0) == 0:
            raise DataError(
                f"the {name} split has zero rows of class {cls} in '{label}'",
                hint="widen the window: a binary classifier needs both classes",
            )


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    spec: FeatureSpec,
    cfg: TrainConfig,
    work_dir: Path,
) -> TrainResult:
    check_trainable(train, spec.label, "train")
    check_trainable(validation, spec.label, "validation")
    if cfg.trainer == "xgboost":
        from kfops.training.xgb import train_xgboost

        return train_xgboost(train, validation, spec, cfg.xgboost, seed=cfg.seed)
    if cfg.trainer == "torch":
        from kfops.training.torch_trainer import train_torch

        return train_torch(train, validation, spec, cfg.torch, work_dir=Path(work_dir))
    raise TrainingError(f"unknown trainer '{cfg.trainer}'", hint="set train.trainer to xgboost or torch")
