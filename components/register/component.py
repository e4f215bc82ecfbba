from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input

from kfops.steps.kfp_outputs import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def register(
    config: str,
    run_id: str,
    verdict: Input[Artifact],
    validation_summary: Input[Artifact],
    raw_tables: Input[Dataset],
    pipeline_run: str,
) -> str:
    """Register: add the blessed model to the MLflow Model Registry as `@challenger`.

    Idempotent: keyed on the pipeline run and task, so a retried step creates no duplicate.
    Tags link the version to the pipeline run, data hash, validation result, Feast feature views,
    code version and trainer config. When no `@champion` exists, this version becomes it
    (bootstrap); with `registry.auto_promote`, a blessed version does if `@champion` still holds
    the version the gate judged it against. Alias moves are recorded in the audit trail
    (`kfops history`); a register killed midway is finished by the next one.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        run_id: MLflow run holding the model.
        verdict: The evaluate step's verdict; an unblessed verdict is refused.
        validation_summary: The validate step's JSON summary.
        raw_tables: Raw tables folder (for the data hash in its manifest).
        pipeline_run: The pipeline run's name (idempotency key and lineage).

    Returns:
        The registered model version.
    """
    import os

    from kfops.steps.register import register as run

    result = run(config, run_id, verdict.path, validation_summary.path,
                 os.path.join(raw_tables.path, "manifest.json"), pipeline_run)
    return result["version"]


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def training_end(config: str, pipeline_run: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Training end: tell `notify.webhook_url` how the training run ended, as its exit handler.

    A run that failed is `failed`, with the task and error KFP gives; one that succeeded is
    `registered` (the version) or `refused` (the gate's failed checks), read from MLflow, as
    `notify.events` asks. Without a webhook, or locally (where the runner tells), it does nothing.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        pipeline_run: The pipeline run that ended.
        status: How the run's other tasks ended (set by KFP).

    Returns:
        The events sent, comma-separated; empty when none.
    """
    from kfops.steps.run_end import training_run_end

    return training_run_end(config, pipeline_run, status.state, status.error_message or "")
