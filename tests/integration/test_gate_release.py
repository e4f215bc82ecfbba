"""The release process on real flights data, through the pipeline's own step functions:
a good first model becomes champion; a model trained on shuffled labels is refused with reasons;
bad data stops at validate and leaves the registry exactly as it was."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kfops.adapters import mlflow_registry as registry
from kfops.config import load_config
from kfops.errors import DataError, ValidationFailed
from kfops.steps.evaluate import evaluate
from kfops.steps.featurize import featurize
from kfops.steps.ingest import ingest
from kfops.steps.register import register
from kfops.steps.train import train
from kfops.steps.validate import validate
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    work = tmp_path_factory.mktemp("release")
    cfg = load_config(REPO_ROOT / "kfops.yaml", [f"data_dir={work / 'state'}", "dataset.end=2013-01-21",
                                                  "train.xgboost.n_estimators=150"], environ={})
    raw, training_set = work / "raw", work / "training_set.parquet"
    ingest(cfg, raw)
    validate(cfg, raw, work / "report.html", work / "summary.json")
    featurize(cfg, raw, work / "sources", training_set)
    run_id = train(cfg, training_set, work / "model", "run-good", "hash")
    summary = evaluate(cfg, training_set, work / "model", run_id, work / "verdict.json", work / "plots.html")
    assert summary["blessed"], summary["verdict"]["reasons"]
    result = register(cfg, run_id, work / "verdict.json", work / "summary.json", raw / "manifest.json", "run-good")
    return cfg, work, result


def test_first_blessed_model_becomes_champion(released):
    cfg, _, result = released
    assert result["created"] and result["promoted"]
    assert str(registry.champion(cfg).version) == result["version"]
    assert registry.audit_trail(cfg)[-1]["reason"] == "bootstrap: no champion existed"


def test_model_trained_on_shuffled_labels_is_refused_with_reasons(released):
    cfg, work, result = released
    frame = pd.read_parquet(work / "training_set.parquet")
    fit = frame["split"] != "test"
    rng = np.random.default_rng(0)
    frame.loc[fit, "label"] = rng.permutation(frame.loc[fit, "label"].to_numpy())
    shuffled = work / "shuffled.parquet"
    frame.to_parquet(shuffled, index=False)
    run_id = train(cfg, shuffled, work / "bad-model", "run-bad", "hash")
    summary = evaluate(cfg, shuffled, work / "bad-model", run_id, work / "bad.json", work / "bad.html")
    assert not summary["blessed"]
    reasons = summary["verdict"]["reasons"]
    assert any(r.startswith("FAIL floor:roc_auc") for r in reasons), reasons
    assert any(r.startswith("FAIL improvement:roc_auc") and f"champion v{result['version']}" in r for r in reasons)
    with pytest.raises(Exception, match="did not bless"):
        register(cfg, run_id, work / "bad.json", work / "summary.json", work / "raw" / "manifest.json", "run-bad")
    assert str(registry.champion(cfg).version) == result["version"]


CORRUPTIONS = {
    "dropped column": lambda f: f.drop(columns=["dest"]),
    "numbers as strings": lambda f: f.assign(distance=f["distance"].astype(str)),
    "null burst": lambda f: f.assign(carrier=f["carrier"].where(np.arange(len(f)) % 3 != 0)),
    "impossible value": lambda f: f.assign(distance=-f["distance"]),
    "unknown category": lambda f: f.assign(origin="XXX"),
    "duplicated keys": lambda f: pd.concat([f, f.head(200)]),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_raw_tables_stop_at_validate_and_change_nothing(released, case, tmp_path):
    cfg, work, _ = released
    client = registry.client(cfg)
    before = sorted(str(v.version) for v in client.search_model_versions(f"name='{cfg.registry.model_name}'"))
    champion = str(registry.champion(cfg).version)
    raw = tmp_path / "raw"
    raw.mkdir()
    for table in (work / "raw").glob("*.parquet"):
        frame = pd.read_parquet(table)
        if table.stem == "flights":
            frame = CORRUPTIONS[case](frame)
        frame.to_parquet(raw / table.name, index=False)
    with pytest.raises((ValidationFailed, DataError)) as failure:
        validate(cfg, raw, tmp_path / "report.html", tmp_path / "summary.json")
    assert "flights." in str(failure.value)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["success"] and summary["failures"]
    after = sorted(str(v.version) for v in client.search_model_versions(f"name='{cfg.registry.model_name}'"))
    assert after == before and str(registry.champion(cfg).version) == champion
