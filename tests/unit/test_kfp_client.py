"""Pure parts of the KFP adapter: endpoint and token resolution, cron conversion, version names."""

from __future__ import annotations

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
    cfg = KfopsConfig()
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
