"""Benchmark of the online feature lookup alone: Feast's call against the direct read, per batch.

    .venv/bin/python bench/online_lookup.py                          # SQLite and Redis, batches of 1, 8, 32
    .venv/bin/python bench/online_lookup.py --stores redis --batches 8 --repeat 500

Materializes the flights example's feature views for January to March 2013 into each online
store (a throwaway Feast project), then reads batches of entity rows taken from March flights
(origin, carrier, tailnum, each with its own event time, as the server's ``as_of=event`` lookup
does) with ``OnlineFeatureReader``:

  feast    ``direct=False``: Feast's ``get_online_features`` + ``to_dict``, TTLs applied per row;
  direct   the same reader reading Feast's online layout itself (kfops.adapters.feast_online);
  columns  the direct read without pandas (``read_columns``, what the serving engine can use).

``feast`` and ``direct`` go through ``read`` (the DataFrame the engine takes today). Every batch
timed is first compared value by value between the contenders. Prints microseconds per batch
(best of 3 passes over the same batches, each pass ``--repeat`` calls) and the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WINDOW = ("2013-01-01", "2013-03-31")


def prepare(work: Path, store_kind: str, redis: str):
    """Apply and materialize the example views into ``store_kind``; return (cfg, store, entity rows)."""
    from kfops.adapters import feast_store as features
    from kfops.config import load_config
    from kfops.datasets.flights import load_tables
    from kfops.datasets.flights.features import write_feature_sources

    overrides = [
        f"data_dir={work / store_kind}", f"dataset.start={WINDOW[0]}", f"dataset.end={WINDOW[1]}",
        f"features.project=bench_{uuid.uuid4().hex[:8]}", f"features.repo_path={REPO / 'feature_repo'}",
        f"features.online_store={store_kind}",
    ]
    if store_kind == "redis":
        overrides.append(f"features.redis_connection={redis}")
    cfg = load_config(None, overrides, environ={})
    tables = load_tables(cfg)
    sources = cfg.feast_dir / "sources"
    write_feature_sources(tables, sources)
    store = features.apply_definitions(cfg, sources)
    started = time.perf_counter()
    features.materialize(cfg, dt.datetime(2012, 12, 24, tzinfo=dt.UTC), dt.datetime(2013, 4, 1, tzinfo=dt.UTC),
                         store=store)
    print(f"{store_kind}: materialized {WINDOW[0]}..{WINDOW[1]} in {time.perf_counter() - started:.0f}s", flush=True)
    flights = tables["flights"]
    # Feast fails a batch holding a missing tailnum (TypeError); the direct read finds no plane.
    march = flights[(flights["month"] == 3) & flights["tailnum"].notna()].sample(4000, random_state=7)
    rows = [{"origin": r.origin, "carrier": r.carrier, "tailnum": r.tailnum, "event_timestamp": r.time_hour}
            for r in march.itertuples()]
    return cfg, store, rows


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def agree(feast_reader, direct_reader, batches) -> int:
    """Cells that differ between the two readers over all batches (0 expected)."""
    differing = 0
    for batch in batches:
        as_of = [row["event_timestamp"] for row in batch]
        a = feast_reader.read_columns(batch, as_of=as_of)
        b = direct_reader.read_columns(batch, as_of=as_of)
        differing += sum(not same(x, y) for name in a for x, y in zip(a[name], b[name], strict=True))
    return differing


def _timed(read):
    """A call of ``read`` as the server's lookup makes it: each row's TTLs from its own event time."""
    return lambda batch: read(batch, as_of=[row["event_timestamp"] for row in batch])


def per_call_us(call, batches, repeat: int) -> float:
    for batch in batches[:20]:
        call(batch)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for i in range(repeat):
            call(batches[i % len(batches)])
        best = min(best, (time.perf_counter() - started) / repeat)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "redis"], choices=["sqlite", "redis"])
    parser.add_argument("--redis", default="127.0.0.1:6379", help="Redis host:port for the redis store")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="entity rows per lookup")
    parser.add_argument("--repeat", type=int, default=300, help="timed calls per pass")
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    args = parser.parse_args()

    from kfops.adapters.feast_store import OnlineFeatureReader

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="kfops-bench-lookup-") as tmp:
        for kind in args.stores:
            cfg, store, rows = prepare(Path(tmp), kind, args.redis)
            try:
                feast_reader = OnlineFeatureReader(cfg, store, direct=False)
                direct_reader = OnlineFeatureReader(cfg, store)
                assert direct_reader.mode == kind, direct_reader.mode
                for size in args.batches:
                    batches = [rows[i:i + size] for i in range(0, len(rows) - size + 1, size)][:200]
                    differing = agree(feast_reader, direct_reader, batches)
                    timings = {
                        "feast": per_call_us(_timed(feast_reader.read), batches, args.repeat),
                        "direct": per_call_us(_timed(direct_reader.read), batches, args.repeat),
                        "columns": per_call_us(_timed(direct_reader.read_columns), batches, args.repeat),
                    }
                    results[f"{kind}@{size}"] = {**{f"{k}_us": v for k, v in timings.items()}, "differing_cells": differing}
                    print(f"{kind:6} batch={size:<3} feast {timings['feast']:7.0f} us  direct {timings['direct']:6.0f} us "
                          f"({timings['feast'] / timings['direct']:4.1f}x)  columns {timings['columns']:6.0f} us "
                          f"({timings['feast'] / timings['columns']:4.1f}x)  differing cells: {differing}", flush=True)
            finally:
                store.teardown()
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
