"""Feature definitions for the flights example.

``build(source_dir)`` returns the Feast objects; kfops loads this file by path
(``features.definitions: definitions:build``) and applies them. The parquet files under
``source_dir`` are written by ``kfops.datasets.flights.features.write_feature_sources``.

TTLs say how old a row may be and still join onto a flight (historical retrieval):
- weather_hourly: 3 h. Observations are hourly; after a 3 h gap a reading no longer describes
  the departure, so the feature is null rather than stale.
- plane_attributes: none (0 = forever). The table is static.
- carrier/origin_delay_stats: 1 day. Rows are hourly, so a row more than a day old means the
  stats stopped being produced; null is more honest than a stale rate.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path


def build(source_dir: Path) -> list:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    source_dir = Path(source_dir).expanduser().resolve()

    def source(name: str) -> FileSource:
        # Absolute: Feast resolves relative paths against the current directory, not the repo.
        return FileSource(name=f"{name}_source", path=str(source_dir / f"{name}.parquet"),
                          timestamp_field="event_timestamp")

    origin = Entity(name="origin", join_keys=["origin"], value_type=ValueType.STRING,
                    description="Departure airport (FAA code).")
    tailnum = Entity(name="tailnum", join_keys=["tailnum"], value_type=ValueType.STRING,
                     description="Plane tail number.")
    carrier = Entity(name="carrier", join_keys=["carrier"], value_type=ValueType.STRING,
                     description="Airline carrier code.")

    weather_hourly = FeatureView(
        name="weather_hourly",
        entities=[origin],
        ttl=timedelta(hours=3),
        schema=[Field(name="origin", dtype=String)]
        + [Field(name=n, dtype=Float64) for n in
           ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")],
        source=source("weather_hourly"),
        description="Hourly weather observation at the departure airport.",
    )
    plane_attributes = FeatureView(
        name="plane_attributes",
        entities=[tailnum],
        ttl=timedelta(0),
        schema=[
            Field(name="tailnum", dtype=String),
            Field(name="plane_age", dtype=Float64),
            Field(name="seats", dtype=Int64),
            Field(name="engines", dtype=Int64),
            Field(name="manufacturer", dtype=String),
            Field(name="plane_type", dtype=String),
        ],
        source=source("plane_attributes"),
        description="Static plane facts; age in years as of 2013.",
    )
    carrier_delay_stats = FeatureView(
        name="carrier_delay_stats",
        entities=[carrier],
        ttl=timedelta(days=1),
        schema=[
            Field(name="carrier", dtype=String),
            Field(name="carrier_delay_rate_7d", dtype=Float64),
            Field(name="carrier_flights_7d", dtype=Int64),
        ],
        source=source("carrier_delay_stats"),
        description="Share of the carrier's flights arrived in the past 7 days that were >15 min late.",
    )
    origin_delay_stats = FeatureView(
        name="origin_delay_stats",
        entities=[origin],
        ttl=timedelta(days=1),
        schema=[
            Field(name="origin", dtype=String),
            Field(name="origin_delay_rate_7d", dtype=Float64),
            Field(name="origin_flights_7d", dtype=Int64),
        ],
        source=source("origin_delay_stats"),
        description="Share of flights from the airport arrived in the past 7 days that were >15 min late.",
    )
    return [origin, tailnum, carrier, weather_hourly, plane_attributes, carrier_delay_stats, origin_delay_stats]
