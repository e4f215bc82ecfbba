"""Raw flights through the real server with the real Feast online store (SQLite), built from
three days of the 2013 flights data: the server's features match kfops.adapters.feast_store.online_features."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
import pandas as pd
import pytest

from kfops.config import load_config
from kfops.core.model import load_model, predict_proba
from kfops.datasets.flights import request_features
from kfops.serving.local.process import start_server, stop_server
from tests.conftest import REPO_ROOT, free_port
from tests.support.serving_models import build_tiny_model

pytestmark = pytest.mark.integration

NAME = "flights-feast"


@pytest.fixture(scope="module")
def feast_server(tmp_path_factory):
    from kfops.adapters import feast_store as features
    from kfops.datasets.flights import load_tables
    from kfops.datasets.flights.features import write_feature_sources

    root = tmp_path_factory.mktemp("feast_serving")
    cfg = load_config(None, [
        f"data_dir={root / 'data'}", f"serving.http_port={free_port()}", "serving.startup_timeout_s=180",
        "dataset.start=2013-01-01", "dataset.end=2013-01-03", f"features.project=serving_{uuid.uuid4().hex[:8]}",
        f"features.repo_path={REPO_ROOT / 'feature_repo'}",
    ], environ={})
    tables = load_tables(cfg)
    sources = cfg.feast_dir / "sources"
    write_feature_sources(tables, sources)
    features.apply_definitions(cfg, sources)
    features.materialize(cfg, dt.datetime(2012, 12, 31, tzinfo=dt.UTC),
                         dt.datetime(2013, 1, 4, tzinfo=dt.UTC))
    model_dir = build_tiny_model(root / "model")
    status = start_server(cfg, model_dir=model_dir, name=NAME, online_lookup="feast")
    try:
        with httpx.Client(base_url=status["url"], timeout=120, trust_env=False) as http:
            yield {"cfg": cfg, "http": http, "model_dir": model_dir, "flights": tables["flights"]}
    finally:
        stop_server(cfg, NAME)


def test_raw_flight_gets_the_online_store_features(feast_server):
    from kfops.adapters.feast_store import online_features

    row = feast_server["flights"].dropna(subset=["tailnum"]).iloc[100]
    flight = {"carrier": row["carrier"], "origin": row["origin"], "dest": row["dest"], "tailnum": row["tailnum"],
              "distance": float(row["distance"]), "flight": int(row["flight"]),
              "sched_dep": f"2013-01-03T{int(row['sched_dep_time']) // 100:02d}:{int(row['sched_dep_time']) % 100:02d}"}
    response = feast_server["http"].post(f"/v1/models/{NAME}:predict", json={"instances": [flight]})
    assert response.status_code == 200, response.text

    derived = request_features(pd.DataFrame([flight]))
    # The server's default: feature TTLs count back from the request's event time, as in training.
    online = online_features(feast_server["cfg"], derived[["origin", "carrier", "tailnum"]].to_dict("records"),
                             as_of=derived["event_timestamp"].iloc[0].to_pydatetime())
    assert online.notna().sum(axis=1).iloc[0] > 5  # weather and delay rates as of the event, planes
    expected = predict_proba(load_model(feast_server["model_dir"]), pd.concat([derived, online], axis=1))
    assert response.json()["predictions"][0]["probability"] == pytest.approx(float(expected[0]), abs=1e-7)


def test_an_entity_the_store_does_not_know_is_a_422(feast_server):
    flight = {"carrier": "ZZ", "origin": "XYZ", "dest": "IAH", "tailnum": "N00000", "distance": 100,
              "sched_dep": "2013-01-03T10:00"}
    response = feast_server["http"].post(f"/v1/models/{NAME}:predict", json={"instances": [flight]})
    assert response.status_code == 422
    assert "no features for origin='XYZ'" in response.json()["error"]
