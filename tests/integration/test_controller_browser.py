"""Promotion from the MLflow UI itself: headless Debian chromium opens a real `mlflow server` (on
PostgreSQL), adds the `champion` alias to version 2 in the version page's alias dialog, as a person
does, and the local model server switches to version 2: the UI's alias move reaches the kfops
controller as a real signed webhook. A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from kfops.adapters import mlflow_registry as registry
from kfops.runners.controller import STATUS_TAG, WEBHOOK_PATH, Controller, make_server, serve_in_background
from tests.conftest import REPO_ROOT, free_port
from tests.e2e.test_mlflow_ui_browser import browser  # noqa: F401  (the headless chromium fixture)
from tests.integration.conftest import S3_CLIENT_ENV, log_registered_model
from tests.integration.test_promotion import served_version, wait_for_version
from tests.support.example import example_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRET = f"browser-webhook-{uuid.uuid4().hex}"
SCREENSHOT = REPO_ROOT / "test-artifacts" / "mlflow_alias_dialog.png"


@pytest.fixture
def promoted_through_the_ui(_production_mlflow_server, monkeypatch, tmp_path):
    for key, value in {**S3_CLIENT_ENV, "MLFLOW_S3_ENDPOINT_URL": _production_mlflow_server["s3"]}.items():
        monkeypatch.setenv(key, value)
    name = f"ui-{uuid.uuid4().hex[:8]}"
    cfg = example_config(
        {"data_dir": str(tmp_path / "state"), "serving": {"http_port": free_port()},
         "registry": {"tracking_uri": _production_mlflow_server["tracking_uri"], "model_name": name,
                      "experiment": name}}
    ).resolve(tmp_path)
    versions = [str(log_registered_model(cfg, tmp_path, f"run-{i}", seed=i).version) for i in range(2)]
    registry.move_alias(cfg, registry.CHAMPION, versions[0], reason="first champion", who="tester")
    controller = Controller(cfg, SECRET).start()
    server = make_server(controller, "127.0.0.1", free_port())
    serve_in_background(server)
    try:
        registry.register_webhook(cfg, f"http://127.0.0.1:{server.server_address[1]}{WEBHOOK_PATH}", SECRET)
        controller.reconcile()  # on start: v1 serves
        assert controller.wait_idle(240)
        yield cfg, versions, controller
    finally:
        server.shutdown()
        server.server_close()
        controller.stop(timeout_s=60)
        from kfops.serving.local.process import stop_server

        stop_server(cfg)


def test_moving_champion_in_the_mlflow_ui_deploys_the_version(promoted_through_the_ui, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    cfg, (first, second), controller = promoted_through_the_ui
    serving = f"http://127.0.0.1:{cfg.serving.http_port}"
    assert served_version(serving, cfg.registry.model_name) == first

    browser.get(f"{cfg.tracking_uri}/#/models/{cfg.registry.model_name}/versions/{second}")
    wait = WebDriverWait(browser, 60)
    # The header's "Aliases: Add" opens the alias dialog (the tags table has its own Add button).
    add = wait.until(lambda d: next((b for b in d.find_elements(By.XPATH, "//button")
                                     if b.text == "Add" and b.get_attribute("data-testid") != "add-tag-button"), None))
    add.click()
    field = wait.until(lambda d: next(iter(d.find_elements(By.XPATH, "//*[@role='dialog']//input")), None))
    field.send_keys("champion")
    field.send_keys(Keys.ENTER)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    moved_at = time.monotonic()
    save = next(b for b in browser.find_elements(By.XPATH, "//*[@role='dialog']//button") if b.text == "Save aliases")
    save.click()

    # Nothing but MLflow's webhook tells the controller: no reconcile loop runs in this test.
    wait_for_version(serving, cfg.registry.model_name, second, 120)
    print(f"UI alias move to serving: {time.monotonic() - moved_at:.1f} s")
    assert controller.wait_idle(60)
    assert str(registry.model_version(cfg, alias=registry.CHAMPION).version) == second
    assert registry.model_version(cfg, version=second).tags[STATUS_TAG] == "serving"
    last = registry.audit_trail(cfg)[-1]
    assert (last["from_version"], last["to_version"], last["via"]) == (first, second, "webhook")
    assert os.path.getsize(SCREENSHOT) > 10_000
