"""Secrets never leave the process that needs them (issue 13 item 5, issue 18 defect 5).

A secret is planted the way an operator gives one, through ``KFOPS__`` variables: a Redis
password and a Postgres password inside the tracking URI. Then every serialised or shown form
is grepped for it: the config's JSON and repr, the compiled pipeline YAML, the InferenceService
manifest, CLI errors. And where a step or the model server runs, the secret comes back from
the environment.
"""

from __future__ import annotations

import json

import pytest
import yaml

from kfops.adapters.kfp_local import compile_pipeline
from kfops.adapters.kserve_cluster import predictor_environment, render_inference_service
from kfops.config import CONFIG_JSON_ENV, KfopsConfig, load_config, load_config_json
from kfops.core.redaction import redact_env, redact_uri, strip_password
from kfops.errors import ConfigError, RegistryError
from tests.conftest import free_port

REDIS_PASSWORD = "planted-redis-7f3a9c"
PG_PASSWORD = "planted-pg-51e0d2"
TRACKING_URI = f"postgresql+psycopg2://postgres:{PG_PASSWORD}@127.0.0.1:5432/mlflow"
WEBHOOK_TOKEN = "planted-hook-T0/B0/c4e9"
WEBHOOK_URL = f"https://hooks.example/services/{WEBHOOK_TOKEN}"
PLANTED = {
    "KFOPS__FEATURES__REDIS_PASSWORD": REDIS_PASSWORD,
    "KFOPS__FEATURES__ONLINE_STORE": "redis",
    "KFOPS__REGISTRY__TRACKING_URI": TRACKING_URI,
    "KFOPS__NOTIFY__WEBHOOK_URL": WEBHOOK_URL,
}


def leaks(text: str) -> list[str]:
    return [secret for secret in (REDIS_PASSWORD, PG_PASSWORD, WEBHOOK_TOKEN) if secret in text]


@pytest.fixture
def planted(tmp_path) -> KfopsConfig:
    return load_config(None, [f"data_dir={tmp_path / '.kfops'}"], environ=PLANTED)


# --- the helper ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, shown, kept", [
    ("postgresql+psycopg2://postgres:pw@db:5432/mlflow", "postgresql+psycopg2://postgres:***@db:5432/mlflow",
     "postgresql+psycopg2://postgres@db:5432/mlflow"),
    ("API request to http://admin:pw@mlflow:5000/api/2.0 failed", "API request to http://admin:***@mlflow:5000/api/2.0 failed",
     "API request to http://admin@mlflow:5000/api/2.0 failed"),
    ("redis:6379,password=pw,ssl=true", "redis:6379,password=***,ssl=true", "redis:6379,ssl=true"),
    ("password=pw,redis:6379", "password=***,redis:6379", "redis:6379"),
    ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0", "redis://@cache:6379/0"),
    ("http://mlflow:5000/x and postgresql://u@db/x", "http://mlflow:5000/x and postgresql://u@db/x",
     "http://mlflow:5000/x and postgresql://u@db/x"),
    ("s3://bucket/prefix", "s3://bucket/prefix", "s3://bucket/prefix"),
    # An '@' in the password, written raw (RFC 3986 wants %40): masked to the last '@' of the host part.
    ("http://admin:Top@Secret99@mlflow:5000/api/x@y", "http://admin:***@mlflow:5000/api/x@y",
     "http://admin@mlflow:5000/api/x@y"),
])  # fmt: skip
def test_redact_shows_and_strip_keeps_no_password(text, shown, kept):
    assert redact_uri(text) == shown
    assert strip_password(text) == kept


def test_env_values_whose_name_says_secret_are_masked_whole():
    assert redact_env("AWS_SECRET_ACCESS_KEY", "abc") == "***"
    assert redact_env("KFOPS_KFP_TOKEN", "abc") == "***"
    assert redact_env("KFOPS__REGISTRY__TRACKING_URI", "http://a:pw@h") == "http://a:***@h"
    assert redact_env("PYTHONUNBUFFERED", "1") == "1"


# --- the config ---------------------------------------------------------------------------------


