"""Where a served model comes from, and loading it into an immutable, warmed-up snapshot.

A source is either a kfops model folder or a registry URI (``models:/<name>/<version>`` or
``models:/<name>@<alias>``). Aliases are resolved to a version number first and that exact
version is fetched, so the version the server reports is the one it loaded.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kfops.core.redaction import strip_password
from kfops.errors import ConfigError, KfopsError
from kfops.serving.protocol.encoding import RowEncoder
from kfops.serving.protocol.payloads import RequestError

if TYPE_CHECKING:
    from kfops.core.model import FeatureSpec, TabularModel

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[0-9]+)|@(?P<alias>[\w.-]+))$")


@dataclass(frozen=True)
class ModelSource:
    model_dir: Path | None = None
    model_uri: str | None = None
    tracking_uri: str | None = field(default=None, repr=False)  # may carry a password

    def __post_init__(self):
        if (self.model_dir is None) == (self.model_uri is None):
            raise ConfigError("give exactly one of a model folder (--model-dir) or a registry URI (--model-uri)")
        if self.model_uri is not None:
            if not MODEL_URI.match(self.model_uri):
                raise ConfigError(
                    f"model URI '{self.model_uri}' is not models:/<name>/<version> or models:/<name>@<alias>"
                )
            if not self.tracking_uri:
                raise ConfigError(f"serving {self.model_uri} needs an MLflow tracking URI (--tracking-uri)")

    def describe(self) -> str:
        return str(self.model_dir) if self.model_dir is not None else str(self.model_uri)

    def to_dict(self) -> dict[str, str | None]:
        """The source as kept in a state file or sent to a server: the tracking URI without its password."""
        return {
            "model_dir": str(self.model_dir) if self.model_dir is not None else None,
            "model_uri": self.model_uri,
            "tracking_uri": strip_password(self.tracking_uri) if self.model_uri and self.tracking_uri else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_tracking_uri: str | None = None) -> ModelSource:
        unknown = set(data) - {"model_dir", "model_uri", "tracking_uri"}
        if unknown:
            raise ConfigError(f"unknown model source field(s) {', '.join(sorted(unknown))}")
        model_dir = data.get("model_dir")
        tracking_uri = data.get("tracking_uri") or default_tracking_uri
        if tracking_uri and default_tracking_uri and strip_password(tracking_uri) == strip_password(default_tracking_uri):
            tracking_uri = default_tracking_uri  # the same store: its password, which to_dict() left out
        return cls(
            model_dir=Path(model_dir) if model_dir else None,
            model_uri=data.get("model_uri") or None,
            tracking_uri=tracking_uri,
        )


@dataclass(frozen=True)
class LoadedModel:
    """What one batch predicts with; swapped as a whole, never mutated."""

    model: TabularModel
    version: str
    source: ModelSource
    encoder: RowEncoder = field(repr=False)

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    @property
    def threshold(self) -> float:
        return float(self.model.threshold)

    @functools.cached_property
    def categorical_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.spec.columns if c in self.spec.categorical)


class ReloadRefused(RequestError):
    """A reload the server's control plane does not allow (another registry, a folder outside the roots)."""

    status = 403
    reason = "reload_refused"


RELOAD_FIELDS = ("model_version", "model_uri", "tracking_uri", "model_dir")


