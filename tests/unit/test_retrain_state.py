"""The retrain history a drift check shares with the next: what it refuses, and how it reads."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from kfops.adapters.state_store import LocalStateStore
from kfops.core.retrain_policy import DriftSummary, PolicyState, RetrainPolicy, decide_and_record_in, load_state
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
