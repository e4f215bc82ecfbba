"""Local run records: `kfops runs list|get` without a Kubeflow endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kfops.cli import main
from kfops.config import load_config
from kfops.runners import run_records
from kfops.runners.run_records import end_record, find_record, outcome, process_start, read_records, start_record


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"data_dir={tmp_path / 'state'}", "dataset.start=2013-01-01",
                              "dataset.end=2013-01-31"], environ={})


def record_for(cfg, stem: str, pipeline: str = "training"):
    log = cfg.data_dir / "logs" / f"{stem}.log"
    return start_record(cfg, pipeline, log, "subprocess")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_run_is_recorded_as_running_then_as_it_ended(cfg, tmp_path):
    path = record_for(cfg, "training-20260101-000000-000001-1-aaaaaa")
    (running,) = read_records(cfg)
    assert running["state"] == "running" and running["window"] == ["2013-01-01", "2013-01-31"]
    assert running["host"] == socket.gethostname() and running["ended_at"] is None
    verdict = tmp_path / "verdict.json"
    verdict.write_text(json.dumps({"blessed": False, "verdict": {"reasons": ["FAIL floor:roc_auc: roc_auc 0.6, needs >= 0.65",
                                                                             "PASS x: y"]}}))
    end_record(path, "succeeded", seconds=12.34, run_dir=tmp_path / "kfops-training-1",
               outputs={"evaluate": {"verdict": str(verdict)}})
    (done,) = read_records(cfg)
    assert done["state"] == "succeeded" and done["seconds"] == 12.3 and done["run_name"] == "kfops-training-1"
    assert done["decision"] == {"blessed": False, "failed_checks": ["floor:roc_auc: roc_auc 0.6, needs >= 0.65"]}
    assert outcome(done) == "not blessed: floor:roc_auc: roc_auc 0.6, needs >= 0.65"


def test_a_record_left_running_by_a_dead_process_reads_as_abandoned(cfg):
    path = record_for(cfg, "retraining-20260101-000000-000001-1-bbbbbb", "retraining")
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "pid": dead_pid()}))
    (abandoned,) = read_records(cfg)
    assert abandoned["state"] == "abandoned" and "ended without recording" in outcome(abandoned)
    path.write_text(json.dumps({**record, "host": "another-machine", "pid": dead_pid()}))
    assert read_records(cfg)[0]["state"] == "running"  # another host's process cannot be checked from here


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from Linux's /proc")
def test_a_record_whose_pid_another_process_took_reads_as_abandoned(cfg):
    """A run killed long ago whose pid is reused (after a restart, say) read as running for ever."""
    path = record_for(cfg, "training-20260101-000000-000001-1-dddddd")
    record = json.loads(path.read_text())
    assert record["pid"] == os.getpid() and record["pid_started"] == process_start(os.getpid())
    assert read_records(cfg)[0]["state"] == "running"  # the same process: still running
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live process that is not the run: the recorded start is this process's, not the sleeper's
        path.write_text(json.dumps({**record, "pid": sleeper.pid}))
        (reused,) = read_records(cfg)
        assert reused["state"] == "abandoned" and "ended without recording" in outcome(reused)
    finally:
        sleeper.kill()
        sleeper.wait()
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "pid_started"}))
    assert read_records(cfg)[0]["state"] == "running"  # a record from before start times were kept


def test_a_run_is_found_by_id_run_name_or_a_prefix_only_one_has(cfg, tmp_path):
    first = record_for(cfg, "training-20260101-000000-000001-1-aaaaaa")
    second = record_for(cfg, "training-20260102-000000-000001-1-cccccc")
    end_record(first, "succeeded", seconds=1, run_dir=tmp_path / "kfops-training-2026-01-01")
    end_record(second, "failed", seconds=1, error="pipeline 'training' failed in task 'train': boom")
    assert find_record(cfg, "kfops-training-2026-01-01")["id"] == first.stem
    assert find_record(cfg, "training-20260102")["id"] == second.stem
    assert find_record(cfg, "training-2026") is None  # two runs start so: name one
    assert outcome(find_record(cfg, second.stem)) == "pipeline 'training' failed in task 'train': boom"


def test_outcomes_of_a_retraining_run(cfg):
    decided = {"state": "succeeded", "decision": {"retrain": True, "code": "challenger", "blessed": True,
                                                  "failed_checks": [], "registered_version": "3"}}
    assert outcome(decided) == "retrain (challenger), blessed, registered v3"
    assert outcome({"state": "succeeded", "decision": {"retrain": False, "code": "no_signal"}}) == "no retrain (no_signal)"


def test_kfops_runs_reads_the_local_records_only_without_an_endpoint(cfg, capsys, monkeypatch):
    record_for(cfg, "training-20260101-000000-000001-1-aaaaaa")
    options = ["--set", f"data_dir={cfg.data_dir}"]
    main(["runs", "list", "--json", *options])
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["id"] == "training-20260101-000000-000001-1-aaaaaa" and listed["state"] == "running"

    from kfops.adapters import kfp_api

    asked = []

    def connect(endpoint):
        asked.append(endpoint.host)
        raise SystemExit(0)

    monkeypatch.setattr(kfp_api, "connect", connect)
    with pytest.raises(SystemExit):
        main(["runs", "list", *options, "--set", "cluster.kfp_host=http://kfp.example:8888"])
    assert asked == ["http://kfp.example:8888"]  # a configured endpoint is asked, not the local records


def test_retention_lets_old_records_go_with_their_logs(cfg):
    import os
    import time

    from kfops.runners.retention import prune_local_state

    old = record_for(cfg, "training-20250101-000000-000001-1-aaaaaa")
    stamp = time.time() - 200 * 86400
    os.utime(old, (stamp, stamp))
    new = record_for(cfg, "training-20260101-000000-000001-1-bbbbbb")
    assert prune_local_state(cfg).run_files == [old]
    assert [r["id"] for r in read_records(cfg)] == [new.stem]


def test_a_record_that_cannot_be_written_at_the_end_does_not_fail_the_run(cfg):
    path = record_for(cfg, "training-20260101-000000-000001-1-aaaaaa")
    path.unlink()
    end_record(path, "succeeded", seconds=1)  # no exception: the run's own result stands
    assert read_records(cfg) == []
    assert run_records.records_dir(cfg) == cfg.data_dir / "runs"
