"""The retraining pipeline's first step: a drift check against the champion's data, then the
retrain policy.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kfops.core.windows import drift_frame, parse_window
from kfops.errors import ConfigError, DataError, KfopsError, TrainingError
from kfops.steps.featurize import window_features
from kfops.steps.run_end import notify_pipeline_end

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig
    from kfops.core.drift import DriftResult
    from kfops.core.retrain_policy import Attempt


log = logging.getLogger(__name__)


POLICY_STATE_FILE = "retrain_policy.json"


CurrentSource = Literal["window", "inference_logs"]


# Tags that link a triggered training run (and its model version) to the drift check behind it.
TRIGGER_REPORT_TAG = "kfops.trigger.drift_report"


TRIGGER_VERDICT_TAG = "kfops.trigger.drift_verdict"


TRIGGER_RUN_TAG = "kfops.trigger.drift_run"


# Drift references: the reference frame a check compares against, kept so every later check of
# the same window (in any pod) compares against the very same data, and need not rebuild it.
REFERENCE_PREFIX = "drift/reference"


def policy_state_path(cfg: KfopsConfig) -> Path:
    """The local file of the retrain decisions (the embedded default, with no ``state.store``)."""
    return cfg.data_dir / POLICY_STATE_FILE


def reference_key(cfg: KfopsConfig, start: dt.date, end: dt.date) -> str:
    """The state key of the drift reference of [start, end]: the window, and a digest of what
    shapes the frame (dataset plug-in, feature refs, drift columns), so a changed config never
    reads a reference built for another one."""
    import hashlib

    portable = cfg.portable()
    shape = {"dataset": portable.dataset.model_dump(mode="json", exclude={"start", "end"}),
             "features": portable.features.model_dump(mode="json", include={"feature_refs", "request_features"}),
             "label": cfg.drift.label_column}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]
    return f"{REFERENCE_PREFIX}/{start:%Y%m%d}-{end:%Y%m%d}-{digest}.parquet"


def reference_frame(cfg: KfopsConfig, start: dt.date, end: dt.date, work_dir: Path) -> tuple[pd.DataFrame, str]:
    """The drift reference of [start, end] and where it is kept: read from the state store, or
    built with the loader and the point-in-time join and kept there by the first check that
    needs it (a check that raced it to the write reads the same data either way)."""
    import io

    from kfops.adapters.state_store import parquet_frame, state_store

    store, key = state_store(cfg), reference_key(cfg, start, end)
    kept = store.read(key)
    if kept is not None:
        try:
            return parquet_frame(kept), store.uri(key)
        except (OSError, ValueError) as err:
            raise DataError(f"drift reference {store.uri(key)} is not readable parquet: {err}",
                            hint="delete it; the next check rebuilds it from the reference window") from err
    frame = drift_frame(window_features(cfg, start, end, work_dir), cfg)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store.write_if(key, buffer.getvalue(), None)
    return frame, store.uri(key)


def champion_window(cfg: KfopsConfig) -> tuple[str, tuple[dt.date, dt.date]]:
    """The champion's version and the data window it was trained on (its `kfops.window` tag)."""
    from kfops.adapters import mlflow_registry as registry

    found = registry.champion(cfg)
    if found is None:
        raise ConfigError("there is no @champion to check for drift against",
                          hint="run the training pipeline first, or pass reference_window explicitly")
    window = (found.tags or {}).get("kfops.window", "")
    if not window:
        raise ConfigError(f"champion v{found.version} has no kfops.window tag",
                          hint="pass reference_window='YYYY-MM-DD,YYYY-MM-DD' explicitly")
    return str(found.version), parse_window(window)


