"""The local scheduler (`kfops schedule retraining --local`): real time, a seconds-level cron, a run
function that starts a real subprocess, and the JSON-lines decision log."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from kfops.core.windows import moving_window
from kfops.errors import ConfigError, PipelineFailed
from kfops.runners.local import LocalRun, RunInterrupted
from kfops.runners.run_records import run_decision
from kfops.runners.scheduler import default_run_function, run_scheduler
from tests.support.example import example_config

pytestmark = pytest.mark.integration

EVERY_SECOND = "* * * * * *"  # six fields: seconds first, as KFP writes them


def _events(log_path):
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def test_a_failed_run_is_logged_and_the_scheduler_goes_on(tmp_path):
    attempts = tmp_path / "attempts"

    def run_in_subprocess():
        # The child fails on its first attempt and succeeds afterwards (state kept in a file).
        script = ("import pathlib, sys; p = pathlib.Path(sys.argv[1]); n = int(p.read_text() or 0) if p.exists() "
                  "else 0; p.write_text(str(n + 1)); sys.exit(1 if n == 0 else 0)")
        done = subprocess.run([sys.executable, "-c", script, str(attempts)], check=False)
        if done.returncode != 0:
            raise PipelineFailed(f"retraining exited with {done.returncode}")
        return {"attempt": int(attempts.read_text())}

    result = run_scheduler(EVERY_SECOND, run_in_subprocess, tmp_path / "scheduler", max_runs=3)

    assert (result.runs, result.failures, result.stop_reason) == (3, 1, "max_runs")
    events = _events(result.log_path)
    assert result.log_path == tmp_path / "scheduler" / "retraining.jsonl"
    assert events == result.events
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "stopped"
    outcomes = [e for e in events if e["event"] in {"run_failed", "run_succeeded"}]
    assert [e["event"] for e in outcomes] == ["run_failed", "run_succeeded", "run_succeeded"]
    assert outcomes[0]["error_type"] == "PipelineFailed" and "exited with 1" in outcomes[0]["error"]
    assert [e["outcome"]["attempt"] for e in outcomes[1:]] == [2, 3]
    # Each run started at or after the time it was scheduled for.
    for event in events:
        if event["event"] == "run_started":
            assert dt.datetime.fromisoformat(event["at"]) >= dt.datetime.fromisoformat(event["due"])
    assert events[-1] == {**events[-1], "reason": "max_runs", "runs": 3, "failures": 1}


def test_an_unexpected_exception_is_logged_with_its_traceback(tmp_path):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("bad window")
        return "ok"

    result = run_scheduler(EVERY_SECOND, flaky, tmp_path, max_runs=2, name="nightly")
    failed = next(e for e in _events(tmp_path / "nightly.jsonl") if e["event"] == "run_failed")
    assert failed["error_type"] == "ValueError" and "bad window" in failed["traceback"]
    assert (result.runs, result.failures) == (2, 1)


def test_it_stops_at_max_seconds_when_the_next_time_is_later(tmp_path):
    def must_not_run():
        raise AssertionError("the yearly cron must not fire within one second")

    result = run_scheduler("0 0 1 1 *", must_not_run, tmp_path, max_seconds=1)
    assert (result.runs, result.stop_reason) == (0, "max_seconds")
    assert [e["event"] for e in _events(result.log_path)] == ["started", "stopped"]


def test_times_missed_during_a_long_run_are_skipped_not_caught_up(tmp_path):
    import time

    def slow():
        time.sleep(2.2)  # outlasts two ticks of the every-second cron

    result = run_scheduler(EVERY_SECOND, slow, tmp_path, max_runs=2)
    assert result.runs == 2 and result.skipped >= 2
    skipped = [e for e in _events(result.log_path) if e["event"] == "skipped"]
    assert skipped and skipped[0]["count"] >= 2


@pytest.mark.parametrize(("cron", "kwargs"), [("61 * * * *", {}), ("* * * * *", {"max_runs": 0}),
                                              ("* * * * *", {"max_seconds": -1}),
                                              ("0 0 30 2 *", {}), ("0 3 * * * * *", {})])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, cron, kwargs):
    """February 30 was logged `started`, then failed at the first tick with CroniterBadDateError."""
    with pytest.raises(ConfigError):
        run_scheduler(cron, lambda: None, tmp_path, **kwargs)
    assert not (tmp_path / "retraining.jsonl").exists()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), RunInterrupted("interrupted: pipeline 'retraining' "
                                                                             "stopped in task 'drift'")])
def test_ctrl_c_during_a_run_stops_the_scheduler(tmp_path, interrupt):
    """The run's task died of Ctrl-C and was logged as a failed run; runs 2 and 3 went ahead."""
    calls = []

    def interrupted():
        calls.append(1)
        raise interrupt

    result = run_scheduler(EVERY_SECOND, interrupted, tmp_path, max_runs=3)
    assert (len(calls), result.runs, result.failures, result.stop_reason) == (1, 1, 0, "interrupted")
    kinds = [e["event"] for e in _events(result.log_path)]
    assert kinds[-2:] == ["run_interrupted", "stopped"] and "run_failed" not in kinds


