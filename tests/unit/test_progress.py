"""Progress of long steps: which mode is chosen, what each mode writes, nesting, and the xgboost
callback and pipeline-task display built on it."""

from __future__ import annotations

import io
import logging
import re

import numpy as np
import pytest

from kfops import progress as progress_module
from kfops.errors import ConfigError
from kfops.progress import PLAIN_LINE, progress, resolve_mode, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def quiet_logger():
    """A logger with no handlers, so plain lines go to the stream as they do from the CLI."""
    logger = logging.getLogger("tests.progress.quiet")
    logger.propagate = False
    return logger


@pytest.fixture(autouse=True)
def no_progress_env(monkeypatch):
    monkeypatch.delenv(progress_module.ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)


def test_mode_follows_the_terminal_ci_and_the_override(monkeypatch):
    assert resolve_mode(stream=Terminal()) == "rich"
    assert resolve_mode(stream=io.StringIO()) == "plain"  # piped, or a KFP pod's log
    monkeypatch.setenv("CI", "true")
    assert resolve_mode(stream=Terminal()) == "plain"
    for value in ("rich", "plain", "off", "OFF "):
        monkeypatch.setenv(progress_module.ENV, value)
        assert resolve_mode(stream=io.StringIO()) == value.strip().lower()
    monkeypatch.setenv(progress_module.ENV, "auto")
    assert resolve_mode(stream=io.StringIO()) == "plain"
    monkeypatch.setenv(progress_module.ENV, "fancy")
    with pytest.raises(ConfigError, match="KFOPS_PROGRESS='fancy'") as err:
        resolve_mode()
    assert "plain" in err.value.hint


def test_plain_writes_one_line_per_step_with_counts(quiet_logger):
    stream = io.StringIO()
    with progress("backtest", total=3, unit="month", every=1, mode="plain", stream=stream,
                  logger=quiet_logger) as bar:
        for month in ("2013-02", "2013-03", "2013-04"):
            bar.advance(message=f"drift {month}: AUC 0.7")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("backtest: 1/3 months (33%, ") and lines[0].endswith("drift 2013-02: AUC 0.7")
    assert "left)" in lines[1]  # an estimate while months remain
    assert lines[2].startswith("backtest: 3/3 months (100%, ") and "left" not in lines[2]
    assert all(PLAIN_LINE.search(line) for line in lines)  # what `kfops run` relays from a task's log


def test_plain_reports_about_every_tenth_and_how_it_ended(quiet_logger):
    stream = io.StringIO()
    with progress("xgboost: boosting", total=95, unit="round", mode="plain", stream=stream, logger=quiet_logger) as bar:
        for _ in range(47):
            bar.advance(message="validation auc 0.7")
        bar.finish("early stopping: best round 40")
    lines = stream.getvalue().splitlines()
    counts = [int(re.search(r": (\d+)/95 rounds", line).group(1)) for line in lines]
    assert counts == [10, 20, 30, 40, 47]  # every ceil(95 / 10) rounds, then where it stopped
    assert lines[-1].endswith("early stopping: best round 40")


def test_plain_goes_to_logging_when_logging_shows_it(caplog):
    caplog.set_level(logging.INFO, logger="kfops.progress")
    stream = io.StringIO()
    for _ in track(range(2), "validate", unit="table", mode="plain", stream=stream):
        pass
    assert stream.getvalue() == ""
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["validate: 1/2 tables", "validate: 2/2 tables"]


def test_off_writes_nothing(caplog, quiet_logger):
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    with progress("backtest", total=2, unit="month", every=1, mode="off", stream=stream) as bar:
        bar.note("a note")
        with progress("inner", total=2, mode="plain", stream=stream) as inner:  # the outer mode wins
            inner.advance(2)
        bar.advance(2, message="done")
    assert stream.getvalue() == "" and not caplog.records


def test_rich_draws_a_bar_and_keeps_the_step_lines_on_a_console():
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    with progress("backtest", total=2, unit="month", every=1, mode="rich", console=console) as bar:
        with progress("torch: training", total=3, unit="epoch") as inner:  # a second bar, no lines
            for _ in range(3):
                inner.advance(message="validation_auc=0.7")
        bar.advance(message="drift 2013-02: AUC 0.70")
        bar.advance(message="drift 2013-03: AUC 0.71")
    text = out.getvalue()
    assert "  drift 2013-02: AUC 0.70\n" in text and "  drift 2013-03: AUC 0.71\n" in text
    assert re.search(r"backtest .*2/2 months", text)
    assert "validation_auc=0.7\n" not in text  # the nested bar's messages are not printed as lines


