"""File and module helpers with no dependency beyond the standard library: atomic writes,
advisory file locks, JSON-safe values and ``module:function`` imports.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.util
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kfops.errors import ConfigError


class LockTimeout(TimeoutError):
    """A file lock was still held by another process when the wait ran out."""


class _Held:
    """One lock file as this process holds it: a thread lock, the depth, the locked descriptor."""

    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_HELD_GUARD = threading.Lock()
_HELD: dict[str, _Held] = {}


@contextlib.contextmanager
def file_lock(path: str | Path, timeout_s: float = 120.0, what: str = "") -> Iterator[Path]:
    """Hold an exclusive advisory lock (``flock``) on ``path`` (created 0600) for the block.

    One writer at a time across processes on this machine; the kernel drops the lock when its
    holder dies (a kill -9 leaves no stale lock). Re-entrant within a process (nested blocks in one
    thread share the hold; other threads wait), so a locked function may call another that takes
    the same lock. Raises :class:`LockTimeout` after ``timeout_s`` seconds of waiting.
    """
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _HELD_GUARD:
        held = _HELD.setdefault(str(target), _Held())
    deadline = time.monotonic() + timeout_s
    about = f" ({what})" if what else ""
    if not held.thread_lock.acquire(timeout=timeout_s):
        raise LockTimeout(f"{target} stayed locked by another thread for {timeout_s:g}s{about}")
    try:
        if held.depth == 0:
            fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise LockTimeout(f"{target} stayed locked by another process for {timeout_s:g}s{about}") \
                            from None
                    time.sleep(0.05)
            held.fd = fd
        held.depth += 1
        try:
            yield target
        finally:
            held.depth -= 1
            if held.depth == 0 and held.fd is not None:
                fcntl.flock(held.fd, fcntl.LOCK_UN)
                os.close(held.fd)
                held.fd = None
    finally:
        held.thread_lock.release()


def import_callable(spec: str, search_path: Path | None = None,
                    project_dir: Path | None = None) -> Callable[..., Any]:
    """Resolve ``module:function``.

    With ``search_path``, a module that is a file (``a/b.py`` for ``a.b``) inside that folder is
    loaded from it by path, without touching ``sys.path`` or ``sys.modules``, so two folders with
    the same module name never mix; otherwise the module is imported as usual, and a module found
    nowhere on ``sys.path`` is looked for in the project folder (``project_dir``, the folder of the
    kfops.yaml that named it, else :data:`PROJECT_DIR_ENV`), so a project's plug-in module beside
    its kfops.yaml needs no PYTHONPATH, in a pipeline task and in a command that runs in process
    (``kfops backtest``, ``kfops features``) alike.
    """
    module, where, attr = _import_attribute(spec, search_path, project_dir)
    found: Callable[..., Any] | None = getattr(module, attr, None)
    if not callable(found):
        raise ConfigError(f"'{where}' has no function '{attr}' (from '{spec}')")
    return found


def import_object(spec: str, search_path: Path | None = None, project_dir: Path | None = None) -> Any:
    """Resolve ``module:NAME`` to any object (a declaration, a constant), as :func:`import_callable` does."""
    module, where, attr = _import_attribute(spec, search_path, project_dir)
    if not hasattr(module, attr):
        raise ConfigError(f"'{where}' has no '{attr}' (from '{spec}')")
    return getattr(module, attr)


PROJECT_DIR_ENV = "KFOPS_PROJECT_DIR"  # the same variable as kfops.config.PROJECT_DIR_ENV

# The config keys that name a plug-in, ``module:attr``, imported where a step or server runs.
PLUGIN_KEYS = ("dataset.loader", "dataset.entity_builder", "dataset.feast_sources_writer",
               "dataset.request_builder", "features.feature_set", "train.trainer")


def project_plugins(values: dict[str, str | None], project_dir: Path | None) -> dict[str, str]:
    """Plug-in key -> module, for each plug-in whose module is a file of the project folder (kfops'
    own modules aside, which every kfops image holds): an image or machine without the project's
    files cannot import it."""
    if project_dir is None:
        return {}
    project = Path(project_dir).resolve()
    found = {}
    for key, spec in values.items():
        if not spec or ":" not in spec:  # unset, or a built-in name (train.trainer: xgboost)
            continue
        module = spec.partition(":")[0]
        top = module.split(".")[0]
        if top != "kfops" and ((project / f"{top}.py").is_file() or (project / top / "__init__.py").is_file()):
            found[key] = module
    return found


def plugin_sources_digest(modules: Iterable[str], project_dir: Path | None) -> str | None:
    """A hash of the source files of ``modules`` (the project's own plug-ins, from
    ``KfopsConfig.project_plugins``) in ``project_dir``, or None when there are none: the part of
    a model's code that is the project's, for its lineage and the backtest's cache key."""
    import hashlib

    tops = sorted({module.split(".")[0] for module in modules})
    if not tops or project_dir is None:
        return None
    project = Path(project_dir)
    digest = hashlib.sha256()
    for top in tops:
        files = [project / f"{top}.py"] if (project / f"{top}.py").is_file() else sorted((project / top).rglob("*.py"))
        for path in files:
            digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _import_attribute(spec: str, search_path: Path | None, project_dir: Path | None = None) -> tuple[Any, Any, str]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"'{spec}' must look like module:function")
    file = Path(search_path) / (module_name.replace(".", "/") + ".py") if search_path is not None else None
    try:
        if file is not None and file.is_file():
            unique = f"kfops_user_{abs(hash(str(file.resolve())))}_{module_name.replace('.', '_')}"
            loader_spec = importlib.util.spec_from_file_location(unique, file)
            if loader_spec is None or loader_spec.loader is None:
                raise ConfigError(f"{file} cannot be imported")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = import_from_project(module_name, project_dir)
    except (ImportError, SyntaxError) as err:
        raise ConfigError(f"cannot import '{module_name}' for '{spec}': {err}") from err
    where = file if file is not None and file.is_file() else module_name
    return module, where, attr


