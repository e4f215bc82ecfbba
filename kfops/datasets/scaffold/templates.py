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
from kfops.errors import DataError

# Raw table -> file under dataset.source_dir, and the column saying when a row became known
# (None: static facts). Naive timestamps are read as UTC.
TABLE_FILES = {table_files}
TIMESTAMPS = {timestamps}
DAYFIRST = {dayfirst!r}  # how to read 03/04/2024: True day first, False month first, None refuse when ambiguous
# CSV columns read as text, as written: their numbers are zero-padded codes ('02134' is not 2134).
TEXT_COLUMNS = {text_columns}
EVENTS = {events!r}  # one row per prediction
ROW_ID = {row_id!r}  # column of EVENTS that names a row{row_id_note}
ENTITY_KEYS = {entity_keys!r}
REQUEST_FEATURES = {request_features!r}  # columns of EVENTS known when a prediction is asked for
LABEL = {label_name!r}
'''

LATER_LABEL = '''LABEL_TABLE = {table!r}
LABEL_ON = {on!r}
LABEL_CONDITION = {condition!r}  # a pandas query on LABEL_TABLE; None: every row counts
LABEL_COLUMNS = {columns!r}  # what LABEL_CONDITION reads: a row with a null there may or may not count
HORIZON = {horizon}  # the label looks this far past the event
'''

SAME_TABLE_LABEL = '''LABEL_CONDITION = {condition!r}  # a pandas expression on EVENTS
LABEL_COLUMNS = {columns!r}  # the columns of EVENTS it reads: where one is null, the label is unknown
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
    frame = read_table_file(join_location(folder, TABLE_FILES[name]), text_columns=TEXT_COLUMNS.get(name, ()))
    column = TIMESTAMPS[name]
    if column is not None:
        frame[column] = parse_timestamps(frame[column], dayfirst=DAYFIRST)
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
        untimed = int(frame[column].isna().sum()) if column is not None else 0
        if untimed:  # a row without a time belongs to no moment of the window: left out, and said
            print(f"kfops: {{name}}: left out {{untimed:,}} of {{len(frame):,}} rows without a time in {{column}}",
                  flush=True)
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
        **{{key: FEATURES.entity_column(key, events[key]) for key in ENTITY_KEYS}},  # as the sources spell keys
        **{{name: events[name] for name in REQUEST_FEATURES}},
    }})
    frame[LABEL] = label(events, tables)
    unknown = frame[LABEL].isna()
    if unknown.any():  # an unknown label is not a 0: the event is left out, and said so
        print(f"kfops: {{EVENTS}}: left out {{int(unknown.sum()):,}} of {{len(frame):,}} events whose label is unknown "
              "(a null in a column the label reads; see label())", flush=True)
    frame = frame[~unknown].astype({{LABEL: "int64"}})
    return frame.sort_values(["event_timestamp", ROW_ID], kind="stable").reset_index(drop=True)

'''

MADE_ROW_ID = '''
# The row id made for EVENTS: its keys, its time to this precision and a counter among the
# events that share both, so two events of a key within one second still have their own id.
ROW_ID_TIME_FORMAT = {time_format!r}


def make_row_ids(events: pd.DataFrame) -> pd.Series:
    """``<keys>_<time>_<n>``: readable, unique, and the same on every load of the same rows."""
    parts = [*(events[key].astype(str) for key in ENTITY_KEYS),
             events[TIMESTAMPS[EVENTS]].dt.strftime(ROW_ID_TIME_FORMAT)]
    name = parts[0].str.cat(parts[1:], sep="_") if len(parts) > 1 else parts[0]
    return name + "_" + name.groupby(name, sort=False).cumcount().astype(str)

'''

LATER_LABEL_FUNCTION = '''
def label(events: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.Series:
    """1 when a row of LABEL_TABLE with the same LABEL_ON (matching LABEL_CONDITION) comes after the
    event, within HORIZON; else 0. <NA> (unknown: build_entity_frame leaves the event out) when the
    event's key is null, or when no row surely counts but one with a null time or a null in
    LABEL_COLUMNS might."""
    later = tables[LABEL_TABLE]
    later = later[later[LABEL_ON].notna().all(axis=1)]  # a row without its key belongs to no event
    time = TIMESTAMPS[LABEL_TABLE]
    unsure = later[[*LABEL_COLUMNS, time]].isna().any(axis=1)
    counts = condition_value(later, LABEL_TABLE).fillna(0).astype(bool) if LABEL_CONDITION else True
    later = later.assign(_sure=counts & ~unsure, _label_time=later[time])
    later = later.loc[later["_sure"] | unsure, [*LABEL_ON, "_label_time", "_sure"]]
    left, right = same_key_types(events[[*LABEL_ON, TIMESTAMPS[EVENTS]]].reset_index(), later)
    pairs = left.merge(right, on=LABEL_ON, how="inner")
    event_time = pairs[TIMESTAMPS[EVENTS]]
    within = (pairs["_label_time"] > event_time) & (pairs["_label_time"] <= event_time + HORIZON)
    hit = events.index.isin(pairs.loc[within & pairs["_sure"], "index"])
    maybe = events.index.isin(pairs.loc[(within | pairs["_label_time"].isna()) & ~pairs["_sure"], "index"])
    unknown = (maybe & ~hit) | events[LABEL_ON].isna().any(axis=1)
    return pd.Series(hit, index=events.index).astype("Int64").mask(unknown)


def same_key_types(left: pd.DataFrame, right: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """LABEL_ON in one type on both sides: a key that is a number in one table and digits in the
    other (order_id 7 and '7' or '0007'), or an integer read as float because of nulls (7.0),
    matches as the integer it spells."""
    for key in LABEL_ON:
        if left[key].dtype != right[key].dtype:
            numbers = any(pd.api.types.is_numeric_dtype(side[key]) for side in (left, right))
            left, right = (side.assign(**{key: key_text(side[key], numbers)}) for side in (left, right))
    return left, right


def key_text(values: pd.Series, numbers: bool) -> pd.Series:
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    text = values.astype("string")
    return text.str.replace(r"^(-?)0+(?=[0-9])", r"\\1", regex=True) if numbers else text
'''

SAME_TABLE_LABEL_FUNCTION = '''
def label(events: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.Series:
    """LABEL_CONDITION on the events' own columns (outcomes, refused as features): 1 or 0, and <NA>
    (unknown: build_entity_frame leaves the event out, rather than call it 0) where a column it
    reads is null."""
    return condition_value(events, EVENTS).mask(events[LABEL_COLUMNS].isna().any(axis=1))
'''

CONDITION_FUNCTION = '''

def condition_value(frame: pd.DataFrame, table: str) -> pd.Series:
    """LABEL_CONDITION on ``frame`` as 1/0 (<NA> where it gives null); it must give true/false or 1/0."""
    value = frame.eval(LABEL_CONDITION)
    value = value if isinstance(value, pd.Series) else pd.Series(value, index=frame.index)
    present = value.dropna()
    odd = present[~present.isin([0, 1])]
    if len(odd):
        raise DataError(f"the label condition {LABEL_CONDITION!r} gives {odd.iloc[0]!r} on {table!r}, not true/false",
                        hint="compare a column with a value, e.g. churn == 'yes'")
    return value.astype("boolean").astype("Int64")
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
    if not values:
        return "{}"
    inner = ",\n".join(f"    {k!r}: {v!r}" for k, v in values.items())
    return "{\n" + inner + ",\n}"
