"""Step 4, train: fit the configured trainer on the training split and log the run to MLflow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from kfops.core.splits import SPLIT_COLUMN
from kfops.steps.common import load_training_set, step_config

log = logging.getLogger(__name__)

if TYPE_CHECKING:

    from kfops.config import KfopsConfig



def train(
    config: KfopsConfig | str, training_set: Path, model_dir: Path, pipeline_run: str, data_hash: str = ""
) -> str:
    """Fit the configured trainer, save the kfops model folder, log the run to MLflow; returns the run id."""
    import pandas as pd

    from kfops.adapters import mlflow_registry as registry
    from kfops.core.columns import check_config_columns
    from kfops.core.evaluation import choose_threshold
    from kfops.core.model import FeatureSpec, predict_proba, save_model
    from kfops.core.monitoring import PROFILE_KEY, model_profile
    cfg = step_config(config)
    frame = load_training_set(training_set)
    # Before any fitting: a gate or feature column the training set lacks would fail only after training.
    check_config_columns(frame.columns, cfg, where="the training set")
    missing_features = [name for name in cfg.feature_columns if name not in frame.columns]
    if missing_features:
        from kfops.errors import MissingColumnsError

        raise MissingColumnsError(f"the training set lacks model features: {', '.join(missing_features)}",
                                  missing={"features": missing_features})
    parts = {name: frame[frame[SPLIT_COLUMN] == name] for name in ("train", "validation")}
    spec = FeatureSpec.fit(parts["train"], cfg.feature_columns, cfg.features.categorical, label=cfg.dataset.label)
    work_dir = cfg.data_dir / "work" / "train" / (pipeline_run or "adhoc")
    result = fit(cfg, parts["train"], parts["validation"], spec, work_dir, pipeline_run)
    val_proba = predict_proba(result.model, parts["validation"])
    result.model.threshold = choose_threshold(parts["validation"][cfg.dataset.label].to_numpy(), val_proba)
    # What the retrain triggers compare the champion with later: its test AUC (DeLong SE), its
    # calibrator (validation split) and feature importance, measured now and kept with the model.
    profile = model_profile(result.model, parts["validation"], frame[frame[SPLIT_COLUMN] == "test"],
                            cfg.dataset.label, seed=cfg.drift.seed)
    save_model(result.model, Path(model_dir),
               metadata={"pipeline_run": pipeline_run, "data_hash": data_hash, PROFILE_KEY: profile})

    experiment_id = registry.ensure_experiment(cfg)
    with registry.start_run(cfg, experiment_id, run_name=f"train-{pipeline_run}"[:250]) as run:
        run.set_tags({"kfops.pipeline_run": pipeline_run, "kfops.data_hash": data_hash,
                      "kfops.trainer": cfg.train.trainer, "kfops.window": cfg.window_name})
        run.log_params({k: v for k, v in result.params.items()})
        run.log_params({"threshold": round(result.model.threshold, 6), "train_rows": len(parts["train"]),
                        "validation_rows": len(parts["validation"]), "features": len(spec.columns)})
        run.log_metrics(result.metrics)
        run.log_metrics({"monitoring.reference_roc_auc": profile["reference"]["roc_auc"],
                         "monitoring.reference_roc_auc_se": profile["reference"]["roc_auc_se"],
                         "monitoring.calibration_error_raw": profile["calibration"]["error_raw"],
                         "monitoring.calibration_error": profile["calibration"]["error_calibrated"]})
        run.log_dict(profile, "monitoring/profile.json")
        example = parts["validation"][spec.columns].head(5).reset_index(drop=True)
        proba = predict_proba(result.model, example)
        outputs = pd.DataFrame({"probability": proba, "prediction": (proba >= result.model.threshold).astype(int)})
        model_uri = run.log_model(Path(model_dir), example, outputs)
        run.set_tag("kfops.model_uri", model_uri)
        return run.run_id


def fit(cfg: KfopsConfig, train_part, validation_part, spec, work_dir: Path, pipeline_run: str):
    """The configured trainer here, or, for torch on several nodes, a TrainJob on the cluster."""
    if cfg.train.trainer == "torch" and cfg.train.torch.num_nodes > 1:
        return _train_on_nodes(cfg, train_part, validation_part, spec, work_dir, pipeline_run)
    from kfops.training import train_model

    return train_model(train_part, validation_part, spec, cfg.train, work_dir, project_dir=cfg.resolved_against)


def _train_on_nodes(cfg: KfopsConfig, train_part, validation_part, spec, work_dir: Path, pipeline_run: str):
    """torch on ``num_nodes`` nodes: a Kubeflow Trainer TrainJob in the pipeline's namespace, job and model via S3."""
    from kfops.adapters import trainjob
    from kfops.errors import ConfigError

    namespace = cfg.cluster.namespace
    if not namespace:
        raise ConfigError(
            f"train.torch.num_nodes={cfg.train.torch.num_nodes} runs a TrainJob, and cluster.namespace is not set",
            hint="set cluster.namespace to the namespace KFP runs pipelines in (kfops config from-terraform sets it)",
        )

    def report(condition: dict) -> None:
        log.info("TrainJob: %s=%s %s", condition.get("type"), condition.get("status"), condition.get("message") or "")

    return trainjob.train_torch_on_cluster(
        train_part, validation_part, spec, cfg.train.torch, cfg.cluster, work_dir,
        name=trainjob.trainjob_name(pipeline_run or "adhoc"), namespace=namespace,
        timeout_s=cfg.train.torch.trainjob_timeout_s, on_condition=report,
    )
