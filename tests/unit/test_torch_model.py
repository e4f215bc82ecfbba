"""The torch tabular network and its model folder: encoding edge cases, save/load without pickle."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kfops.core.model import FeatureSpec, load_model, predict_proba, save_model
from kfops.errors import DataError, KfopsError
from kfops.training.torch_model import (
    ARCH_FILE,
    WEIGHTS_FILE,
    TabularArch,
    TorchTabularModel,
    build_net,
    numeric_stats,
)


def _frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "distance": rng.normal(1000, 300, n),
            "temp": rng.normal(50, 10, n),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "carrier": rng.choice(["AA", "B6", "UA", "DL"], n),
        }
    )
    frame.loc[::7, "temp"] = np.nan
    frame["label"] = (rng.random(n) < 0.3).astype(int)
    return frame


def _model(frame: pd.DataFrame, hidden=(8,), dropout=0.0) -> TorchTabularModel:
    import torch

    spec = FeatureSpec.fit(frame, ["distance", "origin", "temp", "carrier"], ["origin", "carrier"])
    arch = TabularArch.from_spec(spec, embedding_dim=4, hidden=list(hidden), dropout=dropout)
    mean, std = numeric_stats(spec.encode(frame), arch)
    torch.manual_seed(0)
    return TorchTabularModel(build_net(arch, mean, std), spec)


def test_unknown_and_missing_categories_share_the_unknown_embedding():
    frame = _frame()
    model = _model(frame)
    rows = pd.DataFrame(
        {"distance": [900.0] * 3, "temp": [40.0] * 3, "origin": ["ORD", None, "ZZZ"], "carrier": ["AA"] * 3}
    )
    probabilities = predict_proba(model, rows)
    assert np.all(np.isfinite(probabilities))
    # Never-seen "ORD", a missing value and "ZZZ" all map to the same unknown slot.
    assert probabilities[0] == pytest.approx(probabilities[1]) == pytest.approx(probabilities[2])
    known = predict_proba(model, rows.assign(origin="JFK"))
    assert known[0] != pytest.approx(probabilities[0])


def test_out_of_range_codes_are_treated_as_unknown():
    model = _model(_frame())
    matrix = model.spec.encode(_frame(3, seed=1))
    origin = model.spec.columns.index("origin")
    unknown = matrix.copy()
    unknown[:, origin] = np.nan
    beyond = matrix.copy()
    beyond[:, origin] = 99.0
    assert np.allclose(model.predict_proba_encoded(unknown), model.predict_proba_encoded(beyond))


def test_missing_numeric_is_not_the_same_as_the_mean():
    frame = _frame()
    model = _model(frame)
    row = frame.iloc[[1]].copy()
    mean_temp = float(frame["temp"].mean())
    at_mean = predict_proba(model, row.assign(temp=mean_temp))
    missing = predict_proba(model, row.assign(temp=np.nan))
    assert np.isfinite(missing).all()
    # The missing indicator is an input of its own, so "missing" is not silently "average".
    assert missing[0] != pytest.approx(at_mean[0], abs=1e-7)


def test_numeric_stats_guard_constant_and_empty_columns():
    spec = FeatureSpec(columns=["a", "b", "c"])
    arch = TabularArch.from_spec(spec, 4, [4], 0.0)
    matrix = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.nan, 5.0, np.inf]], dtype=np.float32)
    mean, std = numeric_stats(matrix, arch)
    assert mean.tolist() == pytest.approx([2.0, 5.0, 0.0])
    assert std.tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_model_folder_roundtrip_loads_weights_only(tmp_path):
    import torch

    frame = _frame()
    model = _model(frame, hidden=(8, 4), dropout=0.2)
    save_model(model, tmp_path / "model", metadata={"run": "r1"})
    assert (tmp_path / "model" / WEIGHTS_FILE).is_file()
    assert json.loads((tmp_path / "model" / ARCH_FILE).read_text())["hidden"] == [8, 4]
    # The weights file is a plain tensor dict: it loads under the restricted unpickler.
    state = torch.load(tmp_path / "model" / WEIGHTS_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "numeric_mean" in state and "numeric_std" in state

    loaded = load_model(tmp_path / "model")
    assert isinstance(loaded, TorchTabularModel)
    assert np.array_equal(predict_proba(loaded, frame), predict_proba(model, frame))  # eval mode: no dropout


def test_weights_with_pickled_objects_are_refused(tmp_path):
    import torch

    model = _model(_frame())
    save_model(model, tmp_path / "model")
    # A weights file carrying an arbitrary Python object must not be unpickled.
    torch.save({"payload": _Payload()}, tmp_path / "model" / WEIGHTS_FILE)
    with pytest.raises(KfopsError, match="refusing to unpickle"):
        load_model(tmp_path / "model")


class _Payload:
    pass


def test_wrong_matrix_width_and_mismatched_spec_are_refused(tmp_path):
    frame = _frame()
    model = _model(frame)
    with pytest.raises(DataError, match="4 columns"):
        model.predict_proba_encoded(np.zeros((2, 3), dtype=np.float32))
    narrower = FeatureSpec(columns=["distance"], categorical={})
    with pytest.raises(KfopsError, match="expects 4 columns but the feature spec has 1"):
        TorchTabularModel(model.net, narrower)


def test_unknown_architecture_version_is_refused():
    spec = FeatureSpec(columns=["a"])
    data = TabularArch.from_spec(spec, 4, [4], 0.0).to_dict() | {"version": 99}
    with pytest.raises(KfopsError, match="version 99"):
        TabularArch.from_dict(data)


def test_importing_the_torch_modules_does_not_import_torch():
    code = (
        "import sys\n"
        "import kfops.training.torch_model, kfops.training.torch_trainer, kfops.training.ddp_worker\n"
        "import kfops.adapters.trainjob, kfops.adapters.kfp_gpu\n"
        "heavy = [m for m in ('torch', 'kfp', 'kubernetes') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
