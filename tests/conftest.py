"""Shared fixtures. Service-backed tests skip with a reason when the service is absent,
unless KFOPS_REQUIRE_SERVICES=1 (CI), where an absent service is a failure.

Every test is marked with its tier, from the folder it lives in (see TIERS), so
`pytest -m unit`, `-m "not e2e"` and `make test-fast` select by tier without per-file marks."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_ROOT = Path(__file__).resolve().parent
# folder under tests/ -> marker (declared in pyproject's [tool.pytest.ini_options] markers)
TIERS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "infra": "infra", "reliability": "reliability"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects, so the tier marks count there
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS_ROOT).parts[0]
        except ValueError:  # a test outside tests/
            continue
        if folder in TIERS:
            item.add_marker(TIERS[folder])


def services_required() -> bool:
    return os.environ.get("KFOPS_REQUIRE_SERVICES") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip (or fail, under KFOPS_REQUIRE_SERVICES=1) when a needed service or tool is absent."""
    if condition:
        return
    if services_required():
        pytest.fail(f"required service missing: {reason} (KFOPS_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_url() -> str:
    need(port_open("127.0.0.1", 6379), "Redis is not listening on 127.0.0.1:6379")
    return "127.0.0.1:6379"


@pytest.fixture
def postgres_dsn() -> str:
    need(port_open("127.0.0.1", 5432), "PostgreSQL is not listening on 127.0.0.1:5432")
    return "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def private_prometheus_values(monkeypatch):
    """Each collector keeps its own value, as in a server process.

    Importing Feast sets PROMETHEUS_MULTIPROCESS_DIR, after which prometheus_client stores values
    in per-process mmap files keyed by metric name and labels: two registries in one test process
    would share them. Servers are one process each, so tests that model several use this.
    """
    from prometheus_client import values

    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
