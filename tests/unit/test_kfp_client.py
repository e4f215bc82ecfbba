"""Pure parts of the KFP adapter: endpoint and token resolution, cron conversion, version names."""

from __future__ import annotations

from pathlib import Path

import pytest
from croniter import croniter

from kfops.adapters.kfp_api import (
    Endpoint,
    default_schedule_name,
    pipeline_info,
    resolve_endpoint,
    to_kfp_cron,
    version_name,
)
from kfops.adapters.kfp_local import compile_pipeline
from kfops.config import KfopsConfig
from kfops.errors import ConfigError
from tests.conftest import REPO_ROOT as REPO
from tests.support.example import example_config


def _cfg(**cluster) -> KfopsConfig:
    cfg = KfopsConfig().model_copy(deep=True)
    for key, value in cluster.items():
        setattr(cfg.cluster, key, value)
    return cfg


def test_no_host_anywhere_is_a_config_error_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="no Kubeflow Pipelines endpoint") as info:
        resolve_endpoint(_cfg(), environ={}, default_token_path=tmp_path / "absent")
    assert "cluster.kfp_host" in info.value.hint


def test_host_without_scheme_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no scheme"):
        resolve_endpoint(_cfg(kfp_host="kfp.example.com"), environ={}, default_token_path=tmp_path / "absent")


def test_flag_beats_config_and_token_env_beats_token_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    cfg = _cfg(kfp_host="http://config:8888/", namespace="cfg-ns", token_path=token_file)
    endpoint = resolve_endpoint(cfg, host="http://flag:8888", namespace="flag-ns",
                                environ={"KFOPS_KFP_TOKEN": "from-env"}, default_token_path=tmp_path / "absent")
    assert endpoint == Endpoint("http://flag:8888", "flag-ns", "from-env", "$KFOPS_KFP_TOKEN")
    from_config = resolve_endpoint(cfg, environ={}, default_token_path=tmp_path / "absent")
    assert from_config == Endpoint("http://config:8888", "cfg-ns", "from-file", str(token_file))
    assert "from-file" not in repr(from_config)  # tokens stay out of logs


def test_service_account_token_file_is_the_fallback(tmp_path):
    sa_token = tmp_path / "sa-token"
    sa_token.write_text("sa")
    endpoint = resolve_endpoint(_cfg(kfp_host="http://h"), environ={}, default_token_path=sa_token)
    assert endpoint.token == "sa" and endpoint.token_source == str(sa_token)
    bare = resolve_endpoint(_cfg(kfp_host="http://h"), environ={}, default_token_path=tmp_path / "absent")
    assert bare.token is None


def test_a_configured_token_path_that_is_missing_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="token_path"):
        resolve_endpoint(_cfg(kfp_host="http://h", token_path=tmp_path / "missing"), environ={},
                         default_token_path=tmp_path / "absent")


@pytest.mark.parametrize(("given", "expected"), [
    ("0 3 * * *", "0 0 3 * * *"),
    ("  */15   *  * * 1-5 ", "0 */15 * * * 1-5"),
    ("30 0 3 * * *", "30 0 3 * * *"),
    ("@daily", "@daily"),
])
def test_cron_is_converted_to_kfp_six_fields(given, expected):
    assert to_kfp_cron(given) == expected


def test_converted_cron_fires_at_the_same_times():
    import datetime as dt

    start = dt.datetime(2024, 5, 1, 12, 34, 56)
    five = croniter("15 */6 * * 1-5", start, ret_type=dt.datetime)
    six = croniter(to_kfp_cron("15 */6 * * 1-5"), start, ret_type=dt.datetime, second_at_beginning=True)
    assert [five.get_next() for _ in range(6)] == [six.get_next() for _ in range(6)]


@pytest.mark.parametrize("bad", ["* * *", "1 2 3 4 5 6 7"])
def test_cron_with_wrong_field_count_is_refused(bad):
    with pytest.raises(ConfigError, match="5 fields"):
        to_kfp_cron(bad)


def test_version_name_carries_code_version_and_follows_the_yaml(tmp_path):
    cfg = example_config()
    first = compile_pipeline(cfg, "training", tmp_path / "a.yaml")
    again = compile_pipeline(cfg, "training", tmp_path / "b.yaml")
    other = compile_pipeline(cfg.model_copy(update={"project": "other"}), "training", tmp_path / "c.yaml")
    info = pipeline_info(first)
    assert info["name"] == "kfops-training" and info["parameters"] == ["config"]
    name = version_name(info["name"], "abc123", first)
    assert name.startswith("kfops-training-abc123-")
    assert version_name(info["name"], "abc123", again) == name
    assert version_name(info["name"], "abc123", other) != name


def test_schedule_name_is_a_valid_kubernetes_like_name():
    assert default_schedule_name("retraining", "0 3 * * *") == "kfops-retraining-0-3"


