"""The torch trainer in one process: planning, training through ``train_model``, resume, metrics."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from kfops.config import TorchConfig, TrainConfig
from kfops.core.model import FeatureSpec, load_model, predict_proba, save_model
from kfops.errors import DataError, TrainingError
from kfops.training import train_model
from kfops.training.ddp_worker import find_resume_checkpoint, log_loss, roc_auc
from kfops.training.torch_trainer import plan_launch, train_torch

FEATURES = ["distance", "dep_hour", "temp", "origin", "carrier"]
CATEGORICAL = ["origin", "carrier"]


def flights_like(n: int, seed: int = 0) -> pd.DataFrame:
    """Small synthetic flights-shaped data whose label depends on hour, weather and carrier."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "distance": rng.uniform(100, 2500, n),
            "dep_hour": rng.integers(5, 23, n),
            "temp": rng.normal(55, 15, n),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "carrier": rng.choice(["AA", "B6", "DL", "UA", "WN"], n),
        }
    )
    frame.loc[rng.random(n) < 0.05, "temp"] = np.nan
    score = 0.25 * (frame["dep_hour"] - 14) + 1.5 * (frame["carrier"] == "B6") - 0.03 * frame["temp"].fillna(55)
    frame["label"] = (score + rng.logistic(size=n) > -1.0).astype(int)
    return frame


def small_cfg(**overrides) -> TorchConfig:
    values = {"epochs": 3, "batch_size": 64, "hidden": [16], "embedding_dim": 4, "dropout": 0.0,
              "learning_rate": 5e-3, "num_threads": 1, "rank_timeout_s": 10}  # fmt: skip
    return TorchConfig(**(values | overrides))


@pytest.fixture(scope="module")
def data():
    frame = flights_like(2400)
    train, validation = frame.iloc[:2048], frame.iloc[2048:]
    return train, validation, FeatureSpec.fit(train, FEATURES, CATEGORICAL)


def test_plan_picks_gloo_on_cpu_and_nccl_on_gpus():
    cpu = plan_launch(TorchConfig(nproc_per_node=2), gpu_count=0, cpu_count=8)
    assert (cpu.backend, cpu.device, cpu.nproc, cpu.num_threads) == ("gloo", "cpu", 2, 4)
    gpu = plan_launch(TorchConfig(nproc_per_node=4), gpu_count=4, cpu_count=8)
    assert (gpu.backend, gpu.device) == ("nccl", "cuda")
    # Explicit gloo keeps a GPU machine on CPU; an explicit thread count wins.
    forced = plan_launch(TorchConfig(backend="gloo", num_threads=3), gpu_count=2, cpu_count=8)
    assert (forced.device, forced.num_threads) == ("cpu", 3)
    # A cluster node not seen yet leaves threads to each rank.
    assert plan_launch(TorchConfig(), gpu_count=0, cpu_count=None).num_threads is None


def test_nccl_without_gpus_is_refused():
    with pytest.raises(TrainingError, match="nccl but no GPU is visible"):
        plan_launch(TorchConfig(backend="nccl"), gpu_count=0, cpu_count=2)


def test_more_processes_than_gpus_is_refused():
    with pytest.raises(TrainingError, match="nproc_per_node=4 but only 2 GPU"):
        plan_launch(TorchConfig(nproc_per_node=4), gpu_count=2, cpu_count=16)


def test_nccl_without_gpus_fails_before_anything_is_written(data, tmp_path):
    train, validation, spec = data
    with pytest.raises(TrainingError, match="nccl"):
        train_torch(train, validation, spec, small_cfg(backend="nccl"), tmp_path)
    assert not any(tmp_path.iterdir())


def test_several_nodes_need_a_cluster(data, tmp_path):
    train, validation, spec = data
    with pytest.raises(TrainingError, match="num_nodes=2 needs a cluster"):
        train_torch(train, validation, spec, small_cfg(num_nodes=2), tmp_path)


def test_a_split_with_one_class_is_refused(data, tmp_path):
    train, validation, spec = data
    cfg = TrainConfig(trainer="torch", torch=small_cfg())
    with pytest.raises(DataError, match="zero rows of class 1"):
        train_model(train[train["label"] == 0], validation, spec, cfg, tmp_path)


def test_labels_must_be_binary(data, tmp_path):
    train, validation, spec = data
    bad = train.assign(label=train["label"].where(train.index % 50 != 0, 2))
    with pytest.raises(DataError, match="not 0 or 1"):
        train_torch(bad, validation, spec, small_cfg(), tmp_path)


