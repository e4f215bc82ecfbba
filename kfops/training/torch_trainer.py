"""Torch trainer behind ``train_model``: encode, write the job, run the ranks, read the result.

``work_dir`` is stable across reruns of the train step, so a rerun resumes::

    work_dir/data/*.npy              encoded matrices (FeatureSpec.encode) and labels
    work_dir/job.json                what every rank runs: settings, architecture, fingerprint
    work_dir/checkpoints/<fp>/       epoch_NNNN.pt after every epoch (rank 0); the newest wins
    work_dir/failures/rank_<n>.json  the error of a rank that failed
    work_dir/model/                  final weights (rank 0)
    work_dir/result.json             metrics per epoch (rank 0)
    work_dir/torchrun.log            everything the ranks printed

One process runs in-process (the same :func:`~kfops.training.ddp_worker.run_rank` as a rank);
more run under ``python -m torch.distributed.run`` with DDP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from kfops.errors import DataError, TrainingError
from kfops.training import ddp_worker

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import TorchConfig
    from kfops.core.model import FeatureSpec
    from kfops.training import TrainResult

log = logging.getLogger(__name__)

WORKER_MODULE = "kfops.training.ddp_worker"
LOG_FILE = "torchrun.log"
JOB_FORMAT = 1
# Settings that do not change the weights a given epoch produces, so a checkpoint survives them.
_RESUMABLE_SETTINGS = {"epochs", "rank_timeout_s", "num_threads", "backend", "nproc_per_node", "num_nodes"}


@dataclass(frozen=True)
class LaunchPlan:
    """How one node runs the ranks: process count, device, collective backend, CPU threads each."""

    nproc: int
    device: Literal["cpu", "cuda"]
    backend: Literal["gloo", "nccl"]
    num_threads: int | None  # None: each node decides (cores / processes there)


def visible_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_launch(cfg: TorchConfig, gpu_count: int, cpu_count: int | None) -> LaunchPlan:
    """Pick device and backend for one node; refuse what cannot run (fail before launching).

    ``cpu_count`` None (a cluster node not seen yet) leaves the thread count to each rank.
    """
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if gpu_count > 0 else "gloo"
    if backend == "nccl" and gpu_count == 0:
        raise TrainingError(
            "torch.backend is nccl but no GPU is visible",
            hint="set torch.backend to auto or gloo to train on CPU, or run on a GPU node",
        )
    device: Literal["cpu", "cuda"] = "cuda" if backend == "nccl" else "cpu"
    if device == "cuda" and cfg.nproc_per_node > gpu_count:
        raise TrainingError(
            f"torch.nproc_per_node={cfg.nproc_per_node} but only {gpu_count} GPU(s) are visible",
            hint="DDP runs one process per GPU: lower torch.nproc_per_node or give the node more GPUs",
        )
    threads = cfg.num_threads or (max(1, cpu_count // cfg.nproc_per_node) if cpu_count else None)
    return LaunchPlan(nproc=cfg.nproc_per_node, device=device, backend=backend, num_threads=threads)


def _labels(frame: pd.DataFrame, label: str, name: str) -> np.ndarray:
    import pandas as pd

    if label not in frame.columns:
        raise DataError(f"the {name} split lacks the label column '{label}'")
    values = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        raise DataError(
            f"the {name} split has {int(bad.sum())} label value(s) that are not 0 or 1 in '{label}'",
            hint="the label must be binary; drop or fix rows with a missing label",
        )
    return values.astype(np.float32)


def _fingerprint(arrays: list[np.ndarray], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype}{contiguous.shape}".encode())
        digest.update(memoryview(contiguous).cast("B"))
    return digest.hexdigest()


def prepare_job(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    spec: FeatureSpec,
    cfg: TorchConfig,
    work_dir: Path,
    plan: LaunchPlan,
    world_size: int,
) -> dict[str, Any]:
    """Write the encoded data and ``job.json`` that every rank reads; return the job."""
    from kfops.training.torch_model import TabularArch, numeric_stats

    work_dir = Path(work_dir)
    y_train, y_val = _labels(train, spec.label, "train"), _labels(validation, spec.label, "validation")
    x_train, x_val = spec.encode(train), spec.encode(validation)
    arch = TabularArch.from_spec(spec, cfg.embedding_dim, cfg.hidden, cfg.dropout)
    mean, std = numeric_stats(x_train, arch)
    settings = {**cfg.model_dump(exclude=_RESUMABLE_SETTINGS), "world_size": world_size, "arch": arch.to_dict()}
    data = work_dir / ddp_worker.DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    for name, array in {"train_x": x_train, "train_y": y_train, "validation_x": x_val, "validation_y": y_val}.items():
        np.save(data / f"{name}.npy", array)
    job = {
        "format": JOB_FORMAT,
        "fingerprint": _fingerprint([x_train, y_train, x_val, y_val], settings),
        "world_size": world_size,
        "device": plan.device,
        "backend": plan.backend,
        "num_threads": plan.num_threads,
        "arch": arch.to_dict(),
        "numeric_mean": mean.tolist(),
        "numeric_std": std.tolist(),
        "train": {
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate,
            "seed": cfg.seed,
            "rank_timeout_s": cfg.rank_timeout_s,
        },
    }
    (work_dir / ddp_worker.JOB_FILE).write_text(json.dumps(job, indent=2))
    return job


def clear_outputs(work_dir: Path) -> None:
    # Outputs of an earlier attempt must not pass for this one's; checkpoints stay, to resume.
    (work_dir / ddp_worker.RESULT_FILE).unlink(missing_ok=True)
    for folder in (ddp_worker.MODEL_DIR, ddp_worker.FAILURE_DIR):
        shutil.rmtree(work_dir / folder, ignore_errors=True)


def torchrun_command(nproc: int, job_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}", "--max-restarts=0",
        "--module", WORKER_MODULE, "--job-dir", str(job_dir),
    ]  # fmt: skip


def run_torchrun(work_dir: Path, plan: LaunchPlan, rank_timeout_s: int) -> None:
    """Run the ranks under torchrun; any rank failing makes it stop the rest, and this raise."""
    import kfops

    work_dir = Path(work_dir)
    env = dict(os.environ)
    if plan.num_threads:
        env["OMP_NUM_THREADS"] = str(plan.num_threads)
    env["PYTHONUNBUFFERED"] = "1"
    source_root = str(Path(kfops.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    log_path = work_dir / LOG_FILE
    log.info("torch: launching %d ranks (%s, %s): %s", plan.nproc, plan.device, plan.backend, log_path)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            torchrun_command(plan.nproc, work_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_file.write(line)
                log_file.flush()
                log.log(logging.INFO if line.startswith("[kfops]") else logging.DEBUG, "%s", line.rstrip())
            code = proc.wait()
        finally:
            _stop(proc)
    if code != 0:
        raise failure_error(work_dir, code, rank_timeout_s)


def _stop(proc: subprocess.Popen) -> None:
    # Reached with torchrun still running only when this process is interrupted: SIGTERM lets
    # torchrun stop its ranks; SIGKILL after a grace period (ranks die with it, see ddp_worker).
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_ROOT_CAUSE = re.compile(
    r"Root Cause.*?rank\s*:\s*(?P<rank>\d+).*?exitcode\s*:\s*(?P<code>-?\d+)(?:.*?Signal\s+\d+\s+\((?P<sig>\w+)\))?",
    re.DOTALL,
)


def failure_error(work_dir: Path, exit_code: int, rank_timeout_s: int) -> TrainingError:
    """Name the rank that broke: its own record first, else torchrun's root cause, else a rank that lost it."""
    work_dir = Path(work_dir)
    log_path = work_dir / LOG_FILE
    records = sorted(
        (json.loads(p.read_text()) for p in (work_dir / ddp_worker.FAILURE_DIR).glob("rank_*.json")),
        key=lambda r: r["time"],
    )
    primary = [r for r in records if not r["secondary"]]
    if primary:
        first = primary[0]
        record = work_dir / ddp_worker.FAILURE_DIR / f"rank_{first['rank']}.json"
        return TrainingError(
            f"torch training failed on rank {first['rank']}: {first['error']}: {first['message']}",
            hint=f"traceback in {record}; log {log_path}",
        )
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    root = _ROOT_CAUSE.search(text)
    lost = {r["rank"] for r in records}
    if root and int(root["rank"]) not in lost:
        how = f"was killed by {root['sig']}" if root["sig"] else f"exited with code {root['code']}"
        return TrainingError(f"torch training failed: rank {root['rank']} {how}", hint=f"log {log_path}")
    if records:
        first = records[0]
        world_size = json.loads((work_dir / ddp_worker.JOB_FILE).read_text())["world_size"]
        silent = sorted(set(range(world_size)) - lost)
        culprit = ""
        if silent:
            culprit = f"rank{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} stopped answering; "
        return TrainingError(
            f"torch training failed: {culprit}rank {first['rank']} lost contact with the other ranks "
            f"({first['error']}: {first['message']})",
            hint=f"a rank died or stayed silent past torch.rank_timeout_s={rank_timeout_s}s; log {log_path}",
        )
    return TrainingError(f"torchrun exited with code {exit_code} and no rank reported why", hint=f"log {log_path}")


