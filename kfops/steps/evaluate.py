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
        behavioural_checks,
        classification_metrics,
        gate,
        slice_metrics,
    )
    from kfops.core.model import load_model, predict_proba
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
    found = registry.champion(cfg)
    if found is not None:
        champion_version = found.version
        champion_model = load_model(registry.fetch_version_dir(cfg, found.version), cfg.train.plugins,
                                    cfg.resolved_against)
        champion_proba = predict_proba(champion_model, test)
        champion_metrics = classification_metrics(y_true, champion_proba, champion_model.threshold,
                                                  cfg.evaluate.calibration_bins)["scalars"]
        champion_slices = slice_metrics(test, y_true, champion_proba, gate_cfg.slices, gate_cfg.min_slice_rows)
    behaviour = (behavioural_checks(model, test, cfg.evaluate.invariant_columns, cfg.evaluate.non_decreasing_columns)
                 if cfg.evaluate.behavioural_checks else [])
    behaviour.append(serving_parity(model.spec, test))
    verdict = gate(metrics["scalars"], gate_cfg, champion_metrics, slices, champion_slices, behaviour, champion_version)
    missing = [c for c in gate_cfg.slices if c not in test.columns]
    if missing:
        verdict.reasons.append(f"NOTE slices: {', '.join(missing)} not in the test data, so not judged")
    summary = {
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
        run.set_tags({"kfops.blessed": str(verdict.blessed).lower(),
                      "kfops.champion_version": champion_version or "none"})
        run.log_dict(summary, "evaluation/verdict.json")
        for name, figure in figures.items():
            run.log_figure(figure, f"evaluation/{name}.png")
    plots.close(figures)
    return summary


def serving_parity(spec, test):
    """A check that the server takes the test rows as JSON clients send them and encodes them as
    training did: a model it would refuse or misread is not blessed (and so never @champion)."""
    from kfops.core.evaluation import Check
    from kfops.serving.protocol.parity import request_parity_problem

    problem = request_parity_problem(spec, test)
    return Check("serving:parity", problem is None,
                 problem or f"the server reads {min(len(test), 200)} test rows sent as JSON as training did")
