"""Step 5, evaluate: the challenger against ``@champion`` on the same test split; the gate fails
closed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.splits import SPLIT_COLUMN
from kfops.errors import DataError
from kfops.steps.common import load_training_set, step_config

if TYPE_CHECKING:

    from kfops.config import KfopsConfig


def evaluate(
    config: KfopsConfig | str, training_set: Path, model_dir: Path, run_id: str, verdict_json: Path, plots_html: Path
) -> dict[str, Any]:
    """Score challenger and champion on the same frozen test split; write the verdict; log to MLflow."""
    from kfops.adapters import mlflow_registry as registry
    from kfops.core.evaluation import (
        Check,
        behavioural_checks,
        classification_metrics,
        gate,
        slice_metrics,
    )
    from kfops.core.model import UnnamedPlugin, load_model, predict_proba
    from kfops.reports import plots

    cfg = step_config(config)
    frame = load_training_set(training_set)
    test = frame[frame[SPLIT_COLUMN] == "test"]
    if test.empty:
        raise DataError("the test split is empty", hint="widen the window or lower split fractions")
    y_true = test[cfg.dataset.label].to_numpy()
    model = load_model(Path(model_dir), cfg.train.plugins, cfg.resolved_against)
    proba = predict_proba(model, test)
    metrics = classification_metrics(y_true, proba, model.threshold, cfg.evaluate.calibration_bins)
    gate_cfg = cfg.evaluate.gate
    slices = slice_metrics(test, y_true, proba, gate_cfg.slices, gate_cfg.min_slice_rows)

    champion_metrics = champion_slices = champion_version = None
    champion_proba = None
    behaviour = (behavioural_checks(model, test, cfg.evaluate.invariant_columns, cfg.evaluate.non_decreasing_columns)
                 if cfg.evaluate.behavioural_checks else [])
    behaviour.append(serving_parity(model.spec, test))
    compared = None  # the challenger's metrics on the rows the champion did not train on, when not all rows
    notes: list[str] = []
    found = registry.champion(cfg)
    champion_model = None
    if found is not None:
        champion_version = found.version
        try:
            champion_model = load_model(registry.fetch_version_dir(cfg, found.version), cfg.train.plugins,
                                        cfg.resolved_against)
        except UnnamedPlugin as err:  # comparing needs the champion's trainer: fail closed, and say how
            behaviour.append(Check("champion:loadable", False, (
                f"champion v{found.version} was written by the plug-in trainer {err.trainer}, which this config does "
                f"not name, so it cannot be scored: add {err.trainer} to train.also_load to compare against it")))
    if found is not None and champion_model is not None:
        champion_proba = predict_proba(champion_model, test)
        unseen, note, refusal = _unseen_by_champion(test, y_true, found, cfg, gate_cfg.min_slice_rows)
        notes += [note] if note else []
        if refusal is not None:
            behaviour.append(refusal)
        else:
            rows, y_seen, p_seen = test[unseen], y_true[unseen], champion_proba[unseen]
            champion_metrics = classification_metrics(y_seen, p_seen, champion_model.threshold,
                                                      cfg.evaluate.calibration_bins)["scalars"]
            champion_slices = slice_metrics(rows, y_seen, p_seen, gate_cfg.slices, gate_cfg.min_slice_rows)
            if not unseen.all():
                compared = classification_metrics(y_seen, proba[unseen], model.threshold,
                                                  cfg.evaluate.calibration_bins)["scalars"]
                slices_compared = slice_metrics(rows, y_seen, proba[unseen], gate_cfg.slices, gate_cfg.min_slice_rows)
    verdict = gate(metrics["scalars"], gate_cfg, champion_metrics, slices if compared is None else slices_compared,
                   champion_slices, behaviour, champion_version, challenger_vs_champion=compared)
    verdict.reasons += notes
    missing = [c for c in gate_cfg.slices if c not in test.columns]
    if missing:
        verdict.reasons.append(f"NOTE slices: {', '.join(missing)} not in the test data, so not judged")
    summary = {
        "trained_through": _trained_through(frame, cfg),
        "blessed": verdict.blessed,
        "verdict": verdict.to_dict(),
        "metrics": metrics["scalars"],
        "champion_metrics": champion_metrics,
        "slices": slices,
        "champion_slices": champion_slices,
        "roc": metrics["roc"],
        "confusion_matrix": metrics["confusion_matrix"],
        "class_names": list(cfg.dataset.class_names),
        "calibration": metrics["calibration"],
    }
    Path(verdict_json).parent.mkdir(parents=True, exist_ok=True)
    Path(verdict_json).write_text(json.dumps(summary, indent=2, default=float))
    figures = plots.evaluation_figures(y_true, proba, champion_proba, metrics, slices, champion_slices)
    plots.write_html(figures, Path(plots_html), title="kfops evaluation", verdict=verdict.reasons)

    with registry.resume_run(cfg, run_id) as run:
        run.log_metrics({f"test_{k}": v for k, v in metrics["scalars"].items() if isinstance(v, float)})
        failed = [reason.removeprefix("FAIL ") for reason in verdict.reasons if reason.startswith("FAIL ")]
        run.set_tags({registry.BLESSED_TAG: str(verdict.blessed).lower(),
                      "kfops.champion_version": champion_version or "none",
                      # What a notification of a refusal names (MLflow keeps tag values under 5,000 characters).
                      registry.FAILED_CHECKS_TAG: " | ".join(failed)[:4900]})
        run.log_dict(summary, "evaluation/verdict.json")
        for name, figure in figures.items():
            run.log_figure(figure, f"evaluation/{name}.png")
    plots.close(figures)
    return summary


def _trained_through(frame, cfg: KfopsConfig) -> str | None:
    """The last event time the model trained on (train and validation splits): register tags the
    version with it, so a later gate scores this model only on rows it did not see."""
    import pandas as pd

    seen = pd.to_datetime(frame.loc[frame[SPLIT_COLUMN] != "test", cfg.dataset.event_timestamp], utc=True)
    return None if seen.empty else seen.max().isoformat()


def _unseen_by_champion(test, y_true, champion, cfg: KfopsConfig, min_rows: int):
    """(mask of test rows the champion did not train on, a NOTE or None, a failing Check or None).

    Scoring the champion on rows it trained on flatters it (in-sample), so a challenger on an
    earlier or overlapping window was refused for a loss that was not there. Those rows are left
    out of the comparison; when too few remain to compare, the gate refuses (fails closed) and says why.
    """
    import numpy as np

    from kfops.core.evaluation import Check, champion_training_span, seen_in_training

    span = champion_training_span(dict(champion.tags), cfg.validation.window_timezone)
    if span is None:
        return (np.ones(len(test), dtype=bool),
                f"NOTE champion v{champion.version} carries no training window (kfops.window): compared on every "
                "test row", None)
    unseen = ~seen_in_training(test[cfg.dataset.event_timestamp], span)
    if unseen.all():
        return unseen, None, None
    through = f"{span[0]:%Y-%m-%d} to {span[1]:%Y-%m-%d %H:%M} UTC"
    left = int(unseen.sum())
    if left < min_rows or len(np.unique(y_true[unseen])) < 2:
        return unseen, None, Check(
            "champion:unseen_rows", False,
            f"champion v{champion.version} trained on {len(test) - left:,} of the {len(test):,} test rows (its "
            f"training data runs {through}); the {left:,} it did not see are too few to compare on (need "
            f"{min_rows}, evaluate.gate.min_slice_rows, of both classes). Train on a window that ends after the "
            "champion's, or promote by hand with `kfops promote --force`")
    return unseen, (f"NOTE champion v{champion.version} compared on the {left:,} of {len(test):,} test rows it did "
                    f"not train on (its training data runs {through})"), None


def serving_parity(spec, test):
    """A check that the server takes the test rows as JSON clients send them and encodes them as
    training did: a model it would refuse or misread is not blessed (and so never @champion)."""
    from kfops.core.evaluation import Check
    from kfops.serving.protocol.parity import request_parity_problem

    problem = request_parity_problem(spec, test)
    return Check("serving:parity", problem is None,
                 problem or f"the server reads {min(len(test), 200)} test rows sent as JSON as training did")
