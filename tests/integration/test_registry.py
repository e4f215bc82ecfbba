"""Registry, promotion, audit trail and lineage: first on the embedded SQLite store, then the
same flow against a real `mlflow server` on PostgreSQL with S3 artifacts (the production profile)."""

from __future__ import annotations

import uuid

import pytest

from kfops.adapters import mlflow_registry as registry
from kfops.config import KfopsConfig
from kfops.errors import KfopsError, RegistryError
from tests.integration.conftest import log_registered_model

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_cfg(tmp_path):
    return KfopsConfig(data_dir=tmp_path / "state").resolve(tmp_path)


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
    cfg = KfopsConfig(data_dir=tmp_path / "state",
                      registry={"tracking_uri": production_mlflow["tracking_uri"], "model_name": name,
                                "experiment": name})
    exercise_registry(cfg.resolve(tmp_path), tmp_path)
    objects = boto3.client("s3", endpoint_url=production_mlflow["s3"]).list_objects_v2(
        Bucket=production_mlflow["bucket"])
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.endswith("artifacts/kfops_model/model.ubj") for k in keys), keys[:20]


def test_unreachable_registry_fails_clearly_after_retries(tmp_path):
    from tests.conftest import free_port

    cfg = KfopsConfig(registry={"tracking_uri": f"http://127.0.0.1:{free_port()}"}).resolve(tmp_path)
    with pytest.raises(RegistryError, match="MLflow did not answer"):
        registry.ensure_experiment(cfg)
