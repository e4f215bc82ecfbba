"""A trainer of your own (`train.trainer: module:Class`): fitted on kfops' encoded splits, saved in the
model folder, loaded only by a config that names it, and checked before anyone uses its answers.

The whole path (kfp.local pipeline, registry, the server answering a raw request, the backtest)
runs in tests/integration/test_plugin_trainer.py.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfops.config import KfopsConfig, TrainConfig
from kfops.core.model import META_FILE, PLUGIN_DIR, FeatureSpec, load_model, predict_proba, read_meta, save_model
from kfops.errors import ConfigError, KfopsError, TrainingError
from kfops.training import train_model

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "tests" / "support" / "logistic_trainer.py"
TRAINER = "logistic_trainer:LogisticTrainer"


def frames(rows: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, FeatureSpec]:
    """A number and a category that both move the label, with missing values in each."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(size=rows), "c": rng.choice(["a", "b", "c"], rows)})
    logit = 2 * frame["x"] + np.where(frame["c"] == "a", 1.5, -0.5)
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame.loc[::7, "x"] = np.nan
    frame.loc[::11, "c"] = None
    train, validation = frame.iloc[: rows * 2 // 3], frame.iloc[rows * 2 // 3:]
    return train, validation, FeatureSpec.fit(train, ["x", "c"], ["c"])


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder holding the example trainer, as a user's beside kfops.yaml; importing it
    writes a marker, so a test can tell whether kfops imported it."""
    folder = tmp_path / "project"
    folder.mkdir()
    marker = tmp_path / "imported"
    source = EXAMPLE.read_text() + f"\n\nfrom pathlib import Path as _P\n_P({str(marker)!r}).touch()\n"
    (folder / "logistic_trainer.py").write_text(source)
    # kfops appends the project folder to sys.path: undo it after, and drop another test's project.
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if not (Path(entry) / "logistic_trainer.py").exists()])
    monkeypatch.delitem(sys.modules, "logistic_trainer", raising=False)
    yield folder, marker
    sys.modules.pop("logistic_trainer", None)


def trained(folder: Path, tmp_path: Path, **params) -> tuple[Path, pd.DataFrame, np.ndarray]:
    train, validation, spec = frames()
    result = train_model(train, validation, spec, TrainConfig(trainer=TRAINER, params=params), tmp_path / "work",
                         project_dir=folder)
    model_dir = save_model(result.model, tmp_path / "model")
    return model_dir, validation, predict_proba(result.model, validation)


def test_a_plugin_trainer_learns_and_its_model_folder_loads_back_to_the_same_answers(project, tmp_path):
    folder, _ = project
    model_dir, validation, before = trained(folder, tmp_path, C=[0.01, 1.0])
    assert read_meta(model_dir)["trainer"] == TRAINER
    assert (model_dir / PLUGIN_DIR / "logistic.json").is_file() and (model_dir / META_FILE).is_file()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(validation["label"], before) > 0.75  # it learned the signal, NaNs and all
    again = load_model(model_dir, (TRAINER,), folder)
    np.testing.assert_array_equal(predict_proba(again, validation), before)
    # An unseen category and a row of nothing but missing values still get a probability.
    odd = pd.DataFrame({"x": [np.nan, 0.3], "c": [None, "never-seen"]})
    assert np.all((predict_proba(again, odd) > 0) & (predict_proba(again, odd) < 1))


def test_a_model_folder_naming_a_plugin_the_config_does_not_name_is_refused_without_importing_it(project, tmp_path):
    folder, marker = project
    model_dir, _, _ = trained(folder, tmp_path)
    marker.unlink()
    sys.modules.pop("logistic_trainer", None)
    with pytest.raises(KfopsError, match=r"written by the plug-in trainer logistic_trainer:LogisticTrainer") as err:
        load_model(model_dir, (), folder)
    assert "train.also_load" in (err.value.hint or "")
    assert not marker.exists() and "logistic_trainer" not in sys.modules
    # The same with another plug-in named: only the named ones are trusted.
    with pytest.raises(KfopsError, match="does not name"):
        load_model(model_dir, ("other_trainer:Other",), folder)
    assert not marker.exists()
    # train.also_load names it: the champion of a trainer being moved away from loads.
    cfg = TrainConfig(trainer="xgboost", also_load=[TRAINER])
    assert cfg.plugins == (TRAINER,)
    load_model(model_dir, cfg.plugins, folder)
    assert marker.exists()


def test_the_config_refuses_what_is_not_a_trainer():
    with pytest.raises(ValueError, match="'lightgbm' is neither a built-in trainer"):
        TrainConfig(trainer="lightgbm")
    with pytest.raises(ValueError, match="'torch' is not module:Class"):
        TrainConfig(also_load=["torch"])
    assert TrainConfig(trainer="pkg.models:Net").plugin == "pkg.models:Net"
    assert TrainConfig().plugin is None and TrainConfig().plugins == ()
    assert TrainConfig(trainer="a:B", also_load=["a:B", "c:D"]).plugins == ("a:B", "c:D")


BAD_PLUGINS = {
    "missing": ("class Trainer:\n    @classmethod\n    def fit(cls, data, params):\n        return cls()\n",
                ConfigError, "lacks predict_proba, save, load"),
    "two_columns": ("import numpy as np\nclass Trainer:\n    @classmethod\n    def fit(cls, data, params):\n"
                    "        return cls()\n    def predict_proba(self, m):\n        return np.full((len(m), 2), 0.5)\n"
                    "    def save(self, f): pass\n    @classmethod\n    def load(cls, f, s): return cls()\n",
                    KfopsError, re.escape("shape (2000, 2)") + ".*proba\\[:, 1\\]"),
    "scores": ("import numpy as np\nclass Trainer:\n    @classmethod\n    def fit(cls, data, params):\n"
               "        return cls()\n    def predict_proba(self, m):\n        return np.full(len(m), 3.0)\n"
               "    def save(self, f): pass\n    @classmethod\n    def load(cls, f, s): return cls()\n",
               KfopsError, re.escape("outside [0, 1]")),
    "raises": ("class Trainer:\n    @classmethod\n    def fit(cls, data, params):\n        raise ValueError('C must be > 0')\n"
               "    def predict_proba(self, m): pass\n    def save(self, f): pass\n"
               "    @classmethod\n    def load(cls, f, s): return cls()\n",
               TrainingError, "failed in fit: ValueError: C must be > 0"),
}


@pytest.mark.parametrize("name", sorted(BAD_PLUGINS))
def test_a_faulty_plugin_is_named_with_what_is_wrong(name, tmp_path, monkeypatch):
    source, error, message = BAD_PLUGINS[name]
    module = f"faulty_{name}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    train, validation, spec = frames(rows=6000)
    cfg = TrainConfig(trainer=f"{module}:Trainer")
    with pytest.raises(error, match=message) as err:
        train_model(train, validation, spec, cfg, tmp_path / "work", project_dir=tmp_path)
    assert f"{module}:Trainer" in str(err.value) or name == "missing"
    sys.modules.pop(module, None)


def test_the_plugin_gets_the_encoded_splits_and_its_params_as_given(tmp_path, monkeypatch):
    (tmp_path / "spy_trainer.py").write_text(
        "import json, numpy as np\nclass Trainer:\n    seen = {}\n    @classmethod\n    def fit(cls, data, params):\n"
        "        cls.seen.update(data=data, params=params)\n        return cls()\n"
        "    def predict_proba(self, m):\n        return np.full(len(m), 0.25)\n"
        "    def save(self, f): (f / 'w.json').write_text('{}')\n"
        "    @classmethod\n    def load(cls, f, s): return cls()\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "spy_trainer", raising=False)
    train, validation, spec = frames()
    cfg = TrainConfig(trainer="spy_trainer:Trainer", params={"depth": 3, "layers": [8, 4]}, seed=7)
    result = train_model(train, validation, spec, cfg, tmp_path / "work", project_dir=tmp_path)
    seen = sys.modules["spy_trainer"].Trainer.seen
    data = seen["data"]
    assert seen["params"] == {"depth": 3, "layers": [8, 4]} and data.seed == 7 and data.spec is spec
    np.testing.assert_array_equal(data.train, spec.encode(train))  # what the server will send predict_proba
    np.testing.assert_array_equal(data.validation_labels, validation["label"].to_numpy())
    assert data.train.dtype == np.float32 and data.work_dir == tmp_path / "work"
    assert result.params["params.layers"] == [8, 4] and result.params["trainer"] == "spy_trainer:Trainer"
    assert set(result.metrics) == {"validation_auc", "validation_logloss"}
    sys.modules.pop("spy_trainer", None)


def test_a_plugin_trainer_beside_kfops_yaml_needs_the_projects_own_images_on_a_cluster(tmp_path):
    from kfops.adapters.kfp_api import project_image_problem

    shutil.copy(EXAMPLE, tmp_path / "logistic_trainer.py")
    cfg = KfopsConfig.model_validate({"train": {"trainer": TRAINER}}).resolve(tmp_path)
    problem = project_image_problem(cfg)
    assert problem is not None and "train.trainer (logistic_trainer)" in problem
    own = KfopsConfig.model_validate({"train": {"trainer": TRAINER}, "cluster": {
        "image": "reg.example.com/acme:1", "serving_image": "reg.example.com/acme-serving:1"}}).resolve(tmp_path)
    assert project_image_problem(own) is None
    assert project_image_problem(KfopsConfig().resolve(tmp_path)) is None  # xgboost: nothing to carry


def test_the_backtest_bank_is_keyed_by_the_projects_plugin_sources(tmp_path):
    from kfops.runners.backtest import cache_key

    shutil.copy(EXAMPLE, tmp_path / "logistic_trainer.py")
    cfg = KfopsConfig.model_validate({"train": {"trainer": TRAINER}}).resolve(tmp_path)
    before = cache_key(cfg, "2024-03", "2024-04", None)
    assert cache_key(cfg, "2024-03", "2024-04", None) == before
    (tmp_path / "logistic_trainer.py").write_text(EXAMPLE.read_text().replace("max_iter\", 300", "max_iter\", 100"))
    assert cache_key(cfg, "2024-03", "2024-04", None) != before  # changed code: not the cached models


def test_the_docs_show_the_example_trainer_as_it_is_tested():
    doc = (REPO / "docs" / "trainers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert EXAMPLE.read_text() in blocks, "docs/trainers.md must show tests/support/logistic_trainer.py verbatim"
    assert json.dumps(TRAINER)[1:-1] in doc
