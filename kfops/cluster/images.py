"""The two container images (CPU: ``Dockerfile`` -> ``cluster.image``; GPU: ``Dockerfile.gpu`` ->
``cluster.gpu_image``) and the docker commands that build and push them.

The commands are plain argument lists, so ``kfops build --dry-run`` prints exactly what would run.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kfops.errors import ConfigError, KfopsError

if TYPE_CHECKING:
    from kfops.config import ClusterConfig


@dataclass(frozen=True)
class ImageBuild:
    role: str
    dockerfile: Path
    tag: str

    def build_command(self, context: Path) -> list[str]:
        return ["docker", "build", "--file", str(self.dockerfile), "--tag", self.tag, str(context)]

    def push_command(self) -> list[str]:
        return ["docker", "push", self.tag]


def image_builds(cluster: ClusterConfig, repo_root: Path) -> list[ImageBuild]:
    builds = [
        ImageBuild("cpu", repo_root / "Dockerfile", cluster.image),
        ImageBuild("gpu", repo_root / "Dockerfile.gpu", cluster.gpu_image),
    ]
    for build in builds:
        if not build.dockerfile.is_file():
            raise ConfigError(f"{build.dockerfile} is missing", hint="run `kfops build` from the kfops repository root")
    return builds


def build_commands(cluster: ClusterConfig, repo_root: Path, push: bool = False) -> list[list[str]]:
    commands = []
    for build in image_builds(cluster, repo_root):
        commands.append(build.build_command(repo_root))
        if push:
            commands.append(build.push_command())
    return commands


def docker_available(runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> bool:
    """True when a ``docker`` client is on PATH and its daemon answers ``docker info``."""
    if shutil.which("docker") is None:
        return False
    try:
        result = runner(["docker", "info"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def run_commands(commands: list[list[str]], on_command: Callable[[str], None]) -> None:
    for command in commands:
        on_command("$ " + shlex.join(command))
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            raise KfopsError(f"`{shlex.join(command)}` exited with {result.returncode}",
                             hint="see docker's output above")


def images_in_pipeline(spec: dict) -> dict[str, str]:
    """Executor label -> image of every container executor in a compiled pipeline or component."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    return {label: executor["container"]["image"] for label, executor in executors.items() if "container" in executor}
