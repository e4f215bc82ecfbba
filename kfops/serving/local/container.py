"""``serving.target: docker``: the model server as a container of ``cluster.serving_image``, started
with exactly the command, arguments and environment an InferenceService gives its predictor
(:func:`kfops.adapters.kserve_cluster.predictor_container`).

The container is named after the InferenceService (``kfops-<name>``) and uses the host network,
so it serves on ``serving.host:serving.http_port`` like the local process does. A replacement
starts only after the old container is stopped (they share the port); if the new one does not
become ready, the old one is started again, so a bad model never leaves nothing serving.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from kfops.errors import ServingError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig


def container_name(cfg: KfopsConfig) -> str:
    from kfops.adapters.kserve_cluster import service_name

    return f"kfops-{service_name(cfg)}"


def container_environment(env: list[dict[str, Any]], secrets: dict[str, str]) -> dict[str, str]:
    """A pod's ``env`` list as a container's environment: literal values as they are; a value a
    pod reads from a Kubernetes secret comes from ``secrets`` (the config's own, by variable name)."""
    variables = secrets
    result = {}
    for entry in env:
        if "value" in entry:
            result[entry["name"]] = str(entry["value"])
        elif entry["name"] in variables:
            result[entry["name"]] = variables[entry["name"]]
    return result


def object_store_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    variables = os.environ if environ is None else environ
    return {name: value for name, value in variables.items() if name.startswith(("AWS_", "MLFLOW_S3_"))}


def start_server_container(cfg: KfopsConfig, model_version: str) -> dict[str, Any]:
    from kfops.adapters import docker_engine
    from kfops.adapters.kserve_cluster import predictor_container
    # The Secret a pod would read is this machine's environment: the config's secrets, by name.
    spec = predictor_container(cfg, model_version, host=cfg.serving.host, port=cfg.serving.http_port,
                               secrets_name="local-environment")
    name = container_name(cfg)
    previous = f"{name}-previous"
    docker_engine.remove(previous)
    if docker_engine.container_state(name) is not None:
        docker_engine.stop(name)
        docker_engine.rename(name, previous)
    # A pod reads S3 through its service account's cloud identity; a local container through the
    # same credential variables the pipeline's task containers get.
    environment = {**object_store_environment(), **container_environment(spec["env"], cfg.secret_environment(serving=True))}
    labels = {"io.kfops.model": cfg.registry.model_name, "io.kfops.version": str(model_version)}
    url = f"http://{cfg.serving.host}:{cfg.serving.http_port}"
    try:
        docker_engine.run_detached(spec["image"], name, [*spec["command"], *spec["args"]], environment, labels)
        _wait_container_ready(name, url, cfg)
    except Exception as err:
        tail = docker_engine.logs(name, tail=40)
        docker_engine.remove(name)
        if docker_engine.container_state(previous) is not None:
            docker_engine.rename(previous, name)
            docker_engine.start(name)
        raise ServingError(f"the model server container for version {model_version} did not become ready: {err}"
                           + (f"\n--- its log ---\n{tail}" if tail else ""),
                           hint="the previous container, if any, serves again") from err
    docker_engine.remove(previous)
    return {"url": url, "container": name, "image": spec["image"], "version": str(model_version)}


def _wait_container_ready(name: str, url: str, cfg: KfopsConfig) -> None:
    """Until the model's ready route answers 200 from this container (not from whatever else holds
    the port: the container must still be running), or ``serving.startup_timeout_s``."""
    import urllib.error
    import urllib.request

    from kfops.adapters import docker_engine

    ready = f"{url}/v2/models/{cfg.registry.model_name}/ready"
    deadline = time.monotonic() + cfg.serving.startup_timeout_s
    while True:
        state = docker_engine.container_state(name)
        if state is None or not state.running:
            code = None if state is None else state.exit_code
            raise ServingError(f"container {name} exited (code {code}) before it was ready")
        try:
            with urllib.request.urlopen(ready, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise ServingError(f"{ready} did not answer 200 within {cfg.serving.startup_timeout_s:g} s")
        time.sleep(0.5)


def stop_server_container(cfg: KfopsConfig) -> bool:
    from kfops.adapters import docker_engine

    name = container_name(cfg)
    if docker_engine.container_state(name) is None:
        return False
    docker_engine.remove(name)
    return True
