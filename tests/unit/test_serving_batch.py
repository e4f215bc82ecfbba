"""Batch scoring: parquet and CSV in, parquet out, chunked, same numbers as in-process predict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfops.core.model import load_model, predict_proba
from kfops.errors import DataError
from kfops.serving.local.batch_scoring import predict_file
from tests.support.serving_models import build_tiny_model, synthetic_features


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "m", threshold=0.4)


@pytest.fixture(scope="module")
def frame():
    data = synthetic_features(1000, seed=21)
    data.insert(0, "flight_id", [f"f{i}" for i in range(len(data))])
    return data


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz", ".csv.zip"])
def test_scores_every_row_in_chunks_like_in_process_predict(model_dir, frame, tmp_path, suffix):
    source = tmp_path / f"in{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(source, index=False)
    else:
        frame.to_csv(source, index=False)
    result = predict_file(model_dir, source, tmp_path / "out.parquet", chunk_rows=300, threads=1)
    scored = pd.read_parquet(result.output_path)
    assert result.rows == len(frame) == len(scored)
    # Non-feature input columns ride along (the true label too), then the predictions.
    assert list(scored.columns) == ["flight_id", "label", "probability", "prediction"]
    expected = predict_proba(load_model(model_dir), frame)
    np.testing.assert_allclose(scored["probability"], expected, rtol=0, atol=1e-6)
    assert (scored["prediction"] == (expected >= 0.4)).all()
    assert scored["flight_id"].tolist() == frame["flight_id"].tolist()


def test_keep_columns_picks_what_is_copied_beside_the_predictions(model_dir, frame, tmp_path):
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    result = predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "out.parquet", keep_columns=["origin"])
    assert list(pd.read_parquet(result.output_path).columns) == ["origin", "probability", "prediction"]
    result = predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "only.parquet", keep_columns=[])
    assert list(pd.read_parquet(result.output_path).columns) == ["probability", "prediction"]
    with pytest.raises(DataError, match="may not include"):
        predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "out2.parquet", keep_columns=["prediction"])


def test_a_file_without_the_model_features_is_refused_and_leaves_no_output(model_dir, frame, tmp_path):
    frame.drop(columns=["temp"]).to_parquet(tmp_path / "in.parquet", index=False)
    with pytest.raises(DataError, match="lacks feature column"):
        predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "out.parquet")
    assert not list(tmp_path.glob("*out.parquet*"))


def test_unknown_file_types_and_missing_files_are_data_errors(model_dir, tmp_path):
    (tmp_path / "in.json").write_text("{}")
    with pytest.raises(DataError, match=r"expected \.parquet or \.csv"):
        predict_file(model_dir, tmp_path / "in.json", tmp_path / "out.parquet")
    with pytest.raises(DataError, match="does not exist"):
        predict_file(model_dir, tmp_path / "nope.parquet", tmp_path / "out.parquet")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("rows.parquet", "not parquet at all", "Parquet magic bytes not found"),
    ("rows.csv", "", "Empty CSV file"),
])
def test_a_file_that_is_not_what_its_suffix_says_is_a_data_error(model_dir, tmp_path, name, content, message):
    """`kfops predict` said 'unexpected ArrowInvalid' where validate and drift name the file."""
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=f"cannot read .*{name}: .*{message}"):
        predict_file(model_dir, tmp_path / name, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_text_in_a_numeric_column_is_refused_with_its_row_and_column(model_dir, frame, tmp_path, suffix):
    bad = frame.astype({"distance": "object"})
    bad.loc[700, "distance"] = "far"  # in the third chunk of 300
    bad.loc[900, "distance"] = "also far"
    bad.loc[10, "distance"] = None  # missing is fine
    bad["distance"] = bad["distance"].map(lambda v: None if v is None else str(v))
    source = tmp_path / f"in{suffix}"
    bad.to_csv(source, index=False) if suffix == ".csv" else bad.to_parquet(source, index=False)
    with pytest.raises(DataError, match=r"row 700, column 'distance': 'far' is not a number") as caught:
        predict_file(model_dir, source, tmp_path / "out.parquet", chunk_rows=300)
    assert "--coerce" in caught.value.hint
    assert not (tmp_path / "out.parquet").exists()
    result = predict_file(model_dir, source, tmp_path / "out.parquet", chunk_rows=300, coerce=True)
    assert result.rows == len(frame)


def test_progress_is_reported_per_chunk_and_a_step_inside_reports_under_it(model_dir, frame, tmp_path, monkeypatch,
                                                                            capsys):
    """A large file gave no sign of life until the end; and the raw rows' join, which runs in the
    reader thread, printed its own lines beside the bar instead of under it."""
    from kfops.progress import progress

    monkeypatch.setenv("KFOPS_PROGRESS", "plain")
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    joined: list[int] = []

    class Complete:  # stands in for the raw rows' completion: a step with its own progress
        string_fields = ()

        def __call__(self, batch, first_row):
            with progress("inner join", total=1, unit="view") as bar:
                bar.advance()
            joined.append(first_row)
            return batch

    predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=500,
                 complete=Complete())  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert joined == [0, 500]
    assert "predict: 500/1000 rows (50%" in err and "predict: 1000/1000 rows (100%" in err
    assert "inner join" not in err  # under the outer bar: at DEBUG only


def _batch_log(location, model_dir):
    from kfops.serving.local.batch_log import BatchPredictionLog

    model = load_model(model_dir)
    return BatchPredictionLog(location, model_name="flights-delay", model_version="7", spec=model.spec,
                              threshold=model.threshold)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_logged_batch_reads_back_as_the_server_logs_predictions(model_dir, frame, tmp_path, suffix):
    """`kfops predict --log`: the rows are in the inference log, one request id for the run, with the
    features as the model saw them and the scored probability, as the server logs what it serves."""
    from kfops.serving.runtime.inference_log import BASE_COLUMNS, OUTPUT_COLUMNS, read_inference_logs

    source = tmp_path / f"in{suffix}"
    frame.to_parquet(source, index=False) if suffix == ".parquet" else frame.to_csv(source, index=False)
    log = _batch_log(tmp_path / "logs", model_dir)
    result = predict_file(model_dir, source, tmp_path / "out.parquet", chunk_rows=300, log=log)
    scored = pd.read_parquet(result.output_path)
    logged = read_inference_logs(tmp_path / "logs")
    spec = load_model(model_dir).spec
    assert logged.columns.tolist() == [*BASE_COLUMNS, *spec.columns, *OUTPUT_COLUMNS]
    assert len(list((tmp_path / "logs").glob("date=*/part-*.parquet"))) == 4  # a file per chunk, CSV too
    assert logged["request_id"].unique().tolist() == [log.request_id] and log.request_id.startswith("predict-")
    assert set(logged["model_name"]) == {"flights-delay"} and set(logged["model_version"]) == {"7"}
    assert set(logged["input_kind"]) == {"features"} and logged["input"].isna().all()
    np.testing.assert_array_equal(logged["probability"].to_numpy(), scored["probability"].to_numpy())
    np.testing.assert_array_equal(logged["label"].to_numpy(), scored["prediction"].to_numpy())
    for column in spec.columns:
        if column in spec.categorical:
            assert logged[column].tolist() == frame[column].astype(str).tolist(), column
        else:
            np.testing.assert_array_equal(logged[column].to_numpy(), frame[column].to_numpy(dtype=np.float32), column)
    assert not list(tmp_path.glob("**/kfops-predict-log-*"))


def test_a_refused_file_adds_nothing_to_the_inference_log(model_dir, frame, tmp_path):
    bad = frame.astype({"distance": "object"})
    bad.loc[700, "distance"] = "far"  # in the third chunk: two chunks were scored before it
    bad.to_csv(tmp_path / "in.csv", index=False)
    log = _batch_log(tmp_path / "logs", model_dir)
    with pytest.raises(DataError, match="row 700"):
        predict_file(model_dir, tmp_path / "in.csv", tmp_path / "out.parquet", chunk_rows=300, log=log)
    assert not (tmp_path / "logs").exists()
    assert not (tmp_path / "out.parquet").exists()


def test_a_log_that_cannot_be_written_fails_with_what_reached_it_and_keeps_the_predictions(model_dir, frame, tmp_path):
    from kfops.errors import ServiceUnavailable

    frame.to_parquet(tmp_path / "in.parquet", index=False)
    (tmp_path / "logs").write_text("a file where the log's folder should be")
    log = _batch_log(tmp_path / "logs", model_dir)
    with pytest.raises(ServiceUnavailable, match=r"took 0 of 1,000 rows \(predict-[0-9a-f]{12}\)") as caught:
        predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=300, log=log)
    assert "the predictions file is complete" in caught.value.hint
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == len(frame)


def test_two_logged_batches_in_one_process_both_stay_in_the_log(model_dir, frame, tmp_path):
    """Log files were named by time (to the second), pid and a counter per writer: a second batch
    of the same process in the same second took the first one's name and replaced its rows."""
    from kfops.serving.runtime.inference_log import read_inference_logs

    frame.to_parquet(tmp_path / "in.parquet", index=False)
    first, second = _batch_log(tmp_path / "logs", model_dir), _batch_log(tmp_path / "logs", model_dir)
    predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "a.parquet", log=first)
    predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "b.parquet", log=second)
    logged = read_inference_logs(tmp_path / "logs")
    assert logged["request_id"].value_counts().to_dict() == {first.request_id: 1000, second.request_id: 1000}


