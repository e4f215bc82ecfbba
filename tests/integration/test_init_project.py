"""`kfops init` on a dataset unlike flights, then the same training pipeline on what it wrote.

A made-up shop (tests/support/shop_data.py): orders by customers at stores, two entities, and a
label from a later table (the order is returned within 30 days). The project is scaffolded by the
real CLI, trained by `kfops run training -c <project>/kfops.yaml` (kfp.local, from the project
folder, with no PYTHONPATH for the plug-in), and must come out registered, blessed and served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kfops.config import load_config
from kfops.core.files import plugin_sources_digest
from tests.conftest import free_port
from tests.support.shop_data import generate_shop

pytestmark = [pytest.mark.slow]

KFOPS = str(Path(sys.executable).with_name("kfops"))
# `kfops init` on the shop tables (tests/support/shop_data.py) in a folder holding them under lake/.
INIT_SHOP = ("init", "shop", "--table", "lake/orders.parquet:timestamp=ordered_at",
             "--table", "lake/customers.csv:timestamp=signup_at", "--table", "lake/stores.parquet",
             "--table", "lake/returns.csv:timestamp=returned_at", "--entity", "customer_id",
             "--entity", "store_id", "--label", "returned = returns within 30d on order_id")


def kfops(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "KFOPS_PROGRESS": "plain"}
    env.pop("KFOPS_PROJECT_DIR", None)  # the project is found from -c, as a user's would be
    return subprocess.run([KFOPS, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    work = tmp_path_factory.mktemp("kfops-init")
    generate_shop(work / "lake")
    done = kfops(
        "init", "shop",
        "--table", "lake/orders.parquet:timestamp=ordered_at",
        "--table", "lake/customers.csv:timestamp=signup_at",
        "--table", "lake/stores.parquet",
        "--table", "lake/returns.csv:timestamp=returned_at",
        "--entity", "customer_id", "--entity", "store_id",
        "--label", "returned = returns within 30d on order_id",
        cwd=work,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    project = work / "shop"
    port = free_port()
    overrides = ["--set", f"serving.http_port={port}"]
    run = kfops("run", "training", "-c", str(project / "kfops.yaml"), *overrides, cwd=project)
    cfg = load_config(project / "kfops.yaml", [f"serving.http_port={port}"], environ={})
    yield {"project": project, "init": done, "run": run, "cfg": cfg, "port": port}
    kfops("serve", "stop", "-c", str(project / "kfops.yaml"), *overrides, cwd=project, timeout=120)


def test_init_scaffolds_from_the_data(shop):
    project = shop["project"]
    out = shop["init"].stdout
    assert "view       customers by customer_id: segment, age, region" in out
    assert "view       stores by store_id: store_type, size_sqm" in out
    assert "request    amount, category, channel, items" in out
    cfg = shop["cfg"]
    # Declared once in the plug-in; feature_refs and the categorical features follow from it.
    assert cfg.features.feature_set == "shop_data:FEATURES"
    assert cfg.features.feature_refs == ["customers:segment", "customers:age", "customers:region",
                                         "stores:store_type", "stores:size_sqm"]
    assert {"segment", "region", "store_type", "category", "channel"} <= set(cfg.features.categorical)
    assert cfg.features.forbidden_columns == ["returned_at", "reason"]
    suites = {p.stem for p in (project / "expectations").glob("*.json")}
    assert suites == {"orders", "customers", "stores", "returns", "training_set"}


def test_training_registers_and_blesses_a_model(shop):
    run, cfg = shop["run"], shop["cfg"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "gate           BLESSED" in run.stdout
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    champion = client.get_model_version_by_alias(cfg.registry.model_name, "champion")
    assert str(champion.version) == "1"
    assert set(champion.tags["kfops.feature_views"].split(",")) == {"customers", "stores"}
    # The project's own code is in the lineage: a hash of its plug-in module, which it changes with.
    plugin = shop["project"] / "shop_data.py"
    assert champion.tags["kfops.project_code"] == plugin_sources_digest(["shop_data"], shop["project"])
    text = plugin.read_text()
    try:
        plugin.write_text(text + "\n# edited\n")
        assert plugin_sources_digest(["shop_data"], shop["project"]) != champion.tags["kfops.project_code"]
    finally:
        plugin.write_text(text)
    verdict_files = sorted(cfg.pipeline_root.glob("**/evaluate/verdict"))
    verdict = json.loads(verdict_files[-1].read_text())
    assert verdict["blessed"] and verdict["metrics"]["roc_auc"] >= 0.6


def test_server_answers_raw_requests_with_online_features(shop):
    """A raw request is the entity keys plus the request-time inputs; the server reads the rest
    (the customer's and the store's features) from the online store."""
    assert shop["run"].returncode == 0
    cfg = shop["cfg"]
    url = f"http://127.0.0.1:{shop['port']}"
    import pandas as pd

    lake = shop["project"].parent / "lake"
    customers = pd.read_csv(lake / "customers.csv")
    signed_up = pd.to_datetime(customers["signup_at"], utc=True) < pd.Timestamp(cfg.dataset.start, tz="UTC")
    customer = customers[signed_up].iloc[0]  # in the online store, which holds rows up to the window's end
    store = pd.read_parquet(lake / "stores.parquet").set_index("store_id").loc["S01"]
    rows = [
        {"customer_id": customer["customer_id"], "store_id": "S01",
         "amount": 120.5, "category": "apparel", "channel": "web", "items": 2},
        {"customer_id": "C0002", "store_id": "S02", "amount": 15.0, "category": "home", "channel": "store", "items": 1},
    ]
    v1 = httpx.post(f"{url}/v1/models/{cfg.registry.model_name}:predict", json={"instances": rows}, timeout=30)
    assert v1.status_code == 200, v1.text
    predictions = v1.json()["predictions"]
    assert len(predictions) == 2
    inputs = [{"name": name, "shape": [2], "datatype": "BYTES" if isinstance(rows[0][name], str) else "FP64",
               "data": [row[name] for row in rows]} for name in rows[0]]
    v2 = httpx.post(f"{url}/v2/models/{cfg.registry.model_name}/infer", json={"inputs": inputs}, timeout=30)
    assert v2.status_code == 200, v2.text
    probability = next(o for o in v2.json()["outputs"] if o["name"] == "probability")["data"]
    assert len(probability) == 2 and all(0 <= p <= 1 for p in probability)
    # The server joined the online features: the same answer as the full feature vector, built here
    # from the raw tables (the customer's and store S01's rows).
    vector = {**{k: v for k, v in rows[0].items() if k not in ("customer_id", "store_id")},
              "segment": customer["segment"], "age": None if pd.isna(customer["age"]) else float(customer["age"]),
              "region": customer["region"], "store_type": store["store_type"], "size_sqm": float(store["size_sqm"])}
    full = httpx.post(f"{url}/v1/models/{cfg.registry.model_name}:predict", json={"instances": [vector]}, timeout=30)
    assert full.status_code == 200, full.text
    assert full.json()["predictions"][0]["probability"] == pytest.approx(predictions[0]["probability"])


def test_a_scaffolded_project_backtests_with_its_label_delay(tmp_path):
    """`kfops backtest` on a project `kfops init` wrote: the plug-in beside kfops.yaml loads in the
    CLI's own process (no PYTHONPATH, run from elsewhere), and the label's 30-day horizon, which
    init writes as retrain.label_delay, holds: no check sees a label of its own month, and each
    model trains on the latest month whose labels exist at its check."""
    generate_shop(tmp_path / "lake", start="2024-01-01", days=120, orders_per_day=60, customers=400)
    done = kfops(*INIT_SHOP, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    config = tmp_path / "shop" / "kfops.yaml"
    assert load_config(config, environ={}).retrain.label_delay.days == 30
    out = tmp_path / "bt"
    run = kfops("backtest", "--from", "2024-03", "--to", "2024-04", "--held-out-from", "2024-04", "-c", str(config),
                "-p", "default", "-p", "monthly", "-o", str(out), "--set", "train.xgboost.n_estimators=30",
                cwd=tmp_path / "lake")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "the initial champion #1 trained at 2024-02's check on the" in run.stderr
    assert "rows of 2024-01 whose labels exist by then" in run.stderr
    assert "held-out months (2024-04..2024-04; thresholds were tuned on the others):" in run.stdout
    import pandas as pd

    frame = pd.read_csv(out / "backtest.csv")
    assert len(frame) == 4 and set(frame["month"]) == {"2024-03", "2024-04"}
    # A check sees the labels of the orders at least 30 days old only: of March, those of March 1.
    orders = pd.read_parquet(tmp_path / "lake" / "orders.parquet")
    placed = pd.to_datetime(orders["ordered_at"], utc=True)
    for month, check in (("2024-03", "2024-04-01"), ("2024-04", "2024-05-01")):
        in_month = placed.dt.strftime("%Y-%m") == month
        final = (in_month & (placed <= pd.Timestamp(check, tz="UTC") - pd.Timedelta(days=30))).sum()
        rows = frame[frame["month"] == month]
        assert (rows["rows"] == in_month.sum()).all() and (rows["observed_rows"] == final).all(), (month, final)
    assert frame["roc_auc"].between(0.5, 1).all()  # the realised AUC, judged after the fact, sees every label
    monthly = frame[frame["policy"] == "monthly"]
    assert monthly["retrained"].all()


def test_a_window_up_to_now_trains_only_on_final_labels(tmp_path, capsys):
    """Orders of the last 30 days may still come back: with the label delay `kfops init` wrote,
    featurize leaves them out of the training set (and says so), so no model learns 'kept' for
    an order whose return is still to come."""
    import datetime as dt

    import pandas as pd

    from kfops.steps.featurize import featurize
    from kfops.steps.ingest import ingest

    today = dt.datetime.now(dt.UTC).date()
    generate_shop(tmp_path / "lake", start=str(today - dt.timedelta(days=70)), days=60, orders_per_day=50,
                  customers=300)
    done = kfops(*INIT_SHOP, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # The generated returns run up to 45 days past the last order, so init's window reaches past now - 30d.
    cfg = load_config(tmp_path / "shop" / "kfops.yaml", [f"data_dir={tmp_path / 'state'}"], environ={})
    assert cfg.dataset.end > today - dt.timedelta(days=30)
    work = tmp_path / "work"
    ingest(cfg, work / "raw")
    capsys.readouterr()
    featurize(cfg, work / "raw", work / "sources", work / "training_set.parquet")
    frame = pd.read_parquet(work / "training_set.parquet")
    times = pd.to_datetime(frame[cfg.dataset.event_timestamp], utc=True)
    assert times.max() <= pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=30)
    printed = capsys.readouterr().out
    # 'kfops: ' puts the line on the terminal of a local run, not only in its log.
    assert "kfops: featurize: " in printed
    assert "rows left out: their labels are final only 30d after the event (retrain.label_delay)" in printed
    left_out = int(printed.split("featurize: ")[1].split(" of ")[0].replace(",", ""))
    assert left_out > 0 and len(frame) > 0


def test_a_dataset_of_one_table_trains_serves_and_backtests_without_feature_views(tmp_path):
    """A churn table alone (no table to join): init used to write a project whose featurize failed
    with 'returned no Feast objects'. Every feature is in the entity frame; a request carries them all."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = 3000
    plan = rng.choice(["basic", "pro", "enterprise"], rows)
    charges, tenure = rng.gamma(2, 30, rows).round(2), rng.integers(1, 60, rows)
    risk = -1.5 + (plan == "basic") + 0.01 * (charges - 60) - 0.03 * (tenure - 30)
    (tmp_path / "lake").mkdir()
    pd.DataFrame({
        "customer_id": rng.integers(1, 600, rows),
        "snapshot_at": pd.Timestamp("2024-01-01", tz="UTC")
        + pd.to_timedelta(np.sort(rng.uniform(0, 120 * 86400, rows)), unit="s"),
        "plan": plan, "monthly_charges": charges, "tenure": tenure,
        "churn": np.where(rng.random(rows) < 1 / (1 + np.exp(-risk)), "yes", "no"),
    }).to_parquet(tmp_path / "lake" / "snapshots.parquet", index=False)
    done = kfops("init", "churn", "--table", "lake/snapshots.parquet:timestamp=snapshot_at", "--entity", "customer_id",
                 "--label", "churned = churn == 'yes'", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    config = str(tmp_path / "churn" / "kfops.yaml")
    port = free_port()
    sets = ["--set", f"serving.http_port={port}"]
    try:
        run = kfops("run", "training", "-c", config, *sets, cwd=tmp_path)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "gate           BLESSED" in run.stdout
        cfg = load_config(config, [f"serving.http_port={port}"], environ={})
        assert cfg.features.feature_refs == []
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/models/{cfg.registry.model_name}:predict", timeout=30,
                            json={"instances": [{"plan": "basic", "monthly_charges": 70.5, "tenure": 3}]})
        assert answer.status_code == 200, answer.text
        assert 0 < answer.json()["predictions"][0]["probability"] < 1
        # A file of raw rows needs no join here: scored as the same rows are as feature rows.
        table = pd.read_parquet(tmp_path / "lake" / "snapshots.parquet").head(200)
        table[["customer_id", "plan", "monthly_charges", "tenure"]].to_csv(tmp_path / "rows.csv", index=False)
        for flag, output in (("--raw", "raw.parquet"), ("--coerce", "features.parquet")):
            scored = kfops("predict", flag, "-c", config, "-i", "rows.csv", "-o", output, cwd=tmp_path)
            assert scored.returncode == 0, scored.stdout + scored.stderr
        np.testing.assert_array_equal(pd.read_parquet(tmp_path / "raw.parquet")["probability"],
                                      pd.read_parquet(tmp_path / "features.parquet")["probability"])
    finally:
        kfops("serve", "stop", "-c", config, *sets, cwd=tmp_path, timeout=120)
    replay = kfops("backtest", "--from", "2024-03", "--to", "2024-04", "-c", config, "-p", "monthly",
                   "-o", str(tmp_path / "bt"), cwd=tmp_path)
    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "bt" / "backtest.csv")) == 2


