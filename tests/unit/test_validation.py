"""The validate step on two weeks of the real flights data: clean data passes, reports are
readable, parameters follow the config window, suite mistakes are config errors."""

from __future__ import annotations

import datetime as dt
import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from kfops.adapters.gx_validation import (
    TRAINING_SET,
    Window,
    broken_expectations,
    format_failures,
    load_suite,
    raise_if_failed,
    suite_parameters,
    suite_path,
    validate_tables,
    validate_training_set,
)
from kfops.config import KfopsConfig
from kfops.errors import ConfigError, ValidationFailed
from kfops.reports.validation import render_html, write_reports
from tests.support.example import write_example_config
from tests.support.validation_data import (
    END,
    START,
    corrupt_distance,
    make_config,
    two_week_entity_frame,
    two_week_tables,
)


@pytest.fixture(scope="module")
def cfg() -> KfopsConfig:
    return make_config()


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return two_week_tables()


@pytest.fixture(scope="module")
def clean_result(tables, cfg):
    return validate_tables(tables, cfg)


def only(cfg: KfopsConfig, *names: str) -> KfopsConfig:
    return cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"tables": list(names)})})


def test_clean_two_weeks_pass_every_raw_suite(clean_result, tables):
    assert clean_result.failures == [], format_failures(clean_result)
    assert clean_result.success
    assert set(clean_result.tables) == {"flights", "weather", "planes"}
    for name, table in clean_result.tables.items():
        assert table.rows == len(tables[name])
        assert len(table.outcomes) == len(load_suite(table.suite).expectations)
    flights = clean_result.stats["tables"]["flights"]
    assert flights["rows"] == len(tables["flights"])
    assert flights["rows_per_day"] == pytest.approx(len(tables["flights"]) / 14)
    assert "rows_per_day" not in clean_result.stats["tables"]["planes"]  # not a windowed table


def test_outcomes_follow_suite_order_and_carry_observed_values(clean_result):
    flights = clean_result.tables["flights"]
    suite = load_suite(flights.suite)
    assert [o["expectation"] for o in flights.outcomes] == [e["type"] for e in suite.expectations]
    by_key = {(o["expectation"], o["column"]): o for o in flights.outcomes}
    assert by_key[("expect_table_row_count_to_be_between", None)]["observed_value"] == flights.rows
    nulls = by_key[("expect_column_values_to_not_be_null", "dep_time")]
    assert 0 < nulls["unexpected_count"] < 0.15 * flights.rows  # cancellations, within the tolerance


def test_window_parameters_are_local_midnights_in_utc(cfg):
    window = Window(START, END, "America/New_York")
    params = suite_parameters(load_suite(suite_path(cfg, "weather")), window, cfg)
    assert params["window_start"] == pd.Timestamp("2013-01-07T05:00Z")
    assert params["window_end"] == pd.Timestamp("2013-01-21T05:00Z")
    # weather spans whole UTC days plus a day either side (it is joined as of an earlier hour)
    assert params["context_start"] == pd.Timestamp("2013-01-06T00:00Z")
    assert params["context_end"] == pd.Timestamp("2013-01-23T00:00Z")
    assert params["fresh_after"] == pd.Timestamp("2013-01-19T05:00Z")  # 48 h staleness allowed
    assert (params["min_rows"], params["max_rows"]) == (24 * 16, None)  # 14 days + 2 context days


def test_previous_run_sets_a_volume_band_per_day(cfg, clean_result, tables):
    result = validate_tables({"flights": tables["flights"]}, only(cfg, "flights"), previous=clean_result.stats)
    assert result.success, format_failures(result)
    params = result.tables["flights"].parameters
    expected = len(tables["flights"])
    assert params["min_rows"] == int(expected * 0.5)
    assert params["max_rows"] == pytest.approx(expected * 1.5, abs=1)

    # A one-week window with the two-week run as previous: normalised per day, so it passes.
    week = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"end": START + dt.timedelta(days=6)})})
    local_day = pd.to_datetime(tables["flights"][["year", "month", "day"]])
    first_week = tables["flights"][local_day <= pd.Timestamp(START + dt.timedelta(days=6))]
    result = validate_tables({"flights": first_week}, only(week, "flights"), previous=clean_result.to_dict())
    assert result.success, format_failures(result)