def _cluster_shaped(**overrides) -> KfopsConfig:
    settings = {"registry": {"tracking_uri": "http://mlflow.kubeflow.svc:5000"},
                "features": {"registry": "s3://kfops-bucket/feast/registry.db"},
                "state": {"store": "s3://kfops-bucket/kfops-state"}}
    for key, value in overrides.items():
        section, _, name = key.rpartition("__")
        if section:
            settings.setdefault(section, {})[name] = value
        else:
            settings[name] = value
    return KfopsConfig.model_validate(settings)


def test_a_cluster_shaped_config_passes():
    from kfops.adapters.kfp_api import cluster_config_problems, require_cluster_config

    assert cluster_config_problems(_cluster_shaped()) == []
    require_cluster_config(_cluster_shaped(features__registry="postgresql+psycopg2://feast@db.internal:5432/feast"))
    # Relative paths resolve in the image's working directory or the pod's scratch, wherever they were loaded.
    loaded = _cluster_shaped(data_dir="state").resolve(Path("/home/someone/project"))
    assert loaded.data_dir.is_absolute() and cluster_config_problems(loaded) == []


def test_the_default_config_is_refused_naming_each_local_store():
    from kfops.adapters.kfp_api import require_cluster_config

    with pytest.raises(ConfigError) as info:
        require_cluster_config(KfopsConfig().resolve(Path("/home/someone/project")))
    message = str(info.value)
    assert "registry.tracking_uri is not set" in message and "http(s)://" in message
    assert "features.registry is not set" in message and "s3://" in message and "postgresql" in message
    assert "state.store is not set" in message
    assert "/home/someone/project" not in message  # default paths are relative: nothing to say about them
    assert "--set" in info.value.hint


@pytest.mark.parametrize(("key", "value", "named"), [
    ("registry__tracking_uri", "sqlite:////home/me/mlflow.db", "registry.tracking_uri 'sqlite:"),
    ("registry__tracking_uri", "/home/me/mlruns", "is a file on this machine"),
    ("registry__tracking_uri", "file:///home/me/mlruns", "registry.tracking_uri"),
    ("registry__tracking_uri", "http://localhost:5000", "loopback"),
    ("registry__tracking_uri", "http://127.0.0.1:5000", "loopback"),
    ("registry__registry_uri", "sqlite:///registry.db", "registry.registry_uri"),
    ("registry__artifact_location", "/home/me/artifacts", "registry.artifact_location"),
    ("features__registry", "/home/me/registry.db", "features.registry '/home/me/registry.db' is a file"),
    ("features__registry", "sqlite:///registry.db", "features.registry"),
    ("features__registry", "postgresql://feast@localhost/feast", "loopback"),
    ("data_dir", "/home/me/.kfops", "data_dir '/home/me/.kfops' is a folder of this machine"),
    ("dataset__source_dir", "/home/me/raw",
     "dataset.source_dir '/home/me/raw' is a folder of this machine, which no pod has: put the raw files in an object"),
    ("validation__suites_dir", "/home/me/expectations", "relative to the image's working directory"),
    ("features__repo_path", "/home/me/feature_repo", "features.repo_path"),
    ("serving__inference_log_dir", "/home/me/logs", "serving.inference_log_dir"),
])
def test_each_local_store_or_path_is_named(key, value, named):
    from kfops.adapters.kfp_api import cluster_config_problems

    problems = cluster_config_problems(_cluster_shaped(**{key: value}))
    assert len(problems) == 1 and named in problems[0], problems


def test_submit_refuses_before_contacting_the_endpoint(tmp_path, monkeypatch, capsys):
    from kfops.adapters import kfp_api
    from kfops.cli import main

    def never(*_args, **_kwargs):
        raise AssertionError("the endpoint was contacted")

    monkeypatch.setattr(kfp_api, "connect", never)
    monkeypatch.setattr(kfp_api, "probe_healthz", never)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "training", "--host", "http://127.0.0.1:1", "--config", str(REPO / "kfops.yaml")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "registry.tracking_uri" in err and "features.registry" in err


def test_submit_names_missing_dataset_keys_first_and_compiles_before_connecting(tmp_path, monkeypatch, capsys):
    """A kfops.yaml holding only `project: x` got the cluster store problems, then (with those set)
    'cannot reach Kubeflow Pipelines': the missing dataset keys `kfops run` names were never named."""
    from kfops.adapters import kfp_api
    from kfops.cli import main

    def never(*_args, **_kwargs):
        raise AssertionError("the endpoint was contacted")

    monkeypatch.setattr(kfp_api, "connect", never)
    monkeypatch.setattr(kfp_api, "probe_healthz", never)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kfops.yaml").write_text("project: x\n")
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "training", "--host", "http://127.0.0.1:1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "required configuration missing: dataset.loader" in err and "registry.tracking_uri" not in err
