"""The shared test data in tests/support is what the tests that use it assume."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from tests.conftest import REPO_ROOT
from tests.support.serving_models import build_tiny_model, synthetic_features
from tests.support.validation_data import END, FLIGHT_KEY, START, two_week_tables


def test_tiny_model_loads_and_separates_the_classes(tmp_path):
    from kfops.core.model import load_model, predict_proba

    model = load_model(build_tiny_model(tmp_path / "model"))
    frame = synthetic_features(400, seed=7)
    probabilities = predict_proba(model, frame)
    assert probabilities.shape == (400,)
    assert probabilities[frame["label"].to_numpy() == 1].mean() > probabilities[frame["label"].to_numpy() == 0].mean() + 0.2


def test_two_weeks_follow_the_raw_table_contract():
    tables = two_week_tables()
    flights = tables["flights"]
    assert 11_000 < len(flights) < 14_000
    assert str(flights["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert not flights.duplicated(FLIGHT_KEY).any()
    local_day = pd.to_datetime(flights[["year", "month", "day"]])
    assert local_day.min() == pd.Timestamp(START) and local_day.max() == pd.Timestamp(END)
    assert tables["weather"]["time_hour"].min() >= pd.Timestamp("2013-01-06T00:00Z")
    assert len(tables["planes"]) == 3322


def test_the_shop_sample_data_is_one_command_from_the_repository_root(tmp_path):
    """README and docs/init.md start the `kfops init` walkthrough with this command: with no options it
    writes the tables whose init output docs/init.md shows (4,950 orders over 2024-03-01..2024-04-14)."""
    done = subprocess.run([sys.executable, "-m", "tests.support.shop_data", str(tmp_path / "lake")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "lake").iterdir()) == [
        "customers.csv", "orders.parquet", "returns.csv", "stores.parquet"]
    orders = pd.read_parquet(tmp_path / "lake" / "orders.parquet")
    assert len(orders) == 4950
    assert (orders["ordered_at"].min().date().isoformat(), orders["ordered_at"].max().date().isoformat()) == (
        "2024-03-01", "2024-04-14")
    assert f"wrote {tmp_path / 'lake' / 'orders.parquet'}  (4,950 rows)" in done.stdout

    from tests.support.shop_data import main

    assert main([str(tmp_path / "long"), "--start", "2024-01-01", "--days", "150", "--orders-per-day", "10"]) == 0
    longer = pd.read_parquet(tmp_path / "long" / "orders.parquet")
    assert len(longer) == 1500 and longer["ordered_at"].min() >= pd.Timestamp("2024-01-01", tz="UTC")
