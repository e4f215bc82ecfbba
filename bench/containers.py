"""What do containers cost? In one run on the same machine:

  images  a cold build (--no-cache) and a warm one (cache, after a code change) of the pipeline and
          serving images, and their sizes;
  serve   the serving image's time from `docker run` to its model's ready route answering;
  A       `kfops run training`: one process per task, the embedded default (SQLite, local files);
  D       `kfops run training --runner docker`: one container per task, on the production profile
          (MLflow server on PostgreSQL + S3 on moto, Feast SQL registry, Redis with a password).

Both pipeline runs start from an empty data dir and end with a served model. Prints each figure
and D/A.

    .venv/bin/python bench/containers.py                       # full year, images cold and warm
    .venv/bin/python bench/containers.py --end 2013-01-31 --no-cold

Needs dockerd and the Debian-made base (scripts/docker_engine.sh), PostgreSQL on 127.0.0.1:5432,
redis-server and moto_server. Target (2-core machine): D/A at most 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kfops.cluster import images
from kfops.config import load_config
from tests.support.production_profile import free_port, production_profile

KFOPS = str(Path(sys.executable).with_name("kfops"))
TAGS = {"pipeline": "kfops:bench", "serving": "kfops-serving:bench"}


def build(options: images.BuildOptions, no_cache: bool, marker: str | None) -> dict[str, dict]:
    cfg = load_config(None, [f"cluster.image={TAGS['pipeline']}", f"cluster.serving_image={TAGS['serving']}"],
                      environ={})
    builds = images.image_builds(cfg.cluster, REPO, ("serving", "pipeline"), options)
    results = {}
    with images.build_context(REPO, options.pip_from_host, extra_files=marker_file(marker)) as tar:
        for item in builds:
            command = item.build_command()
            if no_cache:
                command.insert(2, "--no-cache")
            started = time.perf_counter()
            done = subprocess.run(command, input=tar, capture_output=True, check=False)
            if done.returncode != 0:
                sys.exit(f"building {item.role} failed:\n{done.stdout[-3000:].decode(errors='replace')}")
            results[item.role] = {"seconds": round(time.perf_counter() - started, 1),
                                  "size_gb": round(images.image_size(item.tag) / 1e9, 2)}
    return results


def marker_file(marker: str | None) -> dict[str, bytes] | None:
    # A code change: one more module in the package, so only the layers from `COPY kfops` rebuild.
    return None if marker is None else {"kfops/_bench_marker.py": f"MARKER = {marker!r}\n".encode()}


def serving_ready_seconds(tmp: Path) -> float:
    """`docker run` of the serving image to its model's ready route, serving a small model folder."""
    from tests.support.serving_models import build_tiny_model

    model = build_tiny_model(tmp / "model")
    os.chmod(tmp, 0o755)
    for path in model.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    name = f"kfops-bench-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "host",
                    "-v", f"{model}:/model:ro", TAGS["serving"], "python", "-m", "kfops.serving",
                    "--model-dir", "/model", "--name", "bench", "--host", "127.0.0.1", "--http-port", str(port),
                    "--online-lookup", "none"], check=True, capture_output=True)
    try:
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/bench/ready", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
            if time.perf_counter() - started > 300:
                sys.exit("the serving container was not ready within 300 s")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def run_pipeline(args, data_dir: Path, extra: list[str], env: dict[str, str], runner: str) -> float:
    command = [KFOPS, "run", "training", "--runner", runner, "--config", str(REPO / "kfops.yaml")]
    settings = [f"data_dir={data_dir}", f"dataset.start={args.start}", f"dataset.end={args.end}",
                f"serving.http_port={free_port()}", *extra]
    for item in settings:
        command += ["--set", item]
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=data_dir.parent, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{runner} run failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    if runner == "docker":
        cfg = load_config(REPO / "kfops.yaml", settings, environ={})
        from kfops.serving.local.container import stop_server_container

        stop_server_container(cfg)
    else:
        subprocess.run([KFOPS, "serve", "stop", "--set", f"data_dir={data_dir}"], cwd=REPO, capture_output=True,
                       check=False)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--end", default="2013-12-31")
    parser.add_argument("--base-image", default="kfops-base:bookworm")
    parser.add_argument("--torch-index", default="", help="'' for pip's own indexes (this machine's CPU wheel)")
    parser.add_argument("--no-cold", action="store_true", help="skip the --no-cache builds")
    args = parser.parse_args()
    options = images.BuildOptions(base_image=args.base_image, torch_index=args.torch_index, pip_from_host=True)
    report: dict = {"window": f"{args.start}..{args.end}"}
    if not args.no_cold:
        report["build_cold"] = build(options, no_cache=True, marker=None)
        print("build_cold", report["build_cold"], flush=True)
    build(options, no_cache=False, marker=None)  # the cache as the cold build left it
    report["build_warm_code_change"] = build(options, no_cache=False, marker=uuid.uuid4().hex)
    print("build_warm_code_change", report["build_warm_code_change"], flush=True)
    build(options, no_cache=False, marker=None)  # leave the images without the marker
    with tempfile.TemporaryDirectory(prefix="kfops-bench-") as tmp_text:
        tmp = Path(tmp_text)
        report["serving_start_to_ready_s"] = round(serving_ready_seconds(tmp / "serve"), 2)
        print("serving_start_to_ready_s", report["serving_start_to_ready_s"], flush=True)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("KFOPS")}
        a = run_pipeline(args, tmp / "a" / "data", [], {**base_env, "KFOPS_PROGRESS": "plain"}, "subprocess")
        print("A_subprocess_s", round(a, 1), flush=True)
        secret = uuid.uuid4().hex
        with production_profile(tmp / "profile", secret) as profile:
            model = f"bench-{uuid.uuid4().hex[:6]}"
            extra = [*profile.overrides, f"cluster.image={TAGS['pipeline']}",
                     f"cluster.serving_image={TAGS['serving']}", f"registry.model_name={model}",
                     f"registry.experiment={model}", f"features.project=bench_{uuid.uuid4().hex[:8]}"]
            d = run_pipeline(args, tmp / "d" / "data", extra, {**base_env, **profile.env, "KFOPS_PROGRESS": "plain"},
                             "docker")
    report.update({"A_subprocess_s": round(a, 1), "D_containers_s": round(d, 1), "D_over_A": round(d / a, 2)})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
