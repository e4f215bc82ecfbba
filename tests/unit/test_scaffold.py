"""`kfops init` (kfops.datasets.scaffold) and the one declaration of features (kfops.core.featureset)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from kfops.config import load_config
from kfops.core.featureset import Entity, Feature, FeatureSet, View
from kfops.datasets.scaffold import InitSpec, parse_label, parse_table, scaffold
from kfops.errors import ConfigError, DataError
from tests.support.shop_data import generate_shop

# --- the spec ------------------------------------------------------------------------------------


def test_table_spec_reads_path_timestamp_and_name():
    spec = parse_table("data/orders.parquet:timestamp=ordered_at")
    assert (spec.name, str(spec.path), spec.timestamp) == ("orders", "data/orders.parquet", "ordered_at")
    assert parse_table("x/customers.csv").timestamp is None
    assert parse_table("dump.csv.gz:timestamp=at,name=returns").name == "returns"
    # The usage's [,name=NAME] without a timestamp before it: 'stores.csv,name=shops' read as a file name.
    assert parse_table("x/stores.csv,name=shops") == parse_table("x/stores.csv:name=shops")
    assert parse_table("x/Stores.CSV,name=shops,timestamp=at").timestamp == "at"
    with pytest.raises(ConfigError, match="unknown option 'ts'"):
        parse_table("a.csv:ts=x")
    with pytest.raises(ConfigError, match="neither parquet nor CSV"):
        parse_table("a.json")
    # A table in an object store keeps its URI whole; the options still follow the last ':'.
    remote = parse_table("s3://lake-bucket/shop/orders.parquet:timestamp=ordered_at")
    assert (remote.name, remote.path, remote.timestamp) == ("orders", "s3://lake-bucket/shop/orders.parquet",
                                                            "ordered_at")


def test_the_plug_in_reads_every_table_from_one_folder_or_prefix():
    from kfops.datasets.scaffold import _source_layout

    tables = [parse_table("s3://b/lake/2024/orders.parquet"), parse_table("s3://b/lake/customers.csv")]
    assert _source_layout(tables) == ("s3://b/lake", {"orders": "2024/orders.parquet", "customers": "customers.csv"})
    assert _source_layout([parse_table("s3://b/orders.csv")]) == ("s3://b", {"orders": "orders.csv"})
    with pytest.raises(ConfigError, match="in 2 buckets"):
        _source_layout([parse_table("s3://a/orders.csv"), parse_table("s3://b/customers.csv")])
    with pytest.raises(ConfigError, match="some tables are files here and some are in an object store"):
        _source_layout([parse_table("s3://a/orders.csv"), parse_table("lake/customers.csv")])


def test_label_spec_later_table_and_condition_forms():
    later = parse_label("returned = returns where reason != 'size' within 30d on order_id")
    assert (later.name, later.table, later.condition, later.horizon, later.on) == (
        "returned", "returns", "reason != 'size'", dt.timedelta(days=30), ("order_id",))
    assert parse_label("churned = orders within 2w").horizon == dt.timedelta(weeks=2)
    same = parse_label("late = delay_min > 15")
    assert same.table is None and same.condition == "delay_min > 15"
    with pytest.raises(ConfigError, match="must look like"):
        parse_label("no equals sign")


# --- the declaration ---------------------------------------------------------------------------------


def declared() -> FeatureSet:
    return FeatureSet(
        entities=[Entity("customer_id")],
        views=[View("customers", keys=["customer_id"], timestamp="signup_at",
                    features=[Feature("segment", "string"), Feature("age", "float"),
                              Feature("customer_region", "string", column="region")])],
    )


@pytest.mark.slow  # imports Feast
def test_one_declaration_gives_refs_sources_and_feast_schema(tmp_path):
    features = declared()
    assert features.feature_refs() == ["customers:segment", "customers:age", "customers:customer_region"]
    assert features.categorical() == ["segment", "customer_region"]
    raw = pd.DataFrame({"customer_id": [1, 2], "signup_at": ["2024-01-01T10:00:00Z", "2024-01-02"],
                        "segment": ["new", "vip"], "age": [30, None], "region": ["n", "s"], "extra": [0, 0]})
    paths = features.write_sources({"customers": raw}, tmp_path)
    written = pd.read_parquet(paths["customers"])
    assert list(written.columns) == ["customer_id", "event_timestamp", "segment", "age", "customer_region"]
    assert written["customer_id"].tolist() == ["1", "2"] and str(written["event_timestamp"].dtype) == "datetime64[us, UTC]"

    from kfops.adapters.feast_definitions import feast_objects

    objects = {o.name: o for o in feast_objects(features, tmp_path)}
    view = objects["customers"]
    assert [f.name for f in view.features] == ["segment", "age", "customer_region"]
    assert view.entities == ["customer_id"] and view.batch_source.path == str(paths["customers"])


def test_a_declaration_refuses_a_feature_twice_or_an_undeclared_key():
    with pytest.raises(ConfigError, match="declared in views 'a' and 'b'"):
        FeatureSet([Entity("k")], [View("a", ["k"], [Feature("x")]), View("b", ["k"], [Feature("x")])])
    with pytest.raises(ConfigError, match="not declared as an entity"):
        FeatureSet([Entity("k")], [View("a", ["other"], [Feature("x")])])
    with pytest.raises(DataError, match="lacks column"):
        declared().write_sources({"customers": pd.DataFrame({"customer_id": ["1"]})}, "/nonexistent")


def test_config_takes_feature_refs_from_the_declaration(tmp_path):
    (tmp_path / "mine.py").write_text(
        "from kfops.core.featureset import Entity, Feature, FeatureSet, View\n"
        "FEATURES = FeatureSet([Entity('k')], [View('v', ['k'], [Feature('x'), Feature('c', 'string')])])\n")
    (tmp_path / "kfops.yaml").write_text("features:\n  feature_set: mine:FEATURES\n  categorical: [r]\n")
    cfg = load_config(tmp_path / "kfops.yaml", environ={})
    assert cfg.features.feature_refs == ["v:x", "v:c"]
    assert cfg.features.categorical == ["r", "c"]
    # Written twice and different: refused, naming the difference.
    with pytest.raises(ConfigError, match=r"declared but not listed \['v:c'\]"):
        load_config(tmp_path / "kfops.yaml", ["features.feature_refs=[v:x]"], environ={})


# --- the scaffold ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lake")
    generate_shop(folder, days=14, orders_per_day=40, customers=150, stores=6)
    return folder


def shop_spec(lake, **changes) -> InitSpec:
    values = {
        "tables": [parse_table(f"{lake}/orders.parquet:timestamp=ordered_at"),
                   parse_table(f"{lake}/customers.csv:timestamp=signup_at"),
                   parse_table(f"{lake}/stores.parquet"),
                   parse_table(f"{lake}/returns.csv:timestamp=returned_at")],
        "entities": ["customer_id", "store_id"],
        "label": parse_label("returned = returns within 30d"),
    }
    return InitSpec(**{**values, **changes})


@pytest.fixture(scope="module")
def scaffolded(lake, tmp_path_factory):
    target = tmp_path_factory.mktemp("project") / "shop"
    return scaffold(shop_spec(lake), target)


def test_scaffold_infers_events_keys_views_and_ttls(scaffolded):
    done = scaffolded
    assert (done.events, done.row_id, done.label.on) == ("orders", "order_id", ("order_id",))
    assert done.request_features == ["amount", "category", "channel", "items"]
    views = {v.name: v for v in done.views}
    assert views["customers"].keys == ["customer_id"] and views["customers"].ttl is None
    assert "one row per customer_id" in views["customers"].ttl_why
    assert [f[0] for f in views["stores"].features] == ["store_type", "size_sqm"]
    assert done.forbidden == ["returned_at", "reason"]
    assert 0 < done.label_rate < 1
    cfg = load_config(done.target / "kfops.yaml", environ={})
    assert cfg.features.feature_refs == done.feature_refs
    assert cfg.dataset.row_id == "order_id" and cfg.validation.tables == ["orders", "customers", "stores", "returns"]
    # A return may come 30 days after the order: monitoring and the backtest wait that long for a label.
    assert cfg.retrain.label_delay == dt.timedelta(days=30)


@pytest.mark.slow  # runs Great Expectations
def test_profiled_suites_say_why_and_hold_on_the_data(scaffolded):
    from kfops.adapters import gx_validation as validation
    from kfops.core.files import import_callable

    suite = json.loads((scaffolded.target / "expectations" / "orders.json").read_text())
    amount = next(e for e in suite["expectations"]
                  if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "amount")
    assert "max observed" in amount["meta"]["why"] and "widened 10%" in amount["meta"]["why"]
    assert amount["kwargs"]["min_value"] >= 0  # nothing negative observed: the floor stays 0
    category = next(e for e in suite["expectations"]
                    if e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == "category")
    assert sorted(category["kwargs"]["value_set"]) == ["apparel", "electronics", "home", "shoes"]
    for path in (scaffolded.target / "expectations").glob("*.json"):
        checks = json.loads(path.read_text())["expectations"]
        assert all(e["meta"].get("why") for e in checks), path.name

    cfg = load_config(scaffolded.target / "kfops.yaml", environ={})
    tables = import_callable(f"{scaffolded.module}:load_tables", search_path=scaffolded.target)(cfg)
    result = validation.validate_tables(tables, cfg)
    assert result.success, validation.format_failures(result)

    broken = {**tables, "orders": tables["orders"].assign(amount=-tables["orders"]["amount"])}
    result = validation.validate_tables(broken, cfg)
    assert not result.success
    failed = [f for f in result.failures if f["column"] == "amount"]
    assert failed and "max observed" in failed[0]["why"]


def test_scaffold_makes_a_row_id_and_takes_a_condition_label(lake, tmp_path):
    orders = pd.read_parquet(lake / "orders.parquet").drop(columns="order_id")
    orders["refunded"] = (orders["amount"] > 100).astype(int)
    orders.to_parquet(tmp_path / "orders.parquet")
    spec = shop_spec(lake, tables=[parse_table(f"{tmp_path}/orders.parquet:timestamp=ordered_at"),
                                   parse_table(f"{lake}/customers.csv:timestamp=signup_at")],
                     entities=["customer_id"], label=parse_label("refund = refunded == 1"))
    done = scaffold(spec, tmp_path / "project")
    assert done.row_id == "row_id" and "refunded" in done.forbidden and "refunded" not in done.request_features
    assert 0 < done.label_rate < 1
    # The data cannot say when a same-table label is known: no delay, and the config says to set it.
    assert load_config(done.target / "kfops.yaml", environ={}).retrain.label_delay == dt.timedelta(0)
    assert "label_delay: 0s   # how long after an event its label exists" in (done.target / "kfops.yaml").read_text()


def test_scaffold_errors_name_the_problem(lake, tmp_path):
    with pytest.raises(ConfigError, match="not among the tables"):
        scaffold(shop_spec(lake, label=parse_label("x = refunds within 3d")), tmp_path / "a")
    with pytest.raises(DataError, match="entity key 'shopper_id' is in none of the tables"):
        scaffold(shop_spec(lake, entities=["shopper_id"]), tmp_path / "b")
    bad_name = shop_spec(lake)
    bad_name.project = "My Shop"
    with pytest.raises(ConfigError, match="--project 'My Shop' is not a project name") as raised:
        scaffold(bad_name, tmp_path / "c")
    assert "--project my_shop" in raised.value.hint and not (tmp_path / "c").exists()  # refused before writing
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        scaffold(shop_spec(lake), tmp_path / "full")


def test_a_plug_in_beside_kfops_yaml_needs_no_pythonpath(tmp_path, monkeypatch):
    import sys

    from kfops.core.files import import_callable

    name = f"plugin_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text("def load_tables(cfg):\n    return {'t': cfg}\n")
    monkeypatch.delenv("KFOPS_PROJECT_DIR", raising=False)
    with pytest.raises(ConfigError, match=f"cannot import '{name}'"):
        import_callable(f"{name}:load_tables")
    monkeypatch.setenv("KFOPS_PROJECT_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the folder is appended for the test only
    try:
        assert import_callable(f"{name}:load_tables")(1) == {"t": 1}
        assert sys.path[-1] == str(tmp_path.resolve())
    finally:
        sys.modules.pop(name, None)


def test_a_plug_in_beside_the_config_loads_in_a_command_that_runs_in_process(tmp_path, monkeypatch):
    """`kfops backtest` and `kfops features` import the plug-in in the CLI's own process, where no
    KFOPS_PROJECT_DIR is set: the folder of the kfops.yaml that names it is enough."""
    import sys

    from kfops.core.files import import_callable
    from kfops.core.requests import load_request_builder

    name = f"inproc_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(
        "from kfops.core.requests import RawField\n"
        "def load_tables(cfg):\n    return {'t': cfg}\n"
        "class Builder:\n    name = 'b'\n    fields = (RawField('store_id', 'key'),)\n"
        "    def derive(self, columns, rows):\n        return columns\n"
        "BUILDER = Builder()\n")
    (tmp_path / "kfops.yaml").write_text(f"dataset:\n  loader: {name}:load_tables\n  request_builder: {name}:BUILDER\n")
    monkeypatch.delenv("KFOPS_PROJECT_DIR", raising=False)
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setattr(sys, "path", list(sys.path))
    cfg = load_config(tmp_path / "kfops.yaml", environ={})
    try:
        with pytest.raises(ConfigError, match=f"cannot import '{name}'"):
            import_callable(cfg.dataset.loader)  # no project folder: not found
        assert import_callable(cfg.dataset.loader, project_dir=cfg.resolved_against)(1) == {"t": 1}
        assert load_request_builder(cfg.dataset.request_builder, cfg.resolved_against).name == "b"
    finally:
        sys.modules.pop(name, None)


def test_init_reads_ambiguous_day_first_dates_when_told_and_so_does_the_written_loader(lake, tmp_path):
    """03/04/2024 cannot tell its own order: init refused the column and its hint pointed to a loader
    argument `kfops init` had no way to set."""
    from kfops.core.files import import_callable

    orders = pd.read_parquet(lake / "orders.parquet")
    orders = orders[orders["ordered_at"].dt.day <= 12]  # every value reads both ways
    written = orders.assign(ordered_at=orders["ordered_at"].dt.strftime("%d/%m/%Y %H:%M:%S"))
    written.to_csv(tmp_path / "orders.csv", index=False)
    tables = [parse_table(f"{tmp_path}/orders.csv:timestamp=ordered_at"), *shop_spec(lake).tables[1:]]
    with pytest.raises(DataError, match="column 'ordered_at' reads two ways") as refused:
        scaffold(shop_spec(lake, tables=tables), tmp_path / "refused")
    assert "--day-first" in refused.value.hint
    assert not (tmp_path / "refused").exists()

    done = scaffold(shop_spec(lake, tables=tables, dayfirst=True), tmp_path / "shop")
    assert "DAYFIRST = True" in (done.target / f"{done.module}.py").read_text()
    cfg = load_config(done.target / "kfops.yaml", environ={})
    loaded = import_callable(f"{done.module}:read_table", search_path=done.target)(cfg.dataset.source_dir, "orders")
    assert sorted(loaded["ordered_at"]) == sorted(orders["ordered_at"].dt.floor("s"))


def test_init_writes_the_server_port_it_is_given(lake, tmp_path):
    """Every project `kfops init` wrote served on 8080, so a second project's run failed at deploy
    while the first one's server ran (the README stopped it first)."""
    done = scaffold(shop_spec(lake, http_port=8081), tmp_path / "shop")
    assert load_config(done.target / "kfops.yaml", environ={}).serving.http_port == 8081
    default = scaffold(shop_spec(lake), tmp_path / "default")
    assert load_config(default.target / "kfops.yaml", environ={}).serving.http_port == 8080


