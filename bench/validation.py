"""Benchmark of kfops.adapters.gx_validation on the full 2013 NYC flights year.

Times ``validate_tables`` on flights (336,776 rows), weather and planes, and
``validate_training_set`` on the year's entity frame, after Great Expectations is imported. The
baseline, measured in the same run on the same suites and data, is the plain GE way of getting
failing rows: one ``batch.validate`` pass with the SUMMARY result format. kfops runs a BASIC pass
and re-runs only the failing expectations with SUMMARY.

    .venv/bin/python bench/validation.py            # 3 warm repeats
    .venv/bin/python bench/validation.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kfops.config import KfopsConfig, load_config
from kfops.datasets.flights import build_entity_frame, load_tables


def timed(func):
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def cpu_timed(func):
    """Wall and CPU seconds of this process: on a shared machine the CPU time is the steadier one."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = func()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def plain_ge_summary(tables: dict, cfg: KfopsConfig) -> None:
    """The baseline: each suite in one GE pass with SUMMARY (index of failing rows for all)."""
    from great_expectations.core import ExpectationSuite

    from kfops.adapters import gx_validation as v

    for name in cfg.validation.tables:
        suite = v.load_suite(v.suite_path(cfg, name))
        parameters = v.suite_parameters(suite, v.window_of(cfg), cfg)
        batch = v._batch_definition(name).get_batch(batch_parameters={"dataframe": tables[name]})
        result = batch.validate(
            ExpectationSuite(name=suite.name, expectations=[v._copy_item(i) for i in suite.expectations]),
            expectation_parameters=parameters,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": cfg.validation.max_examples},
        )
        assert result.success, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cfg = load_config(Path(__file__).resolve().parents[1] / "kfops.yaml", environ={})  # the flights example
    tables = load_tables(cfg)
    entity = build_entity_frame(tables, cfg)
    rows = {name: len(tables[name]) for name in cfg.validation.tables}
    print(f"window {cfg.window[0]}..{cfg.window[1]}; rows {rows}; entity frame {len(entity):,} rows")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    import_s, _ = timed(lambda: __import__("great_expectations"))
    from kfops.adapters import gx_validation as v

    first_s, first_cpu, first = cpu_timed(lambda: v.validate_tables(tables, cfg))
    assert first.success, v.format_failures(first)
    print(f"import great_expectations: {import_s:.2f} s")
    print(f"validate_tables, first call after import: {first_s:.2f} s wall, {first_cpu:.2f} s CPU "
          f"({first.expectation_count} expectations)")

    kfops_runs = [timed(lambda: v.validate_tables(tables, cfg))[0] for _ in range(args.repeats)]
    baseline_runs = [timed(lambda: plain_ge_summary(tables, cfg))[0] for _ in range(args.repeats)]
    training_runs = [timed(lambda: v.validate_training_set(entity, cfg, previous=first.stats))[0]
                     for _ in range(args.repeats)]
    broken = dict(tables, flights=tables["flights"].assign(distance=tables["flights"]["distance"] * -1))
    failing_s, failing = timed(lambda: v.validate_tables(broken, cfg))
    assert not failing.success

    kfops_s, baseline_s = statistics.median(kfops_runs), statistics.median(baseline_runs)
    print(f"validate_tables, warm median of {args.repeats}: {kfops_s:.2f} s")
    print(f"baseline (one GE pass, SUMMARY), warm median: {baseline_s:.2f} s")
    print(f"ratio kfops / baseline: {kfops_s / baseline_s:.2f}")
    print(f"validate_tables with every flight's distance negative (examples pass runs): {failing_s:.2f} s")
    print(f"validate_training_set, warm median: {statistics.median(training_runs):.2f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
