"""kfp.local leaves a temporary folder behind for every task (its command's ``mktemp -d`` holding
the component's source) and a workspace per run; kfops' runner gives the run's tasks their own
``$TMPDIR`` and removes it when the run ends, whether the run passed or failed."""


import os
import tempfile
from pathlib import Path

import pytest
from kfp import compiler, dsl

from kfops.adapters import kfp_local


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def note_where_i_ran(record: str, task: str, fail: bool) -> None:
    import os
    import tempfile
    from pathlib import Path

    here = Path(__file__).resolve().parent  # the mktemp -d folder kfp's command made for this task
    scratch = Path(tempfile.mkdtemp())
    with open(record, "a") as out:
        out.write(f"{task} {here} {scratch} {os.environ.get('TMPDIR', '')}\n")
    if fail:
        raise RuntimeError("this task fails on purpose")


def compile_pipeline(path: Path, record: Path, fail: bool) -> Path:
    @dsl.pipeline(name="tempdirs")
    def pipeline():
        first = note_where_i_ran(record=str(record), task="first", fail=False)
        note_where_i_ran(record=str(record), task="second", fail=fail).after(first)

    compiler.Compiler().compile(pipeline, str(path))
    return path


@pytest.mark.parametrize("preload", [None, ("kfp.dsl.executor",)], ids=["cold", "zygote"])
@pytest.mark.parametrize("fail", [False, True])
def test_a_local_run_leaves_no_temporary_folder_behind(tmp_path, fail, preload):
    record = tmp_path / "record.txt"
    compiled = compile_pipeline(tmp_path / "tempdirs.yaml", record, fail)
    tmpdir_before = os.environ.get("TMPDIR")
    if fail:
        with pytest.raises(RuntimeError):
            kfp_local.run_compiled(compiled, tmp_path / "pipeline_root", preload=preload)
    else:
        kfp_local.run_compiled(compiled, tmp_path / "pipeline_root", preload=preload)
    seen = [line.split() for line in record.read_text().splitlines()]
    assert [task for task, *_ in seen] == ["first", "second"], seen
    task_dirs, scratch_dirs, run_tmp = [s[1] for s in seen], [s[2] for s in seen], {s[3] for s in seen}
    (tmp,) = run_tmp
    assert Path(tmp).name.startswith(kfp_local.RUN_TMP_PREFIX)
    assert Path(tmp).parent == Path(tempfile.gettempdir())
    for folder in (*task_dirs, *scratch_dirs, tmp):
        assert Path(folder).is_relative_to(tmp) and not Path(folder).exists(), folder
    assert os.environ.get("TMPDIR") == tmpdir_before  # changed for the run's tasks only


def test_a_server_started_by_a_run_does_not_inherit_the_runs_tmpdir(monkeypatch):
    from kfops.serving.local.process import server_environment

    monkeypatch.setenv("TMPDIR", str(Path(tempfile.gettempdir()) / f"{kfp_local.RUN_TMP_PREFIX}abc"))
    assert "TMPDIR" not in server_environment()
    monkeypatch.setenv("TMPDIR", "/var/tmp")
    assert server_environment()["TMPDIR"] == "/var/tmp"