def test_column_names_that_yaml_would_misread_are_written_to_kfops_yaml_as_they_are(lake, tmp_path):
    """Init wrote names into kfops.yaml bare: a label column 'Refunded?' made the draft unreadable
    (`[Refunded?]` is not a YAML flow sequence), and a column named 'no' would read as false."""
    orders = pd.read_parquet(lake / "orders.parquet").drop(columns=["order_id", "store_id"])
    orders["Refunded?"] = (orders["amount"] > 100).astype(int)
    orders = orders.rename(columns={"amount": "Amount ($)", "category": "no", "channel": "via: web, #1"})
    orders.to_parquet(tmp_path / "orders.parquet")
    spec = shop_spec(lake, tables=[parse_table(f"{tmp_path}/orders.parquet:timestamp=ordered_at"),
                                   parse_table(f"{lake}/customers.csv:timestamp=signup_at")],
                     entities=["customer_id"], label=parse_label("refund = `Refunded?` == 1"))
    done = scaffold(spec, tmp_path / "project")
    cfg = load_config(done.target / "kfops.yaml", environ={})
    assert cfg.features.forbidden_columns == ["Refunded?"]
    assert set(cfg.features.request_features) == {"Amount ($)", "no", "via: web, #1", "items"}
    assert set(cfg.features.categorical) >= {"no", "via: web, #1"}
    assert cfg.evaluate.gate.slices == ["no"]


