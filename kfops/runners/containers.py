"""Running the compiled pipeline in containers (``kfops run --runner docker``): each task in its own
container of ``cluster.image``, as the image's non-root user, sharing nothing with this machine
but the pipeline root kfp.local mounts and the services on loopback. It is the closest a laptop
gets to a cluster, so the config must be one a cluster could run: shared stores, no local paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.errors import ConfigError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

# Credentials and endpoints a task reads from its environment, as a pod reads them from its
# Kubernetes secrets: forwarded by name, never written into the compiled pipeline.
FORWARDED_PREFIXES = ("AWS_", "MLFLOW_", "PG", "KFOPS__", "KFOPS_SECRET_")
FORWARDED_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
# KFOPS__DATA_DIR: a folder of this machine; the container keeps state in its scratch. The webhook:
# the local runner notifies itself (kfops.runners.local.RUNNER_ONLY_VARIABLES).
NOT_FORWARDED = ("KFOPS__DATA_DIR", "KFOPS__NOTIFY__WEBHOOK_URL")


def forwarded_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    variables = dict(os.environ if environ is None else environ)
    return {name: value for name, value in variables.items()
            if (name.startswith(FORWARDED_PREFIXES) or name in FORWARDED_NAMES) and name not in NOT_FORWARDED}


def docker_run_config(cfg: KfopsConfig) -> KfopsConfig:
    """``cfg`` for a run in containers; refused, with every reason, when a container could not run it.

    ``serving.target: auto`` becomes ``docker``: the deploy step starts the model server as a
    container of ``cluster.serving_image``, as a pod on the cluster creates an InferenceService.
    """
    from kfops.adapters import docker_engine
    from kfops.adapters.kfp_api import cluster_config_problems

    # Each task keeps its state in its container's scratch (the compiled config leaves data_dir
    # relative), while this process reads the pipeline root and logs under data_dir here.
    cfg = cfg.with_state_in_scratch()
    problems = cluster_config_problems(cfg, host_network=True)
    if problems:
        raise ConfigError(
            "this config cannot run in containers, which share no folder with this machine:\n  - "
            + "\n  - ".join(problems),
            hint="use shared stores (an MLflow server, a Feast SQL or S3 registry): see docs/deployment.md, "
                 "'The pipeline in containers'",
        )
    if cfg.serving.target == "auto":
        cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"target": "docker"})})
    missing = [tag for tag in {cfg.cluster.image, cfg.cluster.serving_image} if not docker_engine.image_exists(tag)]
    if missing:
        raise ConfigError(f"image(s) {', '.join(sorted(missing))} not built",
                          hint="build them with `kfops build --role pipeline --role serving` (same --set values)")
    return cfg


def docker_runner_args(cfg: KfopsConfig, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """DockerRunner's container arguments, after opening the pipeline root to the image's user."""
    from kfops.adapters import docker_engine

    open_to_image_user(cfg.pipeline_root, docker_engine.image_user(cfg.cluster.image))
    return docker_engine.task_runner_args(forwarded_environment(environ),
                                          docker_socket=cfg.serving.target == "docker")


def open_to_image_user(folder: Path, user: str) -> None:
    """Let the image's user write ``folder``, which kfp.local mounts into every task container.

    Owned by that uid when this process may chown (root); otherwise, unless this user is the
    image's uid (the usual first user of a laptop, 1000), writable by all with the sticky bit,
    as /tmp is.
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid_text = user.split(":", 1)[0]
    if not uid_text.isdigit():
        return  # root, or a user name: nothing to open
    uid = int(uid_text)
    gid = int(user.split(":", 1)[1]) if ":" in user and user.split(":", 1)[1].isdigit() else uid
    if os.geteuid() == 0:
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, uid, gid, follow_symlinks=False)
    elif os.geteuid() != uid:
        folder.chmod(0o1777)
