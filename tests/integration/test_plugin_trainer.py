"""A trainer of your own, end to end: a project `kfops init` wrote, with `train.trainer` set to the
logistic regression in tests/support/logistic_trainer.py (copied beside its kfops.yaml, as a user's
would be), trained by the real training pipeline (kfp.local), registered, served, and replayed by
`kfops backtest`. docs/trainers.md describes the contract.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from kfops.config import load_config
from tests.conftest import free_port
from tests.integration.test_init_project import INIT_SHOP, kfops
from tests.support.shop_data import generate_shop

pytestmark = [pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[1] / "support" / "logistic_trainer.py"
TRAINER = "logistic_trainer:LogisticTrainer"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    work = tmp_path_factory.mktemp("kfops-plugin")
    generate_shop(work / "lake", start="2024-01-01", days=120, orders_per_day=60, customers=400)
    done = kfops(*INIT_SHOP, cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    project = work / "shop"
    shutil.copy(EXAMPLE, project / "logistic_trainer.py")
    config = project / "kfops.yaml"
    written = yaml.safe_load(config.read_text())
    written["train"] = {"trainer": TRAINER, "params": {"C": [0.01, 1.0]}}
    config.write_text(yaml.safe_dump(written, sort_keys=False))
    port = free_port()
    overrides = ["--set", f"serving.http_port={port}"]
    run = kfops("run", "training", "-c", str(config), *overrides, cwd=work)  # from elsewhere: no PYTHONPATH
    cfg = load_config(config, [f"serving.http_port={port}"], environ={})
    yield {"work": work, "project": project, "config": config, "run": run, "cfg": cfg, "port": port}
    kfops("serve", "stop", "-c", str(config), *overrides, cwd=project, timeout=120)


def champion_folder(cfg) -> Path:
    import mlflow

    from kfops.adapters.mlflow_registry import fetch_version_dir

    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    champion = client.get_model_version_by_alias(cfg.registry.model_name, "champion")
    return Path(fetch_version_dir(cfg, champion.version))


def test_the_training_pipeline_trains_registers_and_serves_the_plugins_model(shop):
    run, cfg = shop["run"], shop["cfg"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "gate           BLESSED" in run.stdout
    folder = champion_folder(cfg)
    meta = json.loads((folder / "kfops_model.json").read_text())
    assert meta["trainer"] == TRAINER and (folder / "plugin" / "logistic.json").is_file()
    weights = json.loads((folder / "plugin" / "logistic.json").read_text())
    assert len(weights["coef"]) > len(weights["numeric"])  # the categories were one-hot encoded
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri)
    version = client.get_model_version_by_alias(cfg.registry.model_name, "champion")
    params = client.get_run(version.run_id).data.params
    assert params["trainer"] == TRAINER and params["params.C"] == "[0.01, 1.0]"


def test_the_server_answers_a_raw_request_with_the_plugins_probability(shop, monkeypatch):
    assert shop["run"].returncode == 0
    import pandas as pd

    from kfops.core.model import load_model, predict_proba

    cfg, url = shop["cfg"], f"http://127.0.0.1:{shop['port']}"
    meta = httpx.get(f"{url}/v2/models/{cfg.registry.model_name}", timeout=30).json()
    assert meta["platform"] == f"kfops-{TRAINER}"
    lake = shop["work"] / "lake"
    customers = pd.read_csv(lake / "customers.csv")
    customer = customers[pd.to_datetime(customers["signup_at"], utc=True)
                         < pd.Timestamp(cfg.dataset.start, tz="UTC")].iloc[0]
    raw = {"customer_id": customer["customer_id"], "store_id": "S01", "amount": 120.5, "category": "apparel",
           "channel": "web", "items": 2}
    answer = httpx.post(f"{url}/v1/models/{cfg.registry.model_name}:predict", json={"instances": [raw]}, timeout=30)
    assert answer.status_code == 200, answer.text
    served = answer.json()["predictions"][0]["probability"]
    # The registered folder, loaded here with the plug-in, on the same row with its features joined.
    store = pd.read_parquet(lake / "stores.parquet").set_index("store_id").loc["S01"]
    vector = {**{k: v for k, v in raw.items() if k not in ("customer_id", "store_id")},
              "segment": customer["segment"], "age": customer["age"], "region": customer["region"],
              "store_type": store["store_type"], "size_sqm": float(store["size_sqm"])}
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading appends the project folder: not for other tests
    monkeypatch.delitem(sys.modules, "logistic_trainer", raising=False)
    model = load_model(champion_folder(cfg), cfg.train.plugins, shop["project"])
    sys.modules.pop("logistic_trainer", None)
    assert served == pytest.approx(float(predict_proba(model, pd.DataFrame([vector]))[0]), abs=1e-6)


def test_serve_start_from_another_folder_serves_the_plugins_model_even_over_a_running_xgboost_server(shop, tmp_path):
    """`kfops serve start -c shop/kfops.yaml` from the folder above failed: the server process read
    its config from JSON, which lost the project folder the plug-in imports from. And a server
    started before train.trainer named the plug-in took the new champion as a hot swap, which its
    old config refused: it is restarted with the new config instead."""
    assert shop["run"].returncode == 0
    from tests.support.serving_models import build_tiny_model

    config, port = str(shop["config"]), f"serving.http_port={shop['port']}"
    url = f"http://127.0.0.1:{shop['port']}/v2/models/{shop['cfg'].registry.model_name}"
    xgb = build_tiny_model(tmp_path / "xgb")
    before = kfops("serve", "start", "-c", config, "--set", port, "--set", "train.trainer=xgboost",
                   "--model-dir", str(xgb), "--online-lookup", "none", cwd=shop["work"])
    assert before.returncode == 0, before.stdout + before.stderr
    assert httpx.get(url, timeout=30).json()["platform"] == "kfops-xgboost"
    try:
        started = kfops("serve", "start", "-c", config, "--set", port, cwd=shop["work"])  # the champion
        assert started.returncode == 0, started.stdout + started.stderr
        assert httpx.get(url, timeout=30).json()["platform"] == f"kfops-{TRAINER}"
        stopped = kfops("serve", "stop", "-c", config, "--set", port, cwd=tmp_path)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    finally:  # the module's server, as the other tests expect it: the champion, started from elsewhere
        again = kfops("serve", "start", "-c", config, "--set", port, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert httpx.get(url, timeout=30).json()["platform"] == f"kfops-{TRAINER}"


def test_a_config_that_does_not_name_the_plugin_will_not_load_its_model(shop, tmp_path):
    """`kfops predict` with the project's config scores the champion; with train.trainer back at
    xgboost the champion's plug-in is not imported, and the error says which key to set."""
    assert shop["run"].returncode == 0
    import pandas as pd

    cfg = shop["cfg"]
    rows = pd.DataFrame([{"amount": 20.0, "category": "home", "channel": "store", "items": 1, "segment": None,
                          "age": None, "region": None, "store_type": None, "size_sqm": None}])
    rows.to_parquet(tmp_path / "rows.parquet")
    config, port = str(shop["config"]), f"serving.http_port={shop['port']}"
    scored = kfops("predict", "--input", str(tmp_path / "rows.parquet"), "--output", str(tmp_path / "out.parquet"),
                   "-c", config, "--set", port, cwd=tmp_path)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert 0 < pd.read_parquet(tmp_path / "out.parquet")["probability"].iloc[0] < 1
    refused = kfops("predict", "--input", str(tmp_path / "rows.parquet"), "--output", str(tmp_path / "no.parquet"),
                    "-c", config, "--set", port, "--set", "train.trainer=xgboost", cwd=tmp_path)
    assert refused.returncode != 0 and not (tmp_path / "no.parquet").exists()
    assert f"written by the plug-in trainer {TRAINER}" in refused.stderr and "train.also_load" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert cfg.train.plugins == (TRAINER,)


