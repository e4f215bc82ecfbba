"""Entity keys have one spelling: kfops.core.featureset.canonical_keys, used by the sources
writer, the scaffolded entity frame and the in-memory online lookup.

The audit's case: a customers table whose ``customer_id`` is float64 (pandas' type once a value
is missing) joined to events whose ``customer_id`` is int. The sources held '237.0', the entity
frame '237': every customer feature was null in training, and nothing failed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfops.core.featureset import Entity, Feature, FeatureSet, View, canonical_key, canonical_keys
from kfops.errors import DataError

FEATURES = FeatureSet(
    entities=[Entity("customer_id"), Entity("store_no", "int")],
    views=[View("customers", keys=["customer_id"], timestamp="signup_at",
                features=[Feature("segment", "string"), Feature("zip", "string")])],
)


def test_integral_floats_and_ints_spell_alike_and_text_stays_as_it_is():
    values = pd.Series([237.0, np.nan, 237, np.int64(12), "12", "007", 7, 12.5, None, pd.NA], dtype=object)
    assert canonical_keys(values).tolist() == ["237", None, "237", "12", "12", "007", "7", "12.5", None, None]
    assert canonical_keys(pd.Series([1.0, None])).tolist() == ["1", None]  # a float64 column with a NaN
    assert canonical_keys(pd.Series([5, None], dtype="Int64")).tolist() == ["5", None]
    assert canonical_key(np.float32(3.0)) == "3" and canonical_key(True) == "True"


@pytest.mark.parametrize("values", [
    ["a", None, "b"], [None, None], ["a", np.nan], [pd.NA, "x"], [1, "a"], [1.0, 2.5, None], ["007", 7],
    pd.array(["S1", pd.NA], dtype="string"), [], [b"x", "y"],
])
def test_a_column_spells_its_keys_as_each_key_is_spelled_alone(values):
    """canonical_keys passes a column of text through without a call per value: the same spelling."""
    column = pd.Series(values, name="key", index=range(10, 10 + len(values)), dtype=object if not len(values) else None)
    spelled = canonical_keys(column)
    assert spelled.tolist() == [canonical_key(v) for v in column.astype(object)]
    assert spelled.dtype == object and spelled.name == "key" and spelled.index.equals(column.index)


def test_a_float_key_in_the_sources_matches_the_int_key_of_the_events(tmp_path, capsys):
    customers = pd.DataFrame({
        "customer_id": [237.0, 12.0, np.nan],  # float64: one id is missing
        "signup_at": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True),
        "segment": ["vip", "new", "new"],
        "zip": [10001.0, np.nan, 2134.0],
    })
    events = pd.Series([237, 12, 237], name="customer_id")  # int64

    paths = FEATURES.write_sources({"customers": customers}, tmp_path)
    written = pd.read_parquet(paths["customers"])
    entity_keys = FEATURES.entity_column("customer_id", events)

    assert written["customer_id"].tolist() == ["237", "12"]  # was '237.0', '12.0', and a None Feast refused
    assert set(entity_keys) <= set(written["customer_id"])
    assert written["zip"].tolist() == ["10001", None]  # a text feature is spelled as keys are
    assert "1 of 3 row(s) of table 'customers' have no customer_id and are left out" in capsys.readouterr().out


def test_the_entity_column_follows_the_declared_type():
    assert FEATURES.entity_column("store_no", pd.Series([3.0, 4.0])).tolist() == [3, 4]
    assert str(FEATURES.entity_column("store_no", pd.Series([3.0, None])).dtype) == "Int64"
    with pytest.raises(DataError, match="store_no is declared int but holds fractions"):
        FEATURES.entity_column("store_no", pd.Series([3.5]))
    assert FEATURES.entity_column("undeclared", pd.Series([1.0, None])).tolist() == ["1", None]  # text
    assert FEATURES.entity_column("customer_id", pd.Series(["007", "7"])).tolist() == ["007", "7"]


def test_the_in_memory_lookup_finds_a_key_sent_as_a_number_or_as_text():
    from kfops.serving.runtime.lookup import InMemoryLookup

    lookup = InMemoryLookup({"customer_id": pd.DataFrame({"customer_id": [12.0, 237.0], "segment": ["new", "vip"]})})
    found = lookup([{"customer_id": 12}, {"customer_id": "12"}, {"customer_id": "237"}, {"customer_id": "12.0"}])
    assert found["segment"].tolist()[:3] == ["new", "new", "vip"]
    assert pd.isna(found["segment"].iloc[3])  # '12.0' is text: not the number 12


def float_keyed_shop(tmp_path):
    """A project `kfops init` scaffolds from a shop whose customers.csv has a float customer_id
    (one is missing) and whose orders have it as int; returns the scaffold and its config."""
    from kfops.config import load_config
    from kfops.datasets.scaffold import InitSpec, parse_label, parse_table, scaffold
    from tests.support.shop_data import generate_shop

    lake = tmp_path / "lake"
    lake.mkdir()
    generate_shop(lake, days=14, orders_per_day=40, customers=150, stores=6)
    orders = pd.read_parquet(lake / "orders.parquet")
    orders["customer_id"] = orders["customer_id"].str[1:].astype("int64")  # C0076 -> 76
    orders.to_parquet(lake / "orders.parquet")
    customers = pd.read_csv(lake / "customers.csv")
    customers["customer_id"] = customers["customer_id"].str[1:].astype("int64")
    customers = pd.concat([customers, customers.iloc[[0]].assign(customer_id=None)])  # one id missing
    customers.to_csv(lake / "customers.csv", index=False)
    assert pd.read_csv(lake / "customers.csv")["customer_id"].dtype == "float64"

    spec = InitSpec(tables=[parse_table(f"{lake}/orders.parquet:timestamp=ordered_at"),
                            parse_table(f"{lake}/customers.csv:timestamp=signup_at")],
                    entities=["customer_id"], label=parse_label("big = amount > 100"))
    done = scaffold(spec, tmp_path / "shop")
    return done, load_config(done.target / "kfops.yaml", [f"data_dir={tmp_path / 'data'}"], environ={})


def test_a_scaffolded_plug_in_joins_a_float_keyed_table_to_int_keyed_events(tmp_path, capsys):
    """The plug-in `kfops init` writes: its entity frame and its sources spell the keys alike."""
    from kfops.core.files import import_callable

    done, cfg = float_keyed_shop(tmp_path)
    plug_in = f"{done.module}:" + "{}"
    tables = import_callable(plug_in.format("load_tables"), search_path=done.target)(cfg)
    entities = import_callable(plug_in.format("build_entity_frame"), search_path=done.target)(tables, cfg)
    paths = import_callable(plug_in.format("write_feature_sources"), search_path=done.target)(tables, tmp_path / "src")

    source_keys = set(pd.read_parquet(paths["customers"])["customer_id"])
    assert "76" in source_keys and not any(k.endswith(".0") for k in source_keys)
    assert set(entities["customer_id"]) <= source_keys  # each event finds its customer
    assert "have no customer_id and are left out" in capsys.readouterr().out
