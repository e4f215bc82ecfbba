"""Replay a year month by month to compare retrain policies on real drift.

For each month: the current champion scores that month's rows (in process, as a replay); the
drift check compares the month with the champion's training data; the policy decides whether to
retrain; a challenger trained on the month must pass the same gate as the pipeline's evaluate
step (against the champion, on the month's test split) to be promoted. The feature frame is
built once for the whole span and sliced by month, so every policy sees the same data.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig
    from kfops.core.drift import DriftResult
    from kfops.core.model import TabularModel
    from kfops.core.retrain_policy import RetrainPolicy

log = logging.getLogger("kfops.runners.backtest")
POLICIES = ("drift", "monthly", "never")
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

    def describe(self) -> str:
        """One line: the champion's AUC on the month, the drift verdict and what followed."""
        auc = "n/a" if self.roc_auc is None else f"{self.roc_auc:.4f}"
        action = ("promoted" if self.promoted else "gate refused") if self.retrained else self.decision
        return (f"{self.policy} {self.month}: champion #{self.champion} AUC {auc}, "
                f"drift {'yes' if self.drift else 'no'} -> {action}")


@dataclass
class Champion:
    model: TabularModel
    training_frame: pd.DataFrame
    month: str
    number: int = 1


@dataclass
class BacktestResult:
    """Per policy and month, what happened (``months``); kept in memory only, not in the table:
    the drift check each decision was made on (``checks``, keyed by ``(policy, month)``) and the
    replayed frame (``data``), so :func:`month_drift_report` can show any month's report."""

    months: list[MonthResult] = field(default_factory=list)
    checks: dict[tuple[str, str], DriftResult] = field(default_factory=dict, repr=False)
    data: pd.DataFrame | None = field(default=None, repr=False)

    def month(self, policy: str, month: str) -> MonthResult:
        for row in self.months:
            if row.policy == policy and row.month == month:
                return row
        raise DataError(f"the backtest has no month {month} for policy '{policy}'")

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([asdict(m) for m in self.months])

    def totals(self) -> pd.DataFrame:
        frame = self.frame()
        grouped = frame.groupby("policy", sort=False)
        return grouped.agg(months=("month", "count"), mean_roc_auc=("roc_auc", "mean"),
                           min_roc_auc=("roc_auc", "min"), drift_flagged=("drift", "sum"),
                           retrains=("retrained", "sum"), promotions=("promoted", "sum")).reset_index()


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
    """``drift``: the configured policy in drift mode; ``monthly``: retrain at every check; ``never``."""
    from kfops.core.retrain_policy import RetrainPolicy

    if name == "drift":
        return cfg.retrain.model_copy(update={"mode": "drift"})
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


def _split(frame: pd.DataFrame, cfg: KfopsConfig) -> dict[str, pd.DataFrame]:
    from kfops.core.splits import split_by_time

    split = split_by_time(frame, cfg)
    return {name: frame[split == name] for name in ("train", "validation", "test")}


def train_on(frame: pd.DataFrame, cfg: KfopsConfig, work_dir: Path) -> tuple[TabularModel, dict[str, pd.DataFrame]]:
    """Fit the configured trainer on a window's train split, threshold on its validation split."""
    from kfops.core.evaluation import choose_threshold
    from kfops.core.model import FeatureSpec, predict_proba
    from kfops.training import train_model

    parts = _split(frame, cfg)
    spec = FeatureSpec.fit(parts["train"], cfg.feature_columns, cfg.features.categorical, label=cfg.dataset.label)
    result = train_model(parts["train"], parts["validation"], spec, cfg.train, work_dir)
    proba = predict_proba(result.model, parts["validation"])
    result.model.threshold = choose_threshold(parts["validation"][cfg.dataset.label].to_numpy(), proba)
    return result.model, parts


