"""`kfops deploy --watch` outlives a bad @champion: a refused model or a missing version is logged
and retried while the old model keeps serving; only a configuration error ends the loop."""

from __future__ import annotations

import pytest

from kfops.errors import ConfigError, KfopsError, RegistryError
from kfops.runners import reconcile
from kfops.serving.local import process
from tests.support.example import example_config


def test_the_watch_keeps_going_past_a_refused_model_and_stops_on_a_config_error(monkeypatch, tmp_path):
    outcomes = [KfopsError("the model server refused the new model: HTTP 400"), RegistryError("MLflow did not answer"),
                "7", ConfigError("registry.model_name is empty")]
    seen: list[str | None] = []

    def reconcile_once(cfg, served):
        seen.append(served)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(reconcile, "reconcile_once", reconcile_once)
    monkeypatch.setattr(process, "server_status", lambda cfg: {"healthy": True, "model_version": "6"})
    events: list[str] = []
    with pytest.raises(ConfigError, match="model_name is empty"):
        reconcile.watch_champion(example_config(data_dir=tmp_path).resolve(tmp_path), interval_s=0, on_event=events.append)
    assert seen == ["6", "6", "6", "7"]
    assert [e for e in events if "will retry" in e] == [
        "reconcile failed, will retry: the model server refused the new model: HTTP 400",
        "reconcile failed, will retry: MLflow did not answer"]
    assert "deployed v7 (was v6)" in events
