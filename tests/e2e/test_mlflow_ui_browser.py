"""A real browser shows what kfops writes to the MLflow registry.

Headless Debian chromium (``scripts/install_chromium.sh``) opens the MLflow UI of a real
``mlflow server`` and must show, on the model version page, kfops' lineage tags and the
``@champion`` alias. A screenshot is kept in ``test-artifacts/mlflow_model_version.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port, need
from tests.integration.conftest import log_registered_model, stop, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = REPO_ROOT / "test-artifacts" / "mlflow_model_version.png"
PIPELINE_RUN = "kfops-training-browser-check"


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on a SQLite store and a local artifact folder, on a free loopback port."""
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
             "--artifacts-destination", str(tmp_path / "artifacts")],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    need(CHROMIUM.exists(), f"{CHROMIUM} is absent: run `bash scripts/install_chromium.sh`")
    need(CHROMEDRIVER.exists(), f"{CHROMEDRIVER} is absent: run `bash scripts/install_chromium.sh`")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need(False, "selenium is not installed: pip install -e '.[dev]'")
    # Never let Selenium Manager look for a browser or driver online: both are given.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_model_version_page_shows_lineage_and_champion(mlflow_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from kfops.adapters import mlflow_registry as registry
    from tests.support.example import example_config

    cfg = example_config(data_dir=tmp_path / "state", registry={"tracking_uri": mlflow_server}).resolve(tmp_path)
    registered = log_registered_model(cfg, tmp_path, PIPELINE_RUN)
    version = str(getattr(registered, "version", registered))  # a ModelVersion or its number
    registry.move_alias(cfg, registry.CHAMPION, version, reason="browser check", who="pytest")

    browser.get(f"{mlflow_server}/#/models/{cfg.registry.model_name}/versions/{version}")

    def page_text(driver) -> str:
        return driver.find_element(By.TAG_NAME, "body").text

    # The UI is a single-page app: wait until the version's tags have rendered.
    WebDriverWait(browser, 60).until(lambda driver: PIPELINE_RUN in page_text(driver))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    text = page_text(browser)

    assert f"Version {version}" in text
    assert "kfops.pipeline_run" in text, "the lineage tag name is not on the model version page"
    assert PIPELINE_RUN in text, "the lineage tag value is not on the model version page"
    assert registry.BLESSED_TAG in text, "the gate's blessing tag is not on the model version page"
    assert re.search(r"@\s*champion", text), "the @champion alias is not on the model version page"
    assert SCREENSHOT.stat().st_size > 10_000, "the screenshot is suspiciously small (blank page?)"


def test_screenshot_folder_is_ignored_by_git():
    need(shutil.which("git") is not None, "git is not installed")
    probe = SCREENSHOT.relative_to(REPO_ROOT)
    result = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO_ROOT, env={**os.environ})
    assert result.returncode == 0, f"{probe} is not git-ignored: add `test-artifacts/` to .gitignore"
