"""Step 7, deploy: serve the registry alias locally or as a KServe InferenceService, then
smoke-test one request.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import KfopsError
from kfops.steps.common import step_config

if TYPE_CHECKING:

    from kfops.config import KfopsConfig


def deploy(config: KfopsConfig | str, version: str = "") -> dict[str, Any]:
    """Serve the champion (or ``serving.model_alias``) on a local KServe ModelServer; smoke-test it."""
    from kfops.adapters import mlflow_registry as registry

    cfg = step_config(config)
    alias = cfg.serving.model_alias or registry.CHAMPION
    with _one_local_deploy_at_a_time(cfg):
        # The alias is read under the lock: a deploy that read it before another run moved it and
        # served the new version would otherwise put the older one back.
        target = registry.model_version(cfg, alias=alias)
        if target is None:
            raise KfopsError(f"no model version holds @{alias}", hint="promote one with `kfops promote <version>`")
        result = serve_version(cfg, str(target.version))
    return {**result, "model_name": target.name, "alias": alias, "just_registered": version}


@contextlib.contextmanager
def _one_local_deploy_at_a_time(cfg: KfopsConfig) -> Iterator[None]:
    """The local server's lock (its process or container), held from reading the alias to the smoke
    test; on a cluster the rollout has its own."""
    if serving_target(cfg) == "kserve":
        yield
        return
    from kfops.serving.local.process import serving_lock

    with serving_lock(cfg, "deploy the alias"):
        yield


def serve_version(cfg: KfopsConfig, version: str) -> dict[str, Any]:
    """Serve ``version`` of ``registry.model_name``: the KServe rollout (a canary when one already
    serves, promoted or rolled back) on a cluster; a start or hot swap of the local server (or its
    container) otherwise, smoke-tested. The promotion controller rolls out through here too.
    """
    from kfops.adapters import mlflow_registry as registry
    from kfops.serving.local import client as serving_client
    from kfops.serving.local import process

    if serving_target(cfg) == "kserve":
        from kfops.adapters.kserve_cluster import rollout

        result = rollout(cfg, version)
        return {"endpoint": result["url"], "version": version, "rollout": result}
    if serving_target(cfg) == "docker":
        from kfops.serving.local.container import start_server_container

        status = start_server_container(cfg, model_version=version)
    else:
        status = process.start_server(cfg, model_version=version)
    model_dir = registry.fetch_version_dir(cfg, version)
    example = example_request_rows(model_dir)
    response = serving_client.smoke_test(status["url"], cfg.registry.model_name, example)
    return {"endpoint": status["url"], "version": version, "smoke_test": response}


def serving_target(cfg: KfopsConfig) -> str:
    """``serving.target``, with auto meaning kserve inside a Kubernetes pod (a KFP run on the cluster)."""
    if cfg.serving.target != "auto":
        return cfg.serving.target
    return "kserve" if os.environ.get("KUBERNETES_SERVICE_HOST") else "local"


def example_request_rows(model_dir: Path) -> list[dict[str, Any]]:
    """The input example MLflow stored beside the model: a real row to smoke-test the endpoint with."""
    mlflow_dir = Path(model_dir).parent.parent  # <mlflow model>/artifacts/<kfops model>
    example = mlflow_dir / "input_example.json"
    if example.is_file():
        data = json.loads(example.read_text())
        columns, rows = data["columns"], data["data"]
        return [dict(zip(columns, row, strict=True)) for row in rows[:1]]
    raise KfopsError(f"no input example stored with the model at {mlflow_dir}")
