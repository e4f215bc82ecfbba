"""The retrain history a drift check shares with the next: what it refuses, and how it reads."""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import replace

import pytest

from kfops.adapters.state_store import LocalStateStore
from kfops.core.retrain_policy import (
    ABANDONED,
    COMPLETED,
    COOLDOWN,
    FAILED,
    IN_PROGRESS,
    PENDING,
    PENDING_LEASE,
    Attempt,
    DriftSummary,
    PolicyState,
    RetrainPolicy,
    decide,
    decide_and_record_in,
    load_state,
    record_outcome,
)
from kfops.errors import DataError
from tests.support.example import example_config

T0 = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)
STATE = "retrain_policy.json"


def _decision(**fields) -> dict:
    return {"at": T0.isoformat(), "retrain": False, "reason": "no drift", "drift_report": None, **fields}


@pytest.mark.parametrize("text, what", [
    ("[1]", "holds a JSON list, not an object"),
    ('"retrain"', "holds a JSON str, not an object"),
    ('{"kind": "kfops.retrain.state", "version": 1, "decisions": {}}', "no decision list"),
    ('{"kind": "kfops.retrain.state", "version": 1, "decisions": [null]}', "decision #0 is malformed"),
    (json.dumps({"version": 1, "decisions": [_decision(), _decision(signals=[1])]}), "decision #1 is malformed"),
    (json.dumps({"version": 1, "decisions": [_decision(at=5)]}), "decision #0 is malformed"),
], ids=["list", "string", "decisions-object", "null-decision", "signals-list", "numeric-time"])
def test_a_state_of_the_wrong_shape_is_a_data_error_naming_the_file_and_the_fix(tmp_path, text, what):
    path = tmp_path / STATE
    path.write_text(text)
    store = LocalStateStore(tmp_path)
    policy = RetrainPolicy(mode="drift", debounce=1)
    readers = {
        "load": lambda: PolicyState.load(path),
        "store": lambda: load_state(store, STATE),
        "decide": lambda: decide_and_record_in(store, STATE, DriftSummary(drift=True), T0, policy),
    }
    for name, read in readers.items():
        with pytest.raises(DataError) as raised:
            read()
        message = str(raised.value)
        assert str(path) in message and what in message, (name, message)
        assert "move it away to start a new history" in (raised.value.hint or ""), name
    assert path.read_text() == text  # refused, not overwritten


def test_the_drift_steps_evidence_record_reads_a_misshapen_state_as_a_data_error(tmp_path):
    """The drift step reads past evidence before it decides: '[1]' was an AttributeError there."""
    from kfops.steps.drift_check import POLICY_STATE_FILE, past_signals

    cfg = example_config(data_dir=str(tmp_path))
    (tmp_path / POLICY_STATE_FILE).write_text("[1]")
    with pytest.raises(DataError, match=f"{tmp_path / POLICY_STATE_FILE} is not a kfops retrain history"):
        past_signals(cfg)


def test_an_empty_store_is_an_empty_history(tmp_path):
    assert load_state(LocalStateStore(tmp_path), STATE).decisions == []


def _retrained(store, when, policy):
    return decide_and_record_in(store, STATE, DriftSummary(drift=True, report="other"), when, policy)


def test_a_check_that_started_first_and_finishes_last_decides_on_the_others_decision(tmp_path):
    """Check A reads the time and starts its slow work; B starts later, finishes first and
    retrains. A used to decide at its start time and crash ('a decision at <t2>, after now
    (<t1>)'); now it decides as it records, on the history holding B's retrain."""
    store = LocalStateStore(tmp_path)
    policy = RetrainPolicy(mode="drift", debounce=1, cooldown="7d")
    a_started = dt.datetime.now(dt.UTC)
    b = _retrained(store, a_started + dt.timedelta(seconds=30), policy)  # B's clock is a little ahead
    assert b.retrain
    a = decide_and_record_in(store, STATE, DriftSummary(drift=True, report="mine"), None, policy)
    assert not a.retrain and a.code == "cooldown" and a.at >= b.at
    history = load_state(store, STATE).decisions
    assert [d.drift_report for d in history] == ["other", "mine"] and history[0].at <= history[1].at


def test_a_decision_far_in_the_future_is_still_refused(tmp_path):
    store = LocalStateStore(tmp_path)
    policy = RetrainPolicy(mode="drift", debounce=1)
    _retrained(store, dt.datetime.now(dt.UTC) + dt.timedelta(days=2), policy)
    with pytest.raises(DataError, match="after this machine's clock") as raised:
        decide_and_record_in(store, STATE, DriftSummary(drift=True), None, policy)
    assert str(tmp_path / STATE) in str(raised.value) and "NTP" in (raised.value.hint or "")
    # A check time given explicitly is a replay: it must still be later than the history.
    with pytest.raises(DataError, match="after now"):
        decide_and_record_in(store, STATE, DriftSummary(drift=True), T0, policy)