def judge(challenger: TabularModel, champion: TabularModel, test: pd.DataFrame, cfg: KfopsConfig) -> tuple[bool, dict]:
    """The evaluate step's gate: challenger vs champion on the same test split."""
    from kfops.core.evaluation import (
        behavioural_checks,
        classification_metrics,
        gate,
        slice_metrics,
    )
    from kfops.core.model import predict_proba

    y_true = test[cfg.dataset.label].to_numpy()
    gate_cfg = cfg.evaluate.gate
    scored = {}
    for name, model in (("challenger", challenger), ("champion", champion)):
        proba = predict_proba(model, test)
        scored[name] = (classification_metrics(y_true, proba, model.threshold, cfg.evaluate.calibration_bins)["scalars"],
                        slice_metrics(test, y_true, proba, gate_cfg.slices, gate_cfg.min_slice_rows))
    behaviour = (behavioural_checks(challenger, test, cfg.evaluate.invariant_columns, cfg.evaluate.non_decreasing_columns)
                 if cfg.evaluate.behavioural_checks else [])
    verdict = gate(scored["challenger"][0], gate_cfg, scored["champion"][0], scored["challenger"][1],
                   scored["champion"][1], behaviour, "current")
    return verdict.blessed, {"challenger": scored["challenger"][0], "champion": scored["champion"][0],
                             "reasons": verdict.reasons}


def gate_summary(blessed: bool, reasons: Sequence[str], limit: int = 400) -> str:
    """'BLESSED: <the checks passed>' or 'NOT BLESSED: <the checks failed>', shortened to ``limit``."""
    wanted = "PASS" if blessed else "FAIL"
    shown = [r for r in reasons if r.startswith(wanted)] or list(reasons)
    text = f"{'BLESSED' if blessed else 'NOT BLESSED'}: " + "; ".join(shown)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _roc_auc(model: TabularModel, frame: pd.DataFrame, label: str) -> float | None:
    from sklearn.metrics import roc_auc_score

    from kfops.core.model import predict_proba

    y = frame[label].to_numpy()
    if len(set(y.tolist())) < 2:
        return None
    return float(roc_auc_score(y, predict_proba(model, frame)))


def replay(
    cfg: KfopsConfig,
    frame: pd.DataFrame,
    months: Sequence[str],
    initial_month: str,
    policies: Sequence[str],
    work_dir: Path,
    on_month: Callable[[MonthResult], None] | None = None,
) -> BacktestResult:
    """Replay ``months`` of ``frame`` (tagged by :func:`build_frame`) for each policy, starting
    from one champion trained on ``initial_month``. Shows progress per month
    (:mod:`kfops.progress`: a bar on a terminal, one line per month otherwise)."""
    from kfops.core.drift import check_drift
    from kfops.core.retrain_policy import DriftSummary, decide
    from kfops.core.windows import drift_frame
    from kfops.progress import progress

    by_month = {month: part for month, part in frame.groupby(MONTH_COLUMN, sort=True)}
    for month in (initial_month, *months):
        if month not in by_month:
            raise DataError(f"no rows for month {month} in the backtest frame",
                            hint="widen --from/--to or raise --sample")
    label = cfg.dataset.label
    work_dir = Path(work_dir)
    result = BacktestResult(data=frame)
    with progress("backtest", total=len(policies) * len(months), unit="month", every=1) as bar:
        # Inside the month bar, so its boosting rounds show as a passing inner bar, not as lines.
        initial_model, _ = train_on(by_month[initial_month], cfg, work_dir / "initial")
        bar.note(f"backtest: the initial champion #1 trained on {initial_month} "
                 f"({len(by_month[initial_month]):,} rows); replaying {', '.join(months)} "
                 f"for {', '.join(policies)}")
        for policy_name in policies:
            policy = policy_for(policy_name, cfg)
            champion = Champion(initial_model, by_month[initial_month], initial_month)
            history = []
            for month in months:
                current = by_month[month]
                year, number = map(int, month.split("-"))
                check_at = dt.datetime.combine(_month_end(dt.date(year, number, 1)) + dt.timedelta(days=1),
                                               dt.time(), dt.UTC)
                auc = _roc_auc(champion.model, current, label)
                drift = check_drift(drift_frame(champion.training_frame, cfg), drift_frame(current, cfg), cfg.drift,
                                    model=champion.model)
                decision = decide(history, DriftSummary.from_result(drift, report=f"backtest:{policy_name}:{month}"),
                                  check_at, policy)
                history.append(decision)
                row = MonthResult(policy=policy_name, month=month, rows=len(current), champion=champion.number,
                                  roc_auc=auc, drift=drift.drift, drifted_columns=len(drift.drifted_columns),
                                  drift_reason=(drift.reasons[0][:120] if drift.reasons else ""),
                                  decision=decision.code, retrained=decision.retrain,
                                  champion_month=champion.month, decision_reason=decision.reason)
                if decision.retrain:
                    challenger, parts = train_on(current, cfg, work_dir / policy_name / month)
                    blessed, judged = judge(challenger, champion.model, parts["test"], cfg)
                    row.challenger_roc_auc = judged["challenger"].get("roc_auc")
                    row.champion_test_roc_auc = judged["champion"].get("roc_auc")
                    row.promoted = blessed
                    row.gate = gate_summary(blessed, judged["reasons"])
                    if blessed:
                        champion = Champion(challenger, current, month, champion.number + 1)
                result.months.append(row)
                result.checks[(policy_name, month)] = drift
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
    reference = drift_frame(frame[by_month == row.champion_month], cfg)
    current = drift_frame(frame[by_month == month], cfg)
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


