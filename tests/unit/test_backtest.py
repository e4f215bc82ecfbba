"""The policy backtest: month arithmetic, policies, outputs, and a real (sampled) replay via the CLI."""

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kfops.core.retrain_policy import DriftSummary, decide
from kfops.errors import ConfigError, DataError
from kfops.runners.backtest import (
    MONTH_COLUMN,
    BacktestResult,
    MonthResult,
    gate_summary,
    markdown_table,
    month_drift_report,
    month_starts,
    parse_month,
    plot,
    policy_for,
    split_months,
    write_outputs,
)
from tests.conftest import REPO_ROOT
from tests.support.example import example_config


def test_months_parse_and_enumerate_across_a_year_end():
    assert parse_month("2013-02") == dt.date(2013, 2, 1)
    with pytest.raises(ConfigError, match="YYYY-MM"):
        parse_month("Feb 2013")
    assert [m.isoformat() for m in month_starts(dt.date(2012, 11, 1), dt.date(2013, 2, 1))] == \
        ["2012-11-01", "2012-12-01", "2013-01-01", "2013-02-01"]


def test_policies_decide_as_named():
    cfg = example_config()
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
    assert policy_for("default", cfg) is cfg.retrain
    for name in ("observed", "estimated", "weighted_drift", "prediction_drift", "challenger"):
        single = policy_for(name, cfg)
        assert (single.mode, single.triggers, single.debounce) == ("performance", [name], cfg.retrain.debounce)


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
    assert np.isnan(totals.loc["drift", "label_free_coverage"])  # no interval, no coverage
    result.months[0].label_free_low, result.months[0].label_free_high = 0.65, 0.75  # holds 0.7
    result.months[1].label_free_low, result.months[1].label_free_high = 0.72, 0.80
    assert result.totals().set_index("policy").loc["drift", "label_free_coverage"] == 0.5
    table = markdown_table(result.frame()[["policy", "month", "roc_auc", "drift_reason", "promoted"]])
    assert table.splitlines()[2] == "| drift | 2013-02 | 0.7000 | x/y | no |"
    png = plot(result, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_held_out_months_are_the_users_choice_not_a_built_in_calendar(tmp_path):
    months = ["2024-11", "2024-12", "2025-01", "2025-02"]
    assert split_months(months, "2025-01") == (["2024-11", "2024-12"], ["2025-01", "2025-02"])
    assert split_months(months, None) == (months, [])  # no split unless asked for
    assert split_months(months, "2026-01") == (months, [])
    with pytest.raises(ConfigError, match="YYYY-MM"):
        split_months(months, "January")
    result = _result()
    plain = write_outputs(result, tmp_path / "plain")["markdown"].read_text()
    assert "tuning months" not in plain and "held-out months" not in plain
    split = write_outputs(result, tmp_path / "split", held_out_from="2013-03")["markdown"].read_text()
    assert "## Totals, tuning months (2013-02..2013-02)" in split
    assert "## Totals, held-out months (2013-03..2013-03)" in split


def test_the_help_names_every_policy():
    from kfops.cli.backtest import app
    from kfops.runners.backtest import POLICIES

    text = " ".join(CliRunner().invoke(app, ["--help"], terminal_width=400).output.split())
    assert all(policy in text for policy in POLICIES), text
    assert "challenger" in text


def test_a_bad_held_out_month_fails_before_anything_is_replayed(tmp_path, capsys):
    from kfops.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["backtest", "--from", "2013-02", "--to", "2013-03", "--held-out-from", "July",
              "--config", str(REPO_ROOT / "kfops.yaml"), "--set", f"data_dir={tmp_path}", "-o", str(tmp_path / "out")])
    assert exited.value.code == 2  # a usage error
    assert "month 'July' must look like YYYY-MM" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was built or replayed