def collect_result(work_dir: Path, spec: FeatureSpec, cfg: TorchConfig) -> TrainResult:
    """Read rank 0's result and model from ``work_dir``."""
    from kfops.training import TrainResult
    from kfops.training.torch_model import TorchTabularModel

    work_dir = Path(work_dir)
    path = work_dir / ddp_worker.RESULT_FILE
    if not path.is_file():
        raise TrainingError(f"torch training ended without {path}", hint=f"see {work_dir / LOG_FILE}")
    result = json.loads(path.read_text())
    model = TorchTabularModel.load(work_dir / ddp_worker.MODEL_DIR, spec, threshold=0.5)
    final = result["final"]
    metrics = {
        "validation_logloss": float(final["validation_logloss"]),
        "validation_auc": float(final["validation_auc"]),
        "train_loss": float(final["train_loss"]),
        "epochs": float(len(result["history"])),
        "train_samples_per_s": float(result["train_samples_per_s"]),
    }
    for entry in result["history"]:
        metrics[f"validation_logloss_epoch_{entry['epoch']}"] = float(entry["validation_logloss"])
        metrics[f"validation_auc_epoch_{entry['epoch']}"] = float(entry["validation_auc"])
    params = {
        "trainer": "torch",
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "hidden": ",".join(str(h) for h in cfg.hidden),
        "embedding_dim": cfg.embedding_dim,
        "dropout": cfg.dropout,
        "seed": cfg.seed,
        "nproc_per_node": cfg.nproc_per_node,
        "num_nodes": cfg.num_nodes,
        "world_size": result["world_size"],
        "device": result["device"],
        "backend": result["backend"],
        "amp_dtype": result["amp_dtype"],
        "resumed_from_epoch": result["resumed_from_epoch"],
        "epochs_trained_this_run": result["epochs_trained_this_run"],
    }
    return TrainResult(model=model, params=params, metrics=metrics)


