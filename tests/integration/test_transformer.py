"""The raw-flight transformer as its own process in front of a predictor that takes feature
vectors only (``--online-lookup none``), as ``serving.kserve.transformer`` deploys them."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from kfops.config import CONFIG_JSON_ENV, load_config
from kfops.serving.local.process import server_environment, start_server, stop_server
from tests.conftest import free_port
from tests.integration.conftest import stop, wait_http
from tests.integration.test_model_server import (
    FLIGHT,
    expected_flight_probability,
    feature_rows,
    flight_v2,
    lookup_frames,
    v2_body,
)
from tests.support.serving_models import build_tiny_model

pytestmark = pytest.mark.integration
NAME = "flights"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from kfops.core.model import load_model

    root = tmp_path_factory.mktemp("transformer")
    model = build_tiny_model(root / "model")
    lookups = root / "lookups"
    lookups.mkdir()
    for key, frame in lookup_frames().items():
        frame.to_parquet(lookups / f"{key}.parquet", index=False)
    cfg = load_config(None, [f"data_dir={root / 'data'}", f"serving.http_port={free_port()}",
                             "serving.max_payload_bytes=200000"], environ={})
    predictor = start_server(cfg, model_dir=model, name=NAME, online_lookup="none")
    port = free_port()
    log = root / "transformer.log"
    with log.open("w") as out:
        # The flags KServe gives a transformer container, in KServe's spelling.
        process = subprocess.Popen(
            [sys.executable, "-m", "kfops.serving.kserve.transformer", "--model_name", NAME, "--predictor_host",
             predictor["url"].removeprefix("http://"), "--http_port", str(port), "--host", "127.0.0.1",
             "--online-lookup", f"parquet:{lookups}"],
            stdout=out, stderr=subprocess.STDOUT, env={**server_environment(), CONFIG_JSON_ENV: cfg.to_json()})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/health/ready", 120, process, log)  # 503 until it has the predictor's columns
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
            yield {"http": http, "model": model, "spec": load_model(model).spec, "cfg": cfg, "process": process,
                   "log": log}
    finally:
        stop(process)
        stop_server(cfg, NAME)


def test_raw_flights_are_completed_and_scored_by_the_predictor(pair):
    http = pair["http"]
    expected = expected_flight_probability(pair["model"], FLIGHT)
    v1 = http.post(f"/v1/models/{NAME}:predict", json={"instances": [FLIGHT, FLIGHT]})
    assert v1.status_code == 200, v1.text
    assert [p["probability"] for p in v1.json()["predictions"]] == pytest.approx([expected] * 2, abs=1e-6)
    v2 = http.post(f"/v2/models/{NAME}/infer", json={**flight_v2(FLIGHT), "id": "r-1"})
    assert v2.status_code == 200, v2.text
    body = v2.json()
    assert body["id"] == "r-1"
    assert body["outputs"][0]["data"] == pytest.approx([expected], abs=1e-6)


def test_feature_vectors_pass_through_unchanged(pair):
    from kfops.core.model import load_model, predict_proba

    rows = feature_rows(3, seed=9)
    response = pair["http"].post(f"/v2/models/{NAME}/infer", json=v2_body(rows, pair["spec"]))
    assert response.status_code == 200, response.text
    import pandas as pd

    expected = predict_proba(load_model(pair["model"]), pd.DataFrame(rows))
    assert response.json()["outputs"][0]["data"] == pytest.approx(expected.tolist(), abs=1e-6)


@pytest.mark.parametrize("path, body, status, message", [
    (f"/v1/models/{NAME}:predict", b"{not json", 400, "not valid JSON"),
    (f"/v1/models/{NAME}:predict", {"instances": [{"carrier": "UA"}]}, 400, "instance 0"),
    ("/v1/models/other:predict", {"instances": [FLIGHT]}, 404, "not served here"),
    (f"/v1/models/{NAME}:predict", {"instances": [{**FLIGHT, "origin": "XYZ", "carrier": "ZZ", "tailnum": "N0"}]},
     422, "no features for"),
])  # fmt: skip
def test_bad_requests_get_a_4xx_and_the_transformer_stays_up(pair, path, body, status, message):
    http = pair["http"]
    response = (http.post(path, content=body) if isinstance(body, bytes) else http.post(path, json=body))
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert http.get("/v2/health/live").status_code == 200


def test_an_unreachable_predictor_is_a_502_not_a_crash(pair):
    stop_server(pair["cfg"], NAME)
    try:
        response = pair["http"].post(f"/v1/models/{NAME}:predict", json={"instances": [FLIGHT]})
        assert response.status_code == 502 and "unreachable" in response.json()["error"]
        assert pair["process"].poll() is None
    finally:
        # The module's other tests share the predictor: bring it back on the same port for them.
        start_server(pair["cfg"], model_dir=pair["model"], name=NAME, online_lookup="none")
