"""A compiled pipeline runs where a Kubeflow pod runs it: another folder, another user, no repository.

The training pipeline is compiled in a throwaway copy of the project, which is then deleted. Its
tasks run under kfp.local's own orchestration (the same `python -m kfp.dsl.executor_main ...`
command a pod runs), but each executor is started as an unprivileged user, in a read-only folder
holding only what the image's WORKDIR holds (expectations/, feature_repo/, kfops.yaml), with a
fresh HOME and TMPDIR and no KFOPS_* variable: what a pod of the CPU image sees. The tracking URI
and Feast registry are the defaults (SQLite files under data_dir): every task here runs on one
machine as one user, so they share the scratch data_dir, which a cluster's pods would not.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from kfops.adapters import kfp_local
from kfops.config import KfopsConfig, load_config
from tests.conftest import REPO_ROOT, need

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOBODY = 65534
IMAGE_FILES = ("expectations", "feature_repo", "kfops.yaml")  # what the Dockerfile copies beside the code
COMPILE_FILES = (*IMAGE_FILES, "pipelines", "components")
WINDOW = ["dataset.start=2013-01-01", "dataset.end=2013-01-14"]
# Small and never blessed: register and deploy (a server) are for the e2e test; this one is about paths.
QUICK = ["train.xgboost.n_estimators=40", "evaluate.gate.min_roc_auc=1.01", "evaluate.behavioural_checks=false"]
# The exit handler runs last, as a pod of its own, however the others ended.
EXPECTED_TASKS = ("ingest", "validate", "featurize", "train", "evaluate", "training_end")


def unprivileged_prefix() -> list[str]:
    """The command prefix that runs a process as an unprivileged user: nobody when root, else oneself.

    Where this interpreter lives in a folder nobody may enter (a pyenv build under /root), nobody
    gets CAP_DAC_READ_SEARCH and nothing else: it may read any file, and still write only where
    its uid may, which is what this test is about.
    """
    if os.geteuid() != 0:
        return []
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed: cannot drop to an unprivileged user")
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    reading = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    for prefix in ([*drop, "--"], [*drop, *reading, "--"]):
        # Through sh, as kfp's command starts the interpreter.
        probe = subprocess.run([*prefix, "sh", "-c", f'exec "{sys.executable}" -c "import kfops.config, kfp"'],
                               cwd="/", env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return prefix
    need(False, f"user {NOBODY} cannot run {sys.executable} with kfops: {probe.stderr[-300:]}")
    return []


def pod_environment(home: Path, tmp: Path) -> dict[str, str]:
    """A pod's environment: no KFOPS_* variable (no project folder, no overrides), its own HOME and TMPDIR."""
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "TMPDIR": str(tmp), "PYTHONPATH": python_path, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


def copy_project(target: Path, names: tuple[str, ...]) -> None:
    target.mkdir(parents=True)
    for name in names:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)


def give_to(path: Path, uid: int) -> None:
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in (*dirs, *files))]:
            os.chown(name, uid, uid)


def read_only(path: Path) -> None:
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, 0o555)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)


def listing(path: Path) -> dict[str, float]:
    return {str(p.relative_to(path)): p.stat().st_mtime for p in path.rglob("*")}


@pytest.fixture
def pod():
    """The folders a pod would have: the image's WORKDIR (read-only), a writable HOME and TMPDIR."""
    prefix = unprivileged_prefix()
    # Not under pytest's tmp_path, whose parents only their owner may enter.
    with tempfile.TemporaryDirectory(prefix="kfops-pod-") as folder:
        base = Path(folder)
        os.chmod(base, 0o755)
        workdir, home, tmp, root = (base / name for name in ("workdir", "home", "tmp", "pipeline_root"))
        copy_project(workdir, IMAGE_FILES)
        for writable in (home, tmp, root):
            writable.mkdir()
            if prefix:
                give_to(writable, NOBODY)
        read_only(workdir)
        env = pod_environment(home, tmp)
        try:
            probe = subprocess.run([*prefix, sys.executable, "-c", "import kfops.config, kfp, feast, mlflow"],
                                   cwd=workdir, env=env, capture_output=True, text=True, check=False)
            need(probe.returncode == 0,
                 f"the unprivileged user cannot import kfops and its SDKs: {probe.stderr[-500:]}")
            write = subprocess.run([*prefix, "touch", str(workdir / "probe")], capture_output=True, check=False)
            need(write.returncode != 0, "the user running the tasks can write the read-only working folder")
            yield {"prefix": prefix, "workdir": workdir, "home": home, "tmp": tmp, "pipeline_root": root, "env": env}
        finally:
            for sub, _dirs, _files in os.walk(workdir):
                os.chmod(sub, 0o755)  # so it can be removed


