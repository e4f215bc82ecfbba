"""The text of the files `kfops init` writes: the dataset plug-in module and the Feast definitions.

Values are filled in with ``repr`` so that the generated code is plain, working Python.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

PLUGIN_HEADER = '''"""Dataset plug-in for {project}, scaffolded by `kfops init` from {table_list}.

The three functions kfops.yaml names (dataset.loader, dataset.entity_builder,
dataset.feast_sources_writer) and FEATURES, the one declaration of the Feast features: the sources
writer, feature_repo/definitions.py and features.feature_refs all follow from it. Edit freely:
add a feature to a View and it is written, registered with Feast and given to the model.

Label: {label_text}
{label_doc}
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from kfops.core.featureset import Entity, Feature, FeatureSet, View, parse_timestamps
from kfops.datasets import join_location, read_table_file

# Raw table -> file under dataset.source_dir, and the column saying when a row became known
# (None: static facts). Naive timestamps are read as UTC.
TABLE_FILES = {table_files}
TIMESTAMPS = {timestamps}
EVENTS = {events!r}  # one row per prediction
ROW_ID = {row_id!r}  # column of EVENTS that names a row{row_id_note}
ENTITY_KEYS = {entity_keys!r}
REQUEST_FEATURES = {request_features!r}  # columns of EVENTS known when a prediction is asked for
LABEL = {label_name!r}
'''

LATER_LABEL = '''LABEL_TABLE = {table!r}
LABEL_ON = {on!r}
LABEL_CONDITION = {condition!r}  # a pandas query on LABEL_TABLE; None: every row counts
HORIZON = {horizon}  # the label looks this far past the event
'''

SAME_TABLE_LABEL = '''LABEL_CONDITION = {condition!r}  # a pandas expression on EVENTS
'''

FEATURES_BLOCK = '''
FEATURES = FeatureSet(
    entities=[
{entities}
    ],
    views=[
{views}
    ],
)
'''

LOADER = '''

def read_table(folder: str | Path, name: str) -> pd.DataFrame:
    """One raw table, its timestamp column parsed to UTC; ``folder`` is a folder or s3://bucket/prefix."""
    frame = read_table_file(join_location(folder, TABLE_FILES[name]))
    column = TIMESTAMPS[name]
    if column is not None:
        frame[column] = parse_timestamps(frame[column])
    return frame


def load_tables(cfg) -> dict[str, pd.DataFrame]:
    """The raw tables for the window dataset.start..dataset.end (days in validation.window_timezone).

    EVENTS keeps the window's rows{later_doc}; the other timestamped
    tables keep every row known before the window ends (features are joined as of each event);
    static tables are kept whole.
    """
    folder = cfg.dataset.source_dir
    zone = cfg.validation.window_timezone
    first, last = cfg.window  # dataset.start, dataset.end: a ConfigError naming either when unset
    start = pd.Timestamp(first).tz_localize(zone).tz_convert("UTC")
    end = (pd.Timestamp(last) + pd.Timedelta(days=1)).tz_localize(zone).tz_convert("UTC")
    tables = {{}}
    for name in TABLE_FILES:
        frame = read_table(folder, name)
        column = TIMESTAMPS[name]
        if name == EVENTS:
            frame = frame[(frame[column] >= start) & (frame[column] < end)]{later_filter}
        elif column is not None:
            frame = frame[frame[column] < end]
        tables[name] = frame.reset_index(drop=True)
    return tables


def build_entity_frame(tables: dict[str, pd.DataFrame], cfg=None) -> pd.DataFrame:
    """One row per event: row id, event time, entity keys, request features, label."""
    events = tables[EVENTS].reset_index(drop=True)
    frame = pd.DataFrame({{
        {row_id_expr},
        "event_timestamp": events[TIMESTAMPS[EVENTS]],
        **{{key: events[key].astype(str) for key in ENTITY_KEYS}},
        **{{name: events[name] for name in REQUEST_FEATURES}},
    }})
    frame[LABEL] = label(events, tables)
    return frame.sort_values(["event_timestamp", ROW_ID], kind="stable").reset_index(drop=True)

'''

LATER_LABEL_FUNCTION = '''
def label(events: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.Series:
    """1 when a row of LABEL_TABLE with the same LABEL_ON comes after the event, within HORIZON."""
    later = tables[LABEL_TABLE]
    if LABEL_CONDITION:
        later = later.query(LABEL_CONDITION)
    later = later[[*LABEL_ON, TIMESTAMPS[LABEL_TABLE]]].rename(columns={TIMESTAMPS[LABEL_TABLE]: "_label_time"})
    pairs = events[[*LABEL_ON, TIMESTAMPS[EVENTS]]].reset_index().merge(later, on=LABEL_ON, how="inner")
    event_time = pairs[TIMESTAMPS[EVENTS]]
    hit = (pairs["_label_time"] > event_time) & (pairs["_label_time"] <= event_time + HORIZON)
    return pd.Series(events.index.isin(pairs.loc[hit, "index"]), index=events.index).astype("int64")
'''

SAME_TABLE_LABEL_FUNCTION = '''
def label(events: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.Series:
    """LABEL_CONDITION on the events' own columns (outcomes, refused as features)."""
    return events.eval(LABEL_CONDITION).astype("int64")
'''

WRITER = '''

def write_feature_sources(tables: dict[str, pd.DataFrame], source_dir: Path) -> dict[str, Path]:
    """The Feast offline sources: one parquet file per view of FEATURES, as declared."""
    return FEATURES.write_sources(tables, source_dir)
'''

DEFINITIONS = '''"""Feast definitions for {project}, scaffolded by `kfops init`.

kfops calls build(source_dir) and applies what it returns. Entities, schemas and TTLs come from
FEATURES in {module}.py (the one declaration of the features): edit them there, not here.
"""

from __future__ import annotations

from pathlib import Path


def build(source_dir: Path) -> list:
    from kfops.adapters.feast_definitions import feast_objects
    from kfops.core.featureset import load_feature_set

    # {module}.py sits beside kfops.yaml, one folder up; loaded by path, so no PYTHONPATH is needed.
    features = load_feature_set("{module}:FEATURES", search_path=Path(__file__).resolve().parent.parent)
    return feast_objects(features, source_dir)
'''


def timedelta_code(value: dt.timedelta | None) -> str:
    if value is None:
        return "None"
    seconds = int(value.total_seconds())
    if seconds % 86400 == 0:
        return f"dt.timedelta(days={seconds // 86400})"
    if seconds % 3600 == 0:
        return f"dt.timedelta(hours={seconds // 3600})"
    return f"dt.timedelta(seconds={seconds})"


def mapping_code(values: dict[str, Any]) -> str:
    inner = ",\n".join(f"    {k!r}: {v!r}" for k, v in values.items())
    return "{\n" + inner + ",\n}"
