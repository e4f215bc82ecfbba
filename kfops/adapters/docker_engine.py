"""Docker Engine adapter: the containers a local run starts (the model server of ``serving.target:
docker``) and what kfp.local's DockerRunner needs to run each task as a pod would.

Containers use the host's network: the services of a local production profile (MLflow, Postgres,
Redis, S3) listen on loopback, and machines without a bridge network still run them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfops.errors import KfopsError

SOCKET = "/var/run/docker.sock"
MANAGED_LABEL = "io.kfops.managed"


def _client() -> Any:
    try:
        import docker
    except ImportError as err:  # pragma: no cover - docker is a dependency of mlflow
        raise KfopsError("the docker Python package is not installed", hint="pip install docker") from err
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as err:  # docker.errors.DockerException: no daemon, no permission
        raise KfopsError(f"no Docker engine answers: {err}",
                         hint="start dockerd (scripts/docker_engine.sh) or run without --runner docker") from err
    return client


def image_exists(tag: str) -> bool:
    import docker

    try:
        _client().images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def image_user(tag: str) -> str:
    """The user an image runs as (``Config.User``; empty: root)."""
    return str(_client().images.get(tag).attrs.get("Config", {}).get("User") or "")


def socket_group() -> int | None:
    """The group owning the engine's socket, so a non-root container user may be given it."""
    try:
        mode = os.stat(SOCKET)
    except OSError:
        return None
    return mode.st_gid if stat.S_ISSOCK(mode.st_mode) else None


@dataclass(frozen=True)
class ContainerState:
    name: str
    running: bool
    exit_code: int | None
    image: str
    labels: dict[str, str]


def container_state(name: str) -> ContainerState | None:
    import docker

    try:
        container = _client().containers.get(name)
    except docker.errors.NotFound:
        return None
    state = container.attrs.get("State", {})
    return ContainerState(name, bool(state.get("Running")), state.get("ExitCode"),
                          container.attrs.get("Config", {}).get("Image", ""), dict(container.labels or {}))


def run_detached(image: str, name: str, command: list[str], environment: dict[str, str],
                 labels: dict[str, str] | None = None) -> None:
    """Start ``image`` as ``name`` in the background, as the image's own user, on the host network."""
    _client().containers.run(image=image, command=command, name=name, detach=True, environment=environment,
                             network_mode="host", labels={MANAGED_LABEL: "true", **(labels or {})},
                             restart_policy={"Name": "no"})


def rename(name: str, new_name: str) -> None:
    _client().containers.get(name).rename(new_name)


def stop(name: str, timeout_s: int = 20) -> None:
    import docker

    with contextlib.suppress(docker.errors.NotFound):
        _client().containers.get(name).stop(timeout=timeout_s)


def start(name: str) -> None:
    _client().containers.get(name).start()


def remove(name: str) -> None:
    import docker

    with contextlib.suppress(docker.errors.NotFound):
        _client().containers.get(name).remove(force=True)


def logs(name: str, tail: int = 80) -> str:
    import docker

    try:
        return _client().containers.get(name).logs(tail=tail).decode(errors="replace")
    except docker.errors.NotFound:
        return ""


def task_runner_args(environment: dict[str, str], docker_socket: bool) -> dict[str, Any]:
    """``containers.run`` arguments for kfp.local's DockerRunner: the host network, the given
    environment, and with ``docker_socket`` the engine's socket (the deploy step starts the model
    server as a sibling container, as a pod creates an InferenceService)."""
    from docker.types import Mount

    args: dict[str, Any] = {"network_mode": "host", "environment": dict(environment)}
    if docker_socket and Path(SOCKET).exists():
        args["mounts"] = [Mount(target=SOCKET, source=SOCKET, type="bind")]
        group = socket_group()
        if group is not None:
            args["group_add"] = [group]
    return args