def test_timestamp_resolution_is_not_part_of_the_contract(cfg, tables):
    flights = tables["flights"].assign(time_hour=tables["flights"]["time_hour"].dt.as_unit("us"))
    assert validate_tables({"flights": flights}, only(cfg, "flights")).success
    naive = tables["flights"].assign(time_hour=tables["flights"]["time_hour"].dt.tz_localize(None))
    failures = validate_tables({"flights": naive}, only(cfg, "flights")).failures
    assert ("expect_column_type_to_be", "time_hour") in {(f["expectation"], f["column"]) for f in failures}


def test_clean_training_set_passes_and_features_are_checked_when_present(cfg):
    entity = two_week_entity_frame()
    result = validate_training_set(entity, cfg)
    assert result.success, format_failures(result)
    table = result.tables[TRAINING_SET]
    assert any("(temp)" in s for s in table.skipped)  # no features joined yet
    assert 0.05 < result.stats["label_rate"] < 0.6
    assert result.stats["tables"][TRAINING_SET]["rows"] == len(entity)

    joined = entity.assign(temp=40.0, humid=60.0)
    joined.loc[joined.index[:3], "temp"] = 500.0
    result = validate_training_set(joined, cfg)
    assert not result.success
    failure = next(f for f in result.failures if f["column"] == "temp")
    assert failure["expectation"] == "expect_column_values_to_be_between"
    assert failure["unexpected_count"] == 3
    assert all(row["temp"] == 500.0 for row in failure["examples"])


def test_raise_if_failed_lists_each_failure_with_examples(cfg, tables, tmp_path):
    result = validate_tables({"flights": corrupt_distance(tables["flights"])}, only(cfg, "flights"))
    assert not result.success
    with pytest.raises(ValidationFailed) as caught:
        raise_if_failed(result, summary_path=tmp_path / "summary.json")
    message = str(caught.value)
    assert re.search(r"flights\.expect_column_values_to_be_between\(distance\): observed 5 unexpected", message)
    assert "example row: {\"distance\": -" in message  # the failing column comes first
    assert str(tmp_path / "summary.json") in message
    assert caught.value.failures == result.failures
    assert caught.value.summary_path == str(tmp_path / "summary.json")
    failure = result.failures[0]
    assert failure["table"] == "flights" and failure["column"] == "distance"
    assert failure["kwargs"]["min_value"] == 0 and failure["kwargs"]["strict_min"] is True
    assert len(failure["examples"]) == cfg.validation.max_examples
    assert all(row["distance"] < 0 for row in failure["examples"])
    raise_if_failed(validate_tables({"planes": tables["planes"]}, only(cfg, "planes")))  # passes: no raise


def test_a_failed_validation_names_each_broken_expectation_on_its_first_line(cfg):
    """`kfops run` shows a failed task's exception by its first line only: that line names each
    broken expectation with its column and what was observed (here a training set whose labels
    are all 0), the first few of them, then how many more."""
    entity = two_week_entity_frame()
    entity[cfg.dataset.label] = 0
    with pytest.raises(ValidationFailed) as caught:
        raise_if_failed(validate_training_set(entity, cfg))
    assert str(caught.value).splitlines()[0].endswith(
        "expectation(s) broken: training_set.expect_column_mean_to_be_between(label) observed 0.0")

    failures = [{"table": "t", "expectation": f"expect_{i}", "column": f"c{i}", "observed_value": i} for i in range(8)]
    assert broken_expectations(failures) == ("t.expect_0(c0) observed 0; t.expect_1(c1) observed 1; "
                                             "t.expect_2(c2) observed 2; t.expect_3(c3) observed 3; "
                                             "t.expect_4(c4) observed 4; and 3 more")
    wordy = [{**failure, "observed_value": "x" * 200} for failure in failures[:5]]
    line = broken_expectations(wordy)  # fits the line the runner shows (400 characters)
    assert line.startswith("t.expect_0(c0) observed xxx") and line.endswith("; and 2 more") and len(line) < 320


