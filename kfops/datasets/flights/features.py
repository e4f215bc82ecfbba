"""Feast offline sources for the flights example, computed from the raw tables.

Four parquet files, one per feature view in ``feature_repo/definitions.py``; every file has an
``event_timestamp`` column (UTC) that Feast joins on point in time:

- ``weather_hourly`` (entity ``origin``): the hourly airport observation, stamped with its hour.
- ``plane_attributes`` (entity ``tailnum``): static plane facts, stamped :data:`STATIC_TIMESTAMP`.
- ``carrier_delay_stats`` / ``origin_delay_stats``: 7-day delay rates, one row per entity per
  hour. The row stamped T counts only flights that had *arrived* before T, so a flight never
  sees its own outcome or any later one.

A flight's arrival time is not in the raw contract (``arr_time`` is a local clock reading with
no date), so it is estimated as scheduled departure (UTC) + ``dep_delay`` + ``air_time`` +
:data:`TAXI_BUFFER` for taxi-out and taxi-in. The buffer errs late: a stat is released a little
after the flight landed rather than before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kfops.core.files import atomic_output
from kfops.datasets.flights import DELAY_MINUTES
from kfops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

TIMESTAMP = "event_timestamp"
WEATHER_FEATURES = ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")
# Planes carry no validity dates: one row far before any flight, joined with no expiry.
STATIC_TIMESTAMP = "2000-01-01T00:00:00Z"
TAXI_BUFFER_MINUTES = 30
ROLLING_WINDOW_DAYS = 7
SOURCE_NAMES = ("weather_hourly", "plane_attributes", "carrier_delay_stats", "origin_delay_stats")


def write_feature_sources(tables: dict[str, pd.DataFrame], source_dir: Path) -> dict[str, Path]:
    """Compute the Feast offline sources from the raw tables and write them as parquet.

    Works for any window of the raw contract (two weeks or a full year). Returns the absolute path
    of each file by feature view name; existing files are replaced.
    """
    for name in ("flights", "weather", "planes"):
        if name not in tables:
            raise DataError(f"the raw tables have no '{name}' table", hint="run the ingest step first")
    frames = {
        "weather_hourly": weather_hourly(tables["weather"]),
        "plane_attributes": plane_attributes(tables["planes"]),
        **delay_stats(tables["flights"]),
    }
    source_dir = Path(source_dir).expanduser().resolve()
    source_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in frames.items():
        path = source_dir / f"{name}.parquet"
        # Write then rename, so a reader never sees half a file.
        with atomic_output(path) as partial:
            # Microseconds: duckdb cannot cast a nanosecond TIMESTAMPTZ, which Feast's materialize does.
            frame.astype({TIMESTAMP: "datetime64[us, UTC]"}).to_parquet(partial, index=False)
        paths[name] = path
    return paths


def _require(frame: pd.DataFrame, table: str, columns: tuple[str, ...] | list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"the {table} table lacks column(s) {', '.join(missing)}", hint="check the ingest step")


def _utc(values: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")


def weather_hourly(weather: pd.DataFrame) -> pd.DataFrame:
    """One row per (origin, hour); a repeated observation keeps the last one."""
    _require(weather, "weather", ("origin", "time_hour", *WEATHER_FEATURES))
    frame = weather[["origin", "time_hour", *WEATHER_FEATURES]].rename(columns={"time_hour": TIMESTAMP})
    frame[TIMESTAMP] = _utc(frame[TIMESTAMP])
    frame["origin"] = frame["origin"].astype(str)
    frame[list(WEATHER_FEATURES)] = frame[list(WEATHER_FEATURES)].astype("float64")
    frame = frame.drop_duplicates(["origin", TIMESTAMP], keep="last")
    return frame.sort_values([TIMESTAMP, "origin"]).reset_index(drop=True)


def plane_attributes(planes: pd.DataFrame) -> pd.DataFrame:
    """Static facts per tail number. ``plane_age`` is in 2013, the year of the data."""
    import pandas as pd

    _require(planes, "planes", ("tailnum", "year", "type", "manufacturer", "engines", "seats"))
    frame = pd.DataFrame(
        {
            "tailnum": planes["tailnum"].astype(str),
            TIMESTAMP: pd.Timestamp(STATIC_TIMESTAMP),
            "plane_age": (2013 - planes["year"]).astype("float64"),
            "seats": planes["seats"].astype("int64"),
            "engines": planes["engines"].astype("int64"),
            "manufacturer": planes["manufacturer"].astype(str),
            "plane_type": planes["type"].astype(str),
        }
    )
    frame[TIMESTAMP] = frame[TIMESTAMP].astype("datetime64[ns, UTC]")
    return frame.drop_duplicates("tailnum", keep="last").reset_index(drop=True)


def estimated_arrivals(flights: pd.DataFrame) -> pd.DataFrame:
    """Flights that arrived: carrier, origin, estimated arrival (UTC) and whether it was delayed.

    Cancelled and diverted flights (no ``arr_delay``) have no outcome and are left out.
    """
    import pandas as pd

    _require(flights, "flights", ("carrier", "origin", "time_hour", "minute", "dep_delay", "air_time", "arr_delay"))
    arrived = flights[flights[["dep_delay", "air_time", "arr_delay"]].notna().all(axis=1)]
    minutes = arrived["minute"] + arrived["dep_delay"] + arrived["air_time"] + TAXI_BUFFER_MINUTES
    return pd.DataFrame(
        {
            "carrier": arrived["carrier"].astype(str),
            "origin": arrived["origin"].astype(str),
            "arrival": _utc(arrived["time_hour"]) + pd.to_timedelta(minutes, unit="min"),
            "delayed": (arrived["arr_delay"] > DELAY_MINUTES).to_numpy(),
        }
    )


def delay_stats(flights: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Hourly 7-day delay rates per carrier and per origin, over flights arrived before each hour.

    The hourly grid runs from the first scheduled departure's hour to the hour after the last
    arrival, so every flight in the window has a row at most an hour old and the last row holds
    every arrival (what serving wants). Early in a window the 7 days are only partly covered;
    ``*_flights_7d`` says how many flights a rate rests on. A rate over no flights is NaN.
    """
    import pandas as pd

    _require(flights, "flights", ("time_hour", "minute"))
    arrivals = estimated_arrivals(flights)
    departures = _utc(flights["time_hour"]) + pd.to_timedelta(flights["minute"], unit="min")
    if departures.empty:
        raise DataError("the flights table is empty", hint="check dataset.start/dataset.end")
    first = departures.min().floor("h")
    last = max(departures.max(), arrivals["arrival"].max() if len(arrivals) else departures.max())
    grid = pd.date_range(first, last.floor("h") + pd.Timedelta(hours=1), freq="h", tz="UTC")
    entities = {"carrier": sorted(flights["carrier"].astype(str).unique()),
                "origin": sorted(flights["origin"].astype(str).unique())}
    return {
        f"{key}_delay_stats": rolling_delay_rates(arrivals, key, entities[key], grid)
        for key in ("carrier", "origin")
    }