def test_columns_no_model_can_learn_from_are_left_out_and_named(lake, tmp_path):
    """A column with no value, or one value and no nulls, became a request feature that every client
    had to send and every drift check tested."""
    orders = pd.read_parquet(lake / "orders.parquet")
    orders = orders.assign(coupon=None, currency="EUR", gift=orders["items"].where(orders["items"] > 2).notna()
                           .map({True: "yes", False: None}))  # one value, but its nulls tell something
    orders.to_parquet(tmp_path / "orders.parquet")
    customers = pd.read_csv(lake / "customers.csv").assign(country="DE")
    customers.to_csv(tmp_path / "customers.csv", index=False)
    spec = shop_spec(lake, tables=[parse_table(f"{tmp_path}/orders.parquet:timestamp=ordered_at"),
                                   parse_table(f"{tmp_path}/customers.csv:timestamp=signup_at"),
                                   *shop_spec(lake).tables[2:]])
    done = scaffold(spec, tmp_path / "shop")
    assert done.left_out == {"orders.coupon": "no value", "orders.currency": "one value, 'EUR'",
                             "customers.country": "one value, 'DE'"}
    cfg = load_config(done.target / "kfops.yaml", environ={})
    assert "gift" in cfg.features.request_features
    assert not {"coupon", "currency", "country"} & {*cfg.features.request_features, *cfg.features.feature_refs,
                                                    *[ref.split(":")[1] for ref in cfg.features.feature_refs]}
    assert "# left out, as no model can learn from them: orders.coupon (no value)" in (
        done.target / "kfops.yaml").read_text()


