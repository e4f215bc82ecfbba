"""A project's own images: kfops' image of each role with the project's files as its working folder.

A project made by ``kfops init`` (or by hand) keeps its plug-in modules, suites and Feast
definitions beside its kfops.yaml. A pod has none of them: every step resolves relative paths and
imports plug-ins in the image's working folder, ``/opt/kfops``, which in kfops' own images holds
the example's files. ``kfops build -c project/kfops.yaml`` builds, per role, a thin image on
kfops' image whose ``/opt/kfops`` holds the project instead:

- the config file, as ``kfops.yaml``;
- the folders its relative paths name: ``validation.suites_dir``, ``features.repo_path``, and
  ``dataset.source_dir`` when it is a folder inside the project (raw data baked in; an
  ``s3://`` source is read at run time instead);
- every top-level Python module and package of the project folder (the plug-ins, and what
  they import).

Hidden files, ``__pycache__``, the local state folder (``data_dir``) and what the project's
``.dockerignore`` names stay out. Files are owned by root and read-only to the image's user,
as in kfops' own images.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from kfops.cluster.images import ROLES, BuildResult, ignore_patterns, ignored, image_size, role_tags, run_commands
from kfops.errors import ConfigError, KfopsError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

WORKDIR = "/opt/kfops"
IMAGE_CONFIG_NAME = "kfops.yaml"
# Kept from kfops' image: its own pipeline and component sources, the same for every project.
KEPT_FROM_BASE = ("pipelines", "components")
# The project keys whose relative folders the image carries.
CARRIED_FOLDER_KEYS = ("validation.suites_dir", "features.repo_path", "dataset.source_dir")

DOCKERFILE = """\
# Made by `kfops build` for the project {project}: kfops' {role} image, with the project's files
# as its working folder (kfops.yaml, suites, Feast definitions, plug-in modules).
ARG KFOPS_IMAGE
FROM ${{KFOPS_IMAGE}}
USER 0
RUN find {workdir} -mindepth 1 -maxdepth 1 {kept} -exec rm -rf {{}} +
COPY project/ {workdir}/
LABEL io.kfops.project={project_label}
USER 1000:1000
"""


def stock_images() -> dict[str, str]:
    """kfops' own image of each role, for this version: what a project image builds on by default."""
    from kfops.config import ClusterConfig

    return role_tags(ClusterConfig())


def is_kfops_source(folder: Path) -> bool:
    """The kfops repository (Dockerfiles and the package), whose images ``kfops build`` makes from source."""
    return (folder / "Dockerfile").is_file() and (folder / "kfops" / "__init__.py").is_file()


@dataclass(frozen=True)
class ProjectImageBuild:
    role: str
    tag: str
    base: str

    def build_command(self) -> list[str]:
        """``docker build`` reading the context (Dockerfile included) from stdin."""
        return ["docker", "build", "--build-arg", f"KFOPS_IMAGE={self.base}", "--tag", self.tag, "-"]

    def push_command(self) -> list[str]:
        return ["docker", "push", self.tag]


def project_builds(cfg: KfopsConfig, roles: tuple[str, ...] = ("pipeline", "serving"),
                   bases: dict[str, str] | None = None) -> list[ProjectImageBuild]:
    """One build per role: tag from the project's ``cluster.*`` image keys, base kfops' image of the role.

    A tag that is kfops' own image is refused: the project's image would replace it.
    """
    unknown = [role for role in [*roles, *(bases or {})] if role not in ROLES]
    if unknown:
        raise ConfigError(f"unknown image role(s) {', '.join(unknown)}", hint=f"choose from {', '.join(ROLES)}")
    stock = stock_images()
    tags = role_tags(cfg.cluster)
    keys = {"pipeline": "cluster.image", "serving": "cluster.serving_image", "gpu": "cluster.gpu_image"}
    builds = []
    for role in roles:
        base = (bases or {}).get(role, stock[role])
        if tags[role] in (stock[role], base):
            raise ConfigError(
                f"{keys[role]} is {tags[role]}, kfops' own {role} image: the project's image needs a tag of "
                "its own, which its pipeline and servers then run",
                hint=f"set {keys[role]} in the project's kfops.yaml or with --set {keys[role]}=registry/name:tag")
        builds.append(ProjectImageBuild(role, tags[role], base))
    return builds