@dataclass(frozen=True)
class ReloadPolicy:
    """What ``POST /v1/models/<name>/reload`` may swap in.

    Only a version of ``model_names`` from the registry at ``tracking_uri`` (the server's own:
    a reload naming another tracking server would send it the server's MLflow credentials), or
    a model folder under one of ``roots``, checked before any file of it is read.
    """

    tracking_uri: str | None
    model_names: Collection[str]
    roots: Sequence[Path] = ()

    def source(self, request: dict[str, Any], current: ModelSource) -> ModelSource | None:
        """The source to load for a reload body (None: reload ``current`` again); raises
        :class:`RequestError` (400) for a malformed body, :class:`ReloadRefused` (403) for one not allowed."""
        unknown = set(request) - set(RELOAD_FIELDS)
        if unknown:
            raise RequestError(f"unknown reload field(s) {', '.join(sorted(unknown))}; "
                               f"send {{}}, {{\"model_version\": ...}}, {{\"model_uri\": ...}} or {{\"model_dir\": ...}}")
        given = [k for k in ("model_version", "model_uri", "model_dir") if request.get(k) not in (None, "")]
        if len(given) > 1:
            raise RequestError(f"give one of model_version, model_uri or model_dir, not {' and '.join(given)}")
        tracking_uri = request.get("tracking_uri")
        if tracking_uri not in (None, "", self.tracking_uri):
            raise ReloadRefused("a reload cannot name another tracking server; this server loads from its own "
                                "registry only (restart it to serve from another)")
        if not given:
            return None
        if given[0] == "model_dir":
            return ModelSource(model_dir=self.allowed_folder(request["model_dir"]))
        if given[0] == "model_version":
            version = str(request["model_version"])
            if not (version.isascii() and version.isdigit()):  # str.isdigit takes other scripts' digits too
                raise RequestError(f"model_version must be a version number, got {version!r}")
            name = _registered_name(current) or next(iter(self.model_names), None)
            if name is None:
                raise ReloadRefused("this server has no registered model to take a version of")
            model_uri = f"models:/{name}/{version}"
        else:
            model_uri = str(request["model_uri"])
            match = MODEL_URI.match(model_uri)
            if not match:
                raise RequestError(f"model URI '{model_uri}' is not models:/<name>/<version> or models:/<name>@<alias>")
            if match["name"] not in self.model_names:
                raise ReloadRefused(f"this server serves {' or '.join(sorted(self.model_names))}; "
                                    f"it does not load {match['name']}")
        if not self.tracking_uri:
            raise ReloadRefused("this server has no tracking server to load registry versions from")
        return ModelSource(model_uri=model_uri, tracking_uri=self.tracking_uri)

    def allowed_folder(self, folder: Any) -> Path:
        """``folder``'s real path when it lies under a root (symlinks resolved, nothing read)."""
        if not isinstance(folder, str):
            raise RequestError("model_dir must be a path")
        real = Path(os.path.realpath(folder))
        for root in self.roots:
            if real.is_relative_to(os.path.realpath(root)):
                return real
        allowed = ", ".join(str(r) for r in self.roots) or "none: no reload roots are configured"
        raise ReloadRefused(f"model_dir {folder} is outside the folders a reload may load from ({allowed}); "
                            "see serving.reload_roots")


def _registered_name(source: ModelSource) -> str | None:
    match = MODEL_URI.match(source.model_uri) if source.model_uri else None
    return match["name"] if match else None


def folder_digest(folder: Path) -> str:
    """A short content hash of a model folder: the version of an unregistered model."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def resolve_version(source: ModelSource) -> tuple[str, str]:
    """``(pinned models:/name/version URI, version)`` for a registry source."""
    match = MODEL_URI.match(source.model_uri)
    if match["version"]:
        return source.model_uri, match["version"]
    from kfops.adapters.mlflow_registry import version_for_alias

    version = version_for_alias(source.tracking_uri, match["name"], match["alias"])
    return f"models:/{match['name']}/{version}", version


def limit_threads(model: TabularModel, threads: int | None) -> None:
    """Serving batches are small: one thread per call beats waking a pool on a shared CPU."""
    booster = getattr(model, "booster", None)
    if threads and booster is not None and hasattr(booster, "set_param"):
        booster.set_param({"nthread": int(threads)})


def load_source(source: ModelSource, *, predict_threads: int | None = 1, plugins: tuple[str, ...] = (),
                project_dir: Path | None = None) -> LoadedModel:
    """Load, warm up and check a model; raises KfopsError naming what is wrong.

    ``plugins`` are the config's plug-in trainers (``train.plugins``), the only ones whose code a
    model folder may make this process import (``project_dir``: where their modules lie).
    """
    from kfops.core.model import load_model

    if source.model_dir is not None:
        folder = Path(source.model_dir)
        if not folder.is_dir():
            raise KfopsError(f"model folder {folder} does not exist", hint="pass the folder holding kfops_model.json")
        from kfops.core.model import META_FILE

        if not (folder / META_FILE).is_file():  # before hashing: never read a folder that is not a model
            raise KfopsError(f"{folder} is not a kfops model folder: {META_FILE} is missing")
        version = f"local-{folder_digest(folder)}"
    else:
        from kfops.adapters.mlflow_registry import fetch_model_dir

        pinned, version = resolve_version(source)
        folder = Path(fetch_model_dir(source.tracking_uri, pinned))
    model = load_model(folder, plugins, project_dir)
    limit_threads(model, predict_threads)
    warm = np.full((1, len(model.spec.columns)), np.nan, dtype=np.float32)
    out = np.asarray(model.predict_proba_encoded(warm))
    if out.shape != (1,):
        raise KfopsError(f"model at {source.describe()} returned shape {out.shape} for one row; expected (1,)")
    return LoadedModel(model=model, version=version, source=source, encoder=RowEncoder(model.spec))
