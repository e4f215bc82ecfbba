"""Tiny real models and synthetic feature rows for the serving tests (unit and integration).

tests/unit/test_support.py checks that what they build loads and predicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kfops.config import XGBoostConfig
from tests.support.example import example_config

CFG = example_config()  # the flights example: kfops' defaults name no feature
COLUMNS = CFG.feature_columns
CATEGORICAL = list(CFG.features.categorical)
ORIGINS = ["EWR", "JFK", "LGA"]
DESTS = ["ATL", "BOS", "IAH", "LAX", "MIA", "ORD"]
CARRIERS = ["AA", "B6", "DL", "UA"]
MANUFACTURERS = ["AIRBUS", "BOEING", "EMBRAER"]
PLANE_TYPES = ["Fixed wing multi engine", "Fixed wing single engine"]
ONLINE_FEATURES = [ref.split(":", 1)[1] for ref in CFG.features.feature_refs]


def synthetic_features(rows: int, seed: int = 0) -> pd.DataFrame:
    """Rows of every model feature, realistic enough that the label depends on several of them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "origin": rng.choice(ORIGINS, rows),
        "dest": rng.choice(DESTS, rows),
        "carrier": rng.choice(CARRIERS, rows),
        "distance": rng.uniform(200, 2500, rows).round(),
        "dep_hour": rng.integers(5, 23, rows),
        "day_of_week": rng.integers(0, 7, rows),
        "month": rng.integers(1, 13, rows),
        "days_to_holiday": rng.integers(0, 31, rows),
        "temp": rng.normal(55, 18, rows),
        "dewp": rng.normal(40, 18, rows),
        "humid": rng.uniform(20, 100, rows),
        "wind_speed": rng.gamma(2, 5, rows),
        "wind_gust": rng.gamma(2, 6, rows),
        "precip": rng.exponential(0.02, rows),
        "pressure": rng.normal(1017, 7, rows),
        "visib": rng.uniform(0, 10, rows),
        "plane_age": rng.integers(0, 30, rows).astype(float),
        "seats": rng.choice([55.0, 140.0, 180.0, 200.0], rows),
        "engines": rng.choice([1.0, 2.0], rows),
        "manufacturer": rng.choice(MANUFACTURERS, rows),
        "plane_type": rng.choice(PLANE_TYPES, rows),
        "carrier_delay_rate_7d": rng.uniform(0, 0.5, rows),
        "carrier_flights_7d": rng.integers(100, 3000, rows).astype(float),
        "origin_delay_rate_7d": rng.uniform(0, 0.5, rows),
        "origin_flights_7d": rng.integers(1000, 8000, rows).astype(float),
    })
    score = (frame["dep_hour"] - 14) / 4 + (frame["origin"] == "EWR") + frame["precip"] * 20 + rng.normal(0, 1, rows)
    frame["label"] = (score > 0.5).astype("int64")
    return frame[[*COLUMNS, "label"]]


def build_tiny_model(folder: Path, seed: int = 0, rounds: int = 20, threshold: float = 0.5) -> Path:
    """Train a small XGBoost model on synthetic rows and save it as a kfops model folder."""
    from kfops.core.model import FeatureSpec, save_model
    from kfops.training.xgb import train_xgboost

    frame = synthetic_features(1500, seed)
    spec = FeatureSpec.fit(frame, COLUMNS, CATEGORICAL)
    params = XGBoostConfig(n_estimators=rounds, max_depth=3, early_stopping_rounds=rounds, device="cpu", nthread=1)
    result = train_xgboost(frame.iloc[:1200], frame.iloc[1200:], spec, params, seed=seed)
    result.model.threshold = threshold
    return save_model(result.model, folder)


def tally_fuzzed_response(response, statuses: dict[int, int], context: object) -> None:
    """Count a fuzzed request's status and check the server's answer: never a 5xx, and every
    4xx/other error names itself in a JSON ``error``. ``context`` is shown on failure."""
    import json

    text = response.read()
    statuses[response.status] = statuses.get(response.status, 0) + 1
    assert response.status < 500, (context, text[:300])
    if response.status >= 400:
        assert json.loads(text)["error"]
