"""Feast's SQLite online store and Evidently (through IPython) in one process.

Both register a process-wide sqlite3 ``timestamp`` converter in incompatible formats; before the
fix, rendering a drift report and then reading the SQLite online store failed with
``ValueError: Invalid isoformat string``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

import pandas as pd

from kfops.adapters.sqlite_timestamps import install, parse_sqlite_timestamp


def test_the_converter_reads_feast_epochs_and_ipython_iso_strings():
    moment = dt.datetime(2013, 1, 10, 9, 0, 0)
    assert parse_sqlite_timestamp(str(int(moment.timestamp())).encode()) == moment
    assert parse_sqlite_timestamp(b"2013-01-10 09:00:00.250000") == dt.datetime(2013, 1, 10, 9, 0, 0, 250000)


def test_both_encodings_round_trip_through_a_real_sqlite_column():
    install()
    with sqlite3.connect(":memory:", detect_types=sqlite3.PARSE_DECLTYPES) as db:
        db.execute("CREATE TABLE t (epoch timestamp, iso timestamp)")
        db.execute("INSERT INTO t VALUES (?, ?)", (1357812000, "2013-01-10 10:00:00"))
        epoch, iso = db.execute("SELECT epoch, iso FROM t").fetchone()
    assert epoch == dt.datetime.fromtimestamp(1357812000)
    assert iso == dt.datetime(2013, 1, 10, 10, 0, 0)


def test_an_evidently_report_then_a_feast_sqlite_read_in_one_process(tmp_path):
    """The order that broke: the online store is loaded, a drift report renders (importing IPython),
    then the same store is read again."""
    from kfops.adapters import feast_store
    from kfops.core.drift import check_drift
    from kfops.datasets.flights.features import write_feature_sources
    from kfops.reports.drift import render_report
    from tests.unit.test_features_store import DAY, tiny_config, tiny_tables, utc

    cfg = tiny_config(tmp_path)
    sources = cfg.feast_dir / "sources"
    write_feature_sources(tiny_tables(), sources)
    store = feast_store.apply_definitions(cfg, sources)
    moment = utc(f"{DAY}T12:05Z").to_pydatetime()
    feast_store.materialize(cfg, dt.datetime(2013, 1, 9, tzinfo=dt.UTC), moment, store=store)
    reader = feast_store.OnlineFeatureReader(cfg, store)
    key = {"origin": "EWR", "carrier": "UA", "tailnum": "N101UA"}
    before = reader.read_one(key, as_of=moment)

    reference = pd.DataFrame({"x": [float(i) for i in range(200)]})
    current = pd.DataFrame({"x": [float(i) for i in range(50, 250)]})
    render_report(reference, current, check_drift(reference, current), tmp_path / "drift.html")
    import IPython.core.history  # noqa: F401  (its import registers the ISO-only converter)

    after = reader.read_one(key, as_of=moment)
    assert after["temp"] == before["temp"] == 50.0
