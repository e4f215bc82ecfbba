"""The cluster's inference log: KServe logger CloudEvents -> the sink process -> S3 (moto on
loopback) -> read_inference_logs and the drift job's frame."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid

import httpx
import pytest

from kfops.config import load_config
from kfops.serving.runtime.inference_log import read_inference_logs
from kfops.serving.sidecars.log_sink import REQUEST_TYPE, RESPONSE_TYPE
from tests.conftest import free_port
from tests.integration.conftest import stop, wait_http
from tests.support.serving_models import COLUMNS, synthetic_features

pytestmark = pytest.mark.integration
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def sink(s3_server, tmp_path, monkeypatch):
    import boto3

    for key, value in {**AWS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    bucket = f"kfops-logs-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    store = f"s3://{bucket}/inference"
    port = free_port()
    log = tmp_path / "sink.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "kfops.serving.sidecars.log_sink", "--store", store, "--host",
                                    "127.0.0.1", "--port", str(port), "--flush-s", "3600",
                                    "--feature-names", ",".join(COLUMNS)],
                                   stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        wait_http(f"http://127.0.0.1:{port}/", 60, process, log)
        yield {"url": f"http://127.0.0.1:{port}", "store": store, "process": process, "log": log}
    finally:
        stop(process)


def event(http: httpx.Client, url: str, kind: str, event_id: str, body) -> httpx.Response:
    """A CloudEvent in binary mode, the way KServe's logger posts it."""
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-type": kind, "ce-source": "http://localhost:9081/",
               "ce-time": dt.datetime.now(dt.UTC).isoformat(), "ce-inferenceservicename": "flights-delay",
               "ce-namespace": "kfops-serving", "ce-component": "predictor", "ce-endpoint": "",
               "content-type": "application/json"}
    return http.post(url, headers=headers, content=body if isinstance(body, bytes) else httpx.Request(
        "POST", url, json=body).content)


def test_logger_events_become_inference_log_rows_in_s3(sink):
    cfg = load_config(None, [f"serving.inference_log_store={sink['store']}"], environ={})
    features = synthetic_features(3, seed=4).drop(columns="label")
    rows = features.to_dict("records")
    v2_request = {"inputs": [{"name": c, "datatype": "BYTES" if isinstance(rows[0][c], str) else "FP64",
                              "shape": [2], "data": [r[c] for r in rows[:2]]} for c in features.columns]}
    v2_response = {"model_name": "flights-delay", "model_version": "7", "outputs": [
        {"name": "probability", "datatype": "FP64", "shape": [2], "data": [0.25, 0.75]},
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]}]}
    flight = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "distance": 1400, "sched_dep": "2013-05-01T05:15"}
    with httpx.Client(trust_env=False, timeout=30) as http:
        url = sink["url"]
        assert event(http, url, REQUEST_TYPE, "a", v2_request).status_code == 202
        assert event(http, url, RESPONSE_TYPE, "a", v2_response).status_code == 202
        # the response may arrive first
        assert event(http, url, RESPONSE_TYPE, "b", {"predictions": [{"probability": 0.9, "label": 1}],
                                                     "model_name": "flights-delay", "model_version": "7"}).status_code == 202
        assert event(http, url, REQUEST_TYPE, "b", {"instances": [flight]}).status_code == 202
        # an error answer scored nothing
        event(http, url, REQUEST_TYPE, "c", {"instances": [flight]})
        event(http, url, RESPONSE_TYPE, "c", {"error": "row 0: unknown carrier"})
        # bad events are refused with a reason, and the sink stays up
        bad = [event(http, url, "com.example.other", "d", {}), event(http, url, REQUEST_TYPE, "e", b"{not json"),
               event(http, url, REQUEST_TYPE, "", {"instances": []}), event(http, url, REQUEST_TYPE, "f", [1, 2])]
        assert [r.status_code for r in bad] == [400, 400, 400, 400]
        assert "ce-type" in bad[0].json()["error"] and "not JSON" in bad[1].json()["error"]
        status = http.get(url).json()
        assert (status["rows"], status["rejected"]) == (3, 4)

    stop(sink["process"])  # SIGTERM: the sink flushes what it holds
    assert "wrote s3://" in sink["log"].read_text()  # uvicorn exits by re-raising SIGTERM after shutdown
    logs = read_inference_logs(cfg.inference_log_location)
    assert len(logs) == 3
    assert logs["model_version"].unique().tolist() == ["7"]
    by_kind = logs.groupby("input_kind")["probability"].apply(list).to_dict()
    assert by_kind == {"features": [0.25, 0.75], "raw": [0.9]}
    assert logs.loc[logs["input_kind"] == "features", "distance"].tolist() == pytest.approx(
        [r["distance"] for r in rows[:2]])
    assert logs.loc[logs["input_kind"] == "raw", "input"].iloc[0].startswith('{"carrier": "UA"')

    # the drift job reads the same store through the config
    from kfops.steps.drift_check import inference_log_frame

    today = dt.datetime.now(dt.UTC).date()
    frame = inference_log_frame(cfg, today, today)
    assert sorted(frame[cfg.drift.prediction_column].tolist()) == [0.25, 0.75, 0.9]
    assert frame[cfg.feature_columns].notna().all(axis=1).sum() == 2  # the flight row lacks looked-up features