def test_train_model_learns_and_the_model_folder_serves_the_same_scores(data, tmp_path):
    train, validation, spec = data
    result = train_model(train, validation, spec, TrainConfig(trainer="torch", torch=small_cfg()), tmp_path / "work")

    assert result.model.trainer == "torch"
    metrics = result.metrics
    assert metrics["epochs"] == 3
    assert metrics["validation_auc"] > 0.75  # the label is learnable from hour, carrier and temp
    assert metrics["validation_logloss"] < log_loss(validation["label"], np.full(len(validation), train.label.mean()))
    assert metrics["validation_auc"] == metrics["validation_auc_epoch_3"]
    assert {"validation_logloss_epoch_1", "validation_auc_epoch_2"} <= set(metrics)
    assert result.params["world_size"] == 1 and result.params["resumed_from_epoch"] == 0

    # The reported metric is the one the saved model gives on the validation split.
    scores = predict_proba(result.model, validation)
    assert roc_auc(validation["label"].to_numpy(), scores) == pytest.approx(metrics["validation_auc"], abs=1e-6)
    save_model(result.model, tmp_path / "model")
    assert np.array_equal(predict_proba(load_model(tmp_path / "model"), validation), scores)


def test_rerun_resumes_with_optimizer_and_rng_state(data, tmp_path):
    """Dropout on, so equality after resuming also proves the RNG state came back."""
    train, validation, spec = data
    cfg = small_cfg(dropout=0.3, epochs=3)
    straight = train_torch(train, validation, spec, cfg, tmp_path / "straight")

    # An interrupted run: only one epoch got done (epochs does not enter the fingerprint).
    first = train_torch(train, validation, spec, cfg.model_copy(update={"epochs": 1}), tmp_path / "resumed")
    assert first.params["epochs_trained_this_run"] == 1
    resumed = train_torch(train, validation, spec, cfg, tmp_path / "resumed")
    assert resumed.params["resumed_from_epoch"] == 1
    assert resumed.params["epochs_trained_this_run"] == 2
    assert resumed.metrics["validation_auc_epoch_1"] == first.metrics["validation_auc_epoch_1"]
    _assert_same_weights(resumed.model.net, straight.model.net, atol=1e-6)

    # Other settings make other weights: their checkpoints are not resumed, the old ones go.
    other = train_torch(train, validation, spec, cfg.model_copy(update={"learning_rate": 1e-3}), tmp_path / "resumed")
    assert other.params["resumed_from_epoch"] == 0
    assert len(list((tmp_path / "resumed" / "checkpoints").iterdir())) == 1


def test_a_torn_checkpoint_falls_back_to_the_previous_one(data, tmp_path):
    train, validation, spec = data
    cfg = small_cfg(epochs=2)
    train_torch(train, validation, spec, cfg, tmp_path)
    job = json.loads((tmp_path / "job.json").read_text())
    (folder,) = (tmp_path / "checkpoints").iterdir()
    latest = folder / "epoch_0002.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # as if killed mid-write without the rename guard
    path, state = find_resume_checkpoint(folder, job["fingerprint"], max_epochs=2)
    assert path.name == "epoch_0001.pt" and state["epoch"] == 1

    resumed = train_torch(train, validation, spec, cfg, tmp_path)
    assert resumed.params["resumed_from_epoch"] == 1


def test_epochs_are_reported_one_line_each_and_a_resumed_run_counts_on(data, tmp_path, caplog, monkeypatch):
    train, validation, spec = data
    monkeypatch.setenv("KFOPS_PROGRESS", "plain")
    caplog.set_level(logging.INFO, logger="kfops.progress")
    train_torch(train, validation, spec, small_cfg(epochs=1), tmp_path)
    train_torch(train, validation, spec, small_cfg(epochs=3), tmp_path)  # resumes after epoch 1
    lines = [r.getMessage() for r in caplog.records if r.name == "kfops.progress"]
    assert [line.split(" (")[0] for line in lines] == [
        "torch: training: 1/1 epoch", "torch: training: 2/3 epochs", "torch: training: 3/3 epochs"]
    assert all("validation_auc=0." in line and "checkpoint=" in line for line in lines)


def test_roc_auc_and_log_loss_match_sklearn():
    from sklearn.metrics import log_loss as sk_log_loss
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500), 1)  # many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    probabilities = np.clip(scores, 0.05, 0.95)
    assert log_loss(labels, probabilities) == pytest.approx(sk_log_loss(labels, probabilities))


def _assert_same_weights(a, b, atol: float) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert np.allclose(state_a[key].numpy(), state_b[key].numpy(), atol=atol), key
