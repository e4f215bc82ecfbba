"""What a retrain trigger needs to know about the champion, and the signals it computes from it.

At training time :func:`model_profile` stores with the model (its ``kfops_model.json`` metadata,
key ``monitoring``): its test ROC AUC with a DeLong standard error, a calibrator fitted on the
held-out splits when the raw scores are off (Platt scaling: two numbers, no pickle), and the
permutation importance of each feature on the validation split.

At check time :func:`retrain_signals` turns a window into numbers the retrain policy acts on:

* **observed**: the champion's ROC AUC on the part of the window whose labels already exist,
  minus its test AUC, with a confidence interval from the two (independent) DeLong variances
  (and the AUC's own interval, for an absolute floor);
* **estimated** (CBPE, as NannyML calls it): the ROC AUC expected from the calibrated scores of
  the whole unlabelled window, minus the test AUC. The calibrator is refitted on the window's own
  labelled rows when it has enough (older than the label delay); without them, on the latest
  labelled rows before the window that the champion did not train on (the previous window, as
  its check saw it), else on the champion's test split (``recent_calibration``). Each estimate
  has an interval (:func:`expected_roc_auc_interval`: chance and the calibrator's fit), the
  label-free one widened by its own past errors (:func:`label_free_track_record`);
* **weighted drift**: the share of the champion's permutation importance held by drifted columns;
* **prediction drift**: whether the champion's score distribution moved (the drift check's test).

All plain numpy/scipy; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kfops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.core.drift import ColumnDrift, PredictionDrift

PROFILE_KEY = "monitoring"
# The profile's schema: a champion whose profile has another one must be retrained.
PROFILE_VERSION = 1
# Bumped whenever model_profile computes differently (2: calibrators carry their covariance). An
# older revision still serves (what it lacks degrades gracefully); the backtest's cache recomputes it.
PROFILE_REVISION = 2
# Raw scores whose expected calibration error on the validation split is above this get a calibrator.
MAX_CALIBRATION_ERROR = 0.01
CALIBRATION_BINS = 10


# Bumped whenever retrain_signals computes differently (the backtest cache recomputes them).
SIGNALS_VERSION = 4
# Simulated label draws behind a CBPE estimate's interval, and the most matrix cells drawn at once.
ESTIMATE_DRAWS = 200
DRAW_BLOCK_CELLS = 4_000_000

def _binary(y: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y, dtype=np.float64)
    values = np.asarray(scores, dtype=np.float64)
    if labels.shape != values.shape or labels.ndim != 1:
        raise DataError(f"labels {labels.shape} and scores {values.shape} must be 1-d and of one length")
    keep = np.isfinite(labels) & np.isfinite(values)
    return labels[keep], values[keep]


def delong_roc_auc(y: Any, scores: Any) -> tuple[float, float]:
    """ROC AUC and its DeLong standard error (Sun & Xu's fast algorithm, midranks)."""
    from scipy.stats import rankdata

    labels, values = _binary(y, scores)
    positives, negatives = values[labels == 1], values[labels == 0]
    m, n = positives.size, negatives.size
    if m < 2 or n < 2:
        raise DataError(f"ROC AUC needs at least two rows of each class, got {m} positive and {n} negative")
    ranks = rankdata(np.concatenate([positives, negatives]))
    auc = float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))
    v_pos = (ranks[:m] - rankdata(positives)) / n
    v_neg = 1.0 - (ranks[m:] - rankdata(negatives)) / m
    se = math.sqrt(float(np.var(v_pos, ddof=1)) / m + float(np.var(v_neg, ddof=1)) / n)
    return auc, se


def difference_interval(current: float, current_se: float, reference: float, reference_se: float,
                        confidence: float) -> tuple[float, float, float]:
    """(current - reference, low, high): the normal interval of the difference of two AUCs measured
    on independent samples (the variances add)."""
    from scipy.stats import norm

    if not 0 < confidence < 1:
        raise DataError(f"confidence {confidence} must be in (0, 1)")
    z = float(norm.ppf(0.5 + confidence / 2))
    diff = current - reference
    half = z * math.sqrt(current_se**2 + reference_se**2)
    return diff, diff - half, diff + half


