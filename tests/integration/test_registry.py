"""Registry, promotion, audit trail and lineage: first on the embedded SQLite store, then the
same flow against a real `mlflow server` on PostgreSQL with S3 artifacts (the production profile)."""

from __future__ import annotations

import os
import uuid

import pytest

from kfops.adapters import mlflow_registry as registry
from kfops.config import KfopsConfig
from kfops.errors import KfopsError, RegistryError
from tests.integration.conftest import log_registered_model
from tests.support.example import example_config

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_cfg(tmp_path):
    return example_config(data_dir=tmp_path / "state").resolve(tmp_path)


def exercise_registry(cfg: KfopsConfig, tmp_path):
    v1 = log_registered_model(cfg, tmp_path, "run-a")
    # A retried register step (same pipeline run and task) finds its version instead of adding one.
    again = log_registered_model(cfg, tmp_path, "run-a")
    assert str(again.version) == str(v1.version)
    v2 = log_registered_model(cfg, tmp_path, "run-b", seed=1)
    unblessed = log_registered_model(cfg, tmp_path, "run-c", seed=2, blessed=False)
    versions = registry.client(cfg).search_model_versions(f"name='{cfg.registry.model_name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]

    registry.move_alias(cfg, registry.CHAMPION, v1.version, reason="first", who="alice")
    registry.move_alias(cfg, registry.CHAMPION, v2.version, reason="better in summer", who="bob")
    with pytest.raises(KfopsError, match="never blessed"):
        registry.move_alias(cfg, registry.CHAMPION, unblessed.version, reason="try")
    with pytest.raises(KfopsError, match="has no version 99"):
        registry.move_alias(cfg, registry.CHAMPION, 99, reason="typo")
    registry.move_alias(cfg, registry.CHAMPION, unblessed.version, reason="hotfix", who="carol", force=True)

    trail = registry.audit_trail(cfg)
    assert [(e["who"], e["from_version"], e["to_version"], e["forced"]) for e in trail] == [
        ("alice", None, "1", False), ("bob", "1", "2", False), ("carol", "2", "3", True)]
    assert trail[1]["reason"] == "better in summer"
    assert str(registry.champion(cfg).version) == "3"

    # The champion's files come back from the artifact store as a loadable kfops model.
    from kfops.core.model import load_model

    folder = registry.fetch_model_dir(cfg.tracking_uri, f"models:/{cfg.registry.model_name}@champion",
                                      dst=tmp_path / "fetched")
    assert load_model(folder).trainer == "xgboost"
    info = registry.lineage(cfg, v2.version)
    assert info["pipeline_run"] == "run-b" and info["idempotency_key"] == "run-b/register"


def test_registry_on_sqlite(sqlite_cfg, tmp_path):
    exercise_registry(sqlite_cfg, tmp_path)


def test_registry_on_postgres_and_s3(production_mlflow, tmp_path):
    import boto3

    name = f"registry-{uuid.uuid4().hex[:8]}"  # the server is shared by the session's tests
    cfg = example_config(data_dir=tmp_path / "state",
                      registry={"tracking_uri": production_mlflow["tracking_uri"], "model_name": name,
                                "experiment": name})
    exercise_registry(cfg.resolve(tmp_path), tmp_path)
    objects = boto3.client("s3", endpoint_url=production_mlflow["s3"]).list_objects_v2(
        Bucket=production_mlflow["bucket"])
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.endswith("artifacts/kfops_model/model.ubj") for k in keys), keys[:20]


def mlflow_environment() -> dict[str, str]:
    """The MLflow settings in os.environ (less the telemetry session id MLflow itself keeps there)."""
    return {k: v for k, v in os.environ.items() if "MLFLOW" in k and not k.startswith("_MLFLOW_TELEMETRY")}


