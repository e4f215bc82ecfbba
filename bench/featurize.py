"""Benchmark of the featurize step's feature store work (Feast 0.67, duckdb offline store).

1. Historical retrieval for the full year: every 2013 flight (336,776 entity rows, cancelled ones
   included) joined point-in-time with all four feature views through
   ``kfops.adapters.feast_store.build_training_set``, with both engines: ``asof`` (default; merge_asof per
   view on the sources and TTLs from the Feast registry) and ``feast`` (Feast's
   ``get_historical_features`` on the duckdb offline store). Both include applying the
   definitions. Floor: the same joins with ``pandas.merge_asof`` (same TTLs) written out by hand
   in this process, reading the same parquet files. The outputs are compared cell by cell.
2. Online lookup latency for one entity row (origin, tailnum, carrier; 17 features from 4 views),
   from SQLite and from Redis: Feast's ``get_online_features`` and kfops' ``OnlineFeatureReader``.

    .venv/bin/python bench/featurize.py                  # everything
    .venv/bin/python bench/featurize.py --lookups 500    # fewer online lookups

Targets: retrieval under 30 s and at most 3x the floor; Redis p99 under 5 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kfops.config import KfopsConfig, load_config
from kfops.core.tables import read_parquet
from kfops.datasets.flights import build_entity_frame, load_tables
from kfops.datasets.flights.features import write_feature_sources


def all_flights_entity_frame(tables: dict[str, pd.DataFrame], cfg: KfopsConfig) -> pd.DataFrame:
    # Cancelled flights have no label; give them one so every flight is an entity row.
    flights = tables["flights"].assign(arr_delay=tables["flights"]["arr_delay"].fillna(0.0))
    return build_entity_frame({**tables, "flights": flights}, cfg)


def merge_asof_floor(entities: pd.DataFrame, sources: dict[str, Path], store) -> pd.DataFrame:
    """The same point-in-time joins with pandas.merge_asof: the cost of the join itself."""
    out = entities
    for view in store.list_feature_views():
        frame = read_parquet(sources[view.name])
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns, UTC]")
        key = view.entity_columns[0].name
        features = [f.name for f in view.features]
        tolerance = view.ttl if view.ttl else None
        if tolerance is None:  # static: an exact join on the key
            out = out.merge(frame[[key, *features]], on=key, how="left")
        else:
            right = frame[[key, "event_timestamp", *features]].sort_values("event_timestamp")
            out = pd.merge_asof(out.sort_values("event_timestamp", kind="stable"), right,
                                on="event_timestamp", by=key, direction="backward", tolerance=pd.Timedelta(tolerance))
    return out.set_index("flight_id").loc[entities["flight_id"]].reset_index()


def compare(a: pd.DataFrame, b: pd.DataFrame, names: list[str]) -> int:
    """Cells that differ (NaN/None equal to each other)."""
    differ = 0
    for name in names:
        left, right = a[name], b[name]
        both_missing = left.isna().to_numpy() & right.isna().to_numpy()
        if left.dtype == object or right.dtype == object:
            equal = left.astype(object).to_numpy() == right.astype(object).to_numpy()
        else:
            equal = np.isclose(left.to_numpy(float), right.to_numpy(float), rtol=1e-12, atol=0)
        differ += int((~(equal | both_missing)).sum())
    return differ


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def online_latency(cfg: KfopsConfig, sources: Path, entities: pd.DataFrame, lookups: int) -> dict[str, dict]:
    from kfops.adapters import feast_store as features

    store = features.apply_definitions(cfg, sources)
    end = dt.datetime(2014, 1, 2, tzinfo=dt.UTC)
    started = time.perf_counter()
    features.materialize(cfg, dt.datetime(2013, 12, 24, tzinfo=dt.UTC), end, store=store)
    materialize_s = time.perf_counter() - started
    reader = features.OnlineFeatureReader(cfg, store)
    rng = np.random.default_rng(0)
    picks = entities.iloc[rng.integers(0, len(entities), lookups + 200)]
    rows = picks[["origin", "tailnum", "carrier"]].to_dict("records")
    refs = list(cfg.features.feature_refs)
    results = {"materialize_s": round(materialize_s, 2)}
    contenders = {
        "feast get_online_features": lambda row: store.get_online_features(features=refs, entity_rows=[row]).to_dict(),
        "kfops OnlineFeatureReader.read_one": reader.read_one,
        "kfops read_one(as_of=...) (TTL check)": lambda row: reader.read_one(row, as_of=end),
    }
    try:
        for name, call in contenders.items():
            for row in rows[:200]:  # warm-up: connections, registry cache
                call(row)
            samples = []
            for row in rows[200:]:
                t0 = time.perf_counter()
                call(row)
                samples.append(time.perf_counter() - t0)
            results[name] = percentiles(samples)
    finally:
        if cfg.features.online_store == "redis":
            store.teardown()  # delete this run's keys
    return results


def redis_is_up(connection: str) -> bool:
    import socket

    host, port = connection.split(",")[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lookups", type=int, default=2000, help="Timed online lookups per contender.")
    parser.add_argument("--redis", default="127.0.0.1:6379", help="Redis host:port for the online test.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kfops-bench-featurize-"))
    try:
        cfg = load_config(REPO / "kfops.yaml", [f"data_dir={work}"], environ={})  # the flights example
        cfg.features.project = f"kfops_bench_{uuid.uuid4().hex[:8]}"
        tables = load_tables(cfg)
        entities = all_flights_entity_frame(tables, cfg)
        started = time.perf_counter()
        sources = write_feature_sources(tables, cfg.feast_dir / "sources")
        sources_s = time.perf_counter() - started

        started = time.perf_counter()
        import feast  # noqa: F401  (timed apart: ~6 s, paid once per process)
        import_s = time.perf_counter() - started

        from kfops.adapters import feast_store as features

        store = features.apply_definitions(cfg, cfg.feast_dir / "sources")
        timings, frames = {}, {}
        for engine in ("asof", "feast"):
            started = time.perf_counter()
            frames[engine] = features.build_training_set(entities, cfg, cfg.feast_dir / "sources", store=store,
                                                         engine=engine)
            timings[engine] = time.perf_counter() - started

        started = time.perf_counter()
        floor = merge_asof_floor(entities, sources, store)
        floor_s = time.perf_counter() - started

        names = features.feature_names(cfg)
        result = {
            "entity_rows": len(entities),
            "write_sources_s": round(sources_s, 2),
            "import_feast_s": round(import_s, 2),
            "historical": {
                "pandas merge_asof floor s": round(floor_s, 2),
                "kfops build_training_set engine=asof (default) s": round(timings["asof"], 2),
                "asof ratio to floor": round(timings["asof"] / floor_s, 2),
                "kfops build_training_set engine=feast (get_historical_features, duckdb) s": round(timings["feast"], 2),
                "feast ratio to floor": round(timings["feast"] / floor_s, 2),
                "cells differing asof vs feast": compare(frames["asof"], frames["feast"], names),
                "cells differing asof vs floor": compare(frames["asof"], floor, names),
            },
        }
        print(json.dumps(result, indent=2), flush=True)

        online = {"sqlite": online_latency(cfg, cfg.feast_dir / "sources", entities, args.lookups)}
        if redis_is_up(args.redis):
            redis_cfg = cfg.model_copy(update={"features": cfg.features.model_copy(
                update={"online_store": "redis", "redis_connection": args.redis})})
            online["redis"] = online_latency(redis_cfg, cfg.feast_dir / "sources", entities, args.lookups)
        else:
            online["redis"] = f"skipped: nothing listening on {args.redis}"
        result["online"] = online
        print(json.dumps({"online": online}, indent=2), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
