from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Output

from kfops.steps.kfp_outputs import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def run_window(config: str, window_days: int = 0, schedule_time: str = "") -> str:
    """Window: the config this run checks and trains on, moved to the days before the run.

    With `window_days` 0 the config is passed on as compiled. Otherwise its `dataset.start..end`
    become the `window_days` whole days before the day of `schedule_time` in
    `validation.window_timezone`, by the same rule as `kfops schedule --local --window-days`, so a
    KFP recurring run checks new data at each run.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        window_days: 0: the config's window; N: the N whole days before the run's day.
        schedule_time: The run's time, RFC 3339 (`dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER`: a
            recurring run's scheduled time); empty: now.

    Returns:
        The config JSON with the run's window.
    """
    from kfops.steps.drift_check import scheduled_config

    return scheduled_config(config, window_days, schedule_time)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def drift(
    config: str,
    pipeline_run: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    verdict: Output[Artifact],
    decision: Output[Artifact],
    reference_window: str = "",
    current_source: str = "",
    check_time: str = "",
) -> bool:
    """Drift: compare the current data with the champion's training data, then apply the retrain policy.

    The reference is the `@champion`'s data window (its `kfops.window` registry tag), built
    with the configured loader and point-in-time feature join by the first check that needs it
    and kept in the state store (`state.store`, default `data_dir`) for every later one. The current data is the config's
    `dataset` window: a labelled batch (`drift.current_source=window`; the champion is also scored
    on it) or the predictions logged in that window (`drift.current_source=inference_logs`: served
    requests, and batch jobs' logged with `kfops predict --log`). Per-column
    drift, the share of drifted columns, prediction drift and the champion's ROC AUC on the new
    window decide the verdict (`drift` config). The retrain triggers' evidence is computed from the
    profile stored with the champion (kfops.core.monitoring): its AUC on the rows whose labels
    exist at `check_time` (`retrain.label_delay`) against its test AUC with a confidence interval,
    the CBPE estimate from calibrated scores, importance-weighted drift and prediction drift. The
    retrain policy (`retrain`: mode and triggers, debounce, cooldown, max retrains per period) then
    decides with the same `decide()` as `kfops backtest`; the decision is recorded, with the report
    that caused it, in `retrain_policy.json` of the state store. Metrics, the evidence (`signal.*`),
    the verdict and the report are logged to one MLflow run (tag `kfops.kind=drift_check`).

    Args:
        config: The kfops configuration (KfopsConfig) as JSON; `dataset` is the current window.
        pipeline_run: The pipeline run's name; links the drift run to the training it triggers.
        metrics: Drift share, drifted columns, per-column scores, prediction drift, current ROC AUC.
        report: The Evidently drift report (HTML, on a sample) with the verdict on top.
        verdict: JSON drift verdict: drift, reasons, every column's test and score.
        decision: JSON retrain decision: retrain, code, reason, the drift report's MLflow URI.
        reference_window: 'YYYY-MM-DD,YYYY-MM-DD'; empty: the champion's training window.
        current_source: `window` (labelled rows of the config window) or `inference_logs`; empty:
            the config's `drift.current_source`.
        check_time: ISO 8601 time the policy sees for this check; empty: now.

    Returns:
        Retrain: a trigger fired AND the policy allows a retrain (a single output, so
        `kfp.local` can branch on it).
    """
    from kfops.steps.drift_check import drift_check

    record = drift_check(config, report.path, verdict.path, decision.path, pipeline_run=pipeline_run,
                         reference_window=reference_window, current_source=current_source, check_time=check_time)
    for name, value in record["metrics"].items():
        metrics.log_metric(name, value)
    metrics.log_metric("retrain", 1.0 if record["retrain"] else 0.0)
    decision.metadata.update({"code": record["code"], "drift_report": record["drift_report"] or ""})
    return bool(record["retrain"])


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def link_trigger(config: str, pipeline_run: str, decision: Input[Artifact]) -> str:
    """Link: tag the retrained run and model version with the drift check that triggered them.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        pipeline_run: The pipeline run whose training runs get the tags.
        decision: The drift component's retrain decision (names the drift report).

    Returns:
        The MLflow run ids that were tagged, comma-separated.
    """
    from kfops.steps.drift_check import link_trigger as run

    return ",".join(run(config, pipeline_run, decision.path))


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def retrain_outcome(config: str, pipeline_run: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Outcome: record how the retrain this run decided ended, as the pipeline's exit handler.

    The drift step records a retrain `pending`; this task runs however the run ends and marks it
    `completed` (it counts toward the cooldown and `max_retrains`) or `failed` (it does not, so the
    next check may retrain). A run that decided no retrain records nothing.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        pipeline_run: The pipeline run whose retrain decision is settled.
        status: How the run's other tasks ended (set by KFP).

    Returns:
        The recorded outcome: completed, failed, or none.
    """
    from kfops.steps.drift_check import record_retrain_outcome

    return record_retrain_outcome(config, pipeline_run, status.state, status.error_message or "")