def test_the_gate_slices_by_a_column_of_few_values_or_by_none(lake, tmp_path):
    """Init sliced the gate by the first string request feature whatever its values: a column of 2,000
    merchants made 2,000 small slices, whose noisiest AUC change refused challenger after challenger."""
    orders = pd.read_parquet(lake / "orders.parquet")
    rng = np.random.default_rng(0)
    promo = pd.Series(rng.choice([f"P{i:03d}" for i in range(100)], len(orders)), name="promo")
    many_first = pd.concat([promo, orders], axis=1)  # the first string column, 100 values
    many_first.to_parquet(tmp_path / "orders.parquet")
    spec = shop_spec(lake, tables=[parse_table(f"{tmp_path}/orders.parquet:timestamp=ordered_at"),
                                   *shop_spec(lake).tables[1:]])
    done = scaffold(spec, tmp_path / "shop")
    cfg = load_config(done.target / "kfops.yaml", environ={})
    assert cfg.features.request_features[0] == "promo" and cfg.evaluate.gate.slices == ["category"]

    only_many = many_first.drop(columns=["category", "channel"])
    only_many.to_parquet(tmp_path / "orders.parquet")
    done = scaffold(spec, tmp_path / "shop2")
    cfg = load_config(done.target / "kfops.yaml", environ={})
    assert "promo" in cfg.features.request_features and cfg.evaluate.gate.slices == []
    assert "slices: []  # no string request feature has at most 20 values" in (done.target / "kfops.yaml").read_text()


