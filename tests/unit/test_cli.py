"""The CLI's contract with a person: one-line errors that name the problem, non-zero exits,
tracebacks only with --verbose."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.example import EXAMPLE_YAML, write_example_config

KFOPS = str(Path(sys.executable).with_name("kfops"))


def kfops(*args, cwd=None):
    return subprocess.run([KFOPS, *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_every_command():
    done = kfops("--help")
    assert done.returncode == 0
    for command in ("run", "compile", "validate", "promote", "rollback", "history", "lineage", "deploy", "status",
                    "ui", "drift", "features", "serve", "submit", "schedule", "doctor"):
        assert f"  {command}" in done.stdout, command


def _every_command():
    """(path, click command) for the root, every group and every leaf command, as `kfops` builds them."""
    import typer

    from kfops.cli import _register_subcommands, app
    from kfops.cli.options import accept_verbose

    _register_subcommands()
    accept_verbose(app)
    pending = [(("kfops",), typer.main.get_command(app))]
    while pending:
        path, command = pending.pop()
        yield " ".join(path), command
        pending.extend(((*path, name), sub) for name, sub in getattr(command, "commands", {}).items())


def test_every_command_help_has_examples():
    helped = {}
    for path, command in _every_command():
        ctx = command.make_context(path, ["--help"], resilient_parsing=True)
        helped[path] = command.get_help(ctx)
    assert {"kfops", "kfops backtest", "kfops drift check", "kfops config from-terraform", "kfops serve"} <= set(helped)
    assert len(helped) > 30
    missing = sorted(path for path, text in helped.items() if "Example" not in text)
    assert not missing, f"help without an Examples section: {missing}"
    lacking = sorted(path for path, text in helped.items()
                     if not any(line.strip().startswith(("kfops ", "terraform ")) for line in text.splitlines()))
    assert not lacking, f"Examples without an example command: {lacking}"


def test_unknown_config_key_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "kfops.yaml").write_text("train:\n  trainr: xgboost\n")
    done = kfops("run", "training", cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown key 'train.trainr'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 2  # message + hint


def test_a_config_without_a_dataset_names_every_missing_key_before_any_task(tmp_path):
    (tmp_path / "kfops.yaml").write_text(f"data_dir: {tmp_path / 'state'}\n")
    done = kfops("run", "training", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "required configuration missing: dataset.loader, dataset.entity_builder, dataset.row_id, " \
           "dataset.start, dataset.end, validation.tables" in done.stderr
    assert "Bring your own data" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "pipeline_root").exists()  # refused when the pipeline is built


def test_a_run_without_a_window_names_the_window_keys(tmp_path):
    write_example_config(tmp_path / "kfops.yaml", data_dir=str(tmp_path / "state"), dataset={"start": None})
    done = kfops("run", "training", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "required configuration missing: dataset.start" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "pipeline_root").exists()


def test_verbose_shows_the_traceback(tmp_path):
    (tmp_path / "kfops.yaml").write_text("bogus: 1\n")
    done = kfops("run", "training", "--verbose", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" in done.stderr


def test_usage_errors_show_clicks_usage_and_exit_2(tmp_path):
    """A missing or unknown option is a usage error (exit 2, docs/troubleshooting.md): click's usage
    line and message, no traceback, not an 'unexpected' error."""
    for args, message in ((("init", "x", "--entity", "a", "--label", "y = a > 1"), "Missing option '--table'"),
                          (("backtest", "--from", "2013-02", "--to", "2013-03", "--bogus"), "No such option: --bogus")):
        done = kfops(*args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert f"Usage: kfops {args[0]} [OPTIONS]" in done.stderr and message in done.stderr
        assert "unexpected" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


def test_every_command_takes_verbose_as_the_error_hints_say(tmp_path):
    done = kfops("backtest", "--verbose", "--from", "2013-13", "--to", "2014-01", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "month '2013-13' must look like YYYY-MM" in done.stderr and "Traceback" in done.stderr

    commands = [(path, command) for path, command in _every_command() if not hasattr(command, "commands")]
    assert len(commands) > 30
    lacking = [path for path, command in commands
               if not any("--verbose" in param.opts and "-v" in param.opts for param in command.params)]
    assert not lacking, f"commands without --verbose: {lacking}"


def test_bad_override_value_names_the_key(tmp_path):
    done = kfops("run", "training", "--set", "train.trainer=lightgbm", cwd=tmp_path)
    assert done.returncode == 2 and "train.trainer" in done.stderr


@pytest.mark.slow
def test_window_without_data_fails_in_one_line(tmp_path):
    done = kfops("run", "training", "--config", EXAMPLE_YAML, "--set", f"data_dir={tmp_path / 'state'}",
                 "--set", "dataset.start=2014-06-01",
                 "--set", "dataset.end=2014-06-30", cwd=tmp_path)
    assert done.returncode != 0
    assert "no flights between 2014-06-01 and 2014-06-30" in done.stderr
    assert "ingest" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_missing_input_table_fails_in_one_line(tmp_path):
    done = kfops("run", "training", "--config", EXAMPLE_YAML, "--set", f"data_dir={tmp_path / 'state'}", "--set",
                 f"dataset.source_dir={tmp_path / 'empty'}", cwd=tmp_path)
    assert done.returncode != 0
    assert "input table 'flights' not found" in done.stderr and "Traceback" not in done.stderr


def test_config_show_prints_the_effective_configuration_without_passwords(tmp_path):
    """docs/troubleshooting.md and docs/configuration.md point at `kfops config show`, which did not exist."""
    import os

    import yaml

    config = str(write_example_config(tmp_path / "kfops.yaml", data_dir=str(tmp_path / "state")))
    env = {**os.environ, "KFOPS__REGISTRY__TRACKING_URI": "postgresql://u:planted-7f3@db/mlflow"}
    shown = subprocess.run([KFOPS, "config", "show", "-c", config, "--set", "retrain.cooldown=14d"],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
    assert shown.returncode == 0, shown.stderr
    tree = yaml.safe_load(shown.stdout)
    assert tree["retrain"]["cooldown"] in ("14 days, 0:00:00", "P14D")
    assert tree["registry"]["tracking_uri"] == "postgresql://u@db/mlflow" and "planted-7f3" not in shown.stdout
    one = kfops("config", "show", "train.trainer", "-c", config)
    assert one.returncode == 0 and one.stdout.strip() == "xgboost"
    missing = kfops("config", "show", "train.nope", "-c", config)
    assert missing.returncode == 2 and "no key 'train.nope'" in missing.stderr


def test_a_dead_service_or_an_unusable_path_is_named_not_unexpected():
    """Redis down was 'unexpected ConnectionError' (exit 1), a read-only data_dir 'unexpected
    PermissionError': a failure of the machine or a service, with its own exit code."""
    import redis

    from kfops.cli import _known_failure
    from kfops.errors import EXIT_INFRA, EXIT_USAGE

    down = _known_failure(redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:9. Connection refused."))
    assert down is not None and down.exit_code == EXIT_INFRA and str(down).startswith("Redis: ConnectionError")
    refused = _known_failure(ConnectionRefusedError(111, "Connection refused"))
    assert refused is not None and refused.exit_code == EXIT_INFRA
    locked = _known_failure(PermissionError(13, "Permission denied", "/srv/kfops/mlflow/mlflow.db.lock"))
    assert locked is not None and locked.exit_code == EXIT_USAGE
    assert str(locked) == "Permission denied: /srv/kfops/mlflow/mlflow.db.lock" and "permissions" in locked.hint
    assert _known_failure(ValueError("a bug")) is None  # still 'unexpected', with the traceback on request


def test_an_output_folder_that_is_a_file_is_named_with_exit_2(tmp_path):
    import pandas as pd

    pd.DataFrame({"a": [float(i) for i in range(200)]}).to_parquet(tmp_path / "ref.parquet")  # over drift.min_rows
    done = kfops("drift", "check", "--reference", str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "ref.parquet"),
                 "--output-dir", str(tmp_path / "ref.parquet"), "--no-html", cwd=tmp_path)
    assert done.returncode == 2 and "unexpected" not in done.stderr, done.stderr
    assert "File exists" in done.stderr and "ref.parquet" in done.stderr, done.stderr


