"""Serving benchmark: the kfops server against MLflow's and a plain KServe server, same model.

    .venv/bin/python bench/serving.py                       # everything, ~5 minutes
    .venv/bin/python bench/serving.py --duration 5 --concurrency 1 8 32 --batch-rows 1000000
    .venv/bin/python bench/serving.py --servers A --feast-redis 127.0.0.1:6379 --batch-rows 0

Also A with raw flights and the Feast online lookup on Redis (``--feast-redis``, default
127.0.0.1:6379; ``none`` skips it): the window's features are materialized into Redis first.
``--feast-sqlite`` runs the same raw-flight scenario on the SQLite online store as well.

Servers, all on 127.0.0.1, all serving one XGBoost model trained here on 2013 flights (request
features + the origin's weather + plane attributes; delay-rate features left missing):

  A  kfops: ``python -m kfops.serving`` (KServe ModelServer + adaptive batching + fast path),
     one process, inference log and metrics on, as deployed.
  A2 the same with ``serving.workers=2``: two server processes on one port (SO_REUSEPORT).
  M  the baseline: server A run from another checkout's code (``--baseline-repo``, e.g. main), so
     a change is measured against what it changes in the same run.
  B  ``mlflow models serve --env-manager local`` on the same registered pyfunc, 2 workers.
  C  a plain ``kserve.ModelServer`` with a minimal Model that predicts once per request (numpy
     encoding, no pandas), 2 workers (one per core), access and latency logs off.

One async load generator (aiohttp on uvloop, in this process) drives each with single-row
requests (features in the request: V2 JSON for A and C, ``dataframe_split`` for B) at each
concurrency for ``--duration`` seconds after a warm-up, closed loop. It shares the machine's
cores with the server under test. Also measured: the in-process ``inplace_predict`` floor per
row (single and batched) and batch scoring (``predict_file``) against that floor.

wrk (``--wrk-duration``, on when the ``wrk`` binary is installed) is a second, independent load
generator written in C, so it takes less of the cores than ours: one thread, 32 connections,
the same single-row V2 JSON feature vectors (a Lua script cycles through them), for A, A2 and M,
in ``--wrk-rounds`` alternating rounds (the machine's load drifts; the summary takes the median).

    flock /tmp/kfops-heavy.lock .venv/bin/python bench/serving.py --servers M A A2 --concurrency 32 \
        --feast-redis none --batch-rows 0 --baseline-repo /path/to/main --wrk-rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# KServe parses sys.argv when imported; keep our flags away from it.
_argv, sys.argv = sys.argv, sys.argv[:1]
import kserve

sys.argv = _argv

MODEL_NAME = "bench-flights"
# B and C get one XGBoost thread per worker, like A: on 2 shared cores OpenMP's spinning threads
# would otherwise cost them several milliseconds of CPU per single-row call.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
WINDOW = ("2013-01-01", "2013-03-31")


class PlainKServeModel(kserve.Model):
    """Server C: what a minimal custom KServe predictor looks like, one predict per request."""

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.load()

    def load(self) -> bool:
        from kfops.core.model import load_model
        from kfops.serving.protocol.encoding import RowEncoder
        from kfops.serving.runtime.loading import limit_threads

        self.model = load_model(Path(self.model_dir))
        limit_threads(self.model, 1)
        self.encoder = RowEncoder(self.model.spec)
        self.ready = True
        return True

    def predict(self, payload, headers=None, response_headers=None):
        from kserve.protocol.infer_type import InferOutput, InferResponse

        columns = {tensor.name: list(tensor.data) for tensor in payload.inputs}
        rows = len(next(iter(columns.values())))
        probabilities = self.model.predict_proba_encoded(self.encoder.encode(columns, rows))
        return InferResponse(response_id=payload.id or "", model_name=self.name,
                             infer_outputs=[InferOutput("probability", [rows], "FP64", probabilities.tolist())])


# --- model and data ------------------------------------------------------------------------------


def feature_frame():
    """Entity frame of the window plus the origin's weather at the scheduled hour and plane data."""
    import pandas as pd

    from kfops.config import load_config
    from kfops.datasets.flights import build_entity_frame, load_tables

    cfg = load_config(REPO / "kfops.yaml", [f"dataset.start={WINDOW[0]}", f"dataset.end={WINDOW[1]}"], environ={})
    tables = load_tables(cfg)
    entities = build_entity_frame(tables, cfg)
    weather = tables["weather"].sort_values("time_hour")[
        ["origin", "time_hour", "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]]
    frame = pd.merge_asof(entities.sort_values("event_timestamp"), weather, left_on="event_timestamp",
                          right_on="time_hour", by="origin", direction="backward", tolerance=pd.Timedelta("3h"))
    planes = tables["planes"].rename(columns={"type": "plane_type", "year": "plane_year"})
    planes["plane_age"] = 2013 - planes["plane_year"]
    frame = frame.merge(planes[["tailnum", "plane_age", "seats", "engines", "manufacturer", "plane_type"]],
                        on="tailnum", how="left")
    for name in ("carrier_delay_rate_7d", "carrier_flights_7d", "origin_delay_rate_7d", "origin_flights_7d"):
        frame[name] = float("nan")  # computed by the Feast job in the pipeline; not needed to time serving
    return frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True), cfg


def prepare_model(work: Path):
    """Train (once, cached under work/) and return (model_dir, request rows, feature frame)."""
    from kfops.core.model import FeatureSpec, save_model
    from kfops.training.xgb import train_xgboost

    frame, cfg = feature_frame()
    columns, categorical = cfg.feature_columns, cfg.features.categorical
    model_dir = work / "model"
    cut_train, cut_val = int(len(frame) * 0.7), int(len(frame) * 0.85)
    if not (model_dir / "kfops_model.json").is_file():
        spec = FeatureSpec.fit(frame.iloc[:cut_train], columns, categorical)
        params = cfg.train.xgboost.model_copy(update={"device": "cpu"})
        started = time.perf_counter()
        result = train_xgboost(frame.iloc[:cut_train], frame.iloc[cut_train:cut_val], spec, params)
        save_model(result.model, model_dir, metadata={"bench": "serving"})
        print(f"trained the bench model in {time.perf_counter() - started:.0f}s: {result.metrics}")
    test = frame.iloc[cut_val:][columns].reset_index(drop=True)
    return model_dir, test, frame[columns]


def register_pyfunc(work: Path, model_dir: Path, example) -> tuple[str, str]:
    """Log the kfops folder as the project's MLflow pyfunc, register it; returns (tracking uri, model uri)."""
    import pandas as pd

    from kfops.adapters import mlflow_registry as registry
    from kfops.config import KfopsConfig
    from kfops.core.model import load_model, predict_proba

    tracking = f"sqlite:///{work / 'mlflow.db'}"
    cfg = KfopsConfig(registry={"tracking_uri": tracking, "model_name": MODEL_NAME, "experiment": "bench-serving"})
    client = registry.client(cfg)
    if client.search_model_versions(f"name='{MODEL_NAME}'"):
        version = max(int(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'"))
        return tracking, f"models:/{MODEL_NAME}/{version}"
    probability = predict_proba(load_model(model_dir), example)
    with registry.start_run(cfg, registry.ensure_experiment(cfg)) as run:
        uri = run.log_model(model_dir, example, pd.DataFrame(
            {"probability": probability, "prediction": (probability >= 0.5).astype(int)}))
    version = registry.register_version(cfg, run.run_id, uri, {}, "bench-serving")[0].version
    return tracking, f"models:/{MODEL_NAME}/{version}"


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen | None, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def spawn(command: list[str], log: Path, env: dict | None = None, cwd: Path = REPO) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(env or {})}, cwd=cwd)


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def wait_workers(pid: int, count: int, timeout_s: float = 120) -> None:
    """Until ``count`` child processes of ``pid`` (serving.workers) are up, each with its own listener."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = psutil.Process(pid).children()
        listening = [c for c in children
                     if any(conn.status == psutil.CONN_LISTEN for conn in c.connections("tcp"))]
        if len(listening) >= count:
            return
        time.sleep(0.3)
    raise RuntimeError(f"server {pid} did not start {count} listening workers within {timeout_s}s")


def tree_cpu_seconds(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total
    except psutil.NoSuchProcess:
        return float("nan")


def serve_plain(model_dir: str, port: int, workers: int) -> None:
    """Server C (run as a subcommand of this script)."""
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess

    log_config = Path(os.environ.get("TMPDIR", "/tmp")) / f"kserve-plain-{port}.json"
    config = json.loads(json.dumps(kserve.logging.KSERVE_LOG_CONFIG))
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    config["loggers"]["kserve.trace"]["level"] = "WARNING"
    log_config.write_text(json.dumps(config))

    class PlainServer(kserve.ModelServer):
        def start(self, models):  # KServe's multi-worker start, bound to 127.0.0.1
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_multiprocess_server = RESTServerMultiProcess(
                FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
                workers=self.workers, grace_period=5, log_config_file=str(log_config))
            self._rest_multiprocess_server._rest_server.config.host = "127.0.0.1"
            self.servers.append(self._rest_multiprocess_server.start())
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    kserve.logging.configure_logging(str(log_config))
    PlainServer(http_port=port, workers=workers, enable_grpc=False, enable_latency_logging=False).start(
        [PlainKServeModel(MODEL_NAME, model_dir)])


# --- load generator ------------------------------------------------------------------------------


async def drive(url: str, bodies: list[bytes], concurrency: int, duration: float, warmup: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    measure_from = time.perf_counter() + warmup
    end = measure_from + duration
    connector = aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, headers={"content-type": "application/json"}) as session:

        async def worker(offset: int) -> None:
            nonlocal errors
            k = offset
            while True:
                started = time.perf_counter()
                if started >= end:
                    return
                async with session.post(url, data=bodies[k % len(bodies)]) as response:
                    await response.read()
                    ok = response.status == 200
                k += concurrency
                finished = time.perf_counter()
                if started >= measure_from:
                    if ok:
                        latencies.append(finished - started)
                    else:
                        errors += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    latencies.sort()
    count = len(latencies)
    return {
        "rps": count / duration,
        "p50_ms": latencies[count // 2] * 1e3 if count else float("nan"),
        "p99_ms": latencies[min(count - 1, int(count * 0.99))] * 1e3 if count else float("nan"),
        "requests": count,
        "errors": errors,
    }


def run_load(url: str, bodies: list[bytes], concurrency: int, duration: float, warmup: float, pid: int) -> dict:
    import uvloop

    cpu_before, own_before = tree_cpu_seconds(pid), time.process_time()
    result = uvloop.run(drive(url, bodies, concurrency, duration, warmup))
    cpu, own = tree_cpu_seconds(pid) - cpu_before, time.process_time() - own_before
    # Requests over the whole run, warm-up included (the CPU counters cover it too).
    total = max(1.0, (result["requests"] + result["errors"]) * (duration + warmup) / duration)
    result["server_cpu_us_per_request"] = cpu / total * 1e6
    result["loadgen_cpu_us_per_request"] = own / total * 1e6
    return result


def batch_counters(infer_url: str) -> tuple[float, float]:
    """(rows, calls) of server A's model batches so far, from its /metrics."""
    import httpx

    base = infer_url.split("/v2/", 1)[0]
    rows = calls = 0.0
    for line in httpx.get(f"{base}/metrics", trust_env=False, timeout=10).text.splitlines():
        if 'stage="model"' in line:
            if line.startswith("kfops_serving_batch_rows_sum"):
                rows = float(line.rsplit(" ", 1)[1])
            elif line.startswith("kfops_serving_batch_rows_count"):
                calls = float(line.rsplit(" ", 1)[1])
    return rows, calls


# --- wrk ----------------------------------------------------------------------------------------

WRK_SCRIPT = """
local requests = {}
local next_index = 0

init = function(args)
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, line)
  end
end

request = function()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
"""
WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_files(work: Path, bodies: list[bytes]) -> tuple[Path, Path]:
    script, lines = work / "wrk_post.lua", work / "wrk_bodies.jsonl"
    script.write_text(WRK_SCRIPT)
    lines.write_bytes(b"\n".join(bodies) + b"\n")  # orjson output holds no raw newline
    return script, lines


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    return float(match[1]) * WRK_UNITS[match[2]] if match else float("nan")


def run_wrk(url: str, files: tuple[Path, Path], connections: int, duration: float, warmup: float, pid: int) -> dict:
    """One wrk run (one thread, ``connections`` connections, single-row bodies) after a warm-up run."""
    script, lines = files
    base = ["wrk", "-t1", f"-c{connections}", "--latency", "-s", str(script)]
    subprocess.run([*base, f"-d{max(1, round(warmup))}s", url, "--", str(lines)], check=True, capture_output=True)
    cpu_before = tree_cpu_seconds(pid)
    out = subprocess.run([*base, f"-d{max(1, round(duration))}s", url, "--", str(lines)], check=True,
                         capture_output=True, text=True).stdout
    cpu = tree_cpu_seconds(pid) - cpu_before
    total = int(re.search(r"(\d+) requests in", out)[1])
    errors = int(m[1]) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out)[1]),
        "p50_ms": _wrk_ms(percentiles.get("50", "")),
        "p90_ms": _wrk_ms(percentiles.get("90", "")),
        "p99_ms": _wrk_ms(percentiles.get("99", "")),
        "requests": total,
        "errors": errors + (sum(int(x) for x in socket_errors.groups()) if socket_errors else 0),
        "server_cpu_us_per_request": cpu / max(1, total) * 1e6,
    }