def train_torch(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    spec: FeatureSpec,
    cfg: TorchConfig,
    work_dir: Path,
    *,
    launcher: Literal["auto", "torchrun"] = "auto",
) -> TrainResult:
    """Train the torch tabular model on this node; rerun with the same ``work_dir`` to resume.

    ``launcher="auto"`` runs one process in-process and more under torchrun; ``"torchrun"``
    uses torchrun (and a process group) even for one process.
    """
    if cfg.num_nodes > 1:
        raise TrainingError(
            f"torch.num_nodes={cfg.num_nodes} needs a cluster: several nodes run as a Kubeflow Trainer TrainJob",
            hint="set torch.num_nodes=1 to train here, or submit with kfops.adapters.trainjob",
        )
    plan = plan_launch(cfg, gpu_count=visible_gpu_count(), cpu_count=ddp_worker.usable_cpu_count())
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(work_dir)
    prepare_job(train, validation, spec, cfg, work_dir, plan, world_size=plan.nproc)
    if plan.nproc == 1 and launcher == "auto":
        try:
            ddp_worker.run_rank(work_dir)
        except RuntimeError as err:  # torch reports its failures as RuntimeError
            raise TrainingError(f"torch training failed: {err}", hint=f"work dir {work_dir}") from err
    else:
        run_torchrun(work_dir, plan, cfg.rank_timeout_s)
    result = collect_result(work_dir, spec, cfg)
    log.info(
        "torch: trained %s epochs (resumed after %s), validation AUC %.4f, model in %s",
        result.metrics["epochs"], result.params["resumed_from_epoch"], result.metrics["validation_auc"],
        work_dir / ddp_worker.MODEL_DIR,
    )  # fmt: skip
    return result
