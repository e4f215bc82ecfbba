"""Replay a year month by month to compare retrain policies on real drift.

For each month: the current champion scores that month's rows (in process, as a replay); the
drift check compares the month with the champion's training data; the policy decides whether to
retrain; a challenger trained on the month must pass the same gate as the pipeline's evaluate
step (against the champion, on the month's test split) to be promoted. The feature frame is
built once for the whole span and sliced by month, so every policy sees the same data.

Every policy replays from one :class:`ModelBank`: the model trained on a month, its scores, drift
checks and gate verdicts are computed once and shared (a challenger trained on a month is the same
whichever policy asked for it), so comparing many policies costs little more than one.

Labels honour ``retrain.label_delay``: at a month's check (local midnight after its last day) a row
is labelled only if its event is at least the delay old; the other rows' labels are hidden (NaN)
from the drift check and the observed-performance trigger. The champion's realised ROC AUC on the
whole month (``roc_auc``) is what the policy is judged by, never what it decides on.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.tables import read_parquet
from kfops.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig
    from kfops.core.drift import DriftResult
    from kfops.core.model import TabularModel
    from kfops.core.retrain_policy import RetrainPolicy

log = logging.getLogger("kfops.runners.backtest")
POLICIES = ("default", "observed", "estimated", "weighted_drift", "prediction_drift", "challenger", "drift", "monthly",
            "never")
MONTH_COLUMN = "_backtest_month"


@dataclass
class MonthResult:
    """One policy's month: how the serving champion did, and what the policy did after it."""

    policy: str
    month: str
    rows: int
    champion: int
    roc_auc: float | None
    drift: bool
    drifted_columns: int
    drift_reason: str
    decision: str
    retrained: bool
    challenger_roc_auc: float | None = None
    champion_test_roc_auc: float | None = None
    promoted: bool = False
    gate: str = ""
    champion_month: str = ""
    decision_reason: str = ""
    triggered_by: str = ""
    estimated_roc_auc: float | None = None
    estimated_roc_auc_low: float | None = None
    estimated_roc_auc_high: float | None = None
    estimated_roc_auc_label_free: float | None = None
    label_free_low: float | None = None
    label_free_high: float | None = None
    observed_roc_auc: float | None = None
    observed_rows: int = 0
    observed_diff: float | None = None
    observed_diff_low: float | None = None
    observed_diff_high: float | None = None
    reference_roc_auc: float | None = None
    weighted_drift_share: float | None = None
    prediction_drift: bool | None = None
    note: str = ""  # why the month's own rows trained no model, and what a retrain trained on instead

    @property
    def estimate_error(self) -> float | None:
        """CBPE's estimate minus the realised AUC of the month."""
        if self.estimated_roc_auc is None or self.roc_auc is None:
            return None
        return self.estimated_roc_auc - self.roc_auc

    @property
    def label_free_error(self) -> float | None:
        """The label-free CBPE estimate (no label of the month used) minus the realised AUC."""
        if self.estimated_roc_auc_label_free is None or self.roc_auc is None:
            return None
        return self.estimated_roc_auc_label_free - self.roc_auc

    @property
    def label_free_covered(self) -> bool | None:
        """Whether the realised AUC lies in the label-free estimate's interval."""
        if self.label_free_low is None or self.label_free_high is None or self.roc_auc is None:
            return None
        return self.label_free_low <= self.roc_auc <= self.label_free_high

    def describe(self) -> str:
        """One line: the champion's AUC on the month, the drift verdict and what followed."""
        auc = "n/a" if self.roc_auc is None else f"{self.roc_auc:.4f}"
        action = ("promoted" if self.promoted else "gate refused") if self.retrained else self.decision
        return (f"{self.policy} {self.month}: champion #{self.champion} AUC {auc}, "
                f"drift {'yes' if self.drift else 'no'} -> {action}" + (f" ({self.note})" if self.note else ""))


@dataclass
class BacktestResult:
    """Per policy and month, what happened (``months``); kept in memory only, not in the table:
    the drift check each decision was made on (``checks``, keyed by ``(policy, month)``), the
    replayed frame (``data``) and the month each champion trained on where it is not its own
    (``sources``, :meth:`ModelBank.source_month`), so :func:`month_drift_report` can show any
    month's report."""

    months: list[MonthResult] = field(default_factory=list)
    checks: dict[tuple[str, str], DriftResult] = field(default_factory=dict, repr=False)
    data: pd.DataFrame | None = field(default=None, repr=False)
    sources: dict[str, str] = field(default_factory=dict, repr=False)

    def month(self, policy: str, month: str) -> MonthResult:
        for row in self.months:
            if row.policy == policy and row.month == month:
                return row
        raise DataError(f"the backtest has no month {month} for policy '{policy}'")

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{**asdict(m), "estimate_error": m.estimate_error, "label_free_error": m.label_free_error,
                              "label_free_covered": m.label_free_covered} for m in self.months])

    def totals(self, months: Sequence[str] | None = None) -> pd.DataFrame:
        """Per policy: mean and min realised AUC, retrains, promotions, CBPE's mean absolute error
        (with the month's known labels, and label-free) and the share of months whose realised AUC
        lies in the label-free estimate's interval; only ``months`` when given."""
        frame = self.frame()
        if months is not None:
            frame = frame[frame["month"].isin(list(months))]
        frame = frame.assign(abs_estimate_error=frame["estimate_error"].astype("float64").abs(),
                             abs_label_free_error=frame["label_free_error"].astype("float64").abs(),
                             label_free_in_interval=frame["label_free_covered"].astype("float64"))
        grouped = frame.groupby("policy", sort=False)
        return grouped.agg(months=("month", "count"), mean_roc_auc=("roc_auc", "mean"),
                           min_roc_auc=("roc_auc", "min"), drift_flagged=("drift", "sum"),
                           retrains=("retrained", "sum"), promotions=("promoted", "sum"),
                           estimate_mae=("abs_estimate_error", "mean"),
                           label_free_mae=("abs_label_free_error", "mean"),
                           label_free_coverage=("label_free_in_interval", "mean")).reset_index()


