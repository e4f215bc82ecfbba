"""The inference log: date partitions, time filters, flush on close, bounded memory."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from kfops.serving.runtime.inference_log import (
    DEPLOY_CHECK_ID_PREFIX,
    InferenceLogWriter,
    LogRecord,
    logged_rows_by_day,
    read_inference_logs,
)


def record(when: dt.datetime, request_id: str, probabilities=(0.2, 0.8), version: str = "1",
           raw: bool = False) -> LogRecord:
    rows = len(probabilities)
    temps = [50.5, float("nan"), 1.0][:rows]
    return LogRecord(
        timestamp=when.replace(tzinfo=dt.UTC).timestamp(), request_id=request_id, model_name="m",
        model_version=version, input_kind="raw" if raw else "features", feature_names=["origin", "temp"],
        matrix=np.array([[0.0, t] for t in temps], dtype=np.float32), categorical={"origin": ["EWR", "XYZ", None][:rows]},
        probabilities=np.array(probabilities), threshold=0.5,
        raw_input={"origin": ["EWR", "XYZ", None][:rows], "distance": [1400, 200, 5][:rows]} if raw else None,
    )


def test_records_land_in_date_partitions_and_read_back_in_time_order(tmp_path):
    writer = InferenceLogWriter(tmp_path)
    writer.append(record(dt.datetime(2024, 5, 2, 0, 30), "b"))
    writer.append(record(dt.datetime(2024, 5, 1, 23, 59), "a", version="2"))
    paths = writer.flush()
    assert sorted(p.parent.name for p in paths) == ["date=2024-05-01", "date=2024-05-02"]
    assert not list(tmp_path.rglob(".*.tmp"))  # written under a temporary name, then renamed
    logged = read_inference_logs(tmp_path)
    assert logged["request_id"].tolist() == ["a", "a", "b", "b"]
    assert str(logged["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert logged["label"].tolist() == [0, 1, 0, 1]
    assert logged["model_version"].tolist() == ["2", "2", "1", "1"]
    assert logged["input"].isna().all()  # feature vectors: the features are the input
    assert logged["origin"].tolist() == ["EWR", "XYZ", "EWR", "XYZ"]  # unknown categories are kept as sent


def test_raw_requests_keep_their_input_as_json(tmp_path):
    writer = InferenceLogWriter(tmp_path)
    writer.append(record(dt.datetime(2024, 5, 2, 0, 30), "f", raw=True))
    writer.flush()
    logged = read_inference_logs(tmp_path)
    assert logged["input"].tolist() == ['{"origin":"EWR","distance":1400}', '{"origin":"XYZ","distance":200}']
    assert set(logged["input_kind"]) == {"raw"}


def test_start_and_end_filter_by_timestamp_with_end_exclusive(tmp_path):
    writer = InferenceLogWriter(tmp_path)
    for hour in (1, 5, 9):
        writer.append(record(dt.datetime(2024, 5, 1, hour), f"h{hour}", probabilities=(0.5,)))
    writer.flush()
    window = read_inference_logs(tmp_path, start="2024-05-01T05:00", end=dt.datetime(2024, 5, 1, 9))
    assert window["request_id"].tolist() == ["h5"]
    assert read_inference_logs(tmp_path, start=dt.date(2024, 5, 2)).empty


def test_missing_folder_reads_as_an_empty_frame_with_the_log_columns(tmp_path):
    logged = read_inference_logs(tmp_path / "never-written")
    assert logged.empty
    assert {"timestamp", "model_version", "probability", "label"} <= set(logged.columns)


def test_close_flushes_what_is_queued_and_later_appends_are_dropped(tmp_path):
    dropped = []
    writer = InferenceLogWriter(tmp_path, flush_interval_s=3600, on_dropped=dropped.append).start()
    writer.append(record(dt.datetime(2024, 5, 1, 12), "x"))
    writer.close()
    assert read_inference_logs(tmp_path)["request_id"].tolist() == ["x", "x"]
    assert writer.append(record(dt.datetime(2024, 5, 1, 13), "late")) is False
    assert dropped == [2]


def test_a_writer_that_falls_behind_drops_and_counts_instead_of_growing(tmp_path):
    dropped = []
    writer = InferenceLogWriter(tmp_path, max_pending_rows=3, on_dropped=dropped.append)
    assert writer.append(record(dt.datetime(2024, 5, 1, 12), "kept")) is True
    assert writer.append(record(dt.datetime(2024, 5, 1, 12), "over")) is False
    assert dropped == [2]
    writer.flush()
    assert set(read_inference_logs(tmp_path)["request_id"]) == {"kept"}


def test_numbers_are_logged_as_the_model_saw_them_and_categoricals_as_sent(tmp_path):
    writer = InferenceLogWriter(tmp_path)
    writer.append(record(dt.datetime(2024, 5, 1, 12), "x", probabilities=(0.1, 0.2, 0.9)))
    writer.flush()
    frame = pd.read_parquet(next(tmp_path.rglob("part-*.parquet")))
    assert frame["temp"].dtype == "float32" and frame["temp"].isna().tolist() == [False, True, False]
    assert frame["origin"].tolist() == ["EWR", "XYZ", None]
    assert frame["label"].tolist() == [0, 0, 1]


def test_a_record_arrow_cannot_take_is_dropped_and_counted_not_fatal(tmp_path):
    dropped = []
    writer = InferenceLogWriter(tmp_path, on_dropped=dropped.append)
    bad = record(dt.datetime(2024, 5, 1, 12), "bad", version="9")
    bad.categorical = {"origin": [{"not": "text"}, 3]}
    writer.append(bad)
    writer.append(record(dt.datetime(2024, 5, 1, 12), "good"))
    writer.flush()
    assert dropped == [2]
    assert set(read_inference_logs(tmp_path)["request_id"]) == {"good"}


def test_a_deploy_check_is_kept_on_record_but_not_counted_as_traffic(tmp_path):
    """The deploy step's smoke test would otherwise be the one 'prediction' a new project's
    `kfops status` reports, and a row of the drift check's current data."""
    writer = InferenceLogWriter(tmp_path)
    writer.append(record(dt.datetime(2024, 5, 1, 12), f"{DEPLOY_CHECK_ID_PREFIX}abc", probabilities=(0.4,)))
    writer.append(record(dt.datetime(2024, 5, 1, 12), "client-1"))
    writer.flush()
    assert read_inference_logs(tmp_path)["request_id"].tolist() == ["client-1", "client-1"]
    assert logged_rows_by_day(tmp_path, dt.date(2024, 5, 1)) == {dt.date(2024, 5, 1): 2}
    (check_file,) = tmp_path.glob("date=2024-05-01/check-*.parquet")
    assert pd.read_parquet(check_file)["request_id"].tolist() == [f"{DEPLOY_CHECK_ID_PREFIX}abc"]
