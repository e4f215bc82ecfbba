"""Data and prediction drift between a reference window and a current window.

``check_drift`` runs, per column, the test Evidently 0.7's ``DataDriftPreset`` would pick, with
the same formulas, defaults and thresholds, but computes only the number each verdict needs with
vectorised numpy/scipy: one sort per numerical column, one ``factorize`` per categorical column.
Evidently itself computes every column several times and builds plots for all of them (2-3.5
minutes and 1.7 GB for 1M x 1M rows x 20 columns on 2 cores); here the same verdicts take seconds
(bench/drift.py, docs/benchmarks.md). ``render_report`` runs the real Evidently report, but on a
small random sample, for people to read.

Test choice (``auto``, as Evidently; n = non-missing reference rows of the column):

====================  =============================================  ================================
column                n > 1000 (the usual case)                      n <= 1000
====================  =============================================  ================================
numerical             Wasserstein distance / reference std >= 0.1    K-S p-value <= 0.05
numerical, <= 5       Jensen-Shannon distance >= 0.1                 chi-square (3-5 values) or
distinct values                                                      Z-test (2 values), p < 0.05
categorical           Jensen-Shannon distance >= 0.1                 chi-square or Z-test, p < 0.05
====================  =============================================  ================================

Sample size and statistical power (``DriftConfig.sample_size`` caps rows per side):

* The default tests for large data are distances, not p-values: sampling does not make them more
  or less "significant"; it adds estimation noise of order 1/sqrt(n). Measured with identical
  distributions (n rows per side): normed Wasserstein 0.08 at 1k rows, 0.019 at 10k, 0.005 at
  100k; Jensen-Shannon over 100 equally likely categories 0.16 at 1k, 0.047 at 10k, 0.015 at 100k.
  So below ~10k rows per side a no-drift column can cross the 0.1 threshold by chance; the
  minimum ``sample_size`` is therefore 10,000, and at the 1,000,000 default most windows are not
  sampled at all (the verdicts are then exactly Evidently's on the full data).
* p-value tests (``ks``, ``chisquare``, ``z``) gain power with n: at 5% significance the smallest
  K-S distance detected is about 1.36 * sqrt(2 / n): 0.019 at 10k rows, 0.006 at 100k, 0.002 at
  1M. On large windows they flag differences too small to matter; sampling to a fixed n makes
  their sensitivity independent of window size. Sampled rows are drawn without replacement with a
  fixed seed, so a check is reproducible.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kfops.core.files import atomic_write_text, json_safe
from kfops.errors import ConfigError, DataError, KfopsError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ColumnKind = Literal["numerical", "categorical"]
TestName = Literal["wasserstein", "ks", "jensenshannon", "psi", "chisquare", "z"]
NumericalTest = Literal["auto", "wasserstein", "ks", "jensenshannon", "psi"]
CategoricalTest = Literal["auto", "jensenshannon", "chisquare", "z", "psi"]

# Above this many non-missing reference rows Evidently switches from p-value tests to distances.
SMALL_SAMPLE_ROWS = 1000
# Evidently reads an integer column with at most this many distinct values as categorical.
INTEGER_CARDINALITY_LIMIT = 10
# scipy's ks_2samp computes exact p-values up to this size and uses the asymptotic formula above.
KS_EXACT_MAX_ROWS = 10_000
VERDICT_KIND = "kfops.drift.verdict"
VERDICT_VERSION = 1


@dataclass(frozen=True)
class StatTestSpec:
    """One drift test: how Evidently names it, what its score is and when it means drift."""

    name: str
    display_name: str
    score_kind: Literal["p_value", "distance"]
    default_threshold: float
    kinds: frozenset[str]

    def drifted(self, score: float, threshold: float) -> bool:
        if self.score_kind == "distance":
            return bool(score >= threshold)
        # Evidently: K-S drifts at p <= threshold, chi-square and Z at p < threshold.
        return bool(score <= threshold) if self.name == "ks" else bool(score < threshold)


STAT_TESTS: dict[str, StatTestSpec] = {
    spec.name: spec
    for spec in (
        StatTestSpec("wasserstein", "Wasserstein distance (normed)", "distance", 0.1, frozenset({"numerical"})),
        StatTestSpec("jensenshannon", "Jensen-Shannon distance", "distance", 0.1,
                     frozenset({"numerical", "categorical"})),
        StatTestSpec("psi", "PSI", "distance", 0.1, frozenset({"numerical", "categorical"})),
        StatTestSpec("ks", "K-S p_value", "p_value", 0.05, frozenset({"numerical"})),
        StatTestSpec("chisquare", "chi-square p_value", "p_value", 0.05, frozenset({"categorical"})),
        StatTestSpec("z", "Z-test p_value", "p_value", 0.05, frozenset({"categorical"})),
    )
}


class DriftConfig(BaseModel):
    """How drift is tested and when it counts. Defaults reproduce Evidently's DataDriftPreset."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    numerical_test: NumericalTest = Field(
        "auto", description="Test for numerical columns; `auto` picks as Evidently does (see kfops.core.drift)."
    )
    categorical_test: CategoricalTest = Field("auto", description="Test for categorical columns; `auto` as Evidently.")
    numerical_threshold: float | None = Field(
        None, gt=0, description="Threshold for numerical columns (p-value or distance); default: the test's own."
    )
    categorical_threshold: float | None = Field(None, gt=0, description="Threshold for categorical columns.")
    per_column_test: dict[str, TestName] = Field(default_factory=dict, description="Column -> test, overrides the above.")
    per_column_threshold: dict[str, float] = Field(default_factory=dict, description="Column -> threshold.")
    drift_share: float = Field(
        0.5, gt=0, le=1, description="The dataset drifts when at least this share of tested columns drift."
    )
    sample_size: int | None = Field(
        1_000_000,
        ge=10_000,
        description="Most rows per side used by the tests (random, without replacement); None: all rows. "
        "Distances get noise ~1/sqrt(n); p-value tests lose power as n shrinks (see kfops.core.drift).",
    )
    seed: int = Field(0, description="Seed of the row sampling, so a check is reproducible.")
    min_rows: int = Field(
        100, ge=1,
        description="Fewest rows each side needs for a verdict: with fewer, the distance tests Evidently picks for "
        "a large reference call nearly every column drifted (4 logged predictions against a month: 22 of 25), so "
        "the check refuses to judge instead.",
    )
    columns: list[str] | None = Field(None, description="Columns to test; default: every reference column.")
    exclude_columns: list[str] = Field(default_factory=list, description="Columns never tested (ids, timestamps).")
    numerical_columns: list[str] = Field(default_factory=list, description="Force these columns to numerical.")
    categorical_columns: list[str] = Field(default_factory=list, description="Force these columns to categorical.")
    current_source: Literal["window", "inference_logs"] = Field(
        "window",
        description="What the retraining pipeline's drift check compares with the champion's data: `window`, the "
        "config's dataset window as the loader reads it (labelled rows: the champion is scored on them too), or "
        "`inference_logs`, the predictions logged in that window (served requests, and batch jobs' with "
        "`kfops predict --log`), by the time they were made; unlabelled, so only label-free evidence (prediction "
        "drift, the estimated AUC, weighted drift) informs the policy.",
    )
    prediction_column: str = Field("prediction", description="Model score column, tested for prediction drift.")
    label_column: str = Field("label", description="Binary label; when in the current window, performance is scored.")
    prediction_drift_counts: bool = Field(True, description="Prediction drift alone makes the verdict `drift`.")
    max_roc_auc_drop: float | None = Field(
        0.05,
        ge=0,
        description="Drift when ROC AUC on the current window is this much below the reference's. Use a "
        "held-out reference (e.g. the test split): on the training window the reference AUC is optimistic.",
    )
    min_roc_auc: float | None = Field(None, gt=0, le=1, description="Drift when ROC AUC on the current window is lower.")
    max_log_loss_increase: float | None = Field(
        None, ge=0, description="Drift when log loss on the current window exceeds the reference's by this much."
    )
    report_rows: int = Field(5000, ge=100, description="Rows per side in the Evidently HTML report (a sample).")

    @model_validator(mode="after")
    def _column_lists_agree(self) -> DriftConfig:
        both = sorted(set(self.numerical_columns) & set(self.categorical_columns))
        if both:
            raise ValueError(f"column(s) {', '.join(both)} are in both numerical_columns and categorical_columns")
        bad = {c: t for c, t in self.per_column_threshold.items() if not t > 0}
        if bad:
            raise ValueError(f"per_column_threshold must be positive, got {bad}")
        return self

    def test_for(self, column: str, kind: ColumnKind) -> str:
        """The configured test name for a column (may be `auto`)."""
        if column in self.per_column_test:
            return self.per_column_test[column]
        return self.numerical_test if kind == "numerical" else self.categorical_test

    def threshold_for(self, column: str, kind: ColumnKind, test: str) -> float:
        if column in self.per_column_threshold:
            return self.per_column_threshold[column]
        configured = self.numerical_threshold if kind == "numerical" else self.categorical_threshold
        return STAT_TESTS[test].default_threshold if configured is None else configured