def test_unreachable_registry_fails_clearly_after_one_check(tmp_path):
    """MLflow's own retries of an unreachable server take many minutes with its defaults; the adapter
    asks the server's /health once first and fails with a clear error. Bounded by counting the
    connections a dropping server sees, not by timing."""
    import socket
    import threading

    from tests.conftest import free_port

    cfg = example_config(registry={"tracking_uri": f"http://127.0.0.1:{free_port()}"}).resolve(tmp_path)
    environment = mlflow_environment()
    with pytest.raises(RegistryError, match=r"the MLflow tracking server http://127\.0\.0\.1:\d+ is unreachable"):
        registry.ensure_experiment(cfg)
    # The HTTP bounds are set around the adapter's calls only: the environment is as it was.
    assert mlflow_environment() == environment

    dropping = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []

    def drop_each() -> None:
        while True:
            try:
                peer, _ = dropping.accept()
            except OSError:  # closed: the test is over
                return
            connections.append(1)
            peer.close()

    threading.Thread(target=drop_each, daemon=True).start()
    try:
        port = dropping.getsockname()[1]
        cfg = example_config(registry={"tracking_uri": f"http://127.0.0.1:{port}"}).resolve(tmp_path / "dropping")
        with pytest.raises(RegistryError, match=rf"http://127\.0\.0\.1:{port} is unreachable"):
            registry.ensure_experiment(cfg)
    finally:
        dropping.close()
    assert len(connections) == 1  # the one reachability check, no retried MLflow call behind it


def test_the_adapter_leaves_no_global_state(tmp_path, monkeypatch):
    """Two configs, two SQLite stores, one process: each store gets its own runs, versions and
    aliases, while MLflow's process-wide URIs, the active run and os.environ stay as they were."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # The process-wide URIs name a third store; an adapter that read (or wrote) them would show it.
    decoy = f"sqlite:///{tmp_path / 'decoy.db'}"
    monkeypatch.setattr(tracking_utils, "_tracking_uri", decoy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", decoy)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", decoy)
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(key, raising=False)
    before = {"tracking": mlflow.get_tracking_uri(), "registry": mlflow.get_registry_uri()}
    environment = mlflow_environment()

    cfgs = {name: example_config(data_dir=tmp_path / name, registry={"model_name": f"model-{name}",
                                                                 "experiment": f"exp-{name}"}).resolve(tmp_path)
            for name in ("a", "b")}
    run_ids = {}
    for name, cfg in cfgs.items():
        version = log_registered_model(cfg, tmp_path, f"run-{name}")
        run_ids[name] = version.run_id
        registry.move_alias(cfg, registry.CHAMPION, version.version, reason="test", who="t")
        with registry.resume_run(cfg, version.run_id) as run:
            run.log_metrics({"test_roc_auc": 0.5})
            run.log_dict({"store": name}, "evaluation/verdict.json")
        assert registry.version_for_alias(cfg.tracking_uri, f"model-{name}", registry.CHAMPION) == str(version.version)
        registry.tag_version(cfg.tracking_uri, f"model-{name}", version.version, {"kfops.rollout": "promoted"})
        assert registry.fetch_version_dir(cfg, version.version).is_dir()

    assert {"tracking": mlflow.get_tracking_uri(), "registry": mlflow.get_registry_uri()} == before
    assert mlflow.active_run() is None
    assert mlflow_environment() == environment
    assert not (tmp_path / "decoy.db").exists()
    for name, cfg in cfgs.items():
        mlflow_client = registry.client(cfg)
        assert [m.name for m in mlflow_client.search_registered_models()] == [f"model-{name}"]
        assert [e.name for e in mlflow_client.search_experiments()] == [f"exp-{name}", "Default"]
        (run,) = mlflow_client.search_runs([mlflow_client.get_experiment_by_name(f"exp-{name}").experiment_id])
        assert run.info.run_id == run_ids[name] and run.info.status == "FINISHED"
        assert run.data.metrics["test_roc_auc"] == 0.5
        assert mlflow_client.get_model_version(f"model-{name}", "1").tags["kfops.rollout"] == "promoted"
        assert registry.audit_trail(cfg)[-1]["to_version"] == "1"
