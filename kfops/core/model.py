"""The kfops model format: a folder any trainer writes and any server loads, without pickle.

    <dir>/kfops_model.json   trainer name, feature spec (columns, category vocabularies), threshold
    <dir>/<weights>          native weights: XGBoost UBJ, or a torch state_dict (weights_only)
    <dir>/plugin/            a plug-in trainer's own files (``train.trainer: module:Class``)

``FeatureSpec.encode`` is the single place where a frame of raw features becomes the float32
matrix every trainer and the server use, so training and serving cannot disagree.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from kfops.errors import DataError, KfopsError

if TYPE_CHECKING:
    import pandas as pd

FORMAT_VERSION = 1
META_FILE = "kfops_model.json"
TRAINERS = {
    "xgboost": "kfops.training.xgb:XGBoostModel",
    "torch": "kfops.training.torch_model:TorchTabularModel",
}
BUILTIN_TRAINERS = tuple(TRAINERS)
PLUGIN_TRAINER = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
PLUGIN_DIR = "plugin"


@dataclass
class FeatureSpec:
    """Ordered model inputs. Categorical values map to their index in the vocabulary; unknown -> NaN."""

    columns: list[str]
    categorical: dict[str, list[str]] = field(default_factory=dict)
    label: str = "label"

    @property
    def numeric(self) -> list[str]:
        return [c for c in self.columns if c not in self.categorical]

    @property
    def feature_types(self) -> list[str]:
        return ["c" if c in self.categorical else "q" for c in self.columns]

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: list[str], categorical: list[str], label: str = "label") -> FeatureSpec:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"training data lacks feature column(s) {', '.join(missing)}")
        vocab = {
            c: sorted(str(v) for v in frame[c].dropna().unique()) for c in columns if c in set(categorical)
        }
        return cls(columns=list(columns), categorical=vocab, label=label)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw feature frame -> float32 matrix in ``columns`` order."""
        import pandas as pd

        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataError(f"input lacks feature column(s) {', '.join(missing)}")
        out = np.empty((len(frame), len(self.columns)), dtype=np.float32)
        for i, column in enumerate(self.columns):
            values = frame[column]
            if column in self.categorical:
                codes = pd.Categorical(values.astype("string"), categories=self.categorical[column]).codes
                out[:, i] = np.where(codes < 0, np.nan, codes)
            else:
                with np.errstate(over="ignore"):  # a number beyond float32 becomes inf, refused just below
                    out[:, i] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
                _refuse_infinite(out[:, i], column, values)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(columns=list(data["columns"]), categorical=dict(data.get("categorical", {})),
                   label=data.get("label", "label"))


def _refuse_infinite(encoded: np.ndarray, column: str, values: pd.Series) -> None:
    """Raise a DataError for a numeric feature holding +-inf, or a number float32 cannot hold.

    No trainer learns from such a value (XGBoost refuses it, a network's weights would turn NaN) and
    the server refuses it in a request, so it is named here, where every path encodes, rather than
    read as missing: an infinity is usually a broken sensor or a division by zero upstream.
    """
    bad = np.isinf(encoded)
    if not bad.any():
        return
    first = int(np.argmax(bad))
    value = values.iloc[first]
    value = value.item() if hasattr(value, "item") else value  # 'inf', not 'np.float64(inf)'
    raise DataError(
        f"feature '{column}' holds {int(bad.sum()):,} infinite value(s) or number(s) beyond float32's range "
        f"(+-3.4e38), of {len(encoded):,} rows; the first is {value!r} at row {first}",
        hint="clean them where the data is made (the dataset loader or upstream: a division by zero, a "
        "broken sensor), or bound the column in its validation suite (expect_column_values_to_be_between) "
        "so that validation stops such data first",
    )


class TabularModel(Protocol):
    """What every trainer's model offers the evaluator and the server."""

    trainer: str
    spec: FeatureSpec
    threshold: float

    def predict_proba_encoded(self, matrix: np.ndarray) -> np.ndarray: ...

    def save_weights(self, folder: Path) -> None: ...


@dataclass(frozen=True)
class TrainingData:
    """What a plug-in trainer's ``fit`` receives: the splits already encoded by ``spec`` (float32,
    ``spec.columns`` order, categories as vocabulary indices, missing and unseen values NaN), exactly
    the matrix its ``predict_proba`` will get when serving."""

    train: np.ndarray
    train_labels: np.ndarray
    validation: np.ndarray
    validation_labels: np.ndarray
    spec: FeatureSpec
    seed: int
    work_dir: Path