def parse_month(text: str) -> dt.date:
    """'2013-02' -> 2013-02-01."""
    try:
        return dt.datetime.strptime(text.strip(), "%Y-%m").date()
    except ValueError as err:
        raise ConfigError(f"month '{text}' must look like YYYY-MM", hint="e.g. --from 2013-02 --to 2013-12") from err


def month_starts(first: dt.date, last: dt.date) -> list[dt.date]:
    months, current = [], first.replace(day=1)
    while current <= last:
        months.append(current)
        current = (current + dt.timedelta(days=32)).replace(day=1)
    return months


def _month_end(month: dt.date) -> dt.date:
    return (month + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)


def policy_for(name: str, cfg: KfopsConfig) -> RetrainPolicy:
    """``default``: the configured ``retrain`` policy as is; ``observed``, ``estimated``,
    ``weighted_drift``, ``prediction_drift``, ``challenger``: it in mode ``performance`` with that one trigger;
    ``drift``: it in mode ``drift`` with debounce 2 (kfops' earlier trigger); ``monthly``: retrain
    at every check; ``never``."""
    from kfops.core.retrain_policy import RetrainPolicy

    if name == "default":
        return cfg.retrain
    if name in ("observed", "estimated", "weighted_drift", "prediction_drift", "challenger"):
        return cfg.retrain.model_copy(update={"mode": "performance", "triggers": [name]})
    if name == "drift":
        return cfg.retrain.model_copy(update={"mode": "drift", "debounce": 2})
    if name == "monthly":
        return RetrainPolicy(mode="scheduled", schedule_every=dt.timedelta(days=1), cooldown=dt.timedelta(0),
                             max_retrains=None)
    if name == "never":
        return RetrainPolicy(mode="never")
    raise ConfigError(f"unknown policy '{name}'", hint=f"choose from: {', '.join(POLICIES)}")


def build_frame(cfg: KfopsConfig, first: dt.date, last: dt.date, work_dir: Path,
                sample: float | None = None, seed: int = 0) -> pd.DataFrame:
    """Labelled features for [first, last], tagged with their local month; optionally sampled."""
    from kfops.steps.featurize import window_features

    frame = window_features(cfg, first, last, work_dir)
    if sample is not None:
        if not 0 < sample <= 1:
            raise ConfigError(f"sample {sample} must be in (0, 1]", hint="e.g. --sample 0.1 for a tenth of the rows")
        frame = frame.sample(frac=sample, random_state=seed).sort_values(cfg.dataset.event_timestamp)
    local = frame[cfg.dataset.event_timestamp].dt.tz_convert(cfg.validation.window_timezone)
    frame[MONTH_COLUMN] = local.dt.strftime("%Y-%m").to_numpy()
    return frame.reset_index(drop=True)


def gate_summary(blessed: bool, reasons: Sequence[str], limit: int = 400) -> str:
    """'BLESSED: <the checks passed>' or 'NOT BLESSED: <the checks failed>', shortened to ``limit``."""
    wanted = "PASS" if blessed else "FAIL"
    shown = [r for r in reasons if r.startswith(wanted)] or list(reasons)
    text = f"{'BLESSED' if blessed else 'NOT BLESSED'}: " + "; ".join(shown)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_time(month: str, cfg: KfopsConfig) -> dt.datetime:
    """When a month is checked: local midnight after its last day (``validation.window_timezone``)."""
    from zoneinfo import ZoneInfo

    year, number = map(int, month.split("-"))
    end = _month_end(dt.date(year, number, 1)) + dt.timedelta(days=1)
    return dt.datetime.combine(end, dt.time(), ZoneInfo(cfg.validation.window_timezone))


def labels_known_at(frame: pd.DataFrame, cfg: KfopsConfig, check_at: dt.datetime) -> pd.DataFrame:
    """``frame`` as a check at ``check_at`` sees it: the label of every row whose label would not
    exist yet (event later than ``check_at - retrain.label_delay``) is hidden (NaN)."""
    from kfops.core.monitoring import hide_unknown_labels

    return hide_unknown_labels(frame, cfg.dataset.label, cfg.dataset.event_timestamp, check_at,
                               cfg.retrain.label_delay)


