import datetime as dt
from pathlib import Path

import pytest

from kfops.config import KfopsConfig, env_overrides, load_config, parse_override
from kfops.errors import ConfigError
from tests.support.example import example_config


def test_defaults_resolve_paths_against_the_config_folder(tmp_path):
    (tmp_path / "kfops.yaml").write_text("data_dir: state\n")
    cfg = load_config(tmp_path / "kfops.yaml", environ={})
    assert cfg.data_dir == (tmp_path / "state").resolve()
    assert cfg.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'state' / 'mlflow' / 'mlflow.db'}"
    assert cfg.features.repo_path == (tmp_path / "feature_repo").resolve()


def test_unknown_key_is_named(tmp_path):
    (tmp_path / "kfops.yaml").write_text("train:\n  trainer: xgboost\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train\.learning_rat'"):
        load_config(tmp_path / "kfops.yaml", environ={})


def test_environment_then_command_line_override(tmp_path):
    (tmp_path / "kfops.yaml").write_text("train:\n  trainer: xgboost\n")
    env = {"KFOPS__TRAIN__TRAINER": "torch", "KFOPS__TRAIN__TORCH__EPOCHS": "7", "UNRELATED": "x"}
    cfg = load_config(tmp_path / "kfops.yaml", environ=env)
    assert cfg.train.trainer == "torch" and cfg.train.torch.epochs == 7
    cfg = load_config(tmp_path / "kfops.yaml", ["train.trainer=xgboost"], environ=env)
    assert cfg.train.trainer == "xgboost"


def test_bad_values_are_refused_with_their_location():
    with pytest.raises(ConfigError, match="dataset"):
        load_config(None, ["dataset.start=2013-05-01", "dataset.end=2013-04-01"], environ={})
    with pytest.raises(ConfigError, match=r"train\.trainer"):
        load_config(None, ["train.trainer=lightgbm"], environ={})
    with pytest.raises(ConfigError, match="split"):
        load_config(None, ["split.train_fraction=0.9", "split.validation_fraction=0.2"], environ={})


def test_override_values_keep_their_types():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert env_overrides({"KFOPS__SERVING__HTTP_PORT": "9000"}) == [(["serving", "http_port"], 9000)]
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "bad.yaml", environ={})


def test_json_round_trip_is_lossless():
    cfg = KfopsConfig().resolve(Path("/tmp"))
    assert KfopsConfig.from_json(cfg.to_json()) == cfg


def test_feature_columns_follow_the_feature_refs():
    cfg = example_config()
    assert cfg.feature_columns[: len(cfg.features.request_features)] == cfg.features.request_features
    assert "temp" in cfg.feature_columns and "dep_delay" not in cfg.feature_columns


def test_portable_gives_back_the_paths_as_written(tmp_path):
    (tmp_path / "kfops.yaml").write_text(f"data_dir: state\nvalidation:\n  suites_dir: {tmp_path / 'suites'}\n")
    cfg = load_config(tmp_path / "kfops.yaml", ["dataset.source_dir=raw"], environ={})
    assert cfg.data_dir == (tmp_path / "state").resolve() and cfg.resolved_against == tmp_path.resolve()
    portable = cfg.portable()
    assert portable.data_dir == Path("state")
    assert portable.features.repo_path == Path("feature_repo")
    assert portable.dataset.source_dir == Path("raw")
    assert portable.validation.suites_dir == tmp_path / "suites"  # written absolute: the user's choice
    assert cfg.data_dir == (tmp_path / "state").resolve()  # the resolved config is untouched
    cfg.data_dir = Path("/elsewhere/state")  # set after loading: kept as set
    assert cfg.portable().data_dir == Path("/elsewhere/state")
    assert cfg.portable().features.repo_path == Path("feature_repo")
    assert KfopsConfig().portable() == KfopsConfig()


def test_a_step_resolves_relative_paths_in_the_project_folder_when_one_is_given(tmp_path):
    from kfops.config import PROJECT_DIR_ENV

    text = KfopsConfig().to_json()
    cfg = KfopsConfig.from_json(text).resolve_at_run_time({PROJECT_DIR_ENV: str(tmp_path)})
    assert cfg.data_dir == tmp_path.resolve() / ".kfops"
    assert cfg.validation.suites_dir == tmp_path.resolve() / "expectations"
    assert cfg.features.repo_path == tmp_path.resolve() / "feature_repo"


