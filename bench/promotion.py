"""Promotion latency: from moving @champion (MLflow's REST API, as the UI does) to the new version serving.

    .venv/bin/python bench/promotion.py                 # 3 moves each way, ~3 minutes
    .venv/bin/python bench/promotion.py --moves 5 --interval 5

Starts an `mlflow server` (SQLite backend, so it sends webhooks; loopback webhooks allowed),
registers a few tiny XGBoost versions, then runs `kfops deploy --watch` twice on one local model
server: once taking MLflow's webhooks (the promotion controller), once polling every
``--interval`` seconds (``--no-webhooks``; the default interval is 5 s). Each time, the alias is
moved ``--moves`` times and the time until ``/v2/models/<name>`` reports the new version is taken.
Prints both (median and max) and their ratio.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout_s: float, step_s: float = 0.05) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(step_s)
    raise TimeoutError(f"not done within {timeout_s}s")


def serving(url: str, name: str) -> str | None:
    try:
        response = httpx.get(f"{url}/v2/models/{name}", timeout=2)
    except httpx.HTTPError:
        return None
    return (response.json().get("versions") or [None])[0] if response.status_code == 200 else None


def move(tracking_uri: str, name: str, version: str) -> None:
    httpx.post(f"{tracking_uri}/api/2.0/mlflow/registered-models/alias",
               json={"name": name, "alias": "champion", "version": version}, timeout=10).raise_for_status()


def measure(label: str, cmd: list[str], env: dict, url: str, name: str, tracking_uri: str, versions: list[str],
            moves: int, log: Path) -> list[float]:
    with log.open("w") as out:
        watcher = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until(lambda: serving(url, name) is not None, 180, 0.25)
        time.sleep(2)  # past start-up: the watcher is following now
        times = []
        for i in range(moves):
            current = serving(url, name)
            target = [v for v in versions if v != current][i % (len(versions) - 1)]
            move(tracking_uri, name, target)
            times.append(wait_until(lambda t=target: serving(url, name) == t, 120))
            print(f"  {label}: v{current} -> v{target} served after {times[-1]:.2f} s", flush=True)
            time.sleep(1)
        return times
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        watcher.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval of the polling run (s)")
    args = parser.parse_args()

    from kfops.config import KfopsConfig
    from kfops.serving.local.process import stop_server
    from tests.integration.conftest import log_registered_model

    work = Path(tempfile.mkdtemp(prefix="kfops-bench-promotion-"))
    port, serve_port, hook_port = free_port(), free_port(), free_port()
    tracking_uri = f"http://127.0.0.1:{port}"
    server_env = {**os.environ, "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
                  "MLFLOW_WEBHOOK_CACHE_TTL": "1",
                  "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}
    with (work / "mlflow.log").open("w") as out:
        mlflow = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{work}/mlflow.db", "--artifacts-destination", str(work / "artifacts")],
            stdout=out, stderr=subprocess.STDOUT, env=server_env, start_new_session=True)
    name = "bench-promotion"
    overrides = [f"data_dir={work / 'state'}", f"registry.tracking_uri={tracking_uri}", f"registry.model_name={name}",
                 f"registry.experiment={name}", f"serving.http_port={serve_port}"]
    cfg = KfopsConfig.model_validate({"data_dir": str(work / "state"), "serving": {"http_port": serve_port},
                                      "registry": {"tracking_uri": tracking_uri, "model_name": name,
                                                   "experiment": name}}).resolve(work)
    try:
        wait_until(lambda: httpx.get(f"{tracking_uri}/health", timeout=1).status_code == 200
                   if _up(tracking_uri) else False, 120, 0.5)
        versions = [str(log_registered_model(cfg, work, f"run-{i}", seed=i).version) for i in range(3)]
        move(tracking_uri, name, versions[0])
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        sets = [a for o in overrides for a in ("--set", o)]
        base = [str(BIN / "kfops"), "deploy", "--watch", *sets]
        url = f"http://127.0.0.1:{serve_port}"
        webhook = measure("webhook", [*base, "--webhook-port", str(hook_port)], env, url, name, tracking_uri,
                          versions, args.moves, work / "webhook.log")
        polling = measure("polling", [*base, "--no-webhooks", "--interval", f"{args.interval:g}"], env, url, name,
                          tracking_uri, versions, args.moves, work / "polling.log")
    finally:
        stop_server(cfg)
        os.killpg(mlflow.pid, signal.SIGTERM)
        mlflow.wait(timeout=60)

    w, p = statistics.median(webhook), statistics.median(polling)
    print(f"alias move -> new version serving, {args.moves} moves each ({os.cpu_count()} CPUs):")
    print(f"  webhook: median {w:.2f} s, max {max(webhook):.2f} s")
    print(f"  polling every {args.interval:g} s: median {p:.2f} s, max {max(polling):.2f} s")
    print(f"  polling / webhook (median): {p / w:.1f}x")


def _up(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=1)
        return True
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