@dataclass
class Trained:
    """A model trained on one month, its splits and its monitoring profile (stored with it)."""

    month: str
    model: TabularModel
    parts: dict[str, pd.DataFrame]
    profile: dict[str, Any]


class ModelBank:
    """Everything a replay computes that does not depend on the policy, computed once: the model
    trained on each month, each model's scores and drift check on each month, and the gate's
    verdict for each (challenger, champion) pair. All policies replay from one bank."""

    def __init__(self, cfg: KfopsConfig, by_month: dict[str, pd.DataFrame], work_dir: Path,
                 cache_dir: Path | None = None) -> None:
        self.cfg, self.by_month, self.work_dir = cfg, by_month, Path(work_dir)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._trained: dict[str, Trained] = {}
        self._checks: dict[tuple[str, str], tuple[DriftResult, dict[str, float], float | None]] = {}
        self._gates: dict[tuple[str, str], tuple[bool, dict]] = {}
        self._stale: set[tuple[str, str]] = set()
        self._reprofiled: set[str] = set()
        self._labelled_counts: dict[str, int] = {}
        self._untrainable: dict[tuple[str, str], str | None] = {}
        self._sources: dict[str, str] = {}
        if self.cache_dir is not None:
            self._load()

    # A cache of this machine's own results (models as kfops model folders; checks and gate
    # verdicts pickled), so a later backtest with the same config and data replays in seconds.
    def _load(self) -> None:
        import pickle

        from kfops.core.model import load_model, read_meta
        from kfops.core.monitoring import PROFILE_REVISION, SIGNALS_VERSION, require_profile

        assert self.cache_dir is not None
        for folder in sorted((self.cache_dir / "models").glob("*")):
            if folder.name in self.by_month:
                model = load_model(folder, self.cfg.train.plugins, self.cfg.resolved_against)
                trained = Trained(folder.name, model, {}, require_profile(read_meta(folder).get("metadata")))
                if trained.profile.get("revision") != PROFILE_REVISION:
                    trained = self._profiled_again(trained)
                self._trained[folder.name] = trained
        for name in ("checks", "gates"):
            path = self.cache_dir / f"{name}.pkl"
            if path.exists():
                getattr(self, f"_{name}").update(pickle.loads(path.read_bytes()))
        # Signals are cheap and their code changes: checks cached by another SIGNALS_VERSION, or
        # of a model profiled again, keep their drift result and realised AUC but recompute the signals.
        version = self.cache_dir / "signals_version"
        if not version.exists() or version.read_text().strip() != str(SIGNALS_VERSION):
            self._stale = set(self._checks)
        self._stale |= {key for key in self._checks if key[0] in self._reprofiled}

    def _profiled_again(self, trained: Trained) -> Trained:
        """A cached model whose profile an older kfops computed (another ``PROFILE_REVISION``),
        profiled again on the same splits (the split is deterministic); saved with the cache."""
        from kfops.training.challenger import split_window

        parts = split_window(self.training_rows(trained.month), self.cfg)
        self._reprofiled.add(trained.month)
        return Trained(trained.month, trained.model, parts, self._profile(trained.model, parts))

    def _profile(self, model: TabularModel, parts: dict[str, pd.DataFrame]) -> dict[str, Any]:
        """The monitoring profile the train step stores with a model, from its splits."""
        from kfops.core.monitoring import model_profile

        return model_profile(model, parts["validation"], parts["test"], self.cfg.dataset.label, seed=self.cfg.drift.seed)

    def save(self) -> None:
        """Write the cache (no-op without ``cache_dir``)."""
        import pickle

        from kfops.core.files import atomic_write_bytes
        from kfops.core.model import save_model
        from kfops.core.monitoring import PROFILE_KEY, SIGNALS_VERSION

        if self.cache_dir is None:
            return
        for month, trained in self._trained.items():
            folder = self.cache_dir / "models" / month
            if not folder.exists() or month in self._reprofiled:
                save_model(trained.model, folder, metadata={PROFILE_KEY: trained.profile})
        self._reprofiled.clear()
        atomic_write_bytes(self.cache_dir / "checks.pkl", pickle.dumps(self._checks))
        atomic_write_bytes(self.cache_dir / "gates.pkl", pickle.dumps(self._gates))
        if not self._stale:
            atomic_write_bytes(self.cache_dir / "signals_version", str(SIGNALS_VERSION).encode())

    def trained(self, month: str) -> Trained:
        """The model a retrain after ``month``'s check makes (:meth:`training_rows`)."""
        if month not in self._trained:
            from kfops.training.challenger import train_on_window

            model, parts = train_on_window(self.training_rows(month), self.cfg, self.work_dir / "models" / month)
            self._trained[month] = Trained(month, model, parts, self._profile(model, parts))
        return self._trained[month]

    def labelled_rows(self, month: str) -> int:
        """How many rows of ``month`` have a label at its check (what a shadow challenger trains on)."""
        if month not in self._labelled_counts:
            self._labelled_counts[month] = len(self._labelled(month))
        return self._labelled_counts[month]

    def has_shadow(self, month: str) -> bool:
        """Whether the check of ``month`` can train a shadow challenger: as the drift step, only on
        at least ``retrain.min_labelled_rows`` of the month's own rows with labels, and only when the
        trainer accepts them (:meth:`untrainable`)."""
        return self.untrainable(month) is None

    def untrainable(self, month: str, seen_at: str | None = None) -> str | None:
        """Why no model can be trained on ``month``'s rows labelled at the check of ``seen_at``
        (default: ``month``): fewer than ``retrain.min_labelled_rows`` of them, or a split the trainer
        refuses (one class only: a month without a single positive); None when one can. Such a month
        is passed over like a month without labels, so the replay goes on."""
        key = (month, seen_at or month)
        if key not in self._untrainable:
            from kfops.training.challenger import untrainable_reason

            rows, minimum = self._labelled(month, seen_at), self.cfg.retrain.min_labelled_rows
            self._untrainable[key] = (
                f"only {len(rows):,} of its rows have labels at {key[1]}'s check (retrain.min_labelled_rows "
                f"{minimum})" if len(rows) < minimum else untrainable_reason(rows, self.cfg))
        return self._untrainable[key]

    def source_month(self, month: str) -> str:
        """The month whose rows a retrain after ``month``'s check trains on: ``month`` itself when a
        model can be trained on its rows labelled by then, else the latest earlier month on which one
        can (a label delay of weeks leaves a month unlabelled at its own check; a month may hold one
        class only)."""
        if month not in self._sources:
            self._sources[month] = month if self.has_shadow(month) else self._latest_labelled_before(month)
        return self._sources[month]

    def training_rows(self, month: str) -> pd.DataFrame:
        """The labelled rows a retrain after ``month``'s check trains on (:meth:`source_month`),
        with the labels that exist at that check (``retrain.label_delay``)."""
        return self._labelled(self.source_month(month), seen_at=month)

    def _latest_labelled_before(self, month: str) -> str:
        from kfops.core.retrain_policy import format_duration

        minimum, delay = self.cfg.retrain.min_labelled_rows, self.cfg.retrain.label_delay
        for earlier in sorted((m for m in self.by_month if m < month), reverse=True):
            if self.untrainable(earlier, seen_at=month) is None:
                return earlier
        raise DataError(
            f"no month up to {month} has {minimum} rows whose labels exist at {month}'s check "
            f"(retrain.label_delay {format_duration(delay)}) and both classes in its train and validation "
            f"splits: no model can be trained for it ({month}: {self.untrainable(month)})",
            hint="start the backtest at another month (--from), so the months before it have enough labelled "
                 "rows of both classes, or lower retrain.min_labelled_rows")

    def _labelled(self, month: str, seen_at: str | None = None) -> pd.DataFrame:
        """``month``'s rows as the check of ``seen_at`` (default: ``month``) sees them, labelled
        rows only (the rows whose labels exist by then, ``retrain.label_delay``)."""
        from kfops.core.monitoring import labelled_rows

        seen = labels_known_at(self.by_month[month], self.cfg, check_time(seen_at or month, self.cfg))
        return labelled_rows(seen, self.cfg.dataset.label)

    def check(self, model_month: str, month: str) -> tuple[DriftResult, dict[str, float], float | None]:
        """The check of ``month`` against the model of ``model_month``: the drift result, the
        trigger signals (labels as known at the check) and the realised AUC of the whole month."""
        key = (model_month, month)
        if key not in self._checks or key in self._stale:
            from kfops.core.drift import check_drift
            from kfops.core.model import predict_proba
            from kfops.core.monitoring import retrain_signals
            from kfops.core.windows import drift_frame

            cfg, champion = self.cfg, self.trained(model_month)
            current = self.by_month[month]
            seen = labels_known_at(current, cfg, check_time(month, cfg))
            if key in self._checks:
                drift = self._checks[key][0]
            else:
                # The reference is the month the champion trained on, as its data window is in the pipeline.
                reference = self.by_month[self.source_month(model_month)]
                drift = check_drift(drift_frame(reference, cfg), drift_frame(seen, cfg), cfg.drift, model=champion.model)
            scores = predict_proba(champion.model, current)
            recent = self._recent(model_month, month)
            signals = retrain_signals(champion.profile, scores, seen[cfg.dataset.label].to_numpy(), drift.columns,
                                      drift.prediction, cfg.retrain.confidence, cfg.retrain.min_labelled_rows,
                                      recent_labels=None if recent is None else recent[cfg.dataset.label].to_numpy(),
                                      recent_scores=None if recent is None else predict_proba(champion.model, recent))
            self._checks[key] = (drift, signals, _roc_auc_of(current[cfg.dataset.label].to_numpy(), scores))
            self._stale.discard(key)
        return self._checks[key]

    def _recent(self, model_month: str, month: str) -> pd.DataFrame | None:
        """For the label-free estimate: the month before ``month`` with the labels that exist at
        ``month``'s check, when the model of ``model_month`` did not train on it; else None (the
        model's test split calibrates). As the pipeline's drift step does (``recent_window``)."""
        months = sorted(self.by_month)
        previous = months[months.index(month) - 1] if months.index(month) > 0 else None
        if previous is None or previous <= self.source_month(model_month):
            return None
        return labels_known_at(self.by_month[previous], self.cfg, check_time(month, self.cfg))

    def gate(self, challenger_month: str, champion_month: str) -> tuple[bool, dict]:
        key = (challenger_month, champion_month)
        if key not in self._gates:
            from kfops.training.challenger import judge, split_window

            challenger = self.trained(challenger_month)
            test = challenger.parts.get("test")
            if test is None:  # loaded from the cache: the same split again
                test = split_window(self.training_rows(challenger_month), self.cfg)["test"]
            self._gates[key] = judge(challenger.model, self.trained(champion_month).model, test, self.cfg)
        return self._gates[key]