def test_nested_plain_progress_logs_at_debug_only(caplog, quiet_logger):
    caplog.set_level(logging.DEBUG, logger="kfops.progress")
    stream = io.StringIO()
    with progress("backtest", total=1, unit="month", mode="plain", stream=stream, logger=quiet_logger) as bar:
        with progress("xgboost: boosting", total=20, unit="round") as inner:
            inner.advance(20)
        bar.advance(message="drift 2013-02")
    assert stream.getvalue().count("\n") == 1 and "backtest: 1/1 month " in stream.getvalue()
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}


def test_xgboost_reports_boosting_rounds(quiet_logger):
    import xgboost as xgb

    from kfops.training.xgb import progress_callback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    data = xgb.DMatrix(x, label=(x[:, 0] + rng.normal(0, 0.5, 400) > 0).astype(int))
    stream = io.StringIO()
    with progress("xgboost: boosting", total=20, unit="round", mode="plain", stream=stream,
                  logger=quiet_logger) as bar:
        xgb.train({"objective": "binary:logistic", "eval_metric": "auc", "nthread": 1}, data, num_boost_round=20,
                  evals=[(data, "validation")], verbose_eval=False, callbacks=[progress_callback(bar)])
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"xgboost: boosting: {n}/20 rounds" for n in range(2, 21, 2)]
    assert re.search(r"validation auc 0\.\d{4}$", lines[-1])


def test_pipeline_tasks_are_plain_lines_when_piped(capsys, caplog, monkeypatch):
    from kfops.cli import task_progress
    from kfops.runners.local import TaskEvent

    monkeypatch.setenv(progress_module.ENV, "plain")
    # Even when logging shows INFO: kfp.local logs into the stream this display reads, so
    # logging these lines would feed them back to it without end.
    caplog.set_level(logging.INFO)
    with task_progress("training") as display:
        display.task(TaskEvent("ingest", "started"))
        display.line("ingest: snapshot: 1/4 tables (25%, 0.2s, ~0.6s left) flights")
        display.task(TaskEvent("ingest", "finished", 1.25))
        display.task(TaskEvent("register", "finished"))
        display.task(TaskEvent("deploy", "failed", 0.5))
    assert capsys.readouterr().out == (
        "  task 'ingest' started\n"
        "  ingest: snapshot: 1/4 tables (25%, 0.2s, ~0.6s left) flights\n"
        "  task 'ingest' finished in 1.2s\n"
        "  task 'register' finished\n"
        "  task 'deploy' failed after 0.5s\n"
    )
    assert not caplog.records


def test_a_local_run_relays_its_tasks_progress_lines():
    from kfops.runners.local import _ProgressTee

    seen: list[str] = []
    tee = _ProgressTee(io.StringIO(), seen.append)
    tee.write("[KFP Executor 2026-01-01 10:00:00,123 INFO]: torch: training: 2/10 epochs (20%, 3.1s, ~12.4s left) "
              "validation_auc=0.7100\nsome other log line\n"
              # kfp.local's own task lines are not relayed: the task events come from the run folder
              "11:00:00.000 - INFO - Executing task \x1b[96m'train'\x1b[0m\n"
              "11:00:09.000 - INFO - Task \x1b[96m'train'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n"
              # an exit handler's executor input, dumped as JSON into the log after a task failed
              '                    "state": "FAILED",\n')
    assert seen == ["torch: training: 2/10 epochs (20%, 3.1s, ~12.4s left) validation_auc=0.7100"]


def fake_task(run_dir, task, finished, mtime=None):
    """A task folder as kfp.local leaves it: outputs, and executor_output.json once the task returned."""
    import os

    folder = run_dir / task
    folder.mkdir(parents=True, exist_ok=True)
    if finished:
        output = folder / "executor_output.json"
        output.write_text("{}")
        if mtime is not None:
            os.utime(output, (mtime, mtime))


