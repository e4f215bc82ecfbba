"""Local retention (`retention`, `kfops prune`): old runs' folders, logs and YAML go, the newest
runs, a running run and everything that is not a run's stay."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time

import pytest

from kfops.cli import main
from kfops.config import load_config
from kfops.runners import retention
from kfops.runners.retention import prune_local_state

NOW = time.time()
DAY = 86400.0


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"data_dir={tmp_path / 'state'}"], environ={})


def age(path, days: float) -> None:
    """Set a path and everything under it to ``days`` old."""
    stamp = NOW - days * DAY
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in (*dirnames, *filenames):
            os.utime(os.path.join(dirpath, name), (stamp, stamp))
    os.utime(path, (stamp, stamp))


def make_run(cfg, name: str, days: float, root=None):
    folder = (root or cfg.pipeline_root) / name
    (folder / "featurize" / "feast_sources").mkdir(parents=True)
    (folder / "featurize" / "feast_sources" / "weather.parquet").write_bytes(b"x" * 1000)
    (folder / "train").mkdir()
    (folder / "train" / "executor_output.json").write_text("{}")
    age(folder, days)
    return folder


def make_file(path, days: float, text: str = "x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    age(path, days)
    return path


def test_runs_past_run_days_go_except_the_newest_and_nothing_else_is_touched(cfg):
    old = [make_run(cfg, f"kfops-training-old-{i}", days=100 + i) for i in range(5)]
    recent = make_run(cfg, "kfops-training-recent", days=10)
    old_log = make_file(cfg.data_dir / "logs" / "training-20260101-010101-000001-42-abcdef.log", days=120)
    old_yaml = make_file(cfg.data_dir / "compiled" / "training-20260101-010101-000001-42-abcdef.yaml", days=120)
    new_log = make_file(cfg.data_dir / "logs" / "training-20261201-010101-000001-42-abcdef.log", days=5)
    latest_yaml = make_file(cfg.data_dir / "compiled" / "training.yaml", days=120)  # the latest compile: kept
    old_scratch = make_run(cfg, "kfops-retraining-old", days=95, root=cfg.data_dir / "work" / "drift")
    new_scratch = make_file(cfg.data_dir / "work" / "train" / "kfops-training-recent" / "ckpt.pt", days=3).parent
    others = [make_file(cfg.data_dir / "mlflow" / "mlflow.db", days=400),
              make_file(cfg.data_dir / "drift" / "reference" / "a.parquet", days=400),
              make_file(cfg.data_dir / "logs" / "notes.log", days=400)]  # not a run's log

    pruned = prune_local_state(cfg, now=NOW)

    # The three newest folders stay whatever their age: the recent one and the two youngest old ones.
    assert sorted(pruned.runs) == sorted(old[2:])
    assert all(not p.exists() for p in old[2:]) and all(p.is_dir() for p in (recent, *old[:2]))
    assert pruned.run_files == [old_log, old_yaml] and not old_log.exists() and not old_yaml.exists()
    assert pruned.work == [old_scratch] and not old_scratch.exists() and new_scratch.is_dir()
    assert new_log.is_file() and latest_yaml.is_file() and all(p.is_file() for p in others)
    assert pruned.bytes == 4 * 1002 + 2 and pruned.errors == []
    assert pruned.summary() == "3 run folder(s), 1 step scratch folder(s), 2 run log/YAML/record file(s) (0.0 MB)"
    assert not list(cfg.pipeline_root.glob(".removing-*"))
    assert prune_local_state(cfg, now=NOW).paths == []  # nothing left to do


def test_a_run_still_writing_is_kept_however_old_its_folder(cfg):
    for i in range(3):
        make_run(cfg, f"kfops-training-newer-{i}", days=1)
    running = make_run(cfg, "kfops-training-long", days=200)
    (running / "evaluate").mkdir()  # a task that just started
    (running / "evaluate" / "progress.txt").write_text("step 7")
    assert prune_local_state(cfg, now=NOW).runs == []
    age(running, 200)
    (running / "train" / "executor_output.json").write_text("{}")  # deep inside: the folder's own time stays old
    assert running.stat().st_mtime < NOW - 100 * DAY
    assert prune_local_state(cfg, now=NOW).runs == []
    age(running, 200)
    assert prune_local_state(cfg, now=NOW).runs == [running]


def test_a_dry_run_lists_the_same_and_removes_nothing(cfg):
    folders = [make_run(cfg, f"kfops-training-{i}", days=100 + i) for i in range(4)]
    listed = prune_local_state(cfg, now=NOW, dry_run=True)
    assert listed.runs == [folders[3]] and all(p.is_dir() for p in folders)
    assert prune_local_state(cfg, now=NOW).runs == listed.runs and not folders[3].exists()


def test_run_days_none_keeps_every_run_and_older_than_overrides_it(tmp_path):
    cfg = load_config(None, [f"data_dir={tmp_path}", "retention.run_days=null"], environ={})
    folders = [make_run(cfg, f"r{i}", days=1000 + i) for i in range(5)]
    assert prune_local_state(cfg, now=NOW).paths == []
    assert sorted(prune_local_state(cfg, now=NOW, run_days=500).runs) == sorted(folders[3:])


def test_inference_log_days_drop_whole_old_days_only_when_set(cfg, tmp_path):
    root = cfg.inference_log_location
    today = dt.datetime.fromtimestamp(NOW, dt.UTC).date()
    days = {n: make_file(root / f"date={today - dt.timedelta(days=n)}" / "part-1.parquet", days=0) for n in (0, 7, 8, 30)}
    stray = make_file(root / "date=not-a-day" / "part-1.parquet", days=0)
    assert prune_local_state(cfg, now=NOW).log_days == []  # unset: kept for ever
    week = load_config(None, [f"data_dir={cfg.data_dir}", "retention.inference_log_days=7"], environ={})
    pruned = prune_local_state(week, now=NOW)
    assert pruned.log_days == [days[30].parent, days[8].parent]  # today and the 7 days before it stay
    assert days[0].is_file() and days[7].is_file() and stray.is_file()
    on_s3 = load_config(None, [f"data_dir={cfg.data_dir}", "retention.inference_log_days=1",
                               "serving.inference_log_store=s3://logs/p"], environ={})
    assert prune_local_state(on_s3, now=NOW).log_days == []  # the bucket's lifecycle rules' job


def test_two_prunes_at_once_remove_each_folder_once_without_errors(cfg):
    folders = [make_run(cfg, f"kfops-training-{i}", days=100 + i) for i in range(23)]
    results = []
    threads = [threading.Thread(target=lambda: results.append(prune_local_state(cfg, now=NOW))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    removed = [p for result in results for p in result.runs]
    assert sorted(removed) == sorted(folders[3:]) and all(r.errors == [] for r in results)
    assert sorted(p.name for p in cfg.pipeline_root.iterdir()) == sorted(f.name for f in folders[:3])


def test_a_folder_that_cannot_be_deleted_is_reported_and_finished_by_the_next_prune(cfg, monkeypatch):
    folders = [make_run(cfg, f"kfops-training-{i}", days=100 + i) for i in range(4)]
    real_delete = retention._delete

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(retention, "_delete", refuse)
    pruned = prune_local_state(cfg, now=NOW)
    assert pruned.runs == [] and len(pruned.errors) == 1 and "Permission denied" in pruned.errors[0]
    assert not folders[3].exists() and len(list(cfg.pipeline_root.glob(".removing-*"))) == 1  # renamed, not deleted
    monkeypatch.setattr(retention, "_delete", real_delete)
    assert prune_local_state(cfg, now=NOW).errors == []
    assert not list(cfg.pipeline_root.glob(".removing-*"))


def test_kfops_prune_lists_then_removes(cfg, capsys):
    folders = [make_run(cfg, f"kfops-training-{i}", days=40 + i) for i in range(4)]
    options = ["--set", f"data_dir={cfg.data_dir}"]
    assert main(["prune", "--dry-run", *options]) in (0, None)
    out = capsys.readouterr().out
    assert "nothing to remove" in out  # 40 days: within the default 90
    assert main(["prune", "--dry-run", "--older-than", "30", *options]) in (0, None)
    out = capsys.readouterr().out
    assert f"would remove  {folders[3]}" in out and "would remove 1 run folder(s)" in out and folders[3].is_dir()
    assert main(["prune", "--older-than", "30", *options]) in (0, None)
    assert f"removed  {folders[3]}" in capsys.readouterr().out and not folders[3].exists()


def test_lineage_says_where_a_removed_runs_validation_report_is_kept(cfg, monkeypatch, capsys):
    from kfops.adapters import mlflow_registry

    report = make_file(cfg.pipeline_root / "kfops-training-1" / "validate" / "report", days=0)
    info = {"model": "m", "version": "1", "run_id": "abc123", "validation_report": str(report)}
    monkeypatch.setattr(mlflow_registry, "lineage", lambda cfg, version: dict(info))
    options = ["--set", f"data_dir={cfg.data_dir}"]
    main(["lineage", "1", *options])
    assert f"validation_report  {report}\n" in capsys.readouterr().out
    report.unlink()
    main(["lineage", "1", *options])
    assert (f"validation_report  {report} (removed with its run folder; MLflow keeps "
            "runs:/abc123/validation/report)") in capsys.readouterr().out
