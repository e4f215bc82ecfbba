"""`run_locally` follows a real kfp.local run through its run folder: a tiny compiled pipeline
stands in for the kfops ones, so each run takes seconds, not minutes."""

# No `from __future__ import annotations`: kfp reads the components' annotations as types.
import pytest
from kfp import compiler, dsl
from kfp.dsl import Artifact, Output
from pydantic import SecretStr

from kfops.config import KfopsConfig
from kfops.errors import PipelineFailed
from kfops.runners import local

pytestmark = pytest.mark.integration
# As kfops' components: the kfp package of this environment, no pip install in the task.
component = dsl.component(base_image="python:3.11", install_kfp_package=False)


@component
def make(size: int, table: Output[Artifact]):
    import time

    time.sleep(0.5)  # long enough to be seen running
    with open(table.path, "w") as out:
        out.write("x" * size)


@component
def count(size: int) -> int:  # returns a value only: kfp.local gives it a folder when it finishes
    return size * 2


@component
def explode(table: Output[Artifact]):
    import time

    time.sleep(0.5)
    raise ValueError("planted failure in explode")


@component
def explode_quietly(size: int) -> int:
    raise ValueError("planted failure with no output folder")


@component
def refuse(size: int) -> int:
    from kfops.errors import ServingError, install_hint_printer

    install_hint_printer()  # as every kfops step does (step_config)
    raise ServingError("127.0.0.1:8080 is already in use by another process",
                       hint="set serving.http_port (or --port), or stop whatever listens there")


@component
def holds_no_webhook(size: int) -> int:
    import os

    if "KFOPS__NOTIFY__WEBHOOK_URL" in os.environ:  # what the retraining exit handler would send to
        raise ValueError("the task was given notify.webhook_url")
    return size


@dsl.pipeline(name="tiny-ok")
def tiny_ok(size: int = 3):
    made = make(size=size)
    count(size=size).after(made)


@dsl.pipeline(name="tiny-boom")
def tiny_boom(size: int = 3):
    made = make(size=size)
    explode().after(made)


@dsl.pipeline(name="tiny-quiet-boom")
def tiny_quiet_boom(size: int = 3):
    made = make(size=size)
    explode_quietly(size=size).after(made)


@dsl.pipeline(name="tiny-webhook")
def tiny_webhook(size: int = 3):
    holds_no_webhook(size=size)


@dsl.pipeline(name="tiny-refused")
def tiny_refused(size: int = 3):
    refuse(size=size)


def _window_only():
    """The retraining pipeline's first task, fed as there: KFP's schedule-time placeholder."""
    from components.drift.component import run_window
    from tests.support.example import example_config

    config_json = example_config(validation={"window_timezone": "America/New_York"}).portable().to_json()

    @dsl.pipeline(name="window-only")
    def window_only(window_days: int = 7):
        run_window(config=config_json, window_days=window_days,
                   schedule_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER)

    return window_only


PIPELINES = {"ok": tiny_ok, "boom": tiny_boom, "quiet": tiny_quiet_boom, "refused": tiny_refused, "webhook": tiny_webhook,
             "window": _window_only}


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    def compile_tiny(cfg, name, output):
        output.parent.mkdir(parents=True, exist_ok=True)
        pipeline = PIPELINES[name]
        compiler.Compiler().compile(pipeline() if pipeline is _window_only else pipeline, str(output))
        return output

    monkeypatch.setattr(local, "compile_pipeline", compile_tiny)
    monkeypatch.setattr(local, "POLL_S", 0.02)
    return KfopsConfig(data_dir=tmp_path / "state").resolve(tmp_path)


def run(cfg, name):
    events, lines = [], []
    try:
        result = local.run_locally(cfg, name, on_event=lines.append, on_task=events.append)
    except PipelineFailed as err:
        return err, events, lines
    return result, events, lines


