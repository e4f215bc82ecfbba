"""The kfops model format: a folder any trainer writes and any server loads, without pickle.

    <dir>/kfops_model.json   trainer name, feature spec (columns, category vocabularies), threshold
    <dir>/<weights>          native weights: XGBoost UBJ, or a torch state_dict (weights_only)

``FeatureSpec.encode`` is the single place where a frame of raw features becomes the float32
matrix every trainer and the server use, so training and serving cannot disagree.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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
                out[:, i] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(columns=list(data["columns"]), categorical=dict(data.get("categorical", {})),
                   label=data.get("label", "label"))


class TabularModel(Protocol):
    """What every trainer's model offers the evaluator and the server."""

    trainer: str
    spec: FeatureSpec
    threshold: float

    def predict_proba_encoded(self, matrix: np.ndarray) -> np.ndarray: ...

    def save_weights(self, folder: Path) -> None: ...


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


def load_model(folder: Path) -> TabularModel:
    """Load a model folder with its trainer's native loader."""
    meta = read_meta(folder)
    trainer = meta.get("trainer")
    if trainer not in TRAINERS:
        raise KfopsError(f"model at {folder} was written by unknown trainer '{trainer}'")
    module_name, class_name = TRAINERS[trainer].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    model: TabularModel = cls.load(Path(folder), FeatureSpec.from_dict(meta["spec"]), float(meta.get("threshold", 0.5)))
    return model