def test_infinite_values_are_kept_out_of_the_profiled_range_so_validation_refuses_them(lake, tmp_path):
    """A float column holding inf was profiled with `max_value: Infinity`: validation passed it, and
    XGBoost's own error stopped the train step. Init now bounds the finite values, says so, and
    validation names the column with the infinities shown as such (not as null)."""
    from kfops.adapters import gx_validation as validation
    from kfops.core.files import import_callable

    orders = pd.read_parquet(lake / "orders.parquet")
    broken_rows = orders.index[::500]
    orders.loc[broken_rows, "amount"] = np.inf
    orders.to_parquet(tmp_path / "orders.parquet")
    spec = shop_spec(lake, tables=[parse_table(f"{tmp_path}/orders.parquet:timestamp=ordered_at"),
                                   *shop_spec(lake).tables[1:]])
    done = scaffold(spec, tmp_path / "shop")
    assert done.infinite == {"orders.amount": len(broken_rows)}
    suite = json.loads((done.target / "expectations" / "orders.json").read_text())
    amount = next(e for e in suite["expectations"]
                  if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "amount")
    finite = orders["amount"][np.isfinite(orders["amount"])]
    assert amount["kwargs"]["min_value"] <= finite.min() and finite.max() <= amount["kwargs"]["max_value"] < np.inf
    assert f"the {len(broken_rows)} infinite value(s) observed are outside it" in amount["meta"]["why"]

    cfg = load_config(done.target / "kfops.yaml", environ={})
    tables = import_callable(f"{done.module}:load_tables", search_path=done.target)(cfg)
    result = validation.validate_tables(tables, cfg)
    failed = [f for f in result.failures if f["column"] == "amount"]
    assert len(failed) == 1 and failed[0]["unexpected_count"] == len(broken_rows)
    assert failed[0]["unexpected_values"][0] == "inf" and "e.g. [\"inf\"" in validation.observed_text(failed[0])


