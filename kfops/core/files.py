"""File and module helpers with no dependency beyond the standard library: atomic writes,
JSON-safe values and ``module:function`` imports.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kfops.errors import ConfigError


def import_callable(spec: str, search_path: Path | None = None) -> Callable[..., Any]:
    """Resolve ``module:function``.

    With ``search_path``, a module that is a file (``a/b.py`` for ``a.b``) inside that folder is
    loaded from it by path, without touching ``sys.path`` or ``sys.modules``, so two folders with
    the same module name never mix; otherwise the module is imported as usual.
    """
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
            module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as err:
        raise ConfigError(f"cannot import '{module_name}' for '{spec}': {err}") from err
    found: Callable[..., Any] | None = getattr(module, attr, None)
    if not callable(found):
        where = file if file is not None and file.is_file() else module_name
        raise ConfigError(f"'{where}' has no function '{attr}' (from '{spec}')")
    return found


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
