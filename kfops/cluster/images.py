"""The container images, one per role, and building them with the docker CLI.

- ``pipeline``: ``Dockerfile`` -> ``cluster.image``; every pipeline step but GPU training.
- ``serving``: ``Dockerfile.serving`` -> ``cluster.serving_image``; model server, transformer, log sink.
- ``gpu``: ``Dockerfile.gpu`` -> ``cluster.gpu_image``; training with CUDA torch.

The build context is sent as a tar stream that kfops assembles (the project files that
``.dockerignore`` lets through), so build-time settings can ride along in ``images/pip/``
without touching the checkout: with ``pip_from_host`` that folder carries this machine's pip
configuration, and its local wheel folders are served on loopback while the build runs.
Commands are plain argument lists, so ``kfops build --dry-run`` prints exactly what would run.
"""

from __future__ import annotations

import configparser
import contextlib
import fnmatch
import http.server
import io
import os
import shlex
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import url2pathname

from kfops.errors import ConfigError, KfopsError

if TYPE_CHECKING:
    from kfops.config import ClusterConfig

ROLES = ("pipeline", "serving", "gpu")
DOCKERFILES = {"pipeline": "Dockerfile", "serving": "Dockerfile.serving", "gpu": "Dockerfile.gpu"}
PIP_SETTINGS_DIR = "images/pip"  # copied into the build stage only (see images/pip/README.md)
IMAGE_USER_UID = 1000  # the non-root user every image runs as
MIRROR_PORT = 38917  # the loopback wheel mirror of --pip-from-host, when free


@dataclass(frozen=True)
class BuildOptions:
    """Build arguments shared by every role; ``None`` keeps the Dockerfile's default."""

    base_image: str | None = None  # default python:3.11-slim (a CUDA image for gpu)
    torch_index: str | None = None  # default PyTorch's CPU index (cu* for gpu); "" = pip's own indexes
    pip_from_host: bool = False
    network_host: bool = False
    gpu_base_image: str | None = None  # default: the CUDA runtime image Dockerfile.gpu names

    def build_args(self, role: str) -> dict[str, str]:
        args = {}
        if self.base_image is not None and role != "gpu":  # the GPU image keeps its CUDA base
            args["BASE_IMAGE"] = self.base_image
        if self.gpu_base_image is not None and role == "gpu":
            args["BASE_IMAGE"] = self.gpu_base_image
        if self.torch_index is not None and role != "serving":
            args["TORCH_INDEX"] = self.torch_index
        return args


@dataclass(frozen=True)
class ImageBuild:
    role: str
    dockerfile: Path
    tag: str
    options: BuildOptions = field(default_factory=BuildOptions)

    def build_command(self, context: Path | None = None) -> list[str]:
        """``docker build``; with no ``context`` the context is read from stdin (a tar stream)."""
        command = ["docker", "build", "--file", self.dockerfile.name, "--tag", self.tag]
        for key, value in self.options.build_args(self.role).items():
            command += ["--build-arg", f"{key}={value}"]
        if self.options.network_host or self.options.pip_from_host:
            command += ["--network", "host"]  # loopback wheel mirror, and machines without a bridge
        command.append("-" if context is None else str(context))
        return command

    def push_command(self) -> list[str]:
        return ["docker", "push", self.tag]


def role_tags(cluster: ClusterConfig) -> dict[str, str]:
    return {"pipeline": cluster.image, "serving": cluster.serving_image, "gpu": cluster.gpu_image}


def image_builds(cluster: ClusterConfig, repo_root: Path, roles: tuple[str, ...] = ROLES,
                 options: BuildOptions | None = None) -> list[ImageBuild]:
    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        raise ConfigError(f"unknown image role(s) {', '.join(unknown)}", hint=f"choose from {', '.join(ROLES)}")
    tags = role_tags(cluster)
    builds = [ImageBuild(role, repo_root / DOCKERFILES[role], tags[role], options or BuildOptions()) for role in roles]
    for build in builds:
        if not build.dockerfile.is_file():
            raise ConfigError(f"{build.dockerfile} is missing", hint="run `kfops build` from the kfops repository root")
    return builds


