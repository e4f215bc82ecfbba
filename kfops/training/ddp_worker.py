"""One rank of the torch trainer.

Launched once per process by torchrun, locally by :func:`kfops.training.torch_trainer.train_torch`
or on a cluster by a Kubeflow Trainer TrainJob (whose torch runtime passes the topology to
torchrun through ``PET_*`` variables)::

    python -m torch.distributed.run --nproc-per-node 2 --module kfops.training.ddp_worker --job-dir DIR

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. ``DIR`` is what
:func:`kfops.training.torch_trainer.prepare_job` wrote. Rank 0 owns checkpoints, progress lines
and the final model; every rank records its own failure in ``DIR/failures/rank_<n>.json`` so
the launcher can say which rank broke. With one process, :func:`run_rank` also runs in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kfops.core.files import atomic_output
from kfops.errors import TrainingError

if TYPE_CHECKING:
    import torch

JOB_FILE = "job.json"
DATA_DIR = "data"
CHECKPOINT_DIR = "checkpoints"
FAILURE_DIR = "failures"
MODEL_DIR = "model"
RESULT_FILE = "result.json"
KEEP_CHECKPOINTS = 2
# How gloo and NCCL word an error that another rank caused (a peer that died or went silent).
_LOST_PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out", "timed out")
EVAL_CHUNK_ROWS = 65_536

# Test-only hooks, honoured only under torchrun (never in-process, where they would hit the caller).
CRASH_RANK_ENV = "KFOPS_TEST_CRASH_RANK"  # this rank raises on the second batch of epoch 0
HANG_RANK_ENV = "KFOPS_TEST_HANG_RANK"  # this rank stops answering on the second batch of epoch 0
KILL_AFTER_EPOCH_ENV = "KFOPS_TEST_KILL_AFTER_EPOCH"  # rank 0 SIGKILLs itself once epoch N is checkpointed


def read_job(job_dir: Path) -> dict[str, Any]:
    path = Path(job_dir) / JOB_FILE
    if not path.is_file():
        raise TrainingError(f"{path} is missing", hint="prepare the job with kfops.training.torch_trainer.prepare_job")
    return json.loads(path.read_text())


def checkpoint_dir(job_dir: Path, fingerprint: str) -> Path:
    # One folder per fingerprint: a checkpoint of other data or settings is never resumed.
    return Path(job_dir) / CHECKPOINT_DIR / fingerprint[:16]


def checkpoint_path(folder: Path, epochs_done: int) -> Path:
    return folder / f"epoch_{epochs_done:04d}.pt"


def find_resume_checkpoint(folder: Path, fingerprint: str, max_epochs: int) -> tuple[Path, dict] | None:
    """The newest readable checkpoint of this fingerprint with at most ``max_epochs`` done.

    A torn or foreign file is skipped (the previous one is used), never trusted.
    """
    import torch

    candidates = sorted(folder.glob("epoch_*.pt"), reverse=True) if folder.is_dir() else []
    for path in candidates:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError) as err:
            print(f"[kfops] skipping unreadable checkpoint {path}: {err}", file=sys.stderr, flush=True)
            continue
        if state.get("fingerprint") != fingerprint or int(state.get("epoch", -1)) > max_epochs:
            continue
        return path, state
    return None


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average rank per group of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    # A kill mid-write leaves only a hidden temporary file, which resume (epoch_*.pt) ignores.
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _rng_state(device: torch.device) -> dict[str, Any]:
    import torch

    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def usable_cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _test_hook(env_name: str, rank: int) -> bool:
    value = os.environ.get(env_name)
    return value is not None and "TORCHELASTIC_RUN_ID" in os.environ and int(value) == rank


def run_rank(job_dir: Path, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> dict[str, Any] | None:
    """Train this rank's share; rank 0 returns the result it also writes to ``result.json``."""
    import torch
    import torch.distributed as dist

    job_dir = Path(job_dir)
    job = read_job(job_dir)
    train_cfg = job["train"]
    if world_size != job["world_size"]:
        raise TrainingError(
            f"job {job_dir} was prepared for {job['world_size']} processes but {world_size} started",
            hint="launch as many processes as torch.nproc_per_node x torch.num_nodes",
        )
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    # Under torchrun even one rank joins a process group, so that path is the one exercised.
    distributed = world_size > 1 or under_torchrun
    previous_threads = torch.get_num_threads()
    try:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(int(job["num_threads"] or max(1, usable_cpu_count() // local_world)))
        if job["device"] == "cuda":
            if not torch.cuda.is_available():
                raise TrainingError(f"rank {rank}: the job asks for CUDA but this process sees no GPU")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if distributed:
            dist.init_process_group(
                backend=job["backend"],
                timeout=dt.timedelta(seconds=int(train_cfg["rank_timeout_s"])),
                device_id=device if device.type == "cuda" else None,
            )
        return _train(job_dir, job, rank, world_size, device, distributed, under_torchrun)
    finally:
        torch.set_num_threads(previous_threads)  # in-process, the caller keeps its own setting
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    job_dir: Path, job: dict, rank: int, world_size: int, device: torch.device, distributed: bool, under_torchrun: bool
) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    from kfops.progress import progress
    from kfops.training.torch_model import TabularArch, build_net, save_net

    cfg = job["train"]
    epochs, batch_size, seed = int(cfg["epochs"]), int(cfg["batch_size"]), int(cfg["seed"])
    fingerprint = job["fingerprint"]
    data = job_dir / DATA_DIR
    x_train = torch.from_numpy(np.load(data / "train_x.npy")).to(device)
    y_train = torch.from_numpy(np.load(data / "train_y.npy")).to(device)
    x_val_all = np.load(data / "validation_x.npy")
    y_val = np.load(data / "validation_y.npy")
    # Each rank scores one contiguous slice of the validation set; rank 0 gathers the scores.
    bounds = np.linspace(0, len(x_val_all), world_size + 1).astype(int)
    x_val = torch.from_numpy(x_val_all[bounds[rank] : bounds[rank + 1]]).to(device)
    val_slice_max = int(np.diff(bounds).max())

    # Same seed on every rank for the initial weights (DDP also broadcasts rank 0's); then one
    # stream per rank so dropout masks differ between ranks.
    torch.manual_seed(seed)
    net = build_net(TabularArch.from_dict(job["arch"]), np.asarray(job["numeric_mean"]), np.asarray(job["numeric_std"]))
    net.to(device)
    torch.manual_seed(seed + rank)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed + rank)
    model = net
    if distributed:
        model = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
        )
    optimizer = torch.optim.AdamW(net.parameters(), lr=float(cfg["learning_rate"]))
    amp_dtype = None
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def mixed_precision():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    loss_fn = torch.nn.BCEWithLogitsLoss()
    sampler = DistributedSampler(range(len(x_train)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)

    folder = checkpoint_dir(job_dir, fingerprint)
    start_epoch, history = 0, []
    resume_path = None
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        _drop_foreign_checkpoints(folder)
        found = find_resume_checkpoint(folder, fingerprint, epochs)
        resume_path = str(found[0]) if found else None
    if distributed:
        # Rank 0 picks the checkpoint; every rank loads that same file.
        box = [resume_path]
        dist.broadcast_object_list(box, src=0)
        resume_path = box[0]
    if resume_path:
        # On CPU: RNG states must stay CPU tensors; the optimizer moves its state to the params.
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if len(rng) == world_size:
            _set_rng_state(rng[rank], device)
        start_epoch, history = int(state["epoch"]), list(state["history"])
        if rank == 0:
            print(f"[kfops] resuming from {resume_path} ({start_epoch}/{epochs} epochs done)", flush=True)

    crash = under_torchrun and _test_hook(CRASH_RANK_ENV, rank)
    hang = under_torchrun and _test_hook(HANG_RANK_ENV, rank)
    kill_after = os.environ.get(KILL_AFTER_EPOCH_ENV) if under_torchrun and rank == 0 else None

    run_speeds = []
    # Rank 0 reports the epochs: a bar on a terminal (in-process), one line per epoch otherwise.
    report = progress("torch: training", total=epochs, completed=start_epoch, unit="epoch",
                      every=1 if epochs <= 20 else None) if rank == 0 else contextlib.nullcontext()
    with report as bar:
        for epoch in range(start_epoch, epochs):
            sampler.set_epoch(epoch)
            order = torch.tensor(list(iter(sampler)), dtype=torch.long, device=device)
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for step, begin in enumerate(range(0, len(order), batch_size)):
                if step == 1 and epoch == 0 and (crash or hang):
                    if crash:
                        raise RuntimeError(f"test hook {CRASH_RANK_ENV}={rank}: rank {rank} crashes on purpose")
                    while True:  # test hook: stop answering, as a stuck rank would
                        time.sleep(3600)
                index = order[begin : begin + batch_size]
                inputs, targets = x_train.index_select(0, index), y_train.index_select(0, index)
                optimizer.zero_grad(set_to_none=True)
                with mixed_precision():
                    logits = model(inputs)
                loss = loss_fn(logits.float(), targets)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach().double() * len(index)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started

            totals = torch.stack([loss_sum, torch.tensor(float(len(order)), dtype=torch.float64, device=device)])
            if distributed:
                dist.all_reduce(totals)
            scores = _score_validation(net, x_val, amp_dtype, device, distributed, world_size, val_slice_max, bounds)
            rng = [_rng_state(device)]
            if distributed:
                rng = [None] * world_size
                dist.all_gather_object(rng, _rng_state(device))
            if rank != 0:
                continue
            speed = float(totals[1].item()) / max(seconds, 1e-9)
            run_speeds.append(speed)
            entry = {
                "epoch": epoch + 1,
                "train_loss": float(totals[0].item() / totals[1].item()),
                "validation_logloss": log_loss(y_val, scores),
                "validation_auc": roc_auc(y_val, scores),
                "train_seconds": seconds,
                "train_samples_per_s": speed,
            }
            history.append(entry)
            path = checkpoint_path(folder, epoch + 1)
            _atomic_torch_save(
                {
                    "epoch": epoch + 1,
                    "fingerprint": fingerprint,
                    "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "rng": rng,
                    "history": history,
                },
                path,
            )
            _prune_checkpoints(folder)
            bar.advance(message=(
                f"train_loss={entry['train_loss']:.4f} validation_logloss={entry['validation_logloss']:.4f} "
                f"validation_auc={entry['validation_auc']:.4f} samples/s={speed:,.0f} checkpoint={path}"
            ))
            if kill_after is not None and epoch + 1 == int(kill_after):
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: a hard kill, as on node preemption

    result = None
    if rank == 0:
        save_net(net, job_dir / MODEL_DIR)
        final = history[-1] if history else {}
        result = {
            "history": history,
            "final": final,
            "resumed_from_epoch": start_epoch,
            "epochs_trained_this_run": epochs - start_epoch,
            "train_samples_per_s": float(np.mean(run_speeds)) if run_speeds else float("nan"),
            "world_size": world_size,
            "device": device.type,
            "backend": job["backend"] if distributed else "none",
            "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
        }
        (job_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    if distributed:
        dist.barrier()
    return result


def _score_validation(
    net: torch.nn.Module,
    x_val: torch.Tensor,
    amp_dtype: torch.dtype | None,
    device: torch.device,
    distributed: bool,
    world_size: int,
    slice_max: int,
    bounds: np.ndarray,
) -> np.ndarray:
    import torch
    import torch.distributed as dist

    net.eval()
    parts = []
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for begin in range(0, len(x_val), EVAL_CHUNK_ROWS):
            parts.append(torch.sigmoid(net(x_val[begin : begin + EVAL_CHUNK_ROWS]).float()))
    local = torch.cat(parts) if parts else torch.zeros(0, device=device)
    if not distributed:
        return local.double().cpu().numpy()
    padded = torch.zeros(slice_max, device=device)
    padded[: len(local)] = local
    gathered = [torch.zeros(slice_max, device=device) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    sizes = np.diff(bounds)
    return torch.cat([g[:n] for g, n in zip(gathered, sizes, strict=True)]).double().cpu().numpy()


def _prune_checkpoints(folder: Path) -> None:
    for stale in sorted(folder.glob("epoch_*.pt"), reverse=True)[KEEP_CHECKPOINTS:]:
        stale.unlink(missing_ok=True)
    # Temporaries of saves killed mid-write (rank 0 is the only writer and its save is done).
    for torn in folder.glob(".epoch_*.pt.*.tmp"):
        torn.unlink(missing_ok=True)


def _drop_foreign_checkpoints(folder: Path) -> None:
    # Checkpoints of other fingerprints in the same job dir are leftovers of another run.
    for other in folder.parent.iterdir():
        if other.is_dir() and other != folder:
            for item in other.iterdir():
                item.unlink(missing_ok=True)
            other.rmdir()


def record_failure(job_dir: Path, rank: int, err: BaseException) -> None:
    """Write this rank's error for the launcher; a communication error marks a rank that lost a peer."""
    import torch.distributed as dist

    text = str(err)
    secondary = isinstance(err, dist.DistError) or any(sign in text for sign in _LOST_PEER_SIGNS)
    if not Path(job_dir).is_dir():
        return  # nothing to report into; the exception itself still reaches the log
    folder = Path(job_dir) / FAILURE_DIR
    folder.mkdir(exist_ok=True)
    record = {
        "rank": rank,
        "error": type(err).__name__,
        "message": str(err).strip().splitlines()[0][:500] if str(err).strip() else "",
        "secondary": secondary,
        "time": time.time(),
        "traceback": "".join(traceback.format_exception(err))[-4000:],
    }
    (folder / f"rank_{rank}.json").write_text(json.dumps(record, indent=2))


def _die_with_parent() -> None:
    # If torchrun itself is killed, take this rank down too instead of leaving an orphan.
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _progress_to_stdout() -> None:
    # A rank's progress lines go to stdout as "[kfops] ..." lines, which the launcher relays to
    # its log (torch_trainer.run_torchrun) and a TrainJob pod shows as its log.
    import logging

    from kfops import progress

    if os.environ.get(progress.ENV, "").strip().lower() == "rich":
        os.environ[progress.ENV] = "plain"  # ranks never own a terminal
    logger = logging.getLogger("kfops.progress")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[kfops] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kfops.training.ddp_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--job-dir", required=True, type=Path, help="Folder written by prepare_job.")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    _die_with_parent()
    _progress_to_stdout()
    try:
        run_rank(args.job_dir, rank, world_size, local_rank)
    except Exception as err:  # process boundary: record which rank failed and why, then fail
        record_failure(args.job_dir, rank, err)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
