"""Feast objects from a :class:`~kfops.core.featureset.FeatureSet`: the body of a ``definitions.build``.

A project's ``feature_repo/definitions.py`` can be three lines::

    def build(source_dir):
        from kfops.adapters.feast_definitions import feast_objects
        return feast_objects(FEATURES, source_dir)

The schema (keys and feature types), the sources (``<source_dir>/<view>.parquet``, written by
``FEATURES.write_sources``) and the TTLs all come from the one declaration.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from kfops.core.featureset import EVENT_TIMESTAMP, FeatureSet


def feast_objects(feature_set: FeatureSet, source_dir: Path) -> list[Any]:
    """The entities, then one FeatureView per declared view, its source under ``source_dir``."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, Int64, String

    types = {"string": String, "int": Int64, "float": Float64, "bool": Bool}
    value_types = {"string": ValueType.STRING, "int": ValueType.INT64}
    source_dir = Path(source_dir).expanduser().resolve()  # Feast resolves relative paths against the cwd
    entities = {
        e.name: Entity(name=e.name, join_keys=[e.name], value_type=value_types[e.dtype], description=e.description)
        for e in feature_set.entities
    }
    key_types = {e.name: e.dtype for e in feature_set.entities}
    objects: list[Any] = list(entities.values())
    for view in feature_set.views:
        objects.append(FeatureView(
            name=view.name,
            entities=[entities[k] for k in view.keys],
            ttl=view.ttl or dt.timedelta(0),
            schema=[Field(name=k, dtype=types[key_types[k]]) for k in view.keys]
            + [Field(name=f.name, dtype=types[f.dtype], description=f.description) for f in view.features],
            source=FileSource(name=f"{view.name}_source", path=str(source_dir / f"{view.name}.parquet"),
                              timestamp_field=EVENT_TIMESTAMP),
            description=view.description,
        ))
    return objects