def _stamped(frame):
    """The frame with an event time per row over three UTC days, naive (read as UTC) as parquet keeps them."""
    start = pd.Timestamp("2013-03-01 20:00")
    return frame.assign(event_timestamp=[start + pd.Timedelta(minutes=5 * i) for i in range(len(frame))])


def test_rows_logged_at_their_event_time_land_in_the_days_they_are_about(model_dir, frame, tmp_path):
    """`kfops predict --log --log-event-time`: a backfill of past rows was stamped with the time it
    was scored, so a drift check over those days never saw it and today's window took it all."""
    from kfops.serving.local.batch_log import BatchPredictionLog
    from kfops.serving.runtime.inference_log import read_inference_logs

    rows = _stamped(frame)
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    model = load_model(model_dir)
    log = BatchPredictionLog(tmp_path / "logs", model_name="flights-delay", model_version="7", spec=model.spec,
                             threshold=model.threshold, event_time_column="event_timestamp")
    predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=300, log=log)
    days = sorted(path.name for path in (tmp_path / "logs").iterdir())
    assert days == [f"date=2013-03-0{day}" for day in range(1, 6)]  # 1,000 rows 5 minutes apart from March 1, 20:00
    logged = read_inference_logs(tmp_path / "logs").sort_values("timestamp", kind="stable").reset_index(drop=True)
    expected = rows["event_timestamp"].dt.tz_localize("UTC")
    assert logged["timestamp"].tolist() == expected.tolist()
    scored = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_array_equal(logged["probability"].to_numpy(), scored["probability"].to_numpy())
    one_day = read_inference_logs(tmp_path / "logs", pd.Timestamp("2013-03-02", tz="UTC"),
                                  pd.Timestamp("2013-03-03", tz="UTC"))
    assert len(one_day) == int(((expected >= "2013-03-02") & (expected < "2013-03-03")).sum()) == 288
    for path in (tmp_path / "logs").glob("date=*/*.parquet"):  # each file holds its own day's rows only
        stamps = pd.read_parquet(path)["timestamp"]
        assert {str(day) for day in stamps.dt.date} == {path.parent.name.removeprefix("date=")}


@pytest.mark.parametrize(("change", "message"), [
    (lambda rows: rows.drop(columns="event_timestamp"), "the rows have no 'event_timestamp' column"),
    (lambda rows: rows.assign(event_timestamp=rows["event_timestamp"].where(rows.index != 650)),
     "row 650: no event time in 'event_timestamp'"),
])
def test_a_row_without_its_event_time_logs_nothing_and_writes_nothing(model_dir, frame, tmp_path, change, message):
    from kfops.serving.local.batch_log import BatchPredictionLog

    change(_stamped(frame)).to_parquet(tmp_path / "in.parquet", index=False)
    model = load_model(model_dir)
    log = BatchPredictionLog(tmp_path / "logs", model_name="flights-delay", model_version="7", spec=model.spec,
                             threshold=model.threshold, event_time_column="event_timestamp")
    with pytest.raises(DataError, match=message):
        predict_file(model_dir, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=300, log=log)
    assert not (tmp_path / "logs").exists() and not (tmp_path / "out.parquet").exists()
