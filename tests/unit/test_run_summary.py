"""What `kfops run` tells a person and a script at the end: which version this run registered,
which one the endpoint serves (they differ until a promotion), and an exit code that tells a
refused model from a registered one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfops.cli import gate_refused, main
from kfops.cli.summary import print_run_summary, served_model
from kfops.config import load_config
from kfops.errors import EXIT_FAILED, EXIT_INFRA, EXIT_NOT_BLESSED, EXIT_USAGE, GateRefused, KfopsError
from kfops.runners.local import LocalRun
from tests.support.example import write_example_config

ENDPOINT = "http://127.0.0.1:18099"
BLESSED_REASONS = ["PASS floor:roc_auc: roc_auc 0.7400, needs >= 0.6"]
REFUSED_REASONS = ["FAIL floor:roc_auc: roc_auc 0.7400, needs >= 0.99",
                   "PASS slices:max_regression: worst slice carrier=AA drops roc_auc by 0.0100 versus the champion "
                   "(allowed drop 0.05)"]
METRICS = {"roc_auc": 0.74, "pr_auc": 0.5, "log_loss": 0.5, "f1": 0.5, "threshold": 0.3, "ece": 0.01, "rows": 100}


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"data_dir={tmp_path / 'state'}"], environ={})


@pytest.fixture
def no_server(monkeypatch):
    from kfops.serving.local import process

    monkeypatch.setattr(process, "server_status", lambda cfg, name=None: {"healthy": False, "url": None})


def local_run(tmp_path: Path, blessed: bool, registered: str | None = None, deployed: bool = False,
              log: str = "") -> LocalRun:
    run_dir = tmp_path / "kfops-training-2024"
    run_dir.mkdir(parents=True, exist_ok=True)
    verdict = run_dir / "verdict.json"
    reasons = BLESSED_REASONS if blessed else REFUSED_REASONS
    verdict.write_text(json.dumps({"blessed": blessed, "metrics": METRICS, "verdict": {"reasons": reasons}}))
    outputs: dict = {"evaluate": {"verdict": str(verdict), "Output": blessed}, "train": {"Output": "abc123"}}
    if registered:
        outputs["register"] = {"Output": registered}
    if deployed:
        outputs["deploy"] = {"Output": ENDPOINT}
    log_path = tmp_path / "run.log"
    log_path.write_text(log)
    return LocalRun(name="training", run_dir=run_dir, compiled=tmp_path / "training.yaml", log_path=log_path,
                    seconds=1.0, outputs=outputs)


def deploy_line(version: str, alias: str = "champion") -> str:
    # As the deploy component prints it, inside kfp.local's coloured task output.
    return f"\x1b[36m[deploy]\x1b[0m serving flights-delay v{version} (@{alias}) at {ENDPOINT}\n"


def test_summary_says_which_version_is_registered_and_which_serves(cfg, tmp_path, no_server, capsys):
    run = local_run(tmp_path, blessed=True, registered="2", deployed=True, log="other\n" + deploy_line("1"))
    facts = print_run_summary(cfg, run)
    out = capsys.readouterr().out
    assert facts["registered_version"] == "2" and facts["served_version"] == "1"
    assert "registered     flights-delay v2" in out
    assert "serving        flights-delay v1 (@champion)" in out
    assert "v2 is not serving: `kfops promote 2`" in out
    assert "model          flights-delay v2" not in out


def test_the_commands_the_summary_suggests_act_on_the_same_project(cfg, tmp_path, no_server, capsys):
    """From the folder above a project, `kfops promote 2` (as suggested) acted on the nearest kfops.yaml."""
    from pathlib import Path

    from kfops.cli import same_project_options

    run = local_run(tmp_path, blessed=True, registered="2", deployed=True, log="other\n" + deploy_line("1"))
    same = same_project_options(Path("shop/kfops.yaml"), ["serving.http_port=8097", "train.params={C: 1}"])
    assert same == " -c shop/kfops.yaml --set serving.http_port=8097 --set 'train.params={C: 1}'"
    print_run_summary(cfg, run, same=same)
    out = capsys.readouterr().out
    assert f"`kfops promote 2{same}` makes it @champion, then `kfops deploy{same}`" in out
    assert f"(kfops lineage 2{same})" in out and f"kfops ui{same}   (=" in out
    assert same_project_options(None, None) == ""


def test_summary_of_a_first_run_serves_what_it_registered(cfg, tmp_path, no_server, capsys):
    run = local_run(tmp_path, blessed=True, registered="1", deployed=True, log=deploy_line("1"))
    print_run_summary(cfg, run)
    out = capsys.readouterr().out
    assert "registered     flights-delay v1" in out and "serving        flights-delay v1 (@champion)" in out
    assert "is not serving" not in out


def test_the_live_server_outranks_the_deploy_log(cfg, tmp_path, monkeypatch):
    from kfops.serving.local import process

    monkeypatch.setattr(process, "server_status", lambda cfg, name=None: {
        "healthy": True, "url": ENDPOINT + "/", "model_version": "3"})
    served = served_model(cfg, ENDPOINT, _log(tmp_path, deploy_line("1")))
    assert served["version"] == "3" and served["source"] == "model server"


def test_served_version_unknown_is_said_not_guessed(cfg, tmp_path, no_server, capsys):
    other = "serving flights-delay v9 (@champion) at http://127.0.0.1:1\n"  # another endpoint's line
    run = local_run(tmp_path, blessed=True, registered="2", deployed=True, log=other)
    facts = print_run_summary(cfg, run)
    out = capsys.readouterr().out
    assert facts["served_version"] is None
    assert "serving        @champion (version unknown" in out and "v9" not in out


def test_a_custom_alias_is_named(tmp_path, no_server):
    cfg = load_config(None, [f"data_dir={tmp_path / 'state'}", "serving.model_alias=stable"], environ={})
    assert served_model(cfg, ENDPOINT, None) == {"version": None, "alias": "stable", "source": None}
    served = served_model(cfg, ENDPOINT, _log(tmp_path, deploy_line("4", "stable")))
    assert served == {"version": "4", "alias": "stable", "source": "deploy step"}


def _log(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.log"
    path.write_text(text)
    return path


def test_exit_codes_are_distinct_and_a_refusal_is_not_an_error_code():
    codes = [EXIT_FAILED, EXIT_USAGE, EXIT_INFRA, EXIT_NOT_BLESSED]
    assert len(set(codes)) == len(codes) and 0 not in codes
    assert GateRefused("x").exit_code == EXIT_NOT_BLESSED == 4
    assert KfopsError("x").exit_code == EXIT_USAGE


def test_refusal_names_the_failed_checks():
    err = gate_refused(REFUSED_REASONS)
    assert err.exit_code == EXIT_NOT_BLESSED
    assert "floor:roc_auc: roc_auc 0.7400, needs >= 0.99" in str(err)
    assert "slices" not in str(err)  # only the checks that failed
    assert "see the gate's reasons" in str(gate_refused([]))


def _run_cli(monkeypatch, tmp_path, run: LocalRun, pipeline: str = "training") -> int:
    from kfops.runners import local

    monkeypatch.delenv("KFOPS_CONFIG", raising=False)
    monkeypatch.setenv("KFOPS_PROGRESS", "off")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(local, "run_locally", lambda cfg, name, **kwargs: run)
    config = write_example_config(tmp_path / "kfops.yaml")  # the neutral defaults alone are refused (exit 2)
    with pytest.raises(SystemExit) as done:
        main(["run", pipeline, "--config", str(config), "--set", f"data_dir={tmp_path / 'state'}"])
        raise SystemExit(0)
    return int(done.value.code or 0)


def test_kfops_run_exits_4_when_the_gate_refuses(monkeypatch, tmp_path, no_server, capsys):
    code = _run_cli(monkeypatch, tmp_path, local_run(tmp_path, blessed=False))
    captured = capsys.readouterr()
    assert code == EXIT_NOT_BLESSED
    assert "NOT BLESSED" in captured.out and "registered     nothing" in captured.out
    assert captured.err.startswith("not blessed: the evaluation gate did not bless the model")
    assert "floor:roc_auc" in captured.err and "exit code 4" in captured.err


def retraining_run(tmp_path: Path, drift: bool, blessed: bool | None = None) -> LocalRun:
    """What a local retraining run leaves: the drift task, and the training tasks only after drift."""
    run = local_run(tmp_path, blessed=bool(blessed))
    run.name = "retraining"
    outputs = {"drift": {"Output": drift}}
    if drift:
        outputs.update(run.outputs)
    run.outputs = outputs
    return run


def test_kfops_run_retraining_exits_4_when_the_retrained_model_is_refused(monkeypatch, tmp_path, no_server, capsys):
    code = _run_cli(monkeypatch, tmp_path, retraining_run(tmp_path, drift=True, blessed=False), "retraining")
    captured = capsys.readouterr()
    assert code == EXIT_NOT_BLESSED
    assert "NOT BLESSED" in captured.out and captured.err.startswith("not blessed:")


def test_kfops_run_retraining_exits_0_without_drift_nothing_to_judge(monkeypatch, tmp_path, no_server, capsys):
    assert _run_cli(monkeypatch, tmp_path, retraining_run(tmp_path, drift=False), "retraining") == 0
    captured = capsys.readouterr()
    assert "gate" not in captured.out and captured.err == ""


def test_kfops_run_exits_0_when_blessed(monkeypatch, tmp_path, no_server, capsys):
    run = local_run(tmp_path, blessed=True, registered="1", deployed=True, log=deploy_line("1"))
    assert _run_cli(monkeypatch, tmp_path, run) == 0
    assert capsys.readouterr().err == ""


def test_run_help_and_troubleshooting_list_every_exit_code():
    import typer

    from kfops.cli import app
    from kfops.errors import EXIT_INTERRUPTED, EXIT_OK

    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    helped = " ".join(command.get_help(command.make_context("kfops run", ["--help"], resilient_parsing=True)).split())
    for code in (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA, EXIT_NOT_BLESSED):
        assert f"{code} " in helped, code
    assert "4 the run finished but the gate refused the model" in helped
    table = (Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md").read_text()
    for name, code in (("EXIT_OK", EXIT_OK), ("EXIT_FAILED", EXIT_FAILED), ("EXIT_USAGE", EXIT_USAGE),
                       ("EXIT_INFRA", EXIT_INFRA), ("EXIT_NOT_BLESSED", EXIT_NOT_BLESSED),
                       ("EXIT_INTERRUPTED", EXIT_INTERRUPTED)):
        assert f"| {code} | `{name}` |" in table, name


def decided_retraining_run(tmp_path: Path, retrain: bool, current_source: str = "window") -> LocalRun:
    """A local retraining run with the drift step's decision record, as the drift component writes it."""
    run_dir = tmp_path / "kfops-retraining-2024"
    (run_dir / "drift" / "report").mkdir(parents=True)
    decision = run_dir / "drift" / "decision"
    reason = ("drift in 3 of 25 columns" if retrain else
              "no trigger fired: a shadow challenger ... does not pass the evaluate gate")
    decision.write_text(json.dumps({
        "retrain": retrain, "code": "drift" if retrain else "no_signal", "reason": reason, "drift": True,
        "metrics": {"drifted_columns": 3.0, "tested_columns": 25.0, "current_rows": 26811.0},
        "current_source": current_source, "current_window": ["2013-07-01", "2013-07-31"],
        "reference_window": ["2013-01-01", "2013-01-14"], "champion_version": "1"}))
    outputs: dict = {"drift": {"decision": str(decision), "report": str(run_dir / "drift" / "report"),
                               "Output": retrain}, "retrain-outcome": {"Output": ""}}
    if retrain:
        local = local_run(tmp_path, blessed=True, registered="2")
        outputs.update(local.outputs, validate={"report": str(run_dir / "validate" / "report")})
    log_path = tmp_path / "retraining.log"
    log_path.write_text("")
    return LocalRun(name="retraining", run_dir=run_dir, compiled=tmp_path / "retraining.yaml", log_path=log_path,
                    seconds=1.0, outputs=outputs)


