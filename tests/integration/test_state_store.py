"""State that outlives a pod: the StateStore interface on both backends (files, and S3 on a moto
server), and two "pods" (processes with their own empty working folder and TMPDIR, no shared
disk) that see each other's validation baseline, retrain decisions and drift reference through
``state.store``."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from kfops.adapters.state_store import LocalStateStore, S3StateStore
from kfops.core.retrain_policy import RETRAIN_DRIFT, DriftSummary, PolicyState, RetrainPolicy, decide_and_record_in
from kfops.core.state import read_json, update_json, write_json
from tests.conftest import REPO_ROOT
from tests.integration.conftest import S3_CLIENT_ENV

pytestmark = pytest.mark.integration
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """boto3 pointed at the moto server, and a fresh bucket."""
    import boto3

    for key, value in {**S3_CLIENT_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    bucket = f"kfops-state-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return {**S3_CLIENT_ENV, "AWS_ENDPOINT_URL": s3_server, "bucket": bucket}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStateStore(tmp_path / "state")
    env = request.getfixturevalue("s3_env")
    return S3StateStore(f"s3://{env['bucket']}/kfops/state")


def test_whole_objects_under_keys(store):
    assert store.read("validation/raw.last.json") is None
    assert store.read_versioned("validation/raw.last.json") == (None, None)
    write_json(store, "validation/raw.last.json", {"stats": {"rows": 1}})
    write_json(store, "validation/raw.last.json", {"stats": {"rows": 2}})
    store.write("drift/reference/a.parquet", b"\x00parquet")
    store.write("retrain_policy.json", b"{}")
    assert read_json(store, "validation/raw.last.json") == {"stats": {"rows": 2}}
    assert store.read("drift/reference/a.parquet") == b"\x00parquet"
    assert store.list_keys() == ["drift/reference/a.parquet", "retrain_policy.json", "validation/raw.last.json"]
    assert store.list_keys("validation") == ["validation/raw.last.json"]
    assert store.list_keys("valid") == []  # a folder-like prefix, not a string prefix
    assert store.uri("retrain_policy.json").endswith("/retrain_policy.json")


def test_a_conditional_write_never_replaces_what_it_did_not_read(store):
    assert store.write_if("k.json", b"first", None)
    assert not store.write_if("k.json", b"second", None)
    _, seen = store.read_versioned("k.json")
    store.write("k.json", b"other writer")
    assert not store.write_if("k.json", b"stale", seen)
    assert store.read("k.json") == b"other writer"
    _, current = store.read_versioned("k.json")
    assert store.write_if("k.json", b"fresh", current) and store.read("k.json") == b"fresh"


def test_concurrent_read_modify_writes_lose_nothing(store):
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def add(me: int) -> None:
        try:
            start.wait()
            for step in range(4):
                update_json(store, "log.json", lambda items, entry=f"{me}-{step}": ([*(items or []), entry], None))
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(read_json(store, "log.json")) == sorted(f"{i}-{s}" for i in range(6) for s in range(4))


def test_racing_drift_checks_spend_the_retrain_budget_once(store):
    policy = RetrainPolicy(mode="drift", debounce=1, cooldown="0s", max_retrains=1, period="30d")
    start = threading.Barrier(5)
    codes: list[str] = []

    def check(me: int) -> None:
        start.wait()
        codes.append(decide_and_record_in(store, "retrain_policy.json", DriftSummary(drift=True, report=f"r{me}"),
                                          T0, policy).code)

    threads = [threading.Thread(target=check, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = PolicyState.from_dict(read_json(store, "retrain_policy.json")).decisions
    assert len(history) == 5 and codes.count(RETRAIN_DRIFT) == 1 and sum(d.retrain for d in history) == 1


def test_two_log_sink_replicas_never_overwrite_each_others_files(s3_env, monkeypatch):
    """Every sink replica is pid 1 of its container and starts its sequence at 0: in the same second
    their file names were equal, and the second put replaced the first replica's rows."""
    import pyarrow as pa

    from kfops.serving.runtime import inference_log

    monkeypatch.setattr(inference_log.os, "getpid", lambda: 1)
    monkeypatch.setattr(inference_log.time, "strftime", lambda *_args: "20240501T101500")
    store = f"s3://{s3_env['bucket']}/inference"
    day = dt.date(2024, 5, 1)
    stamp = pa.array([dt.datetime(2024, 5, 1, 10, 15, tzinfo=dt.UTC)] * 2, type=pa.timestamp("ns", tz="UTC"))
    for replica in ("a", "b"):
        table = pa.table({"timestamp": stamp, "request_id": pa.array([f"{replica}1", f"{replica}2"]),
                          "model_name": pa.array(["m", "m"]), "model_version": pa.array(["1", "1"]),
                          "input_kind": pa.array(["features"] * 2), "input": pa.nulls(2, type=pa.string()),
                          "probability": pa.array([0.1, 0.2]), "label": pa.array([0, 0], type=pa.int8())})
        inference_log.write_log_table(store, day, table, itertools.count())  # each replica's own sequence
    logs = inference_log.read_inference_logs(store, dt.datetime(2024, 5, 1), dt.datetime(2024, 5, 2))
    assert sorted(logs["request_id"]) == ["a1", "a2", "b1", "b2"]


# --- two pods --------------------------------------------------------------------------------------

