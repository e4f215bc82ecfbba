"""The CUDA/NCCL path of the torch trainer. Skipped on machines without a GPU.

On a GPU machine: ``.venv/bin/pytest -q tests/unit/test_torch_gpu.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfops.core.model import FeatureSpec
from kfops.errors import TrainingError
from kfops.training.torch_trainer import train_torch
from tests.unit.test_torch_trainer import CATEGORICAL, FEATURES, flights_like, small_cfg


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.fixture(scope="module")
def gpus() -> int:
    count = _gpu_count()
    if count == 0:
        pytest.skip("no CUDA device visible")
    return count


@pytest.fixture(scope="module")
def data():
    frame = flights_like(4096 + 1024, seed=2)
    train, validation = frame.iloc[:4096], frame.iloc[4096:]
    return train, validation, FeatureSpec.fit(train, FEATURES, CATEGORICAL)


@pytest.mark.timeout(300)
def test_nccl_process_group_on_one_gpu_trains_with_mixed_precision(gpus, data, tmp_path):
    train, validation, spec = data
    cfg = small_cfg(backend="nccl", nproc_per_node=1, epochs=3, batch_size=256, num_threads=None)
    result = train_torch(train, validation, spec, cfg, tmp_path, launcher="torchrun")
    assert result.params["device"] == "cuda" and result.params["backend"] == "nccl"
    assert result.params["amp_dtype"] in {"bfloat16", "float16"}
    assert result.metrics["validation_auc"] > 0.75
    # The saved model serves on CPU.
    scores = result.model.predict_proba_encoded(spec.encode(validation))
    assert np.isfinite(scores).all() and next(result.model.net.parameters()).device.type == "cpu"


@pytest.mark.timeout(300)
def test_ddp_over_all_gpus(gpus, data, tmp_path):
    if gpus < 2:
        pytest.skip("DDP over NCCL needs at least 2 GPUs (NCCL refuses two ranks on one GPU)")
    train, validation, spec = data
    cfg = small_cfg(backend="nccl", nproc_per_node=gpus, epochs=2, batch_size=128, num_threads=None)
    result = train_torch(train, validation, spec, cfg, tmp_path)
    assert result.params["world_size"] == gpus and result.params["backend"] == "nccl"
    assert result.metrics["validation_auc"] > 0.7


def test_more_ranks_than_gpus_is_refused(gpus, data, tmp_path):
    train, validation, spec = data
    with pytest.raises(TrainingError, match=f"only {gpus} GPU"):
        train_torch(train, validation, spec, small_cfg(nproc_per_node=gpus + 1), tmp_path)
