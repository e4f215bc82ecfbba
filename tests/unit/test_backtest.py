"""The policy backtest: month arithmetic, policies, outputs, and a real (sampled) replay via the CLI."""

import datetime as dt

import pandas as pd
import pytest
from typer.testing import CliRunner

from kfops.backtest import (
    BacktestResult,
    MonthResult,
    markdown_table,
    month_starts,
    parse_month,
    plot,
    policy_for,
)
from kfops.config import KfopsConfig
from kfops.errors import ConfigError
from kfops.retrain_policy import DriftSummary, decide
from tests.conftest import REPO_ROOT


def test_months_parse_and_enumerate_across_a_year_end():
    assert parse_month("2013-02") == dt.date(2013, 2, 1)
    with pytest.raises(ConfigError, match="YYYY-MM"):
        parse_month("Feb 2013")
    assert [m.isoformat() for m in month_starts(dt.date(2012, 11, 1), dt.date(2013, 2, 1))] == \
        ["2012-11-01", "2012-12-01", "2013-01-01", "2013-02-01"]


def test_policies_decide_as_named():
    cfg = KfopsConfig()
    at = [dt.datetime(2013, m, 1, tzinfo=dt.UTC) for m in (3, 4, 5)]
    no_drift = DriftSummary(drift=False)
    for name, expected in (("monthly", [True, True, True]), ("never", [False, False, False])):
        history = []
        for moment in at:
            history.append(decide(history, no_drift, moment, policy_for(name, cfg)))
        assert [d.retrain for d in history] == expected, name
    drifted = DriftSummary(drift=True, report="r")
    history = []
    for moment in at:  # the configured debounce (2) holds the first drifted month back
        history.append(decide(history, drifted, moment, policy_for("drift", cfg)))
    assert [d.code for d in history] == ["debounce", "drift_confirmed", "debounce"]
    with pytest.raises(ConfigError, match="unknown policy"):
        policy_for("weekly", cfg)


def _result() -> BacktestResult:
    rows = []
    for policy, retrained in (("drift", [False, True]), ("never", [False, False])):
        for month, flag in zip(("2013-02", "2013-03"), retrained, strict=True):
            rows.append(MonthResult(policy=policy, month=month, rows=10, champion=1, roc_auc=0.7, drift=True,
                                    drifted_columns=3, drift_reason="x|y", decision="d", retrained=flag,
                                    promoted=flag))
    return BacktestResult(rows)


def test_totals_table_and_plot(tmp_path):
    result = _result()
    totals = result.totals().set_index("policy")
    assert totals.loc["drift", "retrains"] == 1 and totals.loc["never", "retrains"] == 0
    table = markdown_table(result.frame()[["policy", "month", "roc_auc", "drift_reason", "promoted"]])
    assert table.splitlines()[2] == "| drift | 2013-02 | 0.7000 | x/y | no |"
    png = plot(result, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_replays_sampled_months_for_every_policy(tmp_path):
    from kfops.cli.backtest import app

    args = ["--from", "2013-02", "--to", "2013-03", "--sample", "0.1", "-o", str(tmp_path / "out"),
            "--config", str(REPO_ROOT / "kfops.yaml"), "--set", f"data_dir={tmp_path}",
            "--set", "train.xgboost.n_estimators=40", "--set", "evaluate.behavioural_checks=false"]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    frame = pd.read_csv(tmp_path / "out" / "backtest.csv")
    assert len(frame) == 6 and set(frame["policy"]) == {"drift", "monthly", "never"}
    by_policy = frame.groupby("policy")
    assert by_policy["retrained"].sum().to_dict() == {"drift": frame[frame.policy == "drift"].retrained.sum(),
                                                     "monthly": 2, "never": 0}
    # February is served by the same January champion under every policy.
    february = frame[frame["month"] == "2013-02"]
    assert february["roc_auc"].nunique() == 1 and february["champion"].eq(1).all()
    # A promotion changes the champion for the next month; without one it stays.
    for _, part in by_policy:
        first, second = part.sort_values("month").to_dict("records")
        assert second["champion"] == first["champion"] + int(first["promoted"])
    assert (tmp_path / "out" / "backtest.png").stat().st_size > 0
    assert "## Totals" in (tmp_path / "out" / "backtest.md").read_text()