def _relative_inside(key: str, written: Path | str, project: Path) -> PurePosixPath | None:
    """A project key's folder as a path inside the project; None when it is not a local folder."""
    from kfops.config import is_uri

    if is_uri(written):
        return None
    path = Path(written).expanduser()
    absolute = path if path.is_absolute() else (project / path)
    try:
        relative = absolute.resolve().relative_to(project)
    except ValueError:
        if key == "dataset.source_dir":
            return None  # raw data outside the project: a pod reads it from where the config says
        raise ConfigError(f"{key} '{written}' is outside the project folder {project}: the image carries only "
                          "the project's own files",
                          hint=f"move it into {project} and write {key} relative to kfops.yaml") from None
    if path.is_absolute():
        raise ConfigError(f"{key} '{written}' is a path of this machine: a pod resolves project paths in the "
                          f"image's working folder {WORKDIR}",
                          hint=f"write it relative to kfops.yaml: {key}: {relative.as_posix()}")
    return PurePosixPath(relative.as_posix())


def project_files(cfg: KfopsConfig, config_file: Path) -> dict[str, Path]:
    """Path in the image's working folder -> file of this machine, for everything the image carries."""
    project = config_file.resolve().parent
    patterns = ignore_patterns(project)
    data_dir = (project / cfg.portable().data_dir).resolve()
    portable = cfg.portable()

    def skipped(path: Path) -> bool:
        relative = path.relative_to(project).as_posix()
        return (path.name.startswith(".") or path.name == "__pycache__" or path.suffix == ".pyc"
                or ignored(relative, patterns) or path.resolve() == data_dir)

    def walk(folder: Path) -> Iterator[Path]:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not skipped(Path(root) / d))
            yield from (Path(root) / name for name in sorted(files) if not skipped(Path(root) / name))

    files = {IMAGE_CONFIG_NAME: config_file.resolve()}
    for key in CARRIED_FOLDER_KEYS:
        section, name = key.split(".")
        written = getattr(getattr(portable, section), name)
        if written is None:
            continue
        relative = _relative_inside(key, written, project)
        if relative is None:
            continue
        folder = project / relative
        if not folder.is_dir():
            raise ConfigError(f"{key} '{written}' is not a folder of the project {project}",
                              hint="create it, or fix the key")
        files.update({path.relative_to(project).as_posix(): path for path in walk(folder)})
    for entry in sorted(project.iterdir()):
        if skipped(entry):
            continue
        if entry.is_file() and entry.suffix == ".py":
            files[entry.name] = entry
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            files.update({path.relative_to(project).as_posix(): path for path in walk(entry)})
    return files


def dockerfile(cfg: KfopsConfig, role: str) -> str:
    kept = " ".join(f"! -name {name}" for name in KEPT_FROM_BASE)
    return DOCKERFILE.format(project=cfg.project, role=role, workdir=WORKDIR, kept=kept,
                             project_label=shlex.quote(cfg.project))


def context_tar(files: dict[str, Path], dockerfile_text: str) -> bytes:
    """The build context: the Dockerfile and ``project/``, each file 0644 and owned by root."""
    buffer = io.BytesIO()
    now = int(time.time())

    def add(name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, now
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add("Dockerfile", dockerfile_text.encode())
        for relative, path in sorted(files.items()):
            add(f"project/{relative}", path.read_bytes())
    return buffer.getvalue()


def build_project_images(cfg: KfopsConfig, files: dict[str, Path], builds: list[ProjectImageBuild],
                         on_command: Callable[[str], None], push: bool = False,
                         quiet: bool = False) -> list[BuildResult]:
    """Build (and push) each role's project image holding ``files`` (:func:`project_files`); the base
    images must exist or be pullable."""
    results = []
    for build in builds:
        command = build.build_command()
        on_command("$ " + shlex.join(command) + f" < <Dockerfile and {len(files)} project files>")
        started = time.perf_counter()
        result = subprocess.run(command, input=context_tar(files, dockerfile(cfg, build.role)), check=False,
                                capture_output=quiet)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            tail = (result.stdout or b"")[-3000:].decode(errors="replace") if quiet else ""
            raise KfopsError(f"building the project's {build.role} image ({build.tag}) on {build.base} failed "
                             f"with exit {result.returncode}" + (f":\n{tail}" if tail else ""),
                             hint=f"the base {build.base} must exist here or be pullable: build kfops' images "
                                  "from the kfops repository (`kfops build` there), or name another with --from")
        results.append(BuildResult(build.role, build.tag, seconds, image_size(build.tag)))
        if push:
            run_commands([build.push_command()], on_command)
    return results