def rolling_delay_rates(
    arrivals: pd.DataFrame,
    key: str,
    values: list[str],
    grid: pd.DatetimeIndex,
    window: pd.Timedelta | None = None,
) -> pd.DataFrame:
    """For each entity value and grid time T: flights and delay rate over arrivals in [T - window, T)."""
    import pandas as pd

    window = window if window is not None else pd.Timedelta(days=ROLLING_WINDOW_DAYS)
    suffix = f"_{int(window / pd.Timedelta(days=1))}d"
    grid_ns = grid.asi8
    start_ns = (grid - window).asi8
    parts = []
    by_value = {v: g for v, g in arrivals.groupby(key, sort=False)}
    for value in values:
        group = by_value.get(value)
        if group is None:
            times = np.empty(0, dtype="int64")
            delayed = np.zeros(1, dtype="int64")
        else:
            raw_times = pd.DatetimeIndex(group["arrival"]).asi8
            order = np.argsort(raw_times, kind="stable")
            times = raw_times[order]
            delayed = np.concatenate([[0], np.cumsum(group["delayed"].to_numpy()[order])])
        # side="left": an arrival exactly at T is not yet before T.
        hi = np.searchsorted(times, grid_ns, side="left")
        lo = np.searchsorted(times, start_ns, side="left")
        count = hi - lo
        late = delayed[hi] - delayed[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(count > 0, late / np.maximum(count, 1), np.nan)
        parts.append(
            pd.DataFrame(
                {
                    key: value,
                    TIMESTAMP: grid,
                    f"{key}_delay_rate{suffix}": rate.astype("float64"),
                    f"{key}_flights{suffix}": count.astype("int64"),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame[TIMESTAMP] = frame[TIMESTAMP].astype("datetime64[ns, UTC]")
    return frame.sort_values([TIMESTAMP, key], kind="stable").reset_index(drop=True)