class ModelPlugin(Protocol):
    """A trainer of your own: ``train.trainer: module:Class`` names a class with these four methods.

    ``fit`` returns a fitted instance; ``predict_proba`` gives P(label = 1) per row, shape (n,);
    ``save`` writes the model's files into an empty folder and ``load`` reads them back (in another
    process, another image: prefer a plain format to pickle, which runs code when loaded).
    """

    @classmethod
    def fit(cls, data: TrainingData, params: dict[str, Any]) -> ModelPlugin: ...

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray: ...

    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path, spec: FeatureSpec) -> ModelPlugin: ...


class PluginModel:
    """A plug-in's model as a :class:`TabularModel`: kfops keeps the folder layout, the spec and the
    threshold, and checks every answer of the plug-in before anyone uses it."""

    source: ClassVar[str] = "plugin"

    def __init__(self, trainer: str, inner: ModelPlugin, spec: FeatureSpec, threshold: float = 0.5):
        self.trainer = trainer
        self.inner = inner
        self.spec = spec
        self.threshold = threshold

    def predict_proba_encoded(self, matrix: np.ndarray) -> np.ndarray:
        out = np.asarray(self.inner.predict_proba(matrix), dtype=np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.shape != (len(matrix),):
            hint = " (two columns: return P(label = 1) alone, e.g. proba[:, 1])" if out.ndim == 2 else ""
            raise KfopsError(f"trainer {self.trainer}: predict_proba returned shape {out.shape} for "
                             f"{len(matrix)} rows; expected ({len(matrix)},){hint}")
        if not np.all(np.isfinite(out)) or np.any((out < 0) | (out > 1)):
            raise KfopsError(f"trainer {self.trainer}: predict_proba returned values outside [0, 1] "
                             "(or NaN); it must return probabilities")
        return out

    def save_weights(self, folder: Path) -> None:
        target = Path(folder) / PLUGIN_DIR
        target.mkdir(parents=True, exist_ok=False)
        self.inner.save(target)

    @classmethod
    def load_plugin(cls, trainer: str, plugin: type[ModelPlugin], folder: Path, spec: FeatureSpec,
                    threshold: float) -> PluginModel:
        return cls(trainer, plugin.load(Path(folder) / PLUGIN_DIR, spec), spec, threshold)


def import_plugin(trainer: str, project_dir: Path | None = None) -> type[ModelPlugin]:
    """The class ``train.trainer`` names, checked to offer what kfops calls."""
    from kfops.core.files import import_object
    from kfops.errors import ConfigError

    found = import_object(trainer, project_dir=project_dir)
    missing = [name for name in ("fit", "predict_proba", "save", "load") if not callable(getattr(found, name, None))]
    if missing:
        raise ConfigError(f"trainer {trainer} lacks {', '.join(missing)}",
                          hint="a plug-in trainer is a class with fit, predict_proba, save and load: see docs/trainers.md")
    plugin: type[ModelPlugin] = found
    return plugin


def predict_proba(model: TabularModel, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba_encoded(model.spec.encode(frame))


def save_model(model: TabularModel, folder: Path, metadata: dict[str, Any] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_weights(folder)
    meta = {
        "format_version": FORMAT_VERSION,
        "trainer": model.trainer,
        "spec": model.spec.to_dict(),
        "threshold": float(model.threshold),
        "metadata": metadata or {},
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return folder


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise KfopsError(f"{folder} is not a kfops model folder: {META_FILE} is missing")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


class UnnamedPlugin(KfopsError):
    """A model folder written by a plug-in trainer the config does not name (so it is not imported)."""

    def __init__(self, trainer: str, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.trainer = trainer


def load_model(folder: Path, plugins: tuple[str, ...] = (), project_dir: Path | None = None) -> TabularModel:
    """Load a model folder with its trainer's native loader.

    A folder names the trainer that wrote it, and loading imports that trainer's code; so a plug-in
    trainer is imported only when it is one of ``plugins`` (the config's ``train.plugins``), never
    because a model folder, which a registry hands out, names it.
    """
    meta = read_meta(folder)
    trainer = meta.get("trainer")
    spec, threshold = FeatureSpec.from_dict(meta["spec"]), float(meta.get("threshold", 0.5))
    if trainer in TRAINERS:
        module_name, class_name = TRAINERS[trainer].split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        model: TabularModel = cls.load(Path(folder), spec, threshold)
        return model
    if isinstance(trainer, str) and trainer in plugins:
        return PluginModel.load_plugin(trainer, import_plugin(trainer, project_dir), Path(folder), spec, threshold)
    if isinstance(trainer, str) and re.fullmatch(PLUGIN_TRAINER, trainer):
        raise UnnamedPlugin(trainer,
            f"the model at {folder} was written by the plug-in trainer {trainer}, which this config does not name; "
            "kfops imports a plug-in to load a model only when train.trainer or train.also_load names it",
            hint=f"add {trainer} to train.also_load (or set train.trainer to it) where this model is loaded",
        )
    raise KfopsError(f"model at {folder} was written by unknown trainer '{trainer}'")