def test_a_view_table_holding_a_key_twice_is_named_and_refused_by_validation(lake, tmp_path):
    """A static table with a store twice (two regions) gave its features two values: the training join
    took one and the online store another. Init profiled the uniqueness check only when the data
    already passed it, so such a table passed validation; it now names the keys and keeps the check."""
    from kfops.adapters import gx_validation as validation
    from kfops.core.files import import_callable

    stores = pd.read_parquet(lake / "stores.parquet")
    changed = stores.iloc[:1].assign(store_type="kiosk")  # S01 again, another type
    pd.concat([stores, changed, stores.iloc[1:2]]).to_parquet(tmp_path / "stores.parquet")  # S02 again, the same
    spec = shop_spec(lake, tables=[*shop_spec(lake).tables[:2], parse_table(f"{tmp_path}/stores.parquet"),
                                   shop_spec(lake).tables[3]])
    done = scaffold(spec, tmp_path / "shop")
    assert done.repeated_keys == {"stores": "2 store_id value(s) with several rows (1 of them with different "
                                            "feature values), e.g. 'S01', 'S02'"}
    suite = json.loads((done.target / "expectations" / "stores.json").read_text())
    unique = [e for e in suite["expectations"] if e["type"] == "expect_column_values_to_be_unique"]
    assert [e["kwargs"]["column"] for e in unique] == ["store_id"] and "observed: validation refuses" in unique[0][
        "meta"]["why"]
    cfg = load_config(done.target / "kfops.yaml", environ={})
    result = validation.validate_tables(import_callable(f"{done.module}:load_tables", search_path=done.target)(cfg), cfg)
    failed = [f for f in result.failures if f["expectation"] == "expect_column_values_to_be_unique"]
    assert [(f["table"], f["column"], f["unexpected_count"]) for f in failed] == [("stores", "store_id", 4)]

    # A timestamped view's table: one row per key and time.
    done = scaffold(shop_spec(lake), tmp_path / "clean")
    suite = json.loads((done.target / "expectations" / "customers.json").read_text())
    assert any(e["type"] == "expect_compound_columns_to_be_unique"
               and e["kwargs"]["column_list"] == ["customer_id", "signup_at"] for e in suite["expectations"])
    assert done.repeated_keys == {}