def test_a_file_of_raw_orders_scores_as_their_training_set_rows(shop):
    """`kfops predict --raw` on a dataset unlike flights: the default raw request (the views' join
    keys, the request features and the optional event time, named as the orders table names it:
    ordered_at), the customers' and stores' features joined point-in-time from the offline
    sources, the @champion from the registry."""
    import numpy as np
    import pandas as pd

    from kfops.core.model import load_model

    assert shop["run"].returncode == 0
    cfg, project = shop["cfg"], shop["project"]
    (run_dir,) = [p.parents[1] for p in cfg.pipeline_root.glob("*/featurize/training_set")]
    training_set = pd.read_parquet(run_dir / "featurize" / "training_set")
    assert cfg.dataset.request_time_field == "ordered_at"
    raw = training_set[["order_id", "customer_id", "store_id", "amount", "category", "channel", "items"]].assign(
        ordered_at=training_set[cfg.dataset.event_timestamp].map(lambda t: t.isoformat()))
    raw.to_csv(project / "orders_to_score.csv", index=False)
    done = kfops("predict", "--raw", "-c", str(project / "kfops.yaml"), "-i", "orders_to_score.csv",
                 "-o", "scored.parquet", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    scored = pd.read_parquet(project / "scored.parquet")
    assert scored["order_id"].tolist() == training_set["order_id"].tolist()
    model = load_model(run_dir / "train" / "model", cfg.train.plugins, cfg.resolved_against)
    expected = model.predict_proba_encoded(model.spec.encode(training_set))
    np.testing.assert_allclose(scored["probability"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert "scored as of now" not in done.stderr

    # Without the time column every row is scored as of now, with today's features: said, as a
    # backfill of past rows would otherwise come out quietly different.
    raw.drop(columns="ordered_at").to_csv(project / "orders_now.csv", index=False)
    done = kfops("predict", "--raw", "-c", str(project / "kfops.yaml"), "-i", "orders_now.csv",
                 "-o", "scored_now.parquet", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "orders_now.csv has no 'ordered_at' column, so every row was scored as of now" in done.stderr


def test_raw_orders_score_with_the_feature_sources_of_an_s3_prefix(shop, s3_server, monkeypatch):
    """On a cluster a training run's featurize output is in S3: `--sources s3://...` reads it there
    (a scratch copy) and scores as with the local folder."""
    import uuid

    import boto3
    import numpy as np
    import pandas as pd

    from kfops.adapters.s3 import upload_dir
    from tests.integration.conftest import S3_CLIENT_ENV

    assert shop["run"].returncode == 0
    for key, value in {**S3_CLIENT_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    bucket = f"kfops-root-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    cfg, project = shop["cfg"], shop["project"]
    (sources,) = cfg.pipeline_root.glob("*/featurize/feast_sources")
    assert upload_dir(sources, f"s3://{bucket}/run-1/featurize/feast_sources") > 0
    training_set = pd.read_parquet(sources.parent / "training_set").head(300)
    training_set[["order_id", "customer_id", "store_id", "amount", "category", "channel", "items"]].assign(
        ordered_at=training_set[cfg.dataset.event_timestamp].map(lambda t: t.isoformat()),
    ).to_csv(project / "orders_s3.csv", index=False)
    scored = {}
    for name, where in (("local", str(sources)), ("s3", f"s3://{bucket}/run-1/featurize/feast_sources")):
        done = kfops("predict", "--raw", "-c", str(project / "kfops.yaml"), "-i", "orders_s3.csv",
                     "-o", f"scored_{name}.parquet", "--sources", where, cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr
        scored[name] = pd.read_parquet(project / f"scored_{name}.parquet")["probability"].to_numpy()
    np.testing.assert_array_equal(scored["s3"], scored["local"])
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("kfops-predict-sources-*"))  # the copy is gone
    done = kfops("predict", "--raw", "-c", str(project / "kfops.yaml"), "-i", "orders_s3.csv",
                 "-o", "scored_none.parquet", "--sources", f"s3://{bucket}/no-such-run", cwd=project)
    assert done.returncode == 2 and f"no feature sources (*.parquet) under s3://{bucket}/no-such-run" in done.stderr
    assert not (project / "scored_none.parquet").exists()


def test_feature_sources_on_a_dead_s3_endpoint_fail_as_a_service_and_write_nothing(shop, monkeypatch):
    from tests.conftest import free_port
    from tests.integration.conftest import S3_CLIENT_ENV

    for key, value in {**S3_CLIENT_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}.items():
        monkeypatch.setenv(key, value)
    project = shop["project"]
    (project / "one_order.csv").write_text("customer_id,store_id,amount,category,channel,items\nC0001,S01,10,a,web,1\n")
    done = kfops("predict", "--raw", "-c", str(project / "kfops.yaml"), "-i", "one_order.csv",
                 "-o", "scored_dead.parquet", "--sources", "s3://kfops-root/run-1/featurize/feast_sources", cwd=project)
    assert done.returncode == 3, done.stdout + done.stderr  # a service, not the user's input
    assert "cannot read 's3://kfops-root/run-1/featurize/feast_sources'" in done.stderr
    assert "AWS_ENDPOINT_URL" in done.stderr and "Traceback" not in done.stderr
    assert not (project / "scored_dead.parquet").exists()