# A retrain counts only once it produced a result.

def _attempt(run: str, alive: bool | None = True) -> Attempt:
    return Attempt(run, owner=f"host/1/{run}", alive=lambda owner: alive)


def _check(store, day: float, policy, attempt=None, report=None):
    summary = DriftSummary(drift=True, report=report or f"day{day}")
    return decide_and_record_in(store, STATE, summary, T0 + dt.timedelta(days=day), policy, attempt)


POLICY = RetrainPolicy(mode="drift", debounce=1, cooldown="7d", max_retrains=4, period="30d")


def test_a_retrain_stays_pending_until_its_training_reports_back(tmp_path):
    store = LocalStateStore(tmp_path)
    first = _check(store, 0, POLICY, _attempt("run-1"))
    assert first.retrain and first.outcome == PENDING and first.pipeline_run == "run-1"
    # While it is pending no other check retrains, whatever the cooldown says.
    hurried = RetrainPolicy(mode="drift", debounce=1, cooldown="0s", max_retrains=None)
    blocked = _check(store, 0.01, hurried, _attempt("run-2"))
    assert not blocked.retrain and blocked.code == IN_PROGRESS and "pipeline run run-1" in blocked.reason

    done = record_outcome(store, STATE, "run-1", succeeded=True, note="ended SUCCEEDED")
    assert done is not None and done.outcome == COMPLETED and done.outcome_at is not None
    assert _check(store, 1, POLICY, _attempt("run-3")).code == COOLDOWN  # a completed retrain counts
    assert record_outcome(store, STATE, "run-2", succeeded=False) is None  # run-2 decided no retrain
    assert record_outcome(store, STATE, "", succeeded=False) is None


def test_a_failed_retrain_uses_up_neither_the_cooldown_nor_the_budget(tmp_path):
    store = LocalStateStore(tmp_path)
    capped = RetrainPolicy(mode="drift", debounce=2, cooldown="7d", max_retrains=1, period="30d")
    _check(store, 0, capped, _attempt("run-0"))
    failed = _check(store, 1, capped, _attempt("run-1"))
    assert failed.retrain and failed.outcome == PENDING
    record_outcome(store, STATE, "run-1", succeeded=False, note="pipeline run run-1 ended FAILED: train failed")
    # The next check retrains: no cooldown, no spent budget, and the drift streak still holds.
    again = _check(store, 2, capped, _attempt("run-2"))
    assert again.retrain and again.code == "drift_confirmed", again.reason
    history = load_state(store, STATE).decisions
    assert history[1].outcome == FAILED and "train failed" in history[1].outcome_note
    assert PolicyState(history[:2]).last_retrain is None


def test_an_interrupted_retrain_whose_processes_are_gone_does_not_hold_the_next_check(tmp_path):
    """Ctrl-C during the nested training: no task reports back. The next check on the same machine
    sees the run's process group gone and marks the retrain abandoned."""
    store = LocalStateStore(tmp_path)
    _check(store, 0, POLICY, _attempt("run-1"))
    still_running = _check(store, 0.01, POLICY, _attempt("run-2", alive=True))
    assert still_running.code == IN_PROGRESS
    cannot_tell = _check(store, 0.02, POLICY, _attempt("run-3", alive=None))  # another pod: the lease judges
    assert cannot_tell.code == IN_PROGRESS
    after_ctrl_c = _check(store, 0.03, POLICY, _attempt("run-4", alive=False))
    assert after_ctrl_c.retrain and after_ctrl_c.outcome == PENDING
    first = load_state(store, STATE).decisions[0]
    assert first.outcome == ABANDONED and "interrupted or killed" in first.outcome_note
    # It might have finished after all (its processes outlived the check's view): then it counts again.
    assert record_outcome(store, STATE, "run-1", succeeded=True).outcome == COMPLETED


def test_a_pending_retrain_that_never_reports_back_lapses_after_the_lease():
    policy = RetrainPolicy(mode="drift", debounce=1, cooldown="7d", max_retrains=None)
    pending = replace(decide([], DriftSummary(drift=True, report="r"), T0, policy), outcome=PENDING,
                      pipeline_run="run-1")
    within = decide([pending], DriftSummary(drift=True, report="r"), T0 + PENDING_LEASE / 2, policy)
    assert within.code == IN_PROGRESS and (T0 + PENDING_LEASE).isoformat() in within.reason
    after = decide([pending], DriftSummary(drift=True, report="r"), T0 + PENDING_LEASE, policy)
    assert after.retrain
    # A retrain without an outcome (the backtest, older state files) counts as done.
    legacy = replace(pending, outcome=None)
    assert decide([legacy], DriftSummary(drift=True, report="r"), T0 + PENDING_LEASE, policy).code == COOLDOWN