def test_a_month_says_what_happened_and_the_gate_says_why():
    row = MonthResult(policy="drift", month="2013-03", rows=10, champion=1, roc_auc=0.71234, drift=True,
                      drifted_columns=3, drift_reason="", decision="drift_confirmed", retrained=True, promoted=False)
    assert row.describe() == "drift 2013-03: champion #1 AUC 0.7123, drift yes -> gate refused"
    reasons = ["PASS floor:roc_auc: 0.70 >= 0.65", "FAIL improvement:roc_auc: -0.01", "FAIL slices: month=3"]
    assert gate_summary(False, reasons) == "NOT BLESSED: FAIL improvement:roc_auc: -0.01; FAIL slices: month=3"
    assert gate_summary(True, reasons[:1]) == "BLESSED: PASS floor:roc_auc: 0.70 >= 0.65"
    assert len(gate_summary(False, ["FAIL " + "x" * 500])) == 400


def test_a_months_drift_report_compares_the_champions_month_with_that_month(monkeypatch, tmp_path):
    import kfops.reports.drift

    cfg = example_config()
    months = ["2013-01"] * 3 + ["2013-02"] * 2 + ["2013-03"] * 4
    frame = pd.DataFrame({column: range(len(months)) for column in cfg.feature_columns})
    frame[cfg.dataset.label] = [0, 1] * 4 + [0]
    frame["flight_id"] = range(len(months))
    frame[cfg.dataset.event_timestamp] = pd.Timestamp("2013-01-01", tz="UTC")
    frame[MONTH_COLUMN] = months
    row = MonthResult(policy="drift", month="2013-03", rows=4, champion=2, roc_auc=0.7, drift=True, drifted_columns=1,
                      drift_reason="", decision="d", retrained=False, champion_month="2013-02")
    check = object()
    result = BacktestResult([row], checks={("drift", "2013-03"): check}, data=frame)
    seen = {}

    def fake_render(reference, current, given, html_path):
        seen.update(reference=reference, current=current, check=given)
        return html_path

    monkeypatch.setattr(kfops.reports.drift, "render_report", fake_render)
    assert month_drift_report(cfg, result, "drift", "2013-03", tmp_path / "r.html") == tmp_path / "r.html"
    assert seen["check"] is check
    assert len(seen["reference"]) == 2 and len(seen["current"]) == 4  # February's champion, March's data
    assert list(seen["current"].columns) == [*cfg.feature_columns, cfg.drift.label_column]  # no ids, no month tag
    # A champion that trained on an earlier month (a long label delay) is compared with that month.
    result.sources["2013-02"] = "2013-01"
    month_drift_report(cfg, result, "drift", "2013-03", tmp_path / "r.html")
    assert len(seen["reference"]) == 3
    with pytest.raises(DataError, match="no month 2013-04"):
        month_drift_report(cfg, result, "drift", "2013-04", tmp_path / "r.html")


