"""featurize stops when a feature view joined no row of the training set (kfops.steps.featurize.check_views_joined).

0% join coverage is not sparse data but keys spelled two ways ('237' in the entity frame, '237.0'
in the source): training would go on without the view's features, and the model be blessed.
"""

from __future__ import annotations

import pandas as pd
import pytest

from kfops.config import KfopsConfig
from kfops.errors import DataError
from kfops.steps.featurize import MIN_ROWS_FOR_JOIN_CHECK, check_views_joined

REFS = ["customers:segment", "customers:region", "stores:store_type"]


def config() -> KfopsConfig:
    cfg = KfopsConfig()
    cfg.features = cfg.features.model_copy(update={"feature_refs": REFS})
    return cfg


def training_set(rows: int, joined_customers: int = 0) -> pd.DataFrame:
    segment = ["vip"] * joined_customers + [None] * (rows - joined_customers)
    return pd.DataFrame({
        "order_id": [f"o{i}" for i in range(rows)],
        "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
        "customer_id": [str(237 + i % 3) for i in range(rows)],
        "store_id": "S01",
        "segment": segment,
        "region": segment,
        "store_type": "mall",
    })


def write_customers_source(folder):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"customer_id": ["237.0", "238.0"], "event_timestamp": pd.Timestamp("2023-01-01", tz="UTC"),
                  "segment": ["vip", "new"], "region": ["n", "s"]}).to_parquet(folder / "customers.parquet")


def test_a_view_that_joined_no_row_fails_naming_its_keys_on_both_sides(tmp_path):
    write_customers_source(tmp_path)
    with pytest.raises(DataError) as raised:
        check_views_joined(training_set(MIN_ROWS_FOR_JOIN_CHECK), config(), tmp_path)
    message = str(raised.value)
    assert "feature view 'customers' joined none of the 50 rows" in message
    assert "(segment, region) are missing in every row" in message
    assert "Join key(s) customer_id" in message
    assert "'237'" in message and "'237.0'" in message  # a sample of each side's keys
    assert "canonical_keys" in raised.value.hint and "features.feature_refs" in raised.value.hint


def test_a_view_without_a_source_file_here_is_still_named(tmp_path):
    with pytest.raises(DataError, match=r"feature view 'customers'.*not read: no customers\.parquet"):
        check_views_joined(training_set(60), config(), tmp_path / "nowhere")


def test_a_view_that_joined_some_rows_or_a_tiny_set_passes(tmp_path):
    write_customers_source(tmp_path)
    check_views_joined(training_set(60, joined_customers=1), config(), tmp_path)  # sparse, not broken
    check_views_joined(training_set(MIN_ROWS_FOR_JOIN_CHECK - 1), config(), tmp_path)  # too few rows to say


@pytest.mark.slow  # imports Feast and runs its point-in-time join
def test_a_float_keyed_feature_table_joins_every_event(tmp_path):
    """The audit's case end to end: a customers.csv with a float customer_id and one missing,
    events with an int one. It crashed inside Feast (a null key), or joined nothing."""
    from kfops.adapters import feast_store
    from kfops.core.files import import_callable
    from kfops.steps.featurize import build_entities
    from tests.unit.test_featureset_keys import float_keyed_shop

    _, cfg = float_keyed_shop(tmp_path)
    tables = import_callable(cfg.require("dataset.loader"), project_dir=cfg.resolved_against)(cfg)
    entities = build_entities(cfg, tables, tmp_path / "sources")
    joined = feast_store.build_training_set(entities, cfg, tmp_path / "sources")
    assert len(joined) >= MIN_ROWS_FOR_JOIN_CHECK
    assert joined["segment"].notna().all() and joined["region"].notna().all()  # were null in 100% of rows
    check_views_joined(joined, cfg, tmp_path / "sources")


def test_the_drift_and_backtest_windows_run_the_same_check(tmp_path, monkeypatch):
    """window_features (drift checks, backtests) compared a view's all-null columns as if they were data."""
    import datetime as dt

    from kfops.adapters import feast_store
    from kfops.core import files
    from kfops.steps import featurize

    write_customers_source(tmp_path / "work" / "sources")
    monkeypatch.setattr(files, "import_callable", lambda *args, **kwargs: lambda cfg: {})
    monkeypatch.setattr(featurize, "build_entities", lambda cfg, tables, sources: None)
    monkeypatch.setattr(feast_store, "build_training_set", lambda entities, cfg, sources: training_set(80))
    cfg = config().model_copy(update={"dataset": KfopsConfig().dataset.model_copy(update={"loader": "any:loader"})})
    with pytest.raises(DataError, match=r"feature view 'customers' joined none of the 80 rows of the window "
                                        r"2024-01-01\.\.2024-01-31"):
        featurize.window_features(cfg, dt.date(2024, 1, 1), dt.date(2024, 1, 31), tmp_path / "work")
    monkeypatch.setattr(feast_store, "build_training_set", lambda entities, cfg, sources: training_set(80, 5))
    assert len(featurize.window_features(cfg, dt.date(2024, 1, 1), dt.date(2024, 1, 31), tmp_path / "work")) == 80


def test_each_views_share_of_rows_with_features_is_measured():
    """A view joined for 29% of the rows passed unnoticed (only 0% fails): featurize keeps each
    view's share with the training set's metadata, so a share that falls from run to run shows."""
    from kfops.steps.featurize import features_found

    assert features_found(training_set(100, joined_customers=29), config()) == {"customers": 0.29, "stores": 1.0}
    assert features_found(training_set(100).drop(columns="store_type"), config()) == {"customers": 0.0}