def build_commands(cluster: ClusterConfig, repo_root: Path, push: bool = False, roles: tuple[str, ...] = ROLES,
                   options: BuildOptions | None = None) -> list[list[str]]:
    """The commands as a person would type them (context: the repository folder)."""
    commands = []
    for build in image_builds(cluster, repo_root, roles, options):
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


# --- the build context -------------------------------------------------------------------------

def ignore_patterns(repo_root: Path) -> list[str]:
    path = repo_root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        bare = pattern[3:] if pattern.startswith("**/") else pattern
        if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(relative.rsplit("/", 1)[-1], bare):
            return True
    return False


def context_files(repo_root: Path) -> Iterator[tuple[str, Path]]:
    """(path in the context, file) for every project file ``.dockerignore`` lets through."""
    patterns = ignore_patterns(repo_root)
    for folder, dirs, files in os.walk(repo_root):
        base = Path(folder).relative_to(repo_root)
        dirs[:] = sorted(d for d in dirs if not ignored((base / d).as_posix(), patterns))
        for name in sorted(files):
            relative = (base / name).as_posix()
            if not ignored(relative, patterns) and not relative.startswith(PIP_SETTINGS_DIR + "/"):
                yield relative, Path(folder) / name


def context_tar(repo_root: Path, pip_settings: dict[str, bytes] | None = None,
                extra_files: dict[str, bytes] | None = None) -> bytes:
    """The build context as an uncompressed tar; ``pip_settings`` fills ``images/pip/``, and
    ``extra_files`` (context path -> bytes) are added as they are."""
    buffer = io.BytesIO()
    # ustar: the docker CLI recognises a context on stdin by its first 512 bytes, which a PAX header spoils.
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for relative, path in context_files(repo_root):
            info = tar.gettarinfo(str(path), arcname=relative)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            elif not info.issym():
                tar.addfile(info)
        settings = {"README.md": b"build-time pip settings (kfops build)\n", **(pip_settings or {})}
        added = {f"{PIP_SETTINGS_DIR}/{name}": data for name, data in settings.items()} | (extra_files or {})
        for name, data in added.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --- the host's pip configuration, for builds behind a proxy or beside a local wheel mirror --------

@dataclass(frozen=True)
class HostPip:
    index_url: str | None
    extra_index_urls: list[str]
    find_links: list[str]
    cert: Path | None


def read_host_pip(run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                  python: str = "python3") -> HostPip:
    """This machine's pip settings, as ``pip config list`` shows them (files and PIP_* variables)."""
    result = run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, raw = line.partition("=")
        if sep:
            values.setdefault(key.split(".", 1)[-1].strip(), raw.strip().strip("'\""))  # first one wins

    def split(key: str) -> list[str]:
        return values.get(key, "").split()

    cert = values.get("cert")
    return HostPip(values.get("index-url"), split("extra-index-url"), split("find-links"),
                   Path(cert) if cert else None)


class _LoopbackMirror:
    """Serves local folders read-only over HTTP on 127.0.0.1 while a build runs (pip cannot reach file://
    URLs of the host from inside a build container). Each folder gets a prefix ``/m<n>/``."""

    def __init__(self) -> None:
        self.roots: dict[str, Path] = {}
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def _served_path(self, path: str) -> Path | None:
                prefix, _, rest = path.lstrip("/").partition("/")
                root = mirror.roots.get(prefix)
                if root is None:
                    return None
                target = (root / url2pathname(rest.split("?", 1)[0].split("#", 1)[0])).resolve()
                return target if target.is_relative_to(root) else None

            def send_head(self):  # type: ignore[no-untyped-def]
                # A 404 for anything outside the served folders (no "missing" marker path: one
                # such as /nonexistent can exist on a host, and would then be listed).
                if self._served_path(self.path) is None:
                    self.send_error(404)
                    return None
                return super().send_head()

            def translate_path(self, path: str) -> str:
                target = self._served_path(path)
                return str(target) if target is not None else ""

            def log_message(self, *args: object) -> None:
                pass

        # A fixed port when free: the port is written into the build's pip.conf, and a pip.conf that
        # changes from build to build would invalidate docker's layer cache of every dependency.
        try:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", MIRROR_PORT), Handler)
        except OSError:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def url_for(self, folder: Path, rest: str = "") -> str:
        prefix = f"m{len(self.roots)}"
        self.roots[prefix] = folder.resolve()
        return f"http://127.0.0.1:{self.server.server_address[1]}/{prefix}/{rest}"

    def __enter__(self) -> _LoopbackMirror:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _local_folder(location: str) -> Path | None:
    if location.startswith("file:"):
        return Path(url2pathname(urlparse(location).path))
    if "://" not in location:
        return Path(location)
    return None