def test_tasks_are_reported_from_the_run_folder(cfg):
    result, events, _ = run(cfg, "ok")
    assert [(e.task, e.state) for e in events] == [("make", "started"), ("make", "finished"), ("count", "finished")]
    assert result.run_dir.parent == cfg.pipeline_root and result.run_dir.name.startswith("tiny-ok-")
    assert result.outputs["count"]["Output"] == 6
    assert "kfops: task 'make' finished in" in result.log_path.read_text()


def test_the_run_time_placeholders_kfp_local_cannot_fill_are_filled_with_the_runs_start(cfg):
    """kfp.local (2.17) fails on `{{$.pipeline_job_schedule_time_utc}}` (IndexError in its
    placeholder code): the local runner fills it with the run's start, as KFP's driver fills a
    one-off run's, and the window task moves the window from it."""
    import datetime as dt
    import json

    from kfops.core.windows import window_before
    from tests.support.example import example_config

    expected = example_config(validation={"window_timezone": "America/New_York"})
    before = window_before(expected, 7, dt.datetime.now(dt.UTC)).window
    result, _, _ = run(cfg, "window")
    after = window_before(expected, 7, dt.datetime.now(dt.UTC)).window
    assert not isinstance(result, PipelineFailed), result
    moved = json.loads(result.outputs["run-window"]["Output"])["dataset"]
    assert (dt.date.fromisoformat(moved["start"]), dt.date.fromisoformat(moved["end"])) in {before, after}
    # The compiled YAML kept for the run is the cluster's, placeholder and all.
    assert "{{$.pipeline_job_schedule_time_utc}}" in (cfg.data_dir / "compiled" / "window.yaml").read_text()


def test_the_failed_task_is_the_one_without_an_executor_output(cfg):
    failure, events, _ = run(cfg, "boom")
    assert isinstance(failure, PipelineFailed)
    assert [(e.task, e.state) for e in events] == [
        ("make", "started"), ("make", "finished"), ("explode", "started"), ("explode", "failed")]
    message = str(failure)
    assert message.startswith("pipeline 'boom' failed in task 'explode': ValueError: planted failure in explode")
    assert "full log:" in failure.hint


def test_a_tasks_own_hint_reaches_the_run_error(cfg):
    """The task's fix ("set serving.http_port ...") was replaced by "full log: ..." on screen."""
    failure, _, lines = run(cfg, "refused")
    assert "in task 'refuse': ServingError: 127.0.0.1:8080 is already in use" in str(failure)
    assert not any("Traceback" in line for line in lines)  # a lone first line of the task's traceback said nothing
    assert failure.hint.startswith("set serving.http_port (or --port), or stop whatever listens there; full log: ")


def test_a_task_that_failed_before_writing_anything_is_named_by_kfp_local(cfg):
    failure, events, _ = run(cfg, "quiet")
    assert [(e.task, e.state) for e in events][-1] == ("explode-quietly", "failed")
    assert "in task 'explode-quietly': ValueError: planted failure with no output folder" in str(failure)


def test_each_run_keeps_its_own_log_and_logs_sort_by_start(cfg):
    first, _, _ = run(cfg, "ok")
    second, _, _ = run(cfg, "ok")
    assert first.log_path != second.log_path and first.log_path.is_file() and second.log_path.is_file()
    assert sorted(p.name for p in first.log_path.parent.iterdir()) == [first.log_path.name, second.log_path.name]