WINDOW = {"start": "2013-01-01", "end": "2013-01-03"}
# One pod's work, in the order a pipeline does it: validate the raw tables, then a drift check's
# two pieces of state (its retrain decision, and the reference it compares against).
POD = textwrap.dedent("""
    import datetime as dt, json, sys
    from pathlib import Path
    from kfops.adapters.state_store import state_store
    from kfops.core.retrain_policy import DriftSummary, decide_and_record_in
    from kfops.steps.common import step_config
    from kfops.steps.drift_check import POLICY_STATE_FILE, reference_frame
    from kfops.steps.validate import validate
    config, raw, report, check_time = Path(sys.argv[1]).read_text(), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    out = Path("out"); out.mkdir()
    summary = validate(config, raw, out / "report.html", out / "summary.json")
    cfg = step_config(config)
    decision = decide_and_record_in(state_store(cfg), POLICY_STATE_FILE, DriftSummary(drift=True, report=report),
                                    dt.datetime.fromisoformat(check_time), cfg.retrain)
    frame, where = reference_frame(cfg, cfg.dataset.start, cfg.dataset.end, Path("work"))
    print(json.dumps({"max_rows": summary["tables"]["flights"]["parameters"]["max_rows"],
                      "decision": decision.to_dict(), "reference": {"rows": len(frame), "where": where,
                                                                    "columns": list(frame.columns)}}))
""")


def run_pod(name: str, base: Path, env: dict[str, str], *args: str) -> dict:
    """One task in a fresh "pod": its own empty working folder and TMPDIR, no KFOPS_* variable."""
    pod = base / name
    workdir, tmp, home = pod / "workdir", pod / "tmp", pod / "home"
    for folder in (workdir, tmp, home):
        folder.mkdir(parents=True)
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(tmp),
               "PYTHONPATH": python_path, "LANG": "C.UTF-8", **env}
    done = subprocess.run([sys.executable, "-c", POD, *args], cwd=workdir, env=environ, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, f"pod {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two processes importing Great Expectations (and one Feast): ~20 s of CPU
def test_two_pods_share_validation_baseline_retrain_decisions_and_drift_reference(s3_env, tmp_path):
    """Pod 2 validates against pod 1's row counts, decides on a history holding pod 1's decision,
    and compares against the drift reference pod 1 built; no file of either pod is involved."""
    from kfops.config import load_config
    from kfops.steps.ingest import ingest

    env = {key: value for key, value in s3_env.items() if key != "bucket"}
    store = f"s3://{s3_env['bucket']}/kfops-state"
    cfg = load_config(REPO_ROOT / "kfops.yaml", [f"dataset.start={WINDOW['start']}", f"dataset.end={WINDOW['end']}",
                                                 f"state.store={store}", "retrain.mode=drift", "retrain.debounce=2",
                                                 "retrain.cooldown=0s"],
                      environ={})
    raw = tmp_path / "pipeline_root" / "ingest" / "raw"  # what the ingest task leaves in the pipeline root
    ingest(cfg, raw)
    # data_dir relative, as a compiled pipeline carries it: each pod's own scratch under its TMPDIR.
    config = tmp_path / "config.json"
    config.write_text(cfg.model_copy(update={"data_dir": Path(".kfops")}).to_json())
    pods = tmp_path / "pods"

    one = run_pod("pod-1", pods, env, str(config), str(raw), "report-1", "2013-02-01T00:00:00+00:00")
    two = run_pod("pod-2", pods, env, str(config), str(raw), "report-2", "2013-02-02T00:00:00+00:00")

    assert one["max_rows"] is None  # no earlier run: no volume band
    assert two["max_rows"] is not None  # the band around pod 1's row count
    assert one["decision"]["code"] == "debounce"  # debounce 2: one drifted check is not enough
    assert two["decision"]["code"] == RETRAIN_DRIFT and two["decision"]["evidence"] == ["report-1", "report-2"]
    project_state = f"{store}/{cfg.project}"  # the project's own part of the shared store
    assert one["reference"]["where"].startswith(project_state + "/drift/reference/") and one["reference"]["rows"] > 0
    assert two["reference"] == one["reference"]
    # Pod 2 read the reference pod 1 built; it did not rebuild it (which writes Feast sources under work/).
    assert (pods / "pod-1" / "workdir" / "work" / "sources").is_dir()
    assert not (pods / "pod-2" / "workdir" / "work").exists()
    keys = S3StateStore(project_state).list_keys()
    assert "validation/raw.last.json" in keys and "retrain_policy.json" in keys
    # Nothing of it stayed on a pod's disk, where the other pod could not have read it.
    assert not list(pods.rglob("raw.last.json")) and not list(pods.rglob("retrain_policy.json"))


# --- reading stored parquet, then exiting ----------------------------------------------------------

# A step's last act is often to read a stored frame; the process then exits. Arrow's worker threads
# may drop what they read from after the read returned: a Python file object there made the exit
# abort (std::terminate, exit -6) in about a third of runs. The garbage makes the exit's final
# collection long enough for that window to be hit.
READ_THEN_EXIT = textwrap.dedent("""
    import io, sys
    import pandas as pd
    from kfops.adapters.state_store import parquet_frame
    buffer = io.BytesIO()
    pd.DataFrame({"a": range(1000), "b": ["x"] * 1000}).to_parquet(buffer)
    garbage = [[i] for i in range(2_000_000)]
    frame = parquet_frame(buffer.getvalue())
    print(len(frame))
""")


@pytest.mark.slow  # a dozen processes importing pandas: ~20 s
def test_a_process_that_reads_stored_parquet_exits_cleanly():
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    codes = []
    for _ in range(12):
        done = subprocess.run([sys.executable, "-c", READ_THEN_EXIT], env=environ, capture_output=True, text=True,
                              check=False)
        assert done.stdout.strip() == "1000", done.stderr[-2000:]
        codes.append(done.returncode)
    assert codes == [0] * 12
