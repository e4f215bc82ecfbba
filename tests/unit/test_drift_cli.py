"""`kfops drift check` end to end on files: verdict, report, table and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kfops.cli.drift import app, read_table
from kfops.errors import DataError


@pytest.fixture
def windows(tmp_path, monkeypatch):
    """A reference parquet and two current windows (CSV): summer (warmer, more humid) and winter."""
    monkeypatch.chdir(tmp_path)  # no kfops.yaml up the tree: defaults, data_dir under tmp_path
    monkeypatch.delenv("KFOPS_CONFIG", raising=False)
    rng = np.random.default_rng(5)

    def frame(temp_mean: float, humid_mean: float, rows: int = 3000) -> pd.DataFrame:
        return pd.DataFrame({
            "temp": rng.normal(temp_mean, 10, rows),
            "humid": rng.normal(humid_mean, 15, rows),
            "origin": rng.choice(["EWR", "JFK", "LGA"], rows),
        })

    frame(40, 60).to_parquet(tmp_path / "reference.parquet")
    frame(75, 72).to_csv(tmp_path / "summer.csv", index=False)
    frame(40, 60).to_csv(tmp_path / "winter.csv", index=False)
    return tmp_path


def test_check_writes_verdict_and_report_and_prints_the_drifted_columns(windows):
    out = windows / "out"
    result = CliRunner().invoke(app, ["check", "--reference", str(windows / "reference.parquet"),
                                      "--current", str(windows / "summer.csv"), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "temp" in result.output and "wasserstein" in result.output
    assert "DRIFT" in result.output and str(out / "drift_report.html") in result.output
    verdict = json.loads((out / "drift_verdict.json").read_text())
    assert verdict["drift"] is True and verdict["drifted_columns"] == ["temp", "humid"]
    assert verdict["html_report"] == str(out / "drift_report.html")
    assert "kfops drift verdict" in (out / "drift_report.html").read_text()


def test_fail_on_drift_sets_the_exit_code_only_when_there_is_drift(windows):
    base = ["check", "--reference", str(windows / "reference.parquet"), "--no-html", "--fail-on-drift"]
    drifted = CliRunner().invoke(app, [*base, "--current", str(windows / "summer.csv")])
    calm = CliRunner().invoke(app, [*base, "--current", str(windows / "winter.csv"), "--all-columns"])
    assert drifted.exit_code == 1, drifted.output
    assert calm.exit_code == 0, calm.output
    assert "NO DRIFT" in calm.output and "origin" in calm.output  # --all-columns lists the calm ones too
    # Without --output-dir the verdict goes under data_dir/drift/<time>.
    assert len(list((windows / ".kfops" / "drift").glob("*/drift_verdict.json"))) >= 1


def test_set_overrides_reach_the_drift_config(windows):
    out = windows / "strict"
    result = CliRunner().invoke(app, ["check", "--reference", str(windows / "reference.parquet"),
                                      "--current", str(windows / "winter.csv"), "--output-dir", str(out),
                                      "--no-html", "--set", "drift.numerical_threshold=0.0001",
                                      "--set", "drift.sample_size=10000"])
    assert result.exit_code == 0, result.output
    verdict = json.loads((out / "drift_verdict.json").read_text())
    assert verdict["config"]["sample_size"] == 10000
    assert {c["column"]: c["threshold"] for c in verdict["columns"]}["temp"] == 0.0001
    assert "temp" in verdict["drifted_columns"]  # a threshold that small flags sampling noise


def test_unreadable_inputs_are_data_errors(windows):
    (windows / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="does not exist"):
        read_table(windows / "missing.parquet")
    with pytest.raises(DataError, match="neither parquet nor CSV"):
        read_table(windows / "notes.txt")
    (windows / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot read"):
        read_table(windows / "broken.parquet")
    result = CliRunner().invoke(app, ["check", "--reference", str(windows / "missing.parquet"),
                                      "--current", str(windows / "winter.csv")])
    assert isinstance(result.exception, DataError)