def calibration_error(y: Any, probabilities: Any, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: |mean score - positive rate| per equal-width bin, row-weighted."""
    labels, values = _binary(y, probabilities)
    if labels.size == 0:
        raise DataError("calibration error of no rows")
    which = np.clip((values * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(float(values[mask].mean()) - float(labels[mask].mean()))
    return total / labels.size


def _logit(values: np.ndarray) -> np.ndarray:
    clipped = np.clip(values, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(clipped / (1 - clipped)), dtype=np.float64)


def fit_calibrator(y: Any, scores: Any) -> dict[str, Any]:
    """Platt scaling on the logit of the score: p = sigmoid(a * logit(score) + b). Two numbers,
    so it cannot overfit a validation split (isotonic steps would, and inflate CBPE's estimate)."""
    from sklearn.linear_model import LogisticRegression

    labels, values = _binary(y, scores)
    x = _logit(values)
    fitted = LogisticRegression(C=1e6).fit(x.reshape(-1, 1), labels.astype(int))
    a, b = float(fitted.coef_[0][0]), float(fitted.intercept_[0])
    # The two numbers' covariance (the inverse Fisher information): how far they could be off from
    # the rows they were fitted on, which the estimate's interval carries.
    p = 1.0 / (1.0 + np.exp(-(a * x + b)))
    design = np.column_stack([x, np.ones_like(x)])
    covariance = np.linalg.pinv(design.T @ (design * (p * (1 - p))[:, None]))
    return {"method": "platt", "a": a, "b": b, "covariance": covariance.tolist()}


def calibrate(calibrator: Mapping[str, Any] | None, scores: Any) -> np.ndarray:
    """Scores through a stored calibrator (``None`` or method ``none``: unchanged)."""
    values = np.asarray(scores, dtype=np.float64)
    if not calibrator or calibrator.get("method", "none") == "none":
        return values
    if calibrator.get("method") != "platt":
        raise DataError(f"unknown calibrator method {calibrator.get('method')!r}")
    z = float(calibrator["a"]) * _logit(values) + float(calibrator["b"])
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def expected_roc_auc(scores: Any, probabilities: Any) -> float:
    """CBPE: the ROC AUC expected when row i is positive with its calibrated ``probabilities[i]``,
    ranking by ``scores`` (the model's order). Expected true and false positives are summed down
    the ranking (tied scores form one step) and the expected ROC curve is integrated."""
    order_scores = np.asarray(scores, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    if order_scores.shape != p.shape or p.size == 0:
        raise DataError("CBPE needs one calibrated probability per score, and at least one row")
    order = np.argsort(-order_scores, kind="mergesort")
    ranked, p = order_scores[order], p[order]
    positives, negatives = float(p.sum()), float((1 - p).sum())
    if positives <= 0 or negatives <= 0:
        raise DataError("CBPE: the calibrated probabilities expect only one class")
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    tpr = np.r_[0.0, np.cumsum(p)[last_of_tie] / positives]
    fpr = np.r_[0.0, np.cumsum(1 - p)[last_of_tie] / negatives]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


def expected_roc_auc_interval(scores: Any, calibrator: Mapping[str, Any] | None, confidence: float,
                              draws: int = ESTIMATE_DRAWS, seed: int = 0) -> tuple[float, float]:
    """Where the realised ROC AUC of these rows falls with ``confidence`` if the calibration holds.

    Each draw takes the calibrator's two numbers from their sampling distribution (when it stores
    their covariance), then every row's label from its calibrated probability, and computes the
    AUC of the model's ranking; the interval is the draws' quantiles. It covers the labels' chance
    and the calibrator's fit, not a change in the relation between features and label (concept
    shift), which no label-free estimate sees."""
    from scipy.stats import rankdata

    if not 0 < confidence < 1:
        raise DataError(f"confidence {confidence} must be in (0, 1)")
    values = np.asarray(scores, dtype=np.float64)
    ranks = rankdata(values)  # tied scores share their mean rank, as in the AUC
    rng = np.random.default_rng(seed)
    stored = dict(calibrator or {})
    covariance = stored.get("covariance")
    logits = _logit(values) if covariance is not None else None
    block = max(1, min(draws, DRAW_BLOCK_CELLS // max(values.size, 1)))
    aucs: list[np.ndarray] = []
    for start in range(0, draws, block):
        count = min(block, draws - start)
        if logits is not None:
            params = rng.multivariate_normal([float(stored["a"]), float(stored["b"])],
                                             np.asarray(covariance, dtype=np.float64), size=count)
            z = params[:, :1] * logits[None, :] + params[:, 1:]
            probabilities = 1.0 / (1.0 + np.exp(-z))
        else:
            probabilities = np.broadcast_to(calibrate(calibrator, values), (count, values.size))
        labels = rng.random((count, values.size)) < probabilities
        positives = labels.sum(axis=1).astype(np.float64)
        negatives = values.size - positives
        usable = (positives > 0) & (negatives > 0)
        rank_sums = labels.astype(np.float64) @ ranks
        aucs.append(((rank_sums - positives * (positives + 1) / 2) / (positives * negatives))[usable])
    drawn = np.concatenate(aucs)
    if drawn.size < 2:
        raise DataError("CBPE interval: the calibrated probabilities expect only one class")
    low, high = np.quantile(drawn, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def label_free_track_record(signals: Mapping[str, float], past: Sequence[Mapping[str, float]], confidence: float,
                            min_checks: int = 3) -> dict[str, float]:
    """The label-free estimate's interval, widened by the estimate's own record.

    At each past check (``past``: their signals) whose window had labelled rows, the label-free
    estimate and the observed AUC of the same window are both known: their difference is what the
    estimate missed, concept shift included, which the sampling interval cannot hold. With at least
    ``min_checks`` such differences the interval reaches at least their ``confidence`` quantile
    (absolute) on each side of the estimate. Returns the signals to update (none without a record);
    the estimate the triggers act on is widened too when it is the label-free one."""
    errors = [abs(float(p["estimated_roc_auc_label_free"]) - float(p["observed_roc_auc"])) for p in past
              if "estimated_roc_auc_label_free" in p and "observed_roc_auc" in p]
    if len(errors) < min_checks or "estimated_roc_auc_label_free_low" not in signals:
        return {}
    margin = float(np.quantile(errors, confidence))
    estimate = float(signals["estimated_roc_auc_label_free"])
    low = min(float(signals["estimated_roc_auc_label_free_low"]), estimate - margin)
    high = max(float(signals["estimated_roc_auc_label_free_high"]), estimate + margin)
    update = {"estimated_roc_auc_label_free_low": low, "estimated_roc_auc_label_free_high": high,
              "estimated_label_free_margin": margin, "estimated_label_free_record": float(len(errors))}
    if signals.get("estimated_recalibrated") == 0.0:  # the estimate the triggers see is the label-free one
        update.update(estimated_roc_auc_low=low, estimated_roc_auc_high=high)
    return update


def permutation_importance(model: Any, frame: pd.DataFrame, label: str, seed: int = 0,
                           max_rows: int = 20_000) -> dict[str, float]:
    """Each feature's share of the ROC AUC lost when that column is shuffled (model-agnostic:
    any kfops ``TabularModel``); negative losses count as 0; the shares sum to 1."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed)
    matrix = model.spec.encode(frame)
    y = frame[label].to_numpy(dtype=np.float64)
    base = float(roc_auc_score(y, model.predict_proba_encoded(matrix)))
    losses = {}
    for i, column in enumerate(model.spec.columns):
        shuffled = matrix.copy()
        shuffled[:, i] = rng.permutation(shuffled[:, i])
        losses[column] = max(0.0, base - float(roc_auc_score(y, model.predict_proba_encoded(shuffled))))
    total = sum(losses.values())
    if total <= 0:
        return {c: 1.0 / len(losses) for c in losses} if losses else {}
    return {c: v / total for c, v in losses.items()}


def model_profile(model: Any, validation: pd.DataFrame, test: pd.DataFrame | None, label: str,
                  seed: int = 0) -> dict[str, Any]:
    """What the triggers need, measured at training time: reference AUC (test split, else the
    validation split) with its DeLong SE, the calibrator (fitted on the held-out splits when the
    raw scores' calibration error exceeds ``MAX_CALIBRATION_ERROR``) and permutation importance."""
    import pandas as pd

    from kfops.core.model import predict_proba

    reference = test if test is not None and len(test) else validation
    # Calibrated on every held-out row (validation and test): on the example data a Platt fit on the
    # validation split alone (a few days) put CBPE 0.052 AUC off the next month's realised AUC
    # on average, on both splits 0.026 (docs/backtest.md). A monotone map leaves the test AUC as is.
    held_out = pd.concat([validation, reference]) if reference is not validation else validation
    cal_y = held_out[label].to_numpy(dtype=np.float64)
    cal_scores = predict_proba(model, held_out)
    raw_error = calibration_error(cal_y, cal_scores)
    calibrator: dict[str, Any] = {"method": "none"}
    if raw_error > MAX_CALIBRATION_ERROR:
        calibrator = fit_calibrator(cal_y, cal_scores)
    calibrator.update(fitted_on="validation+test" if reference is not validation else "validation",
                      error_raw=raw_error, error_calibrated=calibration_error(cal_y, calibrate(calibrator, cal_scores)))
    ref_y = reference[label].to_numpy(dtype=np.float64)
    ref_scores = predict_proba(model, reference)
    auc, se = delong_roc_auc(ref_y, ref_scores)
    # The latest labelled rows the model did not train on: what a label-free CBPE estimate right
    # after training calibrates on (the validation split is older, and the base rate moves).
    recent = fit_calibrator(ref_y, ref_scores)
    recent["fitted_on"] = "test" if reference is test else "validation"
    return {
        "version": PROFILE_VERSION,
        "revision": PROFILE_REVISION,
        "reference": {"split": "test" if reference is test else "validation", "roc_auc": auc, "roc_auc_se": se,
                      "rows": len(reference), "positive_rate": float(ref_y.mean()),
                      "estimated_roc_auc": expected_roc_auc(ref_scores, calibrate(calibrator, ref_scores))},
        "calibration": calibrator,
        "recent_calibration": recent,
        "importance": {"method": "permutation", "metric": "roc_auc",
                       "values": permutation_importance(model, validation, label, seed)},
    }


def require_profile(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The profile from a model's metadata, or a clear error when it was trained without one."""
    profile = (metadata or {}).get(PROFILE_KEY)
    if not isinstance(profile, dict) or profile.get("version") != PROFILE_VERSION:
        raise DataError("the champion has no monitoring profile (test AUC, calibrator, importance)",
                        hint="retrain it with this kfops version; its train step stores the profile")
    return profile


def labelled_mask(event_times: pd.Series, check_at: Any, label_delay: Any) -> np.ndarray:
    """Rows whose label exists at ``check_at``: the event happened at least ``label_delay`` before."""
    import pandas as pd

    cutoff = pd.Timestamp(check_at)
    if cutoff.tzinfo is None:
        raise DataError(f"check time {check_at} has no time zone")
    cutoff = (cutoff - pd.Timedelta(label_delay)).tz_convert("UTC")
    times = pd.to_datetime(event_times, utc=True)
    return np.asarray((times <= cutoff).to_numpy(), dtype=bool)


def final_labels_only(frame: pd.DataFrame, event_timestamp: str, as_of: Any, label_delay: Any) -> pd.DataFrame:
    """The rows of a training set whose label is final at ``as_of``: the event is at least
    ``label_delay`` old. A younger row's label can still change (a return not made yet reads as
    kept), so a model must not learn it. Refuses a window with no such row."""
    from kfops.core.retrain_policy import format_duration

    final = labelled_mask(frame[event_timestamp], as_of, label_delay)
    if len(frame) and not final.any():
        raise DataError(f"no row of the window has a final label at {as_of:%Y-%m-%d %H:%M %Z}: labels are final "
                        f"{format_duration(label_delay)} after the event (retrain.label_delay)",
                        hint="end the window at least retrain.label_delay before now")
    return frame if final.all() else frame[final].reset_index(drop=True)


def hide_unknown_labels(frame: pd.DataFrame, label: str, event_timestamp: str, check_at: Any,
                        label_delay: Any) -> pd.DataFrame:
    """``frame`` as a check at ``check_at`` may see it: the label of every row whose label would
    not exist yet is NaN. The one place the label delay is applied, by the backtest and the
    retraining pipeline alike; everything downstream scores only rows with a label."""
    seen = frame.copy()
    known = labelled_mask(frame[event_timestamp], check_at, label_delay)
    seen[label] = seen[label].astype("float64").where(known)
    return seen


def in_training_window(event_times: pd.Series, window: tuple[Any, Any]) -> np.ndarray:
    """Rows whose event falls in a champion's data window (``window``: its first and last day): it
    trained on them, or measured its test AUC on them, so its performance there is in-sample and no
    evidence of how it does now. A loader may cut the window by local day while event times are
    UTC, so a day either side counts too: a boundary row is left out rather than taken as evidence."""
    import pandas as pd

    start = pd.Timestamp(window[0], tz="UTC") - pd.Timedelta(days=1)
    end = pd.Timestamp(window[1], tz="UTC") + pd.Timedelta(days=2)
    times = pd.to_datetime(event_times, utc=True)
    return np.asarray(((times >= start) & (times < end)).to_numpy(), dtype=bool)


def labelled_rows(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """The rows of ``frame`` whose label exists (see :func:`hide_unknown_labels`), label as int:
    what a challenger of that window trains on."""
    labelled = frame[frame[label].notna()]
    return labelled.assign(**{label: labelled[label].astype("int64")})


def weighted_drift(columns: Sequence[ColumnDrift], importance: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """Share of the importance held by drifted columns, and each drifted column's part of it.
    Columns the model does not use weigh nothing; the drift report still lists them all."""
    total = sum(max(0.0, float(importance.get(c.column, 0.0))) for c in columns if c.score is not None)
    if total <= 0:
        return 0.0, {}
    parts = {c.column: max(0.0, float(importance.get(c.column, 0.0))) / total
             for c in columns if c.drifted and importance.get(c.column, 0.0) > 0}
    return float(sum(parts.values())), dict(sorted(parts.items(), key=lambda kv: -kv[1]))


def retrain_signals(
    profile: Mapping[str, Any],
    scores: Any,
    labels: Any = None,
    columns: Sequence[ColumnDrift] = (),
    prediction: PredictionDrift | None = None,
    confidence: float = 0.95,
    min_labelled_rows: int = 200,
    recent_labels: Any = None,
    recent_scores: Any = None,
) -> dict[str, float]:
    """The evidence a performance-aware policy decides on, as flat numbers (metrics-ready).

    ``scores``: the champion's raw scores on the whole current window; ``labels``: its labels, NaN
    where the label does not exist yet (see :func:`hide_unknown_labels`); ``columns``/``prediction``:
    the drift check's column and prediction results; ``recent_labels``/``recent_scores``: the
    latest labelled rows before the window that the champion did not train on, with its scores
    (for the label-free estimate; else its test split's calibrator is used). Keys absent: that
    signal had no data."""
    reference = profile["reference"]
    ref_auc, ref_se = float(reference["roc_auc"]), float(reference["roc_auc_se"])
    signals: dict[str, float] = {"reference_roc_auc": ref_auc, "reference_roc_auc_se": ref_se}
    all_scores = np.asarray(scores, dtype=np.float64)
    raw = all_scores[np.isfinite(all_scores)]
    y, s = _binary(labels, all_scores) if labels is not None else (np.empty(0), np.empty(0))
    enough = y.size >= min_labelled_rows and 0 < y.sum() < y.size
    if raw.size:
        # CBPE. The training-time calibrator does not carry over when the base rate moves (seasons),
        # so when the window already has enough labelled rows (older than the label delay) the
        # scores are recalibrated on them first; the estimate then covers the whole window.
        # Without them (label-free), the latest labelled rows the champion has not trained on
        # calibrate it: on the example data that halves the stored calibrator's error.
        stored = expected_roc_auc(raw, calibrate(profile.get("calibration"), raw))
        recent_y, recent_s = (_binary(recent_labels, recent_scores) if recent_labels is not None
                              else (np.empty(0), np.empty(0)))
        recent_enough = recent_y.size >= min_labelled_rows and 0 < recent_y.sum() < recent_y.size
        recent_calibrator = (fit_calibrator(recent_y, recent_s) if recent_enough
                             else profile.get("recent_calibration", profile.get("calibration")))
        label_free = expected_roc_auc(raw, calibrate(recent_calibrator, raw))
        label_free_low, label_free_high = expected_roc_auc_interval(raw, recent_calibrator, confidence)
        estimated, estimated_low, estimated_high = label_free, label_free_low, label_free_high
        if enough:
            window_calibrator = fit_calibrator(y, s)
            estimated = expected_roc_auc(raw, calibrate(window_calibrator, raw))
            estimated_low, estimated_high = expected_roc_auc_interval(raw, window_calibrator, confidence)
        signals.update(estimated_roc_auc=estimated, estimated_roc_auc_low=estimated_low,
                       estimated_roc_auc_high=estimated_high, estimated_diff=estimated - ref_auc,
                       estimated_roc_auc_profile=stored, estimated_recalibrated=float(enough),
                       estimated_roc_auc_label_free=label_free, estimated_roc_auc_label_free_low=label_free_low,
                       estimated_roc_auc_label_free_high=label_free_high,
                       estimated_label_free_rows=float(recent_y.size) if recent_enough else 0.0)
    if labels is not None:
        signals["observed_rows"] = float(y.size)
        if enough:
            auc, se = delong_roc_auc(y, s)
            diff, low, high = difference_interval(auc, se, ref_auc, ref_se, confidence)
            _, auc_low, auc_high = difference_interval(auc, se, 0.0, 0.0, confidence)
            signals.update(observed_roc_auc=auc, observed_roc_auc_se=se, observed_roc_auc_low=auc_low,
                           observed_roc_auc_high=auc_high, observed_diff=diff, observed_diff_low=low,
                           observed_diff_high=high)
    if columns:
        share, _ = weighted_drift(columns, profile.get("importance", {}).get("values", {}))
        signals["weighted_drift_share"] = share
    if prediction is not None:
        signals["prediction_drift"] = float(prediction.result.drifted)
        if prediction.result.score is not None:
            signals["prediction_drift_score"] = float(prediction.result.score)
    return signals
