"""The shared test data in tests/support is what the tests that use it assume."""

from __future__ import annotations

import pandas as pd

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
