"""Golden tests: the compiled pipeline and components match checked-in snapshots (ignoring sdkVersion).

Refresh after an intended change with `make golden`.
"""

import os
import re
from pathlib import Path

import pytest
import yaml

from kfops.adapters.kfp_local import COMPONENTS, compile_components, compile_pipeline
from kfops.config import KfopsConfig
from tests.support.example import example_config

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
UPDATE = os.environ.get("KFOPS_UPDATE_GOLDEN") == "1"


def normalise(text: str) -> str:
    return re.sub(r"sdkVersion: .*", "sdkVersion: <ignored>", text)


def check_golden(produced: Path, golden: Path) -> None:
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(produced.read_text())
    assert golden.is_file(), f"{golden} is missing: run `make golden`"
    assert normalise(produced.read_text()) == normalise(golden.read_text()), (
        f"{produced.name} differs from {golden}; if the change is intended run `make golden`"
    )


def golden_config() -> KfopsConfig:
    # The flights example (kfops.yaml's values; kfops' defaults name no dataset). Not resolved:
    # relative paths keep the snapshot independent of where the repo is checked out.
    return example_config()


def test_training_pipeline_matches_golden(tmp_path):
    produced = compile_pipeline(golden_config(), "training", tmp_path / "training.yaml")
    check_golden(produced, GOLDEN / "training.yaml")


def test_component_files_are_current(tmp_path):
    compile_components(tmp_path)
    for name in COMPONENTS:
        produced = tmp_path / name / "component.yaml"
        checked_in = REPO / "components" / name / "component.yaml"
        if UPDATE:
            checked_in.write_text(produced.read_text())
        assert normalise(produced.read_text()) == normalise(checked_in.read_text()), (
            f"components/{name}/component.yaml is stale: run `make golden`"
        )


def test_compiled_yaml_reloads_with_the_expected_dag(tmp_path):
    from kfp import components

    produced = compile_pipeline(golden_config(), "training", tmp_path / "training.yaml")
    loaded = components.load_component_from_file(str(produced))
    assert loaded.name == "kfops-training"
    spec = yaml.safe_load(produced.read_text())
    # Every task runs inside the exit handler that tells how the run ended (training-end).
    top = spec["root"]["dag"]["tasks"]
    assert set(top) == {"exit-handler-1", "training-end"}
    assert top["training-end"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert top["training-end"]["dependentTasks"] == ["exit-handler-1"]
    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    (condition,) = [name for name in tasks if name.startswith("condition-")]  # KFP numbers it
    assert {"ingest", "validate", "featurize", "train", "evaluate"} <= set(tasks)
    branch = spec["components"][f"comp-{condition}"]["dag"]["tasks"]
    assert set(branch) == {"register", "deploy"}
    assert "evaluate-Output" in tasks[condition]["triggerPolicy"]["condition"]
    assert tasks["featurize"]["dependentTasks"] == ["ingest", "validate"]
    # Config is baked in as the default of the `config` parameter: the YAML alone reproduces the run.
    default = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert KfopsConfig.from_json(default) == golden_config()


def test_component_docstrings_document_every_input_and_output():
    import importlib

    for name in COMPONENTS:
        component = getattr(importlib.import_module(f"components.{name}.component"), name)
        doc = component.python_func.__doc__
        params = [p for p in component.python_func.__code__.co_varnames[: component.python_func.__code__.co_argcount]]
        for param in params:
            assert f"{param}:" in doc, f"components/{name}: '{param}' is not documented in the docstring"


@pytest.mark.parametrize("trainer", ["xgboost", "torch"])
def test_config_changes_reach_the_compiled_yaml(tmp_path, trainer):
    cfg = example_config(train={"trainer": trainer})
    produced = compile_pipeline(cfg, "training", tmp_path / "t.yaml")
    default = yaml.safe_load(produced.read_text())["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert KfopsConfig.from_json(default).train.trainer == trainer


def test_compiled_yaml_holds_no_path_of_the_compiling_machine(tmp_path):
    from kfops.config import load_config

    cfg = load_config(REPO / "kfops.yaml", environ={})  # resolved: its paths are absolute here
    assert cfg.validation.suites_dir.is_absolute()
    text = compile_pipeline(cfg, "training", tmp_path / "training.yaml").read_text()
    assert str(REPO) not in text
    default = next(yaml.safe_load_all(text))["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    embedded = KfopsConfig.from_json(default)
    assert embedded == cfg.portable()
    assert embedded.validation.suites_dir == Path("expectations") and embedded.data_dir == Path(".kfops")


def _compile_in_a_deleted_copy(tmp_path: Path, monkeypatch) -> None:
    """Compile the training pipeline in a copy of the project, then delete the copy (as the
    portable-executor test does)."""
    import shutil

    from kfops.adapters import kfp_local

    copy = tmp_path / "copy"
    for name in kfp_local.PROJECT_PACKAGES:
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("KFOPS_PROJECT_DIR", str(copy))
    kfp_local.compile_pipeline(example_config(), "training", tmp_path / "from-copy.yaml")
    shutil.rmtree(copy)
    monkeypatch.delenv("KFOPS_PROJECT_DIR")


def test_a_pipeline_imported_from_another_project_copy_does_not_shadow_this_one(tmp_path, monkeypatch):
    """Python caches `pipelines` with the folder it came from: compiling in a copy of the project
    that is then deleted must not break a later compile here."""
    from kfops.adapters import kfp_local

    _compile_in_a_deleted_copy(tmp_path, monkeypatch)
    monkeypatch.chdir(REPO)
    assert kfp_local.compile_pipeline(example_config(), "retraining", tmp_path / "here.yaml").is_file()


def test_compiling_in_a_deleted_copy_leaves_no_package_of_it_behind(tmp_path, monkeypatch):
    """After a compile in a copy that was then deleted, a plain `import components.drift...` (a
    test's, a notebook's) met the copy's cached `components` and failed: No module named
    'components.drift' (CI, random order)."""
    import importlib
    import sys

    from kfops.adapters import kfp_local

    for name in [n for n in sys.modules if n.split(".")[0] in kfp_local.PROJECT_PACKAGES]:
        monkeypatch.delitem(sys.modules, name)  # this test's own start; restored after it
    _compile_in_a_deleted_copy(tmp_path, monkeypatch)
    assert not [n for n in sys.modules if n.split(".")[0] in kfp_local.PROJECT_PACKAGES]
    monkeypatch.syspath_prepend(str(REPO))
    assert importlib.import_module("components.drift.component").__file__.startswith(str(REPO))