def test_a_table_that_gives_no_feature_is_named_with_the_reason(lake, tmp_path):
    """A customers table keyed 'cust_id' where the events say 'customer_id' gave no view, and init
    said nothing: its features were silently missing from every model."""
    pd.read_csv(lake / "customers.csv").rename(columns={"customer_id": "cust_id"}).to_csv(
        tmp_path / "customers.csv", index=False)
    stores = pd.read_parquet(lake / "stores.parquet")
    stores[["store_id"]].assign(opened="yes").to_parquet(tmp_path / "stores.parquet")  # a key, and one value
    spec = shop_spec(lake, tables=[shop_spec(lake).tables[0], parse_table(f"{tmp_path}/customers.csv:timestamp=signup_at"),
                                   parse_table(f"{tmp_path}/stores.parquet"), shop_spec(lake).tables[3]])
    done = scaffold(spec, tmp_path / "shop")
    assert done.unused == {
        "customers": "no column of it is named as an --entity (customer_id, store_id), so no feature comes from it: "
                     "give its key column the name the events use",
        "stores": "none of its other columns can be a feature (ids, timestamps, outcomes or columns of one value)"}
    assert [v.name for v in done.views] == []
    assert scaffold(shop_spec(lake), tmp_path / "whole").unused == {}


def test_columns_that_are_no_feature_as_they_are_are_named_with_the_reason(lake, tmp_path):
    """A second timestamp, a free-text note and an email were dropped without a word: a user expecting
    'promised_at' to count could not tell it was never a feature, nor how to make one of it."""
    orders = pd.read_parquet(lake / "orders.parquet")
    rng = np.random.default_rng(1)
    orders = orders.assign(promised_at=orders["ordered_at"] + pd.to_timedelta(rng.integers(1, 9, len(orders)), "D"),
                           promised_text=lambda f: f["promised_at"].dt.strftime("%Y-%m-%d %H:%M"),
                           note=[f"gift wrap {i}" for i in range(len(orders))],
                           weight_kg=lambda f: f["amount"].round(1).astype(str).where(f.index % 100 != 5, "n.a."))
    orders.to_parquet(tmp_path / "orders.parquet")
    customers = pd.read_csv(lake / "customers.csv")
    customers.assign(email=customers["customer_id"].str.lower() + "@example.org").to_csv(
        tmp_path / "customers.csv", index=False)
    spec = shop_spec(lake, tables=[parse_table(f"{tmp_path}/orders.parquet:timestamp=ordered_at"),
                                   parse_table(f"{tmp_path}/customers.csv:timestamp=signup_at"),
                                   *shop_spec(lake).tables[2:]])
    done = scaffold(spec, tmp_path / "shop")
    assert done.not_features == {"orders.promised_at": "a timestamp", "orders.promised_text": "a timestamp",
                                 "orders.note": "an id or free text: about a value per row",
                                 "orders.weight_kg": "numbers but for 'n.a.', which keep it text: read them as "
                                                     "missing (pd.to_numeric(..., errors='coerce'))",
                                 "customers.email": "an id or free text: about a value per row"}
    cfg = load_config(done.target / "kfops.yaml", environ={})
    assert not {"promised_at", "promised_text", "note", "email"} & {
        *cfg.features.request_features, *[ref.split(":")[1] for ref in cfg.features.feature_refs]}
    assert scaffold(shop_spec(lake), tmp_path / "plain").not_features == {}


def test_the_raw_requests_event_time_is_named_as_the_events_table_names_it(scaffolded):
    cfg = load_config(scaffolded.target / "kfops.yaml", environ={})
    assert cfg.dataset.request_time_field == "ordered_at"
    assert cfg.dataset.event_timestamp == "event_timestamp"  # the entity frame's column is kfops' own
    assert cfg.drift.label_column == "returned"  # the drift check scores the champion on the label, by its name