def test_a_retraining_summary_says_what_was_decided_and_why(cfg, tmp_path, no_server, capsys):
    """It printed `validation: None` and `evaluation: None` and not the decision, which was only
    in the middle of the task log."""
    facts = print_run_summary(cfg, decided_retraining_run(tmp_path, retrain=False))
    out = capsys.readouterr().out
    assert facts["retrain"] is False
    assert "decision       no retrain (no_signal)" in out
    assert "does not pass the evaluate gate" in out
    assert "drift          drift: 3 of 25 columns drifted" in out
    assert "checked        26,811 rows of 2013-07-01..2013-07-31 against v1's data 2013-01-01..2013-01-14" in out
    assert f"reports        drift: {tmp_path / 'kfops-retraining-2024' / 'drift' / 'report'}" in out
    assert "None" not in out and "validation:" not in out and "gate " not in out


def test_a_retraining_that_retrained_shows_the_decision_and_the_training(cfg, tmp_path, no_server, capsys):
    print_run_summary(cfg, decided_retraining_run(tmp_path, retrain=True))
    out = capsys.readouterr().out
    assert "decision       RETRAIN (drift)" in out and "drift in 3 of 25 columns" in out
    assert "gate           BLESSED" in out and "registered     flights-delay v2" in out
    assert "reports        drift: " in out and "                 validation: " in out