def test_planted_secrets_are_in_the_config_and_in_none_of_its_serialised_forms(planted):
    assert planted.features.redis_password.get_secret_value() == REDIS_PASSWORD
    assert planted.tracking_uri == TRACKING_URI
    for text in (planted.to_json(), planted.portable().to_json(), planted.model_dump_json(),
                 json.dumps(planted.model_dump(mode="json")), repr(planted), str(planted)):
        assert leaks(text) == []
    assert json.loads(planted.to_json())["registry"]["tracking_uri"] == strip_password(TRACKING_URI)


def test_a_password_is_taken_as_written_not_as_yaml():
    cfg = load_config(None, environ={"KFOPS__FEATURES__REDIS_PASSWORD": "0123"})
    assert cfg.features.redis_password.get_secret_value() == "0123"
    cfg = load_config(None, ["features.redis_password=yes"], environ={})
    assert cfg.features.redis_password.get_secret_value() == "yes"


def test_feast_gets_the_password_in_its_connection_string(planted):
    from kfops.adapters.feast_store import online_store_config

    parts = online_store_config(planted)["connection_string"].split(",")
    assert parts[0] == "127.0.0.1:6379" and f"password={REDIS_PASSWORD}" in parts[1:]


def test_a_step_gets_its_secrets_back_from_the_environment(planted):
    """What a kfp.local task (or a pod given the Secret) does with the config parameter."""
    at_run_time = KfopsConfig.from_json(planted.portable().to_json()).resolve_at_run_time(PLANTED)
    assert at_run_time.features.redis_password.get_secret_value() == REDIS_PASSWORD
    assert at_run_time.tracking_uri == TRACKING_URI
    # The webhook was serialised as '**********', which the URL check then refused: every task of
    # a pipeline compiled with KFOPS__NOTIFY__WEBHOOK_URL set failed on its config.
    assert at_run_time.notify.webhook_url.get_secret_value() == WEBHOOK_URL
    without = KfopsConfig.from_json(planted.portable().to_json()).resolve_at_run_time({})
    assert without.features.redis_password is None and without.notify.webhook_url is None
    assert without.tracking_uri == strip_password(TRACKING_URI)


def test_an_environment_uri_never_replaces_a_different_one_chosen_by_set(tmp_path):
    cfg = load_config(None, ["registry.tracking_uri=http://other:5000"], environ=PLANTED)
    at_run_time = KfopsConfig.from_json(cfg.to_json()).resolve_at_run_time(PLANTED)
    assert at_run_time.tracking_uri == "http://other:5000"


def test_the_model_server_config_json_honours_kfops_overrides(planted):
    """issue 13: with KFOPS_CONFIG_JSON set, the server ignored KFOPS__*; the password never reached it."""
    cfg = load_config_json(planted.to_json(), {**PLANTED, "KFOPS__SERVING__MAX_BATCH_SIZE": "7"})
    assert cfg.features.redis_password.get_secret_value() == REDIS_PASSWORD
    assert cfg.tracking_uri == TRACKING_URI
    assert cfg.serving.max_batch_size == 7
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_json("{", {})


def test_with_credentials_gives_a_stripped_uri_its_password_back_only_for_the_same_store(planted):
    assert planted.with_credentials(strip_password(TRACKING_URI)) == TRACKING_URI
    assert planted.with_credentials("http://elsewhere:5000") == "http://elsewhere:5000"
    assert planted.with_credentials(None) is None


# --- the compiled pipeline ----------------------------------------------------------------------


def test_compiled_training_yaml_carries_no_planted_secret(planted, tmp_path):
    """issue 18 defect 5: a password given through KFOPS__ was twice in the compiled YAML."""
    compiled = compile_pipeline(planted, "training", tmp_path / "training.yaml")
    text = compiled.read_text()
    assert leaks(text) == []
    spec = yaml.safe_load(text)
    embedded = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert strip_password(TRACKING_URI) in embedded  # the store is named, only its password is left out
    assert KfopsConfig.from_json(embedded).notify.webhook_url is None  # what every task parses first


# --- the InferenceService -----------------------------------------------------------------------


def cluster_planted(tmp_path, *extra: str) -> KfopsConfig:
    environ = {**PLANTED, "KFOPS__REGISTRY__TRACKING_URI": f"http://admin:{PG_PASSWORD}@mlflow.mlflow:5000"}
    return load_config(None, [f"data_dir={tmp_path}", *extra], environ=environ)


