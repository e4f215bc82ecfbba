"""The retraining pipeline under kfp.local with the example's default policy: the `challenger`
trigger (a shadow challenger trained and judged inside the drift step) and CBPE.

A champion is trained on 2013-01-01..14; July is checked. The decision must carry the shadow
challenger's evidence, decide on it alone (the estimate is reported), and the nested training
pipeline must run exactly when the shadow passed the gate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfops.runners.local import run_locally

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TRAINING_TASKS = {"ingest", "validate", "featurize", "train", "evaluate"}


@pytest.fixture(scope="module")
def retrain_overrides() -> list[str]:
    """This module keeps the example's retrain policy (kfops.yaml)."""
    return []


def test_july_is_decided_by_a_shadow_challenger(config, champion):
    cfg = config("dataset.start=2013-07-01", "dataset.end=2013-07-14")
    assert cfg.retrain.mode == "performance" and "challenger" in cfg.retrain.triggers
    run = run_locally(cfg, "retraining", on_event=lambda line: None)

    decision = json.loads(Path(run.outputs["drift"]["decision"]).read_text())
    signals = decision["signals"]
    labelled = signals["observed_rows"]  # every July row is labelled at a check made today
    assert labelled > 10_000 and signals["challenger_rows"] == labelled
    assert 0.5 < signals["challenger_roc_auc"] < 1 and 0.5 < signals["challenger_champion_roc_auc"] < 1
    assert "estimated_roc_auc_label_free" in signals and "estimated_roc_auc" in signals
    blessed = signals["challenger_blessed"] == 1.0
    assert decision["retrain"] is blessed and run.outputs["drift"]["Output"] is blessed
    if blessed:
        assert decision["triggered_by"] == ["challenger"], decision  # the estimate is reported only
        assert "passes the evaluate gate" in decision["reason"]
        assert set(run.outputs) >= TRAINING_TASKS, f"training did not run: {sorted(run.outputs)}"
    else:
        assert decision["code"] == "no_signal" and "does not pass the evaluate gate" in decision["reason"]
        assert "the shadow challenger on labelled rows decides" in decision["reason"]
        assert not TRAINING_TASKS & set(run.outputs), f"training ran without a trigger: {sorted(run.outputs)}"
