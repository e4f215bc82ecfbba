"""What each node of a multi-node TrainJob runs: fetch the job from S3, torchrun the ranks, send results back.

``python -m kfops.training.trainjob_node --job-uri s3://bucket/prefix --job-dir /tmp/kfops-job``

The ranks of different nodes share no disk, so the job folder that
:func:`kfops.training.torch_trainer.prepare_job` wrote travels through S3: every node downloads it
(data, job.json and the checkpoints of an earlier attempt, to resume), then runs torchrun over
:mod:`kfops.training.ddp_worker`. torchrun reads the topology from the ``PET_NNODES``,
``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` variables
that Kubeflow Trainer's torch policy sets on each node (torchrun's own ``PET_`` environment
defaults). Node 0 hosts global rank 0, which writes the model, ``result.json`` and the
checkpoints; it uploads them when torchrun ends, failed or not, so a retried step resumes. Every
node uploads its ranks' failure records, so the step can name the rank that broke.

The local two-node test runs this same module with the same variables.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from kfops.training import ddp_worker

log = logging.getLogger(__name__)

NODE_RANK_ENV = "PET_NODE_RANK"
TOPOLOGY_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", NODE_RANK_ENV, "PET_MASTER_ADDR", "PET_MASTER_PORT")
NODE_LOG = "node_{rank}.log"


def torchrun_command(job_dir: Path) -> list[str]:
    """torchrun with no topology flags: it takes them from the PET_* environment."""
    return [sys.executable, "-m", "torch.distributed.run", "--max-restarts=0",
            "--module", ddp_worker.__name__, "--job-dir", str(job_dir)]  # fmt: skip


def outputs_of(job_dir: Path, node_rank: int) -> list[Path]:
    """What a node sends back: node 0 the model, result and checkpoints; every node its failures and log."""
    wanted = [ddp_worker.FAILURE_DIR, NODE_LOG.format(rank=node_rank)]
    if node_rank == 0:
        wanted += [ddp_worker.MODEL_DIR, ddp_worker.RESULT_FILE, ddp_worker.CHECKPOINT_DIR]
    return [job_dir / name for name in wanted if (job_dir / name).exists()]


def run_node(job_uri: str, job_dir: Path, environ: dict[str, str] | None = None) -> int:
    """Download, torchrun, upload; returns torchrun's exit code."""
    from kfops.adapters import s3

    environ = dict(os.environ if environ is None else environ)
    missing = [name for name in TOPOLOGY_ENV if not environ.get(name)]
    if missing:
        raise SystemExit(f"trainjob_node: {', '.join(missing)} not set; Kubeflow Trainer's torch runtime sets them")
    node_rank = int(environ[NODE_RANK_ENV])
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    fetched = s3.download_dir(job_uri, job_dir)
    if not (job_dir / ddp_worker.JOB_FILE).is_file():
        raise SystemExit(f"trainjob_node: no {ddp_worker.JOB_FILE} under {job_uri} ({fetched} objects)")
    environ["PYTHONUNBUFFERED"] = "1"
    log_path = job_dir / NODE_LOG.format(rank=node_rank)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(torchrun_command(job_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=environ)
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            sys.stdout.write(line)  # the pod's log
        code = proc.wait()
    for path in outputs_of(job_dir, node_rank):
        target = f"{job_uri.rstrip('/')}/{path.name}"
        if path.is_dir():
            s3.upload_dir(path, target)
        else:
            bucket, key = s3.split_s3_uri(target)
            s3.put_object(bucket, key, path.read_bytes())
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kfops.training.trainjob_node", description=__doc__.splitlines()[0])
    parser.add_argument("--job-uri", required=True, help="s3:// folder the train step uploaded the job to.")
    parser.add_argument("--job-dir", required=True, type=Path, help="Local scratch folder of this node.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[kfops] %(message)s")
    return run_node(args.job_uri, args.job_dir)


if __name__ == "__main__":
    sys.exit(main())
