"""Step 6, register: a blessed model becomes a registry version with its lineage and validation
report; an unblessed verdict is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.files import plugin_sources_digest
from kfops.errors import KfopsError
from kfops.steps.common import definitions_hash, feature_views, step_config

if TYPE_CHECKING:

    from kfops.config import KfopsConfig


def register(
    config: KfopsConfig | str, run_id: str, verdict_json: Path, validation_summary: Path, raw_manifest: Path,
    pipeline_run: str, task_key: str = "register",
) -> dict[str, Any]:
    """Register a blessed model (idempotently) as @challenger; bootstrap @champion when there is none.

    With ``registry.auto_promote`` it becomes @champion only if @champion still holds the version
    the gate judged it against. Returns the version, whether it was created, ``promoted`` and
    ``promotion`` (why it was or was not promoted).
    """
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
        # The project's own plug-in code (loader, features, trainer), where it has any: what changes most.
        **({"kfops.project_code": code}
           if (code := plugin_sources_digest(cfg.project_plugins().values(), cfg.resolved_against)) else {}),
        "kfops.trainer": cfg.train.trainer,
        "kfops.trainer_config": cfg.train.model_dump_json()[:4900],
        "kfops.blessed": "true",
        "kfops.test_roc_auc": f"{verdict['metrics']['roc_auc']:.4f}",
        # The last event time it trained on: a later gate scores it only on rows after (or before) its data.
        "kfops.trained_through": verdict.get("trained_through") or "",
        "kfops.gate": " | ".join(verdict["verdict"]["reasons"])[:4900],
    }
    # The data contract's result travels with the model: summary and report on the training run.
    for path in (Path(validation_summary), Path(tags["kfops.validation_report"] or validation_summary)):
        if path.is_file():
            registry.retry(lambda p=path: mlflow_client.log_artifact(run_id, str(p), artifact_path="validation"),
                           "log the validation report")
    judged = verdict.get("verdict", {}).get("champion_version")
    tags[registry.REGISTER_STATE_TAG] = "pending"
    tags[registry.JUDGED_TAG] = str(judged) if judged is not None else "none"
    # One register at a time per store: the version, its alias moves and their audit events. A
    # version left "pending" by a register that died midway is finished first, by whoever comes next.
    with registry.store_lock(cfg, "register a model version"):
        for orphan in registry.pending_versions(cfg):
            if orphan.tags.get(registry.IDEMPOTENCY_TAG) != f"{pipeline_run}/{task_key}":
                _finish(cfg, orphan)
        version, created = registry.register_version(cfg, run_id, model_uri, tags, f"{pipeline_run}/{task_key}")
        outcome = _finish(cfg, version)
    return {"model_name": cfg.registry.model_name, "version": str(version.version), "created": created, **outcome}


def _finish(cfg: KfopsConfig, version: Any) -> dict[str, Any]:
    """Move @challenger (and @champion when allowed) to ``version`` and mark it done; idempotent.

    Each move is skipped when already made, so a rerun after a kill anywhere in the sequence
    completes it without a second audit event. @champion moves only when it still holds the
    version the gate judged against (compare-before-move, under the store lock): a verdict
    judged against an older champion, or against none, never replaces the current one.
    """
    from kfops.adapters import mlflow_registry as registry

    number = str(version.version)
    if version.tags.get(registry.REGISTER_STATE_TAG) == "done":
        current = registry.champion(cfg)
        if current is not None and str(current.version) == number:
            return {"promoted": True, "promotion": "already @champion"}
        return {"promoted": False, "promotion": "already registered"}
    challenger = registry.model_version(cfg, alias=registry.CHALLENGER)
    if challenger is None or int(challenger.version) < int(number):  # never move it back to an older one
        registry.move_alias(cfg, registry.CHALLENGER, number, reason="blessed by the evaluation gate",
                            who="kfops-pipeline")
    promoted, why = _promote_if_still_judged(cfg, number, version.tags.get(registry.JUDGED_TAG, "none"))
    registry.set_version_tags(cfg, number, {registry.REGISTER_STATE_TAG: "done"})
    return {"promoted": promoted, "promotion": why}


def _promote_if_still_judged(cfg: KfopsConfig, number: str, judged: str) -> tuple[bool, str]:
    from kfops.adapters import mlflow_registry as registry

    current = registry.champion(cfg)
    if current is not None and str(current.version) == number:
        return True, "already @champion"
    if current is None:
        if judged != "none":
            return False, f"not promoted: the gate judged against v{judged}, which no longer holds @champion"
        registry.move_alias(cfg, registry.CHAMPION, number, who="kfops-pipeline",
                            reason="bootstrap: no champion existed")
        return True, "bootstrap: no champion existed"
    if not cfg.registry.auto_promote:
        return False, "auto_promote is off: promote with `kfops promote`"
    if judged != str(current.version):
        against = f"v{judged}" if judged != "none" else "no champion"
        reason = (f"not promoted: the gate judged this version against {against}, but @champion is "
                  f"v{current.version} now; evaluate it again against the current champion")
        registry.record_audit(cfg, {"action": "promotion_refused", "alias": registry.CHAMPION, "version": number,
                                    "champion": str(current.version), "judged_against": judged,
                                    "reason": reason, "who": "kfops-pipeline"})
        return False, reason
    registry.move_alias(cfg, registry.CHAMPION, number, who="kfops-pipeline", reason="auto_promote: blessed by the gate")
    return True, "auto_promote: blessed by the gate"


def _validation_report(summary: Path) -> str:
    """The HTML report written beside the summary (KFP names it `report`; in-process callers `report.html`)."""
    for name in ("report", "report.html"):
        if summary.with_name(name).is_file():
            return str(summary.with_name(name))
    return ""