@dataclass
class ColumnDrift:
    """The drift test of one column. ``score`` is Evidently's drift score: a p-value or a distance."""

    column: str
    type: ColumnKind
    test: str
    test_name: str
    score: float | None
    score_kind: str
    threshold: float
    drifted: bool
    statistic: float | None = None
    p_value: float | None = None
    reference_rows: int = 0
    current_rows: int = 0
    reference_missing_share: float = 0.0
    current_missing_share: float = 0.0
    note: str | None = None

    def describe(self) -> str:
        if self.score is None:
            return f"{self.column} ({self.note})"
        verdict = "drift" if self.drifted else "no drift"
        return f"{self.column} ({self.test_name} {_fmt(self.score)}, threshold {self.threshold:g}: {verdict})"


@dataclass
class PredictionDrift:
    """Drift of the model's scores; ``source`` is the prediction column or `model`."""

    source: str
    result: ColumnDrift
    reference_mean: float
    current_mean: float


@dataclass
class Performance:
    """The champion's performance on the labelled current window (and the reference, when labelled)."""

    rows: int
    positive_rate: float
    roc_auc: float | None
    log_loss: float | None
    reference_roc_auc: float | None = None
    reference_log_loss: float | None = None
    degraded: bool = False
    reasons: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class DriftResult:
    """Everything a drift check found; ``drift`` is the verdict and ``reasons`` say why."""

    drift: bool
    reasons: list[str]
    columns: list[ColumnDrift]
    drift_share: float
    drift_share_threshold: float
    dataset_drift: bool
    prediction: PredictionDrift | None
    performance: Performance | None
    reference_rows: int
    current_rows: int
    reference_sampled_rows: int
    current_sampled_rows: int
    skipped_columns: dict[str, str]
    notes: list[str]
    config: dict[str, Any]
    checked_at: str

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def summary(self) -> str:
        """One line: the verdict, the drifted columns and any reason beyond them."""
        head = "DRIFT" if self.drift else "no drift"
        line = (
            f"{head}: {len(self.drifted_columns)} of {len(self.columns)} columns drifted "
            f"({self.drift_share:.0%}; dataset drift at >= {self.drift_share_threshold:.0%})"
        )
        if self.drifted_columns:
            line += ": " + ", ".join(map(str, self.drifted_columns))
        others = self.reasons[1:] if self.dataset_drift else self.reasons
        return line + "".join(f"; {reason}" for reason in others)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["drifted_columns"] = self.drifted_columns
        safe: dict[str, Any] = json_safe(data)
        return safe