def start_baseline(repo: Path, model_dir: Path, work: Path, logs: Path) -> tuple[str, subprocess.Popen]:
    """Server M: ``python -m kfops.serving`` from another checkout, configured like A (inference log on)."""
    port = free_port()
    folder = work / "baseline"
    folder.mkdir(exist_ok=True)
    (folder / "kfops.yaml").write_text(f"data_dir: {folder / 'data'}\n")
    process = spawn([sys.executable, "-m", "kfops.serving", "--model-dir", str(model_dir), "--name", MODEL_NAME,
                     "--http-port", str(port), "--online-lookup", "none", "--config", str(folder / "kfops.yaml"),
                     "--inference-log-dir", str(folder / "inference_logs")], logs / "baseline.log",
                    env={"PYTHONPATH": str(repo), "KFOPS_PROJECT_DIR": str(folder)}, cwd=repo)
    wait_http(f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/ready", process)
    return f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer", process


# --- raw flights with the Feast online store (Redis or SQLite) ------------------------------------


def feast_redis_server(work: Path, model_dir: Path, redis: str | None, workers: int = 1):
    """Materialize the window's features into Redis (SQLite when ``redis`` is None); start A with the
    Feast lookup (``workers`` processes on one port); return (cfg, status, raw-flight V2 bodies, teardown)."""
    import datetime as dt
    import uuid

    import orjson

    from kfops.adapters import feast_store as features
    from kfops.config import load_config
    from kfops.datasets.flights import load_tables
    from kfops.datasets.flights.features import write_feature_sources
    from kfops.serving.local.process import start_server

    cfg = load_config(None, [
        f"data_dir={work / 'kfops-feast'}", f"serving.http_port={free_port()}", "serving.startup_timeout_s=300",
        f"dataset.start={WINDOW[0]}", f"dataset.end={WINDOW[1]}", f"features.project=bench_{uuid.uuid4().hex[:8]}",
        f"features.repo_path={REPO / 'feature_repo'}", "features.online_store=redis",
        f"features.redis_connection={redis}", "dataset.request_builder=kfops.datasets.flights.serving:RAW_FLIGHT",
        f"serving.workers={workers}",
    ], environ={})  # fmt: skip
    tables = load_tables(cfg)
    if redis is None:
        cfg.features = cfg.features.model_copy(update={"online_store": "sqlite"})
    started = time.perf_counter()
    sources = cfg.feast_dir / "sources"
    write_feature_sources(tables, sources)
    store = features.apply_definitions(cfg, sources)
    features.materialize(cfg, dt.datetime(2012, 12, 24, tzinfo=dt.UTC), dt.datetime(2013, 4, 1, tzinfo=dt.UTC),
                         store=store)
    print(f"materialized {WINDOW[0]}..{WINDOW[1]} into {cfg.features.online_store} in "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    flights = tables["flights"]
    march = flights[(flights["month"] == 3) & flights["tailnum"].notna()].head(2000)
    kinds = {"distance": "FP64", "flight": "INT64"}
    bodies = []
    for row in march.itertuples():
        flight = {"carrier": row.carrier, "origin": row.origin, "dest": row.dest, "tailnum": row.tailnum,
                  "distance": float(row.distance), "flight": int(row.flight),
                  "sched_dep": f"2013-03-{int(row.day):02d}T{int(row.sched_dep_time) // 100:02d}:"
                               f"{int(row.sched_dep_time) % 100:02d}"}
        bodies.append(orjson.dumps({"inputs": [{"name": k, "datatype": kinds.get(k, "BYTES"), "shape": [1],
                                                "data": [v]} for k, v in flight.items()]}))
    status = start_server(cfg, model_dir=model_dir, name=MODEL_NAME, online_lookup="feast", replace=True)
    if workers > 1:
        wait_workers(status["pid"], workers)
    return cfg, status, bodies, store.teardown


# --- floors --------------------------------------------------------------------------------------


def per_call_seconds(call, repeat: int) -> float:
    call()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            call()
        best = min(best, (time.perf_counter() - started) / repeat)
    return best


def predict_floor(model_dir: Path, test) -> dict:
    from kfops.core.model import load_model
    from kfops.serving.runtime.loading import limit_threads

    model = load_model(model_dir)
    matrix = model.spec.encode(test)
    limit_threads(model, 1)
    floor = {}
    for batch in (1, 32, 256):
        seconds = per_call_seconds(lambda b=batch: model.predict_proba_encoded(matrix[:b]), max(20, 2000 // batch))
        floor[f"batch_{batch}_us_per_row"] = seconds / batch * 1e6
    return floor


def batch_scoring(model_dir: Path, features, work: Path, rows: int) -> dict:
    import numpy as np

    from kfops.core.model import load_model
    from kfops.serving.local.batch_scoring import predict_file
    from kfops.serving.runtime.loading import limit_threads

    repeats = int(np.ceil(rows / len(features)))
    big = features.iloc[np.tile(np.arange(len(features)), repeats)[:rows]].reset_index(drop=True)
    big.insert(0, "row_id", np.arange(len(big)))
    source = work / f"batch_{rows}.parquet"
    big.to_parquet(source, index=False)
    model = load_model(model_dir)
    limit_threads(model, os.cpu_count())
    matrix = model.spec.encode(big)
    encode_s = per_call_seconds(lambda: model.spec.encode(big), 1)
    # Floor and predict_file alternate, best of 3 each: the machine is shared and its load drifts.
    model.predict_proba_encoded(matrix[:1000])  # warm up
    predict_s, best = float("inf"), 0.0
    for _ in range(3):
        started = time.perf_counter()
        model.predict_proba_encoded(matrix)
        predict_s = min(predict_s, time.perf_counter() - started)
        best = max(best, predict_file(model_dir, source, work / "scored.parquet").rows_per_second)
    return {
        "rows": rows,
        "floor_rows_per_s": rows / predict_s,
        "floor_with_encode_rows_per_s": rows / (predict_s + encode_s),
        "predict_file_rows_per_s": best,
    }


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=REPO / ".kfops" / "bench" / "serving")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per concurrency level")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--servers", nargs="*", default=["A", "A2", "B", "C"], choices=["M", "A", "A2", "B", "C"],
                        help="servers to load-test (none: floors and batch scoring only); M needs --baseline-repo")
    parser.add_argument("--baseline-repo", type=Path, help="a checkout whose kfops is server M (e.g. main)")
    parser.add_argument("--wrk-duration", type=float, default=10.0,
                        help="seconds per wrk run (0: no wrk runs; skipped when wrk is not installed)")
    parser.add_argument("--wrk-rounds", type=int, default=2, help="alternating wrk rounds over the servers")
    parser.add_argument("--wrk-connections", type=int, default=32)
    parser.add_argument("--feast-redis", default="127.0.0.1:6379",
                        help="Redis for the raw-flight scenario (A with the Feast lookup); 'none' skips it")
    parser.add_argument("--raw-workers", type=int, nargs="+", default=[1],
                        help="server processes (serving.workers) for the raw-flight scenarios, e.g. 1 2")
    parser.add_argument("--feast-sqlite", action="store_true",
                        help="also the raw-flight scenario with the Feast lookup on the SQLite online store")
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    parser.add_argument("--serve-plain", nargs=3, metavar=("MODEL_DIR", "PORT", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_plain:
        serve_plain(args.serve_plain[0], int(args.serve_plain[1]), int(args.serve_plain[2]))
        return

    import orjson

    from kfops.config import load_config
    from kfops.serving.local.process import start_server, stop_server

    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    model_dir, test, features = prepare_model(work)
    pool = test.iloc[:2000]
    rows = pool.to_dict("records")
    from kfops.core.model import load_model

    spec = load_model(model_dir).spec
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    v2_bodies = [orjson.dumps({"inputs": [
        {"name": c, "datatype": "BYTES" if c in spec.categorical else "FP64", "shape": [1], "data": [r[c]]}
        for c in spec.columns]}) for r in clean]
    mlflow_bodies = [orjson.dumps({"dataframe_split": {"columns": spec.columns, "data": [[r[c] for c in spec.columns]]}})
                     for r in clean]
    results: dict = {"cpu_count": os.cpu_count(), "load_average_start": os.getloadavg()}
    results["floor"] = predict_floor(model_dir, pool)
    print("inplace_predict floor (1 thread):", json.dumps({k: round(v, 2) for k, v in results["floor"].items()}))

    servers = {}
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    cfg = load_config(None, [f"data_dir={work / 'kfops'}", f"serving.http_port={free_port()}"], environ={})
    try:
        if "M" in args.servers:
            if args.baseline_repo is None:
                parser.error("server M needs --baseline-repo")
            url, process = start_baseline(args.baseline_repo.resolve(), model_dir, work, logs)
            servers["M"] = (url, v2_bodies, process.pid, process)
        if "A" in args.servers:
            status = start_server(cfg, model_dir=model_dir, name=MODEL_NAME, online_lookup="none", replace=True)
            servers["A"] = (f"{status['url']}/v2/models/{MODEL_NAME}/infer", v2_bodies, status["pid"], None)
        if "A2" in args.servers:
            cfg2 = load_config(None, [f"data_dir={work / 'kfops2'}", f"serving.http_port={free_port()}",
                                      "serving.workers=2"], environ={})
            status = start_server(cfg2, model_dir=model_dir, name=MODEL_NAME, online_lookup="none", replace=True)
            url = f"{status['url']}/v2/models/{MODEL_NAME}/infer"
            wait_workers(status["pid"], 2)
            servers["A2"] = (url, v2_bodies, status["pid"], None)
        if "B" in args.servers:
            tracking, uri = register_pyfunc(work, model_dir, test.iloc[:5])
            port = free_port()
            process = spawn([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "--workers", "2"], logs / "mlflow.log",
                            # mlflow execs `uvicorn` by name: the venv's bin must be on PATH
                            env={"MLFLOW_TRACKING_URI": tracking, **ONE_THREAD,
                                 "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
            wait_http(f"http://127.0.0.1:{port}/ping", process)
            servers["B"] = (f"http://127.0.0.1:{port}/invocations", mlflow_bodies, process.pid, process)
        if "C" in args.servers:
            port = free_port()
            process = spawn([sys.executable, str(Path(__file__).resolve()), "--serve-plain", str(model_dir), str(port),
                             "2"], logs / "plain_kserve.log", env=ONE_THREAD)
            wait_http(f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/ready", process)
            servers["C"] = (f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer", v2_bodies, process.pid, process)

        results["load"] = {}
        for concurrency in args.concurrency:
            for label, (url, bodies, pid, _) in servers.items():
                batches = batch_counters(url) if label in ("A", "M") else None
                run = run_load(url, bodies, concurrency, args.duration, args.warmup, pid)
                if batches is not None:
                    after = batch_counters(url)
                    run["mean_batch_rows"] = (after[0] - batches[0]) / max(1.0, after[1] - batches[1])
                results["load"][f"{label}@{concurrency}"] = run
                batch = f"  mean batch={run['mean_batch_rows']:.1f} rows" if "mean_batch_rows" in run else ""
                print(f"{label} c={concurrency:<3} rps={run['rps']:8.0f}  p50={run['p50_ms']:7.2f} ms  "
                      f"p99={run['p99_ms']:7.2f} ms  errors={run['errors']}  "
                      f"cpu/request: server {run['server_cpu_us_per_request']:5.0f} us, load generator "
                      f"{run['loadgen_cpu_us_per_request']:4.0f} us{batch}", flush=True)
        wrk_servers = [label for label in servers if label in ("M", "A", "A2")]
        if args.wrk_duration > 0 and wrk_servers and shutil.which("wrk") is None:
            print("wrk is not installed (Debian: apt-get install wrk): no wrk runs")
        elif args.wrk_duration > 0 and wrk_servers:
            files = wrk_files(work, v2_bodies)
            runs: dict[str, list[dict]] = {label: [] for label in wrk_servers}
            for round_index in range(args.wrk_rounds):
                order = wrk_servers if round_index % 2 == 0 else wrk_servers[::-1]
                for label in order:
                    url, _, pid, _ = servers[label]
                    run = run_wrk(url, files, args.wrk_connections, args.wrk_duration, args.warmup, pid)
                    runs[label].append(run)
                    print(f"wrk {label:<2} round {round_index + 1} c={args.wrk_connections} rps={run['rps']:8.0f}  "
                          f"p50={run['p50_ms']:6.2f} ms  p99={run['p99_ms']:6.2f} ms  errors={run['errors']}  "
                          f"server cpu/request {run['server_cpu_us_per_request']:4.0f} us", flush=True)
            results["wrk"] = {"connections": args.wrk_connections, "runs": runs, "median": {}}
            for label, label_runs in runs.items():
                median = {key: statistics.median(r[key] for r in label_runs)
                          for key in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_request")}
                results["wrk"]["median"][label] = median
                print(f"wrk {label:<2} median of {len(label_runs)}: rps={median['rps']:8.0f}  "
                      f"p99={median['p99_ms']:6.2f} ms  server cpu/request {median['server_cpu_us_per_request']:4.0f} us")
            medians = results["wrk"]["median"]
            for label in ("A", "A2"):
                if label in medians and "M" in medians:
                    print(f"wrk {label}/M: {medians[label]['rps'] / medians['M']['rps']:.2f}x throughput, "
                          f"p99 {medians[label]['p99_ms']:.2f} vs {medians['M']['p99_ms']:.2f} ms")
    finally:
        for _, _, _, process in servers.values():
            if process is not None:
                stop(process)
        if "A" in servers:
            stop_server(cfg, MODEL_NAME)
        if "A2" in servers:
            stop_server(cfg2, MODEL_NAME)

    stores = ([("redis", args.feast_redis)] if args.feast_redis != "none" else []) + (
        [("sqlite", None)] if args.feast_sqlite else [])
    use_wrk = args.wrk_duration > 0 and shutil.which("wrk") is not None
    for store_name, redis in stores:
        from kfops.serving.local.process import stop_server as stop_feast

        for workers in args.raw_workers:
            label = f"A+feast-{store_name}" + (f"x{workers}" if workers > 1 else "")
            feast_cfg, status, bodies, teardown = feast_redis_server(work, model_dir, redis, workers)
            try:
                url = f"{status['url']}/v2/models/{MODEL_NAME}/infer"
                for concurrency in args.concurrency:
                    run = run_load(url, bodies, concurrency, args.duration, args.warmup, status["pid"])
                    results["load"][f"{label}@{concurrency}"] = run
                    print(f"{label} c={concurrency:<3} rps={run['rps']:8.0f}  p50={run['p50_ms']:7.2f} ms  "
                          f"p99={run['p99_ms']:7.2f} ms  errors={run['errors']}  cpu/request: server "
                          f"{run['server_cpu_us_per_request']:5.0f} us", flush=True)
                if use_wrk:  # the raw requests under wrk too: its C load generator leaves the server more CPU
                    files = wrk_files(work, bodies)
                    raw_runs = [run_wrk(url, files, args.wrk_connections, args.wrk_duration, args.warmup,
                                        status["pid"]) for _ in range(args.wrk_rounds)]
                    median = {key: statistics.median(r[key] for r in raw_runs)
                              for key in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_request")}
                    results.setdefault("wrk_raw", {})[label] = {"runs": raw_runs, "median": median}
                    print(f"wrk {label} median of {len(raw_runs)}: rps={median['rps']:8.0f}  "
                          f"p99={median['p99_ms']:6.2f} ms  errors={sum(r['errors'] for r in raw_runs)}  "
                          f"server cpu/request {median['server_cpu_us_per_request']:4.0f} us", flush=True)
            finally:
                stop_feast(feast_cfg, MODEL_NAME)
                teardown()

    load = results.get("load", {})
    for concurrency in args.concurrency:
        a = load.get(f"A@{concurrency}")
        for other in ("B", "C"):
            b = load.get(f"{other}@{concurrency}")
            if a and b:
                print(f"A/{other} at c={concurrency}: {a['rps'] / b['rps']:.1f}x throughput")
    if "A@32" in load:
        single_floor_rps = 1e6 / results["floor"]["batch_1_us_per_row"]
        print(f"A at c=32: {load['A@32']['rps']:.0f} rps = {load['A@32']['rps'] / single_floor_rps:.2f}x the "
              f"one-row-per-call predict floor ({single_floor_rps:.0f} calls/s in-process)")
    if args.batch_rows:
        results["batch"] = batch_scoring(model_dir, features, work, args.batch_rows)
        b = results["batch"]
        print(f"batch scoring {b['rows']:,} rows: predict_file {b['predict_file_rows_per_s']:,.0f} rows/s, "
              f"floor (inplace_predict, all threads) {b['floor_rows_per_s']:,.0f} rows/s, floor incl. encode "
              f"{b['floor_with_encode_rows_per_s']:,.0f} rows/s -> {b['predict_file_rows_per_s'] / b['floor_rows_per_s']:.2f}"
              " of the floor")
    results["load_average_end"] = os.getloadavg()
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