def test_rows_survive_a_store_outage_and_are_written_by_the_next_flush(tmp_path):
    from kfops.serving.sidecars.log_sink import CloudEventSink

    blocked = tmp_path / "store"
    blocked.write_text("not a folder")  # writing under it fails, as an unreachable bucket would
    sink = CloudEventSink(str(blocked))
    request = {"instances": [{"distance": 100.0, "origin": "EWR"}]}
    response = {"predictions": [{"probability": 0.4, "label": 0}], "model_version": "3"}
    sink.receive({"ce-type": REQUEST_TYPE, "ce-id": "x"}, httpx.Request("POST", "http://s", json=request).content)
    sink.receive({"ce-type": RESPONSE_TYPE, "ce-id": "x"}, httpx.Request("POST", "http://s", json=response).content)
    with pytest.raises(OSError):
        sink.flush()
    assert len(sink.rows) == 1
    blocked.unlink()
    (written,) = sink.flush()
    assert read_inference_logs(blocked)["probability"].tolist() == [0.4] and written.endswith(".parquet")


def test_a_batch_jobs_logged_predictions_reach_the_cluster_log_store(s3_server, tmp_path, monkeypatch):
    """The predict component with log_predictions on a cluster: its rows go to the log store in S3,
    where the drift job reads served requests."""
    import boto3
    import pandas as pd

    from kfops.steps.drift_check import inference_log_frame
    from kfops.steps.predict import predict
    from tests.support.serving_models import build_tiny_model

    for key, value in {**AWS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    bucket = f"kfops-logs-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    cfg = load_config(None, [f"serving.inference_log_store=s3://{bucket}/inference", f"data_dir={tmp_path}"],
                      environ={})
    model_dir = build_tiny_model(tmp_path / "model")
    synthetic_features(700, seed=9).to_parquet(tmp_path / "rows.parquet", index=False)
    result = predict(cfg, tmp_path / "rows.parquet", tmp_path / "scored.parquet", model_dir=model_dir,
                     chunk_rows=250, log_predictions=True)
    assert result["logged_to"] == f"s3://{bucket}/inference"
    keys = [item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 3 and all(key.startswith("inference/date=") for key in keys)  # a file per chunk
    logs = read_inference_logs(cfg.inference_log_location)
    assert logs["request_id"].unique().tolist() == [result["request_id"]]
    assert logs["model_version"].unique().tolist() == ["unregistered"]  # scored from a folder, not the registry
    today = dt.datetime.now(dt.UTC).date()
    frame = inference_log_frame(cfg, today - dt.timedelta(days=1), today)
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    assert frame[cfg.drift.prediction_column].tolist() == scored["probability"].tolist()


def test_a_dead_log_store_fails_the_batch_job_with_what_reached_it(tmp_path, monkeypatch):
    """Every row scored, the S3 log store unreachable: exit 3 naming the store and the rows that
    reached it, and the predictions file complete."""
    import pandas as pd

    from kfops.errors import ServiceUnavailable
    from kfops.steps.predict import predict
    from tests.support.serving_models import build_tiny_model

    for key, value in {**AWS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(None, ["serving.inference_log_store=s3://kfops-logs/inference", f"data_dir={tmp_path}"],
                      environ={})
    synthetic_features(700, seed=9).to_parquet(tmp_path / "rows.parquet", index=False)
    with pytest.raises(ServiceUnavailable, match=r"the inference log at s3://kfops-logs/inference took 0 of 700 rows"):
        predict(cfg, tmp_path / "rows.parquet", tmp_path / "scored.parquet", model_dir=build_tiny_model(tmp_path / "m"),
                log_predictions=True)
    assert len(pd.read_parquet(tmp_path / "scored.parquet")) == 700
