"""The training pipeline, compiled to YAML and run from that YAML under kfp.local, on real flights data.

One data dir is shared by the module, in order: a first run registers and serves v1; a run on a
corrupted table stops at validate and changes nothing; a run on a later window is judged against
the champion.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pandas as pd
import pytest

from kfops.config import load_config
from kfops.datasets.flights import package_data_dir
from kfops.errors import PipelineFailed
from kfops.runners.local import run_locally
from tests.conftest import REPO_ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("kfops-e2e")
    port = free_port()
    base = [f"data_dir={data_dir}", f"serving.http_port={port}", "evaluate.gate.min_roc_auc=0.6"]

    def config(*extra: str):
        return load_config(REPO_ROOT / "kfops.yaml", [*base, *extra], environ={})

    yield {"config": config, "data_dir": data_dir, "port": port}
    from kfops.serving.local.process import stop_server

    stop_server(config())


@pytest.fixture(scope="module")
def first_run(state):
    from kfops.adapters.feast_store import online_features

    cfg = state["config"]("dataset.start=2013-01-01", "dataset.end=2013-01-21")
    run = run_locally(cfg, "training", on_event=lambda line: None)
    # Read now: a later test's run on February loads the store with later rows (the order is random).
    keys = {"origin": "EWR", "carrier": "UA", "tailnum": "N14228"}
    state["online_after_first_run"] = online_features(
        cfg, [keys], as_of=pd.Timestamp("2013-01-21T18:00", tz="America/New_York"))
    return cfg, run


def registry_client(cfg):
    from kfops.adapters import mlflow_registry as registry

    return registry.client(cfg)


def test_first_run_registers_tags_and_serves(first_run, state):
    cfg, run = first_run
    outputs = run.outputs
    assert outputs["register"]["Output"] == "1"
    manifest = json.loads((Path(outputs["ingest"]["raw_tables"]) / "manifest.json").read_text())
    client = registry_client(cfg)
    version = client.get_model_version(cfg.registry.model_name, "1")
    tags = version.tags
    assert tags["kfops.pipeline_run"] == run.run_dir.name
    assert tags["kfops.data_hash"] == manifest["data_hash"] == outputs["ingest"]["Output"]
    assert tags["kfops.validation"] == "passed"
    assert set(tags["kfops.feature_views"].split(",")) == {ref.split(":")[0] for ref in cfg.features.feature_refs}
    assert tags["kfops.trainer"] == "xgboost" and json.loads(tags["kfops.trainer_config"])["trainer"] == "xgboost"
    assert tags["kfops.code_version"]
    assert "kfops.project_code" not in tags  # the example's code is kfops' own
    assert client.get_model_version_by_alias(cfg.registry.model_name, "champion").version == 1

    logged = {a.path for a in client.list_artifacts(outputs["train"]["Output"], "validation")}
    assert logged == {"validation/summary", "validation/report"}, logged
    mlflow_run = client.get_run(outputs["train"]["Output"])
    metrics = mlflow_run.data.metrics
    for name in ("test_roc_auc", "test_pr_auc", "test_log_loss", "test_f1", "test_ece", "validation_auc"):
        assert name in metrics, name
    assert 0.6 <= metrics["test_roc_auc"] <= 1.0
    verdict = json.loads(Path(outputs["evaluate"]["verdict"]).read_text())
    assert verdict["blessed"] and verdict["metrics"]["roc_auc"] == pytest.approx(metrics["test_roc_auc"])

    # The KFP metrics artifacts carry the same numbers.
    kfp_metrics = json.loads((Path(run.run_dir) / "evaluate" / "executor_output.json").read_text())
    logged = kfp_metrics["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["roc_auc"] == pytest.approx(metrics["test_roc_auc"])
    assert "confidenceMetrics" in kfp_metrics["artifacts"]["classification"]["artifacts"][0]["metadata"]

    # The endpoint answers a V2 request with the served version.
    endpoint = outputs["deploy"]["Output"]
    response = httpx.get(f"{endpoint}/v2/models/{cfg.registry.model_name}/ready", timeout=10)
    assert response.status_code == 200
    example = pd.read_parquet(outputs["featurize"]["training_set"]).tail(3)
    columns = json.loads((Path(outputs["train"]["model"]) / "kfops_model.json").read_text())["spec"]["columns"]
    inputs = [
        {"name": c, "shape": [3], "datatype": "BYTES" if example[c].dtype == object else "FP64",
         "data": [v if isinstance(v, str) else (None if pd.isna(v) else float(v)) for v in example[c]]}
        for c in columns
    ]
    answer = httpx.post(f"{endpoint}/v2/models/{cfg.registry.model_name}/infer", json={"inputs": inputs}, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == cfg.registry.model_name
    probabilities = next(o for o in body["outputs"] if o["name"] == "probability")["data"]
    assert len(probabilities) == 3 and all(0 <= p <= 1 for p in probabilities)

    # kfops.yaml sets features.materialize_online: featurize loaded the online store up to the end of
    # the window, so a raw flight on its last evening is answered with the store's features (README).
    assert cfg.features.materialize_online
    keys = {"origin": "EWR", "carrier": "UA", "tailnum": "N14228"}
    stored = state["online_after_first_run"]
    assert stored[["temp", "carrier_delay_rate_7d", "seats"]].notna().all(axis=None), stored.iloc[0].to_dict()
    raw = {**keys, "dest": "IAH", "distance": 1400, "sched_dep": "2013-01-21T18:00"}
    answer = httpx.post(f"{endpoint}/v1/models/{cfg.registry.model_name}:predict", json={"instances": [raw]},
                        timeout=10)
    assert answer.status_code == 200, answer.text
    assert 0 <= answer.json()["predictions"][0]["probability"] <= 1


def test_corrupted_table_stops_at_validate_and_registers_nothing(first_run, state, tmp_path):
    cfg, _ = first_run
    source = tmp_path / "corrupt"
    shutil.copytree(package_data_dir(), source)
    flights = pd.read_csv(source / "flights.csv.zip")
    flights.loc[flights.sample(frac=0.3, random_state=0).index, "carrier"] = None  # null burst
    in_window = flights.index[(flights["month"] == 1) & (flights["day"].between(15, 28))]
    flights.loc[in_window[:50], "distance"] = -100  # impossible value
    (source / "flights.csv.zip").unlink()
    flights.to_csv(source / "flights.csv", index=False)
    bad = state["config"]("dataset.start=2013-01-15", "dataset.end=2013-01-28", f"dataset.source_dir={source}")
    client = registry_client(cfg)
    before = [v.version for v in client.search_model_versions(f"name='{cfg.registry.model_name}'")]

    with pytest.raises(PipelineFailed, match="validation failed") as failure:
        run_locally(bad, "training", on_event=lambda line: None)
    message = str(failure.value)
    assert "carrier" in message and "distance" in message

    after = [v.version for v in client.search_model_versions(f"name='{cfg.registry.model_name}'")]
    assert after == before
    assert client.get_model_version_by_alias(cfg.registry.model_name, "champion").version == 1


def test_later_window_is_judged_against_the_champion(first_run, state):
    cfg = state["config"]("dataset.start=2013-02-01", "dataset.end=2013-02-21")
    run = run_locally(cfg, "training", on_event=lambda line: None)
    verdict = json.loads(Path(run.outputs["evaluate"]["verdict"]).read_text())
    assert verdict["champion_metrics"] is not None
    assert any("champion v1" in reason for reason in verdict["verdict"]["reasons"])
    client = registry_client(cfg)
    champion = str(client.get_model_version_by_alias(cfg.registry.model_name, "champion").version)
    if verdict["blessed"]:
        assert run.outputs["register"]["Output"] == "2"
        assert client.get_model_version_by_alias(cfg.registry.model_name, "challenger").version == 2
        assert champion == "1"  # promotion is a person's (or auto_promote's) decision
    else:
        assert "register" not in run.outputs
        assert champion == "1"


def test_a_window_the_champion_trained_on_is_not_judged_in_sample(first_run, state):
    """v1 trained on January 1-21. A challenger on January 1-14 has its test split (the last days)
    inside v1's training data: scored there, v1 looked far better than it is and the challenger was
    refused for a loss that was not there. Now the gate says it cannot compare, and why."""
    cfg = state["config"]("dataset.start=2013-01-01", "dataset.end=2013-01-14")
    client = registry_client(cfg)
    champion = client.get_model_version_by_alias(cfg.registry.model_name, "champion")
    assert champion.tags["kfops.trained_through"].startswith("2013-01-1")  # its train and validation splits
    run = run_locally(cfg, "training", on_event=lambda line: None)
    verdict = json.loads(Path(run.outputs["evaluate"]["verdict"]).read_text())
    reasons = " | ".join(verdict["verdict"]["reasons"])
    assert not verdict["blessed"] and verdict["champion_metrics"] is None and "register" not in run.outputs
    assert f"FAIL champion:unseen_rows: champion v{champion.version} trained on" in reasons
    assert "no champion yet" not in reasons
    assert str(client.get_model_version_by_alias(cfg.registry.model_name, "champion").version) == str(champion.version)


def test_lineage_history_and_status_print_real_data(first_run, state):
    import subprocess
    import sys

    _cfg, run = first_run
    kfops = str(Path(sys.executable).with_name("kfops"))
    overrides = ["--set", f"data_dir={state['data_dir']}", "--set", f"serving.http_port={state['port']}"]
    lineage = subprocess.run([kfops, "lineage", "1", *overrides], capture_output=True, text=True, cwd=REPO_ROOT,
                             timeout=120)
    assert lineage.returncode == 0, lineage.stderr
    assert run.run_dir.name in lineage.stdout and run.outputs["ingest"]["Output"] in lineage.stdout
    for key in ("pipeline_run", "data_hash", "validation", "feature_views", "code_version", "trainer_config"):
        assert f"\n{key} " in "\n" + lineage.stdout, key
    history = subprocess.run([kfops, "history", *overrides], capture_output=True, text=True, cwd=REPO_ROOT,
                             timeout=120)
    assert "bootstrap: no champion existed" in history.stdout
    status = subprocess.run([kfops, "status", *overrides], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "@champion      v1" in status.stdout and run.outputs["deploy"]["Output"] in status.stdout


def test_refused_model_exits_with_its_own_code(tmp_path):
    """Automation must tell a refused model from a registered one (and from a failure): exit code 4."""
    import subprocess
    import sys

    from kfops.errors import EXIT_NOT_BLESSED
    from tests.unit.test_notifications import Hook

    kfops = str(Path(sys.executable).with_name("kfops"))
    overrides = [f"data_dir={tmp_path / 'state'}", f"serving.http_port={free_port()}", "dataset.start=2013-01-01",
                 "dataset.end=2013-01-14", "evaluate.gate.min_roc_auc=0.99"]
    hook = Hook()  # with a webhook set: its URL once made every task refuse its config ('**********')
    try:
        done = subprocess.run([kfops, "run", "training", *(arg for item in overrides for arg in ("--set", item))],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
                              env={**os.environ, "KFOPS_PROGRESS": "plain", "KFOPS__NOTIFY__WEBHOOK_URL": hook.url})
    finally:
        hook.close()
    assert done.returncode == EXIT_NOT_BLESSED == 4, done.stderr[-2000:]
    # Told once, by the runner: the pipeline's own exit handler (training-end) has no URL locally.
    (told,) = hook.bodies
    assert told["kfops"]["events"] == ["refused"] and "floor:roc_auc" in told["text"]
    assert "task 'training-end' finished" in done.stderr + done.stdout
    assert "gate           NOT BLESSED" in done.stdout and "registered     nothing" in done.stdout
    assert "FAIL floor:roc_auc" in done.stdout
    assert "not blessed: the evaluation gate did not bless the model" in done.stderr, done.stderr[-2000:]
    assert "floor:roc_auc" in done.stderr and "Traceback" not in done.stderr
    cfg = load_config(REPO_ROOT / "kfops.yaml", overrides, environ={})
    client = registry_client(cfg)
    assert not client.search_model_versions(f"name='{cfg.registry.model_name}'")
    # What a retraining exit handler on a cluster reads back to say why (pipeline_run_decision).
    from kfops.adapters import mlflow_registry as registry

    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    (trained,) = [r for r in client.search_runs([experiment.experiment_id]) if registry.BLESSED_TAG in r.data.tags]
    decided = registry.pipeline_run_decision(cfg, trained.data.tags[registry.PIPELINE_RUN_TAG])
    assert decided["blessed"] is False and "registered_version" not in decided
    assert any(check.startswith("floor:roc_auc: roc_auc") for check in decided["failed_checks"]), decided


def _raw_flights(training_set: pd.DataFrame) -> pd.DataFrame:
    """The training set's flights as raw rows: what a client sends the server (RAW_FLIGHT)."""
    return pd.DataFrame({
        "flight_id": training_set["flight_id"].to_numpy(), "carrier": training_set["carrier"].to_numpy(),
        "origin": training_set["origin"].to_numpy(), "dest": training_set["dest"].to_numpy(),
        "distance": training_set["distance"].to_numpy(),
        "sched_dep": training_set["event_timestamp"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%dT%H:%M")
        .to_numpy(),
        "tailnum": training_set["tailnum"].to_numpy(), "flight": training_set["flight"].to_numpy(),
    })


def _predict(*args: str) -> int:
    from kfops.cli import main

    try:
        main(["predict", *args])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_raw_rows_score_as_the_training_set_rows_do(first_run, state, tmp_path, capsys):
    """`kfops predict` scored only finished feature rows; with --raw it takes a client's raw rows,
    derives the request features and joins the views point-in-time from the offline sources.
    The same flights must get the same probabilities as their training-set rows."""
    import numpy as np

    from kfops.core.model import load_model

    cfg, run = first_run
    training_set = pd.read_parquet(run.outputs["featurize"]["training_set"]).sample(2000, random_state=7)
    raw = tmp_path / "raw.csv"
    _raw_flights(training_set).to_csv(raw, index=False)
    model_dir = run.outputs["train"]["model"]
    overrides = ["--set", f"data_dir={state['data_dir']}", "--set", f"serving.http_port={state['port']}"]
    sources = str(Path(run.outputs["featurize"]["feast_sources"]))
    registry = cfg.feast_dir / "registry.db"
    before = registry.read_bytes()
    code = _predict("--raw", "-i", str(raw), "-o", str(tmp_path / "scored.parquet"), "--model-dir", model_dir,
                    "--sources", sources, "--chunk-rows", "700", *overrides)
    assert code == 0, capsys.readouterr().err
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    # Every input column is kept (the flight id to join back on included), in the input's order.
    assert scored.columns.tolist() == [*_raw_flights(training_set.head(1)).columns, "probability", "prediction"]
    assert scored["flight_id"].tolist() == training_set["flight_id"].tolist()
    model = load_model(Path(model_dir))
    expected = model.predict_proba_encoded(model.spec.encode(training_set))
    np.testing.assert_allclose(scored["probability"].to_numpy(), expected, rtol=0, atol=1e-12)
    # Scoring only reads: the project's Feast registry was not re-applied with these sources.
    assert registry.read_bytes() == before


def test_logged_raw_rows_reach_the_drift_checks_inference_log_frame(first_run, state, tmp_path, capsys):
    """`kfops predict --raw --log`: a batch job's predictions join the inference log, as served
    requests do, so a retraining run with drift.current_source=inference_logs checks them too."""
    import datetime as dt

    import numpy as np

    from kfops.adapters import mlflow_registry as registry
    from kfops.serving.runtime.inference_log import read_inference_logs
    from kfops.steps.drift_check import inference_log_frame

    cfg, run = first_run
    training_set = pd.read_parquet(run.outputs["featurize"]["training_set"]).sample(500, random_state=11)
    raw = tmp_path / "raw.parquet"
    _raw_flights(training_set).to_parquet(raw, index=False)
    champion = registry.champion(cfg).version  # another test of this module may have moved it
    code = _predict("--raw", "-i", str(raw), "-o", str(tmp_path / "scored.parquet"), "--log", "--chunk-rows", "200",
                    "--sources", str(run.outputs["featurize"]["feast_sources"]),
                    "--set", f"data_dir={state['data_dir']}", "--set", f"serving.http_port={state['port']}")
    out = capsys.readouterr().out
    assert code == 0, out
    (request_id,) = [word for word in out.split() if word.startswith("predict-")]
    logs = read_inference_logs(cfg.inference_log_location)
    logged = logs[logs["request_id"] == request_id].reset_index(drop=True)  # the module's server logs here too
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    assert len(logged) == 500 and set(logged["input_kind"]) == {"raw"}
    assert set(logged["model_name"]) == {cfg.registry.model_name} and set(logged["model_version"]) == {str(champion)}
    np.testing.assert_array_equal(logged["probability"].to_numpy(), scored["probability"].to_numpy())
    # The features as the model saw them: the training set's, joined point-in-time for each flight.
    for column in ("temp", "carrier_delay_rate_7d", "seats"):
        np.testing.assert_allclose(logged[column].to_numpy(), training_set[column].to_numpy(dtype=np.float32),
                                   rtol=0, atol=0, equal_nan=True, err_msg=column)
    first = json.loads(logged["input"][0])
    assert {key: first[key] for key in ("carrier", "origin", "sched_dep")} == {
        key: _raw_flights(training_set).iloc[0][key] for key in ("carrier", "origin", "sched_dep")}
    today = dt.datetime.now(dt.UTC).date()
    assert f"dated {today}\n" in out  # the time they were scored
    frame = inference_log_frame(cfg, today - dt.timedelta(days=1), today)  # the drift step's, for inference_logs
    assert set(scored["probability"]) <= set(frame[cfg.drift.prediction_column])


def test_raw_rows_logged_at_their_event_time_are_in_the_drift_checks_frame_for_their_days(first_run, state, tmp_path,
                                                                                          capsys):
    """`kfops predict --raw --log --log-event-time`: a backfill of January's flights is logged at each
    flight's event time (sched_dep in New York, as the request builder reads it), so the drift
    step's frame for those January days holds them, and today's does not."""
    import datetime as dt

    from kfops.serving.runtime.inference_log import read_inference_logs
    from kfops.steps.drift_check import inference_log_frame

    cfg, run = first_run
    training_set = pd.read_parquet(run.outputs["featurize"]["training_set"]).sample(400, random_state=5)
    raw = tmp_path / "raw.parquet"
    _raw_flights(training_set).to_parquet(raw, index=False)
    code = _predict("--raw", "-i", str(raw), "-o", str(tmp_path / "scored.parquet"), "--log", "--log-event-time",
                    "--chunk-rows", "150", "--sources", str(run.outputs["featurize"]["feast_sources"]),
                    "--set", f"data_dir={state['data_dir']}", "--set", f"serving.http_port={state['port']}")
    out = capsys.readouterr().out
    assert code == 0, out
    (request_id,) = [word for word in out.split() if word.startswith("predict-")]
    logs = read_inference_logs(cfg.inference_log_location)
    logged = logs[logs["request_id"] == request_id]
    assert len(logged) == 400
    times = sorted(logged["timestamp"].tolist())
    assert times == sorted(training_set["event_timestamp"].tolist())  # UTC, to the minute the flight was due
    first, last = training_set["event_timestamp"].min().date(), training_set["event_timestamp"].max().date()
    assert f"dated {first} to {last}" in out
    frame = inference_log_frame(cfg, first, last)
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    assert set(scored["probability"]) <= set(frame[cfg.drift.prediction_column])
    today = dt.datetime.now(dt.UTC).date()
    recent = read_inference_logs(cfg.inference_log_location, pd.Timestamp(today - dt.timedelta(days=1), tz="UTC"))
    assert request_id not in set(recent["request_id"])


@pytest.mark.parametrize(("change", "message"), [
    (lambda rows: rows.drop(columns="sched_dep"), "lacks column(s) sched_dep of a raw flight"),
    (lambda rows: rows.assign(sched_dep=["2013-01-05T10:00"] * 2 + ["yesterday"] + ["2013-01-05T10:00"] * 2),
     "row 2 field 'sched_dep': 'yesterday' is not an ISO 8601 date-time"),
    (lambda rows: rows.assign(distance=[100, 200, -5, 300, 400]), "row 2 field 'distance': must be >= 0"),
    (lambda rows: rows.assign(origin=["EWR"] * 3 + ["XXX"] * 2, tailnum=["N0NE"] * 5, carrier=["ZZ"] * 5),
     "row 3: the offline feature sources have no features for origin='XXX', tailnum='N0NE', carrier='ZZ'"),
])
def test_bad_raw_rows_are_refused_by_row_and_field_and_nothing_is_written(first_run, state, tmp_path, capsys, change,
                                                                         message):
    from kfops.serving.runtime.inference_log import read_inference_logs

    cfg, run = first_run
    rows = _raw_flights(pd.read_parquet(run.outputs["featurize"]["training_set"]).head(5))
    raw, output = tmp_path / "raw.parquet", tmp_path / "scored.parquet"
    change(rows).to_parquet(raw, index=False)

    def batch_rows_logged() -> int:
        return int(read_inference_logs(cfg.inference_log_location)["request_id"].str.startswith("predict-").sum())

    logged_before = batch_rows_logged()
    code = _predict("--raw", "-i", str(raw), "-o", str(output), "--model-dir", run.outputs["train"]["model"],
                    "--sources", str(run.outputs["featurize"]["feast_sources"]), "--log",
                    "--chunk-rows", "2",  # the bad row is in a later chunk: named by its row in the file
                    "--set", f"data_dir={state['data_dir']}")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert message in err, err
    assert not output.exists()
    assert batch_rows_logged() == logged_before  # the chunks scored before the bad row were not logged


def test_the_predict_component_scores_raw_rows_in_a_pipeline(first_run, state, tmp_path):
    """components/predict/component.yaml, as a KFP user loads it, in their own pipeline under
    kfp.local: their rows and the featurize step's sources in, the @champion's predictions out."""
    import numpy as np
    from kfp import components, dsl, local

    from kfops.core.model import load_model

    cfg, run = first_run
    training_set = pd.read_parquet(run.outputs["featurize"]["training_set"]).sample(300, random_state=3)
    rows = tmp_path / "rows.csv"
    _raw_flights(training_set).to_csv(rows, index=False)
    predict = components.load_component_from_file(str(REPO_ROOT / "components" / "predict" / "component.yaml"))

    @dsl.pipeline(name="score-flights")
    def score():  # no typed parameter: this module's postponed annotations would reach kfp as text
        to_score = dsl.importer(artifact_uri=str(rows), artifact_class=dsl.Dataset)
        sources = dsl.importer(artifact_uri=str(run.outputs["featurize"]["feast_sources"]),
                               artifact_class=dsl.Dataset)
        predict(config=cfg.to_json(), rows=to_score.output, feast_sources=sources.output)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    score()
    (scored_path,) = (tmp_path / "root").glob("score-flights-*/predict/predictions")
    scored = pd.read_parquet(scored_path)
    assert scored["flight_id"].tolist() == training_set["flight_id"].tolist()
    model = load_model(Path(run.outputs["train"]["model"]))  # v1, the @champion
    expected = model.predict_proba_encoded(model.spec.encode(training_set))
    np.testing.assert_allclose(scored["probability"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_text_in_a_numeric_csv_column_is_refused_at_its_own_row(first_run, state, tmp_path, capsys):
    """One bad value makes Arrow read the whole CSV column as text: the error named row 0, whose
    value was a fine number written as text."""
    _cfg, run = first_run
    rows = _raw_flights(pd.read_parquet(run.outputs["featurize"]["training_set"]).head(5)).astype({"distance": object})
    rows.loc[3, "distance"] = "far"
    rows.to_csv(tmp_path / "raw.csv", index=False)
    code = _predict("--raw", "-i", str(tmp_path / "raw.csv"), "-o", str(tmp_path / "scored.parquet"),
                    "--model-dir", run.outputs["train"]["model"], "--sources", str(run.outputs["featurize"]["feast_sources"]),
                    "--set", f"data_dir={state['data_dir']}")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "row 3 field 'distance': expected a number" in err, err
