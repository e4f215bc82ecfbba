"""XGBoost: hist trees with native categorical splits, early stopping, UBJ weights (no pickle)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kfops.core.model import FeatureSpec

if TYPE_CHECKING:
    import pandas as pd
    import xgboost as xgb

    from kfops.config import XGBoostConfig
    from kfops.progress import Progress
    from kfops.training import TrainResult

WEIGHTS_FILE = "model.ubj"


# Device nodes a CUDA (or ROCm, or WSL) GPU driver creates: without one, torch.cuda.is_available()
# is False, and importing torch (seconds) to be told so is skipped.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def gpu_available() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    if not any(os.path.exists(node) for node in GPU_DEVICE_NODES):
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


class XGBoostModel:
    trainer = "xgboost"

    def __init__(self, booster, spec: FeatureSpec, threshold: float = 0.5):
        self.booster = booster
        self.spec = spec
        self.threshold = threshold

    def predict_proba_encoded(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(matrix, validate_features=False), dtype=np.float64)

    def save_weights(self, folder: Path) -> None:
        self.booster.save_model(str(Path(folder) / WEIGHTS_FILE))

    @classmethod
    def load(cls, folder: Path, spec: FeatureSpec, threshold: float) -> XGBoostModel:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(Path(folder) / WEIGHTS_FILE))
        booster.set_param({"device": "cpu"})
        return cls(booster, spec, threshold)


def progress_callback(bar: Progress) -> xgb.callback.TrainingCallback:
    """An XGBoost callback that advances ``bar`` one step per boosting round, with the latest
    validation scores as the step's message (shown on the bar's cadence, not every round)."""
    import xgboost as xgb

    class _Progress(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch: int, evals_log: dict) -> bool:
            scores = [f"{data} {metric} {values[-1]:.4f}"
                      for data, metrics in evals_log.items() for metric, values in metrics.items() if values]
            bar.advance(message=", ".join(scores) or None)
            return False  # never asks to stop; early stopping is xgboost's own callback

    return _Progress()


def train_xgboost(
    train: pd.DataFrame, validation: pd.DataFrame, spec: FeatureSpec, cfg: XGBoostConfig, seed: int = 42
) -> TrainResult:
    import xgboost as xgb

    from kfops.progress import progress
    from kfops.training import TrainResult

    device = cfg.device
    if device == "auto":
        device = "cuda" if gpu_available() else "cpu"
    params = {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
        "tree_method": "hist",
        "device": device,
        "learning_rate": cfg.learning_rate,
        "max_depth": cfg.max_depth,
        "min_child_weight": cfg.min_child_weight,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "max_cat_to_onehot": cfg.max_cat_to_onehot,
        "seed": seed,
    }
    if cfg.nthread:
        params["nthread"] = cfg.nthread

    def matrix(frame: pd.DataFrame) -> xgb.DMatrix:
        return xgb.DMatrix(spec.encode(frame), label=frame[spec.label].to_numpy(),
                           feature_names=spec.columns, feature_types=spec.feature_types, enable_categorical=True)

    dtrain, dval = matrix(train), matrix(validation)
    history: dict = {}
    with progress("xgboost: boosting", total=cfg.n_estimators, unit="round") as bar:
        booster = xgb.train(
            # Only validation is scored each round: scoring the train split too doubles the cost.
            params, dtrain, num_boost_round=cfg.n_estimators, evals=[(dval, "validation")],
            early_stopping_rounds=cfg.early_stopping_rounds, evals_result=history, verbose_eval=False,
            callbacks=[progress_callback(bar)],
        )
        if booster.num_boosted_rounds() < cfg.n_estimators:
            bar.finish(f"early stopping: best round {booster.best_iteration + 1}")
    # Keep only the best iteration, so inplace_predict on the saved model needs no iteration_range.
    booster = booster[: booster.best_iteration + 1]
    booster.set_param({"device": "cpu"})
    metrics = {
        "best_iteration": float(booster.num_boosted_rounds()),
        "validation_logloss": float(history["validation"]["logloss"][booster.num_boosted_rounds() - 1]),
        "validation_auc": float(history["validation"]["auc"][booster.num_boosted_rounds() - 1]),
    }
    logged = {k: (v if not isinstance(v, list) else ",".join(v)) for k, v in params.items()}
    logged.update(n_estimators=cfg.n_estimators, early_stopping_rounds=cfg.early_stopping_rounds, trainer="xgboost")
    return TrainResult(model=XGBoostModel(booster, spec), params=logged, metrics=metrics)