def _roc_auc_of(y: Any, scores: Any) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(y.tolist())) < 2:
        return None
    return float(roc_auc_score(y, scores))


def _untrainable_note(bank: ModelBank, month: str, shadow: bool, retrained: bool) -> str:
    """What a month whose own rows train no model (:meth:`ModelBank.untrainable`) changed for a
    policy: its shadow challenger was not trained, or its retrain trained on an earlier month."""
    why = bank.untrainable(month)
    if why is None or not (shadow or retrained):
        return ""
    effects = (["no shadow challenger"] if shadow else []) + (
        [f"the retrain trained on {bank.source_month(month)}"] if retrained else [])
    return f"{month} trains no model: {why}; {', '.join(effects)}"


def _no_initial_month(initial_month: str, months: Sequence[str], have: list[str]) -> DataError:
    """The first month's champion trains on the month before --from: name that month and the
    --from that starts one month after the first month with rows."""
    message = (f"no rows for month {initial_month} in the backtest frame: the initial champion trains on "
               f"{initial_month}, the month before --from {months[0] if months else '?'}, and it has no rows")
    later = [m for m in have if m > initial_month]
    if not later:
        return DataError(f"{message} (months with rows: {', '.join(have) or 'none'})",
                         hint="choose --from/--to inside the data's months (dataset.start..dataset.end)")
    first = parse_month(later[0])
    start = (first + dt.timedelta(days=32)).replace(day=1).strftime("%Y-%m")
    to = f" and --to {start} or later" if months and start > months[-1] else ""
    return DataError(f"{message} (the first month with rows is {later[0]})",
                     hint=f"start one month after the first month with rows: --from {start}{to}")