def test_compile_to_a_path_that_is_not_yaml_is_named(tmp_path):
    """KFP's compiler raised 'should end with .yaml' as an unexpected ValueError (exit 1)."""
    for target in (tmp_path / "pipeline.json", tmp_path):
        done = kfops("compile", "training", "-o", str(target), cwd=tmp_path)
        assert done.returncode == 2 and "is a YAML file, named *.yaml or *.yml" in done.stderr, done.stderr


@pytest.mark.parametrize("args", [
    ("ui", "--port", "70000"), ("deploy", "--watch", "--interval", "-1"), ("controller", "run", "--poll-interval", "0"),
    ("backtest", "--from", "2013-02", "--to", "2013-03", "--sample", "0"),
])
def test_numbers_out_of_range_are_usage_errors_before_anything_runs(args, tmp_path):
    """kfops ui --port 70000 printed uvicorn's OverflowError and exited 0; --interval -1 and
    --poll-interval 0 were taken; backtest --sample 0 was refused after 20 s of feature joins."""
    done = kfops(*args, cwd=tmp_path)
    assert done.returncode == 2 and "Invalid value for" in done.stderr, done.stderr


def test_ui_on_a_taken_port_fails_before_starting_mlflow(tmp_path):
    """mlflow's server logged the bind error and exited 0, so a script took the UI for up."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = kfops("ui", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert f"127.0.0.1:{port} is already in use" in done.stderr and "MLflow UI on" not in done.stdout


def test_ctrl_c_in_any_command_is_exit_130_with_one_line(monkeypatch, capsys, tmp_path):
    """typer turns KeyboardInterrupt into an exit code that non-standalone mode returns: kfops
    exited 130 without a word."""
    import kfops.config
    from kfops.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(kfops.config, "load_config", interrupted)
    with pytest.raises(SystemExit) as exited:
        main(["config", "show"])
    assert exited.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"


def test_an_unknown_pipeline_is_refused_before_the_run_banner(tmp_path):
    write_example_config(tmp_path / "kfops.yaml")
    done = kfops("run", "bogus", cwd=tmp_path)
    assert done.returncode == 2 and "unknown pipeline 'bogus'" in done.stderr, done.stderr
    assert "running 'bogus'" not in done.stdout


def test_schedule_refuses_a_bad_cron_or_bound_before_its_banner(tmp_path):
    """An impossible date was refused at the first tick (exit 1, after `started`); `--max-runs 0`
    carried the hint to check kfops.yaml and KFOPS__* variables."""
    config = str(write_example_config(tmp_path / "kfops.yaml", {"data_dir": str(tmp_path / "state")}))
    for args, expected in (
        (["--cron", "0 0 30 2 *"], "invalid cron '0 0 30 2 *': it never fires"),
        (["--cron", "0 3 * * * * *"], "invalid cron '0 3 * * * * *': 7 fields"),
        (["--cron", "* * * * *", "--max-runs", "0"], "--max-runs"),
        (["--cron", "* * * * *", "--max-seconds", "0"], "--max-seconds"),
        (["--cron", "* * * * *", "--window-days", "0"], "--window-days"),
    ):
        done = kfops("schedule", "retraining", "--local", *args, "-c", config, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in done.stderr and "KFOPS__" not in done.stderr, (args, done.stderr)
        assert "local scheduler" not in done.stdout
    assert not (tmp_path / "state" / "scheduler").exists()
    done = kfops("schedule", "retraining", "--cron", "0 3 * * *", "--max-runs", "2", "-c", config, cwd=tmp_path)
    assert done.returncode == 2 and "add --local" in done.stderr
    # A KFP recurring run moves its window in the retraining pipeline only.
    done = kfops("schedule", "training", "--cron", "0 3 * * *", "--window-days", "7", "-c", config, cwd=tmp_path)
    assert done.returncode == 2 and "schedule 'retraining' with --window-days" in " ".join(done.stderr.split())


def test_run_with_window_days_runs_over_the_whole_days_before_today(tmp_path, monkeypatch, capsys):
    """A one-off run over the same moving window a `schedule --window-days N` run would take
    today; it used to need the dates worked out and passed as two --set overrides."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    import kfops.runners.local as local
    from kfops.cli import main
    from kfops.errors import KfopsError

    config = str(write_example_config(tmp_path / "kfops.yaml", {"data_dir": str(tmp_path / "state")}))
    ran = []

    def run_locally(cfg, pipeline, **kwargs):
        ran.append((pipeline, cfg.window))
        raise KfopsError("stopped before running")

    monkeypatch.setattr(local, "run_locally", run_locally)
    with pytest.raises(SystemExit):
        main(["run", "retraining", "--window-days", "14", "-c", config])
    from kfops.config import load_config

    today = dt.datetime.now(ZoneInfo(load_config(Path(config)).validation.window_timezone)).date()
    end = today - dt.timedelta(days=1)
    assert ran == [("retraining", (end - dt.timedelta(days=13), end))]
    assert f"on {end - dt.timedelta(days=13)}..{end}" in capsys.readouterr().out

    done = kfops("run", "training", "--window-days", "0", "-c", config, cwd=tmp_path)
    assert done.returncode == 2 and "--window-days" in done.stderr and "running" not in done.stdout


def test_log_event_time_without_log_is_refused_before_anything_is_scored(tmp_path):
    (tmp_path / "rows.csv").write_text("a\n1\n")
    done = kfops("predict", "-i", str(tmp_path / "rows.csv"), "-o", str(tmp_path / "out.parquet"),
                 "--model-dir", str(tmp_path), "--log-event-time", cwd=tmp_path)
    assert done.returncode == 2 and "--log-event-time says when logged rows happened: add --log" in done.stderr, done.stderr
    assert not (tmp_path / "out.parquet").exists()
