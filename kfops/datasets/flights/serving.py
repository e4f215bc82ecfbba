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
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np

from kfops.core.requests import DerivedRows, RawField

NEW_YORK = ZoneInfo("America/New_York")
MIN_YEAR, MAX_YEAR = 1900, 2100
MAX_FLIGHT_NUMBER = 1_000_000
UNKNOWN_TAILNUM = "UNKNOWN"


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


def days_to_holiday(days: list[dt.date]) -> list[int]:
    from kfops.datasets.flights import days_to_nearest_holiday

    return days_to_nearest_holiday(np.array(days, dtype="datetime64[D]")).tolist()


@dataclass
class FlightRequestBuilder:
    name: str = "a raw flight"
    fields: tuple[RawField, ...] = field(default_factory=lambda: (
        RawField("carrier", "string", non_empty=True),
        RawField("origin", "string", non_empty=True),
        RawField("dest", "string", non_empty=True),
        RawField("distance", "number", minimum=0),
        RawField("sched_dep", "string", parse=local_departure,
                 description="scheduled departure, New York local time, ISO 8601"),
        RawField("tailnum", "string", required=False, nullable=True),
        RawField("flight", "integer", required=False, minimum=0, maximum=MAX_FLIGHT_NUMBER, default=0),
    ))

    def derive(self, columns: dict[str, list], rows: int) -> DerivedRows:
        departures: list[dt.datetime] = columns["sched_dep"]
        return DerivedRows(
            columns={
                "tailnum": [UNKNOWN_TAILNUM if t is None else t for t in columns["tailnum"]],
                "distance": [float(d) for d in columns["distance"]],
                "dep_hour": [d.hour for d in departures],
                "day_of_week": [d.weekday() for d in departures],
                "month": [d.month for d in departures],
                "days_to_holiday": days_to_holiday([d.date() for d in departures]),
            },
            event_times=[d.replace(tzinfo=NEW_YORK).astimezone(dt.UTC) for d in departures],
        )


RAW_FLIGHT = FlightRequestBuilder()
