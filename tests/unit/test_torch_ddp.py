"""Two real ranks under torchrun (gloo, CPU): gradient sync, kill and resume, a failing rank.

Each torchrun launch starts three Python processes that import torch, so these tests share one
uninterrupted two-rank run and keep the data tiny.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfops.core.model import FeatureSpec
from kfops.errors import TrainingError
from kfops.training.ddp_worker import (
    CRASH_RANK_ENV,
    HANG_RANK_ENV,
    KILL_AFTER_EPOCH_ENV,
)
from kfops.training.torch_trainer import train_torch
from tests.unit.test_torch_trainer import CATEGORICAL, FEATURES, flights_like, small_cfg

# Every test here launches torchrun (the module fixture too): 15-40 s each on 2 busy cores.
pytestmark = pytest.mark.slow

ROWS = 1024  # a multiple of 2 x 64: every batch is full on both ranks, so the comparison is exact
TWO_RANKS = small_cfg(nproc_per_node=2, batch_size=64, epochs=2, dropout=0.0)


@pytest.fixture(scope="module")
def data():
    frame = flights_like(ROWS + 256, seed=1)
    train, validation = frame.iloc[:ROWS], frame.iloc[ROWS:]
    return train, validation, FeatureSpec.fit(train, FEATURES, CATEGORICAL)


@pytest.fixture(scope="module")
def two_rank_run(data, tmp_path_factory):
    train, validation, spec = data
    return train_torch(train, validation, spec, TWO_RANKS, tmp_path_factory.mktemp("two_ranks"))


@pytest.mark.timeout(180)
def test_two_ranks_of_batch_b_match_one_process_of_batch_2b(data, two_rank_run, tmp_path):
    """DistributedSampler deals one shuffled order round-robin: the two ranks' batch k together
    is the single process's batch k, and DDP's averaged gradient equals the 2B-batch gradient."""
    train, validation, spec = data
    assert two_rank_run.params["world_size"] == 2 and two_rank_run.params["backend"] == "gloo"
    one = train_torch(train, validation, spec, TWO_RANKS.model_copy(update={"nproc_per_node": 1, "batch_size": 128}),
                      tmp_path)  # fmt: skip
    assert one.params["world_size"] == 1
    _assert_same_weights(two_rank_run.model.net, one.model.net, atol=1e-5)
    assert two_rank_run.metrics["validation_auc"] == pytest.approx(one.metrics["validation_auc"], abs=1e-6)
    # Guard against a vacuous pass: training moved the weights away from their start.
    first = _first_layer(two_rank_run.model.net)
    assert not np.allclose(first, _first_layer(_fresh_net(two_rank_run.model.net)), atol=1e-3)


@pytest.mark.timeout(240)
def test_a_killed_run_resumes_from_its_last_checkpoint(data, two_rank_run, tmp_path, monkeypatch):
    train, validation, spec = data
    monkeypatch.setenv(KILL_AFTER_EPOCH_ENV, "1")  # rank 0 SIGKILLs itself right after checkpoint 1
    with pytest.raises(TrainingError, match="rank 0 was killed by SIGKILL"):
        train_torch(train, validation, spec, TWO_RANKS, tmp_path)
    (folder,) = (tmp_path / "checkpoints").iterdir()
    assert sorted(p.name for p in folder.glob("epoch_*.pt")) == ["epoch_0001.pt"]

    monkeypatch.delenv(KILL_AFTER_EPOCH_ENV)
    resumed = train_torch(train, validation, spec, TWO_RANKS, tmp_path)
    assert resumed.params["resumed_from_epoch"] == 1
    assert resumed.params["epochs_trained_this_run"] == 1
    _assert_same_weights(resumed.model.net, two_rank_run.model.net, atol=1e-6)
    # Rank 0 alone reports epochs, counting on from the checkpoint; the launcher keeps its lines.
    reported = [line for line in (tmp_path / "torchrun.log").read_text().splitlines() if "torch: training:" in line]
    assert [line.split(" (")[0] for line in reported] == ["[kfops] torch: training: 2/2 epochs"]
    assert resumed.metrics["validation_auc"] == pytest.approx(two_rank_run.metrics["validation_auc"], abs=1e-6)


@pytest.mark.timeout(120)
def test_a_crashing_rank_stops_the_job_and_is_named(data, tmp_path, monkeypatch):
    train, validation, spec = data
    monkeypatch.setenv(CRASH_RANK_ENV, "1")
    with pytest.raises(TrainingError, match="failed on rank 1: RuntimeError") as caught:
        train_torch(train, validation, spec, TWO_RANKS.model_copy(update={"rank_timeout_s": 5}), tmp_path)
    assert "crashes on purpose" in str(caught.value)
    assert not (tmp_path / "result.json").exists()


@pytest.mark.timeout(120)  # waits out rank_timeout_s on top of a launch: ~20 s on 2 busy cores
def test_a_silent_rank_is_given_up_on_after_the_rank_timeout(data, tmp_path, monkeypatch):
    """Rank 1 stops answering; rank 0's collective times out after rank_timeout_s and torchrun
    then stops rank 1, so nothing hangs. The pytest timeout is only a guard against a hang."""
    train, validation, spec = data
    monkeypatch.setenv(HANG_RANK_ENV, "1")
    with pytest.raises(TrainingError, match="rank 1 stopped answering; rank 0 lost contact"):
        train_torch(train, validation, spec, TWO_RANKS.model_copy(update={"rank_timeout_s": 5}), tmp_path)


def _first_layer(net) -> np.ndarray:
    return net.mlp[0].weight.detach().numpy().copy()


def _fresh_net(net):
    import torch

    from kfops.training.torch_model import build_net

    torch.manual_seed(TWO_RANKS.seed)  # the trainer's initial weights
    return build_net(net.arch)


def _assert_same_weights(a, b, atol: float) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert np.allclose(state_a[key].numpy(), state_b[key].numpy(), atol=atol), key
