"""Shared set-up of the retraining pipeline's end-to-end tests: a data dir and a January champion
per test module. Each module says which retrain policy it runs with (``retrain_overrides``)."""

from __future__ import annotations

import pytest

from kfops.config import load_config
from tests.conftest import REPO_ROOT, free_port


@pytest.fixture(scope="module")
def config(tmp_path_factory, retrain_overrides):
    data_dir = tmp_path_factory.mktemp("kfops-retraining")
    base = [f"data_dir={data_dir}", f"serving.http_port={free_port()}", "evaluate.gate.min_roc_auc=0.5",
            *retrain_overrides]

    def make(*extra: str):
        return load_config(REPO_ROOT / "kfops.yaml", [*base, *extra], environ={})

    yield make
    from kfops.serving.local.process import stop_server

    stop_server(make())


@pytest.fixture(scope="module")
def champion(config, tmp_path_factory):
    """The January champion, trained with the training pipeline's own step functions in one process
    (tests/e2e/test_training_pipeline.py covers that pipeline under kfp.local; this saves minutes)."""
    from kfops.steps.evaluate import evaluate
    from kfops.steps.featurize import featurize
    from kfops.steps.ingest import ingest
    from kfops.steps.register import register
    from kfops.steps.train import train
    from kfops.steps.validate import validate

    cfg = config("dataset.start=2013-01-01", "dataset.end=2013-01-14")
    work = tmp_path_factory.mktemp("champion")
    raw, training_set = work / "raw", work / "training_set.parquet"
    manifest = ingest(cfg, raw)
    validate(cfg, raw, work / "report.html", work / "summary.json")
    featurize(cfg, raw, work / "sources", training_set)
    run_id = train(cfg, training_set, work / "model", "champion-run", manifest["data_hash"])
    evaluate(cfg, training_set, work / "model", run_id, work / "verdict.json", work / "plots.html")
    registered = register(cfg, run_id, work / "verdict.json", work / "summary.json", raw / "manifest.json",
                                "champion-run")
    assert registered["version"] == "1" and registered["promoted"]
    return cfg