def pip_settings_from_host(host: HostPip, mirror: _LoopbackMirror) -> dict[str, bytes]:
    """``pip.conf`` (and ``ca.pem``) for the build stage, with local folders served by ``mirror``."""
    def reachable(location: str) -> str | None:
        folder = _local_folder(location)
        if folder is None:
            return location
        if not folder.is_dir():
            return None
        # A PEP 503 index links its files relatively (../../files/...): serve its parent folder.
        if folder.name == "simple":
            return mirror.url_for(folder.parent, "simple/")
        return mirror.url_for(folder)

    conf = configparser.ConfigParser()
    conf["global"] = {}
    section = conf["global"]
    if host.index_url:
        section["index-url"] = reachable(host.index_url) or host.index_url
    extra = [url for url in map(reachable, host.extra_index_urls) if url]
    links = [url for url in map(reachable, host.find_links) if url]
    if extra:
        section["extra-index-url"] = " ".join(extra)
    if links:
        section["find-links"] = " ".join(links)
    if mirror.roots:
        section["trusted-host"] = "127.0.0.1"
    files: dict[str, bytes] = {}
    if host.cert is not None and host.cert.is_file():
        files["ca.pem"] = host.cert.read_bytes()
        section["cert"] = "/etc/kfops-pip/ca.pem"
    text = io.StringIO()
    conf.write(text)
    files["pip.conf"] = text.getvalue().encode()
    return files


@contextlib.contextmanager
def build_context(repo_root: Path, pip_from_host: bool, extra_files: dict[str, bytes] | None = None) -> Iterator[bytes]:
    """The context tar; with ``pip_from_host``, the loopback mirror it names runs until the block ends."""
    if not pip_from_host:
        yield context_tar(repo_root, extra_files=extra_files)
        return
    with _LoopbackMirror() as mirror:
        yield context_tar(repo_root, pip_settings_from_host(read_host_pip(), mirror), extra_files)


@dataclass
class BuildResult:
    role: str
    tag: str
    seconds: float
    size_bytes: int


def image_size(tag: str) -> int:
    result = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", tag],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KfopsError(f"image {tag} does not exist", hint=result.stderr.strip()[-300:])
    return int(result.stdout.strip())


def build_images(builds: list[ImageBuild], repo_root: Path, on_command: Callable[[str], None],
                 push: bool = False, quiet: bool = False) -> list[BuildResult]:
    """Build each image from one assembled context; returns each build's time and image size."""
    results = []
    pip_from_host = any(build.options.pip_from_host for build in builds)
    with build_context(repo_root, pip_from_host) as tar:
        for build in builds:
            command = build.build_command()
            on_command("$ " + shlex.join(command) + " < <context>")
            started = time.perf_counter()
            result = subprocess.run(command, input=tar, check=False,
                                    capture_output=quiet)
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                tail = (result.stdout or b"")[-3000:].decode(errors="replace") if quiet else ""
                raise KfopsError(f"building the {build.role} image ({build.tag}) failed with exit {result.returncode}"
                                 + (f":\n{tail}" if tail else ""), hint="see docker's output above")
            results.append(BuildResult(build.role, build.tag, seconds, image_size(build.tag)))
            if push:
                run_commands([build.push_command()], on_command)
    return results


def images_in_pipeline(spec: dict) -> dict[str, str]:
    """Executor label -> image of every container executor in a compiled pipeline or component."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    return {label: executor["container"]["image"] for label, executor in executors.items() if "container" in executor}

