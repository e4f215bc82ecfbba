"""Step 6, register: a blessed model becomes a registry version with its lineage and validation
report; an unblessed verdict is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import KfopsError
from kfops.steps.common import definitions_hash, feature_views, step_config

if TYPE_CHECKING:

    from kfops.config import KfopsConfig


def register(
    config: KfopsConfig | str, run_id: str, verdict_json: Path, validation_summary: Path, raw_manifest: Path,
    pipeline_run: str, task_key: str = "register",
) -> dict[str, Any]:
    """Register a blessed model (idempotently) as @challenger; bootstrap @champion when there is none."""
    from kfops.adapters import mlflow_registry as registry

    cfg = step_config(config)
    verdict = json.loads(Path(verdict_json).read_text())
    if not verdict.get("blessed"):
        raise KfopsError("refusing to register a model the gate did not bless")
    manifest = json.loads(Path(raw_manifest).read_text()) if Path(raw_manifest).is_file() else {}
    validation = json.loads(Path(validation_summary).read_text()) if Path(validation_summary).is_file() else {}
    mlflow_client = registry.client(cfg)
    run = registry.retry(lambda: mlflow_client.get_run(run_id), f"read run {run_id}")
    model_uri = run.data.tags.get("kfops.model_uri")
    if not model_uri:
        raise KfopsError(f"run {run_id} logged no model", hint="the train step must run before register")
    tags = {
        "kfops.pipeline_run": pipeline_run,
        "kfops.run_id": run_id,
        "kfops.data_hash": manifest.get("data_hash", "unknown"),
        "kfops.window": ",".join(manifest.get("window", [])),
        "kfops.validation": "passed" if validation.get("success", True) else "failed",
        "kfops.validation_report": _validation_report(Path(validation_summary)),
        "kfops.feature_views": feature_views(cfg),
        "kfops.feature_definitions": definitions_hash(cfg),
        "kfops.code_version": registry.code_version(),
        "kfops.trainer": cfg.train.trainer,
        "kfops.trainer_config": cfg.train.model_dump_json()[:4900],
        "kfops.blessed": "true",
        "kfops.test_roc_auc": f"{verdict['metrics']['roc_auc']:.4f}",
        "kfops.gate": " | ".join(verdict["verdict"]["reasons"])[:4900],
    }
    # The data contract's result travels with the model: summary and report on the training run.
    for path in (Path(validation_summary), Path(tags["kfops.validation_report"] or validation_summary)):
        if path.is_file():
            registry.retry(lambda p=path: mlflow_client.log_artifact(run_id, str(p), artifact_path="validation"),
                           "log the validation report")
    version, created = registry.register_version(cfg, run_id, model_uri, tags, f"{pipeline_run}/{task_key}")
    if created:
        registry.move_alias(cfg, registry.CHALLENGER, version.version, reason="blessed by the evaluation gate",
                            who="kfops-pipeline")
    champion = registry.champion(cfg)
    promoted = None
    if champion is None:
        promoted = registry.move_alias(cfg, registry.CHAMPION, version.version, who="kfops-pipeline",
                                       reason="bootstrap: no champion existed")
    elif cfg.registry.auto_promote and champion.version != version.version:
        promoted = registry.move_alias(cfg, registry.CHAMPION, version.version, who="kfops-pipeline",
                                       reason="auto_promote: blessed by the gate")
    return {"model_name": cfg.registry.model_name, "version": str(version.version), "created": created,
            "promoted": promoted is not None}


def _validation_report(summary: Path) -> str:
    """The HTML report written beside the summary (KFP names it `report`; in-process callers `report.html`)."""
    for name in ("report", "report.html"):
        if summary.with_name(name).is_file():
            return str(summary.with_name(name))
    return ""
