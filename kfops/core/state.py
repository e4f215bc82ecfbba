"""State that outlives a run: one small key-value interface, and the pure logic on top of it.

A pipeline task on a cluster is a pod whose disk is gone when the task ends, so what the next run
needs (the retrain-policy decisions, the validation volume baseline, the drift reference, the
inference logs) lives in a :class:`StateStore`. The embedded default keeps files under
``data_dir``; a cluster keeps objects under ``state.store`` (``s3://bucket/prefix``). The
implementations are in :mod:`kfops.adapters.state_store`; this module knows no backend.

Every write replaces a whole object, so a reader sees the old value or the new one, never half.
Read-modify-write goes through :func:`update_json`, which retries on a conflict: two writers
updating the same key both land, in some order, and neither overwrites the other's change.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

from kfops.errors import DataError

T = TypeVar("T")

# Keys: '/'-separated names of letters, digits and ._=-, no empty part, no '.' or '..' part.
_KEY_PART = re.compile(r"^[A-Za-z0-9_=\-][A-Za-z0-9._=\-]*$")
UPDATE_ATTEMPTS = 50


def check_key(key: str) -> str:
    """``key`` if it is a relative '/'-separated name every backend can hold; a ValueError otherwise."""
    parts = key.split("/") if isinstance(key, str) else [""]
    if not key or any(not _KEY_PART.match(part) or part in (".", "..") for part in parts):
        raise ValueError(f"state key {key!r} must be '/'-separated names of letters, digits and ._=- "
                         "(no empty, '.' or '..' part, no leading '/')")
    return key


class StateStore(ABC):
    """Whole objects under '/'-separated keys, with a conditional write for read-modify-write.

    ``version`` tokens are opaque: what :meth:`read_versioned` returned for the object as it was
    read (None: there was none), handed back to :meth:`write_if`.
    """

    #: Where the store is, for messages: a folder or an ``s3://`` URI.
    location: str

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """The object's bytes and version token; ``(None, None)`` when there is none."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Replace the object at ``key`` whole (last writer wins)."""

    @abstractmethod
    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Write only if the object is still at ``version`` (None: only if there is none yet).

        False, and nothing written, when another writer got there first."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under the folder-like ``prefix`` (``a/b`` lists ``a/b/...``), sorted."""

    def read(self, key: str) -> bytes | None:
        return self.read_versioned(key)[0]

    def uri(self, key: str) -> str:
        """Where ``key`` lives, for messages and for readers that take a location."""
        return f"{self.location.rstrip('/')}/{check_key(key)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


def _decode(store: StateStore, key: str, data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"state {store.uri(key)} is not valid JSON: {err}",
                        hint="restore it, or move it away to start afresh") from err


def _encode(value: Any) -> bytes:
    return (json.dumps(value, indent=2, default=str) + "\n").encode("utf-8")


def read_json(store: StateStore, key: str) -> Any:
    """The JSON value at ``key``; None when there is none."""
    return _decode(store, key, store.read(key))


def write_json(store: StateStore, key: str, value: Any) -> None:
    """Replace the JSON value at ``key`` (last writer wins)."""
    store.write(key, _encode(value))


def update_json(store: StateStore, key: str, change: Callable[[Any], tuple[Any, T]],
                attempts: int = UPDATE_ATTEMPTS) -> T:
    """Read-modify-write of one JSON value that loses no concurrent update.

    ``change(current)`` (``current`` is None when the key has no value) returns the new value and
    a result for the caller. When another writer changed the value in between, ``change`` runs
    again on what that writer left, so it must be a pure function of its argument.
    """
    for _ in range(attempts):
        data, version = store.read_versioned(key)
        new, result = change(_decode(store, key, data))
        if store.write_if(key, _encode(new), version):
            return result
    raise DataError(f"state {store.uri(key)} kept changing under {attempts} attempts to update it",
                    hint="too many writers at once; retry the step")
