"""The flights example's configuration, as tests build it: kfops' own defaults assume no dataset,
so a test that runs the flights example takes its values from the example's kfops.yaml, never
from the defaults."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from kfops.config import KfopsConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_YAML = REPO_ROOT / "kfops.yaml"


@functools.cache
def _example_tree() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE_YAML.read_text())


def example_tree() -> dict[str, Any]:
    """kfops.yaml as a dict (a fresh copy each call)."""
    return copy.deepcopy(_example_tree())


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def example_config(settings: dict[str, Any] | None = None, /, **sections: Any) -> KfopsConfig:
    """The example's config (kfops.yaml) with ``settings``/``sections`` merged in, key by key:
    ``example_config(data_dir=tmp, registry={"auto_promote": True})`` keeps the example's other
    registry keys. Not resolved: call ``.resolve(...)`` as a test needs."""
    tree = _merge(example_tree(), {**(settings or {}), **sections})
    return KfopsConfig.model_validate(tree)


def write_example_config(path: Path, settings: dict[str, Any] | None = None, /, **sections: Any) -> Path:
    """Write the example's kfops.yaml with ``settings``/``sections`` merged in (as
    :func:`example_config`) to ``path``, for a test that runs the CLI on its own config file."""
    tree = _merge(example_tree(), {**(settings or {}), **sections})
    path.write_text(yaml.safe_dump(_plain(tree), sort_keys=False))
    return path


def _plain(value: Any) -> Any:
    """Paths and dates as the strings YAML reads back."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