def test_a_longer_retrain_timeout_holds_a_long_training_in_progress():
    """A training that takes longer than a day (DDP on a large window) is not taken for abandoned,
    and a second retrain does not start beside it, when `retrain.retrain_timeout` says so."""
    import datetime as dt

    policy = RetrainPolicy(mode="drift", debounce=1, cooldown="1h", max_retrains=None, retrain_timeout="48h")
    pending = replace(decide([], DriftSummary(drift=True, report="r"), T0, policy), outcome=PENDING,
                      pipeline_run="run-1")
    at_30h = decide([pending], DriftSummary(drift=True, report="r"), T0 + dt.timedelta(hours=30), policy)
    assert at_30h.code == IN_PROGRESS and (T0 + dt.timedelta(hours=48)).isoformat() in at_30h.reason
    assert "retrain.retrain_timeout" in at_30h.reason
    assert decide([pending], DriftSummary(drift=True, report="r"), T0 + dt.timedelta(hours=48), policy).retrain
    default = policy.model_copy(update={"retrain_timeout": PENDING_LEASE})
    assert decide([pending], DriftSummary(drift=True, report="r"), T0 + dt.timedelta(hours=30), default).retrain


@pytest.mark.parametrize("value", ["0s", "-1h", 48])
def test_a_retrain_timeout_must_be_a_positive_duration(value):
    with pytest.raises(ValueError, match="retrain_timeout"):
        RetrainPolicy(retrain_timeout=value)

def test_outcomes_survive_the_state_file(tmp_path):
    store = LocalStateStore(tmp_path)
    _check(store, 0, POLICY, _attempt("run-1"))
    record_outcome(store, STATE, "run-1", succeeded=True, note="ok")
    raw = json.loads((tmp_path / STATE).read_text())["decisions"][0]
    assert (raw["outcome"], raw["pipeline_run"], raw["owner"], raw["outcome_note"]) == (COMPLETED, "run-1",
                                                                                         "host/1/run-1", "ok")
    raw["outcome"] = "exploded"
    (tmp_path / STATE).write_text(json.dumps({"version": 1, "decisions": [raw]}))
    with pytest.raises(DataError, match="unknown retrain outcome 'exploded'"):
        load_state(store, STATE)


def test_two_checks_at_once_still_never_both_retrain(tmp_path):
    """Pending retrains keep today's race protection: the loser of the conditional write decides
    again on a history holding the winner's pending retrain."""
    policy = RetrainPolicy(mode="drift", debounce=1, cooldown="0s", max_retrains=None)
    start = threading.Barrier(6)
    codes: list[str] = []

    def check(me: int) -> None:
        start.wait()
        codes.append(decide_and_record_in(LocalStateStore(tmp_path), STATE, DriftSummary(drift=True, report=f"r{me}"),
                                          None, policy, _attempt(f"run-{me}")).code)

    threads = [threading.Thread(target=check, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == ["drift_confirmed", *[IN_PROGRESS] * 5]


def test_the_run_owner_is_this_process_group_and_a_finished_group_is_gone():
    import os
    import subprocess
    import sys

    from kfops.steps.drift_check import owner_alive, run_owner

    mine = run_owner()
    assert mine is not None and mine.endswith(f"/{os.getpgid(0)}")
    assert owner_alive(mine) is True
    # A run in its own process group that ended (Ctrl-C takes the whole group).
    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    child.wait()
    where = mine.rpartition("/")[0]
    assert owner_alive(f"{where}/{child.pid}") is False
    assert owner_alive(f"another-host/1/{os.getpgid(0)}") is None  # a pod elsewhere: cannot tell


def test_the_exit_handler_records_a_failed_run(tmp_path, capsys):
    from kfops.adapters.state_store import state_store
    from kfops.steps.drift_check import POLICY_STATE_FILE, record_retrain_outcome

    cfg = example_config(data_dir=str(tmp_path))
    _check(state_store(cfg), 0, POLICY, _attempt("kfops-retraining-1"))
    assert record_retrain_outcome(cfg, "kfops-retraining-2", "SUCCEEDED") == "none"
    assert record_retrain_outcome(cfg, "kfops-retraining-1", "FAILED", "Task exit-handler-1 failed.") == FAILED
    decision = load_state(state_store(cfg), POLICY_STATE_FILE).decisions[0]
    assert decision.outcome == FAILED and "ended FAILED: Task exit-handler-1 failed." in decision.outcome_note
    assert "is failed" in capsys.readouterr().out
