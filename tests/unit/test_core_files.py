"""kfops.core.files: atomic writes, JSON-safe values and ``module:function`` imports."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import stat
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfops.core.files import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    import_callable,
    json_safe,
)
from kfops.errors import ConfigError


def write_with_output(path: Path, text: str, **kwargs) -> Path:
    with atomic_output(path, **kwargs) as temporary:
        temporary.write_text(text)
    return path


WRITERS = {"atomic_write_text": atomic_write_text, "atomic_output": write_with_output}


@pytest.fixture(params=sorted(WRITERS))
def write(request):
    return WRITERS[request.param]


def test_the_new_content_replaces_the_old_and_nothing_else_is_left(write, tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    assert write(target, "new") == target
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_missing_folders_are_created(write, tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    write(target, "x")
    assert target.read_text() == "x"


def test_the_temporary_file_is_fresh_and_in_the_targets_folder(write, tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), real_replace(src, dst)))
    target = tmp_path / "out.txt"
    write(target, "one")
    write(target, "two")
    (first, dst1), (second, dst2) = renames
    assert dst1 == dst2 == target
    assert first.parent == second.parent == tmp_path  # same file system: the rename is atomic
    assert first.name.startswith(".out.txt.") and first.name.endswith(".tmp")
    assert first != second  # a fresh, unpredictable name each time, never <name>.tmp


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old")

    def broken(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "scores.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="half way"), atomic_output(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("half way")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]


def test_a_writer_that_removes_its_file_still_fails_cleanly(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(FileNotFoundError), atomic_output(target) as temporary:
        temporary.unlink()
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_mode_is_set_whatever_the_umask(write, tmp_path):
    shared, private = tmp_path / "shared.txt", tmp_path / "private.txt"
    previous = os.umask(0o077)
    try:
        write(shared, "x")
    finally:
        os.umask(previous)
    write(private, "x", mode=0o600)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_a_reader_sees_the_old_or_the_new_content_never_a_mix(tmp_path):
    target = tmp_path / "big.bin"
    versions = [b"a" * 1_000_000, b"b" * 1_500_000]
    atomic_write_bytes(target, versions[0])
    seen, done = set(), threading.Event()

    def read() -> None:
        while not done.is_set():
            data = target.read_bytes()
            seen.add((data[:1], len(data), data.count(data[:1])))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(40):
            atomic_write_bytes(target, versions[i % 2])
    finally:
        done.set()
        reader.join()
    assert seen <= {(b"a", 1_000_000, 1_000_000), (b"b", 1_500_000, 1_500_000)}


@pytest.mark.parametrize("planted", [".{name}.tmp", "{name}.tmp", "{name}.partial"])
def test_a_symlink_at_a_predictable_temporary_name_is_left_alone(write, tmp_path, planted):
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    folder = tmp_path / "out"
    folder.mkdir()
    link = folder / planted.format(name="model.pt")
    link.symlink_to(victim)
    write(folder / "model.pt", "payload")
    assert victim.read_text() == "precious"
    assert link.is_symlink()
    assert (folder / "model.pt").read_text() == "payload"


def test_a_symlink_planted_at_the_very_name_drawn_is_skipped(write, tmp_path, monkeypatch):
    # Force the first random name mkstemp draws to be one an attacker pre-created as a symlink:
    # the exclusive create refuses it and mkstemp draws again, so the link is never followed.
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".model.pt.guessed.tmp").symlink_to(victim)
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: iter(["guessed", "fresh"]))
    write(folder / "model.pt", "payload")
    assert victim.read_text() == "precious"
    assert (folder / ".model.pt.guessed.tmp").is_symlink()
    assert (folder / "model.pt").read_text() == "payload"


# --- json_safe ----------------------------------------------------------------------------------


def test_non_finite_numbers_and_missing_values_become_null():
    values = [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("inf"), pd.NaT, pd.NA, None]
    assert json_safe(values) == [None] * len(values)
    assert json_safe(np.array([1.0, np.nan, np.inf])) == [1.0, None, None]


def test_numpy_scalars_and_arrays_become_python_numbers():
    safe = json_safe({"i": np.int64(3), "f": np.float32(1.5), "b": np.bool_(True), "a": np.arange(3),
                      "m": np.array([[1, 2], [3, 4]], dtype=np.int32)})
    assert safe == {"i": 3, "f": 1.5, "b": True, "a": [0, 1, 2], "m": [[1, 2], [3, 4]]}
    assert type(safe["i"]) is int and type(safe["f"]) is float and type(safe["b"]) is bool


def test_timestamps_and_dates_become_iso_strings():
    stamp = pd.Timestamp("2024-05-01 10:15", tz="UTC")
    assert json_safe(stamp) == "2024-05-01T10:15:00+00:00"
    assert json_safe(dt.date(2024, 5, 1)) == "2024-05-01"
    assert json_safe(dt.datetime(2024, 5, 1, 10, 15)) == "2024-05-01T10:15:00"


def test_containers_keys_and_other_values():
    safe = json_safe({1: {"b", "a"}, "t": (1, 2.5), "p": Path("/x/y"), "s": "text", "ok": False, "o": object})
    assert safe == {"1": ["a", "b"], "t": [1, 2.5], "p": "/x/y", "s": "text", "ok": False, "o": str(object)}


def test_the_result_is_strict_json():
    payload = {"psi": np.float64("nan"), "when": pd.Timestamp("2024-01-01"), "n": np.int64(7), "inf": math.inf}
    assert json.loads(json.dumps(json_safe(payload), allow_nan=False)) == {
        "psi": None, "when": "2024-01-01T00:00:00", "n": 7, "inf": None}


# --- import_callable ----------------------------------------------------------------------------


def test_a_module_in_the_search_path_loads_by_path_without_touching_sys(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "loaders.py").write_text("def load(x):\n    return x * 2\n")
    before_path, before_modules = list(sys.path), set(sys.modules)
    assert import_callable("pkg.loaders:load", search_path=tmp_path)(21) == 42
    assert sys.path == before_path
    assert not [m for m in set(sys.modules) - before_modules if "loaders" in m]


def test_without_the_file_it_imports_the_module_as_usual(tmp_path):
    assert import_callable("json:dumps", search_path=tmp_path) is json.dumps
    assert import_callable("json:loads") is json.loads


def test_two_projects_whose_plug_ins_share_a_name_each_get_their_own(tmp_path, monkeypatch):
    """One process, two `kfops init` projects (both 'shop_data'): the second project's featurize
    got the first project's module from sys.modules and built the wrong entity frame (CI)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "shop_data_twin", raising=False)
    for name, label in (("a", "returned"), ("b", "big")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "shop_data_twin.py").write_text(f"def label():\n    return {label!r}\n")
    assert import_callable("shop_data_twin:label", project_dir=tmp_path / "a")() == "returned"
    assert import_callable("shop_data_twin:label", project_dir=tmp_path / "b")() == "big"
    assert import_callable("shop_data_twin:label", project_dir=tmp_path / "a")() == "returned"
    assert import_callable("shop_data_twin:label", project_dir=tmp_path / "a") is \
        import_callable("shop_data_twin:label", project_dir=tmp_path / "a")  # cached while the project stays
    import kfops.config

    assert import_callable("kfops.config:load_config", project_dir=tmp_path / "a") is kfops.config.load_config
    sys.modules.pop("shop_data_twin", None)


@pytest.mark.parametrize("spec", ["no_colon", ":f", "module:"])
def test_a_malformed_spec_is_refused(spec):
    with pytest.raises(ConfigError, match="module:function"):
        import_callable(spec)


def test_import_errors_and_missing_functions_are_config_errors(tmp_path):
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    (tmp_path / "empty.py").write_text("VALUE = 1\n")
    with pytest.raises(ConfigError, match="cannot import 'broken'") as err:
        import_callable("broken:f", search_path=tmp_path)
    assert isinstance(err.value.__cause__, ImportError)
    with pytest.raises(ConfigError, match="has no function 'VALUE'") as err:
        import_callable("empty:VALUE", search_path=tmp_path)
    assert err.value.__cause__ is None


def test_file_lock_excludes_other_processes_and_frees_on_kill(tmp_path):
    import signal
    import subprocess
    import sys

    from kfops.core.files import LockTimeout, file_lock

    lock = tmp_path / "store.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from kfops.core.files import file_lock\n"
         f"with file_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout, match="locked by another process"), file_lock(lock, timeout_s=0.2):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with file_lock(lock, timeout_s=5), file_lock(lock, timeout_s=0.1):  # the kernel freed it; re-entrant here
        assert lock.is_file()