def test_keys_spelled_with_other_leading_zeros_in_a_views_table_are_named(lake, tmp_path):
    """Orders held store 1 as a number and stores.csv '01': a store of two digits joins, one of one
    digit joins no features, and nothing said so (only a view that joins no row fails featurize)."""
    orders = pd.read_parquet(lake / "orders.parquet")
    orders.assign(store_id=orders["store_id"].str[1:].astype(int)).to_parquet(tmp_path / "orders.parquet")
    stores = pd.read_parquet(lake / "stores.parquet")
    stores.assign(store_id=stores["store_id"].str[1:]).to_csv(tmp_path / "stores.csv", index=False)  # '01'
    spec = shop_spec(lake, tables=[parse_table(f"{tmp_path}/orders.parquet:timestamp=ordered_at"),
                                   shop_spec(lake).tables[1], parse_table(f"{tmp_path}/stores.csv"),
                                   shop_spec(lake).tables[3]])
    done = scaffold(spec, tmp_path / "shop")
    assert done.text_columns == {"stores": ["store_id"]}
    assert done.zero_mismatches == {
        "stores.store_id": "6 of the 6 store_id values of orders match a row of stores only but for leading zeros "
                           "('1' in orders, '01' in stores): those events would join none of its features"}
    assert scaffold(shop_spec(lake), tmp_path / "plain").zero_mismatches == {}


def test_a_csv_header_naming_a_column_twice_is_named(lake, tmp_path):
    """pandas reads a header 'store_id,size_sqm,size_sqm' as size_sqm and size_sqm.1, without a word:
    two features that no one can tell apart."""
    stores = pd.read_parquet(lake / "stores.parquet")
    text = stores.to_csv(index=False).splitlines()
    (tmp_path / "stores.csv").write_text("\n".join([text[0].replace("store_type", "size_sqm"), *text[1:]]) + "\n")
    spec = shop_spec(lake, tables=[*shop_spec(lake).tables[:2], parse_table(f"{tmp_path}/stores.csv"),
                                   shop_spec(lake).tables[3]])
    done = scaffold(spec, tmp_path / "shop")
    assert done.repeated_headers == {"stores": ["size_sqm.1"]}
    assert scaffold(shop_spec(lake), tmp_path / "plain").repeated_headers == {}


def test_a_window_cut_short_by_the_label_keeps_a_volume_check_its_data_passes(lake, tmp_path):
    """The returns end 20 days before the orders do, so the 30-day label cuts the window short: the
    events' volume is the window's own, per day of it, and the project validates its own data."""
    from kfops.adapters import gx_validation as validation
    from kfops.core.files import import_callable

    returns = pd.read_csv(lake / "returns.csv")
    returned_at = pd.to_datetime(returns["returned_at"], utc=True)
    returns[returned_at < returned_at.max() - pd.Timedelta("20D")].to_csv(tmp_path / "returns.csv", index=False)
    spec = shop_spec(lake, tables=[*shop_spec(lake).tables[:3], parse_table(f"{tmp_path}/returns.csv:timestamp=returned_at")])
    done = scaffold(spec, tmp_path / "shop")
    orders = pd.read_parquet(lake / "orders.parquet")
    assert done.end < orders["ordered_at"].max().date()  # cut short
    cfg = load_config(done.target / "kfops.yaml", environ={})
    result = validation.validate_tables(import_callable(f"{done.module}:load_tables", search_path=done.target)(cfg), cfg)
    assert result.success, validation.format_failures(result)


def test_a_column_named_split_is_no_request_feature_and_a_views_is_renamed(lake, tmp_path):
    orders = pd.read_parquet(lake / "orders.parquet")
    orders.assign(split=np.where(orders.index % 2, "full", "half")).to_parquet(tmp_path / "orders.parquet")
    stores = pd.read_parquet(lake / "stores.parquet")
    stores.assign(split=np.where(stores.index % 2, "a", "b")).to_parquet(tmp_path / "stores.parquet")
    spec = shop_spec(lake, tables=[parse_table(f"{tmp_path}/orders.parquet:timestamp=ordered_at"),
                                   shop_spec(lake).tables[1], parse_table(f"{tmp_path}/stores.parquet"),
                                   shop_spec(lake).tables[3]])
    done = scaffold(spec, tmp_path / "shop")
    assert done.not_features["orders.split"].startswith("named 'split', as kfops' own train/validation/test column")
    assert "split" not in done.request_features
    stores_view = next(v for v in done.views if v.name == "stores")
    assert ("stores_split", "string", "split") in stores_view.features