def _finished_run(tmp_path, retrain: bool, blessed: bool | None = None, registered: str | None = None) -> LocalRun:
    """A LocalRun with the task outputs a retraining run leaves (drift decision, gate verdict, version)."""
    run_dir = tmp_path / "kfops-retraining-run"
    (run_dir / "drift").mkdir(parents=True, exist_ok=True)
    decision = {"retrain": retrain, "code": "signal_confirmed" if retrain else "no_signal",
                "reason": "a shadow challenger passes the gate" if retrain else "no trigger fired",
                "drift": retrain, "triggered_by": ["challenger"] if retrain else []}
    (run_dir / "drift" / "decision").write_text(json.dumps(decision))
    outputs = {"drift": {"Output": retrain, "decision": str(run_dir / "drift" / "decision")}}
    if blessed is not None:
        (run_dir / "evaluate").mkdir()
        reasons = ["PASS floor:roc_auc: roc_auc=0.74 >= 0.65",
                   *([] if blessed else ["FAIL improvement:roc_auc: roc_auc gain over champion v1: -0.01"])]
        (run_dir / "evaluate" / "verdict").write_text(json.dumps({"blessed": blessed, "verdict": {"reasons": reasons}}))
        outputs["evaluate"] = {"Output": blessed, "verdict": str(run_dir / "evaluate" / "verdict")}
    if registered:
        outputs["register"] = {"Output": registered}
    return LocalRun(name="retraining", run_dir=run_dir, compiled=tmp_path / "r.yaml", log_path=tmp_path / "r.log",
                    seconds=2.0, outputs=outputs)


def test_each_run_logs_what_it_decided(tmp_path, monkeypatch):
    """Outcome lines held only run_dir, seconds and log: `drift=... -> RETRAIN` was on the console only."""
    from kfops.runners import local

    runs = iter([_finished_run(tmp_path / "1", retrain=False),
                 _finished_run(tmp_path / "2", retrain=True, blessed=True, registered="3"),
                 _finished_run(tmp_path / "3", retrain=True, blessed=False)])
    monkeypatch.setattr(local, "run_locally", lambda cfg, name, on_event=None: next(runs))
    cfg = example_config(data_dir=tmp_path / "state")
    result = run_scheduler(EVERY_SECOND, default_run_function(cfg), tmp_path, max_runs=3)
    decisions = [e["outcome"]["decision"] for e in _events(result.log_path) if e["event"] == "run_succeeded"]
    assert decisions == [
        {"retrain": False, "code": "no_signal", "reason": "no trigger fired", "drift": False, "triggered_by": []},
        {"retrain": True, "code": "signal_confirmed", "reason": "a shadow challenger passes the gate", "drift": True,
         "triggered_by": ["challenger"], "blessed": True, "failed_checks": [], "registered_version": "3"},
        {"retrain": True, "code": "signal_confirmed", "reason": "a shadow challenger passes the gate", "drift": True,
         "triggered_by": ["challenger"], "blessed": False,
         "failed_checks": ["improvement:roc_auc: roc_auc gain over champion v1: -0.01"]},
    ]


def test_a_training_run_logs_the_gate_and_a_run_without_outputs_logs_nothing_it_did_not_decide(tmp_path):
    trained = _finished_run(tmp_path, retrain=True, blessed=True, registered="2").outputs
    del trained["drift"]
    assert run_decision(trained) == {"blessed": True, "failed_checks": [], "registered_version": "2"}
    assert run_decision({}) == {}


def test_a_moving_window_is_the_whole_days_before_the_run_in_the_window_timezone(tmp_path, monkeypatch):
    """Every tick re-ran the config's fixed dataset.start..end: a nightly schedule never saw new data."""
    from kfops.runners import local

    assert moving_window(14, dt.date(2026, 3, 10)) == (dt.date(2026, 2, 24), dt.date(2026, 3, 9))
    assert moving_window(1, dt.date(2026, 3, 1)) == (dt.date(2026, 2, 28), dt.date(2026, 2, 28))
    with pytest.raises(ConfigError, match="a window of 0 days holds no day") as refused:
        moving_window(0, dt.date(2026, 3, 1))
    assert "--window-days" in refused.value.hint
    windows = []
    monkeypatch.setattr(local, "run_locally",
                        lambda cfg, name, on_event=None: windows.append(cfg.window) or _finished_run(tmp_path, False))
    cfg = example_config(data_dir=tmp_path / "state", validation={"window_timezone": "America/New_York"})
    clock = iter([dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC), dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC)])
    run = default_run_function(cfg, window_days=7, now=lambda: next(clock))
    first, second = run(), run()
    # 02:00 UTC is still March 9th in New York: its last whole day is the 8th.
    assert windows == [(dt.date(2026, 3, 2), dt.date(2026, 3, 8)), (dt.date(2026, 3, 3), dt.date(2026, 3, 9))]
    assert (first["window"], second["window"]) == (["2026-03-02", "2026-03-08"], ["2026-03-03", "2026-03-09"])
    assert cfg.window == example_config().window  # the config itself is untouched