def test_task_progress_comes_from_the_run_folder(tmp_path):
    from kfops.runners.local import RunWatcher

    root = tmp_path / "pipeline_root"
    (root / "kfops-training-2026-01-01-09-00-00-000000" / "ingest").mkdir(parents=True)  # an earlier run
    names: list[str] = []
    events = []
    watcher = RunWatcher(root, lambda: names[0] if names else None, events.append)
    watcher.poll()
    assert events == [] and watcher.run_dir is None

    # Another process's run of the same pipeline started just before this one, on the same root:
    # its folder is older and already has a task, but it is not this run.
    fake_task(root / "kfops-training-2026-01-01-10-00-00-100000", "ingest", finished=True)
    names.append("kfops-training-2026-01-01-10-00-00-123456")  # the name kfp.local gave this run
    watcher.poll()
    assert events == [] and watcher.run_dir is None  # its folder is not there yet
    run = root / "kfops-training-2026-01-01-10-00-00-123456"
    fake_task(run, "ingest", finished=False)
    watcher.poll()
    assert watcher.run_dir == run
    fake_task(run, "ingest", finished=True, mtime=1000)
    # Between two looks: validate ran whole, a return-only task (no folder till the end) finished
    # after it, and featurize started.
    fake_task(run, "validate", finished=True, mtime=1001)
    fake_task(run, "register", finished=True, mtime=1002)
    fake_task(run, "featurize", finished=False)
    watcher.poll()
    watcher.poll()  # nothing new: nothing reported twice
    assert [(e.task, e.state) for e in events] == [
        ("ingest", "started"), ("ingest", "finished"), ("validate", "finished"), ("register", "finished"),
        ("featurize", "started"),
    ]
    assert events[1].seconds is not None and events[2].seconds is None
    assert str(events[0]) == "task 'ingest' started" and str(events[2]) == "task 'validate' finished"
    # The run stops here: featurize started and never wrote its executor output, so it failed.
    assert watcher.running() == ["featurize"]


def test_the_watcher_thread_reports_tasks_while_the_run_lasts(tmp_path):
    import time

    from kfops.runners.local import RunWatcher

    root = tmp_path / "pipeline_root"
    root.mkdir()
    events = []
    watcher = RunWatcher(root, lambda: "tiny-2026-01-01-10-00-00-000000", events.append, interval_s=0.01).start()
    try:
        run = root / "tiny-2026-01-01-10-00-00-000000"
        fake_task(run, "make", finished=False)
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(e.task, e.state) for e in events] == [("make", "started")]
        fake_task(run, "make", finished=True)
    finally:
        watcher.stop()  # a last look: the last output lands as the run returns
    assert [(e.task, e.state) for e in events] == [("make", "started"), ("make", "finished")]
    assert watcher.running() == []


def test_run_logs_have_unique_names_that_sort_by_start_time(tmp_path):
    import datetime as dt
    import os

    from kfops.runners.local import run_log_path

    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 678)
    first = run_log_path(tmp_path, "training", moment)
    assert first.name.startswith(f"training-20260102-030405-000678-{os.getpid()}-") and first.suffix == ".log"
    assert run_log_path(tmp_path, "training", moment) != first  # same process, same microsecond: a random part
    later = [run_log_path(tmp_path, "training", moment + dt.timedelta(microseconds=step)) for step in (1, 999_999, 10**7)]
    assert sorted([*later, first], key=lambda p: p.name) == [first, *later]


def test_ingest_reports_each_table_of_the_snapshot(tmp_path, monkeypatch, capsys):
    from kfops.config import load_config
    from kfops.steps.ingest import ingest

    monkeypatch.setenv(progress_module.ENV, "plain")
    cfg = load_config(None, [f"data_dir={tmp_path}", "dataset.start=2013-01-01", "dataset.end=2013-01-01"],
                      environ={})
    manifest = ingest(cfg, tmp_path / "raw")
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.startswith("ingest: snapshot")]
    assert len(lines) == len(manifest["rows"]) == 4
    assert lines[-1].startswith("ingest: snapshot: 4/4 tables (100%")
    assert f"flights: {manifest['rows']['flights']:,} rows" in "\n".join(lines)
