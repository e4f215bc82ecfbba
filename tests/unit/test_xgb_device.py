"""XGBoost's `device: auto` asks torch about CUDA only where a GPU driver is: importing torch costs
seconds in every training task, to learn there is no GPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kfops.training.xgb import GPU_DEVICE_NODES


@pytest.mark.skipif(any(os.path.exists(node) for node in GPU_DEVICE_NODES), reason="this machine has a GPU driver")
def test_no_gpu_driver_means_cpu_without_importing_torch():
    probe = "import sys; from kfops.training.xgb import gpu_available; print(gpu_available(), 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"], done.stdout + done.stderr


def test_hidden_devices_mean_cpu(monkeypatch):
    from kfops.training.xgb import gpu_available

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_available() is False