def compile_elsewhere(tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """Compile the training pipeline in a copy of the project, delete the copy, return the YAML and the copy's path."""
    project = tmp_path / "compiling-machine" / "project"
    copy_project(project, COMPILE_FILES)
    monkeypatch.setenv(kfp_local.PROJECT_ENV, str(project))
    monkeypatch.chdir(project)
    cfg = load_config(project / "kfops.yaml", [*WINDOW, *QUICK], environ={})
    compiled = kfp_local.compile_pipeline(cfg, "training", project / ".kfops" / "compiled" / "training.yaml")
    text = compiled.read_text()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(kfp_local.PROJECT_ENV)
    shutil.rmtree(project.parent)
    return text, project


def test_compiled_pipeline_carries_no_path_of_the_compiling_machine(tmp_path, monkeypatch):
    text, project = compile_elsewhere(tmp_path, monkeypatch)
    assert str(project) not in text and str(project.resolve()) not in text
    assert str(tmp_path) not in text
    spec = next(yaml.safe_load_all(text))
    embedded = KfopsConfig.from_json(spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"])
    assert embedded.data_dir == Path(".kfops")
    assert embedded.validation.suites_dir == Path("expectations")
    assert embedded.features.repo_path == Path("feature_repo")


def test_each_executor_runs_as_a_pod_would(tmp_path, monkeypatch, pod):
    from kfp import components, local
    from kfp.local import subprocess_task_handler

    text, project = compile_elsewhere(tmp_path, monkeypatch)
    assert not project.exists()
    compiled = tmp_path / "training.yaml"
    compiled.write_text(text)
    before = listing(pod["workdir"])
    logs: list[str] = []
    ran: list[str] = []

    def run_as_pod(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        # kfp.local's command for the task, unchanged; started as the pod's user, in the pod's folder.
        task = full_command[full_command.index("--function_to_execute") + 1]
        ran.append(task)
        env = {**pod["env"], **(env_vars or {})}
        done = subprocess.run([*pod["prefix"], *full_command], cwd=pod["workdir"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        logs.append(f"--- {task} (exit {done.returncode})\n{done.stdout}")
        return done.returncode

    monkeypatch.setattr(subprocess_task_handler, "run_local_subprocess", run_as_pod)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pod["pipeline_root"]),
               raise_on_error=True)
    try:
        components.load_component_from_file(str(compiled))()
    except RuntimeError as err:
        pytest.fail(f"a task failed as a pod would run it: {err}\n" + "\n".join(logs)[-8000:])

    assert ran == list(EXPECTED_TASKS), "\n".join(logs)[-4000:]  # not blessed: no register, no deploy
    # Nothing was written in the image's code folder; state went to the pod's scratch under TMPDIR.
    assert listing(pod["workdir"]) == before
    scratch = pod["tmp"] / f"kfops-{NOBODY if pod['prefix'] else os.geteuid()}" / ".kfops"
    assert (scratch / "mlflow" / "mlflow.db").is_file(), sorted(str(p) for p in pod["tmp"].rglob("*"))[:40]
    assert (scratch / "validation" / "raw.last.json").is_file()


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def where(config: str) -> str:
    import json

    from kfops.steps.common import step_config

    cfg = step_config(config)
    return json.dumps({"data_dir": str(cfg.data_dir), "suites_dir": str(cfg.validation.suites_dir),
                       "repo_path": str(cfg.features.repo_path)})


def test_a_local_run_resolves_paths_against_the_config_folder_from_anywhere(tmp_path, monkeypatch):
    """`kfops run --config /path/to/kfops.yaml` from another folder: the tasks see the paths load_config saw."""
    from kfops.runners import local

    def compile_where(cfg, name, output):
        from kfp import compiler

        @dsl.pipeline(name="paths-seen-by-a-task")
        def where_pipeline(config: str = cfg.portable().to_json()):
            where(config=config)

        output.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(where_pipeline, str(output))
        return output

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "kfops.yaml").write_text("data_dir: state\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv(kfp_local.PROJECT_ENV, raising=False)
    monkeypatch.setattr(local, "compile_pipeline", compile_where)
    cfg = load_config(project / "kfops.yaml", environ={})
    run = local.run_locally(cfg, "where", on_event=lambda line: None)
    seen = json.loads(run.outputs["where"]["Output"])
    assert seen == {"data_dir": str(project / "state"), "suites_dir": str(project / "expectations"),
                    "repo_path": str(project / "feature_repo")}
    assert str(project) not in run.compiled.read_text()
    assert run.compiled.is_relative_to(project / "state") and not any(elsewhere.iterdir())
    assert kfp_local.PROJECT_ENV not in os.environ  # set for the run's tasks only