def test_the_backtest_replays_a_project_with_its_own_trainer(shop):
    out = shop["work"] / "bt"
    run = kfops("backtest", "--from", "2024-03", "--to", "2024-04", "-c", str(shop["config"]), "-p", "default",
                "-p", "monthly", "-o", str(out), "--cache-dir", str(shop["work"] / "cache"), cwd=shop["work"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    import pandas as pd

    frame = pd.read_csv(out / "backtest.csv")
    assert len(frame) == 4 and frame["roc_auc"].between(0.5, 1).all()
    assert frame.loc[frame["policy"] == "monthly", "retrained"].all()
    # Every model of the replay's bank (kept in the cache) was written by the plug-in.
    metas = list((shop["work"] / "cache").glob("*/models/*/kfops_model.json"))
    assert len(metas) >= 2, metas
    assert {json.loads(meta.read_text())["trainer"] for meta in metas} == {TRAINER}


def test_training_the_built_in_trainer_against_a_plugin_champion_is_refused_naming_also_load(shop):
    """With train.trainer back at xgboost, evaluate could not load the plug-in champion and the run
    failed (exit 1); the gate now refuses (exit 4, nothing registered) and says which key to set."""
    assert shop["run"].returncode == 0
    config, port = str(shop["config"]), f"serving.http_port={shop['port']}"
    run = kfops("run", "training", "-c", config, "--set", port, "--set", "train.trainer=xgboost", cwd=shop["work"])
    assert run.returncode == 4, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"FAIL champion:loadable: champion v1 was written by the plug-in trainer {TRAINER}" in run.stdout
    assert f"add {TRAINER} to train.also_load" in run.stdout and "registered     nothing" in run.stdout
