"""The MLflow adapter's HTTP bounds: in force while its own calls run, gone afterwards.

MLflow reads ``MLFLOW_HTTP_REQUEST_*`` from the environment on every request; the adapter must
bound its requests without leaving the process changed (and never override an operator's values).
"""

from __future__ import annotations

import os
import threading

import pytest

from kfops.adapters.mlflow_registry import BoundedClient, HttpBounds, http_bounds

KEYS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


@pytest.fixture(autouse=True)
def no_exported_bounds(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def current() -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in KEYS}


def test_bounds_hold_inside_the_scope_only():
    with http_bounds(HttpBounds(max_retries=2, timeout_s=30)):
        assert current() == dict(zip(KEYS, ("2", "30", "1"), strict=True))
        with http_bounds(HttpBounds(max_retries=5, timeout_s=9)):  # nested: the outer scope's values hold
            assert current()["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert current()["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"  # the inner scope took nothing away
    assert current() == dict.fromkeys(KEYS)


def test_the_environment_comes_back_when_the_call_raises():
    with pytest.raises(RuntimeError), http_bounds(HttpBounds(max_retries=2, timeout_s=30)):
        raise RuntimeError("the tracking server is down")
    assert current() == dict.fromkeys(KEYS)


def test_values_the_operator_exported_win_and_stay(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    with http_bounds(HttpBounds(max_retries=2, timeout_s=30)):
        assert current()["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"
        assert current()["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert current() == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": None, "MLFLOW_HTTP_REQUEST_TIMEOUT": "300",
                         "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": None}


def test_overlapping_scopes_in_threads_restore_once_the_last_ends():
    inside, release = threading.Event(), threading.Event()

    def other_thread():
        with http_bounds(HttpBounds(max_retries=2, timeout_s=30)):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    assert inside.wait(10)
    with http_bounds(HttpBounds(max_retries=2, timeout_s=30)):
        pass
    assert current()["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"  # the other thread's call is still bounded
    release.set()
    thread.join(10)
    assert current() == dict.fromkeys(KEYS)


def test_a_bounded_client_bounds_each_call_and_passes_attributes_through():
    class FakeClient:
        tracking_uri = "sqlite:///x.db"

        def search_runs(self, experiment_ids):
            return experiment_ids, current()

    bounded = BoundedClient(FakeClient(), HttpBounds(max_retries=3, timeout_s=7))
    assert bounded.tracking_uri == "sqlite:///x.db"
    ids, seen = bounded.search_runs(["1"])
    assert ids == ["1"] and seen == dict(zip(KEYS, ("3", "7", "1"), strict=True))
    assert current() == dict.fromkeys(KEYS)


@pytest.mark.parametrize("name", [
    "column_score.Amount ($)", "column_score.Défaut?", "signal.a//b", "../x", "/abs", ".", "..", "a/./b",
    "x" * 300, "column_score." + "é" * 260, "tab\there", "",
])
def test_a_key_from_a_column_name_is_one_mlflow_accepts(name):
    """The drift step logged `column_score.<column>`: a column named 'Amount ($)' failed the run."""
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name

    from kfops.adapters.mlflow_registry import MLFLOW_KEY_MAX, mlflow_key

    key = mlflow_key(name)
    for validate in (_validate_metric_name, _validate_param_name, _validate_tag_name):
        validate(key)
    assert len(key) <= MLFLOW_KEY_MAX


def test_a_valid_key_is_kept_and_keys_that_meet_are_told_apart():
    from kfops.adapters.mlflow_registry import _mlflow_keys, mlflow_key

    for kept in ("column_score.dep_hour", "signal.observed_diff", "a b/c:d-e.f", "column_score.Zürich"):
        assert mlflow_key(kept) == kept
    assert mlflow_key("column_score.Amount ($)") == "column_score.Amount ___"
    assert mlflow_key("../x") == "_.._x" and mlflow_key("a//b") == "a__b"
    keys = _mlflow_keys({"rate_": 1.0, "rate$": 2.0, "rate%": 3.0})
    assert len(keys) == 3 and keys["rate_"] == 1.0  # a valid name keeps its key; the others get a hash
    assert sorted(keys.values()) == [1.0, 2.0, 3.0] and all(k.startswith("rate_-") for k in keys if k != "rate_")
