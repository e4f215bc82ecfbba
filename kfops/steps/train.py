"""Step 4, train: fit the configured trainer on the training split and log the run to MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kfops.core.splits import SPLIT_COLUMN
from kfops.steps.common import load_training_set, step_config

if TYPE_CHECKING:

    from kfops.config import KfopsConfig



def train(
    config: KfopsConfig | str, training_set: Path, model_dir: Path, pipeline_run: str, data_hash: str = ""
) -> str:
    """Fit the configured trainer, save the kfops model folder, log the run to MLflow; returns the run id."""
    import pandas as pd

    from kfops.adapters import mlflow_registry as registry
    from kfops.core.evaluation import choose_threshold
    from kfops.core.model import FeatureSpec, predict_proba, save_model
    from kfops.training import train_model

    cfg = step_config(config)
    frame = load_training_set(training_set)
    parts = {name: frame[frame[SPLIT_COLUMN] == name] for name in ("train", "validation")}
    spec = FeatureSpec.fit(parts["train"], cfg.feature_columns, cfg.features.categorical, label=cfg.dataset.label)
    work_dir = cfg.data_dir / "work" / "train" / (pipeline_run or "adhoc")
    result = train_model(parts["train"], parts["validation"], spec, cfg.train, work_dir)
    val_proba = predict_proba(result.model, parts["validation"])
    result.model.threshold = choose_threshold(parts["validation"][cfg.dataset.label].to_numpy(), val_proba)
    save_model(result.model, Path(model_dir), metadata={"pipeline_run": pipeline_run, "data_hash": data_hash})

    experiment_id = registry.ensure_experiment(cfg)
    with registry.start_run(cfg, experiment_id, run_name=f"train-{pipeline_run}"[:250]) as run:
        run.set_tags({"kfops.pipeline_run": pipeline_run, "kfops.data_hash": data_hash,
                      "kfops.trainer": cfg.train.trainer, "kfops.window": cfg.window_name})
        run.log_params({k: v for k, v in result.params.items()})
        run.log_params({"threshold": round(result.model.threshold, 6), "train_rows": len(parts["train"]),
                        "validation_rows": len(parts["validation"]), "features": len(spec.columns)})
        run.log_metrics(result.metrics)
        example = parts["validation"][spec.columns].head(5).reset_index(drop=True)
        proba = predict_proba(result.model, example)
        outputs = pd.DataFrame({"probability": proba, "prediction": (proba >= result.model.threshold).astype(int)})
        model_uri = run.log_model(Path(model_dir), example, outputs)
        run.set_tag("kfops.model_uri", model_uri)
        return run.run_id