def import_from_project(module_name: str, project_dir: Path | None = None) -> Any:
    """``import module_name``, preferring the project folder (``project_dir``, else
    :data:`PROJECT_DIR_ENV`) when its top-level module is a file of that folder.

    One process may meet two projects whose plug-ins share a name (a test run, a notebook, a
    backtest after a run): a module of that name imported from another folder is dropped and this
    project's own is imported, never the first one loaded under the name. The folder stays on
    ``sys.path`` (last) for the imports the plug-in makes later. kfops' own modules are never
    replaced. Without such a file, a plain import (an installed package).
    """
    top = module_name.split(".")[0]
    folder = _folder_holding(top, project_dir) if top != "kfops" else None
    if folder is None:
        return importlib.import_module(module_name)
    cached = sys.modules.get(top)
    if cached is not None and not _loaded_from(cached, folder):
        for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
            del sys.modules[name]
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    with on_sys_path(folder):  # first, for this import: the project's module, not a namesake elsewhere on the path
        return importlib.import_module(module_name)


def _folder_holding(top: str, project_dir: Path | None) -> Path | None:
    for project in (project_dir, os.environ.get(PROJECT_DIR_ENV)):
        if not project:
            continue
        folder = Path(project).expanduser().resolve()
        if (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file():
            return folder
    return None


def _loaded_from(module: Any, folder: Path) -> bool:
    """Whether ``module`` was loaded from a file (or package folder) inside ``folder``."""
    places = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []) or [])]
    return any(bool(place) and Path(place).resolve().is_relative_to(folder) for place in places)


@contextlib.contextmanager
def on_sys_path(folder: Path) -> Iterator[None]:
    """Put ``folder`` first on ``sys.path`` for the block: for project packages such as ``pipelines``."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a half.

    The temporary file is created exclusively in the target's folder (no predictable name to
    pre-create or link), synced, then renamed over the target.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)  # mkstemp makes 0600; most outputs are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path in the target's folder for a writer that needs a file name (parquet, torch).

    The file is created exclusively (as in :func:`atomic_write_bytes`); on success it gets
    ``mode`` and replaces ``path``; on any error it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def json_safe(value: Any) -> Any:
    """A value ``json.dumps(..., allow_nan=False)`` accepts, for every report kfops writes.

    NaN, infinities, NaT and NA become null (JSON has no such numbers; null is what every reader
    understands as "no value"). Numpy scalars and arrays become numbers and lists, timestamps and
    dates ISO strings, sets sorted lists, paths strings; anything else its ``str``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return [json_safe(item) for item in sorted(value, key=str)]
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    return str(value)