def plot(result: BacktestResult, png_path: Path) -> Path:
    """ROC AUC of the serving champion per month, one line per policy; retrains marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = result.frame()
    figure, axes = plt.subplots(figsize=(8, 4), dpi=90)
    for policy, part in frame.groupby("policy", sort=False):
        line, = axes.plot(part["month"], part["roc_auc"], marker="o", markersize=3, label=policy)
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
    axes.legend(fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    plt.close(figure)
    return png_path


def write_outputs(result: BacktestResult, out_dir: Path) -> dict[str, Path]:
    """backtest.csv, backtest.md (per month and totals) and backtest.png under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = result.frame()
    csv_path = out_dir / "backtest.csv"
    frame.to_csv(csv_path, index=False)
    shown = frame[["policy", "month", "rows", "champion", "roc_auc", "drift", "drifted_columns", "decision",
                   "retrained", "challenger_roc_auc", "champion_test_roc_auc", "promoted"]]
    md_path = out_dir / "backtest.md"
    md_path.write_text("## Per month\n\n" + markdown_table(shown) + "\n## Totals\n\n" + markdown_table(result.totals()))
    return {"csv": csv_path, "markdown": md_path, "plot": plot(result, out_dir / "backtest.png")}


def run_backtest(
    cfg: KfopsConfig, first: str, last: str, policies: Sequence[str], out_dir: Path,
    sample: float | None = None, on_month: Callable[[MonthResult], None] | None = None,
) -> tuple[BacktestResult, dict[str, Path]]:
    """Replay months ``first``..``last`` ('YYYY-MM'); the initial champion trains on the month before."""
    start, end = parse_month(first), parse_month(last)
    if end < start:
        raise ConfigError(f"--to {last} is before --from {first}")
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise ConfigError(f"unknown policy {', '.join(unknown) or '(none given)'}",
                          hint=f"choose from: {', '.join(POLICIES)}")
    initial = (start - dt.timedelta(days=1)).replace(day=1)
    months = [m.strftime("%Y-%m") for m in month_starts(start, end)]
    out_dir = Path(out_dir)
    frame = build_frame(cfg, initial, _month_end(end), out_dir / "work", sample=sample)
    result = replay(cfg, frame, months, initial.strftime("%Y-%m"), list(dict.fromkeys(policies)),
                    out_dir / "work", on_month=on_month)
    return result, write_outputs(result, out_dir)
