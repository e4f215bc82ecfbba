"""`kfops predict --raw` joins features by the keys a file holds, whatever type the file gave them.

A CSV of a `kfops init` project whose store ids are numbers read them as int64 while the feature
sources hold the declared text: the join failed with pandas' MergeError, reported as "the online
feature store failed ... retry later", which no retry mends."""

from __future__ import annotations

import pandas as pd
import pytest

from kfops.config import load_config
from kfops.core.files import import_callable
from kfops.core.requests import EVENT_TIMESTAMP
from kfops.datasets.scaffold import InitSpec, parse_label, parse_table, scaffold
from kfops.serving.protocol.payloads import RequestError
from tests.support.shop_data import generate_shop

pytestmark = [pytest.mark.slow]  # applies Feast definitions

WHEN = pd.Timestamp("2024-03-10T12:00", tz="UTC").to_pydatetime()


def _project(tmp_path, store_key: str):
    lake = tmp_path / "lake"
    generate_shop(lake, days=14, orders_per_day=40, customers=150, stores=6)
    for name in ("orders", "stores"):  # store ids 'S04' -> 4: numbers, as many real ids are
        table = pd.read_parquet(lake / f"{name}.parquet")
        table["store_id"] = table["store_id"].str[1:].astype(int)
        table.to_parquet(lake / f"{name}.parquet")
    spec = InitSpec(tables=[parse_table(f"{lake}/orders.parquet:timestamp=ordered_at"),
                            parse_table(f"{lake}/stores.parquet")],
                    entities=["store_id"], label=parse_label("big = amount > 100"))
    done = scaffold(spec, tmp_path / "shop")
    plugin = done.target / f"{done.module}.py"
    plugin.write_text(plugin.read_text().replace("Entity('store_id', 'string')", f"Entity('store_id', {store_key!r})"))
    cfg = load_config(done.target / "kfops.yaml", environ={})
    tables = import_callable(cfg.dataset.loader, search_path=done.target)(cfg)
    import_callable(cfg.dataset.feast_sources_writer, search_path=done.target)(tables, tmp_path / "sources")
    return cfg, tmp_path / "sources"


@pytest.mark.parametrize("declared", ["string", "int"])
def test_a_store_id_sent_as_a_number_or_as_text_finds_the_same_features(tmp_path, declared):
    from kfops.serving.local.raw_scoring import OfflineLookup

    cfg, sources = _project(tmp_path, declared)
    lookup = OfflineLookup(cfg, sources)
    features = {sent: lookup([{"store_id": sent, EVENT_TIMESTAMP: WHEN}]) for sent in (4, "4", 4.0)}
    assert features[4].notna().all(axis=None), features[4]  # the store is known: its features are there
    assert all(frame.equals(features[4]) for frame in features.values())
    other = lookup([{"store_id": 5, EVENT_TIMESTAMP: WHEN}])
    assert not other.equals(features[4])  # and they are that store's, not any store's


def test_a_key_an_int_entity_cannot_take_names_the_key_and_the_row(tmp_path):
    from kfops.serving.local.raw_scoring import OfflineLookup

    cfg, sources = _project(tmp_path, "int")
    lookup = OfflineLookup(cfg, sources)
    with pytest.raises(RequestError, match=r"key 'store_id' is an integer in the feature views, but row 1 holds 'S4'"):
        lookup([{"store_id": 4, EVENT_TIMESTAMP: WHEN}, {"store_id": "S4", EVENT_TIMESTAMP: WHEN}])