def inference_log_frame(cfg: KfopsConfig, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Served predictions of [start, end] as a drift frame: the model's features plus its score
    as ``drift.prediction_column``. The log's ``label`` is the predicted class, not ground
    truth, so it is dropped: performance cannot be scored from logs."""
    from kfops.serving.runtime.inference_log import read_inference_logs

    logs = read_inference_logs(cfg.inference_log_location, dt.datetime.combine(start, dt.time(), dt.UTC),
                               dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC))
    if logs.empty:
        raise DataError(f"no inference logs in {cfg.inference_log_location} between {start} and {end}",
                        hint="serve the model first, or use current_source='window' with a labelled window")
    missing = [c for c in cfg.feature_columns if c not in logs.columns]
    if missing:
        raise DataError(f"the inference logs lack feature column(s) {', '.join(missing)}",
                        hint="log feature vectors with the model's feature columns")
    frame = logs[cfg.feature_columns].copy()
    frame[cfg.drift.prediction_column] = logs["probability"].to_numpy(dtype="float64")
    return frame


def run_drift_check(
    cfg: KfopsConfig, reference: pd.DataFrame, current: pd.DataFrame, model: Any, out_dir: Path,
    report_html: Path | None = None, verdict_json: Path | None = None, html: bool = True,
) -> tuple[DriftResult, Path, Path | None]:
    """Check drift (with the champion's scores when ``model`` is given), write verdict and report."""
    from kfops.core.drift import check_drift, write_verdict
    from kfops.reports.drift import render_report

    result = check_drift(reference, current, cfg.drift, model=model)
    report_path = None
    if html:
        report_path = render_report(reference, current, result, report_html or Path(out_dir) / "drift_report.html")
    verdict_path = write_verdict(result, verdict_json or Path(out_dir) / "drift_verdict.json", html_path=report_path)
    return result, verdict_path, report_path


def drift_metrics(result: DriftResult) -> dict[str, float]:
    """The scalar drift metrics logged to MLflow and to the KFP Metrics artifact."""
    metrics = {
        "drift": float(result.drift),
        "dataset_drift": float(result.dataset_drift),
        "drift_share": float(result.drift_share),
        "drifted_columns": float(len(result.drifted_columns)),
        "tested_columns": float(len(result.columns)),
        "current_rows": float(result.current_rows),
        "reference_rows": float(result.reference_rows),
    }
    for column in result.columns:
        if column.score is not None:
            metrics[f"column_score.{column.column}"] = float(column.score)
    if result.prediction is not None:
        metrics["prediction_reference_mean"] = float(result.prediction.reference_mean)
        metrics["prediction_current_mean"] = float(result.prediction.current_mean)
        metrics["prediction_drift"] = float(result.prediction.result.drifted)
        if result.prediction.result.score is not None:
            metrics["prediction_drift_score"] = float(result.prediction.result.score)
    perf = result.performance
    if perf is not None and perf.roc_auc is not None:
        metrics["current_roc_auc"] = float(perf.roc_auc)
        if perf.reference_roc_auc is not None:
            metrics["reference_roc_auc"] = float(perf.reference_roc_auc)
    return metrics


def recent_window(current: tuple[dt.date, dt.date], champion: tuple[dt.date, dt.date]) -> tuple[dt.date, dt.date] | None:
    """The window before ``current``, as long, less what the champion trained on (its window
    ``champion``): the latest labelled rows that calibrate the label-free CBPE estimate. None when
    nothing is left (the champion's test split calibrates instead)."""
    start, end = current
    previous_end = start - dt.timedelta(days=1)
    previous_start = max(previous_end - (end - start), champion[1] + dt.timedelta(days=1))
    return None if previous_start > previous_end else (previous_start, previous_end)


def champion_signals(cfg: KfopsConfig, champion: Any, version_dir: Path, current: pd.DataFrame,
                     result: DriftResult, scores: Any = None, recent: pd.DataFrame | None = None,
                     ) -> tuple[dict[str, float], str | None, dict[str, float] | None]:
    """The retrain triggers' evidence on ``current`` (labels NaN where they do not exist yet), from
    the profile stored with the champion, with the champion's feature importance; ``scores``:
    served scores (else the champion scores ``current``); ``recent``: labelled rows before the
    window the champion did not train on (:func:`recent_window`). Returns ({}, why, None) when the
    champion was trained without a profile."""
    import numpy as np

    from kfops.core.model import predict_proba, read_meta
    from kfops.core.monitoring import require_profile, retrain_signals

    try:
        profile = require_profile(read_meta(version_dir).get("metadata"))
    except DataError as err:
        return {}, str(err), None
    label = cfg.dataset.label
    if scores is None:
        scores = predict_proba(champion, current) if len(current) else np.empty(0)
    labels = current[label].to_numpy(dtype="float64") if label in current.columns else None
    recent_labels = recent_scores = None
    if recent is not None and len(recent) and label in recent.columns:
        recent_labels, recent_scores = recent[label].to_numpy(dtype="float64"), predict_proba(champion, recent)
    signals = retrain_signals(profile, scores, labels, result.columns, result.prediction, cfg.retrain.confidence,
                              cfg.retrain.min_labelled_rows, recent_labels=recent_labels, recent_scores=recent_scores)
    return signals, None, dict(profile.get("importance", {}).get("values", {}))


def out_of_sample(frame: pd.DataFrame, cfg: KfopsConfig, champion: tuple[dt.date, dt.date]) -> tuple[pd.DataFrame, int]:
    """The rows of ``frame`` outside the champion's data window ``champion`` (with a day's margin:
    :func:`kfops.core.monitoring.in_training_window`), and how many were inside it."""
    from kfops.core.monitoring import in_training_window

    inside = in_training_window(frame[cfg.dataset.event_timestamp], champion)
    count = int(inside.sum())
    return (frame[~inside].reset_index(drop=True) if count else frame), count


def window_challenger(cfg: KfopsConfig, champion: Any, window: pd.DataFrame,
                      work_dir: Path) -> tuple[dict[str, float], str]:
    """The ``challenger`` trigger's evidence: a shadow challenger trained on the window's rows whose
    labels exist, judged against the champion by the evaluate gate (as ``kfops backtest`` does), and
    the gate checks it failed (:func:`gate_failures`). Empty (the trigger stays quiet) when too few
    rows are labelled."""
    from kfops.core.monitoring import labelled_rows
    from kfops.training.challenger import gate_failures, shadow_challenger

    labelled = labelled_rows(window, cfg.dataset.label)
    if len(labelled) < cfg.retrain.min_labelled_rows:
        log.info("no shadow challenger: %d labelled rows, fewer than retrain.min_labelled_rows", len(labelled))
        return {}, ""
    try:
        signals, reasons = shadow_challenger(cfg, champion, labelled, work_dir)
    except (DataError, TrainingError) as err:  # e.g. a split with one class: no evidence, not a failed check
        log.warning("no shadow challenger: %s", err)
        return {}, ""
    log.info("shadow challenger: %s", "; ".join(reasons))
    return signals, gate_failures(reasons)


def _check_time(value: str) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise ConfigError(f"check_time '{value}' is not an ISO 8601 time", hint="e.g. 2013-07-31T00:00:00+00:00") from err
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def scheduled_config(config: str, window_days: int, schedule_time: str) -> str:
    """The config JSON this run checks and trains on: as compiled when ``window_days`` is 0, else
    over the ``window_days`` whole days before the run's ``schedule_time`` (RFC 3339; a KFP
    recurring run's scheduled time, a one-off run's creation time; empty or unresolved: now), in
    ``validation.window_timezone``, by the same rule as the local scheduler (:func:`window_before`).
    Only ``dataset.start`` and ``dataset.end`` change: the JSON stays portable, with no secret in it."""
    from kfops.config import KfopsConfig
    from kfops.core.windows import window_before
    from kfops.errors import install_hint_printer

    install_hint_printer()
    if window_days == 0:
        return config
    if window_days < 0:
        raise ConfigError(f"window_days {window_days} is negative", hint="pass 0 (the config's window) or 1 or more")
    # A KFP backend before 2.17 leaves dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER unfilled.
    unresolved = not schedule_time or schedule_time.startswith("{{")
    at = dt.datetime.now(dt.UTC) if unresolved else _check_time(schedule_time)
    start, end = window_before(KfopsConfig.from_json(config), window_days, at).window
    data = json.loads(config)
    data["dataset"].update(start=start.isoformat(), end=end.isoformat())
    print(f"kfops: window {start}..{end}, the {window_days} whole days before "
          f"{'now' if unresolved else schedule_time} in {data['validation']['window_timezone']}", flush=True)
    return json.dumps(data, separators=(",", ":"))


def drift_check(
    config: KfopsConfig | str,
    report_html: Path,
    verdict_json: Path,
    decision_json: Path,
    pipeline_run: str = "",
    reference_window: str = "",
    current_source: CurrentSource | Literal[""] = "",
    check_time: str = "",
) -> dict[str, Any]:
    """Drift of the current data (``cfg.dataset`` window) against the champion's, then the policy.

    ``reference_window`` ('YYYY-MM-DD,YYYY-MM-DD'; empty: the champion's `kfops.window` tag).
    ``current_source``: ``window`` (a labelled batch: scores the champion on it too) or
    ``inference_logs`` (what was served in the window); empty: ``drift.current_source``. ``check_time`` (ISO; empty: now) is
    when the policy sees this check. Returns the decision dict, with ``retrain`` the trigger.
    """
    from kfops.config import KfopsConfig
    from kfops.core.model import load_model
    from kfops.core.monitoring import hide_unknown_labels, label_free_track_record
    from kfops.core.retrain_policy import Attempt

    cfg = config if isinstance(config, KfopsConfig) else KfopsConfig.from_json(config).resolve_at_run_time()
    current_source = current_source or cfg.drift.current_source
    if current_source not in ("window", "inference_logs"):
        raise ConfigError(f"current_source '{current_source}' is unknown", hint="use 'window' or 'inference_logs'")
    from kfops.adapters import mlflow_registry as registry

    champion_version, champion_span = champion_window(cfg)
    ref_start, ref_end = parse_window(reference_window) if reference_window else champion_span
    version_dir = registry.fetch_version_dir(cfg, champion_version)
    champion = load_model(version_dir, cfg.train.plugins, cfg.resolved_against)
    work = cfg.data_dir / "work" / "drift" / (pipeline_run or "adhoc")
    reference, reference_uri = reference_frame(cfg, ref_start, ref_end, work / "reference")
    cur_start, cur_end = cfg.window
    check_at = _check_time(check_time)
    served = None
    if current_source == "window":
        # Only labels that exist at the check time (retrain.label_delay) are seen, as in the backtest.
        window = hide_unknown_labels(window_features(cfg, cur_start, cur_end, work / "current"), cfg.dataset.label,
                                     cfg.dataset.event_timestamp, check_at, cfg.retrain.label_delay)
        current = drift_frame(window, cfg)
        model = champion
    else:
        from kfops.core.model import predict_proba

        current = inference_log_frame(cfg, cur_start, cur_end)
        reference[cfg.drift.prediction_column] = predict_proba(champion, reference)
        reference = reference.drop(columns=[cfg.drift.label_column], errors="ignore")
        model = None  # the logs hold the served scores; compare them with the champion's on the reference
        served = current[cfg.drift.prediction_column].to_numpy()
    from kfops.core.drift import check_drift

    result = check_drift(reference, current, cfg.drift, model=model)
    recent = None
    span = recent_window((cur_start, cur_end), champion_span)
    if span is not None and cfg.retrain.mode == "performance" and "estimated" in cfg.retrain.triggers:
        # The label-free estimate's calibration: labels that exist now, of the window before this one.
        try:
            recent = hide_unknown_labels(window_features(cfg, span[0], span[1], work / "recent"), cfg.dataset.label,
                                         cfg.dataset.event_timestamp, check_at, cfg.retrain.label_delay)
        except DataError as err:
            log.warning("no labelled rows before the window for the label-free estimate (%s): the champion's "
                        "test split calibrates it", err)
    # The champion's performance on rows of its own data window is in-sample: the triggers' evidence
    # leaves them out (the drift tests still compare every row's distribution).
    evidence = current
    in_sample = 0
    if current_source == "window":
        window, in_sample = out_of_sample(window, cfg, champion_span)
        evidence = drift_frame(window, cfg) if in_sample else current
        if recent is not None:
            recent, _ = out_of_sample(recent, cfg, champion_span)
    signals, no_signals, importance = champion_signals(cfg, champion, version_dir, evidence, result, served, recent)
    signals.update(label_free_track_record(signals, past_signals(cfg), cfg.retrain.confidence))
    notes = {}
    if in_sample:
        signals["in_sample_rows"] = float(in_sample)
        notes["in_sample"] = (f"{in_sample} of {len(current)} rows of the window {cur_start}..{cur_end} fall in the "
                              f"champion's data window {champion_span[0]}..{champion_span[1]} (in-sample) and are "
                              "left out of the performance evidence")
        log.warning("%s", notes["in_sample"])
    if no_signals:
        log.warning("retrain triggers have no performance evidence: %s", no_signals)
    elif current_source == "window" and cfg.retrain.mode == "performance" and "challenger" in cfg.retrain.triggers:
        shadow, notes["challenger"] = window_challenger(cfg, champion, window, work / "shadow")
        signals.update(shadow)
    tags = {"kfops.pipeline_run": pipeline_run, "kfops.champion_version": champion_version,
            "kfops.reference_window": f"{ref_start},{ref_end}", "kfops.window": f"{cur_start},{cur_end}",
            "kfops.current_source": current_source, "kfops.drift": str(result.drift).lower()}
    facts = {"pipeline_run": pipeline_run, "champion_version": champion_version,
             "reference_window": [str(ref_start), str(ref_end)], "reference": reference_uri,
             "current_window": [str(cur_start), str(cur_end)], "current_source": current_source,
             "champion_window": [str(champion_span[0]), str(champion_span[1])],
             "in_sample": notes.get("in_sample"), "signals_missing": no_signals}
    # A check of now decides at the time it decides, under the state's conditional write: a check
    # started earlier and finishing later then sees a concurrent one's decision as older than its own.
    decide_at = check_at if check_time else None
    # In a pipeline a retrain stays pending until the exit handler reports how its training ended
    # (record_retrain_outcome): only a retrain that finished counts toward the cooldown and budget.
    attempt = Attempt(pipeline_run, run_owner(), owner_alive) if pipeline_run else None
    return record_check(cfg, reference, current, result, signals, importance, tags, facts, decide_at, attempt,
                        Path(report_html), Path(verdict_json), Path(decision_json), notes)


# The check's MLflow artifacts, named with extensions so the MLflow UI previews them.
REPORT_ARTIFACT = "drift/report.html"
VERDICT_ARTIFACT = "drift/verdict.json"
DECISION_ARTIFACT = "drift/decision.json"
ERROR_TAG = "kfops.error"


def record_check(
    cfg: KfopsConfig, reference: pd.DataFrame, current: pd.DataFrame, result: DriftResult,
    signals: dict[str, float], importance: dict[str, float] | None, tags: dict[str, str], facts: dict[str, Any],
    decide_at: dt.datetime | None, attempt: Attempt | None, report_html: Path, verdict_json: Path, decision_json: Path,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Log the check to one MLflow run (``kfops.kind=drift_check``), decide, and write the report
    (with the decision, its code and the policy's settings), the verdict and the decision
    (``decision_json``, and the run's artifacts and tags); ``notes``: see ``DriftSummary``. The run ends
    FAILED, tagged ``kfops.error`` with why, when any of it fails: a check without a decision never
    reads as an ordinary one. Returns the decision record."""
    from kfops.adapters import mlflow_registry as registry
    from kfops.adapters.state_store import state_store
    from kfops.core.drift import write_verdict
    from kfops.core.retrain_policy import DriftSummary, decide_and_record_in, policy_settings
    from kfops.reports.drift import render_report

    experiment_id = registry.ensure_experiment(cfg)
    with registry.start_run(cfg, experiment_id, run_name=f"drift-{tags.get('kfops.pipeline_run', '')}"[:250]) as run:
        run.set_tags({"kfops.kind": "drift_check", **tags})
        run.log_metrics(drift_metrics(result))
        if signals:
            run.log_metrics({f"signal.{key}": value for key, value in signals.items()})
        try:
            # The decision names the report by its MLflow URI (durable), known before it is logged;
            # the same decide() as `kfops backtest`, on the same evidence (kfops.core.monitoring).
            summary = DriftSummary.from_result(result, report=f"{run.artifact_uri}/{REPORT_ARTIFACT}", signals=signals,
                                               notes=notes)
            decision = decide_and_record_in(state_store(cfg), POLICY_STATE_FILE, summary, decide_at, cfg.retrain,
                                            attempt)
            # Every column stays in the report; the champion's importance and the triggers' evidence join it.
            report_path = render_report(reference, current, result, report_html, importance=importance,
                                        signals=signals, decision={**decision.to_dict(), **facts},
                                        settings=policy_settings(cfg.retrain))
            verdict_path = write_verdict(result, verdict_json, html_path=report_path)
            record = {**decision.to_dict(), "drift_reasons": list(result.reasons),
                      "drift_report_path": str(report_path), "drift_verdict_path": str(verdict_path),
                      "drift_run_id": run.run_id, **facts, "metrics": drift_metrics(result)}
            decision_json.parent.mkdir(parents=True, exist_ok=True)
            decision_json.write_text(json.dumps(record, indent=2, default=str))
            _log_as(run, {REPORT_ARTIFACT: report_path, VERDICT_ARTIFACT: verdict_path})
            run.log_dict(record, DECISION_ARTIFACT)
            run.set_tags({"kfops.retrain": str(decision.retrain).lower(), "kfops.retrain_code": decision.code,
                          "kfops.retrain_mode": decision.mode,
                          "kfops.retrain_triggered_by": ",".join(decision.triggered_by) or "none",
                          "kfops.retrain_reason": decision.reason[:5000]})
        except KfopsError as err:
            run.set_tags({ERROR_TAG: str(err)[:5000]})  # start_run ends the run FAILED as this re-raises
            raise
    verb = "RETRAIN" if decision.retrain else "no retrain"
    in_sample = f" [{facts['in_sample']}]" if facts.get("in_sample") and facts["in_sample"] not in decision.reason else ""
    print(f"kfops: drift={result.drift} -> {verb} ({decision.code}: {decision.reason}){in_sample}; report "
          f"{report_path}", flush=True)
    return record


def _log_as(run: Any, artifacts: dict[str, Path]) -> None:
    """Log each file at its artifact path ('drift/report.html'). MLflow names an artifact after its
    file, and a KFP artifact's file has no extension ('report'): the UI would not preview it."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as staging:
        for name, path in artifacts.items():
            folder, _, file_name = name.rpartition("/")
            staged = Path(staging) / file_name
            shutil.copyfile(path, staged)
            run.log_artifact(staged, folder or None)


def past_signals(cfg: KfopsConfig) -> list[dict[str, float]]:
    """The evidence of the checks recorded so far (the retrain policy's state), oldest first."""
    from kfops.adapters.state_store import state_store
    from kfops.core.retrain_policy import load_state

    return [dict(d.signals) for d in load_state(state_store(cfg), POLICY_STATE_FILE).decisions]


def run_owner() -> str | None:
    """This process group as 'host/pid-namespace/pgid'. A local run's process, its task zygote and
    tasks share one group (kfops.adapters.kfp_zygote), which is gone once the run is (Ctrl-C, a
    kill). None without /proc (no namespace to tell pids apart)."""
    import os
    import socket

    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{socket.gethostname()}/{namespace}/{os.getpgid(0)}"


def owner_alive(owner: str) -> bool | None:
    """Whether the process group ``owner`` (:func:`run_owner`) still exists; None when this process
    cannot tell: another host or pid namespace (a pod, a container), whose retrain the lease judges."""
    import os

    mine = run_owner()
    where, _, group = owner.rpartition("/")
    if mine is None or mine.rpartition("/")[0] != where or not group.isdigit():
        return None
    try:
        os.killpg(int(group), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def record_retrain_outcome(config: KfopsConfig | str, pipeline_run: str, state: str, error: str = "") -> str:
    """The retraining pipeline's exit handler: record how the retrain ``pipeline_run`` decided ended,
    ``completed`` when the run's tasks ``state`` is SUCCEEDED, else ``failed`` (then it does not count
    toward the cooldown and budget, and the next check may retrain). Returns the outcome; ``none``
    when this run decided no retrain."""
    from kfops.adapters.state_store import state_store
    from kfops.config import KfopsConfig
    from kfops.core.retrain_policy import record_outcome

    cfg = config if isinstance(config, KfopsConfig) else KfopsConfig.from_json(config).resolve_at_run_time()
    note = f"pipeline run {pipeline_run} ended {state}" + (f": {error}" if error else "")
    if state != "SUCCEEDED":  # first: a state store that fails next must not keep it from being said
        notify_pipeline_end(cfg, "retraining", pipeline_run, state, error)
    decision = record_outcome(state_store(cfg), POLICY_STATE_FILE, pipeline_run, state == "SUCCEEDED", note)
    if state == "SUCCEEDED" and decision is not None:
        notify_pipeline_end(cfg, "retraining", pipeline_run, state, retrain=True,
                            said=f"the retrain decided at {decision.at.isoformat()} completed")
    if decision is None:
        print(f"kfops: {pipeline_run} decided no retrain; nothing to record", flush=True)
        return "none"
    print(f"kfops: the retrain decided at {decision.at.isoformat()} is {decision.outcome} ({note})", flush=True)
    return str(decision.outcome)


def link_trigger(config: KfopsConfig | str, pipeline_run: str, decision_json: Path) -> list[str]:
    """Tag the training runs (and model versions) of ``pipeline_run`` with the drift check that
    triggered them, so a retrained model leads back to its drift report. Returns the run ids."""
    from kfops.adapters import mlflow_registry as registry
    from kfops.config import KfopsConfig

    cfg = config if isinstance(config, KfopsConfig) else KfopsConfig.from_json(config).resolve_at_run_time()
    decision = json.loads(Path(decision_json).read_text())
    tags = {TRIGGER_REPORT_TAG: decision.get("drift_report") or "",
            TRIGGER_VERDICT_TAG: decision.get("drift_verdict_path") or "",
            TRIGGER_RUN_TAG: decision.get("drift_run_id") or ""}
    mlflow_client = registry.client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.registry.experiment)
    if experiment is None:
        return []
    found = mlflow_client.search_runs([experiment.experiment_id],
                                      filter_string=f"tags.`kfops.pipeline_run` = '{pipeline_run}'")
    runs = [r.info.run_id for r in found if r.data.tags.get("kfops.kind") != "drift_check"]
    for run_id in runs:
        for key, value in tags.items():
            mlflow_client.set_tag(run_id, key, value)
    for version in mlflow_client.search_model_versions(f"name = '{cfg.registry.model_name}'"):
        if version.run_id in runs:
            for key, value in tags.items():
                mlflow_client.set_model_version_tag(cfg.registry.model_name, version.version, key, value)
    return sorted(runs)
