"""Trainers. ``train_model`` picks one from config; each returns a :class:`kfops.core.model.TabularModel`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import DataError, KfopsError, TrainingError

log = logging.getLogger(__name__)

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
    project_dir: Path | None = None,
) -> TrainResult:
    check_trainable(train, spec.label, "train")
    check_trainable(validation, spec.label, "validation")
    if cfg.plugin is not None:
        return train_plugin(train, validation, spec, cfg, Path(work_dir), project_dir)
    if cfg.trainer == "xgboost":
        from kfops.training.xgb import train_xgboost

        return train_xgboost(train, validation, spec, cfg.xgboost, seed=cfg.seed)
    if cfg.trainer == "torch":
        from kfops.training.torch_trainer import train_torch

        return train_torch(train, validation, spec, cfg.torch, work_dir=Path(work_dir))
    raise TrainingError(f"unknown trainer '{cfg.trainer}'", hint="set train.trainer to xgboost or torch")


def train_plugin(train: pd.DataFrame, validation: pd.DataFrame, spec: FeatureSpec, cfg: TrainConfig,
                 work_dir: Path, project_dir: Path | None = None) -> TrainResult:
    """Fit ``train.trainer: module:Class`` on the encoded splits; the model it returns is checked on
    the validation split before anything else sees it."""
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    from kfops.core.model import PluginModel, TrainingData, import_plugin

    plugin = import_plugin(str(cfg.plugin), project_dir)
    labels = {name: frame[spec.label].to_numpy(dtype=np.int64) for name, frame in
              (("train", train), ("validation", validation))}
    data = TrainingData(train=spec.encode(train), train_labels=labels["train"],
                        validation=spec.encode(validation), validation_labels=labels["validation"],
                        spec=spec, seed=cfg.seed, work_dir=Path(work_dir))
    log.info("training with the plug-in trainer %s", cfg.plugin)
    try:
        inner = plugin.fit(data, dict(cfg.params))
    except (KfopsError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:
        raise TrainingError(f"trainer {cfg.plugin} failed in fit: {type(err).__name__}: {err}",
                            hint="the traceback above is the plug-in's; train.params holds what it was given") from err
    model = PluginModel(str(cfg.plugin), inner, spec)
    validation_proba = model.predict_proba_encoded(data.validation)
    metrics = {"validation_auc": float(roc_auc_score(labels["validation"], validation_proba)),
               "validation_logloss": float(log_loss(labels["validation"], np.clip(validation_proba, 1e-7, 1 - 1e-7)))}
    params = {f"params.{key}": value for key, value in cfg.params.items()}
    params.update(trainer=str(cfg.plugin), seed=cfg.seed)
    return TrainResult(model=model, params=params, metrics=metrics)