def replay(
    cfg: KfopsConfig,
    frame: pd.DataFrame,
    months: Sequence[str],
    initial_month: str,
    policies: Sequence[str | tuple[str, RetrainPolicy]],
    work_dir: Path,
    on_month: Callable[[MonthResult], None] | None = None,
    bank: ModelBank | None = None,
) -> BacktestResult:
    """Replay ``months`` of ``frame`` (tagged by :func:`build_frame`) for each policy (a name for
    :func:`policy_for`, or a ``(name, RetrainPolicy)`` pair), starting from one champion trained
    on ``initial_month``. Pass a ``bank`` to reuse models and checks across calls. Shows progress
    per month (:mod:`kfops.progress`: a bar on a terminal, one line per month otherwise)."""
    from kfops.core.monitoring import label_free_track_record
    from kfops.core.retrain_policy import DriftSummary, decide
    from kfops.progress import progress
    from kfops.training.challenger import challenger_signals, gate_failures

    by_month = bank.by_month if bank is not None else {m: p for m, p in frame.groupby(MONTH_COLUMN, sort=True)}
    if initial_month not in by_month:
        raise _no_initial_month(initial_month, months, sorted(by_month))
    for month in months:
        if month not in by_month:
            have = sorted(by_month)
            raise DataError(f"no rows for month {month} in the backtest frame (months with rows: "
                            f"{have[0]}..{have[-1]})", hint="keep --from/--to inside those months or raise --sample")
    bank = bank or ModelBank(cfg, by_month, Path(work_dir))
    named = [(p, policy_for(p, cfg)) if isinstance(p, str) else p for p in policies]
    result = BacktestResult(data=frame)
    with progress("backtest", total=len(named) * len(months), unit="month", every=1) as bar:
        # Inside the month bar, so its boosting rounds show as a passing inner bar, not as lines.
        bank.trained(initial_month)
        source = bank.source_month(initial_month)
        trained_on = (f"trained on {initial_month} ({len(by_month[initial_month]):,} rows)" if source == initial_month
                      else f"trained at {initial_month}'s check on the {len(bank.training_rows(initial_month)):,} "
                           f"rows of {source} whose labels exist by then")
        bar.note(f"backtest: the initial champion #1 {trained_on}; "
                 f"replaying {', '.join(months)} for {', '.join(name for name, _ in named)}")
        for policy_name, policy in named:
            champion_month, number = initial_month, 1
            history = []
            for month in months:
                drift, signals, auc = bank.check(champion_month, month)
                # As the drift step does: the label-free interval widened by this policy's past checks.
                signals = {**signals, **label_free_track_record(signals, [d.signals for d in history],
                                                                cfg.retrain.confidence)}
                shadowed = policy.mode == "performance" and "challenger" in policy.triggers
                notes = {}
                if shadowed and bank.has_shadow(month):
                    # The drift step's shadow challenger: the month's model judged against the champion.
                    shadow_blessed, shadow = bank.gate(month, champion_month)
                    signals = {**signals, **challenger_signals(shadow_blessed, shadow,
                                                               bank.labelled_rows(month))}
                    notes["challenger"] = gate_failures(shadow["reasons"])  # as the drift step names them
                decision = decide(history, DriftSummary.from_result(drift, report=f"backtest:{policy_name}:{month}",
                                                                    signals=signals, notes=notes),
                                  check_time(month, cfg), policy)
                history.append(decision)
                row = MonthResult(policy=policy_name, month=month, rows=len(by_month[month]), champion=number,
                                  roc_auc=auc, drift=drift.drift, drifted_columns=len(drift.drifted_columns),
                                  drift_reason=(drift.reasons[0][:120] if drift.reasons else ""),
                                  decision=decision.code, retrained=decision.retrain,
                                  champion_month=champion_month, decision_reason=decision.reason,
                                  triggered_by=",".join(decision.triggered_by),
                                  estimated_roc_auc=signals.get("estimated_roc_auc"),
                                  estimated_roc_auc_low=signals.get("estimated_roc_auc_low"),
                                  estimated_roc_auc_high=signals.get("estimated_roc_auc_high"),
                                  estimated_roc_auc_label_free=signals.get("estimated_roc_auc_label_free"),
                                  label_free_low=signals.get("estimated_roc_auc_label_free_low"),
                                  label_free_high=signals.get("estimated_roc_auc_label_free_high"),
                                  observed_roc_auc=signals.get("observed_roc_auc"),
                                  observed_rows=int(signals.get("observed_rows", 0)),
                                  observed_diff=signals.get("observed_diff"),
                                  observed_diff_low=signals.get("observed_diff_low"),
                                  observed_diff_high=signals.get("observed_diff_high"),
                                  reference_roc_auc=signals.get("reference_roc_auc"),
                                  weighted_drift_share=signals.get("weighted_drift_share"),
                                  prediction_drift=(None if "prediction_drift" not in signals
                                                    else bool(signals["prediction_drift"])))
                row.note = _untrainable_note(bank, month, shadow=shadowed, retrained=decision.retrain)
                if decision.retrain:
                    blessed, judged = bank.gate(month, champion_month)
                    row.challenger_roc_auc = judged["challenger"].get("roc_auc")
                    row.champion_test_roc_auc = judged["champion"].get("roc_auc")
                    row.promoted = blessed
                    row.gate = gate_summary(blessed, judged["reasons"])
                    if blessed:
                        champion_month, number = month, number + 1
                result.months.append(row)
                result.checks[(policy_name, month)] = drift
                result.sources[row.champion_month] = bank.source_month(row.champion_month)
                bar.advance(message=row.describe())
                if on_month is not None:
                    on_month(row)
    return result


