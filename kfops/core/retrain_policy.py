"""When to retrain: a pure policy over past decisions and the latest drift verdict.

``decide(history, drift, now, policy)`` looks only at its arguments, so a long-lived scheduler and
a backtest that replays a year of checks get the same answers. Every call returns a ``Decision``
that records the drift report it was made on; ``PolicyState`` keeps those decisions in one JSON
object (a file, or a :class:`~kfops.core.state.StateStore` key) so runs can share the history.

Rules, in order (mode ``drift``):

1. ``never`` mode: never retrain.
2. No drift verdict, or no drift in this check: no retrain.
3. Debounce: drift must hold for ``debounce`` consecutive checks since the last retrain (checks
   recorded under another mode break the run: a mode change starts the count afresh).
4. Cooldown: at least ``cooldown`` since the last retrain.
5. Rate limit: at most ``max_retrains`` retrains in any trailing ``period``.

Mode ``performance`` replaces 2 with "one of the configured ``triggers`` fires" on the evidence of
:func:`kfops.core.monitoring.retrain_signals` (``DriftSummary.signals``):

* ``observed``: the champion's AUC on the labelled part of the window is below its test AUC by more
  than ``observed_tolerance``, with confidence: the whole interval of the difference is below it;
  or (with ``min_roc_auc``) the whole interval of that AUC is below the floor;
* ``estimated``: the CBPE estimate from calibrated scores is ``estimated_tolerance`` below it
  (when ``observed`` or ``challenger`` is configured too, only on windows without enough labels
  for them);
* ``weighted_drift``: drifted columns hold at least ``weighted_drift_share`` of the importance;
* ``prediction_drift``: the champion's scores drifted;
* ``challenger``: a shadow challenger, trained on the window's labelled rows in the check and not
  registered, passes the evaluate gate against the champion (``kfops.training.challenger``);
* ``drift``: the drift check's verdict.

Debounce, cooldown and the rate limit then apply as in mode ``drift``.

Mode ``scheduled`` replaces 2-3 with "the last retrain is at least ``schedule_every`` old" (drift is
recorded, not acted on); 4 and 5 still apply. Checks stay blocked while any rule blocks them, and a
drift streak survives a cooldown, so the first check after it ends retrains if drift persists.

A retrain counts (toward the cooldown, the rate limit and the schedule, and as the end of a streak)
only if it produced a result. The retraining pipeline records its retrain ``pending`` and reports
back how the training ended (:func:`record_outcome`): ``completed`` counts, ``failed`` does not.
While a retrain is pending no other check retrains (code ``in_progress``), so two checks at once never
both retrain. A pending retrain whose processes are seen gone (``abandoned``: Ctrl-C, a kill) or
that has not reported back within ``retrain_timeout`` stops counting, and the next check whose
trigger still fires retrains. A retrain without an outcome (the backtest trains at once; state
written before outcomes) counts.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from kfops.core.files import atomic_write_text
from kfops.errors import DataError

if TYPE_CHECKING:
    from kfops.core.drift import DriftResult
    from kfops.core.state import StateStore

Mode = Literal["drift", "performance", "scheduled", "never"]
Trigger = Literal["observed", "estimated", "weighted_drift", "prediction_drift", "challenger", "drift"]
TRIGGERS: tuple[str, ...] = ("observed", "estimated", "weighted_drift", "prediction_drift", "challenger", "drift")
# The default triggers, chosen by `kfops backtest` on 2013 (docs/backtest.md).
DEFAULT_TRIGGERS: list[Trigger] = ["challenger", "estimated"]
STATE_VERSION = 1

# Decision codes: what decided the outcome, for backtests and dashboards.
RETRAIN_DRIFT = "drift_confirmed"
RETRAIN_SCHEDULED = "scheduled"
RETRAIN_SIGNAL = "signal_confirmed"
NO_SIGNAL = "no_signal"
NEVER = "never"
NO_VERDICT = "no_verdict"
NO_DRIFT = "no_drift"
DEBOUNCE = "debounce"
NOT_DUE = "not_due"
COOLDOWN = "cooldown"
RATE_LIMIT = "rate_limit"
IN_PROGRESS = "in_progress"

# What became of a retrain (Decision.outcome); None: it counts as done.
PENDING = "pending"
COMPLETED = "completed"
FAILED = "failed"
ABANDONED = "abandoned"
# The default `retrain_timeout`: how long a pending retrain that never reported back holds other
# retrains off when no check can see whether it still runs (another pod's); a day, as
# registry.abandoned_run_hours for MLflow runs.
PENDING_LEASE = dt.timedelta(hours=24)

# A check that reads the clock as it decides accepts a recorded decision at most this far ahead of
# it: a concurrent check's, on a machine whose clock runs a little ahead. Further ahead is refused.
CLOCK_SKEW = dt.timedelta(minutes=5)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


DURATION_FORMS = "a number with a unit: 7d, 12h, 30m, 90s, 2w; or ISO 8601 such as P7D or PT12H"
_BARE_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def parse_duration(value: Any) -> Any:
    """'90s', '30m', '12h', '7d', '2w' -> timedelta; ISO 8601 ('P7D'), pydantic's '7 days, 0:00:00'
    (what ``str(timedelta)`` writes) and a timedelta are left to pydantic.

    A bare number (``cooldown: 7``, ``KFOPS__RETRAIN__COOLDOWN=7``) is refused: pydantic would read
    seconds, where ``7`` almost always meant days.
    """
    if isinstance(value, bool | int | float) or (isinstance(value, str) and _BARE_NUMBER.match(value)):
        raise ValueError(f"{value!r} has no unit; write {DURATION_FORMS}")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return dt.timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})
        try:
            return TypeAdapter(dt.timedelta).validate_python(value)
        except ValidationError as err:  # pydantic's own words ("invalid digit in duration") name no form
            raise ValueError(f"{value!r} is not a duration; write {DURATION_FORMS}") from err
    return value


def format_duration(value: dt.timedelta) -> str:
    """The inverse of :func:`parse_duration`, in the largest whole unit: 30d, 12h, 90m, 45s."""
    seconds = int(value.total_seconds())
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class RetrainPolicy(BaseModel):
    """When a drift check may trigger a retrain. Durations (`label_delay`, `cooldown`, `period`,
    `schedule_every`, `retrain_timeout`) take a unit: `90s`, `30m`, `12h`, `7d`, `2w`, or ISO 8601 (`P7D`, `PT12H`);
    a bare number such as `7` is refused, as it would read as seconds."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    mode: Mode = Field(
        "performance",
        description="`performance`: retrain when one of `triggers` fires (what hurts the model); "
        "`drift`: on confirmed drift; `scheduled`: on a clock; `never`.",
    )
    triggers: list[Trigger] = Field(
        default_factory=lambda: list(DEFAULT_TRIGGERS),
        description="Mode `performance`: the signals that may trigger a retrain (any one fires): `observed`, "
        "`estimated`, `weighted_drift`, `prediction_drift`, `challenger` (a shadow challenger passes the gate), `drift`. "
        "Default chosen by `kfops backtest`.",
    )
    label_delay: dt.timedelta = Field(
        dt.timedelta(0), description="How long after an event its label exists (is final), e.g. 1d: a drift check "
        "and `kfops backtest` see no newer label, and featurize leaves newer rows out of the training set."
    )
    min_labelled_rows: int = Field(200, ge=10, description="`observed` needs at least this many labelled rows.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence of the interval on the observed AUC difference.")
    observed_tolerance: float = Field(
        0.03, ge=0, description="`observed` fires when the interval of (AUC now - test AUC) is wholly below -this."
    )
    min_roc_auc: float | None = Field(
        None, gt=0, le=1, description="`observed` also fires when the interval of the AUC now is wholly below this "
        "floor (e.g. the gate's `min_roc_auc`); null: no floor."
    )
    estimated_tolerance: float = Field(
        0.05, ge=0, description="`estimated` fires when the CBPE AUC is more than this below the test AUC "
        "(with `observed` also configured: only on windows without enough labels for it)."
    )
    weighted_drift_share: float = Field(
        0.5, gt=0, le=1, description="`weighted_drift` fires when drifted columns hold this share of importance."
    )
    cooldown: dt.timedelta = Field(dt.timedelta(days=7), description="Minimum time between two retrains, e.g. 7d.")
    debounce: int = Field(
        1, ge=1, description="Retrain only after a trigger fired (mode `drift`: drift) in this many consecutive checks."
    )
    max_retrains: int | None = Field(
        4, ge=0, description="At most this many retrains in any trailing `period`; null: no cap."
    )
    period: dt.timedelta = Field(dt.timedelta(days=30), description="Window of the `max_retrains` cap, e.g. 30d.")
    schedule_every: dt.timedelta = Field(
        dt.timedelta(days=7), description="Mode `scheduled`: retrain when the last retrain is this old, e.g. 7d."
    )
    retrain_timeout: dt.timedelta = Field(
        PENDING_LEASE, description="How long a retrain may run without reporting back: until then no other check "
        "retrains; after it, one whose run cannot be seen counts as abandoned. Set it above your longest training, "
        "e.g. 48h."
    )

    @field_validator("cooldown", "period", "schedule_every", "label_delay", "retrain_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _positive_durations(self) -> RetrainPolicy:
        if self.cooldown < dt.timedelta(0) or self.label_delay < dt.timedelta(0):
            raise ValueError("cooldown and label_delay must not be negative")
        if self.mode == "performance" and not self.triggers:
            raise ValueError("mode 'performance' needs at least one trigger")
        if self.period <= dt.timedelta(0) or self.schedule_every <= dt.timedelta(0):
            raise ValueError("period and schedule_every must be positive")
        if self.retrain_timeout <= dt.timedelta(0):
            raise ValueError("retrain_timeout must be positive")
        return self


@dataclass(frozen=True)
class DriftSummary:
    """What the policy needs from a drift check: the verdict and which report holds it; ``notes``:
    words the numbers cannot carry, for the reason (``challenger``: the gate checks it failed)."""

    drift: bool
    report: str | None = None
    reasons: tuple[str, ...] = ()
    signals: Mapping[str, float] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: DriftResult, report: str | Path | None = None,
                    signals: Mapping[str, float] | None = None, notes: Mapping[str, str] | None = None) -> DriftSummary:
        return cls(drift=bool(result.drift), report=None if report is None else str(report),
                   reasons=tuple(result.reasons), signals=dict(signals or {}), notes=dict(notes or {}))

    @classmethod
    def from_verdict(cls, verdict: Mapping[str, Any], report: str | Path | None = None) -> DriftSummary:
        """From a verdict dict (``write_verdict``'s JSON, or ``DriftResult.to_dict()``)."""
        if not isinstance(verdict.get("drift"), bool):
            raise DataError("the drift verdict has no boolean 'drift' field", hint="write it with kfops.core.drift.write_verdict")
        where = report if report is not None else verdict.get("report") or verdict.get("html_report")
        signals = verdict.get("signals") or {}
        if not isinstance(signals, Mapping):
            raise DataError("the drift verdict's 'signals' must be an object of numbers")
        return cls(drift=verdict["drift"], report=None if where is None else str(where),
                   reasons=tuple(verdict.get("reasons") or ()), signals={str(k): float(v) for k, v in signals.items()})

    @classmethod
    def from_verdict_file(cls, path: str | Path) -> DriftSummary:
        """Read a verdict JSON; the decision then points at that file."""
        path = Path(path)
        try:
            verdict = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise DataError(f"drift verdict {path} does not exist", hint="run `kfops drift check` first") from err
        except json.JSONDecodeError as err:
            raise DataError(f"drift verdict {path} is not valid JSON: {err}") from err
        return cls.from_verdict(verdict, report=path)


