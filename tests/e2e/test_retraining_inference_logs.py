"""The retraining pipeline under kfp.local on the inference log (`drift.current_source=inference_logs`).

A champion is trained on 2013-01-01..14. A batch job scores July's raw flights with
`kfops predict --raw --log`; the retraining pipeline, configured to read the inference log over the
days those predictions were made, must check them (summer weather drifts from January's) and
decide with the label-free evidence alone. Its policy (debounce 2) holds the first drift back, so
no training starts on a window of today's dates, which the 2013 example data does not have.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from kfops.runners.local import run_locally

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TRAINING_TASKS = {"ingest", "validate", "featurize", "train", "evaluate"}


@pytest.fixture(scope="module")
def retrain_overrides() -> list[str]:
    return ["retrain.mode=drift", "retrain.debounce=2"]


@pytest.fixture(scope="module")
def logged_july(config, champion, tmp_path_factory):
    """July's flights, featurized as a training run would, scored as raw rows by `kfops predict --raw --log`."""
    from kfops.cli import main
    from kfops.steps.featurize import featurize
    from kfops.steps.ingest import ingest

    cfg = config("dataset.start=2013-07-01", "dataset.end=2013-07-07")
    work = tmp_path_factory.mktemp("july")
    ingest(cfg, work / "raw")
    featurize(cfg, work / "raw", work / "sources", work / "training_set.parquet")
    flights = pd.read_parquet(work / "training_set.parquet").sample(3000, random_state=2)
    raw = pd.DataFrame({
        "carrier": flights["carrier"], "origin": flights["origin"], "dest": flights["dest"],
        "distance": flights["distance"], "tailnum": flights["tailnum"], "flight": flights["flight"],
        "sched_dep": flights["event_timestamp"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%dT%H:%M"),
    })
    raw.to_parquet(work / "july.parquet", index=False)
    try:
        main(["predict", "--raw", "-i", str(work / "july.parquet"), "-o", str(work / "scored.parquet"), "--log",
              "--sources", str(work / "sources"), "--set", f"data_dir={cfg.data_dir}",
              "--set", f"serving.http_port={cfg.serving.http_port}"])
    except SystemExit as exited:
        assert not exited.code, f"kfops predict exited {exited.code}"
    return pd.read_parquet(work / "scored.parquet")


def test_the_retraining_pipeline_checks_the_logged_predictions(config, champion, logged_july):
    today = dt.datetime.now(dt.UTC).date()
    cfg = config(f"dataset.start={today - dt.timedelta(days=1)}", f"dataset.end={today + dt.timedelta(days=1)}",
                 "drift.current_source=inference_logs")
    run = run_locally(cfg, "retraining", on_event=lambda line: None)

    decision = json.loads(Path(run.outputs["drift"]["decision"]).read_text())
    assert decision["current_source"] == "inference_logs"  # from the config: the run sent no parameter
    assert decision["current_window"] == [str(today - dt.timedelta(days=1)), str(today + dt.timedelta(days=1))]
    assert decision["reference_window"] == ["2013-01-01", "2013-01-14"]  # the champion's
    assert decision["metrics"]["current_rows"] == len(logged_july) == 3000
    verdict = json.loads(Path(run.outputs["drift"]["verdict"]).read_text())
    assert {"temp", "dewp"} & {c["column"] for c in verdict["columns"] if c["drifted"]}  # July against January
    # The logged scores are compared with the champion's on its own window.
    assert verdict["prediction"]["source"] == cfg.drift.prediction_column
    assert verdict["prediction"]["current_mean"] == pytest.approx(logged_july["probability"].mean())
    # Unlabelled rows: nothing measured, the label-free estimate reported.
    signals = decision["signals"]
    assert signals.get("observed_rows", 0) == 0 and "estimated_roc_auc_label_free" in signals
    assert decision["drift"] is True and decision["retrain"] is False and decision["code"] == "debounce", decision
    assert run.outputs["drift"]["Output"] is False
    assert not TRAINING_TASKS & set(run.outputs), f"training ran: {sorted(run.outputs)}"