def month_drift_report(cfg: KfopsConfig, result: BacktestResult, policy: str, month: str, html_path: Path) -> Path:
    """The drift report (verdict banner and Evidently's report) of one replayed month: the
    serving champion's training month (reference) against ``month`` (current), as the policy saw it."""
    from kfops.core.windows import drift_frame
    from kfops.reports.drift import render_report

    row = result.month(policy, month)
    check = result.checks.get((policy, month))
    if check is None or result.data is None:
        raise DataError(f"the drift check of {policy} {month} was not kept",
                        hint="pass the BacktestResult that replay() or run_backtest() returned")
    frame = result.data
    by_month = frame[MONTH_COLUMN]
    reference = drift_frame(frame[by_month == result.sources.get(row.champion_month, row.champion_month)], cfg)
    current = drift_frame(labels_known_at(frame[by_month == month], cfg, check_time(month, cfg)), cfg)
    return render_report(reference, current, check, html_path)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4f}"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value).replace("|", "/")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot(result: BacktestResult, png_path: Path, estimate_policy: str = "default") -> Path:
    """Left: ROC AUC of the serving champion per month, one line per policy, retrains marked.
    Right: the CBPE estimate against the realised AUC for ``estimate_policy``'s champions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = result.frame()
    estimated = frame[(frame["policy"] == estimate_policy) & frame["estimated_roc_auc"].notna()]
    panels = 2 if len(estimated) else 1
    figure, axes_all = plt.subplots(1, panels, figsize=(8 + 4 * (panels - 1), 4.5), dpi=90, squeeze=False,
                                    gridspec_kw={"width_ratios": [2, 1][:panels]})
    axes = axes_all[0][0]
    styles = ["-", "--", "-.", ":"]
    for i, (policy, part) in enumerate(frame.groupby("policy", sort=False)):
        # Policies often share months (same champion); the default is drawn thick, on top.
        style = ({"color": "black", "linewidth": 2.5, "zorder": 4} if policy == estimate_policy else
                 {"linestyle": styles[i % len(styles)], "linewidth": 1.2, "alpha": 0.85})
        line, = axes.plot(part["month"], part["roc_auc"], marker="o", markersize=3, label=policy, **style)
        promoted = part[part["promoted"]]
        rejected = part[part["retrained"] & ~part["promoted"]]
        axes.scatter(promoted["month"], promoted["roc_auc"], marker="^", s=70, color=line.get_color(), zorder=3)
        axes.scatter(rejected["month"], rejected["roc_auc"], marker="x", s=50, color=line.get_color(), zorder=3)
    axes.scatter([], [], marker="^", color="gray", label="retrained, promoted")
    axes.scatter([], [], marker="x", color="gray", label="retrained, gate refused")
    axes.set_xlabel("month (the champion serving it; retrain after the month)")
    axes.set_ylabel("champion ROC AUC on the month")
    axes.set_title("kfops backtest: retrain policies, month by month")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    axes.tick_params(axis="x", rotation=45)
    if panels == 2:
        right = axes_all[0][1]
        right.plot(estimated["month"], estimated["roc_auc"], marker="o", markersize=3, label="realised")
        right.plot(estimated["month"], estimated["estimated_roc_auc"], marker="s", markersize=3,
                   label="estimated (CBPE, the month's known labels)")
        label_free = estimated[estimated["estimated_roc_auc_label_free"].notna()]
        line, = right.plot(label_free["month"], label_free["estimated_roc_auc_label_free"], marker="v", markersize=3,
                           linestyle="--", label="estimated (CBPE, label-free)")
        banded = label_free[label_free["label_free_low"].notna()]
        right.fill_between(banded["month"], banded["label_free_low"].astype("float64"),
                           banded["label_free_high"].astype("float64"), color=line.get_color(), alpha=0.15,
                           label="label-free interval (retrain.confidence)")
        mae = float(estimated["estimate_error"].astype("float64").abs().mean())
        mae_free = float(label_free["label_free_error"].astype("float64").abs().mean())
        covered = banded["label_free_covered"].astype("float64")
        right.set_title(f"{estimate_policy}: CBPE vs realised AUC\n(MAE {mae:.3f}; label-free {mae_free:.3f}, "
                        f"in its interval {int(covered.sum())}/{len(covered)})", fontsize=9)
        right.grid(alpha=0.3)
        right.legend(fontsize=7)
        right.tick_params(axis="x", rotation=45)
    figure.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    plt.close(figure)
    return png_path


SHOWN_COLUMNS = ["policy", "month", "champion", "roc_auc", "estimated_roc_auc", "estimated_roc_auc_label_free",
                 "observed_roc_auc", "observed_rows",
                 "observed_diff_low", "observed_diff_high", "weighted_drift_share", "prediction_drift", "drift",
                 "decision", "triggered_by", "retrained", "challenger_roc_auc", "champion_test_roc_auc", "promoted"]


def split_months(months: Sequence[str], held_out_from: str | None) -> tuple[list[str], list[str]]:
    """``months`` ('YYYY-MM') before ``held_out_from`` (where thresholds may be tuned) and from it
    on (held out); with no ``held_out_from``, every month is a tuning month."""
    if held_out_from is None:
        return list(months), []
    first_held_out = parse_month(held_out_from)
    return ([m for m in months if parse_month(m) < first_held_out],
            [m for m in months if parse_month(m) >= first_held_out])


def write_outputs(result: BacktestResult, out_dir: Path, held_out_from: str | None = None) -> dict[str, Path]:
    """backtest.csv, backtest.md (totals: all months, then, with ``held_out_from``, the tuning
    months and the held-out months apart; then per month with every decision's evidence) and
    backtest.png under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = result.frame()
    csv_path = out_dir / "backtest.csv"
    frame.to_csv(csv_path, index=False)
    tuning, held_out = split_months(sorted(frame["month"].unique()), held_out_from)
    text = "## Totals, all months\n\n" + markdown_table(result.totals())
    if tuning and held_out:
        text += (f"\n## Totals, tuning months ({tuning[0]}..{tuning[-1]})\n\n" + markdown_table(result.totals(tuning))
                 + f"\n## Totals, held-out months ({held_out[0]}..{held_out[-1]})\n\n"
                 + markdown_table(result.totals(held_out)))
    text += "\n## Per month\n\n" + markdown_table(frame[[c for c in SHOWN_COLUMNS if c in frame.columns]])
    md_path = out_dir / "backtest.md"
    md_path.write_text(text)
    return {"csv": csv_path, "markdown": md_path, "plot": plot(result, out_dir / "backtest.png")}


def cache_key(cfg: KfopsConfig, first: str, last: str, sample: float | None) -> str:
    """What the bank's contents depend on: the data span, sampling and every config section that
    shapes the data, the models, the checks and the gate (not the policies, which only replay)."""
    import hashlib
    import json

    shaping = cfg.portable().model_dump(mode="json", include={"dataset", "features", "split", "train", "evaluate",
                                                              "drift", "validation"})
    shaping["retrain"] = cfg.retrain.model_dump(mode="json", include={"label_delay", "confidence",
                                                                      "min_labelled_rows"})
    keyed: dict[str, object] = {"config": shaping, "first": first, "last": last, "sample": sample}
    from kfops.core.files import plugin_sources_digest

    code = plugin_sources_digest(cfg.project_plugins().values(), cfg.resolved_against)
    if code:  # a project's own loader or trainer changed: its models and checks are not the cached ones
        keyed["plugin_sources"] = code
    text = json.dumps(keyed, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_months(cfg: KfopsConfig) -> tuple[str, str]:
    """The months ``kfops backtest`` replays when not told: all of ``dataset.start..end`` that has a
    champion before it, i.e. from the month after the first (after more when the label delay is
    weeks: the champion trains on labelled rows) to the month of ``dataset.end``."""
    start, end = cfg.window
    first = start.replace(day=1)
    for _ in range(1 + cfg.retrain.label_delay.days // 28):
        first = (first + dt.timedelta(days=32)).replace(day=1)
    if first > end:
        raise ConfigError(
            f"dataset.start..end ({start}..{end}) leaves no month to replay: the first month trains the "
            "initial champion" + (" and the label delay holds back more" if cfg.retrain.label_delay.days >= 28 else ""),
            hint="widen the window (dataset.start, dataset.end) or give --from and --to")
    return first.strftime("%Y-%m"), end.strftime("%Y-%m")


def _from_the_first_champion(bank: ModelBank, months: list[str], initial: dt.date,
                             on_skip: Callable[[str, str], None]) -> tuple[list[str], dt.date]:
    """``months`` from the first one whose initial champion can be trained (on the month before it,
    or an earlier one with labels by then), and that month before it; the ones left out go to
    ``on_skip`` with the reason. A window starting on a month's last day (a time zone ahead of UTC
    does that) leaves that month a few rows, and a label delay of weeks leaves the next unlabelled."""
    while True:
        month = initial.strftime("%Y-%m")
        try:
            if month not in bank.by_month:
                raise DataError(f"{month} has no rows")
            bank.source_month(month)
            return months, initial
        except DataError as err:
            if len(months) <= 1:
                raise
            on_skip(months[0], f"no champion to replay it against: {err}")
            initial, months = parse_month(months[0]), months[1:]


def run_backtest(
    cfg: KfopsConfig, first: str, last: str, policies: Sequence[str], out_dir: Path,
    sample: float | None = None, on_month: Callable[[MonthResult], None] | None = None,
    cache_dir: Path | None = None, held_out_from: str | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> tuple[BacktestResult, dict[str, Path]]:
    """Replay months ``first``..``last`` ('YYYY-MM'); the initial champion trains on the month before.
    With ``cache_dir``, the frame, models, checks and gate verdicts are kept under a key of the
    config and span (:func:`cache_key`), so another backtest of other policies reuses them. With
    ``held_out_from``, the outputs also total the months before it and from it on apart.

    With ``on_skip`` (months chosen by :func:`default_months`, not by the user), a first month
    without a champion to replay against (no month up to the one before it has enough labelled rows
    of both classes) is left out and passed to ``on_skip`` with the reason, until one has."""

    start, end = parse_month(first), parse_month(last)
    if held_out_from is not None:
        parse_month(held_out_from)  # a bad month fails now, not after the replay
    if end < start:
        raise ConfigError(f"--to {last} is before --from {first}")
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise ConfigError(f"unknown policy {', '.join(unknown) or '(none given)'}",
                          hint=f"choose from: {', '.join(POLICIES)}")
    initial = (start - dt.timedelta(days=1)).replace(day=1)
    months = [m.strftime("%Y-%m") for m in month_starts(start, end)]
    # A label delay of weeks leaves a month unlabelled at its own check: load that many earlier
    # months too, so the initial champion has labelled rows to train on (ModelBank.source_month).
    first_loaded = initial
    for _ in range(cfg.retrain.label_delay.days // 28):
        first_loaded = (first_loaded - dt.timedelta(days=1)).replace(day=1)
    out_dir = Path(out_dir)
    cache = None if cache_dir is None else Path(cache_dir) / cache_key(cfg, first, last, sample)
    if cache is not None and (cache / "frame.parquet").exists():
        frame = read_parquet(cache / "frame.parquet")
    else:
        frame = build_frame(cfg, first_loaded, _month_end(end), out_dir / "work", sample=sample)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(cache / "frame.parquet", index=False)
    by_month = {month: part for month, part in frame.groupby(MONTH_COLUMN, sort=True)}
    bank = ModelBank(cfg, by_month, out_dir / "work", cache_dir=cache)
    if on_skip is not None:
        months, initial = _from_the_first_champion(bank, months, initial, on_skip)
    try:
        result = replay(cfg, frame, months, initial.strftime("%Y-%m"), list(dict.fromkeys(policies)),
                        out_dir / "work", on_month=on_month, bank=bank)
    finally:
        bank.save()
    return result, write_outputs(result, out_dir, held_out_from)
