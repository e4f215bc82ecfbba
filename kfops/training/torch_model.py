"""The torch tabular network and its kfops model wrapper.

The network reads the float32 matrix of :meth:`kfops.core.model.FeatureSpec.encode` directly:
categorical codes go through embeddings (index ``len(vocabulary)`` for unknown or missing),
numeric columns are standardised with statistics kept as buffers in the ``state_dict``
(missing -> 0 plus a missing indicator), then an MLP gives one logit. So the weights file alone
carries the normalisation, and serving needs nothing but the matrix.

Weights are a plain ``state_dict`` read back with ``torch.load(..., weights_only=True)`` (no
arbitrary pickle) plus ``torch_arch.json`` with the shapes needed to rebuild the network.
"""

from __future__ import annotations

import functools
import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kfops.errors import DataError, KfopsError

if TYPE_CHECKING:
    import torch

    from kfops.core.model import FeatureSpec

WEIGHTS_FILE = "torch_model.pt"
ARCH_FILE = "torch_arch.json"
ARCH_VERSION = 1
PREDICT_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class TabularArch:
    """Everything needed to rebuild the network before loading its ``state_dict``."""

    n_columns: int
    categorical_index: list[int]
    cardinalities: list[int]
    numeric_index: list[int]
    embedding_dim: int
    hidden: list[int]
    dropout: float

    @property
    def embedding_dims(self) -> list[int]:
        # A column with few categories gets no more dimensions than it has values (+ unknown).
        return [min(self.embedding_dim, cardinality + 1) for cardinality in self.cardinalities]

    @classmethod
    def from_spec(cls, spec: FeatureSpec, embedding_dim: int, hidden: list[int], dropout: float) -> TabularArch:
        if not spec.columns:
            raise DataError("the feature spec has no columns", hint="set features.request_features/feature_refs")
        categorical = [i for i, c in enumerate(spec.columns) if c in spec.categorical]
        return cls(
            n_columns=len(spec.columns),
            categorical_index=categorical,
            cardinalities=[len(spec.categorical[spec.columns[i]]) for i in categorical],
            numeric_index=[i for i, c in enumerate(spec.columns) if c not in spec.categorical],
            embedding_dim=int(embedding_dim),
            hidden=[int(h) for h in hidden],
            dropout=float(dropout),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"version": ARCH_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularArch:
        if data.get("version") != ARCH_VERSION:
            raise KfopsError(
                f"torch architecture version {data.get('version')} is not supported (expected {ARCH_VERSION})",
                hint="retrain the model with this kfops version",
            )
        fields = {k: v for k, v in data.items() if k != "version"}
        return cls(**fields)


def numeric_stats(matrix: np.ndarray, arch: TabularArch) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each numeric column over its finite values.

    An all-missing column gets (0, 1); a constant one gets std 1, so scaling never divides by 0.
    """
    values = np.asarray(matrix, dtype=np.float64)[:, arch.numeric_index]
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    filled = np.where(finite, values, 0.0)
    mean = np.divide(filled.sum(axis=0), count, out=np.zeros(values.shape[1]), where=count > 0)
    centred = np.where(finite, values - mean, 0.0)
    var = np.divide((centred**2).sum(axis=0), count, out=np.ones(values.shape[1]), where=count > 0)
    std = np.sqrt(var)
    std = np.where(std > 1e-6, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


@functools.cache
def _tabular_net_class() -> type:
    # Built on first use so importing this module does not import torch.
    import torch
    from torch import nn

    class TabularNet(nn.Module):
        def __init__(self, arch: TabularArch):
            super().__init__()
            self.arch = arch
            long = torch.long
            self.register_buffer("categorical_index", torch.tensor(arch.categorical_index, dtype=long))
            self.register_buffer("unknown_code", torch.tensor(arch.cardinalities, dtype=torch.float32))
            self.register_buffer("numeric_index", torch.tensor(arch.numeric_index, dtype=long))
            n_numeric = len(arch.numeric_index)
            self.register_buffer("numeric_mean", torch.zeros(n_numeric))
            self.register_buffer("numeric_std", torch.ones(n_numeric))
            self.embeddings = nn.ModuleList(
                nn.Embedding(cardinality + 1, dim)
                for cardinality, dim in zip(arch.cardinalities, arch.embedding_dims, strict=True)
            )
            width = sum(arch.embedding_dims) + 2 * n_numeric
            layers: list[nn.Module] = []
            for size in arch.hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                if arch.dropout > 0:
                    layers.append(nn.Dropout(arch.dropout))
                width = size
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)

        def forward(self, matrix: torch.Tensor) -> torch.Tensor:
            """Encoded float32 matrix [rows, n_columns] -> logits [rows]."""
            parts = []
            if len(self.embeddings):
                codes = matrix.index_select(1, self.categorical_index)
                unknown = ~torch.isfinite(codes) | (codes < 0) | (codes >= self.unknown_code)
                index = torch.where(unknown, self.unknown_code, codes).long()
                parts += [embedding(index[:, j]) for j, embedding in enumerate(self.embeddings)]
            if self.numeric_index.numel():
                values = matrix.index_select(1, self.numeric_index)
                missing = ~torch.isfinite(values)
                scaled = torch.where(missing, 0.0, (values - self.numeric_mean) / self.numeric_std)
                parts += [scaled, missing.to(scaled.dtype)]
            return self.mlp(torch.cat(parts, dim=1)).squeeze(1)

    return TabularNet


def build_net(arch: TabularArch, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> torch.nn.Module:
    """A fresh network (weights from the current torch RNG); ``mean``/``std`` set the scaling buffers."""
    import torch

    net = _tabular_net_class()(arch)
    with torch.no_grad():
        if mean is not None:
            net.numeric_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        if std is not None:
            net.numeric_std.copy_(torch.as_tensor(std, dtype=torch.float32))
    return net


def save_net(net: torch.nn.Module, folder: Path) -> None:
    """Write ``state_dict`` (CPU tensors) and the architecture JSON."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu() for name, tensor in net.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    (folder / ARCH_FILE).write_text(json.dumps(net.arch.to_dict(), indent=2))


def load_net(folder: Path, map_location: str = "cpu") -> torch.nn.Module:
    import torch

    folder = Path(folder)
    for name in (WEIGHTS_FILE, ARCH_FILE):
        if not (folder / name).is_file():
            raise KfopsError(f"torch model at {folder} lacks {name}", hint="retrain, or point at a complete model folder")
    arch = TabularArch.from_dict(json.loads((folder / ARCH_FILE).read_text()))
    net = build_net(arch)
    try:
        state = torch.load(folder / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise KfopsError(
            f"{folder / WEIGHTS_FILE} holds more than tensors; refusing to unpickle it",
            hint="only load torch models that kfops wrote (a plain state_dict)",
        ) from err
    net.load_state_dict(state)
    return net.eval()


class TorchTabularModel:
    """A :class:`kfops.core.model.TabularModel` over :func:`build_net`; inference runs on CPU."""

    trainer = "torch"

    def __init__(self, net: torch.nn.Module, spec: FeatureSpec, threshold: float = 0.5):
        if net.arch.n_columns != len(spec.columns):
            raise KfopsError(
                f"torch network expects {net.arch.n_columns} columns but the feature spec has {len(spec.columns)}",
                hint="the weights and kfops_model.json come from different models; retrain",
            )
        self.net = net.cpu().eval()
        self.spec = spec
        self.threshold = threshold

    def predict_proba_encoded(self, matrix: np.ndarray) -> np.ndarray:
        import torch

        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self.net.arch.n_columns:
            raise DataError(f"expected a matrix of {self.net.arch.n_columns} columns, got shape {matrix.shape}")
        out = np.empty(len(matrix), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(matrix), PREDICT_CHUNK_ROWS):
                chunk = torch.from_numpy(np.ascontiguousarray(matrix[start : start + PREDICT_CHUNK_ROWS]))
                out[start : start + len(chunk)] = torch.sigmoid(self.net(chunk)).double().numpy()
        return out

    def save_weights(self, folder: Path) -> None:
        save_net(self.net, folder)

    @classmethod
    def load(cls, folder: Path, spec: FeatureSpec, threshold: float) -> TorchTabularModel:
        return cls(load_net(folder), spec, threshold)
