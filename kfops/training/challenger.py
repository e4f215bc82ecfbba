"""A challenger on one window, and the evaluate gate's verdict on it against the champion.

Shared by ``kfops backtest`` (every challenger it replays) and the retraining pipeline's drift
step (the ``challenger`` trigger's shadow challenger), so both train and judge one way: the
configured trainer on the window's time split, then the gate of the evaluate step (floors,
improvement over the champion, slices, behaviour) on the window's test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig
    from kfops.core.model import TabularModel


def split_window(frame: pd.DataFrame, cfg: KfopsConfig) -> dict[str, pd.DataFrame]:
    """The configured time split of a labelled window: train, validation and test frames."""
    from kfops.core.splits import split_by_time

    split = split_by_time(frame, cfg)
    return {name: frame[split == name] for name in ("train", "validation", "test")}


def untrainable_reason(frame: pd.DataFrame, cfg: KfopsConfig) -> str | None:
    """Why :func:`train_on_window` would refuse this labelled window (its train or validation
    split is empty or has one class only), or None when it can train on it. The trainer's own
    check, asked before training, so a caller can fall back to another window instead of failing."""
    from kfops.errors import DataError
    from kfops.training import check_trainable

    parts = split_window(frame, cfg)
    try:
        for name in ("train", "validation"):
            check_trainable(parts[name], cfg.dataset.label, name)
    except DataError as err:
        return str(err)
    return None


def train_on_window(frame: pd.DataFrame, cfg: KfopsConfig, work_dir: Path) -> tuple[TabularModel, dict[str, pd.DataFrame]]:
    """Fit the configured trainer on a labelled window's train split, threshold on its validation split."""
    from kfops.core.evaluation import choose_threshold
    from kfops.core.model import FeatureSpec, predict_proba
    from kfops.training import train_model

    parts = split_window(frame, cfg)
    spec = FeatureSpec.fit(parts["train"], cfg.feature_columns, cfg.features.categorical, label=cfg.dataset.label)
    result = train_model(parts["train"], parts["validation"], spec, cfg.train, Path(work_dir),
                         project_dir=cfg.resolved_against)
    proba = predict_proba(result.model, parts["validation"])
    result.model.threshold = choose_threshold(parts["validation"][cfg.dataset.label].to_numpy(), proba)
    return result.model, parts


def judge(challenger: TabularModel, champion: TabularModel, test: pd.DataFrame, cfg: KfopsConfig) -> tuple[bool, dict]:
    """The evaluate step's gate: challenger against champion on the same test split."""
    from kfops.core.evaluation import behavioural_checks, classification_metrics, gate, slice_metrics
    from kfops.core.model import predict_proba

    y_true = test[cfg.dataset.label].to_numpy()
    gate_cfg = cfg.evaluate.gate
    scored = {}
    for name, model in (("challenger", challenger), ("champion", champion)):
        proba = predict_proba(model, test)
        scored[name] = (classification_metrics(y_true, proba, model.threshold, cfg.evaluate.calibration_bins)["scalars"],
                        slice_metrics(test, y_true, proba, gate_cfg.slices, gate_cfg.min_slice_rows))
    behaviour = (behavioural_checks(challenger, test, cfg.evaluate.invariant_columns, cfg.evaluate.non_decreasing_columns)
                 if cfg.evaluate.behavioural_checks else [])
    verdict = gate(scored["challenger"][0], gate_cfg, scored["champion"][0], scored["challenger"][1],
                   scored["champion"][1], behaviour)  # the champion's version is the caller's to name
    return verdict.blessed, {"challenger": scored["challenger"][0], "champion": scored["champion"][0],
                             "reasons": verdict.reasons}


def gate_failures(reasons: list[str]) -> str:
    """The failed checks among the evaluate gate's ``reasons`` ('FAIL name: detail'), one line:
    'floor:roc_auc: roc_auc 0.6361, needs >= 0.65; slices:max_regression: worst slice region=B6 drops ...'."""
    return "; ".join(reason.removeprefix("FAIL ") for reason in reasons if reason.startswith("FAIL "))


def challenger_signals(blessed: bool, judged: dict[str, Any], rows: int) -> dict[str, float]:
    """The ``challenger`` trigger's evidence, as flat numbers (metrics-ready)."""
    nan = float("nan")
    challenger_auc = float(judged["challenger"].get("roc_auc", nan))
    champion_auc = float(judged["champion"].get("roc_auc", nan))
    return {"challenger_blessed": float(blessed), "challenger_roc_auc": challenger_auc,
            "challenger_champion_roc_auc": champion_auc, "challenger_gain": challenger_auc - champion_auc,
            "challenger_rows": float(rows)}


def shadow_challenger(cfg: KfopsConfig, champion: TabularModel, labelled: pd.DataFrame,
                      work_dir: Path) -> tuple[dict[str, float], list[str]]:
    """Train a challenger on ``labelled`` (the window's rows whose labels exist) and judge it
    against ``champion`` as the evaluate step would: its evidence and the gate's reasons. Nothing
    is registered; a retrain (the training pipeline) makes the model that may be promoted."""
    model, parts = train_on_window(labelled, cfg, work_dir)
    blessed, judged = judge(model, champion, parts["test"], cfg)
    return challenger_signals(blessed, judged, len(labelled)), list(judged["reasons"])