@pytest.mark.slow  # trains and replays 6 policy-months: ~30 s on 2 busy cores
def test_cli_replays_sampled_months_for_every_policy(tmp_path, monkeypatch):
    from kfops.cli.backtest import app

    monkeypatch.setenv("KFOPS_PROGRESS", "plain")
    # No --from/--to: the months of the dataset's window after the first (January trains the champion).
    args = ["--sample", "0.1", "-o", str(tmp_path / "out"),
            "--config", str(REPO_ROOT / "kfops.yaml"), "--set", f"data_dir={tmp_path}",
            "--set", "dataset.start=2013-01-01", "--set", "dataset.end=2013-03-31",
            "--set", "train.xgboost.n_estimators=40", "--set", "evaluate.behavioural_checks=false",
            "-p", "default", "-p", "monthly", "-p", "never", "--held-out-from", "2013-03"]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    # One progress line per policy and month, as it lands (on stderr; the totals go to stdout).
    assert "backtest: 2013-02..2013-03 (from dataset.start..end" in outcome.stderr
    lines = [line for line in outcome.stderr.splitlines() if line.startswith("backtest: ") and "/6 months" in line]
    assert [line.split(" (")[0] for line in lines] == [f"backtest: {n}/6 months" for n in range(1, 7)]
    assert all(" -> " in line and "champion #" in line for line in lines)
    assert "2013-03: champion #" in lines[-1] and lines[-1].split(") ", 1)[1].startswith("never 2013-03")
    frame = pd.read_csv(tmp_path / "out" / "backtest.csv")
    assert len(frame) == 6 and set(frame["policy"]) == {"default", "monthly", "never"}
    # Every decision keeps its evidence: the CBPE estimate and the observed AUC with its interval.
    assert frame["estimated_roc_auc"].between(0, 1).all() and frame["reference_roc_auc"].between(0, 1).all()
    assert (frame["observed_diff_low"] <= frame["observed_diff_high"]).all()
    assert ((frame["estimated_roc_auc_low"] < frame["estimated_roc_auc"])
            & (frame["estimated_roc_auc"] < frame["estimated_roc_auc_high"])).all()
    assert ((frame["label_free_low"] < frame["estimated_roc_auc_label_free"])
            & (frame["estimated_roc_auc_label_free"] < frame["label_free_high"])).all()
    inside = frame["roc_auc"].between(frame["label_free_low"], frame["label_free_high"])
    assert frame["label_free_covered"].tolist() == inside.tolist()
    retrained = frame[frame["retrained"]]
    assert retrained["gate"].str.match(r"(NOT )?BLESSED: (PASS|FAIL) ").all()
    assert frame["decision_reason"].str.len().gt(0).all() and frame["champion_month"].notna().all()
    # A refused shadow challenger names the gate checks it failed, as the drift step does (it said
    # only "does not pass the evaluate gate"; the champion was "vcurrent").
    refused = frame[frame["decision_reason"].str.contains("does not pass the evaluate gate")]
    assert len(refused) and refused["decision_reason"].str.contains(r"does not pass the evaluate gate \([a-z_]+:").all()
    assert not frame["decision_reason"].str.contains("vcurrent").any()
    by_policy = frame.groupby("policy")
    assert by_policy["retrained"].sum().to_dict() == {"default": frame[frame.policy == "default"].retrained.sum(),
                                                     "monthly": 2, "never": 0}
    # February is served by the same January champion under every policy.
    february = frame[frame["month"] == "2013-02"]
    assert february["roc_auc"].nunique() == 1 and february["champion"].eq(1).all()
    # A promotion changes the champion for the next month; without one it stays.
    for _, part in by_policy:
        first, second = part.sort_values("month").to_dict("records")
        assert second["champion"] == first["champion"] + int(first["promoted"])
    assert (tmp_path / "out" / "backtest.png").stat().st_size > 0
    assert "## Totals, all months" in (tmp_path / "out" / "backtest.md").read_text()
    assert "## Totals, held-out months (2013-03..2013-03)" in (tmp_path / "out" / "backtest.md").read_text()
    assert "held-out months (2013-03..2013-03; thresholds were tuned on the others):" in outcome.stdout


def test_a_backtest_from_the_first_month_of_data_says_the_champion_needs_the_month_before(tmp_path):
    """`--from` at the data's first month failed 'no rows for month <the month before>' with 'widen
    --from/--to or raise --sample', which no --sample mends: it says why, and which --from works."""
    from kfops.runners.backtest import replay

    cfg = example_config()
    frame = pd.DataFrame({MONTH_COLUMN: ["2024-03"] * 3 + ["2024-04"] * 3, cfg.dataset.label: [0, 1, 0] * 2})
    with pytest.raises(DataError) as raised:
        replay(cfg, frame, ["2024-03", "2024-04", "2024-05"], "2024-02", ["never"], tmp_path)
    message = str(raised.value)
    assert message.startswith("no rows for month 2024-02 in the backtest frame: the initial champion trains on "
                              "2024-02, the month before --from 2024-03")
    assert "first month with rows is 2024-03" in message
    assert raised.value.hint == "start one month after the first month with rows: --from 2024-04"
    assert "--sample" not in raised.value.hint
    with pytest.raises(DataError) as raised:
        replay(cfg, frame, ["2024-03"], "2024-02", ["never"], tmp_path)
    assert "--from 2024-04 and --to 2024-04 or later" in raised.value.hint
    with pytest.raises(DataError) as raised:
        replay(cfg, frame, ["2024-04", "2024-05"], "2024-03", ["never"], tmp_path)
    assert re.search(r"no rows for month 2024-05 .*months with rows: 2024-03\.\.2024-04",
                     f"{raised.value} {raised.value.hint}"), (str(raised.value), raised.value.hint)


