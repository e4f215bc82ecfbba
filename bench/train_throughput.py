"""Training throughput on the 2013 flights: a plain torch loop (the floor) against the kfops trainer.

    A  plain single-process torch loop: same network, batch, optimizer; no kfops machinery
    B  kfops torch trainer, 1 process (in-process on CPU)
    C  kfops torch trainer, 2 processes under torchrun (DDP, gloo)
    X  XGBoost training time on the same features (default XGBoost settings)

Prints samples/s of the training loop (per-epoch loop time, as every variant measures it) and
end to end (wall time of ``train_torch``: encoding, launch, validation, checkpoints), then the
ratios B/A and C/B. Features: the entity frame's request features plus the origin's weather at
the scheduled hour (a quick stand-in for the Feast features).

    .venv/bin/python bench/train_throughput.py                 # CPU: A, B, C, X
    .venv/bin/python bench/train_throughput.py --gpu           # GPU: A and B on cuda, DDP/NCCL on all GPUs

With ``--gpu`` the trainer runs under torchrun even with one GPU (NCCL process group, bf16
autocast), and ``nvidia-smi`` is sampled during each run for the utilisation.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WEATHER = ["temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
REQUEST = ["origin", "dest", "carrier", "distance", "dep_hour", "day_of_week", "month", "days_to_holiday"]
CATEGORICAL = ["origin", "dest", "carrier"]


def flights_frames(rows: int | None):
    import pandas as pd

    from kfops.config import load_config
    from kfops.datasets.flights import build_entity_frame, load_tables

    cfg = load_config(REPO / "kfops.yaml", environ={})  # the flights example's config
    tables = load_tables(cfg)
    entities = build_entity_frame(tables, cfg)
    weather = tables["weather"][["origin", "time_hour", *WEATHER]].drop_duplicates(["origin", "time_hour"])
    frame = entities.assign(time_hour=entities["event_timestamp"].dt.floor("h")).merge(
        weather, on=["origin", "time_hour"], how="left"
    )
    frame = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    if rows:
        frame = frame.iloc[:rows]
    cut_train, cut_val = int(len(frame) * 0.70), int(len(frame) * 0.85)
    return frame.iloc[:cut_train], frame.iloc[cut_train:cut_val], pd.Series(REQUEST + WEATHER)


def plain_loop(train, spec, cfg, device: str, threads: int) -> float:
    """A: the floor. Same network and batches, nothing else; samples/s averaged over epochs."""
    import torch

    from kfops.training.torch_model import TabularArch, build_net, numeric_stats

    torch.set_num_threads(threads)
    x = spec.encode(train)
    arch = TabularArch.from_spec(spec, cfg.embedding_dim, cfg.hidden, cfg.dropout)
    mean, std = numeric_stats(x, arch)
    torch.manual_seed(cfg.seed)
    net = build_net(arch, mean, std).to(device)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(train["label"].to_numpy(np.float32)).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    amp = torch.bfloat16 if device == "cuda" else None
    speeds = []
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(cfg.seed + epoch)).to(device)
        net.train()
        _sync(device)
        started = time.perf_counter()
        for begin in range(0, len(order), cfg.batch_size):
            index = order[begin : begin + cfg.batch_size]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=amp, enabled=amp is not None):
                logits = net(xt.index_select(0, index))
            loss_fn(logits.float(), yt.index_select(0, index)).backward()
            optimizer.step()
        _sync(device)
        speeds.append(len(order) / (time.perf_counter() - started))
    return statistics.mean(speeds)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class GpuSampler:
    """``nvidia-smi`` utilisation every 500 ms while a run is going."""

    def __init__(self):
        self.samples: list[tuple[int, float, float]] = []
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             "-lms", "500"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[0].isdigit():
                self.samples.append((int(parts[0]), float(parts[1]), float(parts[2])))

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait()
        self.thread.join(timeout=5)
        busy = [s for s in self.samples if s[1] > 0]
        if not self.samples:
            return "no nvidia-smi samples"
        util = statistics.mean(s[1] for s in busy) if busy else 0.0
        return f"GPU util mean {util:.0f}% over busy samples, max {max(s[1] for s in self.samples):.0f}%, " \
               f"max memory {max(s[2] for s in self.samples):.0f} MiB"  # fmt: skip


def run_trainer(train, validation, spec, cfg, launcher: str = "auto", sample_gpu: bool = False):
    from kfops.training.torch_trainer import train_torch

    sampler = GpuSampler() if sample_gpu else None
    with tempfile.TemporaryDirectory(prefix="kfops-bench-") as work:
        started = time.perf_counter()
        result = train_torch(train, validation, spec, cfg, Path(work), launcher=launcher)
        wall = time.perf_counter() - started
    gpu = sampler.stop() if sampler else ""
    loop = result.metrics["train_samples_per_s"]
    end_to_end = len(train) * cfg.epochs / wall
    return loop, end_to_end, wall, result.metrics["validation_auc"], gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="First N flights of 2013 (default: all).")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--gpu", action="store_true", help="Run A and B on CUDA and DDP (NCCL) on all GPUs.")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per process for A, B and C (default 1: on a shared box more threads "
                             "mostly measure contention); XGBoost uses all cores.")
    parser.add_argument("--skip-xgboost", action="store_true")
    args = parser.parse_args()

    import torch

    from kfops.config import TorchConfig, XGBoostConfig
    from kfops.core.model import FeatureSpec
    from kfops.training.ddp_worker import usable_cpu_count

    started = time.perf_counter()
    train, validation, columns = flights_frames(args.rows)
    spec = FeatureSpec.fit(train, list(columns), CATEGORICAL)
    cores = usable_cpu_count()
    print(f"data: {len(train):,} train / {len(validation):,} validation rows, {len(spec.columns)} features "
          f"(built in {time.perf_counter() - started:.0f}s); {cores} cores; torch {torch.__version__}")  # fmt: skip
    base = TorchConfig(epochs=args.epochs, batch_size=args.batch_size, dropout=0.0)
    print(f"net: embeddings {base.embedding_dim}, hidden {base.hidden}, batch {base.batch_size}, {base.epochs} epochs")

    rows = []
    if args.gpu:
        gpus = torch.cuda.device_count()
        if gpus == 0:
            sys.exit("--gpu: no CUDA device visible")
        print(f"GPUs: {gpus} x {torch.cuda.get_device_name(0)}")
        a = plain_loop(train, spec, base, "cuda", cores)
        rows.append(("A plain loop, cuda, bf16", a, None, None, None, ""))
        one = base.model_copy(update={"backend": "nccl", "nproc_per_node": 1})
        b = run_trainer(train, validation, spec, one, launcher="torchrun", sample_gpu=True)
        rows.append(("B kfops, torchrun 1 rank, nccl", *b))
        if gpus > 1:
            many = base.model_copy(update={"backend": "nccl", "nproc_per_node": gpus})
            c = run_trainer(train, validation, spec, many, sample_gpu=True)
            rows.append((f"C kfops, DDP {gpus} ranks, nccl", *c))
    else:
        threads = args.threads
        a = plain_loop(train, spec, base, "cpu", threads)
        rows.append((f"A plain loop, 1 process x {threads} threads", a, None, None, None, ""))
        one = base.model_copy(update={"nproc_per_node": 1, "backend": "gloo", "num_threads": threads})
        b = run_trainer(train, validation, spec, one)
        rows.append((f"B kfops, 1 process x {threads} threads", *b))
        two = base.model_copy(update={"nproc_per_node": 2, "backend": "gloo", "num_threads": threads})
        c = run_trainer(train, validation, spec, two)
        rows.append((f"C kfops, DDP 2 processes x {threads} threads, gloo", *c))

    print(f"\n{'run':48} {'loop samples/s':>15} {'end-to-end/s':>13} {'wall s':>7} {'val AUC':>8}")
    for name, loop, e2e, wall, auc, gpu in rows:
        if e2e is None:  # the plain loop measures its loop only
            print(f"{name:48} {loop:15,.0f} {'-':>13} {'-':>7} {'-':>8}")
        else:
            print(f"{name:48} {loop:15,.0f} {e2e:13,.0f} {wall:7.1f} {auc:8.4f} {gpu}")
    a_loop, b = rows[0][1], rows[1]
    print(f"\nB/A (loop) = {b[1] / a_loop:.2f}   (target >= 0.9)")
    if len(rows) > 2:
        c = rows[2]
        print(f"C/B (loop) = {c[1] / b[1]:.2f}   C/B (end-to-end) = {c[2] / b[2]:.2f}")

    if not args.skip_xgboost and not args.gpu:
        from kfops.training.xgb import train_xgboost

        started = time.perf_counter()
        result = train_xgboost(train, validation, spec, XGBoostConfig(nthread=cores, device="cpu"))
        seconds = time.perf_counter() - started
        print(f"\nX XGBoost: {seconds:.1f}s for {int(result.metrics['best_iteration'])} trees kept "
              f"(400 max, early stopping 30), {cores} threads, "
              f"validation AUC {result.metrics['validation_auc']:.4f}")


if __name__ == "__main__":
    main()
