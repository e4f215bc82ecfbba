"""Zero-padded codes in CSV tables (postcodes, account numbers, store '004') keep their text.

pandas read a CSV column of '02048' as the number 2048. A `kfops init` project then held key
'2048' in its feature sources, and a client sending the postcode as written, '02048', found no
features, silently: the server scored the row without them."""

from __future__ import annotations

import pandas as pd
import pytest

from kfops.config import load_config
from kfops.core.files import import_callable
from kfops.core.requests import EVENT_TIMESTAMP
from kfops.datasets.scaffold import InitSpec, parse_label, parse_table, scaffold
from tests.support.shop_data import generate_shop

pytestmark = [pytest.mark.slow]  # applies Feast definitions

WHEN = pd.Timestamp("2024-03-10T12:00", tz="UTC").to_pydatetime()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("padded")
    lake = tmp_path / "lake"
    generate_shop(lake, days=14, orders_per_day=40, customers=150, stores=6)
    for name in ("orders", "stores"):  # store ids 'S04' -> '004', written to CSV as text
        table = pd.read_parquet(lake / f"{name}.parquet")
        table["store_id"] = "0" + table["store_id"].str[1:]
        table.to_csv(lake / f"{name}.csv", index=False)
        (lake / f"{name}.parquet").unlink()
    spec = InitSpec(tables=[parse_table(f"{lake}/orders.csv:timestamp=ordered_at"), parse_table(f"{lake}/stores.csv")],
                    entities=["store_id"], label=parse_label("big = amount > 100"))
    done = scaffold(spec, tmp_path / "shop")
    cfg = load_config(done.target / "kfops.yaml", environ={})
    tables = import_callable(cfg.dataset.loader, search_path=done.target)(cfg)
    import_callable(cfg.dataset.feast_sources_writer, search_path=done.target)(tables, tmp_path / "sources")
    return done, cfg, tables, tmp_path / "sources"


def test_init_reads_zero_padded_codes_as_text_and_so_does_the_written_loader(project):
    done, cfg, tables, sources = project
    assert done.text_columns == {"orders": ["store_id"], "stores": ["store_id"]}
    assert "TEXT_COLUMNS = {\n    'orders': ['store_id'],\n    'stores': ['store_id'],\n}" in (
        done.target / f"{done.module}.py").read_text()
    assert sorted(tables["stores"]["store_id"]) == ["001", "002", "003", "004", "005", "006"]
    assert set(pd.read_parquet(sources / "stores.parquet")["store_id"]) == {"001", "002", "003", "004", "005", "006"}
    entities = import_callable(cfg.dataset.entity_builder, search_path=done.target)(tables, cfg)
    assert entities["store_id"].str.fullmatch("00[1-6]").all()
    # `kfops validate --data stores.csv` reads the column the suite types as text as text.
    from kfops.adapters import gx_validation as validation

    suite = validation.load_suite(done.target / "expectations" / "stores.json")
    assert "store_id" in suite.text_columns()
    read = validation.read_table_file(cfg.dataset.source_dir / "stores.csv", suite)
    assert read["store_id"].tolist() == pd.read_csv(cfg.dataset.source_dir / "stores.csv", dtype=str)["store_id"].tolist()


def test_a_code_sent_as_written_finds_its_features_offline_and_in_a_raw_csv(project, tmp_path, capfd, monkeypatch):
    from kfops.core.model import FeatureSpec
    from kfops.serving.local.batch_scoring import _batches
    from kfops.serving.local.raw_scoring import OfflineLookup, RawCompleter

    _, cfg, tables, sources = project
    monkeypatch.setenv("KFOPS_PROGRESS", "plain")
    lookup = OfflineLookup(cfg, sources)
    found = lookup([{"store_id": "004", EVENT_TIMESTAMP: WHEN}])
    assert found.notna().all(axis=None), found
    assert lookup([{"store_id": "4", EVENT_TIMESTAMP: WHEN}]).isna().all(axis=None)  # no store '4'
    # Each join says how many rows found the view's features, so a share that falls shows.
    printed = capfd.readouterr().err
    assert "stores: 2 feature(s) on 1 rows, found for 1 (100%)" in printed
    assert "stores: 2 feature(s) on 1 rows, found for 0 (0%)" in printed

    # `kfops predict --raw` on a CSV of raw rows: Arrow read '004' as 4 and no row found its store.
    orders = tables["orders"].head(30)
    raw = orders[["store_id", *cfg.features.request_features, cfg.dataset.request_time_field]]
    raw.to_csv(tmp_path / "raw.csv", index=False)
    training = lookup([{"store_id": "004", EVENT_TIMESTAMP: WHEN}]).assign(**orders.head(1).to_dict("list"))
    spec = FeatureSpec.fit(training, cfg.feature_columns, cfg.features.categorical, label=cfg.dataset.label)
    completer = RawCompleter(cfg, spec, sources, "raw.csv")
    batch = next(_batches(tmp_path / "raw.csv", 100, completer.string_fields))
    completed = completer(batch, 0).to_pandas()
    store_features = [ref.split(":")[1] for ref in cfg.features.feature_refs if ref.startswith("stores:")]
    assert store_features and completed[store_features].notna().all(axis=None), completed[store_features]