def test_without_from_and_to_the_backtest_replays_the_datasets_window():
    """`--from` and `--to` were required, though the config already says which months the data holds."""
    from kfops.runners.backtest import default_months

    cfg = example_config()  # 2013-01-01..2013-12-31: January trains the first champion
    assert default_months(cfg) == ("2013-02", "2013-12")
    assert default_months(cfg.model_copy(update={"dataset": cfg.dataset.model_copy(
        update={"start": dt.date(2013, 3, 15), "end": dt.date(2013, 4, 2)})})) == ("2013-04", "2013-04")
    # A label delay of weeks holds back one more month for the first champion's labels.
    delayed = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"label_delay": dt.timedelta(days=30)})})
    assert default_months(delayed) == ("2013-03", "2013-12")
    one_month = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(
        update={"start": dt.date(2013, 3, 1), "end": dt.date(2013, 3, 31)})})
    with pytest.raises(ConfigError, match=r"2013-03-01\.\.2013-03-31\) leaves no month to replay") as raised:
        default_months(one_month)
    assert "--from and --to" in raised.value.hint


def test_a_window_of_one_month_is_refused_by_the_cli_before_anything_is_built(tmp_path, capsys):
    from kfops.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["backtest", "--config", str(REPO_ROOT / "kfops.yaml"), "--set", f"data_dir={tmp_path}",
              "--set", "dataset.start=2013-05-01", "--set", "dataset.end=2013-05-31", "-o", str(tmp_path / "out")])
    assert exited.value.code == 2
    assert "leaves no month to replay" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_months_of_the_window_start_at_the_first_with_a_champion_to_replay_against(tmp_path):
    """A window starting on 2023-12-31 (a time zone ahead of UTC) made December the first champion's
    month, with a day of rows: `kfops backtest` without --from failed 'no month up to 2024-01 has 200
    rows whose labels exist'. The months it chooses itself now start at the first that has one."""
    from kfops.runners.backtest import ModelBank, _from_the_first_champion, parse_month

    cfg = example_config()
    label, time = cfg.dataset.label, cfg.dataset.event_timestamp

    def month(first_day: str, rows: int) -> pd.DataFrame:
        stamps = pd.date_range(first_day, periods=rows, freq="h", tz="UTC")
        return pd.DataFrame({time: stamps, label: [int(i % 4 == 0) for i in range(rows)], MONTH_COLUMN:
                             stamps.strftime("%Y-%m")})

    by_month = {"2023-12": month("2023-12-31T01:00", 20), "2024-01": month("2024-01-01", 600),
                "2024-02": month("2024-02-01", 600), "2024-03": month("2024-03-01", 600)}
    bank = ModelBank(cfg, by_month, tmp_path)
    skipped: list[tuple[str, str]] = []
    months, initial = _from_the_first_champion(bank, ["2024-01", "2024-02", "2024-03"], parse_month("2023-12"),
                                               lambda m, why: skipped.append((m, why)))
    assert (months, initial) == (["2024-02", "2024-03"], parse_month("2024-01"))
    assert [m for m, _ in skipped] == ["2024-01"]
    assert re.match(r"no champion to replay it against: no month up to 2023-12 has 200 rows .*\(2023-12: only \d+ "
                    r"of its rows have labels at 2023-12's check", skipped[0][1]), skipped[0][1]
    # Months the user chose are not changed: replay says why the first fails (no on_skip there).
    with pytest.raises(DataError, match="no month up to 2023-12 has 200 rows"):
        _from_the_first_champion(ModelBank(cfg, {"2023-12": by_month["2023-12"]}, tmp_path), ["2024-01"],
                                 parse_month("2023-12"), lambda m, why: None)