def test_a_check_of_the_inference_log_says_it_checked_logged_predictions(cfg, tmp_path, no_server, capsys):
    print_run_summary(cfg, decided_retraining_run(tmp_path, retrain=False, current_source="inference_logs"))
    out = capsys.readouterr().out
    assert "checked        26,811 predictions logged 2013-07-01..2013-07-31 against v1's data" in out


def test_a_training_summary_has_no_decision(cfg, tmp_path, no_server, capsys):
    print_run_summary(cfg, local_run(tmp_path, blessed=True, registered="1"))
    out = capsys.readouterr().out
    assert "decision" not in out and "drift" not in out


def test_status_says_what_each_recent_run_decided(cfg, no_server, capsys):
    """Drift checks were listed as `roc_auc None  blessed ?`: they train nothing, and their
    decision was left out."""
    from kfops.adapters import mlflow_registry as registry
    from kfops.cli.summary import print_status

    client = registry.client(cfg)
    experiment = client.create_experiment(cfg.registry.experiment)
    trained = client.create_run(experiment, run_name="train-a")
    client.log_metric(trained.info.run_id, "test_roc_auc", 0.71234)
    client.set_tag(trained.info.run_id, "kfops.blessed", "true")
    client.set_terminated(trained.info.run_id)
    for name, retrain, code in (("drift-b", "false", "no_signal"), ("drift-c", "true", "challenger")):
        checked = client.create_run(experiment, run_name=name, tags={"kfops.retrain": retrain,
                                                                     "kfops.retrain_code": code})
        client.set_terminated(checked.info.run_id)
    failed = client.create_run(experiment, run_name="train-d")
    client.set_terminated(failed.info.run_id, status="FAILED")

    print_status(cfg)
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert lines["train-a"].endswith("FINISHED  roc_auc 0.7123  blessed true")
    assert lines["drift-b"].endswith("no retrain (no_signal)")
    assert lines["drift-c"].endswith("RETRAIN (challenger)")
    assert lines["train-d"].endswith("FAILED    roc_auc -  blessed -")


