"""The promotion controller against a real `mlflow server` on PostgreSQL: an alias moved through
MLflow's REST API (what the UI calls) reaches the controller as a real signed webhook, and the
local model server switches to the new version. Forged, stale and replayed deliveries change nothing;
a burst of five promotions ends with the last one serving and five audit entries."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from kfops.adapters import mlflow_registry as registry
from kfops.core.webhook import sign
from kfops.runners.controller import STATUS_TAG, WEBHOOK_PATH, Controller, make_server, serve_in_background
from tests.conftest import free_port
from tests.integration.conftest import log_registered_model
from tests.integration.test_promotion import served_version, wait_for_version
from tests.support.example import example_config

pytestmark = pytest.mark.integration
SECRET = "kfops-test-webhook-secret"


def alias_via_rest(tracking_uri: str, name: str, version: str) -> None:
    moved = httpx.post(f"{tracking_uri}/api/2.0/mlflow/registered-models/alias",
                       json={"name": name, "alias": "champion", "version": version}, timeout=10)
    assert moved.status_code == 200, moved.text


@pytest.fixture(scope="module")
def stack(_production_mlflow_server, tmp_path_factory):
    """Six registered versions, v1 serving, a controller whose webhook MLflow knows."""
    import os

    from kfops.serving.local.process import stop_server
    from tests.integration.conftest import S3_CLIENT_ENV

    saved = {k: os.environ.get(k) for k in (*S3_CLIENT_ENV, "MLFLOW_S3_ENDPOINT_URL")}
    os.environ.update({**S3_CLIENT_ENV, "MLFLOW_S3_ENDPOINT_URL": _production_mlflow_server["s3"]})
    tmp_path = tmp_path_factory.mktemp("controller")
    name = f"ctl-{uuid.uuid4().hex[:8]}"
    cfg = example_config(
        {"data_dir": str(tmp_path / "state"), "serving": {"http_port": free_port()},
         "registry": {"tracking_uri": _production_mlflow_server["tracking_uri"], "model_name": name,
                      "experiment": name}}
    ).resolve(tmp_path)
    versions = [str(log_registered_model(cfg, tmp_path, f"run-{i}", seed=i).version) for i in range(6)]
    registry.move_alias(cfg, registry.CHAMPION, versions[0], reason="first champion", who="tester")
    controller = Controller(cfg, SECRET).start()
    server = make_server(controller, "127.0.0.1", free_port())
    serve_in_background(server)
    url = f"http://127.0.0.1:{server.server_address[1]}{WEBHOOK_PATH}"
    try:
        assert registry.webhooks_supported(cfg)
        first = registry.register_webhook(cfg, url, SECRET)
        assert registry.register_webhook(cfg, url, SECRET) == (first[0], "updated")  # idempotent: one webhook
        assert controller.reconcile() is not None  # on start: v1 is not serving yet
        assert controller.wait_idle(240)
        yield {"cfg": cfg, "controller": controller, "url": url, "versions": versions,
               "serving": f"http://127.0.0.1:{cfg.serving.http_port}", "tracking_uri": cfg.tracking_uri}
    finally:
        server.shutdown()
        server.server_close()
        controller.stop(timeout_s=60)
        stop_server(cfg)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def post(url: str, body: dict, secret: str = SECRET, delivery_id: str | None = None,
         timestamp: int | None = None) -> httpx.Response:
    payload = json.dumps(body)
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
               "X-MLflow-Timestamp": stamp, "X-MLflow-Signature": sign(secret, delivery_id, stamp, payload)}
    return httpx.post(url, content=payload, headers=headers, timeout=10)


def alias_event(name: str, version: str) -> dict:
    return {"entity": "model_version_alias", "action": "created", "timestamp": "2026-01-01T00:00:00+00:00",
            "data": {"name": name, "alias": "champion", "version": version}}


def test_an_alias_moved_through_the_rest_api_reaches_the_controller_and_the_new_version_serves(stack):
    cfg, v = stack["cfg"], stack["versions"]
    # Whatever serves now (the module's tests run in any order): move @champion to another version.
    current = served_version(stack["serving"], cfg.registry.model_name)
    assert current in v
    target = next(x for x in v if x != current)
    before = len(stack["controller"].outcomes)

    alias_via_rest(stack["tracking_uri"], cfg.registry.model_name, target)
    # No reconcile loop runs in this test: only the webhook can have triggered this.
    wait_for_version(stack["serving"], cfg.registry.model_name, target, 120)
    assert stack["controller"].wait_idle(60)

    assert stack["controller"].outcomes[before:] == [{"version": target, "action": "deployed", "from": current}]
    last = registry.audit_trail(cfg)[-1]
    assert (last["from_version"], last["to_version"], last["who"], last["via"]) == (current, target, "mlflow-ui",
                                                                                    "webhook")
    assert registry.model_version(cfg, version=target).tags[STATUS_TAG] == "serving"


def test_a_forged_a_stale_and_a_replayed_delivery_deploy_nothing(stack):
    cfg, v, controller = stack["cfg"], stack["versions"], stack["controller"]
    serving = served_version(stack["serving"], cfg.registry.model_name)
    target = v[2] if serving != v[2] else v[3]
    outcomes, trail = len(controller.outcomes), len(registry.audit_trail(cfg))

    forged = post(stack["url"], alias_event(cfg.registry.model_name, target), secret="not-the-secret")
    assert forged.status_code == 401 and "signature" in forged.json()["error"]
    stale = post(stack["url"], alias_event(cfg.registry.model_name, target), timestamp=int(time.time()) - 3600)
    assert stale.status_code == 401 and "stale" in stale.json()["error"]
    assert controller.wait_idle(30)
    assert len(controller.outcomes) == outcomes and len(registry.audit_trail(cfg)) == trail
    assert served_version(stack["serving"], cfg.registry.model_name) == serving

    # A genuine delivery, then the same bytes again: acted on once. (About the version that serves,
    # so acting on it is a look at the registry and the server: nothing to roll out.)
    delivery = str(uuid.uuid4())
    first = post(stack["url"], alias_event(cfg.registry.model_name, serving), delivery_id=delivery)
    assert first.status_code == 202, first.text
    replay = post(stack["url"], alias_event(cfg.registry.model_name, serving), delivery_id=delivery)
    assert replay.status_code == 200 and replay.json()["ignored"] == "replayed delivery"
    assert controller.wait_idle(60)
    assert controller.outcomes[outcomes:] == [{"version": serving, "action": "unchanged"}]
    assert served_version(stack["serving"], cfg.registry.model_name) == serving


def test_a_burst_of_five_promotions_ends_with_the_last_serving_and_five_audit_entries(stack):
    cfg, v, controller = stack["cfg"], stack["versions"], stack["controller"]
    start = served_version(stack["serving"], cfg.registry.model_name)
    order = [x for x in v if x != start][:5]
    trail_before = len(registry.audit_trail(cfg))
    outcomes = len(controller.outcomes)

    for version in order:
        alias_via_rest(stack["tracking_uri"], cfg.registry.model_name, version)
    wait_for_version(stack["serving"], cfg.registry.model_name, order[-1], 180)
    deadline = time.monotonic() + 120
    while len(registry.audit_trail(cfg)) < trail_before + 5 and time.monotonic() < deadline:
        time.sleep(0.5)  # the last deliveries may still be on their way
    assert controller.wait_idle(120)

    new_entries = registry.audit_trail(cfg)[trail_before:]
    assert sorted(e["to_version"] for e in new_entries) == sorted(order), new_entries
    assert all(e["who"] == "mlflow-ui" and e["via"] == "webhook" for e in new_entries)
    assert served_version(stack["serving"], cfg.registry.model_name) == order[-1]
    done = controller.outcomes[outcomes:]
    assert {o["action"] for o in done} <= {"deployed", "superseded", "unchanged"}, done
    assert any(o["version"] == order[-1] and o["action"] == "deployed" for o in done), done
    statuses = {x: registry.model_version(cfg, version=x).tags.get(STATUS_TAG) for x in order}
    assert statuses[order[-1]] == "serving"
    assert all(statuses[x] in ("replaced", "superseded") for x in order[:-1]), statuses
