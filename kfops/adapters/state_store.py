"""The two homes of :class:`kfops.core.state.StateStore`: files under ``data_dir`` (the embedded
default) and objects under an ``s3://bucket/prefix`` (``state.store``, for a cluster).

Both write whole objects. Locally a write is a temporary file renamed over the target
(:func:`kfops.core.files.atomic_write_bytes`) and a conditional write holds an ``flock`` on
``<file>.lock`` while it compares the content's digest; on S3 a conditional write is a put with
``If-Match: <ETag>`` (or ``If-None-Match: *`` for a new key), which S3 applies atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.files import atomic_write_bytes
from kfops.core.state import StateStore, check_key
from kfops.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig

LOCK_SUFFIX = ".lock"


class LocalStateStore(StateStore):
    """Files under ``root``: key ``a/b.json`` is ``root/a/b.json``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.location = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def write(self, key: str, data: bytes) -> None:
        # 0644: a scheduler and a backtest may run as other users.
        atomic_write_bytes(self.path(key), data, mode=0o644)

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        path = self.path(key)
        with locked(path):
            if self.read_versioned(key)[1] != version:
                return False
            atomic_write_bytes(path, data, mode=0o644)
        return True

    def list_keys(self, prefix: str = "") -> list[str]:
        folder = self.root / check_key(prefix) if prefix else self.root
        if not folder.is_dir():
            return []
        found = []
        for path in folder.rglob("*"):
            # Temporary files of a write in progress start with '.'; lock files are no state.
            if path.is_file() and not path.name.startswith(".") and not path.name.endswith(LOCK_SUFFIX):
                found.append(path.relative_to(self.root).as_posix())
        return sorted(found)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<path>.lock`` for the block (the lock kfops.core.retrain_policy takes too)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + LOCK_SUFFIX), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class S3StateStore(StateStore):
    """Objects under ``s3://bucket/prefix``: key ``a/b.json`` is ``prefix/a/b.json``."""

    def __init__(self, uri: str):
        from kfops.adapters.s3 import split_s3_uri

        self.bucket, self.prefix = split_s3_uri(uri)
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from kfops.adapters.s3 import s3_client

            self._client = s3_client()
        return self._client

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        from kfops.adapters.s3 import get_object_versioned

        return get_object_versioned(self.bucket, self.object_key(key), client=self.client)

    def write(self, key: str, data: bytes) -> None:
        from kfops.adapters.s3 import put_object

        put_object(self.bucket, self.object_key(key), data, client=self.client)

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        from kfops.adapters.s3 import put_object_if

        return put_object_if(self.bucket, self.object_key(key), data, version, client=self.client)

    def list_keys(self, prefix: str = "") -> list[str]:
        from kfops.adapters.s3 import list_keys

        under = self.object_key(prefix) if prefix else self.prefix
        skip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(key[skip:] for key in list_keys(self.bucket, under, client=self.client))


def store_at(location: str | Path) -> StateStore:
    """The store at a folder or an ``s3://bucket/prefix``."""
    text = str(location)
    if text.startswith("s3://"):
        try:
            return S3StateStore(text)
        except ValueError as err:
            raise ConfigError(str(err), hint="use s3://<bucket>/<prefix>") from err
    if "://" in text:
        raise ConfigError(f"state store '{text}' is neither a folder nor an s3:// URI",
                          hint="use s3://<bucket>/<prefix>, or leave state.store unset for files under data_dir")
    return LocalStateStore(Path(text))


def state_store(cfg: KfopsConfig) -> StateStore:
    """The config's store: ``state.store`` when set, else files under ``data_dir``."""
    return store_at(cfg.state_location)


def parquet_frame(data: bytes) -> pd.DataFrame:
    """Stored parquet bytes as a frame, read from a copy in Arrow's own memory.

    Arrow's worker threads may drop the last reference to what they read from after the call has
    returned. A Python object there (``io.BytesIO``, ``bytes``) needs the GIL to be released, and
    at interpreter exit that aborts the whole process (std::terminate, apache/arrow#34314): a
    task that had done its work would fail. Arrow memory is freed without Python.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    owned = pa.allocate_buffer(len(data))
    np.frombuffer(owned, dtype=np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
    return pq.read_table(pa.BufferReader(owned)).to_pandas()