def test_status_counts_the_predictions_logged_in_the_last_week(cfg, no_server, capsys):
    """What a retraining run on drift.current_source=inference_logs would find, without reading it."""
    import datetime as dt
    import itertools

    import pyarrow as pa

    from kfops.cli.summary import print_status
    from kfops.serving.runtime.inference_log import write_table

    print_status(cfg)
    assert f"inference log  {cfg.inference_log_dir}  nothing logged in the last 7 days (UTC)" in capsys.readouterr().out
    today = dt.datetime.now(dt.UTC).date()
    sequence = itertools.count()
    write_table(cfg.inference_log_dir, today, pa.table({"probability": [0.5]}), sequence)
    print_status(cfg)
    assert "  1 prediction in the last 7 days" in capsys.readouterr().out
    for day, rows in ((today, 1199), (today, 34), (today - dt.timedelta(days=2), 1000), (today - dt.timedelta(days=9), 5)):
        write_table(cfg.inference_log_dir, day, pa.table({"probability": [0.5] * rows}), sequence)
    print_status(cfg)
    assert (f"inference log  {cfg.inference_log_dir}  2,234 predictions in the last 7 days (UTC), the newest on {today}"
            in capsys.readouterr().out)


def test_status_shows_the_last_local_run_even_one_that_left_no_mlflow_run(cfg, no_server, capsys):
    from kfops.cli.summary import print_status
    from kfops.runners.run_records import end_record, start_record

    print_status(cfg)
    assert "last local run" not in capsys.readouterr().out
    path = start_record(cfg, "retraining", cfg.data_dir / "logs" / "retraining-20261207-030000-000001-7-abcdef.log",
                        "subprocess")
    end_record(path, "failed", seconds=3.0, failed_task="validate",
               error="validation failed, nothing was trained or registered: flights.expect_column_values_to_not_be_null")
    print_status(cfg)
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("last local run")]
    assert line.startswith("last local run retraining-20261207-030000-000001-7-abcdef  failed  ")
    assert line.endswith("validation failed, nothing was trained or registered: flights.expect_column_values_to_not_be_null")


def test_a_validation_failure_says_what_was_seen_on_the_terminal(tmp_path):
    """The run's error named the broken expectation only; what failed (`21 unexpected of 19,124, e.g.
    inf`) was in the log alone. Its first line stays the one-line name list `kfops runs` shows."""
    from kfops.runners.local import _failure_message

    failures = [{"table": "visits", "expectation": "expect_column_values_to_be_between", "column": "bmi",
                 "unexpected_count": 21, "element_count": 19124, "unexpected_percent": 0.11,
                 "unexpected_values": ["inf", "inf"]},
                *({"table": "visits", "expectation": "expect_table_row_count_to_be_between", "column": None,
                   "observed_value": 12 + i} for i in range(8))]
    (tmp_path / "validate").mkdir()
    (tmp_path / "validate" / "summary").write_text(json.dumps({"success": False, "failures": failures}))
    run = LocalRun("training", tmp_path, tmp_path / "c.yaml", tmp_path / "run.log", 1.0)
    lines = _failure_message(run, RuntimeError("task failed"), "validate").splitlines()
    assert lines[0].startswith("validation failed, nothing was trained or registered: "
                               "visits.expect_column_values_to_be_between(bmi); visits.expect_table_row_count")
    assert lines[1] == '  visits.bmi: 21 unexpected of 19,124 (0.11% of non-null), e.g. ["inf", "inf"]'
    assert lines[2] == "  visits: 12" and len(lines) == 10 and lines[-1] == "  and 1 more"
