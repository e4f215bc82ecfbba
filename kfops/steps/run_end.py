"""A pipeline run's end on a cluster, told to ``notify.webhook_url`` by its exit handler in the
words the local runner uses for a local run's end (:func:`kfops.runners.run_records.notify_run_end`).
Locally the runner holds the webhook and the tasks do not
(:data:`kfops.runners.local.RUNNER_ONLY_VARIABLES`), so a run's end is never told twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

SUCCEEDED = "SUCCEEDED"  # KFP's final state of a run whose tasks all succeeded


def notify_pipeline_end(cfg: KfopsConfig, pipeline: str, pipeline_run: str, state: str, error: str = "", *,
                        said: str = "", retrain: bool | None = None) -> list[str]:
    """Send how ``pipeline_run`` ended, for those of its events in ``notify.events``; returns them.

    ``state`` is KFP's (``SUCCEEDED``, ``FAILED``, ...): anything but success is ``failed``, with
    ``error``. A run that succeeded is ``registered`` or ``refused`` by what its training's gate
    decided, read from MLflow, and ``retrained`` when ``retrain``. A webhook or an MLflow that
    fails is said (printed, or in the message), never raised: an exit handler has more to do.
    """
    if cfg.notify.webhook_url is None:
        return []
    from kfops.core.notifications import decision_text, run_events

    if state != SUCCEEDED:
        events = ["failed"]
        said = said or f"pipeline run {pipeline_run} ended {state}" + (f": {error}" if error else "")
    else:
        decided: dict[str, Any] = {} if retrain is None else {"retrain": retrain}
        if {"registered", "refused"} & set(cfg.notify.events):
            from kfops.adapters import mlflow_registry as registry

            try:
                decided.update(registry.pipeline_run_decision(cfg, pipeline_run))
            except Exception as err:  # a dead or slow MLflow: say so
                from kfops.core.redaction import redact_uri

                said += (f"; what its gate decided could not be read from MLflow "
                         f"({type(err).__name__}: {redact_uri(str(err))[:200]})")
        events = run_events("succeeded", decided)
        said = ": ".join(part for part in (said, decision_text(decided)) if part)
    wanted = [event for event in events if event in cfg.notify.events]
    if not wanted:
        return []
    from kfops.adapters.notify_webhook import send
    from kfops.core.notifications import run_message

    run = {"pipeline": pipeline, "run_name": pipeline_run, "state": "failed" if state != SUCCEEDED else "succeeded"}
    send(cfg.notify, run_message(cfg.project, cfg.registry.model_name, run, wanted, said),
         lambda line: print(line, flush=True))
    return wanted


def training_run_end(config: KfopsConfig | str, pipeline_run: str, state: str, error: str = "") -> str:
    """The training pipeline's exit handler: its end, told as :func:`notify_pipeline_end` says.
    Returns the events sent, comma-separated (empty when none)."""
    from kfops.config import KfopsConfig

    cfg = config if isinstance(config, KfopsConfig) else KfopsConfig.from_json(config).resolve_at_run_time()
    return ",".join(notify_pipeline_end(cfg, "training", pipeline_run, state, error))