@pytest.mark.parametrize("name", ["ok", "boom"])
def test_a_run_lets_old_runs_go_as_retention_says_and_keeps_its_own(cfg, name):
    """Each local run (a scheduled one too) ends with the config's retention, finished or failed."""
    import os
    import time

    old_stamp = time.time() - 100 * 86400
    old = []
    for i in range(4):
        folder = cfg.pipeline_root / f"tiny-ok-old-{i}"
        (folder / "make").mkdir(parents=True)
        (folder / "make" / "table").write_text("x" * 10)
        for path in (folder / "make" / "table", folder / "make", folder):
            os.utime(path, (old_stamp - i, old_stamp - i))
        old.append(folder)
    result, _, lines = run(cfg, name)
    run_dir = result.run_dir if name == "ok" else next(p for p in cfg.pipeline_root.iterdir() if "boom" in p.name)
    assert run_dir.is_dir() and old[0].is_dir() and old[1].is_dir()  # the 3 newest: this run and two old ones
    assert not old[2].exists() and not old[3].exists()
    assert any(line.startswith("kfops: retention removed 2 run folder(s)") for line in lines), lines


def test_each_run_leaves_a_record_that_kfops_runs_reads_without_a_cluster(cfg, capsys):
    """`kfops runs list|get` on the embedded default: the local runs, their state and what failed."""
    from kfops.cli import main
    from kfops.runners.run_records import read_records

    ok, _, _ = run(cfg, "ok")
    failure, _, _ = run(cfg, "boom")
    records = read_records(cfg)
    assert [r["pipeline"] for r in records] == ["boom", "ok"]  # newest first
    boom, done = records
    assert done["state"] == "succeeded" and done["run_dir"] == str(ok.run_dir) and done["seconds"] >= 0
    assert done["log"] == str(ok.log_path) and done["id"] == ok.log_path.stem and done["ended_at"]
    assert boom["state"] == "failed" and boom["failed_task"] == "explode"
    assert "planted failure in explode" in boom["error"] and boom["error"] == str(failure)
    assert boom["run_name"] and boom["run_name"].startswith("tiny-boom-")

    options = ["--set", f"data_dir={cfg.data_dir}"]
    main(["runs", "list", *options])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[boom["id"], "failed"], [done["id"], "succeeded"]]
    assert lines[0].endswith("pipeline 'boom' failed in task 'explode': ValueError: planted failure in explode")
    main(["runs", "get", boom["run_name"], *options])  # by kfp.local's run name too
    shown = capsys.readouterr().out
    assert f"id           {boom['id']}" in shown and "state        failed" in shown


def test_a_failed_local_run_is_sent_to_the_notify_webhook(cfg):
    """The run's end reaches notify.webhook_url as the run's own record says it (a real HTTP server)."""
    from tests.unit.test_notifications import Hook

    hook = Hook()
    try:
        notifying = cfg.model_copy(update={"notify": cfg.notify.model_copy(update={"webhook_url": SecretStr(hook.url)})})
        failure, _, lines = run(notifying, "boom")
        _, _, ok_lines = run(notifying, "ok")  # finished, decided nothing: no message
    finally:
        hook.close()
    (body,) = hook.bodies
    assert body["kfops"]["events"] == ["failed"] and body["kfops"]["failed_task"] == "explode"
    assert body["text"].endswith(str(failure)) and "kfops: notified the webhook: failed" in lines
    assert not any("notif" in line for line in ok_lines)


def test_the_tasks_of_a_local_run_do_not_get_the_webhook_the_runner_notifies_with(cfg, monkeypatch):
    """A local retraining run that failed was told twice: by its exit-handler task (which holds
    notify.webhook_url on a cluster) and by the runner. Locally only the runner holds it."""
    import os

    from tests.unit.test_notifications import Hook

    hook = Hook()
    try:
        monkeypatch.setenv("KFOPS__NOTIFY__WEBHOOK_URL", hook.url)
        notifying = cfg.with_secrets()
        assert notifying.notify.webhook_url.get_secret_value() == hook.url
        result, _, _ = run(notifying, "webhook")
    finally:
        hook.close()
    assert not isinstance(result, PipelineFailed), result
    assert result.outputs["holds-no-webhook"]["Output"] == 3
    assert os.environ["KFOPS__NOTIFY__WEBHOOK_URL"] == hook.url  # the runner's own environment is as it was
    assert hook.bodies == []  # it succeeded and decided nothing: nobody had anything to say