def test_a_pod_reads_project_files_in_its_working_folder_and_keeps_state_in_scratch(tmp_path, monkeypatch):
    import tempfile

    from kfops.config import scratch_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "scratch").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    cfg = KfopsConfig.from_json(KfopsConfig().to_json()).resolve_at_run_time({})
    assert cfg.validation.suites_dir == tmp_path.resolve() / "expectations"
    assert cfg.features.repo_path == tmp_path.resolve() / "feature_repo"
    assert scratch_dir().parent == tmp_path / "scratch"
    assert cfg.data_dir == scratch_dir() / ".kfops"
    assert cfg.tracking_uri == f"sqlite:///{scratch_dir() / '.kfops' / 'mlflow' / 'mlflow.db'}"
    explicit = KfopsConfig(data_dir=tmp_path / "mine").resolve_at_run_time({})
    assert explicit.data_dir == tmp_path / "mine"


def test_config_path_may_be_a_str_or_any_path_like(tmp_path, monkeypatch):
    (tmp_path / "kfops.yaml").write_text("data_dir: state\ntrain:\n  seed: 7\n")

    class PathLike:  # os.PathLike without being a pathlib.Path
        def __fspath__(self) -> str:
            return str(tmp_path / "kfops.yaml")

    monkeypatch.chdir(tmp_path)
    for given in (tmp_path / "kfops.yaml", str(tmp_path / "kfops.yaml"), "kfops.yaml", PathLike()):
        cfg = load_config(given, environ={})
        assert cfg.train.seed == 7, given
        assert cfg.data_dir == (tmp_path / "state").resolve(), given
    with pytest.raises(ConfigError, match=r"missing\.yaml does not exist"):
        load_config("missing.yaml", environ={})


def test_defaults_assume_no_dataset():
    cfg = KfopsConfig()
    assert cfg.missing_required() == ["dataset.loader", "dataset.entity_builder", "dataset.row_id", "dataset.start",
                                      "dataset.end", "validation.tables"]
    assert cfg.dataset.feast_sources_writer is None and cfg.validation.window_timezone == "UTC"
    assert cfg.features.feature_refs == cfg.features.request_features == cfg.features.categorical == []
    assert cfg.evaluate.gate.slices == cfg.evaluate.invariant_columns == cfg.evaluate.non_decreasing_columns == []
    assert (cfg.project, cfg.features.project, cfg.registry.experiment, cfg.registry.model_name) == \
        ("kfops", "kfops", "kfops", "model")


def test_a_missing_required_key_is_named_with_where_to_look(tmp_path):
    (tmp_path / "kfops.yaml").write_text("dataset:\n  loader: mine:load\nvalidation:\n  tables: [orders]\n")
    cfg = load_config(tmp_path / "kfops.yaml", environ={})  # loading is fine: a server needs no dataset
    with pytest.raises(ConfigError, match=r"required configuration missing: dataset.entity_builder, dataset.row_id, "
                                          r"dataset.start, dataset.end$") as err:
        cfg.check_required()
    assert "Bring your own data" in err.value.hint
    assert cfg.require("dataset.loader") == "mine:load"
    with pytest.raises(ConfigError, match=r"required configuration missing: dataset\.row_id"):
        cfg.require("dataset.row_id")


def test_the_window_has_no_default_and_its_accessor_names_the_unset_end():
    cfg = KfopsConfig()
    with pytest.raises(ConfigError, match=r"required configuration missing: dataset\.start, dataset\.end$"):
        _ = cfg.window
    cfg = KfopsConfig.model_validate({"dataset": {"start": "2020-03-01"}})
    with pytest.raises(ConfigError, match=r"required configuration missing: dataset\.end$") as err:
        _ = cfg.window_name
    assert "Bring your own data" in err.value.hint
    cfg = KfopsConfig.model_validate({"dataset": {"start": "2020-03-01", "end": "2020-03-31"}})
    assert cfg.window == (dt.date(2020, 3, 1), dt.date(2020, 3, 31)) and cfg.window_name == "20200301-20200331"


def test_compiling_a_pipeline_without_a_dataset_is_refused(tmp_path):
    from kfops.adapters.kfp_local import compile_pipeline

    for name in ("training", "retraining"):
        with pytest.raises(ConfigError, match=r"dataset\.loader, dataset\.entity_builder"):
            compile_pipeline(KfopsConfig(), name, tmp_path / f"{name}.yaml")
        assert not (tmp_path / f"{name}.yaml").exists()


def test_the_example_config_holds_every_flights_value():
    cfg = example_config()
    assert cfg.missing_required() == []
    assert cfg.dataset.loader == "kfops.datasets.flights:load_tables" and cfg.dataset.row_id == "flight_id"
    assert cfg.validation.window_timezone == "America/New_York"
    assert cfg.evaluate.gate.slices == ["carrier", "origin", "month"]
    assert (cfg.evaluate.invariant_columns, cfg.evaluate.non_decreasing_columns) == (["flight"], ["precip"])