def test_reports_are_self_contained_and_complete(cfg, tables, tmp_path):
    result = validate_tables({"flights": corrupt_distance(tables["flights"])}, only(cfg, "flights"))
    html_path, json_path = tmp_path / "r" / "validation.html", tmp_path / "r" / "summary.json"
    write_reports(result, html_path, json_path)
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "FAILED" in page and "expect_column_values_to_be_between" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "report must not load external assets"
    assert "<script" not in page
    assert page.count("<tr class=") == len(result.tables["flights"].outcomes)
    summary = json.loads(json_path.read_text())
    assert summary["success"] is False
    assert summary["failed"] == len(result.failures) == 1
    assert summary["stats"]["tables"]["flights"]["rows"] == len(tables["flights"])
    assert summary["failures"][0]["examples"][0]["distance"] < 0


def test_html_escapes_data(cfg, tables):
    flights = tables["flights"].copy()
    flights.loc[flights.index[0], "carrier"] = "<b>X</b>"
    page = render_html(validate_tables({"flights": flights}, only(cfg, "flights")))
    assert "<b>X</b>" not in page and "&lt;b&gt;X&lt;/b&gt;" in page


def test_format_failures_is_a_table(cfg, clean_result, tables):
    assert format_failures(clean_result).startswith("PASSED: all ")
    text = format_failures(validate_tables({"flights": corrupt_distance(tables["flights"])}, only(cfg, "flights")))
    lines = text.splitlines()
    assert lines[0].startswith("FAILED: 1 of ")
    assert lines[1].split() == ["table", "expectation", "column", "expected", "observed"]
    assert lines[3].split()[:3] == ["flights", "expect_column_values_to_be_between", "distance"]
    assert "min_value=0" in lines[3] and "5 unexpected" in lines[3]


def test_every_repository_suite_loads(cfg):
    for name in ("flights", "weather", "planes", TRAINING_SET):
        suite = load_suite(suite_path(cfg, name))
        assert suite.name == name and len(suite.expectations) > 20


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"name": "t", "expectations": [{"type": "expect_nothing_at_all", "kwargs": {}}]}, "#0 (expect_nothing_at_all)"),
        ({"name": "t", "expectations": [{"type": "expect_column_values_to_be_between", "kwargs": {"colum": "a"}}]},
         "is invalid"),
        ({"name": "t", "expectations": [{"type": "expect_table_row_count_to_be_between", "kwargz": {}}]},
         "#0 (expect_table_row_count_to_be_between) is invalid"),
        ({"name": "t", "meta": {"kfops": {"volume": {"per_week": 3}}}, "expectations": []}, "meta.kfops"),
        ({"name": "t"}, "'expectations' list"),
    ],
)
def test_suite_mistakes_are_config_errors(tmp_path, content, message):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_suite(path)


def test_config_mistakes_fail_early(cfg, tables, tmp_path):
    with pytest.raises(ConfigError, match="no expectation suite"):
        validate_tables(tables, only(cfg, "airlines"))
    with pytest.raises(ConfigError, match=r"validation\.tables is empty"):
        validate_tables(tables, only(cfg))
    with pytest.raises(ValueError, match="label_rate_band"):
        KfopsConfig.model_validate({"validation": {"label_rate_band": [0.6, 0.1]}})
    with pytest.raises(ValueError, match="unknown time zone"):
        KfopsConfig.model_validate({"validation": {"window_timezone": "Mars/Olympus"}})