# --------------------------------------------------------------------------------------------
# The check


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: DriftConfig | None = None,
    model: Any = None,
) -> DriftResult:
    """Test every column for drift, plus predictions and performance when available.

    ``model`` (optional) is the champion: a kfops ``TabularModel``, anything with
    ``predict_proba(frame)``, or a callable ``frame -> scores``; it gets the sampled rows with
    every column but the label and prediction columns. Without it, a ``cfg.prediction_column``
    present in both frames is tested instead. Raises ``DataError`` on empty frames, columns the
    current window lacks, a column whose type differs between the windows, or a side with fewer
    than ``cfg.min_rows`` rows.
    """
    cfg = cfg or DriftConfig()
    _require_rows(reference, "reference")
    _require_rows(current, "current")
    kinds, skipped = _column_kinds(reference, current, cfg)
    if not kinds:
        why_not = "; ".join(f"{c}: {why}" for c, why in skipped.items()) or "the frames have no columns"
        raise DataError(
            f"no column can be tested for drift ({why_not})",
            hint="set drift.columns, drift.numerical_columns or drift.categorical_columns",
        )
    # Enough rows for a verdict, once the columns are known to match.
    _require_rows(reference, "reference", cfg.min_rows)
    _require_rows(current, "current", cfg.min_rows)

    # A model may read columns that are not tested (ids, excluded ones): then keep every column.
    needed = [*kinds, cfg.label_column, cfg.prediction_column]
    ref_columns = list(reference.columns) if model is not None else _present(reference, needed)
    cur_columns = list(current.columns) if model is not None else _present(current, needed)
    ref_sample = sample_rows(reference, ref_columns, cfg.sample_size, cfg.seed)
    cur_sample = sample_rows(current, cur_columns, cfg.sample_size, cfg.seed + 1)

    columns = [
        column_drift(name, kind, ref_sample[name], cur_sample[name], cfg) for name, kind in kinds.items()
    ]
    drifted = [c for c in columns if c.drifted]
    share = len(drifted) / len(columns)
    dataset_drift = share >= cfg.drift_share
    reasons: list[str] = []
    notes: list[str] = []
    if dataset_drift:
        reasons.append(
            f"{len(drifted)} of {len(columns)} columns drifted ({share:.0%}, drift_share {cfg.drift_share:.0%}): "
            + ", ".join(c.describe() for c in drifted)
        )

    ref_scores, cur_scores, source = _scores(ref_sample, cur_sample, cfg, model, notes)
    prediction = None
    if ref_scores is not None and cur_scores is not None:
        kind: ColumnKind = "numerical" if _is_numeric(ref_scores) and _is_numeric(cur_scores) else "categorical"
        result = column_drift(cfg.prediction_column, kind, ref_scores, cur_scores, cfg)
        prediction = PredictionDrift(
            source=source or cfg.prediction_column, result=result,
            reference_mean=_mean(ref_scores), current_mean=_mean(cur_scores),
        )
        if result.drifted and cfg.prediction_drift_counts:
            reasons.append(f"prediction drift ({source}): {result.describe()}")

    performance = None
    if cfg.label_column in cur_sample.columns:
        if cur_scores is not None:
            performance = _performance(ref_sample, cur_sample, ref_scores, cur_scores, cfg)
            reasons.extend(performance.reasons)
        else:
            notes.append(
                f"current window has labels ('{cfg.label_column}') but no predictions: pass a model or a "
                f"'{cfg.prediction_column}' column to score performance"
            )

    return DriftResult(
        drift=bool(reasons),
        reasons=reasons,
        columns=columns,
        drift_share=share,
        drift_share_threshold=cfg.drift_share,
        dataset_drift=dataset_drift,
        prediction=prediction,
        performance=performance,
        reference_rows=len(reference),
        current_rows=len(current),
        reference_sampled_rows=len(ref_sample),
        current_sampled_rows=len(cur_sample),
        skipped_columns=skipped,
        notes=notes,
        config=cfg.model_dump(mode="json"),
        checked_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def column_drift(name: str, kind: ColumnKind, reference: pd.Series, current: pd.Series, cfg: DriftConfig) -> ColumnDrift:
    """One column's drift test, with Evidently's test choice, formulas and comparison."""
    if kind == "numerical":
        ref_values, ref_missing = _finite(reference, name, "reference")
        cur_values, cur_missing = _finite(current, name, "current")
        data: _Numerical | _Counts = _Numerical(ref_values, cur_values)
        ref_rows, cur_rows = ref_values.size, cur_values.size
    else:
        data = _Counts.of(reference, current)
        ref_rows, cur_rows = int(data.reference.sum()), int(data.current.sum())
        ref_missing = 1 - ref_rows / len(reference) if len(reference) else 0.0
        cur_missing = 1 - cur_rows / len(current) if len(current) else 0.0

    configured = cfg.test_for(name, kind)
    if configured != "auto" and kind not in STAT_TESTS[configured].kinds:
        raise ConfigError(f"drift test '{configured}' does not apply to {kind} column '{name}'")
    base: dict[str, Any] = {
        "column": name,
        "type": kind,
        "reference_rows": int(ref_rows),
        "current_rows": int(cur_rows),
        "reference_missing_share": float(ref_missing),
        "current_missing_share": float(cur_missing),
    }
    if ref_rows == 0 or cur_rows == 0:
        # Evidently refuses such a column; a feature that vanished from one side is drift (fail closed).
        test = configured if configured != "auto" else ("wasserstein" if kind == "numerical" else "jensenshannon")
        spec = STAT_TESTS[test]
        side = "reference" if ref_rows == 0 else "current"
        return ColumnDrift(
            **base, test=test, test_name=spec.display_name, score=None, score_kind=spec.score_kind,
            threshold=cfg.threshold_for(name, kind, test), drifted=True,
            note=f"every value is missing in the {side} window",
        )

    test = configured if configured != "auto" else _auto_test(kind, data, ref_rows)
    spec = STAT_TESTS[test]
    threshold = cfg.threshold_for(name, kind, test)
    score, statistic = _run_test(test, kind, data)
    return ColumnDrift(
        **base,
        test=test,
        test_name=spec.display_name,
        score=float(score),
        score_kind=spec.score_kind,
        threshold=float(threshold),
        drifted=spec.drifted(score, threshold),
        statistic=None if statistic is None else float(statistic),
        p_value=float(score) if spec.score_kind == "p_value" else None,
    )


# --------------------------------------------------------------------------------------------
# Column data and the tests


@dataclass
class _Numerical:
    """Finite values of one numerical column, sorted once for every test that needs order."""

    reference: np.ndarray
    current: np.ndarray
    _sorted: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        if self._sorted is None:
            self._sorted = (np.sort(self.reference), np.sort(self.current))
        return self._sorted

    def distinct_count(self, limit: int) -> int:
        """Distinct values over both sides, exact up to ``limit``; anything above reads as limit + 1."""
        import numpy as np

        ref, cur = self.sorted
        ref_keys, cur_keys = _sorted_unique(ref), _sorted_unique(cur)
        if max(ref_keys.size, cur_keys.size) > limit:
            return limit + 1
        return int(np.union1d(ref_keys, cur_keys).size)

    def counts(self) -> _Counts:
        import numpy as np

        ref, cur = self.sorted
        ref_keys, ref_counts = _sorted_value_counts(ref)
        cur_keys, cur_counts = _sorted_value_counts(cur)
        keys = np.union1d(ref_keys, cur_keys)
        ref_aligned = np.zeros(keys.size, dtype=np.int64)
        cur_aligned = np.zeros(keys.size, dtype=np.int64)
        ref_aligned[np.searchsorted(keys, ref_keys)] = ref_counts
        cur_aligned[np.searchsorted(keys, cur_keys)] = cur_counts
        return _Counts(list(keys.tolist()), ref_aligned, cur_aligned)


@dataclass
class _Counts:
    """Counts per distinct non-missing value, aligned over the union of both sides' values."""

    keys: list[Any]
    reference: np.ndarray
    current: np.ndarray

    @classmethod
    def of(cls, reference: pd.Series, current: pd.Series) -> _Counts:
        import numpy as np
        import pandas as pd

        ref_codes, ref_keys = pd.factorize(reference, use_na_sentinel=True)
        cur_codes, cur_keys = pd.factorize(current, use_na_sentinel=True)
        ref_keys = np.asarray(ref_keys, dtype=object)
        cur_keys = np.asarray(cur_keys, dtype=object)
        ref_counts = np.bincount(ref_codes[ref_codes >= 0], minlength=ref_keys.size)
        cur_counts = np.bincount(cur_codes[cur_codes >= 0], minlength=cur_keys.size)
        position = pd.Index(ref_keys).get_indexer(cur_keys)
        new = position < 0
        position[new] = ref_keys.size + np.arange(int(new.sum()))
        keys = [*ref_keys.tolist(), *cur_keys[new].tolist()]
        ref_aligned = np.zeros(len(keys), dtype=np.int64)
        ref_aligned[: ref_keys.size] = ref_counts
        cur_aligned = np.zeros(len(keys), dtype=np.int64)
        cur_aligned[position] = cur_counts
        return cls(keys, ref_aligned, cur_aligned)


def _auto_test(kind: ColumnKind, data: _Numerical | _Counts, reference_rows: int) -> str:
    """Evidently's default test for the column (``_get_default_stattest``)."""
    distinct = data.distinct_count(5) if isinstance(data, _Numerical) else len(data.keys)
    if reference_rows <= SMALL_SAMPLE_ROWS:
        if kind == "numerical" and distinct > 5:
            return "ks"
        return "chisquare" if distinct > 2 else "z"
    if kind == "numerical" and distinct > 5:
        return "wasserstein"
    return "jensenshannon"


def _run_test(test: str, kind: ColumnKind, data: _Numerical | _Counts) -> tuple[float, float | None]:
    """(score, statistic): the score is what Evidently compares with the threshold."""
    if test == "wasserstein":
        assert isinstance(data, _Numerical), test
        return _wasserstein_normed(data), None
    if test == "ks":
        assert isinstance(data, _Numerical), test
        statistic, p_value = _ks(data)
        return p_value, statistic
    if test in ("jensenshannon", "psi"):
        ref_share, cur_share = _binned_shares(data)
        return (_jensenshannon(ref_share, cur_share), None) if test == "jensenshannon" else (_psi(ref_share, cur_share), None)
    counts = data.counts() if isinstance(data, _Numerical) else data
    if test == "chisquare":
        statistic, p_value = _chisquare(counts)
        return p_value, statistic
    if test == "z":
        statistic, p_value = _z_test(counts)
        return p_value, statistic
    raise ConfigError(f"unknown drift test '{test}'; use one of {', '.join(STAT_TESTS)}")


def _cdfs_on_merged(data: _Numerical) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both empirical CDFs along the pooled sorted values: (pooled, ref_cdf, cur_cdf, last_of_tie).

    A stable argsort of the two sorted runs is a linear merge; cumulative counts of where each
    pooled value came from are the CDFs. Inside a run of tied values the counts are partial, but
    the gap to the next value is 0 there, and ``last_of_tie`` marks where they are complete
    (scipy's searchsorted(side='right') values)."""
    import numpy as np

    ref, cur = data.sorted
    both = np.concatenate([ref, cur])
    order = np.argsort(both, kind="stable")
    pooled = both[order]
    ref_seen = np.cumsum(order < ref.size)
    ref_cdf = ref_seen / ref.size
    cur_cdf = (np.arange(1, pooled.size + 1) - ref_seen) / cur.size
    last_of_tie = np.append(pooled[1:] != pooled[:-1], True)
    return pooled, ref_cdf, cur_cdf, last_of_tie


def _wasserstein_normed(data: _Numerical) -> float:
    """scipy.stats.wasserstein_distance / max(std(reference), 0.001), from the sorted samples."""
    import numpy as np

    pooled, ref_cdf, cur_cdf, _ = _cdfs_on_merged(data)
    distance = np.vecdot(np.abs(ref_cdf[:-1] - cur_cdf[:-1]), np.diff(pooled))
    return float(distance) / max(float(np.std(data.reference)), 0.001)


def _ks(data: _Numerical) -> tuple[float, float]:
    """Two-sided two-sample K-S, identical to scipy's ks_2samp(method='auto')."""
    import numpy as np
    from scipy import stats

    ref, cur = data.sorted
    if max(ref.size, cur.size) <= KS_EXACT_MAX_ROWS:
        result = stats.ks_2samp(ref, cur)
        return float(result.statistic), float(result.pvalue)
    _, ref_cdf, cur_cdf, last_of_tie = _cdfs_on_merged(data)
    diff = ref_cdf[last_of_tie] - cur_cdf[last_of_tie]
    statistic = max(float(np.clip(-diff.min(), 0, 1)), float(diff.max()))
    larger, smaller = sorted([float(ref.size), float(cur.size)], reverse=True)
    effective_n = larger * smaller / (larger + smaller)
    p_value = float(np.clip(stats.kstwo.sf(statistic, np.round(effective_n)), 0, 1))
    return statistic, p_value


def _binned_shares(data: _Numerical | _Counts) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's get_binned_data: Sturges bins over both sides for numerical columns with more
    than 20 distinct reference values, else the share of each distinct value."""
    import numpy as np

    if isinstance(data, _Numerical) and _sorted_unique(data.sorted[0]).size > 20:
        edges = np.histogram_bin_edges(np.concatenate([data.reference, data.current]), bins="sturges")
        ref_share = np.histogram(data.reference, edges)[0] / data.reference.size
        cur_share = np.histogram(data.current, edges)[0] / data.current.size
        return ref_share, cur_share
    counts = data.counts() if isinstance(data, _Numerical) else data
    return counts.reference / counts.reference.sum(), counts.current / counts.current.sum()


def _jensenshannon(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    from scipy.spatial import distance

    return float(distance.jensenshannon(ref_share, cur_share))


def _psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    """Population stability index; empty bins get Evidently's small fill so the log stays finite."""
    import numpy as np

    ref_share, cur_share = ref_share.astype(float), cur_share.astype(float)
    for share in (ref_share, cur_share):
        smallest = share[share != 0].min()
        np.place(share, share == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return float(np.sum((ref_share - cur_share) * np.log(ref_share / cur_share)))


def _chisquare(counts: _Counts) -> tuple[float, float]:
    """Chi-square of current counts against reference counts scaled to the current size."""
    import numpy as np
    from scipy import stats

    if len(counts.keys) < 2:
        return 0.0, 1.0
    expected = counts.reference * (counts.current.sum() / counts.reference.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        result = stats.chisquare(counts.current, expected)
    return float(result.statistic), float(result.pvalue)


def _z_test(counts: _Counts) -> tuple[float, float]:
    """Two-proportion Z-test of 'is the first value (sorted)' between the sides, as Evidently."""
    import numpy as np
    from scipy.stats import norm

    if len(counts.keys) == 1:
        return 0.0, 1.0
    first = min(range(len(counts.keys)), key=lambda i: _sort_key(counts.keys[i]))
    n_ref, n_cur = float(counts.reference.sum()), float(counts.current.sum())
    p_ref = (n_ref - counts.reference[first]) / n_ref
    p_cur = (n_cur - counts.current[first]) / n_cur
    pooled = (p_ref * n_ref + p_cur * n_cur) / (n_ref + n_cur)
    statistic = (p_ref - p_cur) / np.sqrt(pooled * (1 - pooled) * (1.0 / n_ref + 1.0 / n_cur))
    return float(statistic), float(2 * (1 - norm.cdf(np.abs(statistic))))


def _sort_key(value: Any) -> tuple[int, Any]:
    # Evidently sorts the values; mixed types fall back to their text so sorting cannot fail.
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    import numpy as np

    if values.size == 0:
        return values
    unique: np.ndarray = values[np.concatenate([[True], values[1:] != values[:-1]])]
    return unique


def _sorted_value_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    if values.size == 0:
        return values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return values[starts], np.diff(np.append(starts, values.size))


# --------------------------------------------------------------------------------------------
# Inputs: columns, types, sampling


def _require_rows(frame: pd.DataFrame, side: str, min_rows: int = 1) -> None:
    if frame is None or len(frame.columns) == 0 or len(frame) == 0:
        shape = "no data" if frame is None else f"{len(frame)} rows x {len(frame.columns)} columns"
        raise DataError(f"the {side} window is empty ({shape}); drift needs rows on both sides",
                        hint=f"check the {side} path and its date window")
    if len(frame) < min_rows:
        raise DataError(f"the {side} window has {len(frame)} rows, too few to judge drift (drift.min_rows: {min_rows})",
                        hint="widen the window (e.g. --window-days), or lower drift.min_rows if you accept noisier verdicts")


def _column_kinds(
    reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig
) -> tuple[dict[str, ColumnKind], dict[str, str]]:
    """Columns to test with their kind, and the columns left out with the reason."""
    reserved = {cfg.label_column, cfg.prediction_column}
    excluded = set(cfg.exclude_columns)
    if cfg.columns is not None:
        unknown = [c for c in cfg.columns if c not in reference.columns]
        if unknown:
            raise DataError(
                f"drift.columns names column(s) the reference window lacks: {', '.join(unknown)}",
                hint=f"the reference has: {', '.join(map(str, reference.columns))}",
            )
        candidates = [c for c in cfg.columns if c not in excluded]
    else:
        candidates = [c for c in reference.columns if c not in reserved and c not in excluded]
    for forced in (*cfg.numerical_columns, *cfg.categorical_columns):
        if forced not in reference.columns:
            raise DataError(f"drift.numerical_columns/categorical_columns name '{forced}', which the reference lacks")

    missing = [c for c in candidates if c not in current.columns]
    if missing:
        raise DataError(
            f"the current window lacks column(s) {', '.join(map(str, missing))} that the reference has",
            hint="give both windows the same schema, or list the columns in drift.exclude_columns",
        )

    kinds: dict[str, ColumnKind] = {}
    skipped: dict[str, str] = {}
    for column in candidates:
        kind: ColumnKind | None
        why: str | None
        if column in cfg.numerical_columns:
            kind, why = "numerical", None
        elif column in cfg.categorical_columns:
            kind, why = "categorical", None
        else:
            kind, why = infer_column_kind(reference[column])
            if kind is None and why and why.startswith("text") and cfg.columns is not None:
                kind, why = "categorical", None  # asked for by name: test it as categories
        if kind is None:
            skipped[column] = why or "unsupported"
            continue
        if kind == "numerical":
            for side, frame in (("reference", reference), ("current", current)):
                if not _is_numeric(frame[column]):
                    raise DataError(
                        f"column '{column}' is numerical but holds {frame[column].dtype} values in the {side} window",
                        hint="fix the column's type, or list it in drift.categorical_columns",
                    )
        kinds[column] = kind
    return kinds, skipped


def infer_column_kind(series: pd.Series) -> tuple[ColumnKind | None, str | None]:
    """Evidently's type inference: floats and integers with more than 10 distinct values are
    numerical; strings, booleans, categories and other integers categorical. Mostly-distinct
    strings (ids, free text), datetimes and other objects are not tested; (None, why) for them."""
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "categorical", None
    if pd.api.types.is_float_dtype(dtype):
        return "numerical", None
    if pd.api.types.is_integer_dtype(dtype):
        return ("numerical", None) if series.nunique() > INTEGER_CARDINALITY_LIMIT else ("categorical", None)
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return None, "datetime column: not a feature (exclude it, or derive features from it)"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        codes, distinct_values = pd.factorize(series, use_na_sentinel=True)  # one hash pass, not three
        if len(distinct_values) == 0:
            return None, "every value is missing in the reference window"
        first, last = distinct_values[0], distinct_values[-1]
        if not (isinstance(first, str) and isinstance(last, str)):
            return None, f"object column of {type(first).__name__} values"
        distinct, count = len(distinct_values), int((codes >= 0).sum())
        if distinct > count * 0.5:
            return None, (
                f"text or id-like ({distinct} distinct values in {count} rows); "
                "list it in drift.categorical_columns to test it"
            )
        return "categorical", None
    return None, f"unsupported dtype {dtype}"


def _is_numeric(series: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def _present(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in dict.fromkeys(columns) if c in frame.columns]


def sample_rows(frame: pd.DataFrame, columns: list[str], size: int | None, seed: int) -> pd.DataFrame:
    """At most ``size`` rows, drawn without replacement, kept in their original order."""
    import numpy as np

    if size is None or len(frame) <= size:
        return frame  # callers only read ``columns``; no copy of a large window
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=size, replace=False))
    return frame.iloc[rows, frame.columns.get_indexer(columns)]  # copies only the sampled cells


def _finite(series: pd.Series, name: str, side: str) -> tuple[np.ndarray, float]:
    """Finite float values (Evidently drops NaN and +-inf) and the share that was dropped."""
    import numpy as np

    try:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise DataError(f"column '{name}' in the {side} window is not numerical: {err}") from err
    finite = np.isfinite(values)
    kept = values[finite]
    return kept, (1 - kept.size / values.size) if values.size else 0.0


# --------------------------------------------------------------------------------------------
# Predictions and performance


def _scores(
    ref_sample: pd.DataFrame, cur_sample: pd.DataFrame, cfg: DriftConfig, model: Any, notes: list[str]
) -> tuple[pd.Series | None, pd.Series | None, str | None]:
    """Scores for both windows, from the model when given, else from the prediction column."""
    if model is not None:
        return _predict(model, ref_sample, cfg), _predict(model, cur_sample, cfg), "model"
    column = cfg.prediction_column
    in_ref, in_cur = column in ref_sample.columns, column in cur_sample.columns
    if in_ref and in_cur:
        return ref_sample[column], cur_sample[column], column
    if in_cur:
        notes.append(f"'{column}' is only in the current window: prediction drift needs it on both sides")
        return None, cur_sample[column], column
    return None, None, None


def _predict(model: Any, frame: pd.DataFrame, cfg: DriftConfig) -> pd.Series:
    import numpy as np
    import pandas as pd

    features = frame.drop(columns=[cfg.label_column, cfg.prediction_column], errors="ignore")
    if hasattr(model, "predict_proba_encoded") and hasattr(model, "spec"):
        raw = model.predict_proba_encoded(model.spec.encode(features))  # a kfops TabularModel
    elif hasattr(model, "predict_proba"):
        raw = model.predict_proba(features)
    elif callable(model):
        raw = model(features)
    else:
        raise KfopsError(
            f"the model ({type(model).__name__}) has no predict_proba and is not callable",
            hint="pass a kfops model, an object with predict_proba(frame), or a function frame -> scores",
        )
    scores = np.asarray(raw, dtype=np.float64)
    if scores.ndim == 2 and scores.shape[1] in (1, 2):
        scores = scores[:, -1]  # probability of the positive class
    if scores.ndim != 1 or scores.shape[0] != len(frame):
        raise KfopsError(
            f"the model returned scores of shape {scores.shape} for {len(frame)} rows; expected ({len(frame)},)"
        )
    return pd.Series(scores, name=cfg.prediction_column)


def _performance(
    ref_sample: pd.DataFrame,
    cur_sample: pd.DataFrame,
    ref_scores: pd.Series | None,
    cur_scores: pd.Series,
    cfg: DriftConfig,
) -> Performance:
    current = _score_labels(cur_sample[cfg.label_column], cur_scores)
    if isinstance(current, str):
        return Performance(rows=0, positive_rate=float("nan"), roc_auc=None, log_loss=None, note=current)
    rows, rate, auc, loss, note = current
    perf = Performance(rows=rows, positive_rate=rate, roc_auc=auc, log_loss=loss, note=note)
    if ref_scores is not None and cfg.label_column in ref_sample.columns:
        reference = _score_labels(ref_sample[cfg.label_column], ref_scores)
        if not isinstance(reference, str):
            perf.reference_roc_auc, perf.reference_log_loss = reference[2], reference[3]
    if auc is not None and cfg.min_roc_auc is not None and auc < cfg.min_roc_auc:
        perf.reasons.append(f"ROC AUC on the current window is {auc:.4f}, below min_roc_auc {cfg.min_roc_auc}")
    if auc is not None and perf.reference_roc_auc is not None and cfg.max_roc_auc_drop is not None:
        drop = perf.reference_roc_auc - auc
        if drop > cfg.max_roc_auc_drop:
            perf.reasons.append(
                f"ROC AUC fell from {perf.reference_roc_auc:.4f} on the reference to {auc:.4f} "
                f"(drop {drop:.4f} > max_roc_auc_drop {cfg.max_roc_auc_drop})"
            )
    if loss is not None and perf.reference_log_loss is not None and cfg.max_log_loss_increase is not None:
        rise = loss - perf.reference_log_loss
        if rise > cfg.max_log_loss_increase:
            perf.reasons.append(
                f"log loss rose from {perf.reference_log_loss:.4f} to {loss:.4f} "
                f"(+{rise:.4f} > max_log_loss_increase {cfg.max_log_loss_increase})"
            )
    perf.degraded = bool(perf.reasons)
    return perf


def _score_labels(
    labels: pd.Series, scores: pd.Series
) -> tuple[int, float, float | None, float | None, str | None] | str:
    """(rows, positive rate, ROC AUC, log loss, note), or a note on why nothing can be scored."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import log_loss, roc_auc_score

    if not (_is_numeric(labels) or pd.api.types.is_bool_dtype(labels.dtype)):
        return f"label column holds {labels.dtype} values, not 0/1"
    if not _is_numeric(scores):
        return f"predictions are {scores.dtype} values, not scores: ROC AUC and log loss need probabilities"
    y = labels.to_numpy(dtype=np.float64, na_value=np.nan)
    scores = scores.to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.isfinite(y) & np.isfinite(scores)
    y, p = y[keep], scores[keep]
    if y.size == 0:
        return "no row has both a label and a score"
    if not np.isin(y, (0.0, 1.0)).all():
        return "labels are not binary 0/1; performance is scored for binary labels only"
    rate = float(y.mean())
    if rate in (0.0, 1.0):
        return int(y.size), rate, None, None, "only one class in the labels: ROC AUC and log loss are undefined"
    auc = float(roc_auc_score(y, p))
    probabilities = (p >= 0).all() and (p <= 1).all()
    loss = float(log_loss(y, p, labels=[0, 1])) if probabilities else None
    note = None if probabilities else "scores are not probabilities in [0, 1]: log loss not computed"
    return int(y.size), rate, auc, loss, note


def _mean(values: pd.Series) -> float:
    import numpy as np

    return float(np.nanmean(values.to_numpy(dtype=np.float64, na_value=np.nan))) if _is_numeric(values) else float("nan")


# --------------------------------------------------------------------------------------------
# Outputs


def write_verdict(result: DriftResult, json_path: str | Path, *, html_path: str | Path | None = None) -> Path:
    """Write the verdict as JSON (atomically); ``html_path`` records where the report is."""
    payload = {"kind": VERDICT_KIND, "version": VERDICT_VERSION, **result.to_dict()}
    payload["html_report"] = None if html_path is None else str(html_path)
    return atomic_write_text(Path(json_path), json.dumps(payload, indent=2, allow_nan=False) + "\n")


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value != 0 and (abs(value) < 0.001 or abs(value) >= 1000) else f"{value:.4f}"