def test_predictor_environment_is_plain_values_and_secret_names(tmp_path):
    cfg = cluster_planted(tmp_path)
    plain, secret_names = predictor_environment(cfg)
    assert secret_names == ["KFOPS__FEATURES__REDIS_PASSWORD", "KFOPS__REGISTRY__TRACKING_URI"]
    assert leaks(json.dumps(plain)) == []
    # What a server given both (the local container: values from secret_environment) reads back.
    served = load_config_json(plain[CONFIG_JSON_ENV], {n: cfg.secret_environment()[n] for n in secret_names})
    assert served.features.redis_password.get_secret_value() == REDIS_PASSWORD
    assert served.tracking_uri == cfg.tracking_uri


def test_the_inference_service_references_a_kubernetes_secret_and_holds_none(tmp_path):
    cfg = cluster_planted(tmp_path, "cluster.secrets_name=kfops-secrets", "serving.kserve.transformer=true")
    manifest = render_inference_service(cfg, "3")
    assert leaks(json.dumps(manifest)) == []
    for component in ("predictor", "transformer"):
        env = manifest["spec"][component]["containers"][0]["env"]
        by_name = {entry["name"]: entry for entry in env}
        assert by_name["KFOPS__FEATURES__REDIS_PASSWORD"] == {
            "name": "KFOPS__FEATURES__REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "kfops-secrets", "key": "KFOPS__FEATURES__REDIS_PASSWORD"}},
        }
        assert "value" not in by_name["KFOPS__REGISTRY__TRACKING_URI"]


def test_an_inference_service_needing_secrets_without_a_secret_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"cluster\.secrets_name") as caught:
        render_inference_service(cluster_planted(tmp_path), "3")
    assert leaks(str(caught.value) + str(caught.value.hint)) == []


# --- what is shown ------------------------------------------------------------------------------


def test_errors_never_show_a_password():
    err = RegistryError(f"MLflow did not answer: API request to http://admin:{PG_PASSWORD}@h:5000/api failed",
                        hint=f"check {TRACKING_URI}")
    assert leaks(str(err) + err.hint) == []


def test_the_error_for_a_dead_mlflow_server_shows_no_password(tmp_path, monkeypatch, capsys):
    """issue 18 defect 5: the error for a dead MLflow server quoted http://admin:<password>@..."""
    from kfops.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KFOPS__REGISTRY__TRACKING_URI", f"http://admin:{PG_PASSWORD}@127.0.0.1:{free_port()}")
    monkeypatch.setenv("KFOPS__REGISTRY__HTTP_MAX_RETRIES", "0")
    monkeypatch.setenv("KFOPS__DATA_DIR", str(tmp_path / ".kfops"))
    with pytest.raises(SystemExit) as exited:
        main(["status"])
    shown = capsys.readouterr()
    output = shown.out + shown.err
    assert exited.value.code == 3, output
    assert "is unreachable" in output  # the registry error itself, not some other failure
    assert "admin:***@127.0.0.1" in output
    assert leaks(output) == []


def test_a_raw_at_sign_in_a_password_reaches_neither_the_compiled_pipeline_nor_status(tmp_path):
    """The mask used to stop at the password's first '@': 'Secret99' was printed and compiled."""
    uri = "http://admin:Top@Secret99@mlflow.svc:5000"
    cfg = load_config(None, [f"data_dir={tmp_path / '.kfops'}"], environ={"KFOPS__REGISTRY__TRACKING_URI": uri})
    assert cfg.registry.tracking_uri == uri  # kept whole for the process that uses it
    serialised = cfg.portable().model_dump_json()
    assert "Secret99" not in serialised and "Top" not in serialised
    assert "http://admin@mlflow.svc:5000" in serialised
    assert "Secret99" not in redact_uri(f"cannot reach {uri}/api")


def test_a_password_that_would_end_the_host_part_is_refused_naming_only_the_key(tmp_path):
    uri = "http://admin:Top/Secret98@127.0.0.1:9"
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"data_dir={tmp_path}"], environ={"KFOPS__REGISTRY__TRACKING_URI": uri})
    shown = str(err.value) + (err.value.hint or "")
    assert "registry.tracking_uri" in shown and "%2F" in shown
    assert "Top" not in shown and "Secret98" not in shown
