"""The retraining trigger policy: pure decisions over a history, and the JSON state they share."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from kfops.core.retrain_policy import (
    COOLDOWN,
    DEBOUNCE,
    NEVER,
    NO_DRIFT,
    NO_SIGNAL,
    NO_VERDICT,
    NOT_DUE,
    RATE_LIMIT,
    RETRAIN_DRIFT,
    RETRAIN_SCHEDULED,
    RETRAIN_SIGNAL,
    Decision,
    DriftSummary,
    PolicyState,
    RetrainPolicy,
    decide,
    decide_and_record,
)
from kfops.errors import DataError

T0 = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def drifted(day: int) -> DriftSummary:
    return DriftSummary(drift=True, report=f"reports/day{day:03d}.json", reasons=(f"temp drifted on day {day}",))


def calm(day: int) -> DriftSummary:
    return DriftSummary(drift=False, report=f"reports/day{day:03d}.json")


def replay(policy: RetrainPolicy, checks: list[DriftSummary | None]) -> list[Decision]:
    """One check a day, each decided on the history before it, as a scheduler would."""
    history: list[Decision] = []
    for day, summary in enumerate(checks):
        history.append(decide(history, summary, T0 + day * DAY, policy))
    return history


def test_debounce_waits_for_k_consecutive_drifted_checks():
    policy = RetrainPolicy(mode="drift", debounce=3, cooldown="0d", max_retrains=None)
    decisions = replay(policy, [drifted(0), drifted(1), calm(2), drifted(3), drifted(4), drifted(5)])
    assert [d.code for d in decisions] == [DEBOUNCE, DEBOUNCE, NO_DRIFT, DEBOUNCE, DEBOUNCE, RETRAIN_DRIFT]
    retrain = decisions[-1]
    assert retrain.retrain and retrain.drift_report == "reports/day005.json"
    assert retrain.evidence == ("reports/day003.json", "reports/day004.json", "reports/day005.json")
    assert "drift in 3 consecutive" in retrain.reason and "temp drifted on day 5" in retrain.reason


def test_a_retrain_resets_the_drift_streak():
    policy = RetrainPolicy(mode="drift", debounce=2, cooldown="0d", max_retrains=None)
    decisions = replay(policy, [drifted(0), drifted(1), drifted(2), drifted(3)])
    assert [d.retrain for d in decisions] == [False, True, False, True]


def test_cooldown_blocks_until_it_has_passed_and_drift_streak_survives_it():
    policy = RetrainPolicy(mode="drift", debounce=1, cooldown="3d", max_retrains=None)
    decisions = replay(policy, [drifted(day) for day in range(5)])
    assert [d.code for d in decisions] == [RETRAIN_DRIFT, COOLDOWN, COOLDOWN, RETRAIN_DRIFT, COOLDOWN]
    blocked = decisions[1]
    assert not blocked.retrain and "cooldown 3d" in blocked.reason
    assert (T0 + 3 * DAY).isoformat() in blocked.reason  # says when it ends


def test_max_retrains_per_period_caps_retrains_in_a_trailing_window():
    policy = RetrainPolicy(mode="drift", debounce=1, cooldown="0d", max_retrains=2, period="7d")
    decisions = replay(policy, [drifted(day) for day in range(10)])
    retrain_days = [day for day, d in enumerate(decisions) if d.retrain]
    assert retrain_days == [0, 1, 7, 8]
    assert decisions[2].code == RATE_LIMIT
    assert "2 retrain(s) in the last 7d reach max_retrains 2" in decisions[2].reason
    assert (T0 + 7 * DAY).isoformat() in decisions[2].reason  # when the oldest one leaves the window


def test_never_mode_never_retrains_whatever_the_drift():
    policy = RetrainPolicy(mode="never", debounce=1, cooldown="0d")
    decisions = replay(policy, [drifted(day) for day in range(5)])
    assert not any(d.retrain for d in decisions)
    assert {d.code for d in decisions} == {NEVER}


def test_scheduled_mode_retrains_on_the_clock_and_ignores_drift():
    policy = RetrainPolicy(mode="scheduled", schedule_every="3d", cooldown="0d", max_retrains=None)
    decisions = replay(policy, [calm(0), drifted(1), drifted(2), calm(3), None, None, drifted(6)])
    assert [d.code for d in decisions] == [
        RETRAIN_SCHEDULED, NOT_DUE, NOT_DUE, RETRAIN_SCHEDULED, NOT_DUE, NOT_DUE, RETRAIN_SCHEDULED,
    ]
    assert decisions[0].reason == "scheduled retrain: no earlier retrain"
    assert "last one was 3d ago" in decisions[3].reason


def test_scheduled_mode_still_respects_the_rate_limit():
    policy = RetrainPolicy(mode="scheduled", schedule_every="1d", cooldown="0d", max_retrains=1, period="3d")
    decisions = replay(policy, [None] * 6)
    assert [d.retrain for d in decisions] == [True, False, False, True, False, False]
    assert decisions[1].code == RATE_LIMIT


def test_every_decision_records_the_report_it_was_made_on():
    policies = [
        RetrainPolicy(mode="drift", debounce=2, cooldown="2d", max_retrains=3, period="10d"),
        RetrainPolicy(mode="scheduled", schedule_every="2d"),
        RetrainPolicy(mode="never"),
    ]
    checks = [drifted(d) if d % 3 else calm(d) for d in range(12)]
    for policy in policies:
        for day, decision in enumerate(replay(policy, checks)):
            assert decision.drift_report == f"reports/day{day:03d}.json"
            assert decision.drift == checks[day].drift and decision.mode == policy.mode


def test_history_may_be_given_as_dicts_in_any_order():
    policy = RetrainPolicy(mode="drift", debounce=2, cooldown="0d", max_retrains=None)
    history = replay(policy, [drifted(0), drifted(1), drifted(2)])
    as_dicts = [d.to_dict() for d in reversed(history)]
    assert decide(as_dicts, drifted(3), T0 + 3 * DAY, policy) == decide(history, drifted(3), T0 + 3 * DAY, policy)


def test_no_verdict_means_no_retrain_in_drift_mode():
    decision = decide([], None, T0, RetrainPolicy(mode="drift", debounce=1))
    assert not decision.retrain and decision.code == NO_VERDICT and decision.drift_report is None


def test_verdict_files_and_dicts_are_accepted(tmp_path):
    verdict = tmp_path / "verdict.json"
    verdict.write_text(json.dumps({"kind": "kfops.drift.verdict", "drift": True, "reasons": ["temp drifted"]}))
    summary = DriftSummary.from_verdict_file(verdict)
    assert summary == DriftSummary(drift=True, report=str(verdict), reasons=("temp drifted",))

    decision = decide([], {"drift": True, "reasons": ["x"], "html_report": "r.html"}, T0, RetrainPolicy(mode="drift", debounce=1))
    assert decision.retrain and decision.drift_report == "r.html"

    with pytest.raises(DataError, match="does not exist"):
        DriftSummary.from_verdict_file(tmp_path / "missing.json")
    with pytest.raises(DataError, match="no boolean 'drift'"):
        DriftSummary.from_verdict({"reasons": []})


def test_state_round_trips_through_json_and_is_shared_between_runs(tmp_path):
    state_path = tmp_path / "state" / "retrain.json"
    policy = RetrainPolicy(mode="drift", debounce=2, cooldown="1d", max_retrains=None)
    codes = [decide_and_record(state_path, drifted(day), T0 + day * DAY, policy).code for day in range(3)]
    assert codes == [DEBOUNCE, RETRAIN_DRIFT, DEBOUNCE]

    state = PolicyState.load(state_path)
    assert len(state.decisions) == 3 and state.last_retrain.at == T0 + DAY
    assert state.decisions[1].evidence == ("reports/day000.json", "reports/day001.json")
    again = PolicyState.from_dict(json.loads(state_path.read_text()))
    assert again == state
    # A second process continuing the same timeline sees the streak and the last retrain.
    assert decide_and_record(state_path, drifted(3), T0 + 3 * DAY, policy).code == RETRAIN_DRIFT


def test_missing_state_is_empty_and_corrupt_state_is_a_data_error(tmp_path):
    assert PolicyState.load(tmp_path / "none.json").decisions == []
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        PolicyState.load(corrupt)
    corrupt.write_text(json.dumps({"version": 99, "decisions": []}))
    with pytest.raises(DataError, match="version 99"):
        PolicyState.load(corrupt)


def test_times_must_be_aware_and_history_must_not_be_in_the_future():
    policy = RetrainPolicy(mode="drift", debounce=1)
    with pytest.raises(DataError, match="no time zone"):
        decide([], drifted(0), dt.datetime(2013, 1, 1), policy)
    later = decide([], drifted(5), T0 + 5 * DAY, policy)
    with pytest.raises(DataError, match="after now"):
        decide([later], drifted(1), T0 + DAY, policy)


def test_policy_config_parses_durations_and_rejects_bad_values():
    policy = RetrainPolicy(cooldown="12h", period="2w", schedule_every="P1D")
    assert policy.cooldown == dt.timedelta(hours=12) and policy.period == dt.timedelta(weeks=2)
    assert policy.schedule_every == DAY
    assert RetrainPolicy.model_validate_json(policy.model_dump_json()) == policy
    with pytest.raises(ValueError, match="extra"):
        RetrainPolicy(cooldwn="1d")
    with pytest.raises(ValueError, match="positive"):
        RetrainPolicy(period="0d")
    with pytest.raises(ValueError):
        RetrainPolicy(debounce=0)
    with pytest.raises(ValueError):
        RetrainPolicy(mode="sometimes")


# --- mode `performance`: one test per trigger, on the evidence kfops.core.monitoring computes


def evidence(**signals: float) -> DriftSummary:
    return DriftSummary(drift=False, report="reports/check.json", signals={"reference_roc_auc": 0.70, **signals})


def observed(diff: float, half_width: float, rows: float = 5000) -> dict[str, float]:
    return {"observed_roc_auc": 0.70 + diff, "observed_rows": rows, "observed_diff": diff,
            "observed_diff_low": diff - half_width, "observed_diff_high": diff + half_width}


def performance(*triggers: str, **fields) -> RetrainPolicy:
    return RetrainPolicy(mode="performance", triggers=list(triggers), debounce=1, cooldown="0d", max_retrains=None,
                         **fields)


def test_observed_fires_only_when_the_whole_interval_is_below_the_tolerance():
    policy = performance("observed", observed_tolerance=0.01)
    confident = decide([], evidence(**observed(-0.04, 0.02)), T0, policy)
    assert confident.retrain and confident.code == RETRAIN_SIGNAL and confident.triggered_by == ("observed",)
    assert "CI [-0.0600, -0.0200]" in confident.reason and confident.signals["observed_diff_high"] == -0.02
    straddles = decide([], evidence(**observed(-0.04, 0.035)), T0, policy)  # high -0.005 > -0.01
    assert not straddles.retrain and straddles.code == NO_SIGNAL and "not wholly below -0.01" in straddles.reason
    few_rows = decide([], evidence(observed_rows=12), T0, policy)
    assert few_rows.code == NO_SIGNAL and "too few labelled rows (12)" in few_rows.reason


def test_estimated_fires_on_a_cbpe_drop_beyond_its_tolerance():
    policy = performance("estimated", estimated_tolerance=0.02)
    assert decide([], evidence(estimated_roc_auc=0.67, estimated_diff=-0.03), T0, policy).retrain
    quiet = decide([], evidence(estimated_roc_auc=0.69, estimated_diff=-0.01), T0, policy)
    assert not quiet.retrain and "within 0.02" in quiet.reason
    # The estimate's interval is part of the evidence the decision states.
    banded = decide([], evidence(estimated_roc_auc=0.67, estimated_roc_auc_low=0.655, estimated_roc_auc_high=0.684,
                                 estimated_diff=-0.03), T0, policy)
    assert "estimated (CBPE) AUC 0.6700 [0.6550, 0.6840]" in banded.reason


def test_weighted_drift_and_prediction_drift_fire_on_their_own_evidence():
    weighted = performance("weighted_drift", weighted_drift_share=0.4)
    assert decide([], evidence(weighted_drift_share=0.45), T0, weighted).triggered_by == ("weighted_drift",)
    assert not decide([], evidence(weighted_drift_share=0.2), T0, weighted).retrain
    scores = performance("prediction_drift")
    assert decide([], evidence(prediction_drift=1.0), T0, scores).retrain
    assert decide([], evidence(prediction_drift=0.0), T0, scores).code == NO_SIGNAL


def test_a_combined_policy_retrains_when_any_trigger_fires_and_records_which():
    policy = performance("observed", "estimated")
    both = decide([], evidence(**observed(-0.05, 0.01), estimated_roc_auc=0.6, estimated_diff=-0.1), T0, policy)
    assert both.triggered_by == ("observed",)  # the estimate is reported, the measurement decides
    unmeasured = performance("estimated", "weighted_drift", weighted_drift_share=0.3)
    assert decide([], evidence(**observed(-0.05, 0.01), estimated_roc_auc=0.6, estimated_diff=-0.1,
                               weighted_drift_share=0.5), T0, unmeasured).triggered_by == ("estimated", "weighted_drift")
    measured = decide([], evidence(**observed(0.0, 0.01), estimated_roc_auc=0.6, estimated_diff=-0.1), T0, policy)
    assert not measured.retrain, "with labelled evidence the observed AUC decides, the estimate is only reported"
    unlabelled = decide([], evidence(estimated_roc_auc=0.6, estimated_diff=-0.1), T0, policy)
    assert unlabelled.retrain and unlabelled.triggered_by == ("estimated",)
    assert decide([], evidence(), T0, policy).code == NO_SIGNAL  # no evidence for either: no retrain
    assert decide([], DriftSummary(drift=True), T0, policy).code == NO_VERDICT  # no signals at all


def test_debounce_cooldown_and_budget_apply_to_triggers_too():
    fired = evidence(estimated_roc_auc=0.6, estimated_diff=-0.1)
    calm_check = evidence(estimated_roc_auc=0.7, estimated_diff=0.0)
    policy = RetrainPolicy(mode="performance", triggers=["estimated"], debounce=2, cooldown="3d", max_retrains=None)
    decisions = replay(policy, [fired, calm_check, fired, fired, fired, fired])
    assert [d.code for d in decisions] == [DEBOUNCE, NO_SIGNAL, DEBOUNCE, RETRAIN_SIGNAL, DEBOUNCE, COOLDOWN]
    capped = RetrainPolicy(mode="performance", triggers=["estimated"], debounce=1, cooldown="0d", max_retrains=1,
                           period="3d")
    assert [d.retrain for d in replay(capped, [fired] * 4)] == [True, False, False, True]


def test_signals_survive_the_state_file_and_verdicts(tmp_path):
    decision = decide([], evidence(**observed(-0.05, 0.01)), T0, performance("observed"))
    again = Decision.from_dict(json.loads(json.dumps(decision.to_dict())))
    assert again == decision and again.fired is True and again.triggered_by == ("observed",)
    verdict = {"drift": False, "signals": {"reference_roc_auc": 0.7, "estimated_roc_auc": 0.6, "estimated_diff": -0.1}}
    assert decide([], verdict, T0, performance("estimated")).retrain
    with pytest.raises(Exception, match="label_delay must not be negative"):
        RetrainPolicy(label_delay="-1d")
    assert RetrainPolicy(label_delay="6h").label_delay == dt.timedelta(hours=6)


def test_observed_fires_below_an_absolute_floor_only_with_confidence():
    policy = performance("observed", observed_tolerance=0.03, min_roc_auc=0.66)
    weak = {"observed_roc_auc": 0.62, "observed_roc_auc_low": 0.61, "observed_roc_auc_high": 0.63}
    decision = decide([], evidence(**{**observed(0.0, 0.02), **weak}), T0, policy)  # no worse than at test time
    assert decision.retrain and "below the floor min_roc_auc 0.66" in decision.reason
    unsure = {"observed_roc_auc": 0.65, "observed_roc_auc_low": 0.63, "observed_roc_auc_high": 0.67}
    quiet = decide([], evidence(**{**observed(0.0, 0.02), **unsure}), T0, policy)
    assert not quiet.retrain and "nor wholly below the floor 0.66" in quiet.reason
    assert not decide([], evidence(**{**observed(0.0, 0.02), **weak}), T0, performance("observed")).retrain


def shadow(blessed: bool, gain: float = 0.03, rows: float = 20_000) -> dict[str, float]:
    return {"challenger_blessed": float(blessed), "challenger_roc_auc": 0.70 + gain, "challenger_champion_roc_auc": 0.70,
            "challenger_gain": gain, "challenger_rows": rows}


def test_challenger_fires_only_when_the_shadow_challenger_passes_the_gate():
    policy = performance("challenger")
    passes = decide([], evidence(**shadow(True)), T0, policy)
    assert passes.retrain and passes.triggered_by == ("challenger",)
    assert "20000 labelled rows" in passes.reason and "passes the evaluate gate" in passes.reason
    refused = decide([], evidence(**shadow(False, gain=0.05)), T0, policy)  # better AUC, but the gate refused it
    assert not refused.retrain and refused.code == NO_SIGNAL and "does not pass the evaluate gate" in refused.reason
    unlabelled = decide([], evidence(estimated_roc_auc=0.6, estimated_diff=-0.1), T0, policy)
    assert not unlabelled.retrain and "no shadow challenger" in unlabelled.reason


def test_with_a_shadow_challenger_the_estimate_is_reported_and_acts_only_without_labels():
    policy = performance("challenger", "estimated")
    measured = decide([], evidence(**shadow(False), estimated_roc_auc=0.6, estimated_diff=-0.1), T0, policy)
    assert not measured.retrain and "the shadow challenger on labelled rows decides" in measured.reason
    unlabelled = decide([], evidence(estimated_roc_auc=0.6, estimated_diff=-0.1), T0, policy)
    assert unlabelled.retrain and unlabelled.triggered_by == ("estimated",)


def test_checks_recorded_under_another_mode_do_not_count_toward_the_debounce():
    """The audit's repro: a `never` check on drifted April, then performance mode with debounce 2 on
    June, whose trigger fires once, retrained ('trigger in 2 consecutive checks')."""
    fired = DriftSummary(drift=True, report="june", signals={"reference_roc_auc": 0.70, "estimated_roc_auc": 0.6,
                                                             "estimated_diff": -0.1})
    never = decide([], drifted(0), T0, RetrainPolicy(mode="never"))
    policy = performance("estimated").model_copy(update={"debounce": 2})
    june = decide([never], fired, T0 + 60 * DAY, policy)
    assert never.drift is True and never.fired is None
    assert not june.retrain and june.code == DEBOUNCE and "trigger in 1 consecutive check(s)" in june.reason

    # A drift-mode check that drifted, or a performance check without evidence, is no fired trigger either.
    drift_check = decide([], drifted(0), T0, RetrainPolicy(mode="drift", debounce=3))
    no_evidence = decide([], DriftSummary(drift=True, report="r"), T0, performance("estimated"))
    assert drift_check.drift is True and no_evidence.code == NO_VERDICT and no_evidence.drift is True
    for earlier in (drift_check, no_evidence):
        assert decide([earlier], fired, T0 + DAY, policy).code == DEBOUNCE
    # Performance checks whose triggers fired do count, and so the second one retrains.
    first = decide([never], fired, T0 + 30 * DAY, policy)
    assert decide([never, first], fired, T0 + 60 * DAY, policy).code == RETRAIN_SIGNAL


def test_a_performance_streak_does_not_carry_into_drift_mode():
    hot = DriftSummary(drift=True, report="r", signals={"reference_roc_auc": 0.70, "estimated_roc_auc": 0.6,
                                                        "estimated_diff": -0.1})
    performance_check = decide([], hot, T0, performance("estimated").model_copy(update={"debounce": 2}))
    assert performance_check.code == DEBOUNCE and performance_check.fired is True
    drift_policy = RetrainPolicy(mode="drift", debounce=2, cooldown="0d", max_retrains=None)
    assert decide([performance_check], drifted(1), T0 + DAY, drift_policy).code == DEBOUNCE