def test_an_impossible_date_is_named_by_its_key_wherever_it_is_written(tmp_path):
    """YAML's own date parser raised a bare 'day is out of range for month' for 2013-02-30."""
    (tmp_path / "kfops.yaml").write_text("dataset:\n  start: 2013-01-01\n  end: 2013-02-30\n")
    for overrides, environ in (([], {}), (["dataset.end=2013-02-31"], {}), ([], {"KFOPS__DATASET__END": "2013-04-31"})):
        with pytest.raises(ConfigError, match=r"dataset\.end: Input should be a valid date"):
            load_config(tmp_path / "kfops.yaml", overrides, environ=environ)
    good = load_config(tmp_path / "kfops.yaml", ["dataset.end=2013-02-28"], environ={})
    assert good.dataset.end == dt.date(2013, 2, 28)


def test_an_empty_data_dir_is_refused_rather_than_scattering_state_into_the_project(tmp_path):
    for overrides, environ in ((["data_dir="], {}), ([], {"KFOPS__DATA_DIR": ""}), (["data_dir=  "], {})):
        with pytest.raises(ConfigError, match=r"data_dir: .*must name a folder"):
            load_config(None, overrides, environ=environ)


def test_a_key_written_twice_is_refused_rather_than_the_first_silently_dropped(tmp_path):
    (tmp_path / "kfops.yaml").write_text("dataset:\n  end: 2013-02-01\n  end: 2013-03-01\n")
    with pytest.raises(ConfigError, match="found the key 'end' twice"):
        load_config(tmp_path / "kfops.yaml", environ={})


def test_an_error_in_an_override_names_the_override_not_the_file(tmp_path):
    """`--set train.trainr=xgboost` was reported as "unknown key 'train.trainr' (.../kfops.yaml)"."""
    config = tmp_path / "kfops.yaml"
    config.write_text("train:\n  trainer: xgboost\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config, ["train.trainr=xgboost"], environ={})
    assert str(raised.value) == "invalid configuration: unknown key 'train.trainr' (from --set)"
    with pytest.raises(ConfigError, match=r"dataset\.end: .* \(from KFOPS__DATASET__END\)$"):
        load_config(config, [], environ={"KFOPS__DATASET__END": "2013-02-30"})
    config.write_text("train:\n  trainr: xgboost\n")
    with pytest.raises(ConfigError, match=rf"unknown key 'train.trainr' \({config}\)$"):
        load_config(config, ["dataset.end=2013-02-28"], environ={})


@pytest.mark.parametrize("key", ["cooldown", "label_delay", "period", "schedule_every"])
def test_a_duration_without_a_unit_is_refused_naming_the_key_and_the_forms(tmp_path, key):
    """`--set retrain.cooldown=7` was 7 seconds (PT7S), silently: 7 almost always meant days."""
    (tmp_path / "kfops.yaml").write_text(f"retrain:\n  {key}: 7\n")
    written = [(tmp_path / "kfops.yaml", [], {}), (None, [f"retrain.{key}=7"], {}),
               (None, [f"retrain.{key}=1.5"], {}), (None, [f"retrain.{key}='7'"], {}),
               (None, [], {f"KFOPS__RETRAIN__{key.upper()}": "7"})]
    for path, overrides, environ in written:
        with pytest.raises(ConfigError, match=rf"retrain\.{key}: .*has no unit; write .*7d, 12h, 30m, 90s.*P7D") as err:
            load_config(path, overrides, environ=environ)
        assert "PT7S" not in str(err.value)


def test_every_documented_duration_form_still_reads():
    """Units (kfops.yaml's `1d`, init's `0s` and `30d`), ISO 8601 (what `config show` prints), and the
    `str(timedelta)` and clock forms the configuration reference shows as defaults."""
    read = {text: load_config(None, [f"retrain.cooldown={text}"], environ={}).retrain.cooldown
            for text in ("90s", "30m", "12h", "1d", "0s", "2w", "1.5d", "P7D", "PT12H", "7 days, 0:00:00",
                         "0:00:00", "12:00:00")}
    assert read == {"90s": dt.timedelta(seconds=90), "30m": dt.timedelta(minutes=30), "12h": dt.timedelta(hours=12),
                    "1d": dt.timedelta(days=1), "0s": dt.timedelta(0), "2w": dt.timedelta(weeks=2),
                    "1.5d": dt.timedelta(days=1.5), "P7D": dt.timedelta(days=7), "PT12H": dt.timedelta(hours=12),
                    "7 days, 0:00:00": dt.timedelta(days=7), "0:00:00": dt.timedelta(0),
                    "12:00:00": dt.timedelta(hours=12)}
    with pytest.raises(ConfigError, match=r"retrain\.cooldown: .*'soon' is not a duration; write .*7d"):
        load_config(None, ["retrain.cooldown=soon"], environ={})
