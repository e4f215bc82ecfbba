"""The flights raw request (``dataset.request_builder: kfops.datasets.flights.serving:RAW_FLIGHT``).

A raw flight is ``carrier``, ``origin``, ``dest``, ``distance`` and ``sched_dep`` (the scheduled
departure in New York local time, ISO 8601), optionally ``tailnum`` (missing: ``UNKNOWN``) and
``flight`` (the flight number). The request features are derived as
:func:`kfops.datasets.flights.build_entity_frame` computes them for training (the same values as
:func:`kfops.datasets.flights.request_features`, tested), over plain lists: no pandas on the
request path. The event time (for the online features' TTLs) is the departure in UTC.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np

from kfops.core.requests import DerivedRows, RawField

NEW_YORK = ZoneInfo("America/New_York")
MIN_YEAR, MAX_YEAR = 1900, 2100
MAX_FLIGHT_NUMBER = 1_000_000
UNKNOWN_TAILNUM = "UNKNOWN"
# Departures repeat (a schedule has a few hundred distinct minutes a day): their parse and their
# derived features are cached, which saves the time-zone arithmetic and numpy calls per batch.
DEPARTURE_CACHE_SIZE = 16_384


def local_departure(text: str) -> dt.datetime:
    """``sched_dep`` as a naive New York local time that exists exactly once on the clock."""
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date-time such as '2013-06-01T17:30' (New York local time)"
        ) from err
    if stamp.tzinfo is not None:
        try:
            stamp = stamp.astimezone(NEW_YORK).replace(tzinfo=None)
        except OverflowError:  # year 1 or 9999 shifted past the calendar
            raise ValueError(f"year {stamp.year} is outside {MIN_YEAR}..{MAX_YEAR}") from None
    if not MIN_YEAR <= stamp.year <= MAX_YEAR:
        raise ValueError(f"year {stamp.year} is outside {MIN_YEAR}..{MAX_YEAR}")
    aware = stamp.replace(tzinfo=NEW_YORK)
    if aware.astimezone(dt.UTC).astimezone(NEW_YORK).replace(tzinfo=None) != stamp:
        raise ValueError(f"{text!r} does not exist in New York local time (the clocks jump forward)")
    if aware.utcoffset() != stamp.replace(tzinfo=NEW_YORK, fold=1).utcoffset():
        # Training localizes naive local times, which cannot place the repeated hour.
        raise ValueError(f"{text!r} is ambiguous in New York local time (the hour the clocks fall back repeats)")
    return stamp


@functools.lru_cache(maxsize=DEPARTURE_CACHE_SIZE)
def cached_local_departure(text: str) -> dt.datetime:
    """:func:`local_departure`, cached by the text (an error is raised again on every call)."""
    return local_departure(text)


@functools.lru_cache(maxsize=DEPARTURE_CACHE_SIZE)
def _days_to_holiday(day: dt.date) -> int:
    from kfops.datasets.flights import days_to_nearest_holiday

    return int(days_to_nearest_holiday(np.array([day], dtype="datetime64[D]"))[0])


@functools.lru_cache(maxsize=DEPARTURE_CACHE_SIZE)
def departure_features(departure: dt.datetime) -> tuple[int, int, int, int, dt.datetime]:
    """dep_hour, day_of_week, month, days_to_holiday and the event time (UTC) of a local departure."""
    return (departure.hour, departure.weekday(), departure.month, _days_to_holiday(departure.date()),
            departure.replace(tzinfo=NEW_YORK).astimezone(dt.UTC))


@dataclass
class FlightRequestBuilder:
    name: str = "a raw flight"
    fields: tuple[RawField, ...] = field(default_factory=lambda: (
        RawField("carrier", "string", non_empty=True),
        RawField("origin", "string", non_empty=True),
        RawField("dest", "string", non_empty=True),
        RawField("distance", "number", minimum=0),
        RawField("sched_dep", "string", parse=cached_local_departure,
                 description="scheduled departure, New York local time, ISO 8601"),
        RawField("tailnum", "string", required=False, nullable=True),
        RawField("flight", "integer", required=False, minimum=0, maximum=MAX_FLIGHT_NUMBER, default=0),
    ))

    def derive(self, columns: dict[str, list], rows: int) -> DerivedRows:
        per_departure = [departure_features(d) for d in columns["sched_dep"]]
        return DerivedRows(
            columns={
                "tailnum": [UNKNOWN_TAILNUM if t is None else t for t in columns["tailnum"]],
                "distance": [float(d) for d in columns["distance"]],
                "dep_hour": [f[0] for f in per_departure],
                "day_of_week": [f[1] for f in per_departure],
                "month": [f[2] for f in per_departure],
                "days_to_holiday": [f[3] for f in per_departure],
            },
            event_times=[f[4] for f in per_departure],
        )


RAW_FLIGHT = FlightRequestBuilder()