@dataclass(frozen=True)
class Decision:
    """One check's outcome. ``drift_report`` is the report this check was made on, so a retrain
    always names the drift report that caused it; ``evidence`` lists the reports of the drifted
    checks that made up the debounce streak. A retrain has an ``outcome`` once it is tracked
    (``pending``, then ``completed``, ``failed`` or ``abandoned``, ``outcome_at``, with why in
    ``outcome_note``): ``pipeline_run`` carries it out, in the processes ``owner`` names."""

    at: dt.datetime
    retrain: bool
    reason: str
    drift_report: str | None
    code: str
    drift: bool | None = None
    mode: str = "drift"
    evidence: tuple[str, ...] = ()
    fired: bool | None = None
    signals: Mapping[str, float] = field(default_factory=dict)
    triggered_by: tuple[str, ...] = ()
    outcome: str | None = None
    pipeline_run: str | None = None
    owner: str | None = None
    outcome_at: dt.datetime | None = None
    outcome_note: str = ""

    def counts(self, now: dt.datetime, lease: dt.timedelta = PENDING_LEASE) -> bool:
        """Whether this is a retrain that counts at ``now``: done, or pending within ``lease``."""
        return self.retrain and (self.outcome in (None, COMPLETED) or self.in_progress(now, lease))

    def in_progress(self, now: dt.datetime, lease: dt.timedelta = PENDING_LEASE) -> bool:
        """A retrain decided, not reported back, and younger than ``lease`` (``retrain_timeout``)."""
        return self.retrain and self.outcome == PENDING and now - self.at < lease

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "retrain": self.retrain,
            "reason": self.reason,
            "drift_report": self.drift_report,
            "code": self.code,
            "drift": self.drift,
            "mode": self.mode,
            "evidence": list(self.evidence),
            "fired": self.fired,
            "signals": dict(self.signals),
            "triggered_by": list(self.triggered_by),
            "outcome": self.outcome,
            "pipeline_run": self.pipeline_run,
            "owner": self.owner,
            "outcome_at": None if self.outcome_at is None else self.outcome_at.isoformat(),
            "outcome_note": self.outcome_note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        if not isinstance(data, Mapping):
            raise DataError(f"a retrain decision must be a JSON object, got {json.dumps(data, default=str)[:200]}")
        try:
            at = dt.datetime.fromisoformat(data["at"])
            return cls(
                at=_aware(at, "decision time"),
                retrain=bool(data["retrain"]),
                reason=str(data["reason"]),
                drift_report=data.get("drift_report"),
                code=str(data.get("code", "")),
                drift=data.get("drift"),
                mode=str(data.get("mode", "drift")),
                evidence=tuple(data.get("evidence") or ()),
                fired=data.get("fired"),
                signals={str(k): float(v) for k, v in (data.get("signals") or {}).items()},
                triggered_by=tuple(data.get("triggered_by") or ()),
                outcome=_outcome(data.get("outcome")),
                pipeline_run=data.get("pipeline_run"),
                owner=data.get("owner"),
                outcome_at=(None if data.get("outcome_at") is None
                            else _aware(dt.datetime.fromisoformat(data["outcome_at"]), "outcome time")),
                outcome_note=str(data.get("outcome_note") or ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"malformed retrain decision {dict(data)!r}: {err!r}") from err


def decide(
    history: Sequence[Decision | Mapping[str, Any]],
    drift: DriftSummary | Mapping[str, Any] | None,
    now: dt.datetime,
    policy: RetrainPolicy,
) -> Decision:
    """Decide whether this check retrains. ``history`` holds the earlier decisions (any order;
    ``Decision`` objects or their ``to_dict()`` form), ``drift`` this check's verdict
    (``DriftSummary``, a verdict dict, or None when no check ran)."""
    now = _aware(now, "now")
    past = sorted((d if isinstance(d, Decision) else Decision.from_dict(d) for d in history), key=lambda d: d.at)
    if past and past[-1].at > now:
        raise DataError(
            f"the history has a decision at {past[-1].at.isoformat()}, after now ({now.isoformat()})",
            hint="pass the check time as `now`, and a state file that belongs to this timeline",
        )
    summary = DriftSummary.from_verdict(drift) if isinstance(drift, Mapping) else drift
    report = summary.report if summary else None
    drifted = summary.drift if summary else None
    signals = dict(summary.signals) if summary else {}
    fired: bool | None = None
    triggered_by: tuple[str, ...] = ()

    def outcome(retrain: bool, code: str, reason: str, evidence: tuple[str, ...] = ()) -> Decision:
        return Decision(at=now, retrain=retrain, reason=reason, drift_report=report, code=code,
                        drift=drifted, mode=policy.mode, evidence=evidence, fired=fired, signals=signals,
                        triggered_by=triggered_by)

    if policy.mode == "never":
        return outcome(False, NEVER, "retrain policy mode is 'never'")

    lease = policy.retrain_timeout
    counted = [d for d in past if d.counts(now, lease)]
    last_retrain = counted[-1] if counted else None
    in_progress = next((d for d in reversed(past) if d.in_progress(now, lease)), None)
    evidence: tuple[str, ...]
    if policy.mode == "scheduled":
        if last_retrain is not None and now - last_retrain.at < policy.schedule_every:
            due = last_retrain.at + policy.schedule_every
            return outcome(False, NOT_DUE, f"scheduled retrain not due until {due.isoformat()} "
                                           f"(every {_human(policy.schedule_every)})")
        code, evidence = RETRAIN_SCHEDULED, ()
        reason = ("scheduled retrain: no earlier retrain" if last_retrain is None else
                  f"scheduled retrain: the last one was {_human(now - last_retrain.at)} ago "
                  f"(every {_human(policy.schedule_every)})")
    else:
        if summary is None:
            return outcome(False, NO_VERDICT, "no drift verdict for this check")
        if policy.mode == "performance":
            if not signals and "drift" not in policy.triggers:
                return outcome(False, NO_VERDICT, "no performance evidence (signals) for this check")
            why_fired, quiet = fired_triggers(summary, policy)
            fired = bool(why_fired)
            triggered_by = tuple(name for name, _ in why_fired)
            if not fired:
                return outcome(False, NO_SIGNAL, "no trigger fired: " + "; ".join(quiet))
            what, code = "trigger", RETRAIN_SIGNAL
            why = ": " + "; ".join(text for _, text in why_fired)
        else:
            if not summary.drift:
                return outcome(False, NO_DRIFT, "no drift in this check")
            what, code = "drift", RETRAIN_DRIFT
            why = f": {summary.reasons[0]}" if summary.reasons else ""
        streak = _drift_streak(past, policy.mode, now, lease)
        checks = len(streak) + 1
        if checks < policy.debounce:
            return outcome(False, DEBOUNCE, f"{what} in {checks} consecutive check(s); "
                                            f"{policy.debounce} needed (debounce){why}")
        evidence = tuple(d.drift_report for d in streak[len(streak) - (policy.debounce - 1):] if d.drift_report)
        evidence += (report,) if report else ()
        reason = f"{what} in {checks} consecutive check(s) (debounce {policy.debounce}){why}"

    if in_progress is not None:
        run = f" by pipeline run {in_progress.pipeline_run}" if in_progress.pipeline_run else ""
        return outcome(False, IN_PROGRESS, f"{reason}; but the retrain decided at {in_progress.at.isoformat()}{run} has "
                                         "not finished: no other retrain starts until it reports back, or until "
                                         f"{(in_progress.at + lease).isoformat()} (retrain.retrain_timeout), when one "
                                         "that never does counts as abandoned")
    if last_retrain is not None and now - last_retrain.at < policy.cooldown:
        allowed = last_retrain.at + policy.cooldown
        return outcome(False, COOLDOWN, f"{reason}; but the last retrain was {_human(now - last_retrain.at)} ago, "
                                        f"cooldown {_human(policy.cooldown)} lasts until {allowed.isoformat()}")
    if policy.max_retrains is not None:
        recent = [d for d in counted if d.at > now - policy.period]
        if len(recent) >= policy.max_retrains:
            next_allowed = (recent[-policy.max_retrains].at + policy.period) if policy.max_retrains else None
            when = f"; next allowed at {next_allowed.isoformat()}" if next_allowed else ""
            return outcome(False, RATE_LIMIT, f"{reason}; but {len(recent)} retrain(s) in the last "
                                              f"{_human(policy.period)} reach max_retrains {policy.max_retrains}{when}")
    return outcome(True, code, reason, evidence)


# The settings each mode decides with (performance: all of them).
_MODE_SETTINGS = {
    "never": ("mode",),
    "scheduled": ("mode", "schedule_every", "cooldown", "max_retrains", "period"),
    "drift": ("mode", "debounce", "cooldown", "max_retrains", "period", "label_delay"),
}


def policy_settings(policy: RetrainPolicy) -> dict[str, str]:
    """The settings ``policy`` decides with, as text (durations as '7d'): what a report shows next
    to a decision so its thresholds can be read with it."""
    values = policy.model_dump()
    if policy.mode != "performance":
        values = {name: values[name] for name in _MODE_SETTINGS[policy.mode]}

    def text(value: Any) -> str:
        if isinstance(value, dt.timedelta):
            return format_duration(value)
        if isinstance(value, list):
            return ", ".join(value)
        return "none" if value is None else str(value)

    return {name: text(value) for name, value in values.items()}


def fired_triggers(summary: DriftSummary, policy: RetrainPolicy) -> tuple[list[tuple[str, str]], list[str]]:
    """Which of ``policy.triggers`` fire on ``summary`` ((name, why) pairs), and why each other
    one stayed quiet (or had no evidence): the thresholds applied to the evidence, in one place."""
    s = summary.signals
    fired: list[tuple[str, str]] = []
    # The evidence left out: the champion's own data window is no evidence (the drift step's note).
    quiet: list[str] = [summary.notes["in_sample"]] if summary.notes.get("in_sample") else []
    for name in policy.triggers:
        if name == "observed":
            if "observed_diff_high" not in s:
                rows = s.get("observed_rows")
                quiet.append("observed: too few labelled rows" + (f" ({rows:.0f})" if rows is not None else ""))
                continue
            text = (f"observed AUC {s['observed_roc_auc']:.4f} vs test {s['reference_roc_auc']:.4f} on "
                    f"{s.get('observed_rows', 0):.0f} labelled rows: difference {s['observed_diff']:+.4f}, "
                    f"{policy.confidence:.0%} CI [{s['observed_diff_low']:+.4f}, {s['observed_diff_high']:+.4f}]")
            hit = s["observed_diff_high"] < -policy.observed_tolerance
            target = f"-{policy.observed_tolerance:g}"
            if hit:
                fired.append((name, f"{text} below {target}"))
            elif policy.min_roc_auc is not None and s.get("observed_roc_auc_high", 1.0) < policy.min_roc_auc:
                fired.append((name, f"observed AUC {s['observed_roc_auc']:.4f} on {s.get('observed_rows', 0):.0f} "
                                    f"labelled rows, {policy.confidence:.0%} CI [{s['observed_roc_auc_low']:.4f}, "
                                    f"{s['observed_roc_auc_high']:.4f}] below the floor min_roc_auc "
                                    f"{policy.min_roc_auc:g}"))
            else:
                floor = "" if policy.min_roc_auc is None else f", nor wholly below the floor {policy.min_roc_auc:g}"
                quiet.append(f"{text} not wholly below {target}{floor}")
        elif name == "estimated":
            if "estimated_diff" not in s:
                quiet.append("estimated: no scores")
                continue
            interval = (f" [{s['estimated_roc_auc_low']:.4f}, {s['estimated_roc_auc_high']:.4f}]"
                        if "estimated_roc_auc_low" in s else "")
            text = (f"estimated (CBPE) AUC {s['estimated_roc_auc']:.4f}{interval} vs test {s['reference_roc_auc']:.4f} "
                    f"({s['estimated_diff']:+.4f})")
            if "observed" in policy.triggers and "observed_diff" in s:
                # Measured beats estimated: with enough labels the observed AUC and its interval decide.
                quiet.append(f"{text}: reported only, the observed AUC on labelled rows decides")
                continue
            if "challenger" in policy.triggers and "challenger_blessed" in s:
                quiet.append(f"{text}: reported only, the shadow challenger on labelled rows decides")
                continue
            hit = s["estimated_diff"] < -policy.estimated_tolerance
            (fired.append((name, f"{text} < -{policy.estimated_tolerance:g}")) if hit
             else quiet.append(f"{text} within {policy.estimated_tolerance:g}"))
        elif name == "weighted_drift":
            if "weighted_drift_share" not in s:
                quiet.append("weighted_drift: no column drift results")
                continue
            share = s["weighted_drift_share"]
            text = f"drifted columns hold {share:.0%} of the importance (threshold {policy.weighted_drift_share:.0%})"
            (fired.append((name, text)) if share >= policy.weighted_drift_share else quiet.append(text))
        elif name == "challenger":
            if "challenger_blessed" not in s:
                quiet.append("challenger: no shadow challenger (no labelled window, or too few labelled rows)")
                continue
            text = (f"a shadow challenger trained on {s.get('challenger_rows', 0):.0f} labelled rows scores AUC "
                    f"{s['challenger_roc_auc']:.4f} against the champion's {s['challenger_champion_roc_auc']:.4f} "
                    f"on the window's test split")
            failed = summary.notes.get("challenger")
            (fired.append((name, f"{text} and passes the evaluate gate")) if s["challenger_blessed"] == 1.0
             else quiet.append(f"{text} and does not pass the evaluate gate" + (f" ({failed})" if failed else "")))
        elif name == "prediction_drift":
            if "prediction_drift" not in s:
                quiet.append("prediction_drift: no scores")
                continue
            text = "the champion's scores drifted" if s["prediction_drift"] else "no prediction drift"
            (fired.append((name, text)) if s["prediction_drift"] else quiet.append(text))
        elif summary.drift:
            fired.append((name, summary.reasons[0] if summary.reasons else "drift verdict"))
        else:
            quiet.append("no drift verdict")
    return fired, quiet


def _drift_streak(past: list[Decision], mode: str, now: dt.datetime, lease: dt.timedelta) -> list[Decision]:
    """The unbroken run of checks at the end of ``past`` whose trigger fired under ``mode``, since
    the last retrain that counts: in mode ``performance`` a check whose own triggers fired
    (``fired``), in mode ``drift`` a check that drifted. A check recorded under another mode ends the
    run, as a quiet check does: it never asked this mode's question (a ``never`` or ``drift`` check's
    drift verdict is not a performance trigger), so after a mode change the debounce counts afresh.
    A retrain that failed or was abandoned does not end it: its check's evidence still stands."""
    streak: list[Decision] = []
    for decision in reversed(past):
        hot = decision.fired if mode == "performance" else decision.drift
        if decision.counts(now, lease) or decision.mode != mode or hot is not True:
            break
        streak.append(decision)
    return streak[::-1]


@dataclass
class PolicyState:
    """The decisions so far, persisted as JSON at a path the caller chooses."""

    decisions: list[Decision] = field(default_factory=list)

    @property
    def last_retrain(self) -> Decision | None:
        """The latest retrain not known to have failed or been abandoned."""
        return next((d for d in reversed(self.decisions) if d.retrain and d.outcome not in (FAILED, ABANDONED)), None)

    def record(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "kfops.retrain.state", "version": STATE_VERSION,
                "decisions": [d.to_dict() for d in self.decisions]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "retrain state") -> PolicyState:
        """The state from its JSON value; ``source`` (the file or store key it came from) names
        it in the error when the value is valid JSON of another shape."""
        if not isinstance(data, Mapping):
            raise _bad_state(source, f"it holds a JSON {type(data).__name__}, not an object")
        if data.get("version") != STATE_VERSION or not isinstance(data.get("decisions"), list):
            raise _bad_state(source, f"it has version {data.get('version')!r} or no decision list; "
                                     f"expected version {STATE_VERSION} with a 'decisions' list")
        decisions = []
        for number, item in enumerate(data["decisions"]):
            try:
                decisions.append(Decision.from_dict(item))
            except DataError as err:
                raise _bad_state(source, f"decision #{number} is malformed: {err}") from err
        return cls(decisions)

    @classmethod
    def load(cls, path: str | Path) -> PolicyState:
        """The state at ``path``; an empty state when the file does not exist yet."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"retrain state {path} is not valid JSON: {err}", hint=_STATE_HINT) from err
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path) -> Path:
        """Write atomically, so a reader never sees half a file."""
        # 0644: the scheduler and a backtest may run as other users.
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", mode=0o644)


def decide_and_record(
    state_path: str | Path,
    drift: DriftSummary | Mapping[str, Any] | None,
    now: dt.datetime | None,
    policy: RetrainPolicy,
) -> Decision:
    """Load the state, decide, append the decision and save, holding a lock on the state file so
    two processes sharing it cannot interleave. ``now`` None: the time the decision is made
    (:func:`decision_time`)."""
    state_path = Path(state_path)
    with _locked(state_path):
        state = PolicyState.load(state_path)
        decision = decide(state.decisions, drift, decision_time(state.decisions, now, str(state_path)), policy)
        state.record(decision)
        state.save(state_path)
    return decision


@dataclass(frozen=True)
class Attempt:
    """Who carries out a retrain a check decides: the pipeline run that reports its outcome back
    (:func:`record_outcome`) and its processes (``owner``), which ``alive`` can tell are gone."""

    pipeline_run: str
    owner: str | None = None
    alive: Callable[[str], bool | None] | None = field(default=None, compare=False)


def decide_and_record_in(
    store: StateStore,
    key: str,
    drift: DriftSummary | Mapping[str, Any] | None,
    now: dt.datetime | None,
    policy: RetrainPolicy,
    attempt: Attempt | None = None,
) -> Decision:
    """:func:`decide_and_record` on the state at ``key`` of ``store`` (files under data_dir, or a
    shared object store a cluster's pods all reach). A check that raced another one decides again
    on the history that includes the other's decision, so no decision is lost and two checks
    never both spend the same retrain budget. A check that runs now passes ``now`` None, so the
    other's decision is never later than its own (a check time read before its slow work would be).

    With an ``attempt`` a retrain is recorded ``pending`` until :func:`record_outcome` says how its
    training ended; first, pending retrains whose owner ``attempt.alive`` says is gone are marked
    abandoned, so an interrupted run does not hold retrains off."""
    from kfops.core.state import update_json

    def record(current: Any) -> tuple[dict[str, Any], Decision]:
        state = PolicyState() if current is None else PolicyState.from_dict(current, source=store.uri(key))
        at = decision_time(state.decisions, now, store.uri(key))
        if attempt is not None and attempt.alive is not None:
            state = PolicyState(settle_abandoned(state.decisions, attempt.alive, at))
        decision = decide(state.decisions, drift, at, policy)
        if attempt is not None and decision.retrain:
            decision = replace(decision, outcome=PENDING, pipeline_run=attempt.pipeline_run, owner=attempt.owner)
        state.record(decision)
        return state.to_dict(), decision

    return update_json(store, key, record)


def decision_time(history: Sequence[Decision], now: dt.datetime | None, source: str = "retrain state") -> dt.datetime:
    """``now`` when given (a check time: a backtest, a replay); else the clock, read as the decision
    is made (under the state's lock or conditional write), so a concurrent check's decision is
    already older. A decision up to ``CLOCK_SKEW`` after the clock is a concurrent check's on a
    machine whose clock runs ahead: the check decides at that time, keeping the history in order.
    Further ahead is refused: a clock far off wrote it, or the state is another timeline's."""
    if now is not None:
        return now
    clock = dt.datetime.now(dt.UTC)
    latest = max((d.at for d in history), default=clock)
    if latest <= clock:
        return clock
    if latest - clock <= CLOCK_SKEW:
        return latest
    raise DataError(f"{source} has a decision at {latest.isoformat()}, {_human(latest - clock)} after this "
                    f"machine's clock ({clock.isoformat()}): a clock that runs ahead recorded it, or the history "
                    "belongs to another timeline (a backtest or a replay with check_time)",
                    hint="set the clocks right (NTP); or move the state away to start a new history")


def settle_abandoned(decisions: Sequence[Decision], alive: Callable[[str], bool | None],
                     now: dt.datetime) -> list[Decision]:
    """``decisions`` with each pending retrain whose owner ``alive`` says is gone (False; None:
    cannot tell) marked abandoned: its run was interrupted or killed before it reported back."""
    settled = []
    for d in decisions:
        gone = d.retrain and d.outcome == PENDING and bool(d.owner) and alive(str(d.owner)) is False
        settled.append(replace(d, outcome=ABANDONED, outcome_at=now,
                               outcome_note=f"its processes ({d.owner}) ended without reporting an outcome: "
                                            "interrupted or killed, so it does not count") if gone else d)
    return settled


def record_outcome(store: StateStore, key: str, pipeline_run: str, succeeded: bool, note: str = "",
                   now: dt.datetime | None = None) -> Decision | None:
    """Report what became of the retrain ``pipeline_run`` decided: ``completed`` (it counts toward
    the cooldown and the budget) or ``failed`` (it does not). Returns the updated decision; None,
    with nothing written, when that run decided no tracked retrain. A retrain marked abandoned
    that completes after all is completed."""
    from kfops.core.state import update_json

    def ours(d: Decision) -> bool:
        return bool(pipeline_run) and d.retrain and d.pipeline_run == pipeline_run and d.outcome in (PENDING, ABANDONED)

    if not any(ours(d) for d in load_state(store, key).decisions):
        return None
    at = now or dt.datetime.now(dt.UTC)

    def change(current: Any) -> tuple[dict[str, Any], Decision | None]:
        state = PolicyState() if current is None else PolicyState.from_dict(current, source=store.uri(key))
        updated = None
        for number, d in enumerate(state.decisions):
            if ours(d):
                updated = state.decisions[number] = replace(d, outcome=COMPLETED if succeeded else FAILED,
                                                            outcome_at=at, outcome_note=note)
        return state.to_dict(), updated

    return update_json(store, key, change)


def load_state(store: StateStore, key: str) -> PolicyState:
    """The decisions at ``key`` of ``store``; an empty state when there are none yet."""
    from kfops.core.state import read_json

    recorded = read_json(store, key)
    return PolicyState() if recorded is None else PolicyState.from_dict(recorded, source=store.uri(key))


_STATE_HINT = "restore it, or move it away to start a new history"


def _bad_state(source: str, what: str) -> DataError:
    return DataError(f"{source} is not a kfops retrain history: {what}", hint=_STATE_HINT)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _outcome(value: Any) -> str | None:
    if value not in (None, PENDING, COMPLETED, FAILED, ABANDONED):
        raise ValueError(f"unknown retrain outcome {value!r}")
    return value  # type: ignore[no-any-return]


def _aware(moment: dt.datetime, what: str) -> dt.datetime:
    if not isinstance(moment, dt.datetime):
        raise DataError(f"{what} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise DataError(f"{what} ({moment.isoformat()}) has no time zone",
                        hint="use timezone-aware datetimes, e.g. datetime.now(timezone.utc)")
    return moment


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    if seconds >= 3600:
        return f"{seconds / 86400:.1f}d" if seconds >= 86400 else f"{seconds / 3600:.1f}h"
    return f"{seconds}s"
