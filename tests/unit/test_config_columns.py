"""A config that names columns the data lacks fails before training, naming them all.

The data here is a small shop-orders frame, nothing like flights: kfops' checks must not assume it.
"""

from __future__ import annotations

import pandas as pd
import pytest

from kfops.config import KfopsConfig
from kfops.core.columns import check_config_columns, missing_config_columns
from kfops.errors import EXIT_USAGE, ConfigError, MissingColumnsError

ORDERS_MODULE = __name__


def orders_config(**sections) -> KfopsConfig:
    settings = {
        "dataset": {"loader": f"{ORDERS_MODULE}:orders_tables", "entity_builder": f"{ORDERS_MODULE}:orders_entities",
                    "row_id": "order_id", "label": "returned", "event_timestamp": "ordered_at"},
        "validation": {"tables": ["orders"]},
        "features": {"feature_refs": ["customer_stats:return_rate_30d"], "request_features": ["basket_value", "shop"],
                     "categorical": ["shop"]},
        "evaluate": {"gate": {"slices": ["shop"]}, "invariant_columns": ["order_id"],
                     "non_decreasing_columns": ["return_rate_30d"]},
    }
    for section, values in sections.items():
        settings[section] = {**settings.get(section, {}), **values}
    return KfopsConfig.model_validate(settings)


def orders_tables(cfg: KfopsConfig) -> dict[str, pd.DataFrame]:
    return {"orders": pd.DataFrame({
        "order_id": [1, 2, 3], "customer": ["a", "b", "a"], "shop": ["north", "south", "north"],
        "basket_value": [12.0, 80.5, 33.0], "returned": [0, 1, 0],
        "ordered_at": pd.to_datetime(["2024-03-01", "2024-03-02", "2024-03-03"], utc=True),
    })}


def orders_entities(tables: dict[str, pd.DataFrame], cfg: KfopsConfig) -> pd.DataFrame:
    return tables["orders"].copy()


def test_a_config_that_matches_the_data_passes():
    cfg = orders_config()
    columns = orders_entities(orders_tables(cfg), cfg).columns
    assert missing_config_columns(columns, cfg, joined=["return_rate_30d"]) == {}
    check_config_columns(columns, cfg, joined=["return_rate_30d"])


def test_every_missing_name_is_listed_with_the_key_that_names_it():
    cfg = orders_config(dataset={"row_id": "id", "label": "is_returned"},
                        evaluate={"gate": {"slices": ["shop", "region"]}, "invariant_columns": ["coupon"]})
    columns = orders_entities(orders_tables(cfg), cfg).columns
    with pytest.raises(MissingColumnsError) as err:
        check_config_columns(columns, cfg, joined=["return_rate_30d"])
    assert err.value.missing == {"dataset.row_id": ["id"], "dataset.label": ["is_returned"],
                                 "evaluate.gate.slices": ["region"], "evaluate.invariant_columns": ["coupon"]}
    message = str(err.value)
    assert "evaluate.gate.slices: region" in message and "dataset.row_id: id" in message
    assert "it has: order_id, customer, shop" in message
    assert isinstance(err.value, ConfigError) and err.value.exit_code == EXIT_USAGE


def test_entity_keys_must_be_in_the_entity_frame_not_only_among_joined_features():
    cfg = orders_config(features={"request_features": ["basket_value", "return_rate_30d"]})
    columns = orders_entities(orders_tables(cfg), cfg).columns
    # return_rate_30d comes from the Feast join: a request-time feature must be in the entity frame itself.
    assert missing_config_columns(columns, cfg, joined=["return_rate_30d"]) == {
        "features.request_features": ["return_rate_30d"]}


def test_behavioural_columns_are_not_checked_when_the_checks_are_off():
    cfg = orders_config(evaluate={"behavioural_checks": False, "invariant_columns": ["nothing_like_it"]})
    assert missing_config_columns(orders_tables(cfg)["orders"].columns, cfg, joined=["return_rate_30d"]) == {}


def test_neutral_defaults_check_nothing_but_the_keys():
    cfg = KfopsConfig.model_validate({"dataset": {"row_id": "order_id", "label": "returned",
                                                  "event_timestamp": "ordered_at"}})
    assert missing_config_columns(["order_id", "returned", "ordered_at"], cfg) == {}


def test_featurize_refuses_the_entity_frame_before_any_join(tmp_path):
    from kfops.steps.featurize import build_entities

    cfg = orders_config(evaluate={"non_decreasing_columns": ["rainfall"]})
    with pytest.raises(MissingColumnsError, match=r"evaluate\.non_decreasing_columns: rainfall"):
        build_entities(cfg, orders_tables(cfg), tmp_path / "sources")
    assert not (tmp_path / "sources").exists()  # the dataset has no sources writer: nothing was written


def test_train_refuses_a_training_set_without_the_gate_columns_before_fitting(tmp_path):
    from kfops.steps.train import train

    cfg = orders_config().model_copy(update={"data_dir": tmp_path / "state"})
    frame = orders_entities(orders_tables(cfg), cfg).assign(return_rate_30d=[0.1, 0.5, 0.2], split="train")
    frame = frame.drop(columns=["shop"])
    frame.to_parquet(tmp_path / "training_set.parquet")
    with pytest.raises(MissingColumnsError) as err:
        train(cfg, tmp_path / "training_set.parquet", tmp_path / "model", "run-1")
    assert err.value.missing == {"features.request_features": ["shop"], "features.categorical": ["shop"],
                                 "evaluate.gate.slices": ["shop"]}
    assert not (tmp_path / "model").exists() and not (tmp_path / "state").exists()  # nothing fitted or logged
