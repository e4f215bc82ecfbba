"""kfops.adapters.feast_store pieces that need no Feast: leakage check, store settings, feature names, CLI helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kfops.adapters.feast_store import (
    assert_no_leakage,
    feature_names,
    online_store_config,
    registry_config,
)
from kfops.config import KfopsConfig
from kfops.errors import ConfigError, DataError, ValidationFailed
from tests.support.example import example_config


def config(**features) -> KfopsConfig:
    return example_config(data_dir="/srv/kfops", features=features)


def test_leakage_check_passes_known_at_departure_columns_and_names_the_leaky_ones():
    forbidden = config().features.forbidden_columns
    assert_no_leakage(["origin", "carrier_delay_rate_7d", "temp"], forbidden)
    with pytest.raises(ValidationFailed, match="DEP_DELAY, arr_delay") as err:
        assert_no_leakage(["temp", "arr_delay", "DEP_DELAY"], forbidden, where="the feature views")
    assert [f["column"] for f in err.value.failures] == ["DEP_DELAY", "arr_delay"]


def test_default_feature_refs_avoid_post_departure_columns():
    cfg = config()
    assert_no_leakage(feature_names(cfg), cfg.features.forbidden_columns)
    assert_no_leakage(cfg.features.request_features, cfg.features.forbidden_columns)


def test_registry_settings_for_file_object_store_and_sql():
    assert registry_config(config()) == "/srv/kfops/feast/registry.db"
    assert registry_config(config(registry="s3://bucket/registry.pb")) == "s3://bucket/registry.pb"
    sql = registry_config(config(registry="postgresql://feast@db:5432/feast"))
    assert sql["registry_type"] == "sql"
    assert sql["path"] == "postgresql+psycopg2://feast@db:5432/feast"  # kfops ships psycopg2
    assert registry_config(config(registry="mysql+pymysql://u@h/db"))["path"] == "mysql+pymysql://u@h/db"


def test_online_store_settings():
    assert online_store_config(config()) == {"type": "sqlite", "path": "/srv/kfops/feast/online.db"}
    assert online_store_config(config(online_store="redis", redis_connection="redis:6379,ssl=true")) == {
        "type": "redis", "connection_string": "redis:6379,ssl=true,socket_timeout=2,socket_connect_timeout=2"}


def test_feature_names_drop_the_view_and_must_be_unique():
    assert feature_names(config(feature_refs=["a:x", "b:y"])) == ["x", "y"]
    with pytest.raises(ConfigError, match="x appear"):
        feature_names(config(feature_refs=["a:x", "b:x"]))
    with pytest.raises(ConfigError, match="view:feature"):
        feature_names(config(feature_refs=["just_a_name"]))


def test_importing_the_feature_modules_does_not_import_feast():
    code = ("import sys, kfops.adapters.feast_store, kfops.cli.features, kfops.datasets.flights.features; "
            "heavy = [m for m in ('feast', 'duckdb', 'ibis', 'pyarrow') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_cli_picks_the_window_snapshot_else_the_newest(tmp_path):
    from kfops.cli.features import latest_raw_snapshot

    cfg = example_config(data_dir=tmp_path)  # the example's window, 2013-01-01..2013-12-31
    with pytest.raises(DataError, match="no raw snapshot"):
        latest_raw_snapshot(cfg)
    other = tmp_path / "raw" / "20130101-20130114"
    other.mkdir(parents=True)
    (other / "flights.parquet").write_bytes(b"")
    assert latest_raw_snapshot(cfg) == other
    window = tmp_path / "raw" / cfg.window_name
    window.mkdir()
    (window / "flights.parquet").write_bytes(b"")
    assert latest_raw_snapshot(cfg) == window


def test_cli_rejects_an_unknown_online_store(tmp_path):
    from typer.testing import CliRunner

    from kfops.cli.features import app

    result = CliRunner().invoke(app, ["materialize", "--online-store", "memcached", "--set", f"data_dir={tmp_path}"])
    assert isinstance(result.exception, ConfigError)
    assert "sqlite or redis" in str(result.exception)


def test_materialize_takes_the_sources_the_newest_finished_pipeline_run_wrote(tmp_path):
    """kfp.local leaves them at <pipeline_root>/<run>/featurize/feast_sources, not under data_dir/raw."""
    from kfops.adapters.kfp_local import EXECUTOR_OUTPUT
    from kfops.cli.features import _copy_sources, _sources_stale, pipeline_feature_sources

    cfg = KfopsConfig(data_dir=tmp_path)
    assert pipeline_feature_sources(cfg) is None
    runs = {}
    for run, finished in (("kfops-training-2026-01-01-10-00-00-000001", True),
                          ("kfops-training-2026-01-02-10-00-00-000001", True),
                          ("kfops-training-2026-01-03-10-00-00-000001", False)):  # still running, or failed
        sources = cfg.pipeline_root / run / "featurize" / "feast_sources"
        sources.mkdir(parents=True)
        (sources / "weather.parquet").write_bytes(run.encode())
        if finished:
            (sources.parent / EXECUTOR_OUTPUT).write_text("{}")
        runs[run] = sources
    assert pipeline_feature_sources(cfg) == runs["kfops-training-2026-01-02-10-00-00-000001"]
    destination = cfg.feast_dir / "sources"
    assert _copy_sources(pipeline_feature_sources(cfg), destination) == 1
    assert not _sources_stale(destination, pipeline_feature_sources(cfg))


def test_materialize_without_any_run_says_where_the_sources_come_from(tmp_path):
    from typer.testing import CliRunner

    from kfops.cli.features import app

    result = CliRunner().invoke(app, ["materialize", "--set", f"data_dir={tmp_path}"])
    assert isinstance(result.exception, DataError)
    message = f"{result.exception} {result.exception.hint}"
    assert "featurize/feast_sources" in message and "kfops run training" in message