def test_cli_validates_one_file(tmp_path, tables, cfg):
    from kfops.cli.validate import app, validate_command

    assert [c.callback for c in app.registered_commands] == [validate_command]
    config = tmp_path / "kfops.yaml"
    write_example_config(config, data_dir=tmp_path / "state", dataset={"start": START, "end": END},
                         validation={"suites_dir": cfg.validation.suites_dir})
    clean = tmp_path / "flights.parquet"
    tables["flights"].to_parquet(clean)
    runner = CliRunner()
    ok = runner.invoke(app, ["--data", str(clean), "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "PASSED" in ok.output and (tmp_path / "state" / "validation" / "flights.html").is_file()

    broken = tmp_path / "january.csv"  # the table comes from --table, timestamps parsed from CSV
    corrupt_distance(tables["flights"]).to_csv(broken, index=False)
    failed = runner.invoke(app, ["--data", str(broken), "--table", "flights", "--config", str(config),
                                 "--report-dir", str(tmp_path / "out")])
    assert failed.exit_code != 0
    assert isinstance(failed.exception, ValidationFailed)
    assert "expect_column_values_to_be_between  distance" in failed.output
    assert (tmp_path / "out" / "flights.html").is_file()


def test_cli_validates_a_folder_of_parquet_files_and_names_a_folder_without_any(tmp_path, tables, cfg):
    from kfops.cli.validate import app
    from kfops.errors import DataError

    config = tmp_path / "kfops.yaml"
    write_example_config(config, data_dir=tmp_path / "state", dataset={"start": START, "end": END},
                         validation={"suites_dir": cfg.validation.suites_dir})
    folder = tmp_path / "flights"  # one table in parts, as a partitioned writer leaves it
    folder.mkdir()
    flights = tables["flights"]
    half = len(flights) // 2
    flights.iloc[:half].to_parquet(folder / "part-0.parquet")
    flights.iloc[half:].to_parquet(folder / "part-1.parquet")
    runner = CliRunner()
    ok = runner.invoke(app, ["--data", str(folder), "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert f"({len(flights):,} rows)" in ok.output and "PASSED" in ok.output

    empty = tmp_path / "weather"
    empty.mkdir()
    (empty / "notes.txt").write_text("no data here")
    refused = runner.invoke(app, ["--data", str(empty), "--config", str(config)])
    assert isinstance(refused.exception, DataError)
    assert "is a folder without parquet files" in str(refused.exception) and "does not exist" not in str(refused.exception)


def test_cli_names_a_missing_file_before_any_suite_and_a_file_named_otherwise_needs_table(tmp_path, tables, cfg):
    """`kfops validate --data my_flights.parquet` was refused for want of a suite 'my_flights', even
    when the file was missing: the file is named first, and an unknown stem names the suites."""
    from kfops.cli.validate import app
    from kfops.errors import ConfigError, DataError

    config = tmp_path / "kfops.yaml"
    write_example_config(config, data_dir=tmp_path / "state", dataset={"start": START, "end": END},
                         validation={"suites_dir": cfg.validation.suites_dir})
    runner = CliRunner()
    missing = runner.invoke(app, ["--data", str(tmp_path / "my_flights.parquet"), "--config", str(config)])
    assert isinstance(missing.exception, DataError), missing.output
    assert f"data file {tmp_path / 'my_flights.parquet'} does not exist" in str(missing.exception)
    assert "suite" not in str(missing.exception)

    mine = tmp_path / "my_flights.parquet"
    tables["flights"].to_parquet(mine)
    unnamed = runner.invoke(app, ["--data", str(mine), "--config", str(config)])
    assert isinstance(unnamed.exception, ConfigError), unnamed.output
    assert "'my_flights'" in str(unnamed.exception)
    assert unnamed.exception.hint == "pass --table, one of: flights, planes, weather"  # not training_set

    named = runner.invoke(app, ["--data", str(mine), "--table", "flights", "--config", str(config)])
    assert named.exit_code == 0, named.output
    assert "PASSED" in named.output


def test_a_csv_with_day_first_times_is_read_as_the_loaders_read_it(tmp_path, tables, cfg):
    """`kfops validate --data` read CSV times with pandas' guess from the first value: '01/01/2013
    05:00' made it month first, '13/01/2013' then failed, and the column was reported as text that
    is not a timestamp, though kfops' own loaders read it day first."""
    from kfops.adapters.gx_validation import read_table_file

    suite = load_suite(suite_path(cfg, "flights"))
    (column,) = [c for c in suite.datetime_columns() if c in tables["flights"].columns]
    flights = tables["flights"]
    day_first = flights.assign(**{column: flights[column].dt.strftime("%d/%m/%Y %H:%M")})
    day_first.to_csv(tmp_path / "flights.csv", index=False)
    read = read_table_file(tmp_path / "flights.csv", suite)
    assert read[column].equals(flights[column].dt.tz_convert("UTC").astype(read[column].dtype))
    result = validate_tables({"flights": read}, only(cfg, "flights"))
    assert result.failures == [], format_failures(result)

    # One value no format reads: the column stays text, so the type check names it with examples.
    day_first.loc[3, column] = "soon"
    day_first.to_csv(tmp_path / "late.csv", index=False)
    assert read_table_file(tmp_path / "late.csv", suite)[column].tolist()[3] == "soon"
